-- Cairn schema, PostgreSQL, migration 0002: people and access.
-- Twin of ../sqlite/0002_accounts.sql; comments there explain each column.

CREATE TABLE users (
    id                 uuid        NOT NULL PRIMARY KEY,
    email              text        NOT NULL,
    display_name       text        NOT NULL,
    password_hash      text        NOT NULL,
    role               text        NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    state              text        NOT NULL CHECK (state IN ('pending', 'active', 'suspended', 'denied')),
    totp_secret        bytea,
    totp_enabled       boolean     NOT NULL DEFAULT false,
    failed_sign_ins    integer     NOT NULL DEFAULT 0,
    locked_until       timestamptz,
    tokens_valid_after timestamptz NOT NULL,
    last_sign_in_at    timestamptz,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);
CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE UNIQUE INDEX users_one_owner ON users (role) WHERE role = 'owner';

CREATE TABLE sessions (
    id             uuid        NOT NULL PRIMARY KEY,
    user_id        uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at     timestamptz NOT NULL,
    last_used_at   timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz,
    revoked_reason text,
    user_agent     text,
    ip             text
);
CREATE INDEX sessions_user_id ON sessions (user_id);

CREATE TABLE refresh_tokens (
    token_hash  text        NOT NULL PRIMARY KEY,
    session_id  uuid        NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL,
    spent_at    timestamptz
);
CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);

CREATE TABLE audit_log (
    id          uuid        NOT NULL PRIMARY KEY,
    at          timestamptz NOT NULL,
    actor_id    uuid,
    action      text        NOT NULL,
    target_type text,
    target_id   text,
    ip          text,
    user_agent  text,
    details     jsonb
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor_id ON audit_log (actor_id);

CREATE TABLE user_preferences (
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key        text        NOT NULL,
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, key)
);
