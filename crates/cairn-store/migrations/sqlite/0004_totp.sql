-- Cairn schema, SQLite, migration 0004: two-factor sign-in.
-- Twin of ../postgres/0004_totp.sql.

-- The last TOTP time step accepted for the user: a code is never accepted twice.
ALTER TABLE users ADD COLUMN totp_last_step INTEGER;

-- Single-use backup codes, stored as SHA-256 hashes.
CREATE TABLE backup_codes (
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    used_at    INTEGER,
    PRIMARY KEY (user_id, code_hash)
) WITHOUT ROWID;
