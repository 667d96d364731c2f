-- Alert rules and alerts (docs/observability.md, "Alerts"). A rule's
-- thresholds and windows are its JSON spec; an alert is one episode of a
-- rule (pending -> firing -> resolved), kept as history once resolved.
-- Times are Unix milliseconds.

-- migrate:up
CREATE TABLE alert_rules (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,            -- the rule as JSON (kind, thresholds, windows, ...)
    builtin BOOLEAN NOT NULL DEFAULT FALSE,
    last_notified_at BIGINT,       -- the last notification of any episode (cooldown)
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    rule_id TEXT NOT NULL,
    rule_name TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
    value DOUBLE PRECISION,
    started_at BIGINT NOT NULL,
    fired_at BIGINT,
    resolved_at BIGINT,
    last_active_at BIGINT NOT NULL, -- the condition last held (keep_firing_for)
    last_notified_at BIGINT,        -- the last firing/repeat notification
    acknowledged_at BIGINT,
    acknowledged_by TEXT
);
CREATE INDEX alerts_active ON alerts (state, rule_id);
CREATE INDEX alerts_recent ON alerts (started_at, id);

-- migrate:down
DROP TABLE alerts;
DROP TABLE alert_rules;
