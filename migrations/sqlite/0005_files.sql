-- Uploaded files (src/app/files.c, docs/uploads.md) and users' avatars (SQLite).
-- Bytes live in the storage (UPLOAD_DIR), named by their SHA-256; a row is
-- one user's reference to them. Times are Unix seconds; ids are UUIDs.

-- migrate:up
CREATE TABLE files (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT NOT NULL DEFAULT 'file' CHECK (kind IN ('file', 'avatar')),
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL CHECK (size >= 0),
    sha256 TEXT NOT NULL,
    width INTEGER NOT NULL DEFAULT 0,
    height INTEGER NOT NULL DEFAULT 0,
    fields TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL
);
CREATE INDEX files_owner ON files (owner_id, kind, created_at);
CREATE INDEX files_sha256 ON files (sha256);
ALTER TABLE users ADD COLUMN avatar_file_id TEXT;

-- migrate:down
ALTER TABLE users DROP COLUMN avatar_file_id;
DROP TABLE files;
