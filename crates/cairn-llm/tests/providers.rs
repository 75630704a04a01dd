//! The three wire formats against a scripted server, and the OpenAI-compatible one against a
//! real llama.cpp server when the suite has one (`CAIRN_TEST_LLM_URL`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::sync::atomic::Ordering;
use std::time::Duration;

use cairn_llm::scripted::Server;
use cairn_llm::{ChatRequest, Client, Event, Kind, LlmError, Message, Role, Timeouts, Usage};
use futures::StreamExt;

fn request(model: &str) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![
            Message::new(Role::System, "Answer briefly."),
            Message::new(Role::User, "ping"),
        ],
        max_tokens: 64,
        temperature: Some(0.0),
    }
}

fn client(server: &Server, kind: Kind) -> Client {
    let url = match kind {
        Kind::OpenAi => server.openai_url(),
        _ => server.base_url(),
    };
    let timeouts = Timeouts {
        connect: Duration::from_secs(2),
        idle: Duration::from_millis(500),
    };
    Client::new(kind, &url, Some("sk-test".into()), timeouts, 2).expect("client")
}

/// Everything a call yields: the text, the usage, the finish reason, and the error it ended with.
async fn run(c: &Client, model: &str) -> (String, Option<Usage>, Option<String>, Option<LlmError>) {
    let mut stream = match c.stream(&request(model)).await {
        Ok(s) => s,
        Err(e) => return (String::new(), None, None, Some(e)),
    };
    let (mut text, mut usage, mut finish, mut error) = (String::new(), None, None, None);
    while let Some(item) = stream.next().await {
        match item {
            Ok(Event::Token(t)) => text.push_str(&t),
            Ok(Event::Usage(u)) => usage = Some(u),
            Ok(Event::Finish(f)) => finish = Some(f),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    (text, usage, finish, error)
}

#[tokio::test]
async fn every_format_streams_text_usage_and_finish() {
    let server = Server::start().await.expect("server");
    for kind in Kind::ALL {
        let c = client(&server, kind);
        let (text, usage, finish, error) = run(&c, "echo").await;
        assert_eq!(error, None, "{kind:?}");
        assert_eq!(text, "You said: ping", "{kind:?}");
        assert_eq!(finish.as_deref(), Some("stop"), "{kind:?}");
        let usage = usage.expect("usage");
        assert_eq!(usage.input_tokens, 17, "{kind:?}");
        assert_eq!(usage.output_tokens, 3, "{kind:?}");
    }
}

#[tokio::test]
async fn broken_streams_end_in_clear_errors() {
    let server = Server::start().await.expect("server");
    for kind in Kind::ALL {
        let c = client(&server, kind);
        let (text, _, _, error) = run(&c, "cut").await;
        assert_eq!(text, "The first words of an answer", "{kind:?}");
        assert_eq!(error, Some(LlmError::Truncated), "{kind:?}");

        let (text, _, _, error) = run(&c, "error-mid").await;
        assert_eq!(text, "The first words of an answer", "{kind:?}");
        let error = error.expect("an error");
        assert_eq!(error.code(), "provider_bad_response", "{kind:?}");
        assert!(error.to_string().contains("the model crashed"), "{error}");

        let (_, _, _, error) = run(&c, "garbage").await;
        assert_eq!(error.map(|e| e.code()), Some("provider_bad_response"));

        let started = std::time::Instant::now();
        let (text, _, _, error) = run(&c, "stall").await;
        assert_eq!(text, "The first words of an answer", "{kind:?}");
        assert_eq!(error, Some(LlmError::Timeout(Duration::from_millis(500))));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

#[tokio::test]
async fn only_calls_that_generated_nothing_are_retried() {
    let server = Server::start().await.expect("server");
    let c = client(&server, Kind::OpenAi);

    let (_, _, _, error) = run(&c, "fail-401").await;
    assert_eq!(
        error,
        Some(LlmError::Status {
            status: 401,
            message: "scripted failure".into()
        })
    );
    assert_eq!(
        server.stats.calls.load(Ordering::SeqCst),
        1,
        "a 401 is not retried"
    );

    let (text, _, _, error) = run(&c, "flaky").await;
    assert_eq!(error, None);
    assert_eq!(text, "You said: ping");
    assert_eq!(
        server.stats.calls.load(Ordering::SeqCst),
        3,
        "one 503, then success"
    );

    let before = server.stats.calls.load(Ordering::SeqCst);
    let (_, _, _, error) = run(&c, "fail-503").await;
    assert_eq!(error.map(|e| e.code()), Some("provider_error"));
    assert_eq!(
        server.stats.calls.load(Ordering::SeqCst) - before,
        3,
        "1 + 2 retries"
    );

    let (_, _, _, error) = run(&c, "fail-429").await;
    assert_eq!(error.map(|e| e.code()), Some("provider_rate_limited"));
}

#[tokio::test]
async fn dropping_the_stream_stops_the_upstream() {
    let server = Server::start().await.expect("server");
    let c = client(&server, Kind::OpenAi);
    let mut stream = c.stream(&request("slow-20-1000")).await.expect("stream");
    for _ in 0..3 {
        assert!(matches!(stream.next().await, Some(Ok(Event::Token(_)))));
    }
    drop(stream);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.stats.abandoned.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never saw the client go"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.stats.open.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_unreachable_provider_says_so() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let c = Client::new(
        Kind::OpenAi,
        &format!("http://127.0.0.1:{port}/v1"),
        None,
        Timeouts::default(),
        1,
    )
    .expect("client");
    let (_, _, _, error) = run(&c, "any").await;
    assert_eq!(error.map(|e| e.code()), Some("provider_unreachable"));
}

#[tokio::test]
async fn the_model_list_is_read() {
    let server = Server::start().await.expect("server");
    let names = client(&server, Kind::OpenAi)
        .models()
        .await
        .expect("models");
    assert!(names.contains(&"echo".to_owned()));
}

/// A real llama.cpp server (started by `scripts/services.sh`).
#[tokio::test]
async fn a_real_llama_cpp_server_streams() {
    let Ok(url) = std::env::var("CAIRN_TEST_LLM_URL") else {
        assert!(
            std::env::var("CAIRN_TEST_REQUIRE_LLM").is_err(),
            "CAIRN_TEST_LLM_URL is required"
        );
        eprintln!("skipped: CAIRN_TEST_LLM_URL is not set");
        return;
    };
    let c = Client::new(Kind::OpenAi, &url, None, Timeouts::default(), 1).expect("client");
    assert!(c
        .models()
        .await
        .expect("models")
        .contains(&"smollm2-135m".to_owned()));
    let mut req = request("smollm2-135m");
    req.messages[1].content = "Name a colour.".into();
    req.max_tokens = 16;
    let mut stream = c.stream(&req).await.expect("stream");
    let (mut tokens, mut usage, mut finish) = (0, None, None);
    while let Some(item) = stream.next().await {
        match item.expect("event") {
            Event::Token(_) => tokens += 1,
            Event::Usage(u) => usage = Some(u),
            Event::Finish(f) => finish = Some(f),
        }
    }
    assert!(tokens > 0);
    let usage = usage.expect("llama.cpp reports usage");
    assert!(
        usage.input_tokens > 5 && usage.output_tokens > 0,
        "{usage:?}"
    );
    assert!(matches!(finish.as_deref(), Some("stop" | "length")));
}
