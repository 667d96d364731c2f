-- Revoked access tokens carry their user: the auth state kept in the
-- cache (src/app/auth.c, "auth state") holds a user's revoked token ids
-- with their role, status and tokens_valid_after, loaded in one go.
-- Rows revoked before this migration have no user (NULL): the loader
-- counts them for every user until they expire (at most JWT_EXPIRES_IN).

-- migrate:up
ALTER TABLE revoked_tokens ADD COLUMN user_id TEXT;
CREATE INDEX revoked_tokens_user ON revoked_tokens (user_id);

-- migrate:down
DROP INDEX revoked_tokens_user;
ALTER TABLE revoked_tokens DROP COLUMN user_id;
