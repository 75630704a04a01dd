-- Cairn schema, PostgreSQL, migration 0005: invitations and password-reset links.
-- Twin of ../sqlite/0005_invites_and_resets.sql.

CREATE TABLE invites (
    id          uuid        NOT NULL PRIMARY KEY,
    token_hash  text        NOT NULL,
    role        text        NOT NULL CHECK (role IN ('member', 'admin')),
    created_by  uuid        REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    max_uses    integer     NOT NULL,
    uses        integer     NOT NULL DEFAULT 0,
    revoked_at  timestamptz
);
CREATE UNIQUE INDEX invites_token_hash_key ON invites (token_hash);

CREATE TABLE password_resets (
    token_hash  text        NOT NULL PRIMARY KEY,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_by  uuid        REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
