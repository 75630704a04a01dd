-- Cairn schema, SQLite, migration 0007: what semantic search needs.
--
-- Each collection records the embedding model its vectors come from (and their length), so
-- vectors of two models are never compared; each chunk records the model of its stored vector.
-- The vectors themselves live in a `vec0` table per dimension (`chunk_vectors_<dims>`, from
-- the sqlite-vec extension), created when a model of that dimension is first used, with a
-- trigger that removes a chunk's vector with the chunk.
ALTER TABLE collections ADD COLUMN embedding_model TEXT;
ALTER TABLE collections ADD COLUMN embedding_dimensions INTEGER;
ALTER TABLE chunks ADD COLUMN embedded_with TEXT;
CREATE INDEX chunks_document_embedded ON chunks (document_id, embedded_with);
