//! A scripted model server for tests and benchmarks: a real HTTP server speaking the
//! OpenAI-compatible, Anthropic and Gemini streaming formats, whose behaviour is chosen by the
//! model name — for what a real model cannot be made to do on demand (errors mid-stream,
//! stalls, huge outputs, wrong usage numbers).
//!
//! Model names (for every format):
//! - `echo` — "You said: …" with the last user message, then usage.
//! - `cite` — "Restart it with the switch [1]. See also [9]." (source 9 rarely exists).
//! - `slow-<ms>[-<n>]` — `n` tokens (default 40), one every `ms` milliseconds.
//! - `clock-<ms>[-<n>]` — the same, each token ` @<microseconds since the epoch>` as it is sent,
//!   so a client can tell how long the token took to reach it.
//! - `no-usage` — an answer and no usage report.
//! - `wrong-usage` — an answer with usage reporting zero tokens.
//! - `huge` — a million tokens, as fast as the connection takes them.
//! - `cut` — a few tokens, then the connection ends without the end marker.
//! - `error-mid` — a few tokens, then an error in the stream.
//! - `garbage` — a few tokens, then something that is not JSON.
//! - `stall` — a few tokens, then nothing, forever.
//! - `fail-<status>` — answers every call with that HTTP status.
//! - `flaky` — answers 503 to every other call (a retry then succeeds).
//!
//! [`Stats`] counts calls, streams finished and streams the client abandoned.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};

/// What the server has seen.
#[derive(Debug, Default)]
pub struct Stats {
    pub calls: AtomicU64,
    pub finished: AtomicU64,
    /// Streams whose client went away before the end.
    pub abandoned: AtomicU64,
    /// Streams open now.
    pub open: AtomicU64,
    flaky: AtomicU64,
}

/// A running scripted server.
pub struct Server {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Start on a free loopback port.
    pub async fn start() -> std::io::Result<Server> {
        let stats = Arc::new(Stats::default());
        let app = Router::new()
            .route("/v1/models", get(models))
            .route("/v1/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .route("/v1beta/models/{action}", post(gemini))
            .with_state(stats.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Server { addr, stats, task })
    }

    /// The OpenAI-compatible base URL (`http://…/v1`).
    pub fn openai_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The base URL for the Anthropic and Gemini formats.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    OpenAi,
    Anthropic,
    Gemini,
}

async fn models() -> Json<Value> {
    let names = [
        "echo",
        "cite",
        "slow-50",
        "no-usage",
        "wrong-usage",
        "huge",
        "cut",
        "error-mid",
        "garbage",
        "stall",
        "flaky",
    ];
    let data: Vec<Value> = names
        .iter()
        .map(|n| json!({ "id": n, "object": "model", "owned_by": "scripted" }))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

async fn openai(State(stats): State<Arc<Stats>>, Json(body): Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or("").to_owned();
    let last = last_user(&body["messages"], "content");
    respond(stats, Format::OpenAi, &model, last).await
}

async fn anthropic(State(stats): State<Arc<Stats>>, Json(body): Json<Value>) -> Response {
    let model = body["model"].as_str().unwrap_or("").to_owned();
    let last = last_user(&body["messages"], "content");
    respond(stats, Format::Anthropic, &model, last).await
}

async fn gemini(
    State(stats): State<Arc<Stats>>,
    Path(action): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let model = action
        .split(':')
        .next()
        .unwrap_or("")
        .trim_start_matches("models/")
        .to_owned();
    let last = body["contents"]
        .as_array()
        .and_then(|c| c.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["parts"][0]["text"].as_str())
        .unwrap_or("")
        .to_owned();
    respond(stats, Format::Gemini, &model, last).await
}

fn last_user(messages: &Value, field: &str) -> String {
    messages
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m[field].as_str())
        .unwrap_or("")
        .to_owned()
}

/// How a scripted stream ends.
#[derive(Clone, Copy, PartialEq)]
enum Ending {
    Normal,
    Cut,
    ErrorMid,
    Garbage,
    Stall,
}

struct Script {
    tokens: Vec<String>,
    delay: Duration,
    usage: Option<(u64, u64)>,
    ending: Ending,
}

async fn respond(stats: Arc<Stats>, format: Format, model: &str, last: String) -> Response {
    stats.calls.fetch_add(1, Ordering::SeqCst);
    if let Some(code) = model.strip_prefix("fail-") {
        let status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error_response(status, "scripted failure");
    }
    if model == "flaky" && stats.flaky.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "overloaded, try again");
    }
    let words = |s: &str| -> Vec<String> {
        let mut out = Vec::new();
        for (i, w) in s.split(' ').enumerate() {
            out.push(if i == 0 {
                w.to_owned()
            } else {
                format!(" {w}")
            });
        }
        out
    };
    let few = words("The first words of an answer");
    let script = match model {
        "echo" | "flaky" => Script {
            tokens: words(&format!("You said: {last}")),
            delay: Duration::ZERO,
            usage: Some((17, 0)),
            ending: Ending::Normal,
        },
        "cite" => Script {
            tokens: words("Restart it with the switch [1]. See also [9]."),
            delay: Duration::ZERO,
            usage: Some((120, 0)),
            ending: Ending::Normal,
        },
        "no-usage" => Script {
            tokens: words("An answer without a usage report."),
            delay: Duration::ZERO,
            usage: None,
            ending: Ending::Normal,
        },
        "wrong-usage" => Script {
            tokens: words("An answer whose usage says zero."),
            delay: Duration::ZERO,
            usage: Some((0, 0)),
            ending: Ending::Normal,
        },
        "huge" => Script {
            tokens: vec![" word".to_owned(); 1_000_000],
            delay: Duration::ZERO,
            usage: Some((10, 1_000_000)),
            ending: Ending::Normal,
        },
        "cut" => Script {
            tokens: few,
            delay: Duration::ZERO,
            usage: None,
            ending: Ending::Cut,
        },
        "error-mid" => Script {
            tokens: few,
            delay: Duration::ZERO,
            usage: None,
            ending: Ending::ErrorMid,
        },
        "garbage" => Script {
            tokens: few,
            delay: Duration::ZERO,
            usage: None,
            ending: Ending::Garbage,
        },
        "stall" => Script {
            tokens: few,
            delay: Duration::ZERO,
            usage: None,
            ending: Ending::Stall,
        },
        m if m.starts_with("slow-") || m.starts_with("clock-") => {
            let clock = m.starts_with("clock-");
            let mut parts = m.split('-').skip(1);
            let ms = parts.next().and_then(|p| p.parse().ok()).unwrap_or(50);
            let n = parts.next().and_then(|p| p.parse().ok()).unwrap_or(40);
            Script {
                tokens: (0..n)
                    .map(|i| {
                        if clock {
                            CLOCK.to_owned()
                        } else {
                            format!(" t{i}")
                        }
                    })
                    .collect(),
                delay: Duration::from_millis(ms),
                usage: Some((30, 0)),
                ending: Ending::Normal,
            }
        }
        _ => return error_response(StatusCode::NOT_FOUND, "no such model"),
    };
    stream_response(stats, format, model.to_owned(), script)
}

/// A token replaced by the time it is sent.
const CLOCK: &str = "\u{0}clock";

fn stamp(text: &str) -> String {
    if text == CLOCK {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        format!(" @{micros}")
    } else {
        text.to_owned()
    }
}

fn error_response(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(
            json!({ "error": { "message": message, "type": "scripted", "code": status.as_u16() } }),
        ),
    )
        .into_response()
}

/// Counts a stream as abandoned unless it was marked finished.
struct Watch {
    stats: Arc<Stats>,
    finished: bool,
}

impl Watch {
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::SeqCst);
        if self.finished {
            self.stats.finished.fetch_add(1, Ordering::SeqCst);
        } else {
            self.stats.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn frame(event: Option<&str>, data: &Value) -> Bytes {
    match event {
        Some(e) => Bytes::from(format!("event: {e}\ndata: {data}\n\n")),
        None => Bytes::from(format!("data: {data}\n\n")),
    }
}

fn token_frame(format: Format, model: &str, text: &str) -> Bytes {
    match format {
        Format::OpenAi => frame(
            None,
            &json!({"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0,
                    "model": model, "choices": [{"index": 0, "delta": {"content": text},
                    "finish_reason": null}]}),
        ),
        Format::Anthropic => frame(
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": text}}),
        ),
        Format::Gemini => frame(
            None,
            &json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                    "index": 0}]}),
        ),
    }
}

fn opening(format: Format, model: &str, input: u64) -> Vec<Bytes> {
    match format {
        Format::OpenAi => vec![frame(
            None,
            &json!({"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0,
                    "model": model, "choices": [{"index": 0, "delta": {"role": "assistant",
                    "content": ""}, "finish_reason": null}]}),
        )],
        Format::Anthropic => vec![
            frame(
                Some("message_start"),
                &json!({"type": "message_start", "message": {"id": "msg_scripted",
                        "type": "message", "role": "assistant", "model": model, "content": [],
                        "usage": {"input_tokens": input, "output_tokens": 1}}}),
            ),
            frame(
                Some("content_block_start"),
                &json!({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "text", "text": ""}}),
            ),
            frame(Some("ping"), &json!({"type": "ping"})),
        ],
        Format::Gemini => vec![],
    }
}

fn closing(format: Format, model: &str, usage: Option<(u64, u64)>) -> Vec<Bytes> {
    match format {
        Format::OpenAi => {
            let mut v = vec![frame(
                None,
                &json!({"id": "chatcmpl-scripted", "object": "chat.completion.chunk",
                        "created": 0, "model": model, "choices": [{"index": 0, "delta": {},
                        "finish_reason": "stop"}]}),
            )];
            if let Some((i, o)) = usage {
                v.push(frame(
                    None,
                    &json!({"id": "chatcmpl-scripted", "object": "chat.completion.chunk",
                            "created": 0, "model": model, "choices": [],
                            "usage": {"prompt_tokens": i, "completion_tokens": o,
                                      "total_tokens": i + o}}),
                ));
            }
            v.push(Bytes::from_static(b"data: [DONE]\n\n"));
            v
        }
        Format::Anthropic => vec![
            frame(
                Some("content_block_stop"),
                &json!({"type": "content_block_stop", "index": 0}),
            ),
            frame(
                Some("message_delta"),
                &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                        "usage": {"output_tokens": usage.map(|u| u.1).unwrap_or(0)}}),
            ),
            frame(Some("message_stop"), &json!({"type": "message_stop"})),
        ],
        Format::Gemini => {
            let mut last = json!({"candidates": [{"content": {"role": "model", "parts": []},
                                  "finishReason": "STOP", "index": 0}]});
            if let Some((i, o)) = usage {
                last["usageMetadata"] = json!({"promptTokenCount": i,
                    "candidatesTokenCount": o, "totalTokenCount": i + o});
            }
            vec![frame(None, &last)]
        }
    }
}

fn stream_response(stats: Arc<Stats>, format: Format, model: String, script: Script) -> Response {
    stats.open.fetch_add(1, Ordering::SeqCst);
    let watch = Watch {
        stats,
        finished: false,
    };
    let n_tokens = script.tokens.len() as u64;
    // The reported output count is the number of tokens sent, unless the script says zero.
    let usage = script
        .usage
        .map(|(i, o)| (i, if o == 0 && i != 0 { n_tokens } else { o }));
    let head = opening(format, &model, usage.map(|u| u.0).unwrap_or(0));
    let tail = closing(format, &model, usage);
    let tokens = script.tokens;
    let delay = script.delay;
    let ending = script.ending;
    let body = async_body(format, model, head, tokens, delay, ending, tail, watch);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[allow(clippy::too_many_arguments)]
fn async_body(
    format: Format,
    model: String,
    head: Vec<Bytes>,
    tokens: Vec<String>,
    delay: Duration,
    ending: Ending,
    tail: Vec<Bytes>,
    watch: Watch,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send {
    enum Step {
        Head(usize),
        Token(usize),
        End,
        Tail(usize),
        Over,
    }
    futures::stream::unfold((Step::Head(0), watch), move |(step, mut watch)| {
        let head = head.clone();
        let tail = tail.clone();
        let model = model.clone();
        let tokens_len = tokens.len();
        let token = match &step {
            Step::Token(i) => tokens.get(*i).cloned(),
            _ => None,
        };
        async move {
            match step {
                Step::Head(i) if i < head.len() => {
                    Some((Ok(head[i].clone()), (Step::Head(i + 1), watch)))
                }
                Step::Head(_) => Some((Ok(Bytes::new()), (Step::Token(0), watch))),
                Step::Token(i) if i < tokens_len => {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let text = token.unwrap_or_default();
                    Some((
                        Ok(token_frame(format, &model, &stamp(&text))),
                        (Step::Token(i + 1), watch),
                    ))
                }
                Step::Token(_) => Some((Ok(Bytes::new()), (Step::End, watch))),
                Step::End => match ending {
                    Ending::Normal => Some((Ok(Bytes::new()), (Step::Tail(0), watch))),
                    Ending::Cut => {
                        watch.finish();
                        None
                    }
                    Ending::ErrorMid => {
                        watch.finished = true;
                        let err = json!({"error": {"message": "the model crashed",
                                             "type": "server_error"}});
                        let bytes = match format {
                            Format::Anthropic => frame(Some("error"), &err),
                            _ => frame(None, &err),
                        };
                        Some((Ok(bytes), (Step::Over, watch)))
                    }
                    Ending::Garbage => {
                        watch.finished = true;
                        Some((
                            Ok(Bytes::from_static(b"data: <html>Bad Gateway</html>\n\n")),
                            (Step::Over, watch),
                        ))
                    }
                    Ending::Stall => {
                        futures::future::pending::<()>().await;
                        None
                    }
                },
                Step::Tail(i) if i < tail.len() => {
                    if i + 1 == tail.len() {
                        watch.finished = true;
                    }
                    Some((Ok(tail[i].clone()), (Step::Tail(i + 1), watch)))
                }
                Step::Tail(_) | Step::Over => None,
            }
        }
    })
    .filter(|b: &Result<Bytes, Infallible>| {
        futures::future::ready(b.as_ref().map(|b| !b.is_empty()).unwrap_or(true))
    })
}
