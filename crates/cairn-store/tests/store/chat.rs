//! Conversations (owner-only), providers and models, prices, and budgets that concurrent calls
//! cannot overspend.

use cairn_store::chat::{ConversationRow, MessageRow, ModelRow, PriceRow, ProviderRow};
use cairn_store::usage::{self, GroupBy, UsageEvent};
use cairn_store::{Backend, Id, Json, Store, StoreError, Timestamp};

use super::{fresh, users};

pub async fn conversations_story(backend: Backend) {
    let Some((store, _dir)) = fresh(backend).await else {
        return;
    };
    let (ann, bob, _) = users(&store).await;
    let now = Timestamp::now();
    let mut convs = Vec::new();
    for i in 0..3 {
        let c = ConversationRow {
            id: Id::new(),
            user_id: ann,
            title: format!("Chat {i}"),
            model: "extractive".into(),
            collections: (i == 0).then(|| Json(vec![Id::new()])),
            created_at: now,
            updated_at: now,
        };
        store.create_conversation(&c).await.unwrap();
        convs.push(c);
    }
    // Newest first, paged; nobody else sees them.
    let page = store.conversations_of(ann, None, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|c| c.id).collect::<Vec<_>>(),
        [convs[2].id, convs[1].id]
    );
    let rest = store
        .conversations_of(ann, Some(convs[1].id), 10)
        .await
        .unwrap();
    assert_eq!(rest, vec![convs[0].clone()]);
    assert!(store
        .conversations_of(bob, None, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .conversation_of(bob, convs[0].id)
        .await
        .unwrap()
        .is_none());

    // Messages: only the owner adds or reads them.
    let mut q = MessageRow::new(convs[0].id, "user", "How do I restart it?".into());
    store.add_message(ann, &q).await.unwrap();
    let mut a = MessageRow::new(convs[0].id, "assistant", "Use the switch [1].".into());
    a.model = Some("extractive".into());
    a.input_tokens = 120;
    a.output_tokens = 6;
    a.tokens_estimated = true;
    a.cost_micros = 42;
    a.latency_ms = Some(15);
    a.sources = Some(Json(serde_json::json!([{ "n": 1, "document_id": "x" }])));
    a.citations = Some(Json(serde_json::json!([{ "n": 1, "valid": true }])));
    store.add_message(ann, &a).await.unwrap();
    q.id = Id::new();
    assert!(matches!(
        store.add_message(bob, &q).await,
        Err(StoreError::NotFound)
    ));
    let msgs = store
        .messages_of(ann, convs[0].id, None, 10, false)
        .await
        .unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1], a);
    assert!(store
        .messages_of(bob, convs[0].id, None, 10, false)
        .await
        .unwrap()
        .is_empty());
    let recent = store.recent_messages(ann, convs[0].id, 1).await.unwrap();
    assert_eq!(recent, vec![a.clone()]);

    // Rename, then delete (with the messages); another user can do neither.
    let mut renamed = convs[0].clone();
    renamed.title = "Restarting".into();
    assert!(matches!(
        store.update_conversation(bob, &renamed).await,
        Err(StoreError::NotFound)
    ));
    store.update_conversation(ann, &renamed).await.unwrap();
    let got = store
        .conversation_of(ann, renamed.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.title, "Restarting");
    assert!(got.updated_at >= renamed.updated_at);
    assert!(matches!(
        store.delete_conversation(bob, renamed.id).await,
        Err(StoreError::NotFound)
    ));
    store.delete_conversation(ann, renamed.id).await.unwrap();
    assert!(store
        .messages_of(ann, renamed.id, None, 10, false)
        .await
        .unwrap()
        .is_empty());
}

pub async fn models_and_prices_story(backend: Backend) {
    let Some((store, _dir)) = fresh(backend).await else {
        return;
    };
    let now = Timestamp::now();
    let provider = ProviderRow {
        id: Id::new(),
        name: "local llama".into(),
        kind: "openai".into(),
        base_url: "http://127.0.0.1:8080/v1".into(),
        sealed_api_key: Some(vec![1, 2, 3]),
        created_at: now,
        updated_at: now,
    };
    store.create_provider(&provider).await.unwrap();
    let mut dup = provider.clone();
    dup.id = Id::new();
    assert!(matches!(
        store.create_provider(&dup).await,
        Err(StoreError::Conflict { .. })
    ));
    let model = ModelRow {
        id: Id::new(),
        name: "smol".into(),
        provider_id: provider.id,
        upstream_model: "smollm2-135m".into(),
        context_tokens: 2048,
        max_output_tokens: 256,
        roles: "member,admin,owner".into(),
        enabled: true,
        created_at: now,
        updated_at: now,
    };
    store.create_model(&model).await.unwrap();
    let (m, p) = store.model_named("smol").await.unwrap().unwrap();
    assert_eq!((m, p), (model.clone(), provider.clone()));
    assert!(store.model_named("nope").await.unwrap().is_none());
    let mut changed = model.clone();
    changed.enabled = false;
    changed.roles = "admin,owner".into();
    store.update_model(&changed).await.unwrap();
    assert_eq!(store.model(model.id).await.unwrap().unwrap(), changed);

    let price = PriceRow {
        model: "smol".into(),
        input_micros: 150_000,
        output_micros: 600_000,
        embedding_micros: 0,
        updated_at: now,
    };
    store.set_price(&price).await.unwrap();
    let mut dearer = price.clone();
    dearer.output_micros = 700_000;
    store.set_price(&dearer).await.unwrap();
    assert_eq!(store.prices().await.unwrap(), vec![dearer.clone()]);
    assert_eq!(store.price("smol").await.unwrap(), Some(dearer));

    // Deleting the provider deletes its models.
    store.delete_provider(provider.id).await.unwrap();
    assert!(store.models().await.unwrap().is_empty());
    assert!(matches!(
        store.delete_provider(provider.id).await,
        Err(StoreError::NotFound)
    ));
}

fn event(user: Id, model: &str, cost: i64) -> UsageEvent {
    UsageEvent {
        user_id: user,
        model: model.into(),
        kind: "chat",
        input_tokens: 100,
        output_tokens: 10,
        estimated: false,
        cost_micros: cost,
    }
}

pub async fn budgets_story(backend: Backend) {
    let Some((store, _dir)) = fresh(backend).await else {
        return;
    };
    let (ann, bob, _) = users(&store).await;
    let month = usage::month_of(Timestamp::now());
    let ann_s = usage::user_subject(ann);

    // No limits: anything is reserved; settling counts the real cost.
    let r = store
        .reserve_budget(ann, &month, 500)
        .await
        .unwrap()
        .unwrap();
    let s = store.budget_standing(&ann_s, &month).await.unwrap();
    assert_eq!((s.limit_micros, s.reserved_micros), (None, 500));
    store
        .settle_budget(Some(r), &event(ann, "smol", 120))
        .await
        .unwrap();
    let s = store.budget_standing(&ann_s, &month).await.unwrap();
    assert_eq!((s.spent_micros, s.reserved_micros), (120, 0));

    // A user limit: what would pass it is refused with where it stands.
    store.set_budget(&ann_s, 1_000, Some(bob)).await.unwrap();
    let refused = store
        .reserve_budget(ann, &month, 900)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.standing.subject, ann_s);
    assert_eq!(refused.standing.remaining_micros, Some(880));
    // Nothing was half-reserved (the workspace row is untouched too).
    let ws = store
        .budget_standing(usage::WORKSPACE, &month)
        .await
        .unwrap();
    assert_eq!(ws.reserved_micros, 0);
    assert_eq!(ws.spent_micros, 120);

    // The workspace limit applies to everyone.
    store.set_budget(usage::WORKSPACE, 300, None).await.unwrap();
    let refused = store
        .reserve_budget(bob, &month, 200)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.standing.subject, usage::WORKSPACE);
    assert_eq!(refused.standing.remaining_micros, Some(180));
    store.remove_budget(usage::WORKSPACE).await.unwrap();

    // Concurrent reservations never pass the limit: 20 calls of 100 against 880 remaining.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store: Store = store.clone();
        let month = month.clone();
        tasks.push(tokio::spawn(async move {
            store.reserve_budget(ann, &month, 100).await.unwrap()
        }));
    }
    let mut granted = Vec::new();
    for t in tasks {
        if let Ok(id) = t.await.unwrap() {
            granted.push(id);
        }
    }
    assert_eq!(granted.len(), 8, "880 remaining fits 8 reservations of 100");
    let s = store.budget_standing(&ann_s, &month).await.unwrap();
    assert_eq!((s.reserved_micros, s.remaining_micros), (800, Some(80)));

    // Settling releases the reservation; a stale one is released by the sweep.
    store
        .settle_budget(Some(granted[0]), &event(ann, "smol", 50))
        .await
        .unwrap();
    let released = store
        .release_stale_reservations(Timestamp::now().plus_millis(1_000))
        .await
        .unwrap();
    assert_eq!(released, 7);
    let s = store.budget_standing(&ann_s, &month).await.unwrap();
    assert_eq!((s.spent_micros, s.reserved_micros), (170, 0));

    // Summaries by user and by model.
    store
        .settle_budget(None, &event(bob, "other", 7))
        .await
        .unwrap();
    let start = Timestamp::now().plus_millis(-60_000);
    let end = Timestamp::now().plus_millis(60_000);
    let by_model = store
        .usage_summary(GroupBy::Model, start, end, None)
        .await
        .unwrap();
    assert_eq!(by_model.len(), 2);
    assert_eq!(
        (
            by_model[0].key.as_str(),
            by_model[0].calls,
            by_model[0].cost_micros
        ),
        ("smol", 2, 170)
    );
    let by_user = store
        .usage_summary(GroupBy::User, start, end, Some(bob))
        .await
        .unwrap();
    assert_eq!(by_user.len(), 1);
    assert_eq!(
        (by_user[0].key.clone(), by_user[0].input_tokens),
        (bob.to_string(), 100)
    );
    // By UTC day: every event here is from today.
    let by_day = store
        .usage_summary(GroupBy::Day, start, end, None)
        .await
        .unwrap();
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let yesterday = (chrono::Utc::now() - chrono::Duration::minutes(2))
        .format("%Y-%m-%d")
        .to_string();
    assert!(!by_day.is_empty() && by_day.len() <= 2, "{by_day:?}");
    assert!(by_day.iter().all(|d| d.key == today || d.key == yesterday));
    assert_eq!(by_day.iter().map(|d| d.calls).sum::<i64>(), 3);
    assert_eq!(by_day.iter().map(|d| d.cost_micros).sum::<i64>(), 177);
    assert_eq!(store.budgets().await.unwrap().len(), 1);
}
