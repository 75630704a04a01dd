-- Cairn schema, PostgreSQL, migration 0004: two-factor sign-in. Twin of ../sqlite/0004_totp.sql.

ALTER TABLE users ADD COLUMN totp_last_step bigint;

CREATE TABLE backup_codes (
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  text        NOT NULL,
    created_at timestamptz NOT NULL,
    used_at    timestamptz,
    PRIMARY KEY (user_id, code_hash)
);
