-- Cairn schema, SQLite, migration 0001: system settings.
--
-- Workspace-wide settings that an admin changes at run time (workspace name, branding, the
-- registration policy, model providers...). Configuration that needs a restart lives in the
-- config file and environment instead; per-user preferences get their own table with users.
--
-- Conventions for every SQLite migration (the PostgreSQL twin in ../postgres must match
-- table for table, column for column — a test compares them):
--   * ids are UUIDv7 stored as TEXT (PostgreSQL: uuid)
--   * times are INTEGER milliseconds since the Unix epoch, UTC (PostgreSQL: timestamptz)
--   * JSON is TEXT holding a JSON document (PostgreSQL: jsonb)
--   * migrations are forward-only and never edited once released.

CREATE TABLE system_settings (
    -- Dotted name, e.g. 'workspace.name'.
    key         TEXT    NOT NULL PRIMARY KEY,
    -- The value as a JSON document.
    value       TEXT    NOT NULL,
    -- Bumped on every write, for optimistic concurrency: a writer names the version it read.
    version     INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    -- The user who last wrote it; NULL for values written by the system or the CLI.
    updated_by  TEXT
) WITHOUT ROWID;
