//! The answer pipeline. [`prepare`] does everything that can still be refused with an HTTP
//! status (retrieval, the prompt, the budget reservation, storing the question); [`start`] then
//! streams from the model on a task of its own and reports [`Out`] events through a channel.
//! The task notices at once when the receiver goes away (the client disconnected or pressed
//! stop), drops the upstream call, and still stores the partial answer and settles the budget.

use std::time::Instant;

use axum::http::StatusCode;
use cairn_llm::{builtin, ChatRequest, Event, EventStream, LlmError, Message, Role, Usage};
use cairn_store::chat::MessageRow;
use cairn_store::search::SearchFilter;
use cairn_store::usage::{self, UsageEvent};
use cairn_store::{Id, Json, Timestamp};
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use super::{citations, prompt, Engine, Model, StreamSlot};
use crate::app::AppState;
use crate::http::error::{ApiError, ApiResult};
use crate::search::{self, Mode, Request, SearchError};

/// One question to answer.
pub struct Ask {
    pub user: Id,
    pub model: Model,
    pub question: String,
    /// Earlier turns, oldest first.
    pub history: Vec<Message>,
    /// Where to look; `None`: answer without retrieval.
    pub grounding: Option<SearchFilter>,
    /// Store the question and answer in this conversation.
    pub conversation: Option<Id>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
}

/// A source given to the model, as the client sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub n: usize,
    pub chunk_id: Id,
    pub document_id: Id,
    pub collection_id: Id,
    pub title: Option<String>,
    pub filename: String,
    pub kind: String,
    /// Page, heading path, time range, speaker… (as the search API returns it).
    pub location: serde_json::Value,
    pub snippet: String,
    #[serde(skip)]
    pub text: String,
}

/// A citation in the answer.
#[derive(Debug, Clone, Serialize)]
pub struct Citation {
    pub n: usize,
    /// Whether it names a source that was given.
    pub valid: bool,
    pub chunk_id: Option<Id>,
    pub document_id: Option<Id>,
    pub title: Option<String>,
    pub location: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UsageOut {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Counted with a tokenizer because the provider reported none (or nonsense).
    pub estimated: bool,
    pub cost_micros: i64,
    pub currency: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Done {
    pub message_id: Option<Id>,
    pub model: String,
    /// `complete`, or `incomplete` when the answer was cut short.
    pub status: &'static str,
    pub finish_reason: String,
    pub citations: Vec<Citation>,
    pub invalid_citations: Vec<usize>,
    /// No relevant source was found, and the answer says so.
    pub nothing_found: bool,
    pub first_token_ms: Option<u64>,
    pub latency_ms: u64,
    /// From the question to the request leaving for the model: retrieval, prompt, budget.
    pub prepare_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
    pub message_id: Option<Id>,
    /// Whether part of an answer was streamed (and is kept, marked incomplete).
    pub partial: bool,
}

/// What the answer task reports, in order: `Sources`, `Token`s, `Usage`, then `Done` or `Error`.
#[derive(Debug, Clone)]
pub enum Out {
    Sources(Vec<Source>),
    Token(String),
    Usage(UsageOut),
    Done(Done),
    Error(Failure),
}

/// A budget reservation that is released if nobody settles it (the request was dropped between
/// reserving and streaming).
struct Held {
    state: AppState,
    user: Id,
    model: String,
    id: Option<Id>,
}

impl Held {
    /// Hand the reservation over to whoever settles it.
    fn take(&mut self) -> Option<Id> {
        self.id.take()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let (state, user, model) = (self.state.clone(), self.user, self.model.clone());
            tokio::spawn(async move { release(&state, user, Some(id), &model).await });
        }
    }
}

/// A question ready to stream.
pub struct Prepared {
    ask: Ask,
    request: ChatRequest,
    sources: Vec<Source>,
    nothing_found: bool,
    prompt_tokens: u64,
    reservation: Held,
    /// The most this answer is charged: what was reserved for it.
    reserved_micros: i64,
    slot: StreamSlot,
    started: Instant,
    /// Milliseconds from the question to the request leaving for the model.
    pub prepare_ms: f64,
}

fn render_location(loc: &serde_json::Value) -> String {
    let mut parts = Vec::new();
    if let Some(p) = loc["page"].as_u64() {
        parts.push(format!("page {p}"));
    }
    if let Some(s) = loc["slide"].as_u64() {
        parts.push(format!("slide {s}"));
    }
    if let Some(sheet) = loc["sheet"].as_str() {
        parts.push(format!("sheet {sheet}"));
    }
    if let Some(r) = loc["row"].as_u64() {
        parts.push(format!("row {r}"));
    }
    if let Some(h) = loc["heading_path"].as_array() {
        let path: Vec<&str> = h.iter().filter_map(|x| x.as_str()).collect();
        if !path.is_empty() {
            parts.push(path.join(" › "));
        }
    }
    if let Some(ms) = loc["start_ms"].as_u64() {
        let s = ms / 1000;
        parts.push(format!(
            "at {:02}:{:02}:{:02}",
            s / 3600,
            (s / 60) % 60,
            s % 60
        ));
    }
    if let Some(sp) = loc["speaker"].as_str() {
        parts.push(format!("speaker {sp}"));
    }
    parts.join(", ")
}

async fn retrieve(
    state: &AppState,
    user: Id,
    question: &str,
    filter: SearchFilter,
) -> ApiResult<Vec<Source>> {
    let chat = &state.config.chat;
    if chat.sources == 0 {
        return Ok(Vec::new());
    }
    let query: String = question
        .chars()
        .take(state.config.search.max_query_chars)
        .collect();
    let mut request = Request {
        query,
        mode: Mode::Hybrid,
        top_k: chat.sources,
        filter,
        vector: None,
    };
    let ranking = &state.config.search.ranking;
    let outcome = match search::search(
        &state.store,
        state.embedder.as_ref(),
        None,
        ranking,
        user,
        &request,
    )
    .await
    {
        Err(SearchError::Embedding(e)) => {
            tracing::warn!(error = %e, "embedding a question failed; answering from keyword search");
            request.mode = Mode::Keyword;
            search::search(&state.store, None, None, ranking, user, &request).await
        }
        other => other,
    };
    let outcome = outcome.map_err(|e| match e {
        SearchError::Store(e) => ApiError::from(e),
        other => ApiError::internal(anyhow::anyhow!(other)),
    })?;
    let min = chat.min_similarity;
    Ok(outcome
        .results
        .into_iter()
        .filter(|h| h.scores.keyword.is_some() || h.scores.semantic.is_some_and(|s| s.score >= min))
        .enumerate()
        .map(|(i, h)| Source {
            n: i + 1,
            chunk_id: h.chunk_id,
            document_id: h.document.id,
            collection_id: h.document.collection_id,
            title: h.document.title,
            filename: h.document.filename,
            kind: h.document.kind,
            location: h.location,
            snippet: h.snippet,
            text: h.text,
        })
        .collect())
}

/// Everything before the stream: refusals come back as HTTP errors, nothing half-stored.
pub async fn prepare(state: &AppState, ask: Ask, slot: StreamSlot) -> ApiResult<Prepared> {
    let started = Instant::now();
    let model = &ask.model;
    let grounded = ask.grounding.is_some() || matches!(model.engine, Engine::Extractive);
    let mut sources = match &ask.grounding {
        Some(filter) => retrieve(state, ask.user, &ask.question, filter.clone()).await?,
        None => Vec::new(),
    };
    let max_tokens = ask
        .max_tokens
        .unwrap_or(model.max_output_tokens)
        .clamp(1, model.max_output_tokens.max(1));
    let labels: Vec<String> = sources
        .iter()
        .map(|s| {
            let name = s.title.clone().unwrap_or_else(|| s.filename.clone());
            let loc = render_location(&s.location);
            if loc.is_empty() {
                name
            } else {
                format!("{name} ({loc})")
            }
        })
        .collect();
    let prompt_sources: Vec<prompt::PromptSource<'_>> = sources
        .iter()
        .zip(labels)
        .map(|(s, label)| prompt::PromptSource {
            label,
            text: &s.text,
        })
        .collect();
    let built = prompt::build(
        &prompt_sources,
        grounded,
        &ask.history,
        &ask.question,
        model.context_tokens,
        u64::from(max_tokens),
    )
    .map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "message_too_long",
            format!(
                "The message is about {} tokens; the model `{}` has room for {}.",
                e.question_tokens, model.name, e.room
            ),
        )
        .with_details(json!({ "tokens": e.question_tokens, "max_tokens": e.room }))
    })?;
    sources.truncate(built.sources_used);
    let nothing_found = grounded && sources.is_empty();

    // Reserve the most this call can cost: the whole prompt (counted with another model's
    // tokenizer, so with a quarter more for the difference) and the longest answer.
    let most = if nothing_found {
        0
    } else {
        model
            .price
            .cost(built.tokens + built.tokens / 4, u64::from(max_tokens))
    };
    let mut reservation = Held {
        state: state.clone(),
        user: ask.user,
        model: model.name.clone(),
        id: None,
    };
    if most > 0 {
        let month = usage::month_of(Timestamp::now());
        match state.store.reserve_budget(ask.user, &month, most).await? {
            Ok(id) => reservation.id = Some(id),
            Err(refusal) => return Err(over_budget(state, &refusal)),
        }
    }
    if let Some(conversation) = ask.conversation {
        let q = MessageRow::new(conversation, "user", ask.question.clone());
        // On failure the reservation is released as `reservation` drops.
        state.store.add_message(ask.user, &q).await?;
    }
    let request = ChatRequest {
        model: model.upstream.clone(),
        messages: built.messages,
        max_tokens,
        temperature: ask.temperature,
    };
    Ok(Prepared {
        ask,
        request,
        sources,
        nothing_found,
        prompt_tokens: built.tokens,
        reservation,
        reserved_micros: most,
        slot,
        prepare_ms: started.elapsed().as_secs_f64() * 1000.0,
        started,
    })
}

/// The 402 for a refused reservation, with what remains.
pub fn over_budget(state: &AppState, refusal: &usage::Refusal) -> ApiError {
    let s = &refusal.standing;
    let scope = if s.subject == usage::WORKSPACE {
        "workspace"
    } else {
        "user"
    };
    let whose = if scope == "workspace" {
        "The workspace's"
    } else {
        "Your"
    };
    ApiError::new(
        StatusCode::PAYMENT_REQUIRED,
        "budget_exceeded",
        format!(
            "{whose} monthly budget does not cover this request: {} {} remain, it may cost up \
             to {}.",
            money(s.remaining_micros.unwrap_or(0)),
            state.config.chat.currency,
            money(refusal.asked_micros),
        ),
    )
    .with_details(json!({
        "scope": scope,
        "month": s.month,
        "currency": state.config.chat.currency,
        "limit_micros": s.limit_micros,
        "spent_micros": s.spent_micros,
        "reserved_micros": s.reserved_micros,
        "remaining_micros": s.remaining_micros,
        "needed_micros": refusal.asked_micros,
    }))
}

/// Micro-units as a decimal amount (`1.234567`).
pub fn money(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    format!("{sign}{}.{:06}", m / 1_000_000, m % 1_000_000)
}

async fn release(state: &AppState, user: Id, reservation: Option<Id>, model: &str) {
    if reservation.is_none() {
        return;
    }
    let event = UsageEvent {
        user_id: user,
        model: model.to_owned(),
        kind: "chat",
        input_tokens: 0,
        output_tokens: 0,
        estimated: false,
        cost_micros: 0,
    };
    if let Err(e) = state.store.settle_budget(reservation, &event).await {
        tracing::error!(error = %e, "could not release a budget reservation");
    }
}

/// Stream the answer on a task of its own; events arrive on the returned channel.
pub fn start(state: AppState, prepared: Prepared) -> mpsc::Receiver<Out> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(generate(state, prepared, tx));
    rx
}

/// How the model's stream ended.
enum Ending {
    Finished(String),
    ClientGone,
    TooLong,
    Failed(LlmError),
}

async fn generate(state: AppState, p: Prepared, tx: mpsc::Sender<Out>) {
    let Prepared {
        ask,
        request,
        sources,
        nothing_found,
        prompt_tokens,
        mut reservation,
        reserved_micros,
        slot,
        started,
        prepare_ms,
    } = p;
    let reservation = reservation.take();
    let _slot = slot;
    let model = &ask.model;
    let message_id = ask.conversation.map(|_| Id::new());
    if tx.send(Out::Sources(sources.clone())).await.is_err() {
        // Gone before anything was generated: release the reservation, store nothing more.
        release(&state, ask.user, reservation, &model.name).await;
        return;
    }
    let passages: Vec<builtin::Passage> = sources
        .iter()
        .map(|s| builtin::Passage {
            n: s.n,
            text: s.text.clone(),
        })
        .collect();
    let opened: Result<EventStream, LlmError> = if nothing_found {
        Ok(builtin::stream_text(builtin::NOTHING_FOUND.to_owned()))
    } else {
        match &model.engine {
            Engine::Extractive => Ok(builtin::stream_text(builtin::extractive_answer(
                &ask.question,
                &passages,
                4,
            ))),
            Engine::Mock => Ok(builtin::stream_text(builtin::mock_answer(
                &ask.question,
                &passages,
            ))),
            Engine::Remote(client) => {
                tokio::select! {
                    biased;
                    _ = tx.closed() => {
                        release(&state, ask.user, reservation, &model.name).await;
                        return;
                    }
                    opened = client.stream(&request) => opened,
                }
            }
        }
    };
    let mut answer = String::new();
    let mut answer_chars = 0usize;
    let mut reported: Option<Usage> = None;
    let mut first_token_ms = None;
    let max_chars = state.config.chat.max_answer_chars;
    let ending = match opened {
        Err(e) => Ending::Failed(e),
        Ok(mut stream) => loop {
            let next = tokio::select! {
                biased;
                _ = tx.closed() => break Ending::ClientGone,
                next = stream.next() => next,
            };
            match next {
                None => break Ending::Finished("stop".into()),
                Some(Ok(Event::Token(t))) => {
                    if first_token_ms.is_none() {
                        first_token_ms = Some(started.elapsed().as_millis() as u64);
                    }
                    let n = t.chars().count();
                    if answer_chars + n > max_chars {
                        // Keep what fits, then stop there.
                        let fits: String = t.chars().take(max_chars - answer_chars).collect();
                        if !fits.is_empty() {
                            answer.push_str(&fits);
                            let _ = tx.send(Out::Token(fits)).await;
                        }
                        break Ending::TooLong;
                    }
                    answer_chars += n;
                    answer.push_str(&t);
                    if tx.send(Out::Token(t)).await.is_err() {
                        break Ending::ClientGone;
                    }
                }
                Some(Ok(Event::Usage(u))) => reported = Some(u),
                Some(Ok(Event::Finish(reason))) => {
                    // Usage may still follow the finish reason; read to the end.
                    let mut rest_usage = None;
                    while let Some(item) = stream.next().await {
                        if let Ok(Event::Usage(u)) = item {
                            rest_usage = Some(u);
                        }
                    }
                    if rest_usage.is_some() {
                        reported = rest_usage;
                    }
                    break Ending::Finished(reason);
                }
                Some(Err(e)) => break Ending::Failed(e),
            }
        },
    };

    // Usage: the provider's when it is plausible, else counted.
    let builtin = nothing_found || !matches!(model.engine, Engine::Remote(_));
    let (input_tokens, output_tokens, estimated) = match reported {
        Some(u) if u.input_tokens > 0 && (u.output_tokens > 0 || answer.is_empty()) => {
            (u.input_tokens, u.output_tokens, false)
        }
        _ if builtin => (0, cairn_llm::tokens::count(&answer), true),
        _ => {
            let prompt_estimate = if matches!(ending, Ending::Failed(_)) && answer.is_empty() {
                0
            } else {
                prompt_tokens
            };
            (prompt_estimate, cairn_llm::tokens::count(&answer), true)
        }
    };
    let cost = if builtin {
        0
    } else {
        let full = model.price.cost(input_tokens, output_tokens);
        // Never charge past what was set aside: the budget check was made against it.
        if reservation.is_some() && full > reserved_micros {
            tracing::warn!(
                model = %model.name,
                cost_micros = full,
                reserved_micros,
                input_tokens,
                output_tokens,
                "a call cost more than its reservation; charging the reservation"
            );
            reserved_micros
        } else {
            full
        }
    };
    let (status, finish_reason, failure): (&'static str, String, Option<(&'static str, String)>) =
        match &ending {
            Ending::Finished(r) if r == "length" => ("incomplete", r.clone(), None),
            Ending::Finished(r) => ("complete", r.clone(), None),
            Ending::ClientGone => ("incomplete", "cancelled".into(), None),
            Ending::TooLong => (
                "incomplete",
                "length".into(),
                Some((
                    "answer_too_long",
                    format!(
                        "The answer passed the longest one kept ({max_chars} characters) and \
                         was cut off there."
                    ),
                )),
            ),
            Ending::Failed(e) => {
                // The provider's own words (addresses, bodies) go to the log, not to members.
                tracing::warn!(model = %model.name, code = e.code(), error = %e, "a model call failed");
                (
                    if answer.is_empty() {
                        "failed"
                    } else {
                        "incomplete"
                    },
                    "error".into(),
                    Some((e.code(), failure_message(e).to_owned())),
                )
            }
        };
    let (valid, invalid) = citations::check(&answer, sources.len());
    let mut cites: Vec<Citation> = valid
        .iter()
        .filter_map(|n| sources.get(n - 1))
        .map(|s| Citation {
            n: s.n,
            valid: true,
            chunk_id: Some(s.chunk_id),
            document_id: Some(s.document_id),
            title: s.title.clone().or_else(|| Some(s.filename.clone())),
            location: Some(s.location.clone()),
        })
        .collect();
    cites.extend(invalid.iter().map(|n| Citation {
        n: *n,
        valid: false,
        chunk_id: None,
        document_id: None,
        title: None,
        location: None,
    }));
    let latency_ms = started.elapsed().as_millis() as u64;

    if let (Some(conversation), Some(id)) = (ask.conversation, message_id) {
        let mut m = MessageRow::new(conversation, "assistant", answer.clone());
        m.id = id;
        m.status = status.into();
        m.model = Some(model.name.clone());
        m.error_code = failure.as_ref().map(|f| f.0.to_owned());
        m.input_tokens = i64::try_from(input_tokens).unwrap_or(i64::MAX);
        m.output_tokens = i64::try_from(output_tokens).unwrap_or(i64::MAX);
        m.tokens_estimated = estimated;
        m.cost_micros = cost;
        m.first_token_ms = first_token_ms.map(|v| v as i64);
        m.latency_ms = Some(latency_ms as i64);
        m.sources = Some(Json(json!(sources)));
        m.citations = Some(Json(json!(cites)));
        if let Err(e) = state.store.add_message(ask.user, &m).await {
            // The conversation was deleted while the answer streamed.
            tracing::info!(error = %e, "an answer's conversation is gone; not stored");
        }
    }
    let event = UsageEvent {
        user_id: ask.user,
        model: model.name.clone(),
        kind: "chat",
        input_tokens: i64::try_from(input_tokens).unwrap_or(i64::MAX),
        output_tokens: i64::try_from(output_tokens).unwrap_or(i64::MAX),
        estimated,
        cost_micros: cost,
    };
    if let Err(e) = state.store.settle_budget(reservation, &event).await {
        tracing::error!(error = %e, "could not settle an answer's cost");
    }
    let outcome = match (&ending, status) {
        (Ending::ClientGone, _) => "cancelled",
        (Ending::Failed(_), _) => "failed",
        (_, "complete") => "complete",
        _ => "incomplete",
    };
    state.metrics.observe_answer(
        &model.name,
        outcome,
        input_tokens,
        output_tokens,
        first_token_ms,
    );
    if matches!(ending, Ending::ClientGone) {
        return;
    }
    let _ = tx
        .send(Out::Usage(UsageOut {
            input_tokens,
            output_tokens,
            estimated,
            cost_micros: cost,
            currency: state.config.chat.currency.clone(),
        }))
        .await;
    let last = match failure {
        Some((code, message)) if !matches!(ending, Ending::TooLong) => Out::Error(Failure {
            code,
            message,
            message_id,
            partial: !answer.is_empty(),
        }),
        _ => Out::Done(Done {
            message_id,
            model: model.name.clone(),
            status,
            finish_reason,
            citations: cites,
            invalid_citations: invalid,
            nothing_found,
            first_token_ms,
            latency_ms,
            prepare_ms: (prepare_ms * 1000.0).round() / 1000.0,
        }),
    };
    let _ = tx.send(last).await;
}

/// What members read about a provider failure.
fn failure_message(e: &LlmError) -> &'static str {
    match e {
        LlmError::Unreachable(_) => "The model provider could not be reached.",
        LlmError::Timeout(_) => "The model provider stopped responding.",
        LlmError::Status { status: 429, .. } => "The model provider is rate-limiting requests; try again shortly.",
        LlmError::Status { status: 401 | 403, .. } => "The model provider refused Cairn's credentials; an admin needs to check the provider's API key.",
        LlmError::Status { .. } => "The model provider answered with an error.",
        LlmError::Protocol(_) => "The model provider sent a response Cairn could not read.",
        LlmError::Truncated => "The model provider's answer was cut off.",
    }
}

/// The history of a conversation as model messages (failed turns left out).
pub fn history_of(rows: &[MessageRow]) -> Vec<Message> {
    rows.iter()
        .filter(|m| m.status != "failed" && !m.content.is_empty())
        .map(|m| {
            Message::new(
                if m.role == "assistant" {
                    Role::Assistant
                } else {
                    Role::User
                },
                m.content.clone(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_read_like_a_reference() {
        let loc = json!({"page": 3, "heading_path": ["Ops", "Restart"]});
        assert_eq!(render_location(&loc), "page 3, Ops › Restart");
        let loc = json!({"start_ms": 3_725_000, "speaker": "Ana"});
        assert_eq!(render_location(&loc), "at 01:02:05, speaker Ana");
        assert_eq!(render_location(&json!({})), "");
    }

    #[test]
    fn money_has_six_decimals() {
        assert_eq!(money(1_234_567), "1.234567");
        assert_eq!(money(5), "0.000005");
        assert_eq!(money(-20), "-0.000020");
    }
}
