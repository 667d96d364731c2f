-- Events (the reference resource), their transitions, assignments and
-- types, and the tamper-evident audit log (PostgreSQL). See docs/events.md.
-- Times are Unix seconds (audit: milliseconds); ids are UUIDs (text).

-- migrate:up
CREATE TABLE event_types (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    custom_schema TEXT, -- a JSON Schema for the events' custom fields
    rules TEXT NOT NULL DEFAULT '[]', -- cross-field rules (docs/events.md)
    requires_approval BOOLEAN NOT NULL DEFAULT FALSE,
    approval_steps TEXT NOT NULL DEFAULT '[]',
    retention_days INTEGER,
    retention_action TEXT NOT NULL DEFAULT 'purge'
        CHECK (retention_action IN ('purge', 'anonymise')),
    created_at BIGINT NOT NULL
);
INSERT INTO event_types (name, description, created_at) VALUES
    ('general', 'anything', 0),
    ('meeting', 'a meeting', 0),
    ('maintenance', 'planned maintenance', 0),
    ('incident', 'an incident', 0);

CREATE TABLE events (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    type TEXT NOT NULL DEFAULT 'general' REFERENCES event_types (name),
    state TEXT NOT NULL DEFAULT 'draft'
        CHECK (state IN ('draft', 'scheduled', 'active', 'completed', 'cancelled', 'archived')),
    starts_at BIGINT NOT NULL,
    ends_at BIGINT,
    location TEXT NOT NULL DEFAULT '',
    owner_id TEXT NOT NULL,
    parent_id TEXT REFERENCES events (id),
    depth INTEGER NOT NULL DEFAULT 0,
    path TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT ',',
    custom TEXT NOT NULL DEFAULT '{}',
    classification TEXT NOT NULL DEFAULT 'internal'
        CHECK (classification IN ('public', 'internal', 'confidential', 'restricted')),
    risk_level TEXT CHECK (risk_level IN ('low', 'medium', 'high', 'critical')),
    risk_score INTEGER,
    risk_notes TEXT,
    budget_amount DOUBLE PRECISION,
    budget_currency TEXT,
    version BIGINT NOT NULL DEFAULT 1,
    legal_hold BOOLEAN NOT NULL DEFAULT FALSE,
    legal_hold_reason TEXT,
    legal_hold_by TEXT,
    legal_hold_at BIGINT,
    recurrence TEXT,
    template_id TEXT,
    anonymised_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX events_created ON events (created_at, id);
CREATE INDEX events_starts ON events (starts_at, id);
CREATE INDEX events_updated ON events (updated_at, id);
CREATE INDEX events_title ON events (title, id);
CREATE INDEX events_state ON events (state);
CREATE INDEX events_type ON events (type);
CREATE INDEX events_owner ON events (owner_id);
CREATE INDEX events_parent ON events (parent_id);
CREATE INDEX events_path ON events (path);
CREATE INDEX events_classification ON events (classification);

-- Recurrence exceptions: one instance of a series changed or cancelled
-- without touching the series (keyed by the instance's original start).
CREATE TABLE event_exceptions (
    event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    original_start BIGINT NOT NULL,
    changes TEXT NOT NULL DEFAULT '{}',
    cancelled BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (event_id, original_start)
);

-- Templates: an event's fields to start from (POST /api/v1/events with
-- template_id, the body's fields overriding them).
CREATE TABLE event_templates (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    fields TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Approvals: a request to move an event to scheduled, decided step by
-- step (event_types.approval_steps); decisions are kept one per row.
CREATE TABLE event_approvals (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'rejected')),
    step INTEGER NOT NULL DEFAULT 0,
    step_started_at BIGINT NOT NULL DEFAULT 0,
    steps TEXT NOT NULL,
    submitted_by TEXT NOT NULL,
    reason TEXT,
    created_at BIGINT NOT NULL,
    decided_at BIGINT
);
CREATE INDEX event_approvals_event ON event_approvals (event_id, created_at);
CREATE INDEX event_approvals_pending ON event_approvals (state, step_started_at);

CREATE TABLE event_approval_decisions (
    approval_id TEXT NOT NULL REFERENCES event_approvals (id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('approve', 'reject')),
    reason TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    PRIMARY KEY (approval_id, step, user_id)
);

-- Cost entries against an event's budget.
CREATE TABLE event_costs (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    category TEXT NOT NULL,
    amount DOUBLE PRECISION NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX event_costs_event ON event_costs (event_id, created_at);

CREATE TABLE event_transitions (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    version BIGINT NOT NULL, -- the event's version it produced: orders the history
    created_at BIGINT NOT NULL
);
CREATE INDEX event_transitions_event ON event_transitions (event_id, version);

CREATE TABLE event_assignments (
    id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('owner', 'assignee', 'reviewer', 'viewer')),
    delegated_from TEXT,
    expires_at BIGINT,
    revoked_at BIGINT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX event_assignments_event ON event_assignments (event_id);
CREATE INDEX event_assignments_user ON event_assignments (user_id, event_id);

-- The tree lock: every move of a subtree updates this one row first, so
-- two moves never check for cycles against each other's stale tree.
CREATE TABLE event_tree_lock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    moves BIGINT NOT NULL DEFAULT 0
);
INSERT INTO event_tree_lock (id, moves) VALUES (1, 0);

-- The audit log: record seq carries hash = SHA-256 over its canonical
-- form and the previous record's hash (docs/events.md, "Audit log").
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    action TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    diff TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_log_entity ON audit_log (entity_type, entity_id, seq);
CREATE INDEX audit_log_actor ON audit_log (actor_id, seq);
CREATE INDEX audit_log_action ON audit_log (action, seq);
CREATE INDEX audit_log_at ON audit_log (at);

-- The head of the chain: appends update this one row first (a row lock
-- on PostgreSQL, BEGIN IMMEDIATE on SQLite), so the chain stays linear
-- under concurrent writers.
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- migrate:down
DROP TABLE audit_head;
DROP TABLE audit_log;
DROP TABLE event_tree_lock;
DROP TABLE event_assignments;
DROP TABLE event_transitions;
DROP TABLE event_costs;
DROP TABLE event_approval_decisions;
DROP TABLE event_approvals;
DROP TABLE event_templates;
DROP TABLE event_exceptions;
DROP TABLE events;
DROP TABLE event_types;
