//! For admins: model providers (keys sealed, never returned), the models people may use and by
//! which roles, prices, budgets, and usage summaries. Every change is audited.

use axum::extract::Path;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cairn_llm::Kind;
use cairn_store::chat::{ModelRow, PriceRow, ProviderRow};
use cairn_store::usage::{self, GroupBy};
use cairn_store::{Id, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{build_client, EXTRACTIVE, MOCK};
use crate::accounts::context::Ctx;
use crate::auth::{ApiRoutes, Rule, Scope};
use crate::documents::routes::bad_query;
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::Json;
use crate::http::query::Query;

pub fn routes() -> ApiRoutes {
    let rule = Rule::ADMIN.key(Scope::Admin);
    ApiRoutes::new()
        .route(Method::GET, "/api/admin/providers", rule, list_providers)
        .route(Method::POST, "/api/admin/providers", rule, create_provider)
        .route(
            Method::PATCH,
            "/api/admin/providers/{id}",
            rule,
            update_provider,
        )
        .route(
            Method::DELETE,
            "/api/admin/providers/{id}",
            rule,
            delete_provider,
        )
        .route(
            Method::POST,
            "/api/admin/providers/{id}/check",
            rule,
            check_provider,
        )
        .route(Method::GET, "/api/admin/models", rule, list_models)
        .route(Method::POST, "/api/admin/models", rule, create_model)
        .route(Method::PATCH, "/api/admin/models/{id}", rule, update_model)
        .route(Method::DELETE, "/api/admin/models/{id}", rule, delete_model)
        .route(Method::GET, "/api/admin/prices", rule, list_prices)
        .route(Method::PUT, "/api/admin/prices/{model}", rule, set_price)
        .route(
            Method::DELETE,
            "/api/admin/prices/{model}",
            rule,
            delete_price,
        )
        .route(Method::GET, "/api/admin/budgets", rule, list_budgets)
        .route(
            Method::PUT,
            "/api/admin/budgets/workspace",
            rule,
            set_workspace_budget,
        )
        .route(
            Method::DELETE,
            "/api/admin/budgets/workspace",
            rule,
            remove_workspace_budget,
        )
        .route(
            Method::PUT,
            "/api/admin/budgets/users/{id}",
            rule,
            set_user_budget,
        )
        .route(
            Method::DELETE,
            "/api/admin/budgets/users/{id}",
            rule,
            remove_user_budget,
        )
        .route(Method::GET, "/api/admin/usage", rule, usage_summary)
}

const MAX_NAME_CHARS: usize = 100;

fn check_name(field: &'static str, value: &str) -> ApiResult<String> {
    let v = value.trim();
    if v.is_empty() || v.chars().count() > MAX_NAME_CHARS || v.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            field,
            "must be 1 to 100 characters, without control characters",
        ));
    }
    Ok(v.to_owned())
}

fn created<T: Serialize>(location: String, body: T) -> Response {
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

fn name_taken(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "name_taken",
        format!("Another {what} already has this name."),
    )
}

// ---- providers --------------------------------------------------------------------------

/// A provider as the API shows it: whether a key is set, never the key.
#[derive(Serialize)]
struct ProviderView {
    #[serde(flatten)]
    row: ProviderRow,
    has_api_key: bool,
}

impl From<ProviderRow> for ProviderView {
    fn from(row: ProviderRow) -> Self {
        Self {
            has_api_key: row.sealed_api_key.is_some(),
            row,
        }
    }
}

#[derive(Serialize)]
struct Items<T> {
    items: Vec<T>,
}

async fn list_providers(ctx: Ctx) -> ApiResult<Json<Items<ProviderView>>> {
    let items = ctx.state.store.providers().await?;
    Ok(Json(Items {
        items: items.into_iter().map(Into::into).collect(),
    }))
}

fn check_kind(kind: &str) -> ApiResult<Kind> {
    Kind::parse(kind)
        .ok_or_else(|| ApiError::invalid_field("kind", "must be `openai`, `anthropic` or `gemini`"))
}

fn check_url(url: &str) -> ApiResult<String> {
    match url::Url::parse(url.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(url.trim().trim_end_matches('/').to_owned())
        }
        _ => Err(ApiError::invalid_field(
            "base_url",
            "must be an http(s) URL such as https://api.openai.com/v1",
        )),
    }
}

fn seal_key(ctx: &Ctx, id: Id, key: &str) -> ApiResult<Option<Vec<u8>>> {
    let key = key.trim();
    if key.is_empty() {
        return Ok(None);
    }
    if key.len() > 4096 || key.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "api_key",
            "must be at most 4096 characters, without control characters",
        ));
    }
    crate::crypto::seal(
        &ctx.state.keys.data_key,
        key.as_bytes(),
        id.to_string().as_bytes(),
    )
    .map(Some)
    .map_err(|e| ApiError::internal(anyhow::anyhow!(e)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderBody {
    name: String,
    kind: String,
    base_url: Option<String>,
    api_key: Option<String>,
}

async fn create_provider(ctx: Ctx, Json(body): Json<ProviderBody>) -> ApiResult<Response> {
    let kind = check_kind(&body.kind)?;
    let id = Id::new();
    let now = Timestamp::now();
    let row = ProviderRow {
        id,
        name: check_name("name", &body.name)?,
        kind: kind.as_str().to_owned(),
        base_url: check_url(body.base_url.as_deref().unwrap_or(kind.default_base_url()))?,
        sealed_api_key: seal_key(&ctx, id, body.api_key.as_deref().unwrap_or(""))?,
        created_at: now,
        updated_at: now,
    };
    match ctx.state.store.create_provider(&row).await {
        Err(cairn_store::StoreError::Conflict { .. }) => return Err(name_taken("provider")),
        other => other?,
    }
    ctx.record(
        "provider.create",
        Some(("provider", id.to_string())),
        Some(json!({ "name": row.name, "kind": row.kind, "base_url": row.base_url })),
    )
    .await;
    Ok(created(
        format!("/api/admin/providers/{id}"),
        ProviderView::from(row),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderPatch {
    name: Option<String>,
    kind: Option<String>,
    base_url: Option<String>,
    /// A new key; `""` removes it.
    api_key: Option<String>,
}

async fn update_provider(
    ctx: Ctx,
    Path(id): Path<Id>,
    Json(body): Json<ProviderPatch>,
) -> ApiResult<Json<ProviderView>> {
    let mut row = ctx
        .state
        .store
        .provider(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if let Some(n) = body.name {
        row.name = check_name("name", &n)?;
    }
    let before = (row.kind.clone(), row.base_url.clone());
    if let Some(k) = body.kind {
        row.kind = check_kind(&k)?.as_str().to_owned();
    }
    if let Some(u) = body.base_url {
        row.base_url = check_url(&u)?;
    }
    // The stored key goes only where it was meant to go: a new address needs it given again.
    if (row.kind.clone(), row.base_url.clone()) != before
        && row.sealed_api_key.is_some()
        && body.api_key.is_none()
    {
        return Err(ApiError::invalid_field(
            "api_key",
            "must be given again (or \"\" for none) when kind or base_url changes",
        ));
    }
    let key_changed = body.api_key.is_some();
    if let Some(k) = body.api_key {
        row.sealed_api_key = seal_key(&ctx, id, &k)?;
    }
    // Strictly later than before, so cached clients are rebuilt.
    row.updated_at = Timestamp::now().max(row.updated_at.plus_millis(1));
    match ctx.state.store.update_provider(&row).await {
        Err(cairn_store::StoreError::Conflict { .. }) => return Err(name_taken("provider")),
        other => other?,
    }
    ctx.record(
        "provider.update",
        Some(("provider", id.to_string())),
        Some(
            json!({ "name": row.name, "kind": row.kind, "base_url": row.base_url,
                     "api_key_changed": key_changed }),
        ),
    )
    .await;
    Ok(Json(row.into()))
}

async fn delete_provider(ctx: Ctx, Path(id): Path<Id>) -> ApiResult<StatusCode> {
    ctx.state.store.delete_provider(id).await?;
    ctx.record("provider.delete", Some(("provider", id.to_string())), None)
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Ask the provider for its models: checks the URL and the key.
async fn check_provider(ctx: Ctx, Path(id): Path<Id>) -> ApiResult<Json<serde_json::Value>> {
    let row = ctx
        .state
        .store
        .provider(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let client = build_client(&ctx.state, &row)?;
    match client.models().await {
        Ok(models) => Ok(Json(json!({ "ok": true, "models": models }))),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            e.code(),
            format!("The provider did not answer as expected: {e}"),
        )),
    }
}

// ---- models -----------------------------------------------------------------------------

async fn list_models(ctx: Ctx) -> ApiResult<Json<Items<ModelRow>>> {
    Ok(Json(Items {
        items: ctx.state.store.models().await?,
    }))
}

const ROLES: [&str; 3] = ["member", "admin", "owner"];

fn check_roles(roles: &[String]) -> ApiResult<String> {
    if roles.is_empty() || roles.iter().any(|r| !ROLES.contains(&r.as_str())) {
        return Err(ApiError::invalid_field(
            "roles",
            "must name one or more of `member`, `admin`, `owner`",
        ));
    }
    let mut list: Vec<&str> = ROLES
        .iter()
        .copied()
        .filter(|r| roles.iter().any(|x| x == r))
        .collect();
    list.dedup();
    Ok(list.join(","))
}

fn check_model_name(name: &str) -> ApiResult<String> {
    let n = check_name("name", name)?;
    if n == EXTRACTIVE || n == MOCK || n.starts_with(super::COLLECTION_MODEL_PREFIX) {
        return Err(ApiError::invalid_field(
            "name",
            "is reserved for a built-in model (`extractive`, `mock`, `cairn:…`)",
        ));
    }
    if n.chars().any(char::is_whitespace) {
        return Err(ApiError::invalid_field("name", "must not contain spaces"));
    }
    Ok(n)
}

fn check_tokens(field: &'static str, n: i64, max: i64) -> ApiResult<i64> {
    if n < 1 || n > max {
        return Err(ApiError::invalid_field(
            field,
            &format!("must be 1 to {max}"),
        ));
    }
    Ok(n)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelBody {
    name: String,
    provider_id: Id,
    /// The provider's name for it (default: `name`).
    upstream_model: Option<String>,
    context_tokens: Option<i64>,
    max_output_tokens: Option<i64>,
    /// Default: every role.
    roles: Option<Vec<String>>,
    enabled: Option<bool>,
}

async fn create_model(ctx: Ctx, Json(body): Json<ModelBody>) -> ApiResult<Response> {
    let name = check_model_name(&body.name)?;
    if ctx.state.store.provider(body.provider_id).await?.is_none() {
        return Err(ApiError::invalid_field("provider_id", "names no provider"));
    }
    let context = check_tokens(
        "context_tokens",
        body.context_tokens.unwrap_or(8192),
        10_000_000,
    )?;
    let max_out = check_tokens(
        "max_output_tokens",
        body.max_output_tokens.unwrap_or(1024),
        1_000_000,
    )?;
    if max_out >= context {
        return Err(ApiError::invalid_field(
            "max_output_tokens",
            "must be smaller than context_tokens",
        ));
    }
    let now = Timestamp::now();
    let row = ModelRow {
        id: Id::new(),
        upstream_model: match body.upstream_model {
            Some(u) => check_name("upstream_model", &u)?,
            None => name.clone(),
        },
        name,
        provider_id: body.provider_id,
        context_tokens: context,
        max_output_tokens: max_out,
        roles: check_roles(
            &body
                .roles
                .unwrap_or_else(|| ROLES.iter().map(|r| r.to_string()).collect()),
        )?,
        enabled: body.enabled.unwrap_or(true),
        created_at: now,
        updated_at: now,
    };
    match ctx.state.store.create_model(&row).await {
        Err(cairn_store::StoreError::Conflict { .. }) => return Err(name_taken("model")),
        other => other?,
    }
    ctx.record(
        "model.create",
        Some(("model", row.id.to_string())),
        Some(json!({ "name": row.name, "roles": row.roles })),
    )
    .await;
    Ok(created(format!("/api/admin/models/{}", row.id), row))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelPatch {
    name: Option<String>,
    provider_id: Option<Id>,
    upstream_model: Option<String>,
    context_tokens: Option<i64>,
    max_output_tokens: Option<i64>,
    roles: Option<Vec<String>>,
    enabled: Option<bool>,
}

async fn update_model(
    ctx: Ctx,
    Path(id): Path<Id>,
    Json(body): Json<ModelPatch>,
) -> ApiResult<Json<ModelRow>> {
    let mut row = ctx
        .state
        .store
        .model(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    if let Some(n) = body.name {
        row.name = check_model_name(&n)?;
    }
    if let Some(p) = body.provider_id {
        if ctx.state.store.provider(p).await?.is_none() {
            return Err(ApiError::invalid_field("provider_id", "names no provider"));
        }
        row.provider_id = p;
    }
    if let Some(u) = body.upstream_model {
        row.upstream_model = check_name("upstream_model", &u)?;
    }
    if let Some(c) = body.context_tokens {
        row.context_tokens = check_tokens("context_tokens", c, 10_000_000)?;
    }
    if let Some(m) = body.max_output_tokens {
        row.max_output_tokens = check_tokens("max_output_tokens", m, 1_000_000)?;
    }
    if row.max_output_tokens >= row.context_tokens {
        return Err(ApiError::invalid_field(
            "max_output_tokens",
            "must be smaller than context_tokens",
        ));
    }
    if let Some(r) = body.roles {
        row.roles = check_roles(&r)?;
    }
    if let Some(e) = body.enabled {
        row.enabled = e;
    }
    row.updated_at = Timestamp::now();
    match ctx.state.store.update_model(&row).await {
        Err(cairn_store::StoreError::Conflict { .. }) => return Err(name_taken("model")),
        other => other?,
    }
    ctx.record(
        "model.update",
        Some(("model", id.to_string())),
        Some(json!({ "name": row.name, "roles": row.roles, "enabled": row.enabled })),
    )
    .await;
    Ok(Json(row))
}

async fn delete_model(ctx: Ctx, Path(id): Path<Id>) -> ApiResult<StatusCode> {
    ctx.state.store.delete_model(id).await?;
    ctx.record("model.delete", Some(("model", id.to_string())), None)
        .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- prices -----------------------------------------------------------------------------

#[derive(Serialize)]
struct PriceList {
    currency: String,
    items: Vec<PriceRow>,
}

async fn list_prices(ctx: Ctx) -> ApiResult<Json<PriceList>> {
    Ok(Json(PriceList {
        currency: ctx.state.config.chat.currency.clone(),
        items: ctx.state.store.prices().await?,
    }))
}

/// Micro-units of the currency per million tokens.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceBody {
    input_micros: i64,
    output_micros: i64,
    #[serde(default)]
    embedding_micros: i64,
}

const MAX_PRICE_MICROS: i64 = 1_000_000_000_000;

async fn set_price(
    ctx: Ctx,
    Path(model): Path<String>,
    Json(body): Json<PriceBody>,
) -> ApiResult<Json<PriceRow>> {
    let model = check_name("model", &model)?;
    for (field, v) in [
        ("input_micros", body.input_micros),
        ("output_micros", body.output_micros),
        ("embedding_micros", body.embedding_micros),
    ] {
        if !(0..=MAX_PRICE_MICROS).contains(&v) {
            return Err(ApiError::invalid_field(
                field,
                "must be 0 to 10^12 micro-units per million tokens",
            ));
        }
    }
    let row = PriceRow {
        model,
        input_micros: body.input_micros,
        output_micros: body.output_micros,
        embedding_micros: body.embedding_micros,
        updated_at: Timestamp::now(),
    };
    ctx.state.store.set_price(&row).await?;
    ctx.record(
        "price.set",
        Some(("model", row.model.clone())),
        Some(
            json!({ "input_micros": row.input_micros, "output_micros": row.output_micros,
                     "embedding_micros": row.embedding_micros }),
        ),
    )
    .await;
    Ok(Json(row))
}

async fn delete_price(ctx: Ctx, Path(model): Path<String>) -> ApiResult<StatusCode> {
    ctx.state.store.delete_price(&model).await?;
    ctx.record("price.delete", Some(("model", model)), None)
        .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- budgets ----------------------------------------------------------------------------

#[derive(Serialize)]
struct BudgetList {
    month: String,
    currency: String,
    items: Vec<usage::Standing>,
}

async fn list_budgets(ctx: Ctx) -> ApiResult<Json<BudgetList>> {
    let month = usage::month_of(Timestamp::now());
    let mut items = Vec::new();
    for b in ctx.state.store.budgets().await? {
        items.push(ctx.state.store.budget_standing(&b.subject, &month).await?);
    }
    Ok(Json(BudgetList {
        month,
        currency: ctx.state.config.chat.currency.clone(),
        items,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetBody {
    monthly_limit_micros: i64,
}

async fn set_budget(ctx: &Ctx, subject: &str, body: BudgetBody) -> ApiResult<usage::Standing> {
    if !(0..=1_000_000_000_000_000).contains(&body.monthly_limit_micros) {
        return Err(ApiError::invalid_field(
            "monthly_limit_micros",
            "must be 0 to 10^15 micro-units",
        ));
    }
    ctx.state
        .store
        .set_budget(subject, body.monthly_limit_micros, Some(ctx.actor.user_id))
        .await?;
    ctx.record(
        "budget.set",
        Some(("budget", subject.to_owned())),
        Some(json!({ "monthly_limit_micros": body.monthly_limit_micros })),
    )
    .await;
    Ok(ctx
        .state
        .store
        .budget_standing(subject, &usage::month_of(Timestamp::now()))
        .await?)
}

async fn set_workspace_budget(
    ctx: Ctx,
    Json(body): Json<BudgetBody>,
) -> ApiResult<Json<usage::Standing>> {
    Ok(Json(set_budget(&ctx, usage::WORKSPACE, body).await?))
}

async fn remove_workspace_budget(ctx: Ctx) -> ApiResult<StatusCode> {
    ctx.state.store.remove_budget(usage::WORKSPACE).await?;
    ctx.record(
        "budget.remove",
        Some(("budget", usage::WORKSPACE.into())),
        None,
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_user_budget(
    ctx: Ctx,
    Path(id): Path<Id>,
    Json(body): Json<BudgetBody>,
) -> ApiResult<Json<usage::Standing>> {
    if ctx.state.store.user(id).await?.is_none() {
        return Err(ApiError::not_found());
    }
    Ok(Json(
        set_budget(&ctx, &usage::user_subject(id), body).await?,
    ))
}

async fn remove_user_budget(ctx: Ctx, Path(id): Path<Id>) -> ApiResult<StatusCode> {
    let subject = usage::user_subject(id);
    ctx.state.store.remove_budget(&subject).await?;
    ctx.record("budget.remove", Some(("budget", subject)), None)
        .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- usage ------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    /// `user`, `model` (default) or `day`.
    group_by: Option<String>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    user_id: Option<Id>,
}

#[derive(Serialize)]
struct UsageReport {
    group_by: &'static str,
    from: Timestamp,
    to: Timestamp,
    currency: String,
    items: Vec<usage::UsageGroup>,
}

async fn usage_summary(ctx: Ctx, Query(q): Query<UsageQuery>) -> ApiResult<Json<UsageReport>> {
    let (group, name) = match q.group_by.as_deref().unwrap_or("model") {
        "model" => (GroupBy::Model, "model"),
        "user" => (GroupBy::User, "user"),
        "day" => (GroupBy::Day, "day"),
        _ => return Err(bad_query("`group_by` must be `user`, `model` or `day`.")),
    };
    let (month_start, month_end) = super::routes::month_bounds(Timestamp::now());
    let from = q.from.unwrap_or(month_start);
    let to = q.to.unwrap_or(month_end);
    if from >= to {
        return Err(bad_query("`from` must be before `to`."));
    }
    Ok(Json(UsageReport {
        group_by: name,
        from,
        to,
        currency: ctx.state.config.chat.currency.clone(),
        items: ctx
            .state
            .store
            .usage_summary(group, from, to, q.user_id)
            .await?,
    }))
}
