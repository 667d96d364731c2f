-- Notifications (the reference service): the in-app inbox, preferences per
-- user, type and channel, device push tokens, and what push delivery has
-- done per (notification, token) so a retried job never sends twice
-- (PostgreSQL). See docs/notifications.md. Times are Unix seconds.

-- migrate:up
CREATE TABLE notifications (
    seq BIGSERIAL PRIMARY KEY, -- the inbox order and its cursor
    id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL REFERENCES users (id),
    type TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}',
    idempotency_key TEXT,
    in_app BOOLEAN NOT NULL DEFAULT TRUE, -- false: the user turned in-app off for this type
    channels TEXT NOT NULL DEFAULT '',    -- the channels it went to: "in_app,email,push"
    created_at BIGINT NOT NULL,
    read_at BIGINT,
    archived_at BIGINT
);
CREATE UNIQUE INDEX notifications_idempotency ON notifications (user_id, idempotency_key);
CREATE INDEX notifications_inbox ON notifications (user_id, seq);
CREATE INDEX notifications_unread ON notifications (user_id)
    WHERE in_app AND read_at IS NULL AND archived_at IS NULL;

CREATE TABLE notification_preferences (
    user_id TEXT NOT NULL,
    type TEXT NOT NULL, -- '*': the user's default for every type
    channel TEXT NOT NULL CHECK (channel IN ('in_app', 'email', 'push')),
    enabled BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, type, channel)
);

CREATE TABLE notification_push_tokens (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    platform TEXT NOT NULL CHECK (platform IN ('ios', 'android', 'web')),
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
CREATE INDEX notification_push_tokens_user ON notification_push_tokens (user_id);

CREATE TABLE notification_push_sent (
    notification_id TEXT NOT NULL,
    token TEXT NOT NULL,
    result TEXT NOT NULL, -- delivered, rejected, invalid_token
    at BIGINT NOT NULL,
    PRIMARY KEY (notification_id, token)
);

-- migrate:down
DROP TABLE notification_push_sent;
DROP TABLE notification_push_tokens;
DROP TABLE notification_preferences;
DROP TABLE notifications;
