//! Collections, documents, chunks and the job queue, on both backends.

use cairn_store::collections::CollectionRole;
use cairn_store::documents::{ChunkRow, DocumentFilter, DocumentRow};
use cairn_store::jobs::NewJob;
use cairn_store::{Backend, Id, Json, Pool, Store, StoreError, Timestamp};
use serde_json::json;

use crate::{fresh, new_user};

fn ingest_job(doc: Id) -> NewJob {
    NewJob {
        kind: "ingest".into(),
        subject: Some(doc.to_string()),
        payload: json!({ "document_id": doc }),
        max_attempts: 3,
        timeout_secs: 300,
    }
}

fn document(collection: Id, by: Id, sha: &str) -> DocumentRow {
    DocumentRow {
        size_bytes: 1234,
        content_sha256: sha.into(),
        blob_key: format!("blobs/{sha}"),
        sealed_key: vec![1, 2, 3],
        ..DocumentRow::queued(Id::new(), collection, by, "notes.md", "markdown")
    }
}

fn chunk(doc: &DocumentRow, ordinal: i32, text: &str) -> ChunkRow {
    ChunkRow {
        id: Id::new(),
        document_id: doc.id,
        collection_id: doc.collection_id,
        ordinal,
        text: text.into(),
        token_count: 3,
        location: Json(json!({ "page_start": ordinal + 1 })),
    }
}

pub async fn users(store: &Store) -> (Id, Id, Id) {
    let a = store
        .create_user(&new_user("ann@example.com", "member"))
        .await
        .unwrap()
        .id;
    let b = store
        .create_user(&new_user("bob@example.com", "member"))
        .await
        .unwrap()
        .id;
    let c = store
        .create_user(&new_user("cat@example.com", "member"))
        .await
        .unwrap()
        .id;
    (a, b, c)
}

pub async fn collections_story(backend: Backend) {
    let Some((store, _dir)) = fresh(backend).await else {
        return;
    };
    let (ann, bob, cat) = users(&store).await;

    // A personal collection is made once, and never shared.
    let personal = store.personal_collection(ann).await.unwrap();
    assert_eq!(
        store.personal_collection(ann).await.unwrap().id,
        personal.id
    );
    assert!(matches!(
        store
            .share_collection(ann, personal.id, bob, CollectionRole::Viewer)
            .await,
        Err(StoreError::NotFound)
    ));

    let shared = store.create_collection(ann, "Research", "").await.unwrap();
    // Strangers see nothing and can do nothing.
    assert!(store
        .collection_for(bob, shared.id, CollectionRole::Viewer)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .collections_of(bob, None, 50)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        store
            .share_collection(bob, shared.id, bob, CollectionRole::Owner)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.update_collection(bob, shared.id, "Mine", "").await,
        Err(StoreError::NotFound)
    ));

    // Shared as viewer: read, not write.
    store
        .share_collection(ann, shared.id, bob, CollectionRole::Viewer)
        .await
        .unwrap();
    let seen = store
        .collection_for(bob, shared.id, CollectionRole::Viewer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.role, "viewer");
    assert!(store
        .collection_for(bob, shared.id, CollectionRole::Editor)
        .await
        .unwrap()
        .is_none());
    let doc = document(shared.id, bob, "aaa");
    assert!(matches!(
        store
            .insert_document(bob, &doc, &ingest_job(doc.id), None)
            .await,
        Err(StoreError::NotFound)
    ));
    // A viewer cannot share onwards.
    assert!(matches!(
        store
            .share_collection(bob, shared.id, cat, CollectionRole::Viewer)
            .await,
        Err(StoreError::NotFound)
    ));

    // As editor: add documents; duplicates by content are refused.
    store
        .share_collection(ann, shared.id, bob, CollectionRole::Editor)
        .await
        .unwrap();
    store
        .insert_document(bob, &doc, &ingest_job(doc.id), None)
        .await
        .unwrap();
    let again = document(shared.id, bob, "aaa");
    assert!(matches!(
        store
            .insert_document(bob, &again, &ingest_job(again.id), None)
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        store
            .document_by_content(shared.id, "aaa")
            .await
            .unwrap()
            .unwrap()
            .id,
        doc.id
    );
    assert!(store
        .document_for(cat, doc.id, CollectionRole::Viewer)
        .await
        .unwrap()
        .is_none());
    let filter = DocumentFilter {
        limit: 50,
        ..Default::default()
    };
    assert!(store
        .documents_in(cat, shared.id, &filter)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .documents_in(bob, shared.id, &filter)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.storage_used_by(bob).await.unwrap(), 1234);
    // The quota is checked with the insert: 1234 used + 1234 more > 2000.
    let over = document(shared.id, bob, "ccc");
    match store
        .insert_document(bob, &over, &ingest_job(over.id), Some(2000))
        .await
    {
        Err(StoreError::Conflict {
            constraint: Some(c),
        }) => assert_eq!(c, "storage_quota"),
        other => panic!("{other:?}"),
    }
    assert!(
        store.document(over.id).await.unwrap().is_none(),
        "nothing stored"
    );

    // The last owner can neither be demoted nor leave; members can leave.
    assert!(matches!(
        store
            .share_collection(ann, shared.id, ann, CollectionRole::Viewer)
            .await,
        Err(StoreError::Conflict { .. })
    ));
    // The last owner cannot leave; members can.
    assert!(matches!(
        store.unshare_collection(ann, shared.id, ann).await,
        Err(StoreError::Conflict { .. })
    ));
    let members = store.collection_members(bob, shared.id).await.unwrap();
    assert_eq!(members.len(), 2);
    store.unshare_collection(bob, shared.id, bob).await.unwrap();
    assert!(store
        .document_for(bob, doc.id, CollectionRole::Viewer)
        .await
        .unwrap()
        .is_none());

    // Deleting the collection takes its documents along and hands back their blobs.
    assert!(matches!(
        store.delete_collection(bob, shared.id).await,
        Err(StoreError::NotFound)
    ));
    let blobs = store.delete_collection(ann, shared.id).await.unwrap();
    assert_eq!(blobs, vec!["blobs/aaa".to_owned()]);
    assert!(store.document(doc.id).await.unwrap().is_none());
}

pub async fn documents_and_chunks_story(backend: Backend) {
    let Some((store, _dir)) = fresh(backend).await else {
        return;
    };
    let (ann, bob, _) = users(&store).await;
    let c = store.create_collection(ann, "Notes", "").await.unwrap();
    let doc = document(c.id, ann, "bbb");
    store
        .insert_document(ann, &doc, &ingest_job(doc.id), None)
        .await
        .unwrap();

    assert!(store
        .set_document_stage(doc.id, "parsing", (0, 0))
        .await
        .unwrap());
    let chunks = (0..450)
        .map(|i| {
            chunk(
                &doc,
                i,
                &format!("granite boulder number {i} near the cairn"),
            )
        })
        .collect::<Vec<_>>();
    assert!(store
        .store_chunks(doc.id, Some("Notes"), &chunks)
        .await
        .unwrap());
    // Idempotent: storing again replaces, never duplicates.
    let stored = store.document(doc.id).await.unwrap().unwrap();
    assert_eq!(stored.status, "ready");
    let again: Vec<ChunkRow> = chunks
        .iter()
        .map(|c| ChunkRow {
            id: Id::new(),
            ..c.clone()
        })
        .collect();
    assert!(store
        .set_document_stage(doc.id, "indexing", (0, 0))
        .await
        .is_ok());
    store
        .requeue_document(doc.id, &ingest_job(doc.id))
        .await
        .unwrap();
    assert!(store
        .store_chunks(doc.id, Some("Notes"), &again)
        .await
        .unwrap());
    assert_eq!(store.index_rows_of(doc.id).await.unwrap(), (450, 450));
    assert_eq!(
        store.keyword_match_count(ann, "boulders").await.unwrap(),
        450,
        "stemmed match"
    );
    assert_eq!(
        store.keyword_match_count(bob, "boulder").await.unwrap(),
        0,
        "not bob's"
    );
    let page = store.chunks_of(ann, doc.id, Some(9), 5).await.unwrap();
    assert_eq!(
        page.iter().map(|c| c.ordinal).collect::<Vec<_>>(),
        vec![10, 11, 12, 13, 14]
    );
    assert!(store
        .chunks_of(bob, doc.id, None, 5)
        .await
        .unwrap()
        .is_empty());

    // Soft delete: gone from listings and search at once, index rows removed; not bob's to
    // delete.
    assert!(matches!(
        store.delete_document(bob, doc.id).await,
        Err(StoreError::NotFound)
    ));
    store.delete_document(ann, doc.id).await.unwrap();
    assert!(store
        .document_for(ann, doc.id, CollectionRole::Viewer)
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.index_rows_of(doc.id).await.unwrap(), (0, 0));
    assert_eq!(store.keyword_match_count(ann, "boulder").await.unwrap(), 0);
    // A worker finishing late writes nothing.
    assert!(!store.store_chunks(doc.id, None, &chunks).await.unwrap());
    assert_eq!(store.index_rows_of(doc.id).await.unwrap(), (0, 0));

    // The same content may be added again while the old one waits for purge; restoring the
    // old one then conflicts.
    let twin = document(c.id, ann, "bbb");
    store
        .insert_document(ann, &twin, &ingest_job(twin.id), None)
        .await
        .unwrap();
    assert!(matches!(
        store.restore_document(doc.id, &ingest_job(doc.id)).await,
        Err(StoreError::Conflict { .. })
    ));
    store.delete_document(ann, twin.id).await.unwrap();
    store
        .restore_document(doc.id, &ingest_job(doc.id))
        .await
        .unwrap();
    assert_eq!(
        store.document(doc.id).await.unwrap().unwrap().status,
        "queued"
    );

    // Purge: only what was deleted before the cutoff.
    let due = store
        .documents_due_for_purge(Timestamp::now().plus_millis(1000), 10)
        .await
        .unwrap();
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![twin.id]);
    assert!(store.purge_document(twin.id).await.unwrap());
    assert!(store.document(twin.id).await.unwrap().is_none());
    assert!(
        !store.purge_document(doc.id).await.unwrap(),
        "a live document is never purged"
    );
}

pub async fn job_queue_story(backend: Backend) {
    let Some((store, _dir)) = fresh(backend).await else {
        return;
    };
    let job = |kind: &str, attempts: i32, timeout: i32| NewJob {
        kind: kind.into(),
        subject: None,
        payload: json!({}),
        max_attempts: attempts,
        timeout_secs: timeout,
    };
    let first = store.enqueue_job(&job("ingest", 2, 300)).await.unwrap();
    let second = store.enqueue_job(&job("ingest", 1, 300)).await.unwrap();
    let other = store.enqueue_job(&job("backup", 1, 300)).await.unwrap();

    // Oldest first, only the kinds asked for, each job to one worker.
    let a = store.claim_job("w1", &["ingest"]).await.unwrap().unwrap();
    assert_eq!((a.id, a.attempts, a.status.as_str()), (first, 1, "running"));
    assert!(a.lease_until.unwrap() > Timestamp::now().plus_millis(290_000));
    let b = store.claim_job("w2", &["ingest"]).await.unwrap().unwrap();
    assert_eq!(b.id, second);
    assert!(store.claim_job("w3", &["ingest"]).await.unwrap().is_none());

    // Heartbeats report progress; only the holder's count.
    assert!(store
        .heartbeat_job(first, "w1", Some((3, 10)))
        .await
        .unwrap());
    assert!(!store.heartbeat_job(first, "w2", None).await.unwrap());
    assert_eq!(store.job(first).await.unwrap().unwrap().progress_done, 3);

    // A failure with attempts left goes back to the queue at the retry time.
    let retry_at = Timestamp::now().plus_millis(60_000);
    let failed = store
        .fail_job(first, "w1", "boom", Some(retry_at))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, "queued");
    assert!(
        store.claim_job("w1", &["ingest"]).await.unwrap().is_none(),
        "not due yet"
    );
    // Out of attempts: failed for good, with the error.
    let failed = store
        .fail_job(second, "w2", "bad input", Some(retry_at))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.last_error.as_deref()),
        ("failed", Some("bad input"))
    );
    assert!(!store.complete_job(second, "w2").await.unwrap());
    store.retry_job(second).await.unwrap();
    let again = store.claim_job("w2", &["ingest"]).await.unwrap().unwrap();
    assert_eq!((again.id, again.attempts), (second, 1));
    assert!(store.complete_job(second, "w2").await.unwrap());
    assert!(
        store.retry_job(second).await.is_err(),
        "a succeeded job is not retried"
    );

    // The watchdog: an expired lease is re-queued, or failed when out of attempts.
    let short = store.enqueue_job(&job("sweep", 2, 0)).await.unwrap();
    let last = store.enqueue_job(&job("sweep", 1, 0)).await.unwrap();
    assert_eq!(
        store.claim_job("w9", &["sweep"]).await.unwrap().unwrap().id,
        short
    );
    assert_eq!(
        store.claim_job("w9", &["sweep"]).await.unwrap().unwrap().id,
        last
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let swept = store.sweep_expired_jobs().await.unwrap();
    assert_eq!(swept.requeued, 1);
    assert_eq!(
        swept.failed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![last]
    );
    assert!(
        !store.complete_job(short, "w9").await.unwrap(),
        "the lost lease is not honoured"
    );
    assert_eq!(
        store.claim_job("w8", &["sweep"]).await.unwrap().unwrap().id,
        short
    );

    // A stopping worker hands its job back without spending the attempt.
    let handed = store.enqueue_job(&job("handback", 1, 300)).await.unwrap();
    let claimed = store.claim_job("w5", &["handback"]).await.unwrap().unwrap();
    assert_eq!((claimed.id, claimed.attempts), (handed, 1));
    assert!(!store.release_job(handed, "someone-else").await.unwrap());
    assert!(store.release_job(handed, "w5").await.unwrap());
    let back = store.job(handed).await.unwrap().unwrap();
    assert_eq!((back.status.as_str(), back.attempts), ("queued", 0));
    assert_eq!(
        store
            .claim_job("w6", &["handback"])
            .await
            .unwrap()
            .unwrap()
            .attempts,
        1
    );

    // Cancelling a running job makes its worker's heartbeat fail.
    let c = store.claim_job("w1", &["backup"]).await.unwrap().unwrap();
    assert_eq!(c.id, other);
    assert!(store.cancel_job(other).await.unwrap());
    assert!(!store.heartbeat_job(other, "w1", None).await.unwrap());
    assert!(!store.cancel_job(other).await.unwrap());
    let counts = store.job_counts().await.unwrap();
    assert!(
        counts.contains(&("backup".into(), "cancelled".into(), 1)),
        "{counts:?}"
    );
}

/// Many workers claiming at once never get the same job.
pub async fn concurrent_claims_never_share_a_job(backend: Backend) {
    let Some((store, _dir)) = fresh(backend).await else {
        return;
    };
    for _ in 0..200 {
        store
            .enqueue_job(&NewJob {
                kind: "ingest".into(),
                subject: None,
                payload: json!({}),
                max_attempts: 1,
                timeout_secs: 300,
            })
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(j) = store
                .claim_job(&format!("w{w}"), &["ingest"])
                .await
                .unwrap()
            {
                got.push(j.id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let n = all.len();
    all.sort_by_key(|id| id.to_string());
    all.dedup();
    assert_eq!((n, all.len()), (200, 200));
}

/// A unit vector pointing mostly along axis `i` of `dims`.
fn axis(dims: usize, i: usize, tilt: f32) -> Vec<f32> {
    let mut v = vec![0.0f32; dims];
    v[i % dims] = 1.0;
    v[(i + 1) % dims] = tilt;
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// Keyword and vector candidates: ranked, filtered to what the caller may read inside the
/// statement, narrowed by document, kind and date, and gone with their chunks. On SQLite
/// through the in-memory index (the default).
pub async fn search_story(backend: Backend) {
    search_story_in(backend, true).await;
}

/// The same story on SQLite's FTS5 and sqlite-vec tables, with the in-memory index off.
#[tokio::test]
async fn search_story_on_fts5_and_sqlite_vec() {
    search_story_in(Backend::Sqlite, false).await;
}

async fn search_story_in(backend: Backend, memory_index: bool) {
    use cairn_store::search::SearchFilter;
    let Some((store, _dir)) = fresh(backend).await else {
        return;
    };
    store.set_search_index(memory_index);
    // As the server sets it up: FTS5 kept only when it is the keyword index.
    store.set_keyword_tables(!memory_index).await.unwrap();
    let (ann, bob, _cat) = users(&store).await;
    let research = store.create_collection(ann, "Research", "").await.unwrap();
    let private = store.create_collection(bob, "Bob's", "").await.unwrap();
    let mut docs = Vec::new();
    for (i, (collection, by)) in [(research.id, ann), (research.id, ann), (private.id, bob)]
        .into_iter()
        .enumerate()
    {
        let mut d = document(collection, by, &format!("sha{i}"));
        if i == 1 {
            d.kind = "pdf".into();
        }
        store
            .insert_document(by, &d, &ingest_job(d.id), None)
            .await
            .unwrap();
        let texts = [
            format!("granite ridges and summit cairns, document {i}"),
            format!("river valleys in spring, document {i}"),
        ];
        let rows: Vec<ChunkRow> = texts
            .iter()
            .enumerate()
            .map(|(o, t)| chunk(&d, o as i32, t))
            .collect();
        assert!(store
            .store_chunks_then(d.id, None, &rows, false)
            .await
            .unwrap());
        assert_eq!(
            store.document(d.id).await.unwrap().unwrap().status,
            "indexing"
        );
        docs.push(d);
    }
    let model = "test/axes";
    let dims = 8;
    // Vectors: chunk ordinal 0 of doc i along axis i, ordinal 1 along axis 4 + i.
    for (i, d) in docs.iter().enumerate() {
        let pending = store.chunks_needing_vectors(d.id, model, 10).await.unwrap();
        assert_eq!(pending.len(), 2);
        let vectors: Vec<(i64, Vec<f32>)> = pending
            .iter()
            .enumerate()
            .map(|(o, c)| (c.seq, axis(dims, if o == 0 { i } else { 4 + i }, 0.1)))
            .collect();
        assert_eq!(store.store_vectors(model, &vectors).await.unwrap(), 2);
        assert_eq!(store.vector_progress(d.id, model).await.unwrap(), (2, 2));
        assert!(store
            .chunks_needing_vectors(d.id, model, 10)
            .await
            .unwrap()
            .is_empty());
        // A second model's vectors are separate.
        assert_eq!(
            store
                .chunks_needing_vectors(d.id, "other", 10)
                .await
                .unwrap()
                .len(),
            2
        );
        assert!(store.finish_document(d.id).await.unwrap());
    }
    let all = SearchFilter::default();
    let terms = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();

    // Keyword: Ann finds both of her documents' granite chunks, never Bob's.
    let kw = store
        .keyword_candidates(ann, &terms("granite cairns"), &all, 10)
        .await
        .unwrap();
    assert_eq!(kw.len(), 2, "{kw:?}");
    assert!(kw.windows(2).all(|w| w[0].score >= w[1].score));
    let found = store
        .found_chunks(ann, &kw.iter().map(|c| c.seq).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(found.iter().all(|c| c.collection_id == research.id));
    // Query syntax is only words: nothing breaks, nothing is injected.
    for q in ["\"", "NEAR", "*", "-", "' OR 1=1 --", "granite\" OR \"x"] {
        store
            .keyword_candidates(ann, &[q.to_owned()], &all, 10)
            .await
            .unwrap();
    }
    // Bob's own collection; and what Bob may not read he cannot fetch by number.
    let kw_bob = store
        .keyword_candidates(bob, &terms("granite"), &all, 10)
        .await
        .unwrap();
    assert_eq!(kw_bob.len(), 1);
    assert!(store
        .found_chunks(bob, &[kw[0].seq])
        .await
        .unwrap()
        .is_empty());

    // Vectors: nearest first, and only readable ones even when the nearest is not.
    let near_bobs = axis(dims, 2, 0.0);
    let v = store
        .vector_candidates(ann, model, &near_bobs, &all, 3)
        .await
        .unwrap();
    assert_eq!(v.len(), 3, "k results among what Ann may read: {v:?}");
    let seqs: Vec<i64> = v.iter().map(|c| c.seq).collect();
    let owners = store.found_chunks(ann, &seqs).await.unwrap();
    assert_eq!(owners.len(), 3);
    let v_bob = store
        .vector_candidates(bob, model, &near_bobs, &all, 3)
        .await
        .unwrap();
    assert!((v_bob[0].score - 1.0).abs() < 0.02, "{v_bob:?}");
    let top = store.found_chunks(bob, &[v_bob[0].seq]).await.unwrap();
    assert_eq!(top[0].document_id, docs[2].id);
    // Another model's vectors are never compared.
    assert!(store
        .vector_candidates(ann, "other", &near_bobs, &all, 3)
        .await
        .unwrap()
        .is_empty());

    // Narrowing: a collection, a document, a kind, a time window.
    let only_pdf = SearchFilter {
        kinds: Some(vec!["pdf".into()]),
        ..SearchFilter::default()
    };
    let v = store
        .vector_candidates(ann, model, &axis(dims, 0, 0.0), &only_pdf, 10)
        .await
        .unwrap();
    let found = store
        .found_chunks(ann, &v.iter().map(|c| c.seq).collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|c| c.document_id == docs[1].id));
    let kw = store
        .keyword_candidates(ann, &terms("granite"), &only_pdf, 10)
        .await
        .unwrap();
    assert_eq!(kw.len(), 1);
    let one_doc = SearchFilter {
        documents: Some(vec![docs[0].id]),
        ..SearchFilter::default()
    };
    let v = store
        .vector_candidates(ann, model, &axis(dims, 1, 0.0), &one_doc, 10)
        .await
        .unwrap();
    assert_eq!(v.len(), 2);
    let future = SearchFilter {
        created_after: Some(Timestamp::now().plus_millis(60_000)),
        ..SearchFilter::default()
    };
    assert!(store
        .vector_candidates(ann, model, &axis(dims, 1, 0.0), &future, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .keyword_candidates(ann, &terms("granite"), &future, 10)
        .await
        .unwrap()
        .is_empty());
    let not_mine = SearchFilter {
        collections: Some(vec![private.id]),
        ..SearchFilter::default()
    };
    assert!(store
        .vector_candidates(ann, model, &near_bobs, &not_mine, 10)
        .await
        .unwrap()
        .is_empty());

    // Deleting a document takes its vectors and keyword entries with it.
    store.delete_document(ann, docs[0].id).await.unwrap();
    let v = store
        .vector_candidates(ann, model, &axis(dims, 0, 0.0), &all, 10)
        .await
        .unwrap();
    assert_eq!(v.len(), 2, "only the PDF's chunks remain: {v:?}");
    // Sharing gives access at once.
    store
        .share_collection(bob, private.id, ann, CollectionRole::Viewer)
        .await
        .unwrap();
    assert_eq!(
        store
            .vector_candidates(ann, model, &near_bobs, &all, 10)
            .await
            .unwrap()
            .len(),
        4
    );

    // Collections record their model.
    assert!(store
        .collection_embedding(research.id)
        .await
        .unwrap()
        .is_none());
    store
        .set_collection_embedding(research.id, model, dims)
        .await
        .unwrap();
    assert_eq!(
        store.collection_embedding(research.id).await.unwrap(),
        Some((model.to_owned(), dims as i32))
    );
    let to_embed = store.collections_to_embed("next/model").await.unwrap();
    assert_eq!(to_embed.len(), 2);
    assert_eq!(
        store
            .documents_to_embed(research.id, "next/model")
            .await
            .unwrap(),
        vec![docs[1].id]
    );
    // The in-memory index answered (SQLite), and holds exactly the live chunks.
    let stats = store.search_index_stats();
    match (backend, memory_index) {
        (Backend::Sqlite, true) => {
            let stats = stats.expect("the index was built");
            assert_eq!((stats.chunks, stats.vectors), (4, 4), "{stats:?}");
        }
        _ => assert!(stats.is_none()),
    }
}

/// Two processes on one SQLite file: what one writes, the other's in-memory index answers with
/// at its very next query — added, removed, re-embedded — and after the change feed was pruned
/// behind its back it still answers correctly (from the database) and rebuilds.
#[tokio::test]
async fn the_memory_index_follows_writes_from_another_process() {
    use cairn_store::search::SearchFilter;
    use cairn_store::{ConnectOptions, Db};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let writer = Store::new(Db::connect(&ConnectOptions::new(&url)).await.unwrap());
    cairn_store::migrate::run(writer.db()).await.unwrap();
    writer.set_search_index(false);
    let reader = Store::new(Db::connect(&ConnectOptions::new(&url)).await.unwrap());
    let (ann, _, _) = users(&writer).await;
    let col = writer.create_collection(ann, "Notes", "").await.unwrap();
    let all = SearchFilter::default();
    let add = |sha: &'static str, text: &'static str| {
        let writer = writer.clone();
        async move {
            let d = document(col.id, ann, sha);
            writer
                .insert_document(ann, &d, &ingest_job(d.id), None)
                .await
                .unwrap();
            let rows = vec![chunk(&d, 0, text)];
            writer
                .store_chunks_then(d.id, None, &rows, false)
                .await
                .unwrap();
            let pending = writer.chunks_needing_vectors(d.id, "m", 10).await.unwrap();
            let v: Vec<(i64, Vec<f32>)> = pending
                .iter()
                .map(|c| (c.seq, axis(4, sha.len() % 4, 0.0)))
                .collect();
            writer.store_vectors("m", &v).await.unwrap();
            writer.finish_document(d.id).await.unwrap();
            d
        }
    };
    let seqs = |c: Vec<cairn_store::search::Candidate>| c.iter().map(|c| c.seq).collect::<Vec<_>>();
    let word = |w: &str| vec![w.to_owned()];

    let first = add("a", "alpha bravo").await;
    assert_eq!(
        reader
            .keyword_candidates(ann, &word("alpha"), &all, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(reader
        .search_index_ready(std::time::Duration::from_secs(5))
        .await
        .unwrap());
    assert_eq!(reader.search_index_stats().unwrap().chunks, 1);

    // Added elsewhere: found at once, by word and by vector.
    let second = add("bb", "alpha charlie").await;
    let kw = reader
        .keyword_candidates(ann, &word("alpha"), &all, 10)
        .await
        .unwrap();
    assert_eq!(kw.len(), 2);
    let v = reader
        .vector_candidates(ann, "m", &axis(4, 2, 0.0), &all, 1)
        .await
        .unwrap();
    let found = reader.found_chunks(ann, &seqs(v)).await.unwrap();
    assert_eq!(found[0].document_id, second.id);
    assert_eq!(reader.search_index_stats().unwrap().vectors, 2);

    // Removed elsewhere: gone at once.
    writer.delete_document(ann, first.id).await.unwrap();
    let kw = reader
        .keyword_candidates(ann, &word("bravo"), &all, 10)
        .await
        .unwrap();
    assert!(kw.is_empty(), "{kw:?}");

    // Changes pruned before the reader saw them: still right, then rebuilt.
    add("ccc", "delta echo").await;
    writer
        .prune_search_changes(Timestamp::now().plus_millis(1_000))
        .await
        .unwrap();
    let kw = reader
        .keyword_candidates(ann, &word("delta"), &all, 10)
        .await
        .unwrap();
    assert_eq!(kw.len(), 1);
    assert!(reader
        .search_index_ready(std::time::Duration::from_secs(5))
        .await
        .unwrap());
    let stats = reader.search_index_stats().unwrap();
    assert_eq!((stats.chunks, stats.removed), (2, 0), "{stats:?}");
    assert_eq!(
        reader
            .keyword_candidates(ann, &word("delta"), &all, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    // Following: chunks written elsewhere are folded in without a query asking for them.
    let follow = reader
        .follow_search_index(std::time::Duration::from_millis(50))
        .expect("SQLite follows");
    add("dddd", "foxtrot golf").await;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while reader.search_index_stats().unwrap().chunks < 3 {
        assert!(
            std::time::Instant::now() < until,
            "the index did not follow"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    follow.abort();
}

/// The FTS5 table is emptied when the in-memory index takes over, left alone by writes while
/// off, and rebuilt complete when switched back on; keyword counts agree either way.
#[tokio::test]
async fn the_fts5_table_is_kept_only_while_it_answers() {
    let Some((store, _dir)) = fresh(Backend::Sqlite).await else {
        return;
    };
    let Pool::Sqlite(pool) = store.db().pool() else {
        unreachable!()
    };
    let fts_rows = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM chunks_fts WHERE chunks_fts MATCH 'granite'",
        )
        .fetch_one(pool)
        .await
        .unwrap()
    };
    let (ann, _, _) = users(&store).await;
    let c = store.create_collection(ann, "Notes", "").await.unwrap();
    let mut add = Vec::new();
    for (sha, n) in [("one", 30), ("two", 20)] {
        let doc = document(c.id, ann, sha);
        store
            .insert_document(ann, &doc, &ingest_job(doc.id), None)
            .await
            .unwrap();
        let chunks: Vec<ChunkRow> = (0..n)
            .map(|i| chunk(&doc, i, &format!("granite ridge {i}")))
            .collect();
        add.push((doc, chunks));
    }
    let (first, first_chunks) = &add[0];
    assert!(store
        .store_chunks(first.id, None, first_chunks)
        .await
        .unwrap());
    assert_eq!(
        fts_rows().await,
        30,
        "maintained by default (migration 0010)"
    );

    // Off: emptied at once, untouched by new chunks; the in-memory index answers.
    assert!(store.set_keyword_tables(false).await.unwrap());
    assert!(!store.set_keyword_tables(false).await.unwrap(), "no change");
    assert_eq!(fts_rows().await, 0);
    let (second, second_chunks) = &add[1];
    assert!(store
        .store_chunks(second.id, None, second_chunks)
        .await
        .unwrap());
    assert_eq!(fts_rows().await, 0);
    assert_eq!(store.index_rows_of(second.id).await.unwrap(), (20, 20));
    assert_eq!(store.keyword_match_count(ann, "granite").await.unwrap(), 50);
    store.delete_document(ann, first.id).await.unwrap();
    assert_eq!(store.index_rows_of(first.id).await.unwrap(), (0, 0));
    // With neither index able to answer, a keyword query says so (503 at the API), not 500.
    store.set_search_index(false);
    let found = store
        .keyword_candidates(
            ann,
            &["granite".to_owned()],
            &cairn_store::search::SearchFilter::default(),
            10,
        )
        .await;
    assert!(matches!(found, Err(StoreError::IndexBuilding)), "{found:?}");
    store.set_search_index(true);

    // On again: rebuilt from the chunks there are, complete.
    assert!(store.set_keyword_tables(true).await.unwrap());
    assert_eq!(fts_rows().await, 20);
    assert_eq!(store.index_rows_of(second.id).await.unwrap(), (20, 20));
    store.delete_document(ann, second.id).await.unwrap();
    assert_eq!(fts_rows().await, 0, "deletes are followed again");
}
