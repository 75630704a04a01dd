-- Cairn schema, SQLite, migration 0009: the change feed of the in-process search index.
--
-- Each server process keeps the chunks' keyword postings and quantised vectors in memory and
-- reads, before each query, the changes after the last one it applied. Triggers write them in
-- the transaction that makes them, so a process never misses a write of another (`cairn
-- worker`, `cairn import`). AUTOINCREMENT: ids only grow and, with one writer, have no gaps.
-- Maintenance prunes old entries; a process that has not seen pruned ones rebuilds.
CREATE TABLE search_changes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    seq        INTEGER NOT NULL,
    -- 1: chunk added, 2: chunk removed, 3: vector stored
    op         INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX search_changes_created_at ON search_changes (created_at);
CREATE TRIGGER search_changes_chunk_added AFTER INSERT ON chunks BEGIN
    INSERT INTO search_changes (seq, op, created_at)
    VALUES (new.seq, 1, CAST(unixepoch('subsec') * 1000 AS INTEGER));
END;
CREATE TRIGGER search_changes_chunk_removed AFTER DELETE ON chunks BEGIN
    INSERT INTO search_changes (seq, op, created_at)
    VALUES (old.seq, 2, CAST(unixepoch('subsec') * 1000 AS INTEGER));
END;
CREATE TRIGGER search_changes_vector_stored AFTER UPDATE OF embedded_with ON chunks
WHEN new.embedded_with IS NOT NULL BEGIN
    INSERT INTO search_changes (seq, op, created_at)
    VALUES (new.seq, 3, CAST(unixepoch('subsec') * 1000 AS INTEGER));
END;
