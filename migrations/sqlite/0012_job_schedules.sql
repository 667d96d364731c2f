-- The job queue's schedules (src/store/jobs_cron.c, docs/scheduler.md):
-- the fire time of the last tick enqueued per schedule, moved forward by a
-- compare-and-set in the transaction that enqueues the tick, so N
-- instances enqueue each tick once and a restart knows what it missed.
-- Times are Unix seconds. Idempotent (IF NOT EXISTS): keel_jobs_install
-- applies the same text when a service on libkeel starts its runner.

-- migrate:up
CREATE TABLE IF NOT EXISTS keel_job_schedules (
    name TEXT PRIMARY KEY,
    last_fire_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- migrate:down
DROP TABLE IF EXISTS keel_job_schedules;
