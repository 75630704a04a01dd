//! Documents in: collections and sharing, streamed uploads with type detection and limits,
//! encrypted blobs (local and S3), ingestion through the queue to searchable chunks, bad input,
//! and deletion that leaves nothing behind.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

pub async fn upload(
    app: &TestApp,
    s: &Session,
    collection: &str,
    filename: &str,
    bytes: Vec<u8>,
) -> reqwest::Response {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(filename.to_owned())
        // The client's claim is ignored: the content decides.
        .mime_str("application/octet-stream")
        .unwrap();
    app.client
        .post(app.url(&format!("/api/collections/{collection}/documents")))
        .bearer_auth(&s.access)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap()
}

/// Poll the document until its ingestion ends; its final view.
pub async fn settled(app: &TestApp, s: &Session, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let d: Value = app
            .get_as(&format!("/api/documents/{id}"), s)
            .await
            .json()
            .await
            .unwrap();
        // The document's status is final first; its job records the end a moment later.
        let job_done = !matches!(d["job"]["status"].as_str(), Some("queued" | "running"));
        if matches!(d["status"].as_str(), Some("ready" | "failed" | "cancelled")) && job_done {
            return d;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "stuck: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn new_collection(app: &TestApp, s: &Session, name: &str) -> String {
    let resp = app
        .call(
            Method::POST,
            "/api/collections",
            s,
            Some(json!({ "name": name })),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let c: Value = resp.json().await.unwrap();
    c["id"].as_str().unwrap().to_owned()
}

/// Uploads at the same moment all land: on SQLite each write transaction takes the write lock
/// when it starts, so none fails with "database is locked" after reading.
async fn simultaneous_uploads_all_succeed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.create_owner().await;
    let collection = new_collection(&app, &owner, "Many").await;
    let uploads = (0..8).map(|i| {
        let (app, owner, collection) = (&app, &owner, &collection);
        async move {
            let body = format!("# Note {i}\n\nThe cairn number {i} marks trail {i}.\n").repeat(200);
            upload(
                app,
                owner,
                collection,
                &format!("note-{i}.md"),
                body.into_bytes(),
            )
            .await
        }
    });
    let responses = futures::future::join_all(uploads).await;
    let mut ids = Vec::new();
    for r in responses {
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        let d: Value = r.json().await.unwrap();
        ids.push(d["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        assert_eq!(settled(&app, &owner, id).await["status"], "ready");
    }
    // Several statuses at once (a client watching ingestion asks for every busy one).
    let list = |q: &'static str| {
        let (app, owner, collection) = (&app, &owner, &collection);
        async move {
            app.get_as(
                &format!("/api/collections/{collection}/documents?{q}"),
                owner,
            )
            .await
        }
    };
    let busy: Value = list("status=queued,parsing,chunking,indexing")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(busy["items"].as_array().unwrap().len(), 0, "{busy}");
    let done: Value = list("status=failed,ready").await.json().await.unwrap();
    assert_eq!(done["items"].as_array().unwrap().len(), 8);
    let e = error_body(list("status=ready,bogus").await, 400).await;
    assert_eq!(e["code"], "invalid_query");
}

const MARKDOWN: &str = "# Field notes\n\nThe granite cairn marks the northern trail.\n\n## Weather\n\nFog rolls in after noon; carry a compass.\n";

async fn a_document_goes_from_upload_to_searchable_chunks(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_owner().await;
    let ann = app.user_with("ann@example.com", "member", "active").await;
    let c = new_collection(&app, &ann, "Trail notes").await;

    let resp = upload(&app, &ann, &c, "notes.md", MARKDOWN.as_bytes().to_vec()).await;
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let d: Value = resp.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/documents/{}", d["id"].as_str().unwrap())
    );
    assert_eq!(d["kind"], "markdown");
    assert_eq!(d["status"], "queued");
    assert_eq!(d["size_bytes"], MARKDOWN.len());
    assert!(d.get("blob_key").is_none() && d.get("sealed_key").is_none());
    let id = d["id"].as_str().unwrap().to_owned();

    let d = settled(&app, &ann, &id).await;
    assert_eq!(d["status"], "ready", "{d}");
    assert!(d["chunk_count"].as_i64().unwrap() >= 1);
    assert_eq!(d["job"]["status"], "succeeded");
    let chunks: Value = app
        .get_as(&format!("/api/documents/{id}/chunks"), &ann)
        .await
        .json()
        .await
        .unwrap();
    let all_text: String = chunks["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_owned())
        .collect();
    assert!(all_text.contains("granite cairn") && all_text.contains("compass"));
    assert!(
        chunks["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["location"]["heading_path"]
                .to_string()
                .contains("Field notes")),
        "{chunks}"
    );
    let user = app
        .state
        .store
        .user_by_email("ann@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(
        app.state
            .store
            .keyword_match_count(user.id, "compasses")
            .await
            .unwrap()
            >= 1
    );
    // Visible to operators too.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"cairn_documents_ingested_total{kind="markdown",outcome="ready"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"cairn_jobs{kind="ingest",status="succeeded"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("cairn_ingest_duration_seconds_bucket"),
        "{metrics}"
    );

    // The original comes back byte for byte, as an attachment; at rest it is encrypted.
    let resp = app
        .get_as(&format!("/api/documents/{id}/content"), &ann)
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment"));
    assert_eq!(resp.bytes().await.unwrap(), MARKDOWN.as_bytes());
    if let Some(dir) = app.state.blobs.local_dir() {
        let stored = std::fs::read(dir.join(format!("documents/{id}"))).unwrap();
        assert!(
            !stored.windows(7).any(|w| w == b"granite"),
            "plaintext at rest"
        );
        assert_eq!(
            stored.len() as u64,
            cairn::blobs::stored_len(MARKDOWN.len() as u64)
        );
    }

    // The same content again: refused, pointing at the original; an idempotent retry gets it.
    let resp = upload(&app, &ann, &c, "copy.md", MARKDOWN.as_bytes().to_vec()).await;
    let e = error_body(resp, 409).await;
    assert_eq!(e["code"], "duplicate_document");
    assert_eq!(e["details"]["document_id"], id.as_str());
    let part = reqwest::multipart::Part::bytes(MARKDOWN.as_bytes().to_vec()).file_name("notes.md");
    let resp = app
        .client
        .post(app.url(&format!("/api/collections/{c}/documents")))
        .bearer_auth(&ann.access)
        .header("Idempotency-Key", "retry-1")
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["id"], id.as_str());
}

async fn strangers_and_readers_cannot_reach_what_is_not_theirs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_owner().await;
    let ann = app.user_with("ann@example.com", "member", "active").await;
    let bob = app.user_with("bob@example.com", "member", "active").await;
    let c = new_collection(&app, &ann, "Private").await;
    let d: Value = upload(
        &app,
        &ann,
        &c,
        "a.txt",
        b"secret plans for the summit".to_vec(),
    )
    .await
    .json()
    .await
    .unwrap();
    let doc = d["id"].as_str().unwrap().to_owned();
    settled(&app, &ann, &doc).await;

    // A stranger: 404 everywhere, as if nothing existed; nothing listed.
    for path in [
        format!("/api/collections/{c}"),
        format!("/api/collections/{c}/documents"),
        format!("/api/documents/{doc}"),
        format!("/api/documents/{doc}/chunks"),
        format!("/api/documents/{doc}/content"),
    ] {
        assert_eq!(app.get_as(&path, &bob).await.status(), 404, "{path}");
    }
    let mine: Value = app
        .get_as("/api/collections", &bob)
        .await
        .json()
        .await
        .unwrap();
    assert!(mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["name"] != "Private"));
    assert_eq!(
        app.call(Method::DELETE, &format!("/api/documents/{doc}"), &bob, None)
            .await
            .status(),
        404
    );
    assert_eq!(
        upload(&app, &bob, &c, "b.txt", b"intruder".to_vec())
            .await
            .status(),
        404
    );

    // Shared as viewer: reads, but cannot add or delete (403), nor share onwards.
    let bob_id = app
        .state
        .store
        .user_by_email("bob@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    let resp = app
        .call(
            Method::PUT,
            &format!("/api/collections/{c}/members/{bob_id}"),
            &ann,
            Some(json!({ "role": "viewer" })),
        )
        .await;
    assert_eq!(resp.status(), 204);
    assert_eq!(
        app.get_as(&format!("/api/documents/{doc}/content"), &bob)
            .await
            .status(),
        200
    );
    assert_eq!(
        upload(&app, &bob, &c, "b.txt", b"hello there".to_vec())
            .await
            .status(),
        403
    );
    assert_eq!(
        app.call(Method::DELETE, &format!("/api/documents/{doc}"), &bob, None)
            .await
            .status(),
        403
    );
    assert_eq!(
        app.call(
            Method::PUT,
            &format!("/api/collections/{c}/members/{bob_id}"),
            &bob,
            Some(json!({ "role": "owner" })),
        )
        .await
        .status(),
        403
    );
    // The last owner cannot leave.
    let ann_id = app
        .state
        .store
        .user_by_email("ann@example.com")
        .await
        .unwrap()
        .unwrap()
        .id;
    let e = error_body(
        app.call(
            Method::DELETE,
            &format!("/api/collections/{c}/members/{ann_id}"),
            &ann,
            None,
        )
        .await,
        409,
    )
    .await;
    assert_eq!(e["code"], "last_owner");
    // A reader's API key with the read scope reads; one without the ingest scope cannot upload.
    let key = app.api_key(&bob, &["read"]).await;
    let by_key = Session {
        session_id: String::new(),
        access: key,
        refresh: String::new(),
    };
    assert_eq!(
        app.get_as(&format!("/api/documents/{doc}"), &by_key)
            .await
            .status(),
        200
    );
    assert_eq!(
        upload(&app, &by_key, &c, "k.txt", b"by key".to_vec())
            .await
            .status(),
        403
    );
}

async fn bad_files_are_refused_or_fail_with_a_reason(backend: Backend) {
    let app = TestApp::builder(backend)
        .set("uploads.max_file_bytes", "200000")
        .set("uploads.user_quota_bytes", "300000")
        .spawn()
        .await;
    app.create_owner().await;
    let ann = app.user_with("ann@example.com", "member", "active").await;
    let c = new_collection(&app, &ann, "Bad input").await;

    // An executable renamed .txt, an empty file, invalid UTF-8: refused at upload.
    let mut elf = b"\x7fELF\x02\x01\x01\x00".to_vec();
    elf.extend(vec![0u8; 500]);
    for (name, bytes, status, code) in [
        ("notes.txt", elf, 415, "unsupported_type"),
        ("empty.md", Vec::new(), 422, "empty_file"),
        (
            "latin1.txt",
            b"caf\xe9 cr\xe8me \xff\xfe".to_vec(),
            415,
            "unsupported_type",
        ),
    ] {
        let e = error_body(upload(&app, &ann, &c, name, bytes).await, status).await;
        assert_eq!(e["code"], code, "{name}: {e}");
    }
    // Too large: refused while streaming, with the limit; nothing stored.
    let e = error_body(
        upload(&app, &ann, &c, "big.txt", vec![b'a'; 250_000]).await,
        413,
    )
    .await;
    assert_eq!(e["code"], "file_too_large");
    assert_eq!(e["details"]["limit_bytes"], 200_000);
    // Quota: the second upload would pass 300,000 bytes.
    let first = upload(&app, &ann, &c, "one.txt", vec![b'b'; 190_000]).await;
    assert_eq!(first.status(), 202);
    let e = error_body(
        upload(&app, &ann, &c, "two.txt", vec![b'c'; 190_000]).await,
        413,
    )
    .await;
    assert_eq!(e["code"], "quota_exceeded");
    // Not multipart, or no file field.
    let resp = app
        .client
        .post(app.url(&format!("/api/collections/{c}/documents")))
        .bearer_auth(&ann.access)
        .json(&json!({ "file": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = app
        .client
        .post(app.url(&format!("/api/collections/{c}/documents")))
        .bearer_auth(&ann.access)
        .multipart(reqwest::multipart::Form::new().text("other", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_body(resp, 400).await["code"], "missing_file");
    // A truncated PDF passes the type check but fails ingestion with a reason.
    let pdf =
        b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n2 0 obj\n<< /Type /Pa"
            .to_vec();
    let resp = upload(&app, &ann, &c, "broken.pdf", pdf).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = settled(&app, &ann, &id).await;
    assert_eq!(d["status"], "failed", "{d}");
    assert!(
        d["error_code"].as_str().is_some_and(|c| !c.is_empty()),
        "{d}"
    );
    assert!(
        d["error_message"].as_str().is_some_and(|m| !m.is_empty()),
        "{d}"
    );
    // The server is fine and other documents ingest.
    let ok = upload(
        &app,
        &ann,
        &c,
        "fine.md",
        b"# Fine\n\nStill working.".to_vec(),
    )
    .await;
    let id = ok.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(settled(&app, &ann, &id).await["status"], "ready");
}

async fn deleting_leaves_nothing_behind_and_admins_can_restore(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let owner = app.create_owner().await;
    let ann = app.user_with("ann@example.com", "member", "active").await;
    let c = new_collection(&app, &ann, "Short-lived").await;
    let d: Value = upload(
        &app,
        &ann,
        &c,
        "gone.md",
        b"# Gone\n\nephemeral words".to_vec(),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = d["id"].as_str().unwrap().to_owned();
    settled(&app, &ann, &id).await;
    let doc_id: cairn_store::Id = id.parse().unwrap();
    assert!(app.state.store.index_rows_of(doc_id).await.unwrap().0 >= 1);

    let resp = app
        .call(Method::DELETE, &format!("/api/documents/{id}"), &ann, None)
        .await;
    assert_eq!(resp.status(), 204);
    assert_eq!(
        app.get_as(&format!("/api/documents/{id}"), &ann)
            .await
            .status(),
        404
    );
    assert_eq!(app.state.store.index_rows_of(doc_id).await.unwrap(), (0, 0));
    let user = app
        .state
        .store
        .user_by_email("ann@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        app.state
            .store
            .keyword_match_count(user.id, "ephemeral")
            .await
            .unwrap(),
        0
    );

    // Admins see it among the deleted and can restore it; it is ingested again.
    let deleted: Value = app
        .get_as("/api/deleted-documents", &owner)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(deleted["items"][0]["id"], id.as_str());
    let resp = app
        .call(
            Method::POST,
            &format!("/api/documents/{id}/restore"),
            &owner,
            None,
        )
        .await;
    assert_eq!(resp.status(), 202);
    assert_eq!(settled(&app, &ann, &id).await["status"], "ready");

    // Deleted again and purged: the blob, the row, the chunks and index rows are all gone.
    app.call(Method::DELETE, &format!("/api/documents/{id}"), &ann, None)
        .await;
    let row = app.state.store.document(doc_id).await.unwrap().unwrap();
    cairn::documents::worker::purge_one(&app.state, &row).await;
    assert!(app.state.store.document(doc_id).await.unwrap().is_none());
    assert!(!app.state.blobs.exists(&row.blob_key).await.unwrap());
    assert_eq!(app.state.store.index_rows_of(doc_id).await.unwrap(), (0, 0));

    // An orphan blob (an upload interrupted before its row was written) is swept.
    let orphan = format!("documents/{}", cairn_store::Id::new());
    let key = cairn::blobs::FileKey::generate().unwrap();
    cairn::blobs::put_all(&app.state.blobs, &orphan, &key, b"orphan")
        .await
        .unwrap();
    let removed = cairn::documents::worker::sweep_orphans(&app.state, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert!(!app.state.blobs.exists(&orphan).await.unwrap());
}

on_both_backends!(simultaneous_uploads_all_succeed);

on_both_backends!(
    a_document_goes_from_upload_to_searchable_chunks,
    strangers_and_readers_cannot_reach_what_is_not_theirs,
    bad_files_are_refused_or_fail_with_a_reason,
    deleting_leaves_nothing_behind_and_admins_can_restore,
);

/// The S3 path against a real S3-compatible server (moto).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_live_encrypted_in_an_s3_bucket() {
    let Some(s3) = s3_url() else { return };
    let bucket = format!("cairn-{}", uuid::Uuid::now_v7().simple());
    let resp = reqwest::Client::new()
        .put(format!("{s3}/{bucket}"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let app = TestApp::builder(Backend::Sqlite)
        .set("storage.backend", "s3")
        .set("storage.s3_bucket", &bucket)
        .set("storage.s3_endpoint", &s3)
        .set("storage.s3_allow_http", "true")
        .set("storage.s3_access_key_id", "cairn-test")
        .set(
            "storage.s3_secret_access_key",
            "cairn-test-secret-key-0123456789",
        )
        .spawn()
        .await;
    app.create_owner().await;
    let ann = app.user_with("ann@example.com", "member", "active").await;
    let c = new_collection(&app, &ann, "In the bucket").await;
    // Several segments and more than one multipart part's worth of segments.
    let text: String = (0..40_000)
        .map(|i| format!("Line {i}: the cairn stands on the ridge.\n"))
        .collect();
    let resp = upload(&app, &ann, &c, "ridge.txt", text.clone().into_bytes()).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(settled(&app, &ann, &id).await["status"], "ready");
    // The object in the bucket is ciphertext.
    let raw = reqwest::Client::new()
        .get(format!("{s3}/{bucket}/documents/{id}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(raw.starts_with(b"CAIRNBLOB1"));
    assert!(!raw.windows(5).any(|w| w == b"cairn"));
    let back = app
        .get_as(&format!("/api/documents/{id}/content"), &ann)
        .await;
    assert_eq!(back.bytes().await.unwrap(), text.as_bytes());
    // Deleting purges the object.
    app.call(Method::DELETE, &format!("/api/documents/{id}"), &ann, None)
        .await;
    let row = app
        .state
        .store
        .document(id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    cairn::documents::worker::purge_one(&app.state, &row).await;
    let gone = reqwest::Client::new()
        .get(format!("{s3}/{bucket}/documents/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

/// A worker that dies mid-job loses its lease; the watchdog re-queues the job, another worker
/// finishes it, and the document ends with exactly one set of chunks.
async fn a_crashed_worker_never_loses_or_duplicates_a_document(backend: Backend) {
    let app = TestApp::builder(backend)
        .set("ingest.workers", "0")
        .set("ingest.job_timeout_secs", "1")
        .spawn()
        .await;
    app.create_owner().await;
    let ann = app.user_with("ann@example.com", "member", "active").await;
    let c = new_collection(&app, &ann, "Crash").await;
    let text: String = (0..3000)
        .map(|i| format!("Sentence {i} about cairns. "))
        .collect();
    let resp = upload(&app, &ann, &c, "long.txt", text.into_bytes()).await;
    let id: cairn_store::Id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let store = &app.state.store;

    // A worker claims the job, starts, and vanishes.
    let job = store
        .claim_job("doomed", &["ingest"])
        .await
        .unwrap()
        .unwrap();
    assert!(store
        .set_document_stage(id, "parsing", (0, 0))
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    cairn::documents::worker::sweep_once(&app.state).await;
    assert_eq!(store.job(job.id).await.unwrap().unwrap().status, "queued");

    // Another worker takes it over and finishes.
    let again = store
        .claim_job("survivor", &["ingest"])
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.id, again.attempts), (job.id, 2));
    cairn::documents::worker::run_job(&app.state, "survivor", again).await;
    let d = store.document(id).await.unwrap().unwrap();
    assert_eq!(d.status, "ready");
    let (rows, indexed) = store.index_rows_of(id).await.unwrap();
    assert_eq!((rows, indexed), (d.chunk_count, d.chunk_count));
    // The vanished worker's late completion is not honoured; running the step again (as a
    // retry would) leaves the same single set of chunks.
    assert!(!store.complete_job(job.id, "doomed").await.unwrap());
    store
        .requeue_document(id, &cairn::documents::ingest_job(&app.state.config, id))
        .await
        .unwrap();
    let third = store
        .claim_job("survivor", &["ingest"])
        .await
        .unwrap()
        .unwrap();
    cairn::documents::worker::run_job(&app.state, "survivor", third).await;
    assert_eq!(store.index_rows_of(id).await.unwrap(), (rows, indexed));
}

async fn ingestion_can_be_cancelled_retried_and_reprocessed(backend: Backend) {
    let app = TestApp::builder(backend)
        .set("ingest.workers", "0")
        .spawn()
        .await;
    let owner = app.create_owner().await;
    let ann = app.user_with("ann@example.com", "member", "active").await;
    let c = new_collection(&app, &ann, "Queue").await;
    let resp = upload(&app, &ann, &c, "q.md", b"# Q\n\nQueued words.".to_vec()).await;
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Cancel while queued: no worker will pick it up.
    let resp = app
        .call(
            Method::POST,
            &format!("/api/documents/{id}/cancel"),
            &ann,
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let d: Value = resp.json().await.unwrap();
    assert_eq!(
        (d["status"].as_str(), d["job"]["status"].as_str()),
        (Some("cancelled"), Some("cancelled"))
    );
    assert!(app
        .state
        .store
        .claim_job("w", &["ingest"])
        .await
        .unwrap()
        .is_none());
    let e = error_body(
        app.call(
            Method::POST,
            &format!("/api/documents/{id}/cancel"),
            &ann,
            None,
        )
        .await,
        409,
    )
    .await;
    assert_eq!(e["code"], "invalid_state");

    // Retry: queued again with a fresh job, which a worker completes.
    let resp = app
        .call(
            Method::POST,
            &format!("/api/documents/{id}/retry"),
            &ann,
            None,
        )
        .await;
    assert_eq!(resp.status(), 202);
    let job = app
        .state
        .store
        .claim_job("w", &["ingest"])
        .await
        .unwrap()
        .unwrap();
    cairn::documents::worker::run_job(&app.state, "w", job).await;
    assert_eq!(settled(&app, &ann, &id).await["status"], "ready");
    let e = error_body(
        app.call(
            Method::POST,
            &format!("/api/documents/{id}/retry"),
            &ann,
            None,
        )
        .await,
        409,
    )
    .await;
    assert_eq!(e["code"], "invalid_state");

    // Reprocess everything (admins): every live document goes through again.
    let resp = app
        .call(Method::POST, "/api/documents/reprocess", &owner, None)
        .await;
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.json::<Value>().await.unwrap()["queued"], 1);
    let job = app
        .state
        .store
        .claim_job("w", &["ingest"])
        .await
        .unwrap()
        .unwrap();
    cairn::documents::worker::run_job(&app.state, "w", job).await;
    assert_eq!(settled(&app, &ann, &id).await["status"], "ready");
    let counts: Value = app.get_as("/api/jobs", &owner).await.json().await.unwrap();
    assert!(counts["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["status"] == "succeeded"));
}

async fn office_files_and_transcripts_keep_their_structure(backend: Backend) {
    let app = TestApp::builder(backend)
        .set("uploads.profile", "all")
        .spawn()
        .await;
    app.create_owner().await;
    let ann = app.user_with("ann@example.com", "member", "active").await;
    let c = new_collection(&app, &ann, "Mixed").await;
    let vtt = "WEBVTT\n\n00:00:01.000 --> 00:00:04.000\n<v Ada>The bridge is out.\n\n00:01:05.000 --> 00:01:09.000\n<v Ben>We will reroute by the cairn.\n";
    let id = upload(&app, &ann, &c, "meeting.vtt", vtt.as_bytes().to_vec())
        .await
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(settled(&app, &ann, &id).await["status"], "ready");
    let chunks: Value = app
        .get_as(&format!("/api/documents/{id}/chunks"), &ann)
        .await
        .json()
        .await
        .unwrap();
    let loc = &chunks["items"][0]["location"];
    assert_eq!(loc["start_ms"], 1000, "{chunks}");
    assert!(loc["speakers"].to_string().contains("Ada"), "{chunks}");

    // A DOCX zip bomb passes the type check (it is a zip) and fails ingestion, clearly.
    let bomb = {
        use std::io::Write;
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("[Content_Types].xml", opts).unwrap();
        zip.write_all(br#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>"#).unwrap();
        zip.start_file("word/document.xml", opts).unwrap();
        let zeros = vec![b' '; 1 << 20];
        for _ in 0..300 {
            zip.write_all(&zeros).unwrap();
        }
        zip.finish().unwrap();
        buf.into_inner()
    };
    assert!(bomb.len() < 2_000_000, "{}", bomb.len());
    let resp = upload(&app, &ann, &c, "report.docx", bomb).await;
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = settled(&app, &ann, &id).await;
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["error_code"], "zip_bomb", "{d}");
    // A zip whose kind was never confirmed is not served back.
    let e = error_body(
        app.get_as(&format!("/api/documents/{id}/content"), &ann)
            .await,
        409,
    )
    .await;
    assert_eq!(e["code"], "not_verified");
}

on_both_backends!(
    a_crashed_worker_never_loses_or_duplicates_a_document,
    ingestion_can_be_cancelled_retried_and_reprocessed,
    office_files_and_transcripts_keep_their_structure,
);

/// `cairn worker` ingests what a server with `ingest.workers = 0` queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_worker_process_ingests_the_queue() {
    let app = TestApp::builder(Backend::Sqlite)
        .set("ingest.workers", "0")
        .spawn()
        .await;
    app.create_owner().await;
    let ann = app.user_with("ann@example.com", "member", "active").await;
    let c = new_collection(&app, &ann, "Elsewhere").await;
    let resp = upload(
        &app,
        &ann,
        &c,
        "w.md",
        b"# Worker\n\nIngested by another process.".to_vec(),
    )
    .await;
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d: Value = app
        .get_as(&format!("/api/documents/{id}"), &ann)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(d["status"], "queued", "nothing ingests in the server");

    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cairn"));
    for (k, _) in std::env::vars() {
        if k.starts_with("CAIRN_") || k == "DATABASE_URL" || k == "REDIS_URL" {
            cmd.env_remove(k);
        }
    }
    let mut worker = cmd
        .args(["worker", "--workers", "1", "--data-dir"])
        .arg(&app.data_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let d = settled(&app, &ann, &id).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let status = worker.wait().unwrap();
    assert_eq!(d["status"], "ready", "{d}");
    assert!(
        status.success(),
        "the worker stops cleanly on SIGTERM: {status}"
    );
}

async fn search(app: &TestApp, s: &Session) -> Value {
    let body = serde_json::json!({ "query": "granite ridge", "mode": "keyword" });
    app.call(Method::POST, "/api/search", s, Some(body))
        .await
        .json::<Value>()
        .await
        .unwrap()
}

/// The FTS5 keyword table follows `search.memory_index` across restarts: left empty while the
/// in-memory index answers, rebuilt complete when the setting is turned off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keyword_table_follows_the_memory_index_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let app = TestApp::builder(Backend::Sqlite)
        .data_dir(&data)
        .spawn()
        .await;
    let owner = app.create_owner().await;
    let c = new_collection(&app, &owner, "Field notes").await;
    let resp = upload(
        &app,
        &owner,
        &c,
        "notes.md",
        b"# Ridge\n\nThe cairn marks the granite ridge above the valley.\n".to_vec(),
    )
    .await;
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(settled(&app, &owner, &id).await["status"], "ready");
    let doc: cairn_store::Id = id.parse().unwrap();
    let hits = search(&app, &owner).await;
    assert_eq!(hits["results"].as_array().unwrap().len(), 1, "{hits}");
    let fts = |app: &TestApp| {
        let store = app.state.store.clone();
        async move {
            let cairn_store::Pool::Sqlite(p) = store.db().pool() else {
                unreachable!()
            };
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM chunks_fts WHERE chunks_fts MATCH 'granite'",
            )
            .fetch_one(p)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        fts(&app).await,
        0,
        "empty while the in-memory index answers"
    );
    app.stop().await.unwrap();

    let app = TestApp::builder(Backend::Sqlite)
        .data_dir(&data)
        .set("search.memory_index", "false")
        .spawn()
        .await;
    let owner = Session::from_body(
        &app.sign_in(OWNER_EMAIL, PASSWORD)
            .await
            .json::<Value>()
            .await
            .unwrap(),
    );
    let (chunks, indexed) = app.state.store.index_rows_of(doc).await.unwrap();
    assert!(chunks >= 1 && indexed == chunks, "{chunks} / {indexed}");
    assert!(fts(&app).await >= 1);
    let hits = search(&app, &owner).await;
    assert_eq!(hits["results"].as_array().unwrap().len(), 1, "{hits}");
    app.stop().await.unwrap();
}
