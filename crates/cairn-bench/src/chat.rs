//! The chat scenario, against a real `cairn serve` and an in-process scripted provider:
//! - server overhead per streamed token: the CPU time Cairn spends relaying a 5,000-token answer
//!   (decoding the provider's stream, re-encoding it for the client), per token, next to the
//!   same answer's wall time straight from the provider and through Cairn;
//! - 1,000 concurrent answers from a provider at 20 tokens/s: Cairn's peak RSS, and how long
//!   each token takes from the provider to the client (the provider stamps each token with the
//!   time it sent it);
//! - from question to the request leaving for the provider (`prepare_ms`: retrieval, prompt,
//!   budget, the question stored) at 10,000 and 100,000 chunks.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use cairn_llm::scripted;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::accounts::{create_owner, EMAIL, PASSWORD};
use crate::server::Server;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn sign_in(addr: std::net::SocketAddr) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(2000)
            .build()?;
        let base = format!("http://{addr}");
        let v: Value = http
            .post(format!("{base}/api/auth/sign-in"))
            .json(&json!({ "email": EMAIL, "password": PASSWORD }))
            .send()
            .await?
            .json()
            .await?;
        let token = v["access_token"].as_str().context("no token")?.to_owned();
        Ok(Api { http, base, token })
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        let v: Value = resp.json().await?;
        anyhow::ensure!(status.is_success(), "{path}: {status} {v}");
        Ok(v)
    }

    /// A provider at `url` with `models` (name = upstream name).
    async fn provider(&self, url: &str, models: &[&str]) -> anyhow::Result<()> {
        let p = self
            .post(
                "/api/admin/providers",
                json!({ "name": "scripted", "kind": "openai", "base_url": url }),
            )
            .await?;
        for m in models {
            self.post(
                "/api/admin/models",
                json!({ "name": m, "provider_id": p["id"], "context_tokens": 16384,
                        "max_output_tokens": 8192 }),
            )
            .await?;
        }
        Ok(())
    }

    async fn conversation(&self, model: &str, grounded: bool) -> anyhow::Result<String> {
        let mut body = json!({ "model": model });
        if !grounded {
            body["collections"] = json!([]);
        }
        let c = self.post("/api/conversations", body).await?;
        Ok(c["id"].as_str().context("no id")?.to_owned())
    }

    /// Ask and read the whole stream; calls `on_token` with each token's text.
    async fn ask(
        &self,
        conversation: &str,
        question: &str,
        mut on_token: impl FnMut(&str),
    ) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!(
                "{}/api/conversations/{conversation}/messages",
                self.base
            ))
            .bearer_auth(&self.token)
            .json(&json!({ "content": question }))
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "ask: {}", resp.status());
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        let mut done = Value::Null;
        while let Some(chunk) = stream.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk?));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let mut event = "";
                let mut data = "";
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event: ") {
                        event = e;
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = d;
                    }
                }
                match event {
                    "token" => {
                        let v: Value = serde_json::from_str(data)?;
                        on_token(v["text"].as_str().unwrap_or(""));
                    }
                    "done" => done = serde_json::from_str(data)?,
                    "error" => anyhow::bail!("answer failed: {data}"),
                    _ => {}
                }
            }
        }
        anyhow::ensure!(!done.is_null(), "the stream ended without `done`");
        Ok(done)
    }
}

fn now_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

fn start(binary: &Path, data: &Path, env: &[(&str, &str)]) -> anyhow::Result<Server> {
    let mut all = vec![
        ("CAIRN_RATE_LIMIT__ENABLED", "false"),
        ("CAIRN_CHAT__MAX_CONCURRENT_STREAMS", "5000"),
        ("CAIRN_CHAT__MAX_STREAMS_PER_USER", "5000"),
        ("CAIRN_CHAT__MAX_ANSWER_CHARS", "10000000"),
        ("CAIRN_LOG_LEVEL", "warn"),
    ];
    all.extend_from_slice(env);
    Server::start(binary, data, &all)
}

/// Server time per streamed token: (through Cairn − straight from the provider) / tokens.
async fn token_overhead(binary: &Path, scripted: &scripted::Server) -> anyhow::Result<Value> {
    const N: usize = 5000;
    let model = format!("slow-0-{N}");
    let dir = tempfile::tempdir()?;
    create_owner(binary, dir.path())?;
    let server = start(binary, dir.path(), &[])?;
    let api = Api::sign_in(server.addr).await?;
    api.provider(&scripted.openai_url(), &[&model]).await?;
    let conv = api.conversation(&model, false).await?;
    let client = cairn_llm::Client::new(
        cairn_llm::Kind::OpenAi,
        &scripted.openai_url(),
        None,
        cairn_llm::Timeouts::default(),
        0,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let request = cairn_llm::ChatRequest {
        model: model.clone(),
        messages: vec![cairn_llm::Message::new(cairn_llm::Role::User, "go")],
        max_tokens: 8192,
        temperature: None,
    };
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    let mut cpu = 0.0;
    for round in 0..7 {
        let t = Instant::now();
        let mut stream = client
            .stream(&request)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut n = 0;
        while let Some(ev) = stream.next().await {
            if let Ok(cairn_llm::Event::Token(_)) = ev {
                n += 1;
            }
        }
        anyhow::ensure!(n == N, "direct: {n} tokens");
        let d = t.elapsed().as_secs_f64();
        let cpu_before = server.cpu_seconds().unwrap_or(0.0);
        let t = Instant::now();
        let mut n = 0;
        api.ask(&conv, "go", |_| n += 1).await?;
        anyhow::ensure!(n == N, "through cairn: {n} tokens");
        let c = t.elapsed().as_secs_f64();
        // The answer is stored after `done` is sent; let it finish before reading the clock.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if round > 0 {
            cpu += server.cpu_seconds().unwrap_or(0.0) - cpu_before;
            direct.push(d);
            through.push(c);
        }
    }
    server.stop()?;
    direct.sort_by(f64::total_cmp);
    through.sort_by(f64::total_cmp);
    let (d, c) = (percentile(&direct, 0.5), percentile(&through, 0.5));
    let per_token_us = cpu / (6 * N) as f64 * 1e6;
    eprintln!(
        "  {N} tokens: Cairn used {per_token_us:.1} µs of CPU per token (6 answers); wall time straight {:.1} ms, through Cairn {:.1} ms (medians)",
        d * 1000.0,
        c * 1000.0
    );
    Ok(
        json!({ "tokens": N, "cpu_us_per_token": per_token_us, "direct_ms": d * 1000.0,
               "through_cairn_ms": c * 1000.0 }),
    )
}

/// 1,000 answers at 20 tokens/s at once: peak RSS and per-token delivery latency.
async fn concurrent_streams(
    binary: &Path,
    scripted: &scripted::Server,
    streams: usize,
) -> anyhow::Result<Value> {
    let tokens_each = 40;
    let model = format!("clock-50-{tokens_each}");
    let dir = tempfile::tempdir()?;
    create_owner(binary, dir.path())?;
    let server = start(binary, dir.path(), &[])?;
    let api = std::sync::Arc::new(Api::sign_in(server.addr).await?);
    api.provider(&scripted.openai_url(), &[&model]).await?;
    let mut convs = Vec::with_capacity(streams);
    for _ in 0..streams {
        convs.push(api.conversation(&model, false).await?);
    }
    let idle_rss = server.rss_bytes().unwrap_or(0);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(streams);
    for (i, conv) in convs.into_iter().enumerate() {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            // Spread the starts over one token interval, as independent people would: streams
            // started in the same millisecond tick in lockstep and queue behind each other.
            tokio::time::sleep(Duration::from_micros((i as u64 * 50_000) / 1000 % 50_000)).await;
            let mut lat = Vec::with_capacity(tokens_each);
            api.ask(&conv, "count", |t| {
                if let Some(sent) = t
                    .trim()
                    .strip_prefix('@')
                    .and_then(|s| s.parse::<u128>().ok())
                {
                    lat.push((now_micros().saturating_sub(sent)) as f64 / 1000.0);
                }
            })
            .await
            .map(|_| lat)
        }));
    }
    // Sample the server's memory while the streams run.
    let mut peak_rss = 0u64;
    let mut sampling = true;
    let mut all = Vec::new();
    let mut failed = 0;
    let mut pending = futures::future::join_all(tasks);
    while sampling {
        tokio::select! {
            results = &mut pending => {
                for r in results {
                    match r {
                        Ok(Ok(l)) => all.extend(l),
                        _ => failed += 1,
                    }
                }
                sampling = false;
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                peak_rss = peak_rss.max(server.rss_bytes().unwrap_or(0));
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let hwm = server.peak_rss_bytes().unwrap_or(0);
    server.stop()?;
    all.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&all, 0.5), percentile(&all, 0.99));
    // The same load read straight from the provider, by the same machine: what the provider
    // and the client cost without Cairn in between.
    let mut direct = Vec::new();
    let mut tasks = Vec::with_capacity(streams);
    for i in 0..streams {
        let url = scripted.openai_url();
        let model = model.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros((i as u64 * 50_000) / 1000 % 50_000)).await;
            let client = cairn_llm::Client::new(
                cairn_llm::Kind::OpenAi,
                &url,
                None,
                cairn_llm::Timeouts::default(),
                0,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            let request = cairn_llm::ChatRequest {
                model,
                messages: vec![cairn_llm::Message::new(cairn_llm::Role::User, "count")],
                max_tokens: 100,
                temperature: None,
            };
            let mut stream = client
                .stream(&request)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut lat = Vec::new();
            while let Some(Ok(ev)) = stream.next().await {
                if let cairn_llm::Event::Token(t) = ev {
                    if let Some(sent) = t
                        .trim()
                        .strip_prefix('@')
                        .and_then(|s| s.parse::<u128>().ok())
                    {
                        lat.push(now_micros().saturating_sub(sent) as f64 / 1000.0);
                    }
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    for t in futures::future::join_all(tasks).await {
        if let Ok(Ok(l)) = t {
            direct.extend(l);
        }
    }
    direct.sort_by(f64::total_cmp);
    let (d50, d99) = (percentile(&direct, 0.5), percentile(&direct, 0.99));
    eprintln!(
        "  the same load straight from the provider: per token p50 {d50:.2} ms, p99 {d99:.2} ms"
    );
    eprintln!(
        "  {streams} streams × {tokens_each} tokens at 20/s: {failed} failed, {:.1} s; RSS idle {:.1} MB, peak {:.1} MB (VmHWM {:.1} MB); provider→client per token p50 {p50:.2} ms, p99 {p99:.2} ms",
        wall,
        idle_rss as f64 / 1e6,
        peak_rss as f64 / 1e6,
        hwm as f64 / 1e6
    );
    Ok(
        json!({ "streams": streams, "tokens_per_stream": tokens_each, "failed": failed,
               "wall_s": wall, "idle_rss_mb": idle_rss as f64 / 1e6,
               "peak_rss_mb": peak_rss as f64 / 1e6, "vm_hwm_mb": hwm as f64 / 1e6,
               "token_latency_p50_ms": p50, "token_latency_p99_ms": p99,
               "direct_token_latency_p50_ms": d50, "direct_token_latency_p99_ms": d99,
               "added_p50_ms": p50 - d50, "added_p99_ms": p99 - d99 }),
    )
}

/// From question to the request leaving, at `chunks` chunks (SQLite, keyword retrieval).
async fn prepare_latency(
    binary: &Path,
    scripted: &scripted::Server,
    chunks: usize,
) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    create_owner(binary, dir.path())?;
    {
        let url = format!("sqlite://{}", dir.path().join("cairn.db").display());
        let store = crate::search::open(&url).await?;
        let owner = store
            .user_by_email(EMAIL)
            .await?
            .context("the owner is missing")?
            .id;
        crate::search::fill_for(&store, owner, chunks).await?;
        store.db().close().await;
    }
    let server = start(binary, dir.path(), &[])?;
    let api = Api::sign_in(server.addr).await?;
    api.provider(&scripted.openai_url(), &["echo"]).await?;
    // Measure the steady state: wait for the in-memory search index the server builds at start.
    let t = std::time::Instant::now();
    loop {
        let metrics = api
            .http
            .get(format!("{}/metrics", api.base))
            .send()
            .await?
            .text()
            .await?;
        let held = metrics
            .lines()
            .find_map(|l| l.strip_prefix("cairn_search_index_chunks "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if held >= chunks {
            eprintln!(
                "  {chunks} chunks: search index ready {:.1} s after start",
                t.elapsed().as_secs_f64()
            );
            break;
        }
        anyhow::ensure!(
            t.elapsed() < std::time::Duration::from_secs(600),
            "the search index was not built"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let vocab = crate::search::vocabulary(20_000);
    let mut rng = crate::search::Rng(11);
    let mut took = Vec::new();
    for i in 0..120 {
        // A fresh conversation each time, so history does not grow.
        let conv = api.conversation("echo", true).await?;
        let words: Vec<&str> = (0..3 + i % 3)
            .map(|_| vocab[50 + rng.zipf(vocab.len() - 50)].as_str())
            .collect();
        let done = api.ask(&conv, &words.join(" "), |_| {}).await?;
        if i >= 20 {
            took.push(done["prepare_ms"].as_f64().unwrap_or(f64::NAN));
        }
    }
    server.stop()?;
    took.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&took, 0.5), percentile(&took, 0.99));
    eprintln!("  {chunks} chunks: question → request leaves p50 {p50:.2} ms, p99 {p99:.2} ms");
    Ok(json!({ "chunks": chunks, "p50_ms": p50, "p99_ms": p99 }))
}

pub fn run(
    runtime: &tokio::runtime::Runtime,
    binary: &Path,
    json_path: &Path,
) -> anyhow::Result<()> {
    runtime.block_on(async {
        let scripted = scripted::Server::start().await?;
        let mut out = serde_json::Map::new();
        eprintln!("chat: server overhead per streamed token");
        out.insert(
            "token_overhead".into(),
            token_overhead(binary, &scripted).await?,
        );
        let streams: usize = std::env::var("CAIRN_BENCH_STREAMS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000);
        eprintln!("chat: {streams} concurrent streams");
        out.insert(
            "concurrent_streams".into(),
            concurrent_streams(binary, &scripted, streams).await?,
        );
        let mut prep = Vec::new();
        let sizes: Vec<usize> = std::env::var("CAIRN_BENCH_CHAT_CHUNKS")
            .unwrap_or_else(|_| "10000,100000".into())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        for chunks in sizes {
            eprintln!("chat: question → request at {chunks} chunks");
            prep.push(prepare_latency(binary, &scripted, chunks).await?);
        }
        out.insert("prepare".into(), Value::Array(prep));
        let path = json_path.with_file_name("chat.json");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("chat: figures written to {}", path.display());
        Ok(())
    })
}
