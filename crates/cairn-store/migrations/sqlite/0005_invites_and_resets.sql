-- Cairn schema, SQLite, migration 0005: invitations and password-reset links.
-- Twin of ../postgres/0005_invites_and_resets.sql. Both hold only the SHA-256 of their token.

-- An invitation admits up to `max_uses` sign-ups, as `role`, until it expires or is revoked.
CREATE TABLE invites (
    id          TEXT    NOT NULL PRIMARY KEY,
    token_hash  TEXT    NOT NULL,
    role        TEXT    NOT NULL CHECK (role IN ('member', 'admin')),
    created_by  TEXT    REFERENCES users (id) ON DELETE SET NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    max_uses    INTEGER NOT NULL,
    uses        INTEGER NOT NULL DEFAULT 0,
    revoked_at  INTEGER
);
CREATE UNIQUE INDEX invites_token_hash_key ON invites (token_hash);

-- A one-time link an admin hands to someone who cannot sign in, to set a new password.
CREATE TABLE password_resets (
    token_hash  TEXT    NOT NULL PRIMARY KEY,
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_by  TEXT    REFERENCES users (id) ON DELETE SET NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
) WITHOUT ROWID;
