-- Cairn schema, SQLite, migration 0010: the FTS5 keyword table is kept only while it is the
-- keyword index.
--
-- With the in-memory search index on (`search.memory_index`, the default) every keyword query
-- is answered from memory, and maintaining `chunks_fts` cost two thirds of the time spent
-- storing a document's chunks. `search_state.fts` says whether the triggers keep it: 1, it is
-- complete and maintained; 0, it is empty and untouched. `Store::set_keyword_tables` switches
-- it (emptying it, or rebuilding it from `chunks`) in one transaction, at start, to match the
-- setting. Existing databases keep a complete index until then.
CREATE TABLE search_state (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    fts INTEGER NOT NULL CHECK (fts IN (0, 1))
);
INSERT INTO search_state (id, fts) VALUES (1, 1);

DROP TRIGGER chunks_fts_insert;
DROP TRIGGER chunks_fts_delete;
CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks
WHEN (SELECT fts FROM search_state WHERE id = 1) = 1 BEGIN
    INSERT INTO chunks_fts (rowid, text) VALUES (new.seq, new.text);
END;
CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks
WHEN (SELECT fts FROM search_state WHERE id = 1) = 1 BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.seq, old.text);
END;
