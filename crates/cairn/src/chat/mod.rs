//! Answers: grounded, streamed chat with citations, from the built-in answerers or a configured
//! provider, within the budgets an admin set.
//!
//! - [`answer`] — the pipeline every question runs: retrieve, build the prompt, reserve the
//!   budget, stream from the model, check the citations, store and settle.
//! - [`prompt`] — numbered sources and history fitted into the model's context window.
//! - [`citations`] — `[n]` markers mapped to the sources they name.
//! - [`routes`] — conversations and the answer stream (`/api/conversations…`, `/api/models`,
//!   `/api/usage`); [`admin`] — providers, models, prices, budgets and usage for admins;
//!   [`openai_api`] — the OpenAI-compatible `/v1` API.

pub mod admin;
pub mod answer;
pub mod citations;
pub mod openai_api;
pub mod prompt;
pub mod routes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cairn_llm::{Client, Kind, Timeouts};
use cairn_store::chat::{ModelRow, ProviderRow};
use cairn_store::{Id, Timestamp};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::AppState;
use crate::auth::Principal;
use crate::config::{Config, Mode};
use crate::http::error::{ApiError, ApiResult};

/// The built-in answerer that needs no model.
pub const EXTRACTIVE: &str = "extractive";
/// The built-in demonstration answerer.
pub const MOCK: &str = "mock";
/// Prefix of the virtual models that answer from one collection (`/v1` only).
pub const COLLECTION_MODEL_PREFIX: &str = "cairn:";

/// What produces an answer.
#[derive(Debug, Clone)]
pub enum Engine {
    Extractive,
    Mock,
    Remote(Client),
}

/// A model resolved for one caller.
#[derive(Debug, Clone)]
pub struct Model {
    /// Its name in Cairn.
    pub name: String,
    pub engine: Engine,
    /// The provider's name for it.
    pub upstream: String,
    pub context_tokens: u64,
    pub max_output_tokens: u32,
    pub price: Price,
}

/// Micro-units of the currency per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Price {
    pub input_micros: i64,
    pub output_micros: i64,
    pub embedding_micros: i64,
}

impl From<cairn_store::chat::PriceRow> for Price {
    fn from(p: cairn_store::chat::PriceRow) -> Self {
        Price {
            input_micros: p.input_micros,
            output_micros: p.output_micros,
            embedding_micros: p.embedding_micros,
        }
    }
}

impl Price {
    /// What a call with these token counts costs, rounded up to a whole micro-unit.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> i64 {
        let total = i128::from(input_tokens) * i128::from(self.input_micros)
            + i128::from(output_tokens) * i128::from(self.output_micros);
        let micros = (total + 999_999) / 1_000_000;
        i64::try_from(micros).unwrap_or(i64::MAX)
    }

    pub fn embedding_cost(&self, tokens: u64) -> i64 {
        let total = i128::from(tokens) * i128::from(self.embedding_micros);
        i64::try_from((total + 999_999) / 1_000_000).unwrap_or(i64::MAX)
    }
}

/// A model as the API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub id: String,
    /// `builtin`, or the provider's format (`openai`, `anthropic`, `gemini`).
    pub kind: String,
    pub provider: Option<String>,
    pub context_tokens: u64,
    pub max_output_tokens: u32,
    pub price: Price,
    pub default: bool,
}

/// Per-process chat state: the stream caps and the provider clients.
#[derive(Clone)]
pub struct Runtime(Arc<RuntimeInner>);

struct RuntimeInner {
    streams: Arc<Semaphore>,
    per_user_max: usize,
    per_user: Mutex<HashMap<Id, usize>>,
    clients: Mutex<HashMap<Id, (Timestamp, Client)>>,
}

/// One answer's place among the streams; released when dropped.
pub struct StreamSlot {
    _permit: OwnedSemaphorePermit,
    user: Id,
    runtime: Runtime,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Ok(mut map) = self.runtime.0.per_user.lock() {
            if let Some(n) = map.get_mut(&self.user) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&self.user);
                }
            }
        }
    }
}

/// Why no stream slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    Process,
    User,
}

impl Busy {
    pub fn error(self, config: &Config) -> ApiError {
        let (message, limit) = match self {
            Busy::Process => (
                "Too many answers are streaming on this server right now; try again in a moment.",
                config.chat.max_concurrent_streams,
            ),
            Busy::User => (
                "You already have the most answers streaming at once; wait for one to finish.",
                config.chat.max_streams_per_user,
            ),
        };
        ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            message,
        )
        .with_details(serde_json::json!({
            "scope": match self { Busy::Process => "server", Busy::User => "user" },
            "limit": limit,
        }))
    }
}

impl Runtime {
    pub fn new(config: &Config) -> Self {
        Runtime(Arc::new(RuntimeInner {
            streams: Arc::new(Semaphore::new(config.chat.max_concurrent_streams)),
            per_user_max: config.chat.max_streams_per_user,
            per_user: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
        }))
    }

    /// A stream slot for `user`, if both caps allow one more.
    pub fn try_slot(&self, user: Id) -> Result<StreamSlot, Busy> {
        let permit = self
            .0
            .streams
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy::Process)?;
        let mut map = self.0.per_user.lock().map_err(|_| Busy::Process)?;
        let n = map.entry(user).or_default();
        if *n >= self.0.per_user_max {
            return Err(Busy::User);
        }
        *n += 1;
        Ok(StreamSlot {
            _permit: permit,
            user,
            runtime: self.clone(),
        })
    }

    /// Answers streaming now.
    pub fn streaming(&self) -> usize {
        self.0
            .per_user
            .lock()
            .map(|m| m.values().sum())
            .unwrap_or(0)
    }

    /// The client for `provider`, made once per provider version.
    fn client(&self, state: &AppState, provider: &ProviderRow) -> ApiResult<Client> {
        if let Ok(map) = self.0.clients.lock() {
            if let Some((at, c)) = map.get(&provider.id) {
                if *at == provider.updated_at {
                    return Ok(c.clone());
                }
            }
        }
        let client = build_client(state, provider)?;
        if let Ok(mut map) = self.0.clients.lock() {
            map.insert(provider.id, (provider.updated_at, client.clone()));
        }
        Ok(client)
    }
}

/// A client for `provider`, its key unsealed with the data key.
/// A client for `provider` outside a running server (for `cairn doctor`).
pub fn client_for(
    config: &crate::config::Config,
    data_key: &[u8; 32],
    provider: &ProviderRow,
) -> Result<Client, String> {
    let kind =
        Kind::parse(&provider.kind).ok_or_else(|| format!("unknown kind {}", provider.kind))?;
    let key = match &provider.sealed_api_key {
        Some(sealed) => {
            let plain = crate::crypto::open(data_key, sealed, provider.id.to_string().as_bytes())
                .map_err(|e| format!("its key does not open with this data key: {e}"))?;
            Some(String::from_utf8(plain).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let timeouts = Timeouts {
        connect: config.chat.connect_timeout,
        idle: config.chat.idle_timeout,
    };
    Client::new(kind, &provider.base_url, key, timeouts, config.chat.retries)
        .map_err(|e| e.to_string())
}

pub fn build_client(state: &AppState, provider: &ProviderRow) -> ApiResult<Client> {
    let kind = Kind::parse(&provider.kind).ok_or_else(|| {
        ApiError::internal(anyhow::anyhow!("provider kind {} unknown", provider.kind))
    })?;
    let key = match &provider.sealed_api_key {
        Some(sealed) => {
            let plain = crate::crypto::open(
                &state.keys.data_key,
                sealed,
                provider.id.to_string().as_bytes(),
            )
            .map_err(|e| ApiError::internal(anyhow::anyhow!("unsealing a provider key: {e}")))?;
            Some(String::from_utf8(plain).map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?)
        }
        None => None,
    };
    let timeouts = Timeouts {
        connect: state.config.chat.connect_timeout,
        idle: state.config.chat.idle_timeout,
    };
    Client::new(
        kind,
        &provider.base_url,
        key,
        timeouts,
        state.config.chat.retries,
    )
    .map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            e.code(),
            format!(
                "The model provider `{}` is misconfigured: {e}",
                provider.name
            ),
        )
    })
}

/// Whether the `mock` model is offered.
pub fn mock_allowed(config: &Config) -> bool {
    config.mode == Mode::Development || config.chat.allow_mock
}

fn role_allowed(model: &ModelRow, actor: &Principal) -> bool {
    model
        .roles
        .split(',')
        .any(|r| r.trim() == actor.role.as_str())
}

pub(crate) async fn price_of(state: &AppState, model: &str) -> ApiResult<Price> {
    Ok(state
        .store
        .price(model)
        .await?
        .map(Price::from)
        .unwrap_or_default())
}

fn unknown_model(name: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_model",
        format!("There is no model `{name}` you may use; GET /api/models lists them."),
    )
    .with_details(serde_json::json!({ "model": name }))
}

/// The model `name` as `actor` may use it; 422 `unknown_model` when there is none they may.
pub async fn resolve(state: &AppState, actor: &Principal, name: &str) -> ApiResult<Model> {
    let builtin = |engine: Engine| Model {
        name: name.to_owned(),
        engine,
        upstream: name.to_owned(),
        context_tokens: 16_384,
        max_output_tokens: 1024,
        price: Price::default(),
    };
    // The built-ins run no model: they are free whatever price is set for their names.
    match name {
        EXTRACTIVE => return Ok(builtin(Engine::Extractive)),
        MOCK if mock_allowed(&state.config) => return Ok(builtin(Engine::Mock)),
        _ => {}
    }
    let Some((model, provider)) = state.store.model_named(name).await? else {
        return Err(unknown_model(name));
    };
    if !model.enabled || !role_allowed(&model, actor) {
        return Err(unknown_model(name));
    }
    let client = state.chat.client(state, &provider)?;
    Ok(Model {
        name: model.name.clone(),
        engine: Engine::Remote(client),
        upstream: model.upstream_model.clone(),
        context_tokens: u64::try_from(model.context_tokens).unwrap_or(4096),
        max_output_tokens: u32::try_from(model.max_output_tokens).unwrap_or(1024),
        price: price_of(state, &model.name).await?,
    })
}

/// The models `actor` may use: the built-ins, then the configured ones.
pub async fn available(state: &AppState, actor: &Principal) -> ApiResult<Vec<ModelInfo>> {
    let prices: HashMap<String, Price> = state
        .store
        .prices()
        .await?
        .into_iter()
        .map(|p| (p.model.clone(), Price::from(p)))
        .collect();
    let default = &state.config.chat.default_model;
    let mut out = Vec::new();
    let mut builtins = vec![EXTRACTIVE];
    if mock_allowed(&state.config) {
        builtins.push(MOCK);
    }
    for b in builtins {
        out.push(ModelInfo {
            id: b.to_owned(),
            kind: "builtin".into(),
            provider: None,
            context_tokens: 16_384,
            max_output_tokens: 1024,
            price: Price::default(),
            default: default == b,
        });
    }
    let providers: HashMap<Id, ProviderRow> = state
        .store
        .providers()
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect();
    for m in state.store.models().await? {
        if !m.enabled || !role_allowed(&m, actor) {
            continue;
        }
        let Some(p) = providers.get(&m.provider_id) else {
            continue;
        };
        out.push(ModelInfo {
            kind: p.kind.clone(),
            provider: Some(p.name.clone()),
            context_tokens: u64::try_from(m.context_tokens).unwrap_or(0),
            max_output_tokens: u32::try_from(m.max_output_tokens).unwrap_or(0),
            price: prices.get(&m.name).copied().unwrap_or_default(),
            default: default == &m.name,
            id: m.name,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_round_up_to_a_micro_unit() {
        let p = Price {
            input_micros: 150_000,
            output_micros: 600_000,
            embedding_micros: 20_000,
        };
        // 1,000 in at $0.15/M + 500 out at $0.60/M = 150 + 300 micros.
        assert_eq!(p.cost(1_000, 500), 450);
        assert_eq!(p.cost(1, 0), 1);
        assert_eq!(p.cost(0, 0), 0);
        assert_eq!(Price::default().cost(1_000_000, 1_000_000), 0);
        assert_eq!(p.embedding_cost(1_000_000), 20_000);
        assert_eq!(p.cost(u64::MAX, u64::MAX), i64::MAX);
    }
}
