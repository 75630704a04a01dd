//! The OpenAI-compatible API, for tools that already speak it: `GET /v1/models`,
//! `POST /v1/chat/completions` (streamed and not, OpenAI's wire format) and
//! `POST /v1/embeddings`, with Cairn API keys (scope `chat`) as bearer tokens.
//!
//! Besides the models a caller may use, each collection they can read is offered as a virtual
//! model `cairn:<collection>`, which answers from that collection with the default model and
//! reports its sources in an extra `cairn` field.

use std::collections::HashSet;
use std::convert::Infallible;

use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use cairn_llm::{Message, Role};
use cairn_store::search::SearchFilter;
use cairn_store::usage::{self, UsageEvent};
use cairn_store::{Id, Timestamp};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::answer::{self, Ask, Out};
use super::routes::{check_question, check_sampling};
use super::{available, resolve, COLLECTION_MODEL_PREFIX, EXTRACTIVE, MOCK};
use crate::accounts::context::Ctx;
use crate::auth::{ApiRoutes, Rule, Scope};
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::Json;

pub fn routes() -> ApiRoutes {
    let rule = Rule::MEMBER.key(Scope::Chat);
    ApiRoutes::new()
        .route(Method::GET, "/v1/models", rule, models)
        .route(
            Method::POST,
            "/v1/chat/completions",
            rule.streamed(),
            completions,
        )
        .route(Method::POST, "/v1/embeddings", rule, embeddings)
}

/// Most collections listed as virtual models.
const MAX_COLLECTION_MODELS: u32 = 1000;

/// A collection's name as a model id: lower-case, runs of other characters as `-`.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

/// `(model id, collection id)` for every collection the caller may read.
async fn collection_models(ctx: &Ctx) -> ApiResult<Vec<(String, Id)>> {
    let rows = ctx
        .state
        .store
        .collections_of(ctx.actor.user_id, None, MAX_COLLECTION_MODELS)
        .await?;
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for r in rows {
        let c = r.collection;
        let mut s = slug(&c.name);
        if s.is_empty() || !seen.insert(s.clone()) {
            s = format!("{s}-{}", &c.id.to_string()[..8]);
            seen.insert(s.clone());
        }
        out.push((format!("{COLLECTION_MODEL_PREFIX}{s}"), c.id));
    }
    Ok(out)
}

async fn models(ctx: Ctx) -> ApiResult<Json<Value>> {
    let mut data: Vec<Value> = available(&ctx.state, &ctx.actor)
        .await?
        .into_iter()
        .map(|m| {
            json!({ "id": m.id, "object": "model", "created": 0,
                    "owned_by": m.provider.unwrap_or_else(|| "cairn".into()) })
        })
        .collect();
    for (id, _) in collection_models(&ctx).await? {
        data.push(json!({ "id": id, "object": "model", "created": 0, "owned_by": "cairn" }));
    }
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// OpenAI's optional request fields that Cairn accepts and ignores.
const IGNORED: &[&str] = &[
    "top_p",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "user",
    "seed",
    "metadata",
    "store",
    "service_tier",
    "parallel_tool_calls",
    "prompt_cache_key",
    "safety_identifier",
    "verbosity",
    "reasoning_effort",
];

#[derive(Deserialize)]
struct CompletionBody {
    model: String,
    messages: Vec<InMessage>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    n: Option<u32>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
    /// Accepted for compatibility; Cairn's stream is not obfuscated.
    #[serde(default)]
    #[allow(dead_code)]
    include_obfuscation: Option<bool>,
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    content: Option<Content>,
    #[serde(flatten)]
    _rest: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

fn check_length(state: &crate::app::AppState, text: &str) -> ApiResult<()> {
    let max = state.config.chat.max_message_chars;
    let chars = text.chars().count();
    if chars > max {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "message_too_long",
            format!("A message is {chars} characters long; the limit is {max}."),
        )
        .with_details(json!({ "chars": chars, "max_chars": max })));
    }
    Ok(())
}

fn unsupported(param: &str, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unsupported_parameter",
        format!("`{param}` {why}"),
    )
    .with_details(json!({ "param": param }))
}

fn text_of(content: Option<Content>) -> ApiResult<String> {
    match content {
        None => Ok(String::new()),
        Some(Content::Text(t)) => Ok(t),
        Some(Content::Parts(parts)) => {
            let mut out = Vec::new();
            for p in parts {
                if p.kind != "text" {
                    return Err(unsupported(
                        "messages[].content",
                        "may hold only text parts here.",
                    ));
                }
                out.push(p.text.unwrap_or_default());
            }
            Ok(out.join("\n"))
        }
    }
}

async fn completions(ctx: Ctx, Json(body): Json<CompletionBody>) -> ApiResult<Response> {
    let state = ctx.state.clone();
    if let Some(key) = body.rest.keys().find(|k| !IGNORED.contains(&k.as_str())) {
        return Err(match key.as_str() {
            "tools" | "tool_choice" | "functions" | "function_call" | "response_format"
            | "logprobs" | "top_logprobs" | "modalities" | "audio" | "prediction"
            | "web_search_options" => unsupported(key, "is not supported by Cairn."),
            _ => ApiError::new(
                StatusCode::BAD_REQUEST,
                "unknown_field",
                format!("Unknown field `{key}`."),
            ),
        });
    }
    if body.n.is_some_and(|n| n != 1) {
        return Err(unsupported("n", "must be 1."));
    }
    let max_tokens = body.max_completion_tokens.or(body.max_tokens);
    check_sampling(max_tokens, body.temperature)?;
    let include_usage = body
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage);

    // The question is the last user message; what comes before it is history.
    let mut messages = Vec::with_capacity(body.messages.len());
    for m in body.messages {
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(unsupported(
                    "messages[].role",
                    &format!("`{other}` is not supported (system, developer, user, assistant)."),
                ))
            }
        };
        let text = text_of(m.content)?;
        // Each message within the question limit: the prompt is counted token by token.
        check_length(&state, &text)?;
        messages.push(Message::new(role, text));
    }
    let Some(last) = messages.pop().filter(|m| m.role == Role::User) else {
        return Err(ApiError::invalid_field(
            "messages",
            "must end with a user message",
        ));
    };
    let question = check_question(&state, &last.content)?;

    // A collection's virtual model answers from it with the default model; the built-in
    // answerers search every readable collection; other models chat freely.
    let (model, grounding) = if let Some(rest) = body.model.strip_prefix(COLLECTION_MODEL_PREFIX) {
        let found = collection_models(&ctx)
            .await?
            .into_iter()
            .find(|(id, cid)| id == &body.model || cid.to_string() == rest)
            .map(|(_, cid)| cid);
        let Some(cid) = found else {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_model",
                format!(
                    "There is no model `{}` you may use; GET /v1/models lists them.",
                    body.model
                ),
            ));
        };
        let model = resolve(&state, &ctx.actor, &state.config.chat.default_model).await?;
        let filter = SearchFilter {
            collections: Some(vec![cid]),
            ..SearchFilter::default()
        };
        (model, Some(filter))
    } else {
        let model = resolve(&state, &ctx.actor, &body.model).await?;
        let grounding =
            (body.model == EXTRACTIVE || body.model == MOCK).then(SearchFilter::default);
        (model, grounding)
    };
    let model_name = body.model.clone();
    let slot = match state.chat.try_slot(ctx.actor.user_id) {
        Ok(s) => s,
        Err(busy) => {
            return Err(busy.error(&state.config).with_header(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from_static("1"),
            ))
        }
    };
    let history: Vec<Message> = messages
        .into_iter()
        .filter(|m| !m.content.trim().is_empty())
        .collect();
    let prepared = answer::prepare(
        &state,
        Ask {
            user: ctx.actor.user_id,
            model,
            question,
            history,
            grounding,
            conversation: None,
            max_tokens,
            temperature: body.temperature,
        },
        slot,
    )
    .await?;
    let rx = answer::start(state.clone(), prepared);
    let id = format!("chatcmpl-{}", Id::new().to_string().replace('-', ""));
    let created = Timestamp::now().as_millis() / 1000;
    if body.stream {
        Ok(stream_response(
            rx,
            id,
            created,
            model_name,
            include_usage,
            &state,
        ))
    } else {
        whole_response(rx, id, created, model_name).await
    }
}

fn chunk(id: &str, created: i64, model: &str, delta: Value, finish: Option<&str>) -> Value {
    json!({
        "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
    })
}

fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "length" => "length",
        "content_filter" => "content_filter",
        _ => "stop",
    }
}

fn stream_response(
    rx: tokio::sync::mpsc::Receiver<Out>,
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    state: &crate::app::AppState,
) -> Response {
    struct St {
        rx: tokio::sync::mpsc::Receiver<Out>,
        sources: Value,
        usage: Option<Value>,
        over: bool,
    }
    let st = St {
        rx,
        sources: json!([]),
        usage: None,
        over: false,
    };
    let opening = chunk(
        &id,
        created,
        &model,
        json!({ "role": "assistant", "content": "" }),
        None,
    );
    let events = futures::stream::unfold(st, move |mut st| {
        let id = id.clone();
        let model = model.clone();
        async move {
            if st.over {
                return None;
            }
            loop {
                let Some(out) = st.rx.recv().await else {
                    st.over = true;
                    return Some((vec![SseEvent::default().data("[DONE]")], st));
                };
                let data: Vec<Value> = match out {
                    Out::Sources(s) => {
                        st.sources = json!(s);
                        continue;
                    }
                    Out::Token(t) => {
                        vec![chunk(&id, created, &model, json!({ "content": t }), None)]
                    }
                    Out::Usage(u) => {
                        st.usage = Some(json!({
                            "prompt_tokens": u.input_tokens,
                            "completion_tokens": u.output_tokens,
                            "total_tokens": u.input_tokens + u.output_tokens,
                        }));
                        continue;
                    }
                    Out::Done(d) => {
                        let mut last = chunk(
                            &id,
                            created,
                            &model,
                            json!({}),
                            Some(finish_reason(&d.finish_reason)),
                        );
                        last["cairn"] = json!({ "sources": st.sources, "citations": d.citations,
                                                "invalid_citations": d.invalid_citations });
                        let mut v = vec![last];
                        if include_usage {
                            let mut u = json!({
                                "id": id, "object": "chat.completion.chunk", "created": created,
                                "model": model, "choices": [],
                            });
                            u["usage"] = st.usage.take().unwrap_or(Value::Null);
                            v.push(u);
                        }
                        v
                    }
                    Out::Error(f) => vec![json!({ "error": {
                        "message": f.message, "type": "server_error", "code": f.code,
                        "param": null } })],
                };
                let events = data
                    .into_iter()
                    .map(|d| SseEvent::default().data(d.to_string()))
                    .collect();
                return Some((events, st));
            }
        }
    })
    .flat_map(|events: Vec<SseEvent>| {
        futures::stream::iter(events.into_iter().map(Ok::<_, Infallible>))
    });
    let first = futures::stream::once(async move {
        Ok::<_, Infallible>(SseEvent::default().data(opening.to_string()))
    });
    let mut response = Sse::new(first.chain(events))
        .keep_alive(KeepAlive::new().interval(state.config.chat.heartbeat))
        .into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

async fn whole_response(
    mut rx: tokio::sync::mpsc::Receiver<Out>,
    id: String,
    created: i64,
    model: String,
) -> ApiResult<Response> {
    let (mut text, mut sources, mut usage) = (String::new(), json!([]), json!(null));
    while let Some(out) = rx.recv().await {
        match out {
            Out::Sources(s) => sources = json!(s),
            Out::Token(t) => text.push_str(&t),
            Out::Usage(u) => {
                usage = json!({
                    "prompt_tokens": u.input_tokens,
                    "completion_tokens": u.output_tokens,
                    "total_tokens": u.input_tokens + u.output_tokens,
                })
            }
            Out::Done(d) => {
                let body = json!({
                    "id": id, "object": "chat.completion", "created": created, "model": model,
                    "choices": [{ "index": 0, "finish_reason": finish_reason(&d.finish_reason),
                                  "message": { "role": "assistant", "content": text } }],
                    "usage": usage,
                    "cairn": { "sources": sources, "citations": d.citations,
                               "invalid_citations": d.invalid_citations },
                });
                return Ok(Json(body).into_response());
            }
            Out::Error(f) => {
                return Err(ApiError::new(StatusCode::BAD_GATEWAY, f.code, f.message)
                    .with_details(json!({ "partial_content": text })))
            }
        }
    }
    Err(ApiError::internal(anyhow::anyhow!(
        "an answer ended without a final event"
    )))
}

// ---- embeddings -------------------------------------------------------------------------

/// Most texts one embeddings request may hold, and their total size.
const MAX_INPUTS: usize = 2048;
const MAX_INPUT_BYTES: usize = 4 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingBody {
    model: String,
    input: EmbeddingInput,
    encoding_format: Option<String>,
    dimensions: Option<u32>,
    /// Accepted for compatibility and ignored.
    #[allow(dead_code)]
    user: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    Tokens(#[allow(dead_code)] Vec<Value>),
}

async fn embeddings(ctx: Ctx, Json(body): Json<EmbeddingBody>) -> ApiResult<Json<Value>> {
    let state = &ctx.state;
    let Some(embedder) = state.embedder.as_ref() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "embeddings_unavailable",
            "This workspace has no embedding model configured (`embeddings.provider`).",
        ));
    };
    let name = &state.config.embeddings.model;
    if body.model != *name && body.model != embedder.model_id() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_model",
            format!("The embedding model here is `{name}`."),
        )
        .with_details(json!({ "model": body.model })));
    }
    if body
        .dimensions
        .is_some_and(|d| d as usize != embedder.dimensions())
    {
        return Err(unsupported(
            "dimensions",
            &format!(
                "must be {} for this model (or left out).",
                embedder.dimensions()
            ),
        ));
    }
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "encoding_format",
                "must be `float` or `base64`",
            ))
        }
    };
    let texts = match body.input {
        EmbeddingInput::One(s) => vec![s],
        EmbeddingInput::Many(v) => v,
        EmbeddingInput::Tokens(_) => {
            return Err(unsupported(
                "input",
                "must be text: token arrays are not supported.",
            ))
        }
    };
    if texts.is_empty() || texts.len() > MAX_INPUTS {
        return Err(ApiError::invalid_field(
            "input",
            "must hold 1 to 2048 texts",
        ));
    }
    if texts.iter().any(|t| t.is_empty()) {
        return Err(ApiError::invalid_field(
            "input",
            "must not hold empty texts",
        ));
    }
    let bytes: usize = texts.iter().map(String::len).sum();
    if bytes > MAX_INPUT_BYTES {
        return Err(ApiError::payload_too_large(MAX_INPUT_BYTES));
    }
    // Counting up to 4 MiB of text takes a while: off the async runtime.
    let (texts, tokens) = tokio::task::spawn_blocking(move || {
        let tokens: u64 = texts.iter().map(|t| cairn_llm::tokens::count(t)).sum();
        (texts, tokens)
    })
    .await
    .map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;
    let price = super::price_of(state, name).await?;
    let cost = price.embedding_cost(tokens);
    let month = usage::month_of(Timestamp::now());
    let reservation = if cost > 0 {
        match state
            .store
            .reserve_budget(ctx.actor.user_id, &month, cost)
            .await?
        {
            Ok(id) => Some(id),
            Err(refusal) => return Err(answer::over_budget(state, &refusal)),
        }
    } else {
        None
    };
    // The call and its settlement run on their own task: a client that leaves (or a timeout)
    // must not leave the reservation behind.
    let task_state = state.clone();
    let embedder = embedder.clone();
    let user = ctx.actor.user_id;
    let model_name = name.clone();
    let vectors = tokio::spawn(async move {
        let vectors = embedder.embed(texts).await.ok();
        let event = UsageEvent {
            user_id: user,
            model: model_name,
            kind: "embedding",
            input_tokens: if vectors.is_some() { tokens as i64 } else { 0 },
            output_tokens: 0,
            estimated: true,
            cost_micros: if vectors.is_some() { cost } else { 0 },
        };
        if let Err(e) = task_state.store.settle_budget(reservation, &event).await {
            tracing::error!(error = %e, "could not settle an embedding call");
        }
        vectors
    })
    .await
    .map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;
    let Some(vectors) = vectors else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "embedding_unavailable",
            "The embedding model could not be reached; try again later.",
        ));
    };
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": name,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_names_become_model_ids() {
        assert_eq!(slug("Team Handbook"), "team-handbook");
        assert_eq!(slug("  R&D / 2026 "), "r-d-2026");
        assert_eq!(slug("Ünïcode"), "ünïcode");
        assert_eq!(slug("!!!"), "");
    }
}
