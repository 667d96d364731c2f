-- Materialised instances of recurring events (src/app/event_recurrence.c,
-- docs/events.md): the job events.recurrence writes each series'
-- instances from now to EVENTS_RECURRENCE_HORIZON ahead, exceptions
-- applied, so a calendar across series is one indexed range query
-- (GET /api/v1/event-instances). Times are Unix seconds.

-- migrate:up
CREATE TABLE event_instances (
    event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    recurrence_id BIGINT NOT NULL, -- the instance's original start
    starts_at BIGINT NOT NULL,
    ends_at BIGINT,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    location TEXT NOT NULL DEFAULT '',
    exception BOOLEAN NOT NULL DEFAULT FALSE,
    cancelled BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (event_id, recurrence_id)
);
CREATE INDEX event_instances_starts ON event_instances (starts_at, event_id);

-- migrate:down
DROP TABLE event_instances;
