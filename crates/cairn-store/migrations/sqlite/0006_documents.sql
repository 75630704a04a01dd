-- Cairn schema, SQLite, migration 0006: collections, documents, chunks with their keyword index,
-- and the durable job queue. Twin of ../postgres/0006_documents.sql.

-- A collection holds documents. `personal_of` marks a user's own collection (one each, never
-- shared); every other collection is shared through its members.
CREATE TABLE collections (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL DEFAULT '',
    personal_of TEXT    REFERENCES users (id) ON DELETE CASCADE,
    created_by  TEXT    REFERENCES users (id) ON DELETE SET NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX collections_personal_of_key ON collections (personal_of)
    WHERE personal_of IS NOT NULL;

-- Who may do what in a collection: viewer (read, search), editor (plus add and delete
-- documents), owner (plus share, rename, delete the collection).
CREATE TABLE collection_members (
    collection_id TEXT    NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    user_id       TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role          TEXT    NOT NULL CHECK (role IN ('viewer', 'editor', 'owner')),
    added_at      INTEGER NOT NULL,
    added_by      TEXT    REFERENCES users (id) ON DELETE SET NULL,
    PRIMARY KEY (collection_id, user_id)
) WITHOUT ROWID;
CREATE INDEX collection_members_user_id ON collection_members (user_id);

-- A document: its encrypted blob (`blob_key` in the blob store; its own key sealed with the
-- data key in `sealed_key`), its content hash (duplicates are refused per collection), and where
-- its ingestion stands.
CREATE TABLE documents (
    id             TEXT    NOT NULL PRIMARY KEY,
    collection_id  TEXT    NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    uploaded_by    TEXT    REFERENCES users (id) ON DELETE SET NULL,
    filename       TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    size_bytes     INTEGER NOT NULL,
    content_sha256 TEXT    NOT NULL,
    blob_key       TEXT    NOT NULL,
    sealed_key     BLOB    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN
                     ('queued', 'parsing', 'chunking', 'indexing', 'ready', 'failed', 'cancelled')),
    error_code     TEXT,
    error_message  TEXT,
    progress_done  INTEGER NOT NULL DEFAULT 0,
    progress_total INTEGER NOT NULL DEFAULT 0,
    title          TEXT,
    chunk_count    INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    deleted_at     INTEGER,
    deleted_by     TEXT    REFERENCES users (id) ON DELETE SET NULL
);
CREATE UNIQUE INDEX documents_collection_content_key ON documents (collection_id, content_sha256)
    WHERE deleted_at IS NULL;
CREATE INDEX documents_collection_id ON documents (collection_id, id);
CREATE INDEX documents_uploaded_by ON documents (uploaded_by);
CREATE INDEX documents_deleted_at ON documents (deleted_at) WHERE deleted_at IS NOT NULL;

-- A document's text in pieces sized for retrieval, with where each came from (`location`:
-- page, heading path, time range, speakers…). `seq` is the keyword index's row id.
CREATE TABLE chunks (
    seq           INTEGER NOT NULL PRIMARY KEY,
    id            TEXT    NOT NULL,
    document_id   TEXT    NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    collection_id TEXT    NOT NULL,
    ordinal       INTEGER NOT NULL,
    text          TEXT    NOT NULL,
    token_count   INTEGER NOT NULL,
    location      TEXT    NOT NULL
);
CREATE UNIQUE INDEX chunks_id_key ON chunks (id);
CREATE UNIQUE INDEX chunks_document_ordinal_key ON chunks (document_id, ordinal);
CREATE INDEX chunks_collection_id ON chunks (collection_id);

-- The keyword index (SQLite only; PostgreSQL uses a tsvector column), kept by triggers so a
-- chunk is searchable in the transaction that stores it and gone in the one that deletes it.
CREATE VIRTUAL TABLE chunks_fts USING fts5(
    text, content = 'chunks', content_rowid = 'seq',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
-- Merge index segments less eagerly than the default (4): ingestion writes whole documents at
-- a time, and the maintenance sweep merges in the background.
INSERT INTO chunks_fts (chunks_fts, rank) VALUES ('automerge', 8);
CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, text) VALUES (new.seq, new.text);
END;
CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.seq, old.text);
END;

-- The durable job queue. A worker claims a queued job whose time has come by setting a lease;
-- heartbeats extend it; a watchdog re-queues jobs whose lease ran out. `subject` names what the
-- job is about (a document id) for lookups.
CREATE TABLE jobs (
    id             TEXT    NOT NULL PRIMARY KEY,
    kind           TEXT    NOT NULL,
    subject        TEXT,
    payload        TEXT    NOT NULL,
    status         TEXT    NOT NULL CHECK (status IN
                     ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    max_attempts   INTEGER NOT NULL,
    timeout_secs   INTEGER NOT NULL,
    run_at         INTEGER NOT NULL,
    lease_until    INTEGER,
    worker         TEXT,
    last_error     TEXT,
    progress_done  INTEGER NOT NULL DEFAULT 0,
    progress_total INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    finished_at    INTEGER
);
CREATE INDEX jobs_queued ON jobs (run_at) WHERE status = 'queued';
CREATE INDEX jobs_running ON jobs (lease_until) WHERE status = 'running';
CREATE INDEX jobs_subject ON jobs (subject);
