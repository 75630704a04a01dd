-- Cairn schema, PostgreSQL, migration 0009. SQLite's twin adds the change feed of its
-- in-process search index; PostgreSQL searches with its own indexes (GIN, HNSW) shared by
-- every replica, so it has nothing to add. Kept so both series have the same versions.
SELECT 1;
