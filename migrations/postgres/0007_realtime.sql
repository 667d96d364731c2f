-- Realtime (src/app/realtime*.c, docs/realtime.md) (PostgreSQL).
-- Rooms are public, private (members and invitees only) or dm (a direct
-- conversation between two users: dm_key "a:b", the ids sorted). Every
-- message has a per-room sequence number, taken from rooms.last_seq in the
-- transaction that stores it (UNIQUE (room_id, seq) guards it): the stored
-- sequence is what clients resume from. Tickets are the single-use
-- WebSocket tickets (stored as SHA-256). Times are Unix seconds.

-- migrate:up
CREATE TABLE rt_rooms (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('public', 'private', 'dm')),
    dm_key TEXT UNIQUE,
    created_by TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    last_seq BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE INDEX rt_rooms_kind ON rt_rooms (kind, created_at);
CREATE TABLE rt_members (
    room_id TEXT NOT NULL REFERENCES rt_rooms (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'member', 'invited')),
    invited_by TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX rt_members_user ON rt_members (user_id);
CREATE TABLE rt_messages (
    id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL REFERENCES rt_rooms (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    sender_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (room_id, seq)
);
CREATE TABLE rt_tickets (
    hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    jti TEXT NOT NULL,
    token_iat BIGINT NOT NULL,
    token_exp BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX rt_tickets_expires ON rt_tickets (expires_at);

-- migrate:down
DROP TABLE rt_tickets;
DROP TABLE rt_messages;
DROP TABLE rt_members;
DROP TABLE rt_rooms;
