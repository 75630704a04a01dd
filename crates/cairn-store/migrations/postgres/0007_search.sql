-- Cairn schema, PostgreSQL, migration 0007: what semantic search needs. Twin of
-- ../sqlite/0007_search.sql. Vectors live in `chunk_vectors` (pgvector, any dimension); an
-- HNSW index per dimension in use (`chunk_vectors_hnsw_<dims>`, a partial index on the
-- vectors of that length) is created when a model of that dimension is first used.
CREATE EXTENSION IF NOT EXISTS vector;
ALTER TABLE collections ADD COLUMN embedding_model text;
ALTER TABLE collections ADD COLUMN embedding_dimensions integer;
ALTER TABLE chunks ADD COLUMN embedded_with text;
CREATE INDEX chunks_document_embedded ON chunks (document_id, embedded_with);

CREATE TABLE chunk_vectors (
    seq           bigint  NOT NULL PRIMARY KEY REFERENCES chunks (seq) ON DELETE CASCADE,
    collection_id uuid    NOT NULL,
    document_id   uuid    NOT NULL,
    model         text    NOT NULL,
    dimensions    integer NOT NULL,
    embedding     vector  NOT NULL
);
