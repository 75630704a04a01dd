//! The OpenAI-compatible API driven by the official `openai` Python SDK, unmodified
//! (`tests/sdk/openai_sdk.py`, run with `CAIRN_TEST_PYTHON`, which `scripts/services.sh`
//! provides with the SDK installed): models with a virtual model per collection, completions
//! streamed and not, embeddings, errors, and a real llama.cpp model when the suite has one.

use reqwest::Method;
use serde_json::{json, Value};

use crate::chat::add_model;
use crate::documents::{new_collection, settled, upload};
use crate::helpers::*;
use crate::search::model_dir;

fn python() -> Option<String> {
    crate::helpers::peer_var("CAIRN_TEST_PYTHON", "CAIRN_TEST_REQUIRE_LLM")
}

async fn the_official_sdk_works_unmodified(backend: Backend) {
    let Some(python) = python() else {
        return;
    };
    let mut builder = TestApp::builder(backend);
    let embedding = model_dir();
    if let Some(dir) = &embedding {
        builder = builder
            .set("embeddings.provider", "local")
            .set("embeddings.model_dir", dir);
    }
    let app = builder.spawn().await;
    let owner = app.create_owner().await;
    let c = new_collection(&app, &owner, "Team Handbook").await;
    let text = "# Relay\n\nThe relay restarts with the red switch behind the north cabinet.\n";
    let resp = upload(&app, &owner, &c, "relay.md", text.as_bytes().to_vec()).await;
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(settled(&app, &owner, &id).await["status"], "ready");
    let llm = std::env::var("CAIRN_TEST_LLM_URL").ok();
    if let Some(url) = &llm {
        add_model(&app, &owner, "openai", url, &[("smol", "smollm2-135m")]).await;
    }
    // A key with only the `chat` scope.
    let key = app.api_key(&owner, &["chat"]).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_sdk.py");
    let output = tokio::process::Command::new(&python)
        .arg(script)
        .arg(app.url("/v1"))
        .arg(&key)
        .arg("cairn:team-handbook")
        .arg(if embedding.is_some() {
            "all-MiniLM-L6-v2"
        } else {
            ""
        })
        .arg(if llm.is_some() { "smol" } else { "" })
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the SDK script failed:\n{stderr}");
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();
    eprintln!("openai SDK {}", out["sdk_version"]);

    let models = out["models"].as_array().unwrap();
    assert!(models.contains(&json!("extractive")));
    assert!(models.contains(&json!("cairn:team-handbook")), "{models:?}");

    let c = &out["completion"];
    assert_eq!(c["object"], "chat.completion");
    assert_eq!(c["model"], "cairn:team-handbook");
    assert_eq!(c["role"], "assistant");
    assert_eq!(c["finish_reason"], "stop");
    let content = c["content"].as_str().unwrap();
    assert!(
        content.contains("red switch") && content.contains("[1]"),
        "{content}"
    );
    assert!(c["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(c["cairn"]["citations"][0]["valid"], true);
    assert_eq!(c["cairn"]["sources"][0]["filename"], "relay.md");

    let s = &out["stream"];
    assert_eq!(
        s["content"], c["content"],
        "streamed and whole answers agree"
    );
    assert_eq!(s["finish_reason"], "stop");
    assert!(s["chunks"].as_u64().unwrap() > 3);
    assert_eq!(
        s["usage"]["completion_tokens"],
        c["usage"]["completion_tokens"]
    );

    assert_eq!(out["unknown_model"]["status"], 422);
    assert_eq!(out["bad_key"]["status"], 401);

    if embedding.is_some() {
        let e = &out["embeddings"];
        assert_eq!(e["count"], 2);
        assert_eq!(e["dimensions"], 384);
        let cos = e["cosine"].as_f64().unwrap();
        assert!((cos - 0.7553).abs() < 0.001, "{cos}");
        assert!(e["float_matches_base64"].as_f64().unwrap() < 1e-6);
        assert!(e["usage"]["prompt_tokens"].as_u64().unwrap() > 10);
    }
    if llm.is_some() {
        let r = &out["real_model"];
        assert!(!r["content"].as_str().unwrap().is_empty());
        assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() > 5);
    }

    // The same key cannot manage anything else.
    let resp = app
        .client
        .post(app.url("/api/collections"))
        .bearer_auth(&key)
        .json(&json!({ "name": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // And a session cannot be used without signing in, of course; the key's usage is counted.
    let usage: Value = app
        .call(Method::GET, "/api/usage", &owner, None)
        .await
        .json()
        .await
        .unwrap();
    assert!(usage["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["key"] == "extractive"));
}

on_both_backends!(the_official_sdk_works_unmodified);
