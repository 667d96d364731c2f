-- Account mails (src/app/mail_queue.c, src/app/accounts.c; docs/mail.md):
-- addresses suppressed after a bounce, per mail class, and the single-use
-- tokens of password reset and e-mail verification (only their SHA-256 is
-- kept). users.email_verified exists since 0002. Times are Unix seconds.

-- migrate:up
CREATE TABLE mail_suppressions (
    address TEXT NOT NULL,
    class TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    code INTEGER NOT NULL DEFAULT 0,
    job_id BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (address, class)
);

CREATE TABLE account_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose TEXT NOT NULL CHECK (purpose IN ('password_reset', 'verify_email')),
    email TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX account_tokens_user ON account_tokens (user_id, purpose, created_at);
CREATE INDEX account_tokens_expires ON account_tokens (expires_at);

-- migrate:down
DROP TABLE account_tokens;
DROP TABLE mail_suppressions;
