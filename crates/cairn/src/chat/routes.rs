//! Conversations and answers for members: `/api/models`, `/api/conversations…` (the answer
//! stream is `POST /api/conversations/{id}/messages`), and `/api/usage`.

use std::convert::Infallible;

use axum::extract::Path;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cairn_store::chat::{ConversationRow, MessageRow};
use cairn_store::search::SearchFilter;
use cairn_store::usage::{self, GroupBy};
use cairn_store::{Id, Json as DbJson, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::answer::{self, Ask, Out};
use super::{available, resolve, ModelInfo};
use crate::accounts::admin::{page, Page};
use crate::accounts::context::Ctx;
use crate::auth::{ApiRoutes, Rule, Scope};
use crate::documents::routes::cursor;
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::Json;
use crate::http::query::{page_limit, Query};

pub fn routes() -> ApiRoutes {
    let rule = Rule::MEMBER.key(Scope::Chat);
    ApiRoutes::new()
        .route(Method::GET, "/api/models", rule, list_models)
        .route(Method::GET, "/api/conversations", rule, list)
        .route(Method::POST, "/api/conversations", rule, create)
        .route(Method::GET, "/api/conversations/{id}", rule, get_one)
        .route(Method::PATCH, "/api/conversations/{id}", rule, update)
        .route(Method::DELETE, "/api/conversations/{id}", rule, delete)
        .route(
            Method::GET,
            "/api/conversations/{id}/messages",
            rule,
            list_messages,
        )
        .route(
            Method::POST,
            "/api/conversations/{id}/messages",
            rule.streamed(),
            ask,
        )
        .route(Method::GET, "/api/conversations/{id}/export", rule, export)
        .route(Method::GET, "/api/usage", rule, my_usage)
}

const MAX_TITLE_CHARS: usize = 200;
/// Most collections one conversation may name.
const MAX_COLLECTIONS: usize = 100;

#[derive(Serialize)]
struct ModelList {
    items: Vec<ModelInfo>,
    default: String,
}

async fn list_models(ctx: Ctx) -> ApiResult<Json<ModelList>> {
    Ok(Json(ModelList {
        items: available(&ctx.state, &ctx.actor).await?,
        default: ctx.state.config.chat.default_model.clone(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list(ctx: Ctx, Query(q): Query<ListQuery>) -> ApiResult<Json<Page<ConversationRow>>> {
    let limit = page_limit(q.limit)?;
    let before = cursor(q.cursor.as_deref())?;
    let rows = ctx
        .state
        .store
        .conversations_of(ctx.actor.user_id, before, limit + 1)
        .await?;
    Ok(Json(page(rows, limit, |c| c.id, |c| c)))
}

fn check_title(title: &str) -> ApiResult<String> {
    let t = title.trim();
    if t.is_empty() || t.chars().count() > MAX_TITLE_CHARS || t.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "title",
            "must be 1 to 200 characters, without control characters",
        ));
    }
    Ok(t.to_owned())
}

/// Collections a conversation may name: only ones the caller can read (404 otherwise).
async fn check_collections(ctx: &Ctx, list: Option<Vec<Id>>) -> ApiResult<Option<Vec<Id>>> {
    let Some(list) = list else {
        return Ok(None);
    };
    if list.len() > MAX_COLLECTIONS {
        return Err(ApiError::invalid_field(
            "collections",
            "names too many collections (at most 100)",
        ));
    }
    let mut seen = Vec::with_capacity(list.len());
    for id in list {
        if seen.contains(&id) {
            continue;
        }
        let readable = ctx
            .state
            .store
            .collection_for(
                ctx.actor.user_id,
                id,
                cairn_store::collections::CollectionRole::Viewer,
            )
            .await?;
        if readable.is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "collection_not_found",
                "One of the collections does not exist or is not shared with you.",
            )
            .with_details(json!({ "collection_id": id })));
        }
        seen.push(id);
    }
    Ok(Some(seen))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    title: Option<String>,
    model: Option<String>,
    /// Leave out for every collection the caller may read; `[]` for answers without documents.
    collections: Option<Vec<Id>>,
}

async fn create(ctx: Ctx, Json(body): Json<CreateBody>) -> ApiResult<Response> {
    let title = match body.title {
        Some(t) => check_title(&t)?,
        None => "New conversation".to_owned(),
    };
    let model = body
        .model
        .unwrap_or_else(|| ctx.state.config.chat.default_model.clone());
    resolve(&ctx.state, &ctx.actor, &model).await?;
    let collections = check_collections(&ctx, body.collections).await?;
    let now = Timestamp::now();
    let row = ConversationRow {
        id: Id::new(),
        user_id: ctx.actor.user_id,
        title,
        model,
        collections: collections.map(DbJson),
        created_at: now,
        updated_at: now,
    };
    ctx.state.store.create_conversation(&row).await?;
    let mut response = (StatusCode::CREATED, Json(&row)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/conversations/{}", row.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

async fn conversation(ctx: &Ctx, id: Id) -> ApiResult<ConversationRow> {
    ctx.state
        .store
        .conversation_of(ctx.actor.user_id, id)
        .await?
        .ok_or_else(ApiError::not_found)
}

async fn get_one(ctx: Ctx, Path(id): Path<Id>) -> ApiResult<Json<ConversationRow>> {
    Ok(Json(conversation(&ctx, id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    title: Option<String>,
    model: Option<String>,
    /// `null` for every readable collection.
    #[serde(default, with = "double_option")]
    collections: Option<Option<Vec<Id>>>,
}

/// Tells a field set to `null` from one left out.
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
    where
        T: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Option::<T>::deserialize(d).map(Some)
    }
}

async fn update(
    ctx: Ctx,
    Path(id): Path<Id>,
    Json(body): Json<UpdateBody>,
) -> ApiResult<Json<ConversationRow>> {
    let mut row = conversation(&ctx, id).await?;
    if let Some(t) = body.title {
        row.title = check_title(&t)?;
    }
    if let Some(m) = body.model {
        resolve(&ctx.state, &ctx.actor, &m).await?;
        row.model = m;
    }
    if let Some(c) = body.collections {
        row.collections = check_collections(&ctx, c).await?.map(DbJson);
    }
    ctx.state
        .store
        .update_conversation(ctx.actor.user_id, &row)
        .await?;
    Ok(Json(conversation(&ctx, id).await?))
}

async fn delete(ctx: Ctx, Path(id): Path<Id>) -> ApiResult<StatusCode> {
    ctx.state
        .store
        .delete_conversation(ctx.actor.user_id, id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesQuery {
    limit: Option<u32>,
    cursor: Option<String>,
    /// `asc` (oldest first, the default) or `desc` (newest first).
    order: Option<String>,
}

async fn list_messages(
    ctx: Ctx,
    Path(id): Path<Id>,
    Query(q): Query<MessagesQuery>,
) -> ApiResult<Json<Page<MessageRow>>> {
    let newest_first = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => {
            return Err(crate::documents::routes::bad_query(
                "`order` must be `asc` or `desc`.",
            ))
        }
    };
    conversation(&ctx, id).await?;
    let limit = page_limit(q.limit)?;
    let from = cursor(q.cursor.as_deref())?;
    let rows = ctx
        .state
        .store
        .messages_of(ctx.actor.user_id, id, from, limit + 1, newest_first)
        .await?;
    Ok(Json(page(rows, limit, |m| m.id, |m| m)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AskBody {
    content: String,
    /// This answer only: another model than the conversation's.
    model: Option<String>,
    /// This answer only: other collections than the conversation's (`[]`: none).
    collections: Option<Vec<Id>>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
}

/// Check a question's text: 422 `message_empty` / `message_too_long`.
pub fn check_question(ctx_state: &crate::app::AppState, content: &str) -> ApiResult<String> {
    let q = content.trim();
    if q.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "message_empty",
            "Type a question first.",
        ));
    }
    let max = ctx_state.config.chat.max_message_chars;
    let chars = q.chars().count();
    if chars > max {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "message_too_long",
            format!("The message is {chars} characters long; the limit is {max}."),
        )
        .with_details(json!({ "chars": chars, "max_chars": max })));
    }
    Ok(q.to_owned())
}

pub fn check_sampling(max_tokens: Option<u32>, temperature: Option<f32>) -> ApiResult<()> {
    if max_tokens == Some(0) {
        return Err(ApiError::invalid_field("max_tokens", "must be at least 1"));
    }
    if let Some(t) = temperature {
        if !(0.0..=2.0).contains(&t) || !t.is_finite() {
            return Err(ApiError::invalid_field("temperature", "must be 0 to 2"));
        }
    }
    Ok(())
}

/// One SSE event for an [`Out`].
fn sse_event(out: Out) -> SseEvent {
    let (name, data) = match out {
        Out::Sources(sources) => ("sources", json!({ "sources": sources })),
        Out::Token(text) => ("token", json!({ "text": text })),
        Out::Usage(u) => ("usage", json!(u)),
        Out::Done(d) => ("done", json!(d)),
        Out::Error(f) => ("error", json!(f)),
    };
    SseEvent::default().event(name).data(data.to_string())
}

/// An event stream holding a single `error` event (refusals that the stream caps make).
fn sse_error(e: ApiError) -> Response {
    let data = json!({
        "code": e.code(),
        "message": e.message(),
        "details": e.details(),
        "partial": false,
    });
    let event = SseEvent::default().event("error").data(data.to_string());
    Sse::new(futures::stream::once(
        async move { Ok::<_, Infallible>(event) },
    ))
    .into_response()
}

async fn ask(ctx: Ctx, Path(id): Path<Id>, Json(body): Json<AskBody>) -> ApiResult<Response> {
    let state = ctx.state.clone();
    let conv = conversation(&ctx, id).await?;
    let question = check_question(&state, &body.content)?;
    check_sampling(body.max_tokens, body.temperature)?;
    let model_name = body.model.unwrap_or_else(|| conv.model.clone());
    let model = resolve(&state, &ctx.actor, &model_name).await?;
    let collections = match body.collections {
        Some(c) => check_collections(&ctx, Some(c)).await?,
        None => conv.collections.map(|c| c.0),
    };
    // `[]`: answer without documents; otherwise the named collections (or all readable).
    let grounding = match collections {
        Some(c) if c.is_empty() => None,
        c => Some(SearchFilter {
            collections: c,
            ..SearchFilter::default()
        }),
    };
    let slot = match state.chat.try_slot(ctx.actor.user_id) {
        Ok(s) => s,
        Err(busy) => return Ok(sse_error(busy.error(&state.config))),
    };
    let history_rows = state
        .store
        .recent_messages(ctx.actor.user_id, id, state.config.chat.history_messages)
        .await?;
    let prepared = answer::prepare(
        &state,
        Ask {
            user: ctx.actor.user_id,
            model,
            question,
            history: answer::history_of(&history_rows),
            grounding,
            conversation: Some(id),
            max_tokens: body.max_tokens,
            temperature: body.temperature,
        },
        slot,
    )
    .await?;
    let rx = answer::start(state.clone(), prepared);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|out| (Ok::<_, Infallible>(sse_event(out)), rx))
    });
    let mut response = Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(state.config.chat.heartbeat)
                .text("keep-alive"),
        )
        .into_response();
    // Proxies (nginx) must not buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    format: Option<String>,
}

async fn export(ctx: Ctx, Path(id): Path<Id>, Query(q): Query<ExportQuery>) -> ApiResult<Response> {
    let conv = conversation(&ctx, id).await?;
    let mut messages = Vec::new();
    let mut after = None;
    loop {
        let batch = ctx
            .state
            .store
            .messages_of(ctx.actor.user_id, id, after, 500, false)
            .await?;
        let done = batch.len() < 500;
        after = batch.last().map(|m| m.id);
        messages.extend(batch);
        if done {
            break;
        }
    }
    let stem: String = conv
        .title
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .chars()
        .take(60)
        .collect();
    let stem = if stem.is_empty() {
        "conversation".into()
    } else {
        stem
    };
    let (body, mime, ext) = match q.format.as_deref().unwrap_or("markdown") {
        "json" => (
            serde_json::to_string_pretty(&json!({ "conversation": conv, "messages": messages }))
                .map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?,
            "application/json",
            "json",
        ),
        "markdown" | "md" => (
            markdown(&conv, &messages),
            "text/markdown; charset=utf-8",
            "md",
        ),
        _ => {
            return Err(ApiError::invalid_field(
                "format",
                "must be `markdown` or `json`",
            ))
        }
    };
    let disposition = format!("attachment; filename=\"{stem}.{ext}\"");
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// A conversation as Markdown: each turn under a heading, answers with their sources.
pub fn markdown(conv: &ConversationRow, messages: &[MessageRow]) -> String {
    let mut out = format!(
        "# {}\n\n*Model: {} · started {}*\n",
        conv.title, conv.model, conv.created_at
    );
    for m in messages {
        let who = if m.role == "user" { "You" } else { "Cairn" };
        out.push_str(&format!(
            "\n## {who} — {}\n\n{}\n",
            m.created_at,
            m.content.trim()
        ));
        if m.status != "complete" {
            out.push_str(&format!(
                "\n*({}{})*\n",
                m.status,
                m.error_code
                    .as_deref()
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default()
            ));
        }
        let sources = m
            .sources
            .as_ref()
            .and_then(|s| s.0.as_array().cloned())
            .unwrap_or_default();
        if !sources.is_empty() {
            out.push_str("\nSources:\n\n");
            for s in sources {
                let name = s["title"]
                    .as_str()
                    .or_else(|| s["filename"].as_str())
                    .unwrap_or("?");
                let mut line = format!("{}. {name}", s["n"]);
                if let Some(p) = s["location"]["page"].as_u64() {
                    line.push_str(&format!(", page {p}"));
                }
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    out
}

#[derive(Serialize)]
struct MyUsage {
    month: String,
    currency: String,
    budget: usage::Standing,
    workspace: usage::Standing,
    by_model: Vec<usage::UsageGroup>,
}

async fn my_usage(ctx: Ctx) -> ApiResult<Json<MyUsage>> {
    let now = Timestamp::now();
    let month = usage::month_of(now);
    let store = &ctx.state.store;
    let user = ctx.actor.user_id;
    let (from, to) = month_bounds(now);
    let mut workspace = store.budget_standing(usage::WORKSPACE, &month).await?;
    // People see what the workspace has left, not what others spent (nor the limit, from
    // which the rest would follow).
    workspace.spent_micros = 0;
    workspace.reserved_micros = 0;
    workspace.limit_micros = None;
    Ok(Json(MyUsage {
        budget: store
            .budget_standing(&usage::user_subject(user), &month)
            .await?,
        workspace,
        by_model: store
            .usage_summary(GroupBy::Model, from, to, Some(user))
            .await?,
        month,
        currency: ctx.state.config.chat.currency.clone(),
    }))
}

/// The first instant of `t`'s month and of the next, in UTC.
pub fn month_bounds(t: Timestamp) -> (Timestamp, Timestamp) {
    use chrono::{Datelike, TimeZone, Utc};
    let d = t.as_datetime();
    let start = Utc
        .with_ymd_and_hms(d.year(), d.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(d);
    let (y, m) = if d.month() == 12 {
        (d.year() + 1, 1)
    } else {
        (d.year(), d.month() + 1)
    };
    let end = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().unwrap_or(d);
    (
        Timestamp::from_millis(start.timestamp_millis()),
        Timestamp::from_millis(end.timestamp_millis()),
    )
}
