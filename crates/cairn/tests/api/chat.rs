//! Answers: conversations (private to their owner), grounded answers streamed over SSE with
//! sources, citations and usage, from the built-in extractive model, a real llama.cpp server
//! (`CAIRN_TEST_LLM_URL`) and a scripted provider for what a real model cannot be made to do;
//! budgets (402, no overspending under concurrency), stream caps, client disconnects.

use std::time::Duration;

use cairn_llm::scripted;
use reqwest::Method;
use serde_json::{json, Value};

use crate::documents::{new_collection, settled, upload};
use crate::helpers::*;

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub event: String,
    pub data: Value,
}

pub fn parse_sse(text: &str) -> Vec<Sse> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut event = String::from("message");
        let mut data = String::new();
        for line in block.lines() {
            if let Some(e) = line.strip_prefix("event:") {
                event = e.trim().to_owned();
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
            }
        }
        if !data.is_empty() {
            let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
            out.push(Sse { event, data });
        }
    }
    out
}

/// What an answer stream said.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub events: Vec<Sse>,
    pub text: String,
}

impl Answer {
    pub fn last(&self) -> &Sse {
        self.events.last().expect("at least one event")
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.events
            .iter()
            .find(|e| e.event == name)
            .map(|e| &e.data)
    }
}

pub async fn ask(app: &TestApp, s: &Session, conversation: &str, body: Value) -> Answer {
    let resp = app
        .call(
            Method::POST,
            &format!("/api/conversations/{conversation}/messages"),
            s,
            Some(body),
        )
        .await;
    let status = resp.status().as_u16();
    let is_sse = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    let body = resp.text().await.unwrap();
    if !is_sse {
        return Answer {
            status,
            events: vec![Sse {
                event: "http_error".into(),
                data: serde_json::from_str(&body).unwrap_or(Value::Null),
            }],
            text: String::new(),
        };
    }
    let events = parse_sse(&body);
    let text = events
        .iter()
        .filter(|e| e.event == "token")
        .map(|e| e.data["text"].as_str().unwrap().to_owned())
        .collect();
    Answer {
        status,
        events,
        text,
    }
}

pub async fn conversation(app: &TestApp, s: &Session, body: Value) -> String {
    let resp = app
        .call(Method::POST, "/api/conversations", s, Some(body))
        .await;
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let c: Value = resp.json().await.unwrap();
    c["id"].as_str().unwrap().to_owned()
}

const HANDBOOK: &str = "# Operations handbook\n\n## Restarting the relay\n\n\
The relay restarts with the red switch behind the north cabinet. Hold it for five seconds \
until the amber light blinks twice.\n\n## Parking\n\nVisitors park behind the depot, next to \
the loading bay.\n";

async fn handbook(app: &TestApp, s: &Session) -> String {
    let c = new_collection(app, s, "Handbook").await;
    let resp = upload(app, s, &c, "handbook.md", HANDBOOK.as_bytes().to_vec()).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(settled(app, s, &id).await["status"], "ready");
    c
}

async fn extractive_answers_cite_their_sources(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.create_owner().await;
    let c = handbook(&app, &owner).await;

    // The built-in models are offered, extractive by default.
    let models: Value = app
        .get_as("/api/models", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(models["default"], "extractive");
    let ids: Vec<&str> = models["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["extractive", "mock"], "development mode offers mock");

    let conv = conversation(&app, &owner, json!({ "title": "Relay" })).await;
    let a = ask(
        &app,
        &owner,
        &conv,
        json!({ "content": "How do I restart the relay?" }),
    )
    .await;
    assert_eq!(a.status, 200);
    let names: Vec<&str> = a.events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.first(), Some(&"sources"), "{names:?}");
    assert_eq!(&names[names.len() - 2..], ["usage", "done"], "{names:?}");
    let sources = a.get("sources").unwrap()["sources"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!sources.is_empty());
    assert_eq!(sources[0]["n"], 1);
    assert_eq!(sources[0]["collection_id"], c.as_str());
    assert_eq!(
        sources[0]["location"]["heading_path"][0],
        "Operations handbook"
    );
    assert!(
        a.text.contains("red switch behind the north cabinet"),
        "{}",
        a.text
    );
    assert!(a.text.contains("[1]"), "{}", a.text);
    let done = a.get("done").unwrap();
    assert_eq!(done["status"], "complete");
    assert_eq!(done["nothing_found"], false);
    assert_eq!(done["citations"][0]["valid"], true);
    assert_eq!(
        done["citations"][0]["document_id"],
        sources[0]["document_id"]
    );
    assert_eq!(done["invalid_citations"], json!([]));
    let usage = a.get("usage").unwrap();
    assert_eq!(usage["cost_micros"], 0);
    assert_eq!(usage["estimated"], true);
    assert!(usage["output_tokens"].as_u64().unwrap() > 5);

    // Nothing relevant: the answer says so instead of inventing one.
    let a = ask(
        &app,
        &owner,
        &conv,
        json!({ "content": "zebra quasar marmalade" }),
    )
    .await;
    let done = a.get("done").unwrap();
    assert_eq!(done["nothing_found"], true, "{:?}", a.events);
    assert!(
        a.text.starts_with("I could not find anything"),
        "{}",
        a.text
    );
    assert_eq!(a.get("sources").unwrap()["sources"], json!([]));

    // Both turns are stored with the model, usage, sources and citations.
    let msgs: Value = app
        .get_as(&format!("/api/conversations/{conv}/messages"), &owner)
        .await
        .json()
        .await
        .unwrap();
    let items = msgs["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[0]["role"], "user");
    assert_eq!(items[1]["role"], "assistant");
    assert_eq!(items[1]["model"], "extractive");
    assert_eq!(items[1]["status"], "complete");
    assert_eq!(items[1]["tokens_estimated"], true);
    assert!(items[1]["latency_ms"].is_number());
    assert_eq!(items[1]["citations"][0]["n"], 1);
    assert_eq!(items[1]["sources"][0]["chunk_id"], sources[0]["chunk_id"]);
    // Newest first, a page at a time, for opening a long conversation at its end.
    let newest: Value = app
        .get_as(
            &format!("/api/conversations/{conv}/messages?order=desc&limit=3"),
            &owner,
        )
        .await
        .json()
        .await
        .unwrap();
    let page = newest["items"].as_array().unwrap();
    assert_eq!(page.len(), 3);
    assert_eq!(page[0]["id"], items[3]["id"]);
    assert_eq!(page[2]["id"], items[1]["id"]);
    let cursor = newest["next_cursor"].as_str().unwrap();
    let older: Value = app
        .get_as(
            &format!("/api/conversations/{conv}/messages?order=desc&limit=3&cursor={cursor}"),
            &owner,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(older["items"].as_array().unwrap().len(), 1);
    assert_eq!(older["items"][0]["id"], items[0]["id"]);
    let e = error_body(
        app.get_as(
            &format!("/api/conversations/{conv}/messages?order=up"),
            &owner,
        )
        .await,
        400,
    )
    .await;
    assert_eq!(e["code"], "invalid_query");

    // Exports.
    let md = app
        .get_as(
            &format!("/api/conversations/{conv}/export?format=markdown"),
            &owner,
        )
        .await;
    assert_eq!(md.status(), 200);
    assert!(md.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("Relay.md"));
    let md = md.text().await.unwrap();
    assert!(md.starts_with("# Relay\n"), "{md}");
    assert!(md.contains("## You —") && md.contains("## Cairn —"));
    assert!(
        md.contains("1. handbook.md") || md.contains("1. Operations handbook"),
        "{md}"
    );
    let js: Value = app
        .get_as(
            &format!("/api/conversations/{conv}/export?format=json"),
            &owner,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(js["messages"].as_array().unwrap().len(), 4);
    let bad = app
        .get_as(
            &format!("/api/conversations/{conv}/export?format=pdf"),
            &owner,
        )
        .await;
    assert_eq!(error_body(bad, 422).await["code"], "invalid_fields");

    // A conversation without documents (`collections: []`) with the mock model.
    let plain = conversation(&app, &owner, json!({ "model": "mock", "collections": [] })).await;
    let a = ask(&app, &owner, &plain, json!({ "content": "Hello there" })).await;
    assert!(a.text.contains("demonstration answer"), "{}", a.text);
    assert_eq!(a.get("done").unwrap()["nothing_found"], false);
}

async fn conversations_are_private(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.create_owner().await;
    let bob = app.user_with("bob@example.com", "member", "active").await;
    let conv = conversation(&app, &owner, json!({})).await;
    let a = ask(&app, &owner, &conv, json!({ "content": "anything" })).await;
    assert_eq!(a.status, 200);

    for (method, path, body) in [
        (Method::GET, format!("/api/conversations/{conv}"), None),
        (
            Method::PATCH,
            format!("/api/conversations/{conv}"),
            Some(json!({ "title": "mine now" })),
        ),
        (
            Method::GET,
            format!("/api/conversations/{conv}/messages"),
            None,
        ),
        (
            Method::POST,
            format!("/api/conversations/{conv}/messages"),
            Some(json!({ "content": "continue it" })),
        ),
        (
            Method::GET,
            format!("/api/conversations/{conv}/export"),
            None,
        ),
        (Method::DELETE, format!("/api/conversations/{conv}"), None),
    ] {
        let resp = app.call(method.clone(), &path, &bob, body).await;
        assert_eq!(
            error_body(resp, 404).await["code"],
            "not_found",
            "{method} {path}"
        );
    }
    let list: Value = app
        .get_as("/api/conversations", &bob)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"], json!([]));
    // Still there, untouched, for its owner.
    let msgs: Value = app
        .get_as(&format!("/api/conversations/{conv}/messages"), &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(msgs["items"].as_array().unwrap().len(), 2);

    // A collection the caller cannot read cannot be named.
    let hidden = new_collection(&app, &owner, "Secret").await;
    let resp = app
        .call(
            Method::POST,
            "/api/conversations",
            &bob,
            Some(json!({ "collections": [hidden] })),
        )
        .await;
    assert_eq!(error_body(resp, 404).await["code"], "collection_not_found");

    // Rename, paging, delete.
    let resp = app
        .call(
            Method::PATCH,
            &format!("/api/conversations/{conv}"),
            &owner,
            Some(json!({ "title": "Renamed", "collections": null })),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["title"], "Renamed");
    for _ in 0..2 {
        conversation(&app, &owner, json!({})).await;
    }
    let page: Value = app
        .get_as("/api/conversations?limit=2", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let next = page["next_cursor"].as_str().unwrap();
    let rest: Value = app
        .get_as(&format!("/api/conversations?limit=2&cursor={next}"), &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rest["items"][0]["id"], conv.as_str());
    let resp = app
        .call(
            Method::DELETE,
            &format!("/api/conversations/{conv}"),
            &owner,
            None,
        )
        .await;
    assert_eq!(resp.status(), 204);
    let resp = app
        .get_as(&format!("/api/conversations/{conv}"), &owner)
        .await;
    assert_eq!(resp.status(), 404);
}

async fn bad_questions_get_clear_errors(backend: Backend) {
    let app = TestApp::builder(backend)
        .set("chat.max_message_chars", "100")
        .spawn()
        .await;
    let owner = app.create_owner().await;
    let conv = conversation(&app, &owner, json!({})).await;
    for (body, status, code) in [
        (json!({ "content": "   " }), 422, "message_empty"),
        (
            json!({ "content": "x".repeat(101) }),
            422,
            "message_too_long",
        ),
        (
            json!({ "content": "hi", "model": "gpt-99" }),
            422,
            "unknown_model",
        ),
        (
            json!({ "content": "hi", "max_tokens": 0 }),
            422,
            "invalid_fields",
        ),
        (
            json!({ "content": "hi", "temperature": 9 }),
            422,
            "invalid_fields",
        ),
        (json!({ "content": "hi", "extra": 1 }), 400, "unknown_field"),
        (json!({ "text": "hi" }), 400, "unknown_field"),
    ] {
        let a = ask(&app, &owner, &conv, body.clone()).await;
        assert_eq!(a.status, status, "{body}");
        assert_eq!(a.events[0].data["error"]["code"], code, "{body}");
    }
    // Nothing was stored for them.
    let msgs: Value = app
        .get_as(&format!("/api/conversations/{conv}/messages"), &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(msgs["items"], json!([]));
    let resp = app
        .call(
            Method::POST,
            "/api/conversations",
            &owner,
            Some(json!({ "model": "nope" })),
        )
        .await;
    assert_eq!(error_body(resp, 422).await["code"], "unknown_model");
}

/// Admin set-up of a provider and a model named like the upstream one.
pub async fn add_model(
    app: &TestApp,
    admin: &Session,
    kind: &str,
    base_url: &str,
    models: &[(&str, &str)],
) -> String {
    let resp = app
        .call(
            Method::POST,
            "/api/admin/providers",
            admin,
            Some(
                json!({ "name": format!("{kind} test"), "kind": kind, "base_url": base_url,
                         "api_key": "sk-secret-value" }),
            ),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let p: Value = resp.json().await.unwrap();
    assert_eq!(p["has_api_key"], true);
    assert!(
        p.get("api_key").is_none() && p.get("sealed_api_key").is_none(),
        "{p}"
    );
    let pid = p["id"].as_str().unwrap().to_owned();
    for (name, upstream) in models {
        let resp = app
            .call(
                Method::POST,
                "/api/admin/models",
                admin,
                Some(
                    json!({ "name": name, "provider_id": pid, "upstream_model": upstream,
                             "context_tokens": 2048, "max_output_tokens": 256 }),
                ),
            )
            .await;
        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    }
    pid
}

async fn a_real_model_answers_with_usage_and_cost(backend: Backend) {
    let Some(url) = crate::helpers::peer_var("CAIRN_TEST_LLM_URL", "CAIRN_TEST_REQUIRE_LLM") else {
        return;
    };
    let app = TestApp::spawn(backend).await;
    let owner = app.create_owner().await;
    handbook(&app, &owner).await;
    let pid = add_model(&app, &owner, "openai", &url, &[("smol", "smollm2-135m")]).await;
    let check = app
        .call(
            Method::POST,
            &format!("/api/admin/providers/{pid}/check"),
            &owner,
            None,
        )
        .await;
    let check: Value = check.json().await.unwrap();
    assert_eq!(check["ok"], true, "{check}");
    assert!(check["models"]
        .as_array()
        .unwrap()
        .contains(&json!("smollm2-135m")));
    // $1 per million in, $2 per million out.
    let resp = app
        .call(
            Method::PUT,
            "/api/admin/prices/smol",
            &owner,
            Some(json!({ "input_micros": 1_000_000, "output_micros": 2_000_000 })),
        )
        .await;
    assert_eq!(resp.status(), 200);

    let conv = conversation(&app, &owner, json!({ "model": "smol" })).await;
    let a = ask(
        &app,
        &owner,
        &conv,
        json!({ "content": "How do I restart the relay?", "max_tokens": 40 }),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.last().event, "done", "{:?}", a.events);
    assert!(!a.text.is_empty());
    let usage = a.get("usage").unwrap();
    assert_eq!(
        usage["estimated"], false,
        "llama.cpp reports usage: {usage}"
    );
    let (i, o) = (
        usage["input_tokens"].as_i64().unwrap(),
        usage["output_tokens"].as_i64().unwrap(),
    );
    assert!(i > 50, "the prompt holds the sources: {i}");
    assert!(o > 0 && o <= 40);
    assert_eq!(usage["cost_micros"], i + 2 * o);
    // The system prompt carried the numbered source.
    let msgs: Value = app
        .get_as(&format!("/api/conversations/{conv}/messages"), &owner)
        .await
        .json()
        .await
        .unwrap();
    let answer = &msgs["items"][1];
    assert_eq!(answer["model"], "smol");
    assert_eq!(answer["cost_micros"], i + 2 * o);
    assert!(answer["first_token_ms"].is_number());

    // Usage shows up for the user and the admin.
    let mine: Value = app.get_as("/api/usage", &owner).await.json().await.unwrap();
    assert_eq!(mine["budget"]["spent_micros"], i + 2 * o);
    assert_eq!(mine["by_model"][0]["key"], "smol");
    let report: Value = app
        .get_as("/api/admin/usage?group_by=model", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["items"][0]["key"], "smol");
    assert_eq!(report["items"][0]["cost_micros"], i + 2 * o);
    // Over time: one row per UTC day with usage, for charts.
    let daily: Value = app
        .get_as("/api/admin/usage?group_by=day", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(daily["group_by"], "day");
    let days = daily["items"].as_array().unwrap();
    assert!(days[0]["key"].as_str().unwrap().len() == 10, "{daily}");
    let total: i64 = days
        .iter()
        .map(|d| d["cost_micros"].as_i64().unwrap())
        .sum();
    assert_eq!(total, i + 2 * o);
}

async fn broken_providers_fail_cleanly(backend: Backend) {
    let server = scripted::Server::start().await.unwrap();
    let app = TestApp::builder(backend)
        .set("chat.idle_timeout_secs", "1")
        .set("chat.max_answer_chars", "2000")
        .spawn()
        .await;
    let owner = app.create_owner().await;
    handbook(&app, &owner).await;
    let names = [
        "cut",
        "error-mid",
        "garbage",
        "stall",
        "fail-500",
        "fail-401",
        "no-usage",
        "wrong-usage",
        "huge",
        "cite",
        "echo",
    ];
    let pairs: Vec<(&str, &str)> = names.iter().map(|n| (*n, *n)).collect();
    add_model(&app, &owner, "openai", &server.openai_url(), &pairs).await;
    for model in ["cut", "stall", "fail-500"] {
        let resp = app
            .call(
                Method::PUT,
                &format!("/api/admin/prices/{model}"),
                &owner,
                Some(json!({ "input_micros": 1_000_000, "output_micros": 1_000_000 })),
            )
            .await;
        assert_eq!(resp.status(), 200);
    }
    let conv = conversation(&app, &owner, json!({})).await;
    let q = |model: &str| json!({ "content": "How do I restart the relay?", "model": model });

    // Cut short after some text: the partial answer is kept, marked incomplete.
    for (model, code) in [
        ("cut", "provider_stream_cut"),
        ("error-mid", "provider_bad_response"),
        ("garbage", "provider_bad_response"),
        ("stall", "provider_timeout"),
    ] {
        let a = ask(&app, &owner, &conv, q(model)).await;
        assert_eq!(a.status, 200);
        let last = a.last();
        assert_eq!(last.event, "error", "{model}: {:?}", a.events);
        assert_eq!(last.data["code"], code, "{model}");
        assert_eq!(last.data["partial"], true, "{model}");
        assert_eq!(a.text, "The first words of an answer", "{model}");
        let usage = a.get("usage").unwrap();
        assert_eq!(usage["estimated"], true, "{model}");
        let id = last.data["message_id"].as_str().unwrap();
        let msgs: Value = app
            .get_as(&format!("/api/conversations/{conv}/messages"), &owner)
            .await
            .json()
            .await
            .unwrap();
        let stored = msgs["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap()
            .clone();
        assert_eq!(stored["status"], "incomplete", "{model}");
        assert_eq!(stored["error_code"], code, "{model}");
        assert_eq!(stored["content"], "The first words of an answer");
    }

    // Refused before any text: failed, with the provider's status mapped to a code.
    for (model, code) in [
        ("fail-500", "provider_error"),
        ("fail-401", "provider_auth_failed"),
    ] {
        let a = ask(&app, &owner, &conv, q(model)).await;
        let last = a.last();
        assert_eq!(last.event, "error", "{model}");
        assert_eq!(last.data["code"], code);
        assert_eq!(last.data["partial"], false);
        // The provider's own words stay in the server log.
        assert!(!last.data["message"]
            .as_str()
            .unwrap()
            .contains("scripted failure"));
    }

    // Usage missing or implausible: estimated with the tokenizer, and marked so.
    for model in ["no-usage", "wrong-usage"] {
        let a = ask(&app, &owner, &conv, q(model)).await;
        assert_eq!(a.last().event, "done", "{model}");
        let usage = a.get("usage").unwrap();
        assert_eq!(usage["estimated"], true, "{model}");
        assert!(
            usage["input_tokens"].as_u64().unwrap() > 50,
            "{model}: {usage}"
        );
        assert!(
            usage["output_tokens"].as_u64().unwrap() > 3,
            "{model}: {usage}"
        );
    }

    // A provider that will not stop is cut at `chat.max_answer_chars`.
    let a = ask(&app, &owner, &conv, q("huge")).await;
    let done = a.get("done").unwrap();
    assert_eq!(done["status"], "incomplete");
    assert_eq!(done["finish_reason"], "length");
    assert!(a.text.len() <= 2000);

    // A citation of a source that was not given is flagged.
    let a = ask(&app, &owner, &conv, q("cite")).await;
    let done = a.get("done").unwrap();
    assert_eq!(done["invalid_citations"], json!([9]));
    assert_eq!(done["citations"][0]["valid"], true);
    assert_eq!(
        done["citations"][1],
        json!({ "n": 9, "valid": false, "chunk_id": null,
        "document_id": null, "title": null, "location": null })
    );

    // The history goes with the next question.
    let a = ask(&app, &owner, &conv, q("echo")).await;
    assert_eq!(a.text, "You said: How do I restart the relay?");

    // Failed calls settle what they used: nothing stays reserved, a refused call costs nothing.
    let mine: Value = app.get_as("/api/usage", &owner).await.json().await.unwrap();
    assert_eq!(mine["budget"]["reserved_micros"], 0, "{mine}");
    let by_model = mine["by_model"].as_array().unwrap();
    let cost = |m: &str| {
        by_model
            .iter()
            .find(|g| g["key"] == m)
            .map(|g| g["cost_micros"].as_i64().unwrap())
    };
    assert!(cost("cut").unwrap() > 0 && cost("stall").unwrap() > 0);
    assert_eq!(cost("fail-500"), Some(0));

    // A provider that is down.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    let resp = app
        .call(
            Method::POST,
            "/api/admin/providers",
            &owner,
            Some(json!({ "name": "down", "kind": "openai", "base_url": dead })),
        )
        .await;
    let pid = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = app
        .call(
            Method::POST,
            "/api/admin/models",
            &owner,
            Some(json!({ "name": "gone", "provider_id": pid })),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let a = ask(&app, &owner, &conv, q("gone")).await;
    assert_eq!(a.last().data["code"], "provider_unreachable");
    let check = app
        .call(
            Method::POST,
            &format!("/api/admin/providers/{pid}/check"),
            &owner,
            None,
        )
        .await;
    assert_eq!(error_body(check, 502).await["code"], "provider_unreachable");
}

async fn other_formats_stream_too(backend: Backend) {
    let server = scripted::Server::start().await.unwrap();
    let app = TestApp::spawn(backend).await;
    let owner = app.create_owner().await;
    handbook(&app, &owner).await;
    let resp = app
        .call(
            Method::POST,
            "/api/admin/providers",
            &owner,
            Some(json!({ "name": "claude", "kind": "anthropic", "base_url": server.base_url() })),
        )
        .await;
    let anthropic = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = app
        .call(
            Method::POST,
            "/api/admin/providers",
            &owner,
            Some(json!({ "name": "gemini", "kind": "gemini", "base_url": server.base_url() })),
        )
        .await;
    let gemini = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (name, pid) in [("claude-cite", &anthropic), ("gemini-cite", &gemini)] {
        let resp = app
            .call(
                Method::POST,
                "/api/admin/models",
                &owner,
                Some(json!({ "name": name, "provider_id": pid, "upstream_model": "cite" })),
            )
            .await;
        assert_eq!(resp.status(), 201);
        let conv = conversation(&app, &owner, json!({ "model": name })).await;
        let a = ask(
            &app,
            &owner,
            &conv,
            json!({ "content": "How do I restart the relay?" }),
        )
        .await;
        assert_eq!(
            a.text, "Restart it with the switch [1]. See also [9].",
            "{name}"
        );
        let usage = a.get("usage").unwrap();
        assert_eq!(usage["estimated"], false, "{name}");
        assert_eq!(usage["input_tokens"], 120, "{name}");
        assert_eq!(a.get("done").unwrap()["invalid_citations"], json!([9]));
    }
}

async fn disconnecting_stops_the_provider(backend: Backend) {
    let server = scripted::Server::start().await.unwrap();
    let app = TestApp::spawn(backend).await;
    let owner = app.create_owner().await;
    add_model(
        &app,
        &owner,
        "openai",
        &server.openai_url(),
        &[("slow", "slow-30-1000")],
    )
    .await;
    let conv = conversation(&app, &owner, json!({ "model": "slow", "collections": [] })).await;
    let mut resp = app
        .call(
            Method::POST,
            &format!("/api/conversations/{conv}/messages"),
            &owner,
            Some(json!({ "content": "Count slowly." })),
        )
        .await;
    let mut seen = String::new();
    while !seen.contains("event: token\ndata: {\"text\":\" t2\"}") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(resp);
    let stats = &server.stats;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stats.abandoned.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream call went on"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The partial answer is stored as cut short.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msgs: Value = app
            .get_as(&format!("/api/conversations/{conv}/messages"), &owner)
            .await
            .json()
            .await
            .unwrap();
        if let Some(m) = msgs["items"].as_array().unwrap().get(1) {
            assert_eq!(m["status"], "incomplete");
            assert!(m["content"].as_str().unwrap().starts_with(" t0 t1 t2"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no answer stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.state.chat.streaming(),
        0,
        "the stream slot was released"
    );
}

async fn stream_caps_answer_with_an_error_event(backend: Backend) {
    let server = scripted::Server::start().await.unwrap();
    let app = TestApp::builder(backend)
        .set("chat.max_streams_per_user", "1")
        .spawn()
        .await;
    let owner = app.create_owner().await;
    add_model(
        &app,
        &owner,
        "openai",
        &server.openai_url(),
        &[("slow", "slow-20-100")],
    )
    .await;
    let conv = conversation(&app, &owner, json!({ "model": "slow", "collections": [] })).await;
    let mut first = app
        .call(
            Method::POST,
            &format!("/api/conversations/{conv}/messages"),
            &owner,
            Some(json!({ "content": "one" })),
        )
        .await;
    let _ = first.chunk().await.unwrap();
    let second = ask(&app, &owner, &conv, json!({ "content": "two" })).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.events.len(), 1);
    assert_eq!(second.last().event, "error");
    assert_eq!(second.last().data["code"], "too_many_streams");
    assert_eq!(second.last().data["details"]["scope"], "user");
    // Another user is not affected.
    let bob = app.user_with("bob@example.com", "member", "active").await;
    let bconv = conversation(&app, &bob, json!({ "collections": [] })).await;
    let b = ask(
        &app,
        &bob,
        &bconv,
        json!({ "content": "hello", "model": "mock" }),
    )
    .await;
    assert_eq!(b.last().event, "done");
    let rest = first.text().await.unwrap();
    assert!(rest.contains("event: done"));
}

async fn budgets_refuse_with_402_and_are_never_overspent(backend: Backend) {
    let server = scripted::Server::start().await.unwrap();
    let app = TestApp::builder(backend)
        .set("chat.max_streams_per_user", "10")
        .spawn()
        .await;
    let owner = app.create_owner().await;
    let bob = app.user_with("bob@example.com", "member", "active").await;
    let bob_id: Value = app.get_as("/api/me", &bob).await.json().await.unwrap();
    let bob_id = bob_id["id"].as_str().unwrap().to_owned();
    add_model(
        &app,
        &owner,
        "openai",
        &server.openai_url(),
        &[("paid", "slow-300-8")],
    )
    .await;
    // 1 unit per token, in and out: a question reserves its prompt plus 256 output tokens.
    let resp = app
        .call(
            Method::PUT,
            "/api/admin/prices/paid",
            &owner,
            Some(json!({ "input_micros": 1_000_000_000_000i64, "output_micros": 1_000_000_000_000i64 })),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let conv = conversation(&app, &bob, json!({ "model": "paid", "collections": [] })).await;
    let one = ask(&app, &bob, &conv, json!({ "content": "hi" })).await;
    let cost = one.get("usage").unwrap()["cost_micros"].as_i64().unwrap();
    assert!(cost > 0);

    // A budget that fits two reservations (of at most ~300 tokens × 10^6 each).
    let reserve = 1_000_000 * 300i64;
    let limit = cost + 2 * reserve + reserve / 2;
    let resp = app
        .call(
            Method::PUT,
            &format!("/api/admin/budgets/users/{bob_id}"),
            &owner,
            Some(json!({ "monthly_limit_micros": limit })),
        )
        .await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());

    // Five at once: never more than fit, the rest refused with 402 and what remains.
    let mut tasks = Vec::new();
    for i in 0..5 {
        let client = app.client.clone();
        let url = app.url(&format!("/api/conversations/{conv}/messages"));
        let token = bob.access.clone();
        tasks.push(tokio::spawn(async move {
            let resp = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "content": format!("question {i}") }))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => {
                assert!(body.contains("event: done"), "{body}");
                ok += 1
            }
            402 => {
                refused += 1;
                let e: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(e["error"]["code"], "budget_exceeded");
                assert_eq!(e["error"]["details"]["scope"], "user");
                assert_eq!(e["error"]["details"]["currency"], "USD");
                assert!(e["error"]["details"]["remaining_micros"].is_number());
                assert!(e["error"]["details"]["needed_micros"].is_number());
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let mine: Value = app.get_as("/api/usage", &bob).await.json().await.unwrap();
    assert!(
        ok <= 2,
        "{ok} answers passed a budget that fits two: limit {limit}, cost {cost}, {mine}"
    );
    assert!(ok >= 1 && refused >= 3, "{ok} ok, {refused} refused");
    let mine: Value = app.get_as("/api/usage", &bob).await.json().await.unwrap();
    let b = &mine["budget"];
    assert_eq!(b["reserved_micros"], 0, "everything settled: {b}");
    assert!(b["spent_micros"].as_i64().unwrap() <= limit);
    assert_eq!(b["limit_micros"], limit);

    // The workspace budget applies to everyone; removing it lifts it.
    let resp = app
        .call(
            Method::PUT,
            "/api/admin/budgets/workspace",
            &owner,
            Some(json!({ "monthly_limit_micros": 1 })),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let oconv = conversation(&app, &owner, json!({ "model": "paid", "collections": [] })).await;
    let a = ask(&app, &owner, &oconv, json!({ "content": "hi" })).await;
    assert_eq!(a.status, 402);
    assert_eq!(a.events[0].data["error"]["details"]["scope"], "workspace");
    // Free models still answer.
    let a = ask(
        &app,
        &owner,
        &oconv,
        json!({ "content": "hi", "model": "mock" }),
    )
    .await;
    assert_eq!(a.last().event, "done");
    let budgets: Value = app
        .get_as("/api/admin/budgets", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(budgets["items"].as_array().unwrap().len(), 2);
    let resp = app
        .call(Method::DELETE, "/api/admin/budgets/workspace", &owner, None)
        .await;
    assert_eq!(resp.status(), 204);
    let by_user: Value = app
        .get_as("/api/admin/usage?group_by=user", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert!(by_user["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["key"] == bob_id.as_str()));
}

async fn provider_keys_are_sealed_and_admins_manage_models(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.create_owner().await;
    let member = app.user_with("m@example.com", "member", "active").await;
    let pid = add_model(
        &app,
        &owner,
        "openai",
        "http://127.0.0.1:9/v1",
        &[("staff-only", "x")],
    )
    .await;
    // Never returned, and not stored in the clear.
    let list: Value = app
        .get_as("/api/admin/providers", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert!(!list.to_string().contains("sk-secret-value"));
    let row = app
        .state
        .store
        .provider(pid.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let sealed = row.sealed_api_key.unwrap();
    assert!(!sealed
        .windows(b"sk-secret-value".len())
        .any(|w| w == b"sk-secret-value"));

    // Roles decide who sees and uses a model.
    let list: Value = app
        .get_as("/api/admin/models", &owner)
        .await
        .json()
        .await
        .unwrap();
    let mid = list["items"][0]["id"].as_str().unwrap().to_owned();
    let resp = app
        .call(
            Method::PATCH,
            &format!("/api/admin/models/{mid}"),
            &owner,
            Some(json!({ "roles": ["admin", "owner"] })),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let seen: Value = app
        .get_as("/api/models", &member)
        .await
        .json()
        .await
        .unwrap();
    assert!(!seen.to_string().contains("staff-only"));
    let seen: Value = app
        .get_as("/api/models", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert!(seen.to_string().contains("staff-only"));
    let resp = app
        .call(
            Method::POST,
            "/api/conversations",
            &member,
            Some(json!({ "model": "staff-only" })),
        )
        .await;
    assert_eq!(error_body(resp, 422).await["code"], "unknown_model");

    // Bad admin input.
    for (path, body, code) in [
        (
            "/api/admin/providers",
            json!({ "name": "x", "kind": "cohere" }),
            "invalid_fields",
        ),
        (
            "/api/admin/providers",
            json!({ "name": "x", "kind": "openai", "base_url": "ftp://x" }),
            "invalid_fields",
        ),
        (
            "/api/admin/providers",
            json!({ "name": "openai test", "kind": "openai" }),
            "name_taken",
        ),
        (
            "/api/admin/models",
            json!({ "name": "extractive", "provider_id": pid }),
            "invalid_fields",
        ),
        (
            "/api/admin/models",
            json!({ "name": "m2", "provider_id": pid, "context_tokens": 100,
                    "max_output_tokens": 200 }),
            "invalid_fields",
        ),
        (
            "/api/admin/models",
            json!({ "name": "m3", "provider_id": pid, "roles": ["guest"] }),
            "invalid_fields",
        ),
    ] {
        let resp = app
            .call(Method::POST, path, &owner, Some(body.clone()))
            .await;
        let status = if code == "name_taken" { 409 } else { 422 };
        assert_eq!(error_body(resp, status).await["code"], code, "{body}");
    }
    let resp = app
        .call(
            Method::PUT,
            "/api/admin/prices/staff-only",
            &owner,
            Some(json!({ "input_micros": -1, "output_micros": 0 })),
        )
        .await;
    assert_eq!(error_body(resp, 422).await["code"], "invalid_fields");
    // Changes are audited.
    let audit: Value = app
        .get_as("/api/audit?action=provider.create", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        audit["items"].as_array().map(|a| a.len()),
        Some(1),
        "{audit}"
    );
    assert!(!audit.to_string().contains("sk-secret-value"));
    // A stored key never follows the provider to a new address unless given again.
    let resp = app
        .call(
            Method::PATCH,
            &format!("/api/admin/providers/{pid}"),
            &owner,
            Some(json!({ "base_url": "https://elsewhere.example/v1" })),
        )
        .await;
    assert!(error_body(resp, 422).await["details"]["fields"]["api_key"].is_string());
    let resp = app
        .call(
            Method::PATCH,
            &format!("/api/admin/providers/{pid}"),
            &owner,
            Some(json!({ "base_url": "https://elsewhere.example/v1", "api_key": "" })),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["has_api_key"], false);
    // Built-in models stay free whatever price is set for their names.
    let resp = app
        .call(
            Method::PUT,
            "/api/admin/prices/extractive",
            &owner,
            Some(json!({ "input_micros": 1_000_000_000, "output_micros": 1_000_000_000 })),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let resp = app
        .call(
            Method::PUT,
            "/api/admin/budgets/workspace",
            &owner,
            Some(json!({ "monthly_limit_micros": 0 })),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let conv = conversation(&app, &member, json!({})).await;
    let a = ask(
        &app,
        &member,
        &conv,
        json!({ "content": "anything at all" }),
    )
    .await;
    assert_eq!(a.last().event, "done", "{:?}", a.events);
    assert_eq!(a.get("usage").unwrap()["cost_micros"], 0);
    // Deleting the provider removes its models.
    let resp = app
        .call(
            Method::DELETE,
            &format!("/api/admin/providers/{pid}"),
            &owner,
            None,
        )
        .await;
    assert_eq!(resp.status(), 204);
    let list: Value = app
        .get_as("/api/admin/models", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"], json!([]));
}

async fn whole_answers_outlive_the_request_timeout(backend: Backend) {
    let server = scripted::Server::start().await.unwrap();
    let app = TestApp::builder(backend)
        .set("http.request_timeout_secs", "1")
        .spawn()
        .await;
    let owner = app.create_owner().await;
    add_model(
        &app,
        &owner,
        "openai",
        &server.openai_url(),
        &[("slow", "slow-100-20")],
    )
    .await;
    let key = app.api_key(&owner, &["chat"]).await;
    let resp = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({ "model": "slow", "messages": [{ "role": "user", "content": "count" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        20
    );
    // Other routes keep the request timeout.
    let resp = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({ "model": "slow", "messages": [{ "role": "user", "content": "x".repeat(40_000) }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(resp, 422).await["code"], "message_too_long");
}

async fn heartbeats_keep_quiet_streams_open(backend: Backend) {
    let server = scripted::Server::start().await.unwrap();
    let app = TestApp::builder(backend)
        .set("chat.heartbeat_secs", "1")
        .spawn()
        .await;
    let owner = app.create_owner().await;
    add_model(
        &app,
        &owner,
        "openai",
        &server.openai_url(),
        &[("pause", "slow-1600-2")],
    )
    .await;
    let conv = conversation(&app, &owner, json!({ "model": "pause", "collections": [] })).await;
    let resp = app
        .call(
            Method::POST,
            &format!("/api/conversations/{conv}/messages"),
            &owner,
            Some(json!({ "content": "take your time" })),
        )
        .await;
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    let body = resp.text().await.unwrap();
    assert!(body.contains(": keep-alive\n"), "{body}");
    let events = parse_sse(&body);
    assert_eq!(events.last().unwrap().event, "done");
    assert_eq!(
        events.iter().filter(|e| e.event == "token").count(),
        2,
        "{body}"
    );
}

on_both_backends!(
    whole_answers_outlive_the_request_timeout,
    heartbeats_keep_quiet_streams_open,
    extractive_answers_cite_their_sources,
    conversations_are_private,
    bad_questions_get_clear_errors,
    a_real_model_answers_with_usage_and_cost,
    broken_providers_fail_cleanly,
    other_formats_stream_too,
    disconnecting_stops_the_provider,
    stream_caps_answer_with_an_error_event,
    budgets_refuse_with_402_and_are_never_overspent,
    provider_keys_are_sealed_and_admins_manage_models,
);
