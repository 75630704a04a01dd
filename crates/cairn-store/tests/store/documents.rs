//! Collections, documents, chunks and the job queue, on both backends.

use cairn_store::collections::CollectionRole;
use cairn_store::documents::{ChunkRow, DocumentFilter, DocumentRow};
use cairn_store::jobs::NewJob;
use cairn_store::{Backend, Id, Json, Store, StoreError, Timestamp};
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
    let now = Timestamp::now();
    DocumentRow {
        id: Id::new(),
        collection_id: collection,
        uploaded_by: Some(by),
        filename: "notes.md".into(),
        kind: "markdown".into(),
        size_bytes: 1234,
        content_sha256: sha.into(),
        blob_key: format!("blobs/{sha}"),
        sealed_key: vec![1, 2, 3],
        status: "queued".into(),
        error_code: None,
        error_message: None,
        progress_done: 0,
        progress_total: 0,
        title: None,
        chunk_count: 0,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        deleted_by: None,
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

async fn users(store: &Store) -> (Id, Id, Id) {
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
