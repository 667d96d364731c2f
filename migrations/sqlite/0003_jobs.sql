-- The durable job queue (SQLite): src/store/jobs*.c, docs/jobs.md.
-- Times are Unix milliseconds. Idempotent (IF NOT EXISTS): keel_jobs_install
-- applies the same text when a service on libkeel starts its runner.

-- migrate:up
CREATE TABLE IF NOT EXISTS keel_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    kind TEXT NOT NULL,
    args TEXT NOT NULL DEFAULT '{}',
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL CHECK (state IN ('available', 'scheduled', 'running', 'retryable',
                                         'completed', 'cancelled', 'dead')),
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 20,
    timeout_ms BIGINT NOT NULL DEFAULT 0,
    unique_key TEXT,
    unique_forever INTEGER NOT NULL DEFAULT 0,
    tags TEXT NOT NULL DEFAULT '[]',
    errors TEXT NOT NULL DEFAULT '[]',
    run_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    attempted_at BIGINT,
    finished_at BIGINT,
    heartbeat_at BIGINT,
    locked_by TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS keel_jobs_unique ON keel_jobs (queue, unique_key)
    WHERE unique_key IS NOT NULL
      AND (unique_forever <> 0 OR state IN ('available', 'scheduled', 'running', 'retryable'));
CREATE INDEX IF NOT EXISTS keel_jobs_fetch ON keel_jobs (queue, priority, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');
CREATE INDEX IF NOT EXISTS keel_jobs_running ON keel_jobs (heartbeat_at)
    WHERE state = 'running';
CREATE INDEX IF NOT EXISTS keel_jobs_finished ON keel_jobs (finished_at)
    WHERE state IN ('completed', 'cancelled', 'dead');
CREATE INDEX IF NOT EXISTS keel_jobs_state ON keel_jobs (state, queue);
CREATE TABLE IF NOT EXISTS keel_job_queues (
    queue TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);

-- migrate:down
DROP TABLE IF EXISTS keel_job_queues;
DROP TABLE IF EXISTS keel_jobs;
