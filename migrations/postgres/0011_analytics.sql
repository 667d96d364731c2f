-- Analytics (src/app/analytics*.c, docs/analytics.md) and the content review
-- queue (src/app/reviews.c) (PostgreSQL).
-- Event times are Unix milliseconds; rollup periods and review times are
-- Unix seconds; ids are UUIDs.

-- migrate:up
-- Raw events, written in batches by the ingestion buffer's flusher. The id
-- is given by the server when the event is accepted: a flush retried after
-- an unknown outcome (INSERT ... ON CONFLICT (id) DO NOTHING) never
-- duplicates an event.
CREATE TABLE analytics_events (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    ts BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    user_id TEXT,
    api_key_id TEXT,
    session_id TEXT,
    properties JSONB NOT NULL
);
CREATE INDEX analytics_events_ts ON analytics_events (ts, id);
CREATE INDEX analytics_events_name_ts ON analytics_events (name, ts);

-- Counts per period (granularity 'hour' or 'day'; period = its first
-- second) by event name; prop_key '' is the name's total, otherwise the
-- count per value of a property listed in ANALYTICS_ROLLUP_PROPERTIES.
-- Rewritten whole per period by the analytics.rollup job.
CREATE TABLE analytics_rollups (
    granularity TEXT NOT NULL CHECK (granularity IN ('hour', 'day')),
    period BIGINT NOT NULL,
    name TEXT NOT NULL,
    prop_key TEXT NOT NULL DEFAULT '',
    prop_value TEXT NOT NULL DEFAULT '',
    count BIGINT NOT NULL,
    PRIMARY KEY (granularity, period, name, prop_key, prop_value)
);

-- Distinct users with at least one event in the period (DAU for 'day').
CREATE TABLE analytics_active_users (
    granularity TEXT NOT NULL CHECK (granularity IN ('hour', 'day')),
    period BIGINT NOT NULL,
    users BIGINT NOT NULL,
    events BIGINT NOT NULL,
    PRIMARY KEY (granularity, period)
);

-- The review queue: one item per reported resource (a file, or any type
-- that opts in), its reports, and the decision.
CREATE TABLE review_items (
    id TEXT PRIMARY KEY,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    owner_id TEXT,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'approved', 'rejected')),
    reports INTEGER NOT NULL DEFAULT 0,
    last_reason TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    decided_by TEXT,
    decided_at BIGINT,
    decision_reason TEXT,
    UNIQUE (resource_type, resource_id)
);
CREATE INDEX review_items_status ON review_items (status, updated_at, id);
CREATE TABLE review_reports (
    review_id TEXT NOT NULL REFERENCES review_items (id) ON DELETE CASCADE,
    reporter_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (review_id, reporter_id)
);
-- Set while a file's review is rejected: hidden from everyone but admins.
ALTER TABLE files ADD COLUMN hidden_at BIGINT;

-- migrate:down
ALTER TABLE files DROP COLUMN hidden_at;
DROP TABLE review_reports;
DROP TABLE review_items;
DROP TABLE analytics_active_users;
DROP TABLE analytics_rollups;
DROP TABLE analytics_events;
