//! Reading a provider's Server-Sent Events body: parsed by `eventsource-stream`, each gap
//! between pieces bounded by the idle timeout.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};

use crate::LlmError;

/// One event of the upstream stream.
pub(crate) struct Frame {
    pub event: String,
    pub data: String,
}

/// The response body as SSE frames; a gap longer than `idle` ends it with [`LlmError::Timeout`].
pub(crate) fn frames(
    response: reqwest::Response,
    idle: Duration,
) -> impl Stream<Item = Result<Frame, LlmError>> + Send {
    let inner = response
        .bytes_stream()
        .eventsource()
        .map(|item| match item {
            Ok(ev) => Ok(Frame {
                event: ev.event,
                data: ev.data,
            }),
            Err(e) => Err(LlmError::Protocol(format!("reading the stream: {e}"))),
        });
    with_idle_timeout(Box::pin(inner), idle)
}

/// `inner`, where waiting longer than `idle` for the next item yields one
/// [`LlmError::Timeout`] and ends the stream.
pub(crate) fn with_idle_timeout<S, T>(
    inner: S,
    idle: Duration,
) -> impl Stream<Item = Result<T, LlmError>> + Send
where
    S: Stream<Item = Result<T, LlmError>> + Send + Unpin,
    T: Send,
{
    futures::stream::unfold((inner, false), move |(mut inner, ended)| async move {
        if ended {
            return None;
        }
        match tokio::time::timeout(idle, inner.next()).await {
            Ok(Some(item)) => Some((item, (inner, false))),
            Ok(None) => None,
            Err(_) => Some((Err(LlmError::Timeout(idle)), (inner, true))),
        }
    })
}
