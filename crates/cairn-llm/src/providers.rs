//! The three wire formats: requests built, streams decoded into [`Event`]s.

use std::collections::VecDeque;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use crate::sse::{self, Frame};
use crate::{ChatRequest, Event, EventStream, Kind, LlmError, Role, Timeouts, Usage};

/// Longest wait a `Retry-After` header may ask for before a retry.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

/// A configured remote provider. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    kind: Kind,
    base: String,
    api_key: Option<String>,
    http: reqwest::Client,
    timeouts: Timeouts,
    retries: u32,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("kind", &self.kind)
            .field("base", &self.base)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Client {
    /// A client for the provider at `base_url` (see [`Kind`] for what the URL names).
    /// `retries` is how often a call is repeated while nothing has been generated yet.
    pub fn new(
        kind: Kind,
        base_url: &str,
        api_key: Option<String>,
        timeouts: Timeouts,
        retries: u32,
    ) -> Result<Self, LlmError> {
        let url = url::Url::parse(base_url)
            .map_err(|e| LlmError::Unreachable(format!("bad base URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(LlmError::Unreachable(
                "the base URL must be http or https".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .user_agent(concat!("cairn/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LlmError::Unreachable(e.to_string()))?;
        Ok(Self {
            kind,
            base: base_url.trim_end_matches('/').to_owned(),
            api_key: api_key.filter(|k| !k.is_empty()),
            http,
            timeouts,
            retries,
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Start a streamed chat call. Errors before the first byte of the answer come back here;
    /// errors after it come as the stream's items.
    pub async fn stream(&self, req: &ChatRequest) -> Result<EventStream, LlmError> {
        let (url, body) = match self.kind {
            Kind::OpenAi => (format!("{}/chat/completions", self.base), openai_body(req)),
            Kind::Anthropic => (format!("{}/v1/messages", self.base), anthropic_body(req)),
            Kind::Gemini => (
                format!(
                    "{}/v1beta/models/{}:streamGenerateContent?alt=sse",
                    self.base,
                    urlencode(&req.model)
                ),
                gemini_body(req),
            ),
        };
        let response = self.send(reqwest::Method::POST, &url, Some(&body)).await?;
        let frames = sse::frames(response, self.timeouts.idle);
        let decoder = Decoder::new(self.kind);
        Ok(Box::pin(decode(Box::pin(frames), decoder)))
    }

    /// The models the provider offers (to check a provider's settings).
    pub async fn models(&self) -> Result<Vec<String>, LlmError> {
        let url = match self.kind {
            Kind::OpenAi => format!("{}/models", self.base),
            Kind::Anthropic => format!("{}/v1/models", self.base),
            Kind::Gemini => format!("{}/v1beta/models", self.base),
        };
        let response = self.send(reqwest::Method::GET, &url, None).await?;
        let body: Value = tokio::time::timeout(self.timeouts.idle, response.json())
            .await
            .map_err(|_| LlmError::Timeout(self.timeouts.idle))?
            .map_err(|e| LlmError::Protocol(e.to_string()))?;
        let (list, field) = match self.kind {
            Kind::Gemini => (&body["models"], "name"),
            _ => (&body["data"], "id"),
        };
        let list = list
            .as_array()
            .ok_or_else(|| LlmError::Protocol("the model list is not a list".into()))?;
        Ok(list
            .iter()
            .filter_map(|m| m[field].as_str())
            .map(|s| s.trim_start_matches("models/").to_owned())
            .collect())
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, url);
        match (self.kind, &self.api_key) {
            (Kind::OpenAi, Some(k)) => rb = rb.bearer_auth(k),
            (Kind::Anthropic, key) => {
                rb = rb.header("anthropic-version", "2023-06-01");
                if let Some(k) = key {
                    rb = rb.header("x-api-key", k);
                }
            }
            (Kind::Gemini, Some(k)) => rb = rb.header("x-goog-api-key", k),
            _ => {}
        }
        rb
    }

    /// Send, retrying only what cannot have started any generation: a refused connection, or
    /// a 429/502/503/504 answer.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, LlmError> {
        let mut attempt = 0u32;
        loop {
            let mut rb = self.request(method.clone(), url);
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let sent = tokio::time::timeout(self.timeouts.idle, rb.send()).await;
            let (error, wait) = match sent {
                Err(_) => return Err(LlmError::Timeout(self.timeouts.idle)),
                Ok(Err(e)) if e.is_connect() => {
                    (LlmError::Unreachable(describe(&e)), backoff(attempt))
                }
                Ok(Err(e)) if e.is_timeout() => {
                    return Err(LlmError::Unreachable(describe(&e)));
                }
                Ok(Err(e)) => return Err(LlmError::Unreachable(describe(&e))),
                Ok(Ok(r)) if r.status().is_success() => return Ok(r),
                Ok(Ok(r)) => {
                    let status = r.status().as_u16();
                    let wait = retry_after(&r).unwrap_or_else(|| backoff(attempt));
                    let text = tokio::time::timeout(self.timeouts.idle, r.text())
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .unwrap_or_default();
                    let error = LlmError::Status {
                        status,
                        message: error_message(&text),
                    };
                    if !matches!(status, 429 | 502 | 503 | 504) {
                        return Err(error);
                    }
                    (error, wait)
                }
            };
            if attempt >= self.retries {
                return Err(error);
            }
            attempt += 1;
            tracing::debug!(url, attempt, error = %error, "retrying a model call");
            tokio::time::sleep(wait.min(MAX_RETRY_WAIT)).await;
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << attempt.min(6)))
}

fn retry_after(r: &reqwest::Response) -> Option<Duration> {
    r.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The message of a provider's error body (all three put it at `error.message`), or the body.
fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        v["error"]["message"]
            .as_str()
            .or_else(|| v["error"].as_str())
            .or_else(|| v["message"].as_str())
            .map(str::to_owned)
    });
    let mut s = from_json.unwrap_or_else(|| body.trim().to_owned());
    if s.chars().count() > 500 {
        s = s.chars().take(500).collect::<String>() + "…";
    }
    if s.is_empty() {
        "(no details)".into()
    } else {
        s
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn openai_body(req: &ChatRequest) -> Value {
    let messages: Vec<Value> = req
        .messages
        .iter()
        .map(|m| json!({ "role": m.role.as_str(), "content": m.content }))
        .collect();
    let mut body = json!({
        "model": req.model,
        "messages": messages,
        "stream": true,
        "stream_options": { "include_usage": true },
        "max_tokens": req.max_tokens,
    });
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    body
}

/// Anthropic wants the system prompt apart and user/assistant turns alternating, starting
/// with the user: consecutive turns of one role are joined.
fn anthropic_body(req: &ChatRequest) -> Value {
    let system = system_text(req);
    let turns = alternating(req, "assistant");
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, text)| json!({ "role": role, "content": text }))
        .collect();
    let mut body = json!({
        "model": req.model,
        "max_tokens": req.max_tokens,
        "messages": messages,
        "stream": true,
    });
    if let Some(system) = system {
        body["system"] = json!(system);
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    body
}

fn gemini_body(req: &ChatRequest) -> Value {
    let system = system_text(req);
    let contents: Vec<Value> = alternating(req, "model")
        .into_iter()
        .map(|(role, text)| json!({ "role": role, "parts": [{ "text": text }] }))
        .collect();
    let mut config = json!({ "maxOutputTokens": req.max_tokens });
    if let Some(t) = req.temperature {
        config["temperature"] = json!(t);
    }
    let mut body = json!({ "contents": contents, "generationConfig": config });
    if let Some(system) = system {
        body["systemInstruction"] = json!({ "parts": [{ "text": system }] });
    }
    body
}

/// The system messages joined (the formats that take the system prompt apart), if any.
fn system_text(req: &ChatRequest) -> Option<String> {
    let parts: Vec<&str> = req
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

/// The non-system turns as `(role, text)`, consecutive turns of one role joined, starting
/// with a user turn; the assistant's role is named `assistant_role`.
fn alternating(req: &ChatRequest, assistant_role: &'static str) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for m in req.messages.iter().filter(|m| m.role != Role::System) {
        let role = if m.role == Role::User {
            "user"
        } else {
            assistant_role
        };
        match out.last_mut() {
            Some((r, text)) if *r == role => {
                text.push_str("\n\n");
                text.push_str(&m.content);
            }
            None if role != "user" => {}
            _ => out.push((role, m.content.clone())),
        }
    }
    out
}

/// Turns one provider's frames into [`Event`]s.
struct Decoder {
    kind: Kind,
    usage: Usage,
    saw_usage: bool,
    finish: Option<String>,
    done: bool,
}

impl Decoder {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            usage: Usage::default(),
            saw_usage: false,
            finish: None,
            done: false,
        }
    }

    fn feed(&mut self, frame: &Frame, out: &mut VecDeque<Event>) -> Result<(), LlmError> {
        if frame.data.trim().is_empty() {
            return Ok(());
        }
        match self.kind {
            Kind::OpenAi => self.openai(frame, out),
            Kind::Anthropic => self.anthropic(frame, out),
            Kind::Gemini => self.gemini(frame, out),
        }
    }

    /// At the end of the body: the closing events, or why the stream is incomplete.
    fn end(&mut self, out: &mut VecDeque<Event>) -> Result<(), LlmError> {
        // Gemini has no end marker; some OpenAI-compatible servers omit `[DONE]`. A finish
        // reason followed by the end of the body is a complete answer.
        if self.finish.is_some() {
            self.done = true;
        }
        if !self.done {
            return Err(LlmError::Truncated);
        }
        if self.saw_usage {
            out.push_back(Event::Usage(self.usage));
        }
        if let Some(f) = self.finish.take() {
            out.push_back(Event::Finish(f));
        }
        Ok(())
    }

    fn parse(data: &str) -> Result<Value, LlmError> {
        let v: Value = serde_json::from_str(data).map_err(|_| {
            let shown: String = data.chars().take(120).collect();
            LlmError::Protocol(format!("expected JSON, got `{shown}`"))
        })?;
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let message = err["message"]
                .as_str()
                .or_else(|| err.as_str())
                .unwrap_or("an error without a message");
            return Err(LlmError::Protocol(format!(
                "error in the stream: {message}"
            )));
        }
        Ok(v)
    }

    fn openai(&mut self, frame: &Frame, out: &mut VecDeque<Event>) -> Result<(), LlmError> {
        if frame.data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let v = Self::parse(&frame.data)?;
        if !v.is_object() {
            return Err(LlmError::Protocol("a stream chunk is not an object".into()));
        }
        if let Some(choice) = v["choices"].as_array().and_then(|c| c.first()) {
            if let Some(text) = choice["delta"]["content"].as_str() {
                if !text.is_empty() {
                    out.push_back(Event::Token(text.to_owned()));
                }
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                self.finish = Some(reason.to_owned());
            }
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.saw_usage = true;
            self.usage = Usage {
                input_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
                output_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
            };
        }
        Ok(())
    }

    fn anthropic(&mut self, frame: &Frame, out: &mut VecDeque<Event>) -> Result<(), LlmError> {
        let v = Self::parse(&frame.data)?;
        let kind = if frame.event.is_empty() || frame.event == "message" {
            v["type"].as_str().unwrap_or("")
        } else {
            frame.event.as_str()
        };
        match kind {
            "message_start" => {
                let u = &v["message"]["usage"];
                if let Some(n) = u["input_tokens"].as_u64() {
                    self.saw_usage = true;
                    self.usage.input_tokens = n;
                }
                if let Some(n) = u["output_tokens"].as_u64() {
                    self.usage.output_tokens = n;
                }
            }
            "content_block_delta" => {
                if let Some(text) = v["delta"]["text"].as_str() {
                    if !text.is_empty() {
                        out.push_back(Event::Token(text.to_owned()));
                    }
                }
            }
            "message_delta" => {
                if let Some(reason) = v["delta"]["stop_reason"].as_str() {
                    self.finish = Some(
                        match reason {
                            "end_turn" | "stop_sequence" => "stop",
                            "max_tokens" => "length",
                            "refusal" => "content_filter",
                            other => other,
                        }
                        .to_owned(),
                    );
                }
                if let Some(n) = v["usage"]["output_tokens"].as_u64() {
                    self.saw_usage = true;
                    self.usage.output_tokens = n;
                }
                if let Some(n) = v["usage"]["input_tokens"].as_u64() {
                    self.usage.input_tokens = n;
                }
            }
            "message_stop" => self.done = true,
            _ => {}
        }
        Ok(())
    }

    fn gemini(&mut self, frame: &Frame, out: &mut VecDeque<Event>) -> Result<(), LlmError> {
        let v = Self::parse(&frame.data)?;
        if !v.is_object() {
            return Err(LlmError::Protocol("a stream chunk is not an object".into()));
        }
        if let Some(c) = v["candidates"].as_array().and_then(|c| c.first()) {
            if let Some(parts) = c["content"]["parts"].as_array() {
                for p in parts {
                    if p["thought"].as_bool() == Some(true) {
                        continue;
                    }
                    if let Some(text) = p["text"].as_str() {
                        if !text.is_empty() {
                            out.push_back(Event::Token(text.to_owned()));
                        }
                    }
                }
            }
            if let Some(reason) = c["finishReason"].as_str() {
                self.finish = Some(
                    match reason {
                        "STOP" => "stop",
                        "MAX_TOKENS" => "length",
                        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" => {
                            "content_filter"
                        }
                        other => other,
                    }
                    .to_owned(),
                );
            }
        }
        if let Some(u) = v.get("usageMetadata").filter(|u| u.is_object()) {
            self.saw_usage = true;
            self.usage = Usage {
                input_tokens: u["promptTokenCount"].as_u64().unwrap_or(0),
                output_tokens: u["candidatesTokenCount"].as_u64().unwrap_or(0),
            };
        }
        Ok(())
    }
}

fn decode<S>(frames: S, decoder: Decoder) -> impl futures::Stream<Item = Result<Event, LlmError>>
where
    S: futures::Stream<Item = Result<Frame, LlmError>> + Send + Unpin,
{
    struct St<S> {
        frames: S,
        decoder: Decoder,
        pending: VecDeque<Event>,
        over: bool,
    }
    let st = St {
        frames,
        decoder,
        pending: VecDeque::new(),
        over: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.over {
                return None;
            }
            if st.decoder.done {
                // Whatever follows the end marker is ignored.
                st.over = true;
                if let Err(e) = st.decoder.end(&mut st.pending) {
                    return Some((Err(e), st));
                }
                continue;
            }
            match st.frames.next().await {
                Some(Ok(frame)) => {
                    if let Err(e) = st.decoder.feed(&frame, &mut st.pending) {
                        st.over = true;
                        st.pending.clear();
                        return Some((Err(e), st));
                    }
                }
                Some(Err(e)) => {
                    st.over = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.over = true;
                    if let Err(e) = st.decoder.end(&mut st.pending) {
                        return Some((Err(e), st));
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    fn req() -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: vec![
                Message::new(Role::System, "be brief"),
                Message::new(Role::Assistant, "hello"),
                Message::new(Role::User, "a"),
                Message::new(Role::User, "b"),
                Message::new(Role::Assistant, "c"),
                Message::new(Role::User, "d"),
            ],
            max_tokens: 10,
            temperature: None,
        }
    }

    #[test]
    fn anthropic_turns_alternate_from_the_user() {
        let body = anthropic_body(&req());
        assert_eq!(body["system"], "be brief");
        let roles: Vec<&str> = body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["role"].as_str())
            .collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
        assert_eq!(body["messages"][0]["content"], "a\n\nb");
    }

    #[test]
    fn gemini_names_the_assistant_model() {
        let body = gemini_body(&req());
        assert_eq!(body["contents"][1]["role"], "model");
        assert_eq!(body["systemInstruction"]["parts"][0]["text"], "be brief");
        assert_eq!(body["generationConfig"]["maxOutputTokens"], 10);
    }

    #[test]
    fn error_bodies_are_read() {
        assert_eq!(
            error_message(r#"{"error":{"message":"bad key","type":"x"}}"#),
            "bad key"
        );
        assert_eq!(error_message("plain words"), "plain words");
        assert_eq!(error_message(""), "(no details)");
    }
}
