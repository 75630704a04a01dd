-- Cairn schema, SQLite, migration 0008: model providers and models, conversations and their
-- messages, prices, budgets and usage. Twin of ../postgres/0008_chat.sql.

-- A remote model provider an admin configured. Its API key is sealed with the data key
-- (XChaCha20-Poly1305, bound to the provider id) and never returned by the API.
CREATE TABLE llm_providers (
    id             TEXT    NOT NULL PRIMARY KEY,
    name           TEXT    NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('openai', 'anthropic', 'gemini')),
    base_url       TEXT    NOT NULL,
    sealed_api_key BLOB,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE UNIQUE INDEX llm_providers_name_key ON llm_providers (name);

-- A model people may choose: its name in Cairn, the provider's name for it, its context window
-- and answer length, and the roles allowed to use it (comma-separated).
CREATE TABLE llm_models (
    id                TEXT    NOT NULL PRIMARY KEY,
    name              TEXT    NOT NULL,
    provider_id       TEXT    NOT NULL REFERENCES llm_providers (id) ON DELETE CASCADE,
    upstream_model    TEXT    NOT NULL,
    context_tokens    INTEGER NOT NULL,
    max_output_tokens INTEGER NOT NULL,
    roles             TEXT    NOT NULL,
    enabled           INTEGER NOT NULL DEFAULT 1,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE UNIQUE INDEX llm_models_name_key ON llm_models (name);
CREATE INDEX llm_models_provider_id ON llm_models (provider_id);

-- What a model costs, in micro-units of the workspace currency per million tokens. Keyed by the
-- model's name in Cairn (configured models, built-in ones, and the embedding model alike).
CREATE TABLE model_prices (
    model                  TEXT    NOT NULL PRIMARY KEY,
    input_micros           INTEGER NOT NULL,
    output_micros          INTEGER NOT NULL,
    embedding_micros       INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL
);

-- A person's conversation. `collections` is the JSON list it searches (NULL: every collection
-- its owner may read).
CREATE TABLE conversations (
    id          TEXT    NOT NULL PRIMARY KEY,
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title       TEXT    NOT NULL,
    model       TEXT    NOT NULL,
    collections TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX conversations_user_id_updated_at ON conversations (user_id, updated_at);

-- One turn. An assistant message records the model, tokens (and whether they were estimated),
-- cost, timings, the sources it was given and the citations it made; `status` says whether it
-- ended normally, was cut short (the partial answer is kept), or failed before any text.
CREATE TABLE messages (
    id               TEXT    NOT NULL PRIMARY KEY,
    conversation_id  TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role             TEXT    NOT NULL CHECK (role IN ('user', 'assistant')),
    content          TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('complete', 'incomplete', 'failed')),
    model            TEXT,
    error_code       TEXT,
    input_tokens     INTEGER NOT NULL DEFAULT 0,
    output_tokens    INTEGER NOT NULL DEFAULT 0,
    tokens_estimated INTEGER NOT NULL DEFAULT 0,
    cost_micros      INTEGER NOT NULL DEFAULT 0,
    first_token_ms   INTEGER,
    latency_ms       INTEGER,
    sources          TEXT,
    citations        TEXT,
    created_at       INTEGER NOT NULL
);
CREATE INDEX messages_conversation_id ON messages (conversation_id, id);

-- Monthly spending limits: `subject` is 'workspace' or 'user:<id>'.
CREATE TABLE budgets (
    subject              TEXT    NOT NULL PRIMARY KEY,
    monthly_limit_micros INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    updated_by           TEXT    REFERENCES users (id) ON DELETE SET NULL
);

-- Spent and set-aside money per subject and month ('2026-11', UTC). A call reserves its most
-- expensive outcome with one conditional UPDATE (never over the limit, even under concurrent
-- calls), then settles to what it really cost.
CREATE TABLE budget_spend (
    subject         TEXT    NOT NULL,
    month           TEXT    NOT NULL,
    spent_micros    INTEGER NOT NULL DEFAULT 0,
    reserved_micros INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subject, month)
);

-- Reservations of calls in flight; maintenance releases those a dead process left behind.
CREATE TABLE budget_reservations (
    id            TEXT    NOT NULL PRIMARY KEY,
    user_id       TEXT    NOT NULL,
    month         TEXT    NOT NULL,
    amount_micros INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX budget_reservations_created_at ON budget_reservations (created_at);

-- One row per model call: who, which model, what for, tokens and cost.
CREATE TABLE usage_events (
    id            TEXT    NOT NULL PRIMARY KEY,
    user_id       TEXT    REFERENCES users (id) ON DELETE SET NULL,
    model         TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('chat', 'embedding')),
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    estimated     INTEGER NOT NULL,
    cost_micros   INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX usage_events_created_at ON usage_events (created_at);
CREATE INDEX usage_events_user_id_created_at ON usage_events (user_id, created_at);
