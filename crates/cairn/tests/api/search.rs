//! Finding the evidence: `POST /api/search` in each mode, on both backends, with the local
//! embedding model when the test machine has it (`CAIRN_TEST_MODEL_DIR`): access filtered in
//! the query, filters, snippets, bad input, re-embedding after a model change.

use reqwest::Method;
use serde_json::{json, Value};

use crate::documents::{new_collection as collection, settled, upload};
use crate::helpers::*;

/// The all-MiniLM-L6-v2 directory, or None (tests of the semantic parts then only run keyword
/// checks, unless `CAIRN_TEST_REQUIRE_MODEL` demands the model).
pub fn model_dir() -> Option<String> {
    crate::helpers::peer_var("CAIRN_TEST_MODEL_DIR", "CAIRN_TEST_REQUIRE_MODEL")
}

async fn add(app: &TestApp, s: &Session, c: &str, name: &str, text: &str) -> String {
    let resp = upload(app, s, c, name, text.as_bytes().to_vec()).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = settled(app, s, &id).await;
    assert_eq!(d["status"], "ready", "{d}");
    id
}

async fn search(app: &TestApp, s: &Session, body: Value) -> (u16, Value) {
    let resp = app.call(Method::POST, "/api/search", s, Some(body)).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

const TRAIL: &str =
    "# Trail notes\n\nThe granite cairn marks the northern trail above the valley. \
    Walkers add a stone when they pass.\n\n## Weather\n\nFog rolls in after noon; carry a compass \
    and turn back before the ridge.\n";
const KITCHEN: &str = "# Kitchen rota\n\nThe dishwasher is emptied by whoever arrives first. \
    Coffee beans are in the left cupboard; the grinder lives next to the kettle.\n";
const SECRET: &str = "Salary bands for next year: granite level engineers get a raise.\n";

fn hit_docs(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["document"]["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn keyword_search_is_scoped_to_what_the_caller_may_read(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_owner().await;
    let ann = app.user_with("ann@example.com", "member", "active").await;
    let bob = app.user_with("bob@example.com", "member", "active").await;
    let c = collection(&app, &ann, "Team").await;
    let trail = add(&app, &ann, &c, "trail.md", TRAIL).await;
    let kitchen = add(&app, &ann, &c, "kitchen.md", KITCHEN).await;
    let private = collection(&app, &bob, "Bob only").await;
    let secret = add(&app, &bob, &private, "salaries.txt", SECRET).await;

    // Hybrid without a model: keyword results, said so.
    let (status, v) = search(&app, &ann, json!({ "query": "granite compass" })).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["mode"], "keyword");
    assert!(v["warnings"][0]
        .as_str()
        .unwrap()
        .contains("Semantic search is off"));
    assert_eq!(
        hit_docs(&v),
        vec![trail.clone()],
        "never Bob's document: {v}"
    );
    let hit = &v["results"][0];
    assert_eq!(hit["document"]["filename"], "trail.md");
    assert_eq!(hit["document"]["title"], "Trail notes");
    assert_eq!(hit["scores"]["keyword"]["rank"], 1);
    assert!(hit["scores"]["semantic"].is_null());
    assert!(
        hit["location"]["heading_path"]
            .to_string()
            .contains("Trail notes"),
        "{hit}"
    );
    // The snippet marks the matched words, stemmed (granite, compass).
    let snippet = hit["snippet"].as_str().unwrap();
    let marked: Vec<String> = hit["highlights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let (a, b) = (
                h[0].as_u64().unwrap() as usize,
                h[1].as_u64().unwrap() as usize,
            );
            snippet
                .chars()
                .skip(a)
                .take(b - a)
                .collect::<String>()
                .to_lowercase()
        })
        .collect();
    assert!(
        marked.contains(&"granite".to_owned()) && marked.contains(&"compass".to_owned()),
        "{marked:?}"
    );

    // Stemming: "grinding" finds "grinder"? No — but "passes" finds "pass".
    let (_, v) = search(&app, &ann, json!({ "query": "passes", "mode": "keyword" })).await;
    assert_eq!(hit_docs(&v), vec![trail.clone()]);
    // Bob sees his own, not Ann's.
    let (_, v) = search(&app, &bob, json!({ "query": "granite", "mode": "keyword" })).await;
    assert_eq!(hit_docs(&v), vec![secret.clone()]);
    // Naming a collection one may not read narrows to nothing; it reveals nothing either.
    let (status, v) = search(
        &app,
        &ann,
        json!({ "query": "granite", "mode": "keyword", "collections": [private] }),
    )
    .await;
    assert_eq!(status, 200);
    assert!(v["results"].as_array().unwrap().is_empty());
    // Filters: a document, a kind, a time window.
    let (_, v) = search(
        &app,
        &ann,
        json!({ "query": "the granite coffee", "mode": "keyword", "documents": [kitchen] }),
    )
    .await;
    assert_eq!(hit_docs(&v), vec![kitchen.clone()]);
    let (_, v) = search(
        &app,
        &ann,
        json!({ "query": "granite", "mode": "keyword", "kinds": ["pdf"] }),
    )
    .await;
    assert!(v["results"].as_array().unwrap().is_empty());
    let (_, v) = search(
        &app,
        &ann,
        json!({ "query": "granite", "mode": "keyword", "created_before": "2001-01-01T00:00:00Z" }),
    )
    .await;
    assert!(v["results"].as_array().unwrap().is_empty(), "{v}");
    // Sharing opens it at once; deleting closes it at once.
    let me: Value = app.get_as("/api/me", &ann).await.json().await.unwrap();
    let ann_id = me["id"].as_str().unwrap().to_owned();
    let resp = app
        .call(
            Method::PUT,
            &format!("/api/collections/{private}/members/{ann_id}"),
            &bob,
            Some(json!({ "role": "viewer" })),
        )
        .await;
    assert!(resp.status().is_success(), "{}", resp.status());
    let (_, v) = search(&app, &ann, json!({ "query": "granite", "mode": "keyword" })).await;
    assert_eq!(hit_docs(&v).len(), 2);
    let resp = app
        .call(
            Method::DELETE,
            &format!("/api/documents/{trail}"),
            &ann,
            None,
        )
        .await;
    assert!(resp.status().is_success());
    let (_, v) = search(&app, &ann, json!({ "query": "compass", "mode": "keyword" })).await;
    assert!(v["results"].as_array().unwrap().is_empty());

    // Semantic search needs a model.
    let (status, v) = search(&app, &ann, json!({ "query": "x", "mode": "semantic" })).await;
    assert_eq!(status, 409);
    assert_eq!(v["error"]["code"], "semantic_unavailable");
}

async fn bad_queries_get_results_or_a_clear_error(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_owner().await;
    let ann = app.user_with("ann@example.com", "member", "active").await;
    let c = collection(&app, &ann, "Team").await;
    add(&app, &ann, &c, "trail.md", TRAIL).await;

    for (body, status, code) in [
        (json!({ "query": "" }), 422, "query_empty"),
        (json!({ "query": "   \n\t" }), 422, "query_empty"),
        (
            json!({ "query": "a".repeat(10_000) }),
            422,
            "query_too_long",
        ),
        (json!({ "query": "x", "top_k": 0 }), 422, "invalid_fields"),
        (
            json!({ "query": "x", "top_k": 1000 }),
            422,
            "invalid_fields",
        ),
        (
            json!({ "query": "x", "mode": "fuzzy" }),
            422,
            "invalid_request",
        ),
        (
            json!({ "query": "x", "kinds": ["exe"] }),
            422,
            "invalid_fields",
        ),
        (
            json!({ "query": "x", "collections": [] }),
            422,
            "invalid_fields",
        ),
        (
            json!({ "query": "x", "collections": ["not-an-id"] }),
            422,
            "invalid_request",
        ),
        (
            json!({ "query": "x", "sort": "date" }),
            400,
            "unknown_field",
        ),
        (
            json!({ "query": "x", "created_after": "2030-01-01T00:00:00Z", "created_before": "2020-01-01T00:00:00Z" }),
            422,
            "invalid_fields",
        ),
    ] {
        let (got, v) = search(&app, &ann, body.clone()).await;
        assert_eq!(
            (got, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {v}"
        );
    }
    // Query syntax and SQL are only words: results or none, never an error or an injection.
    for q in [
        "\"",
        "\"\"\"",
        "*",
        "granite*",
        "NEAR(granite compass)",
        "-granite",
        "granite -compass",
        "granite AND OR NOT",
        "'; DROP TABLE chunks; --",
        "1' OR '1'='1",
        "\\",
        "%_%",
        "^$",
        "granite:compass",
        "(((",
        "🙂",
    ] {
        let (status, v) = search(&app, &ann, json!({ "query": q, "mode": "keyword" })).await;
        assert_eq!(status, 200, "{q}: {v}");
    }
    let (_, v) = search(
        &app,
        &ann,
        json!({ "query": "NEAR(granite compass)", "mode": "keyword" }),
    )
    .await;
    assert_eq!(
        v["results"].as_array().unwrap().len(),
        1,
        "the words still count: {v}"
    );
    // The chunks are all still there.
    let (_, v) = search(&app, &ann, json!({ "query": "granite", "mode": "keyword" })).await;
    assert_eq!(v["results"].as_array().unwrap().len(), 1);
}

async fn semantic_and_hybrid_search_with_the_local_model(backend: Backend) {
    let Some(dir) = model_dir() else { return };
    let data = tempfile::tempdir().unwrap();
    let app = TestApp::builder(backend)
        .set("embeddings.provider", "local")
        .set("embeddings.model_dir", &dir)
        .data_dir(data.path())
        .spawn()
        .await;
    app.create_owner().await;
    let ann = app.user_with("ann@example.com", "member", "active").await;
    let bob = app.user_with("bob@example.com", "member", "active").await;
    let c = collection(&app, &ann, "Team").await;
    let trail = add(&app, &ann, &c, "trail.md", TRAIL).await;
    let kitchen = add(&app, &ann, &c, "kitchen.md", KITCHEN).await;
    let private = collection(&app, &bob, "Bob only").await;
    add(&app, &bob, &private, "salaries.txt", SECRET).await;
    let d: Value = app
        .get_as(&format!("/api/documents/{kitchen}"), &ann)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(d["progress_done"], d["progress_total"], "{d}");

    // No shared word with the kitchen notes, but the same meaning.
    let (status, v) = search(
        &app,
        &ann,
        json!({ "query": "where is the coffee machine stuff kept?", "mode": "semantic", "top_k": 5 }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["mode"], "semantic");
    assert_eq!(v["model"], "local/all-MiniLM-L6-v2");
    assert_eq!(hit_docs(&v)[0], kitchen, "{v}");
    let sim = v["results"][0]["scores"]["semantic"]["score"]
        .as_f64()
        .unwrap();
    assert!(sim > 0.3 && sim <= 1.0, "{sim}");
    assert!(
        !hit_docs(&v).iter().any(|d| d != &kitchen && d != &trail),
        "never Bob's"
    );

    // Hybrid: both parts reported for a hit both indexes find.
    let (_, v) = search(&app, &ann, json!({ "query": "granite cairn on the trail" })).await;
    assert_eq!(v["mode"], "hybrid");
    assert!(v["warnings"].as_array().unwrap().is_empty());
    let top = &v["results"][0];
    assert_eq!(top["document"]["id"], trail.as_str());
    assert_eq!(top["scores"]["keyword"]["rank"], 1, "{top}");
    assert_eq!(top["scores"]["semantic"]["rank"], 1, "{top}");
    // Bad input in semantic mode too.
    for q in ["\"", "'; DROP TABLE chunks; --", "*", &"long ".repeat(300)] {
        let (status, v) = search(&app, &ann, json!({ "query": q, "mode": "hybrid" })).await;
        assert_eq!(status, 200, "{v}");
    }
    // The collection records its model.
    let model = app
        .state
        .store
        .collection_embedding(c.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(model, Some(("local/all-MiniLM-L6-v2".to_owned(), 384)));
    let database = app
        .state
        .config
        .database_url
        .as_ref()
        .map(|u| u.expose().to_owned());
    app.stop().await.unwrap();

    // Another model (here: the same files under another name): restarting re-embeds every
    // collection through the queue, and semantic search then uses the new vectors.
    let mut builder = TestApp::builder(backend)
        .set("embeddings.provider", "local")
        .set("embeddings.model_dir", &dir)
        .set("embeddings.model", "minilm-renamed")
        .data_dir(data.path());
    if let Some(url) = &database {
        builder = builder.set("database_url", url);
    }
    let app = builder.spawn().await;
    let resp = app.sign_in("ann@example.com", PASSWORD).await;
    assert_eq!(resp.status(), 200);
    let ann = Session::from_body(&resp.json().await.unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, v) = search(
            &app,
            &ann,
            json!({ "query": "where is the coffee machine stuff kept?", "mode": "semantic" }),
        )
        .await;
        // Documents are re-embedded one job at a time: wait until both of Ann's are back.
        if v["results"].as_array().is_some_and(|r| r.len() >= 2) {
            assert_eq!(v["model"], "local/minilm-renamed");
            assert_eq!(hit_docs(&v)[0], kitchen);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "re-embedding never finished: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let model = app
        .state
        .store
        .collection_embedding(c.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(model, Some(("local/minilm-renamed".to_owned(), 384)));
}

on_both_backends!(
    keyword_search_is_scoped_to_what_the_caller_may_read,
    bad_queries_get_results_or_a_clear_error,
    semantic_and_hybrid_search_with_the_local_model,
);
