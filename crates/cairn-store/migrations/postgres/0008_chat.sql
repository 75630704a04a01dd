-- Cairn schema, PostgreSQL, migration 0008: model providers and models, conversations and
-- their messages, prices, budgets and usage. Twin of ../sqlite/0008_chat.sql (comments there).

CREATE TABLE llm_providers (
    id             uuid    NOT NULL PRIMARY KEY,
    name           text    NOT NULL,
    kind           text    NOT NULL CHECK (kind IN ('openai', 'anthropic', 'gemini')),
    base_url       text    NOT NULL,
    sealed_api_key bytea,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE UNIQUE INDEX llm_providers_name_key ON llm_providers (name);

CREATE TABLE llm_models (
    id                uuid    NOT NULL PRIMARY KEY,
    name              text    NOT NULL,
    provider_id       uuid    NOT NULL REFERENCES llm_providers (id) ON DELETE CASCADE,
    upstream_model    text    NOT NULL,
    context_tokens    bigint  NOT NULL,
    max_output_tokens bigint  NOT NULL,
    roles             text    NOT NULL,
    enabled           boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
CREATE UNIQUE INDEX llm_models_name_key ON llm_models (name);
CREATE INDEX llm_models_provider_id ON llm_models (provider_id);

CREATE TABLE model_prices (
    model                  text    NOT NULL PRIMARY KEY,
    input_micros           bigint  NOT NULL,
    output_micros          bigint  NOT NULL,
    embedding_micros       bigint  NOT NULL,
    updated_at             timestamptz NOT NULL
);

CREATE TABLE conversations (
    id          uuid    NOT NULL PRIMARY KEY,
    user_id     uuid    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title       text    NOT NULL,
    model       text    NOT NULL,
    collections jsonb,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX conversations_user_id_updated_at ON conversations (user_id, updated_at);

CREATE TABLE messages (
    id               uuid    NOT NULL PRIMARY KEY,
    conversation_id  uuid    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role             text    NOT NULL CHECK (role IN ('user', 'assistant')),
    content          text    NOT NULL,
    status           text    NOT NULL CHECK (status IN ('complete', 'incomplete', 'failed')),
    model            text,
    error_code       text,
    input_tokens     bigint  NOT NULL DEFAULT 0,
    output_tokens    bigint  NOT NULL DEFAULT 0,
    tokens_estimated boolean NOT NULL DEFAULT false,
    cost_micros      bigint  NOT NULL DEFAULT 0,
    first_token_ms   bigint,
    latency_ms       bigint,
    sources          jsonb,
    citations        jsonb,
    created_at       timestamptz NOT NULL
);
CREATE INDEX messages_conversation_id ON messages (conversation_id, id);

CREATE TABLE budgets (
    subject              text    NOT NULL PRIMARY KEY,
    monthly_limit_micros bigint  NOT NULL,
    updated_at           timestamptz NOT NULL,
    updated_by           uuid    REFERENCES users (id) ON DELETE SET NULL
);

CREATE TABLE budget_spend (
    subject         text    NOT NULL,
    month           text    NOT NULL,
    spent_micros    bigint  NOT NULL DEFAULT 0,
    reserved_micros bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (subject, month)
);

CREATE TABLE budget_reservations (
    id            uuid    NOT NULL PRIMARY KEY,
    user_id       uuid    NOT NULL,
    month         text    NOT NULL,
    amount_micros bigint  NOT NULL,
    created_at    timestamptz NOT NULL
);
CREATE INDEX budget_reservations_created_at ON budget_reservations (created_at);

CREATE TABLE usage_events (
    id            uuid    NOT NULL PRIMARY KEY,
    user_id       uuid    REFERENCES users (id) ON DELETE SET NULL,
    model         text    NOT NULL,
    kind          text    NOT NULL CHECK (kind IN ('chat', 'embedding')),
    input_tokens  bigint  NOT NULL,
    output_tokens bigint  NOT NULL,
    estimated     boolean NOT NULL,
    cost_micros   bigint  NOT NULL,
    created_at    timestamptz NOT NULL
);
CREATE INDEX usage_events_created_at ON usage_events (created_at);
CREATE INDEX usage_events_user_id_created_at ON usage_events (user_id, created_at);
