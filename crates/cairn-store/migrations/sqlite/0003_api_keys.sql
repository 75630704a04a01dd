-- Cairn schema, SQLite, migration 0003: API keys.
-- Twin of ../postgres/0003_api_keys.sql.

-- A key is `cairn_<prefix>_<secret>`: the prefix finds the row, the secret's SHA-256 must match.
-- The secret has 256 random bits, so a fast hash is enough; the key itself is shown only once.
CREATE TABLE api_keys (
    id           TEXT    NOT NULL PRIMARY KEY,
    user_id      TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    prefix       TEXT    NOT NULL,
    secret_hash  TEXT    NOT NULL,
    -- Space-separated scopes: read, chat, ingest, traces:write, admin.
    scopes       TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    -- Updated at most once a minute.
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE UNIQUE INDEX api_keys_prefix_key ON api_keys (prefix);
CREATE INDEX api_keys_user_id ON api_keys (user_id);
