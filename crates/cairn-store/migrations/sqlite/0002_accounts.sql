-- Cairn schema, SQLite, migration 0002: people and access.
-- Twin of ../postgres/0002_accounts.sql (ids TEXT = uuid, times INTEGER ms = timestamptz,
-- booleans INTEGER = boolean, JSON TEXT = jsonb, BLOB = bytea).

-- One row per person. `email` is stored normalised (NFKC, trimmed, lower-cased), so uniqueness
-- is case- and Unicode-form-insensitive.
CREATE TABLE users (
    id                 TEXT    NOT NULL PRIMARY KEY,
    email              TEXT    NOT NULL,
    display_name       TEXT    NOT NULL,
    -- PHC string (Argon2id parameters, salt and hash together).
    password_hash      TEXT    NOT NULL,
    role               TEXT    NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    -- pending: signed up, awaiting approval; denied: approval refused; suspended: blocked by an admin.
    state              TEXT    NOT NULL CHECK (state IN ('pending', 'active', 'suspended', 'denied')),
    -- TOTP secret encrypted with the data key (XChaCha20-Poly1305, nonce prepended); NULL when not enrolled.
    totp_secret        BLOB,
    totp_enabled       INTEGER NOT NULL DEFAULT 0,
    failed_sign_ins    INTEGER NOT NULL DEFAULT 0,
    -- Sign-ins are refused until then after repeated failures (the slow-down, not a lockout).
    locked_until       INTEGER,
    -- Access tokens issued before this instant are void (log out everywhere, password change).
    tokens_valid_after INTEGER NOT NULL,
    last_sign_in_at    INTEGER,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE UNIQUE INDEX users_email_key ON users (email);
-- At most one owner: the first-run setup race can create exactly one.
CREATE UNIQUE INDEX users_one_owner ON users (role) WHERE role = 'owner';

-- A session is one sign-in on one device: the family of refresh tokens that rotate from it.
CREATE TABLE sessions (
    id            TEXT    NOT NULL PRIMARY KEY,
    user_id       TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    -- Set on log-out, revocation, or when a spent refresh token is presented again.
    revoked_at    INTEGER,
    revoked_reason TEXT,
    user_agent    TEXT,
    ip            TEXT
);
CREATE INDEX sessions_user_id ON sessions (user_id);

-- Refresh tokens, stored as SHA-256 hashes. Each is spent by one refresh, which issues the next.
CREATE TABLE refresh_tokens (
    token_hash  TEXT    NOT NULL PRIMARY KEY,
    session_id  TEXT    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL,
    spent_at    INTEGER
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_session_id ON refresh_tokens (session_id);

-- Append-only record of security events.
CREATE TABLE audit_log (
    id          TEXT    NOT NULL PRIMARY KEY,
    at          INTEGER NOT NULL,
    actor_id    TEXT,
    action      TEXT    NOT NULL,
    target_type TEXT,
    target_id   TEXT,
    ip          TEXT,
    user_agent  TEXT,
    details     TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor_id ON audit_log (actor_id);

-- Per-user preferences (theme, default model...), as JSON under a key.
CREATE TABLE user_preferences (
    user_id    TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key        TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
) WITHOUT ROWID;
