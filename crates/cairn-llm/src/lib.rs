//! Chat models for Cairn, behind one streaming interface.
//!
//! - [`Client`] speaks to a remote provider: any OpenAI-compatible `/chat/completions`
//!   (OpenAI, Ollama, llama.cpp's server, vLLM, LM Studio, OpenRouter, …), Anthropic's
//!   Messages API, or Google Gemini's `streamGenerateContent`. Every call streams; the connect
//!   and idle timeouts are enforced here, and a call is retried only while nothing has been
//!   generated (connection refused, 429, 502/503/504 before the body). Dropping the returned
//!   stream closes the connection, which is how a client going away cancels the upstream work.
//! - [`builtin`] holds the two answerers that need no model: `extractive` (an answer assembled
//!   from the best passages, with citations) and `mock` (a fixed demo answer).
//! - [`tokens`] estimates token counts when a provider reports none.

pub mod builtin;
mod providers;
#[cfg(feature = "scripted")]
pub mod scripted;
mod sse;
pub mod tokens;

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use serde::{Deserialize, Serialize};

pub use providers::Client;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// One chat call.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The model's name at the provider.
    pub model: String,
    pub messages: Vec<Message>,
    pub max_tokens: u32,
    pub temperature: Option<f32>,
}

/// Token counts for one call, as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// What a streamed call yields, in order: tokens, then at most one usage report and one finish
/// reason (either may be missing when a provider does not send it).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Token(String),
    Usage(Usage),
    /// Why generation stopped, in the provider's words mapped to `stop`, `length`,
    /// `content_filter` or the provider's own value.
    Finish(String),
}

/// Why a call failed. Each maps to one stable API error code.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum LlmError {
    /// The provider could not be reached (refused, DNS, TLS, connect timeout).
    #[error("the model provider could not be reached: {0}")]
    Unreachable(String),
    /// Nothing arrived within the idle timeout.
    #[error("the model provider stopped responding (nothing for {0:?})")]
    Timeout(Duration),
    /// The provider answered with an error status.
    #[error("the model provider answered {status}: {message}")]
    Status { status: u16, message: String },
    /// The provider sent something that is not its API's format, or reported an error mid-stream.
    #[error("the model provider sent a bad response: {0}")]
    Protocol(String),
    /// The provider's stream ended without saying it was finished.
    #[error("the model provider's stream ended early")]
    Truncated,
}

impl LlmError {
    /// The stable code for this error in Cairn's API.
    pub fn code(&self) -> &'static str {
        match self {
            LlmError::Unreachable(_) => "provider_unreachable",
            LlmError::Timeout(_) => "provider_timeout",
            LlmError::Status { status: 429, .. } => "provider_rate_limited",
            LlmError::Status {
                status: 401 | 403, ..
            } => "provider_auth_failed",
            LlmError::Status { .. } => "provider_error",
            LlmError::Protocol(_) => "provider_bad_response",
            LlmError::Truncated => "provider_stream_cut",
        }
    }
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<Event, LlmError>> + Send>>;

/// The wire format a remote provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `POST {base_url}/chat/completions`, base URL up to the version (`…/v1`).
    OpenAi,
    /// `POST {base_url}/v1/messages`.
    Anthropic,
    /// `POST {base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse`.
    Gemini,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::OpenAi, Kind::Anthropic, Kind::Gemini];

    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::OpenAi => "openai",
            Kind::Anthropic => "anthropic",
            Kind::Gemini => "gemini",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The public endpoint, when the admin gives none.
    pub fn default_base_url(&self) -> &'static str {
        match self {
            Kind::OpenAi => "https://api.openai.com/v1",
            Kind::Anthropic => "https://api.anthropic.com",
            Kind::Gemini => "https://generativelanguage.googleapis.com",
        }
    }
}

/// How long a call may wait.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// To open the connection.
    pub connect: Duration,
    /// For the response headers, and then between any two pieces of the stream.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}
