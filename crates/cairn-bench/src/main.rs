//! Cairn's benchmark harness. It runs the real `cairn` release binary as an operator would and
//! measures it from outside: cold start to the first healthy answer, idle memory, binary size,
//! and HTTP throughput and latency with its own keep-alive load generator. It prints a table
//! and writes the figures as JSON. Later capabilities add their scenarios here.
//!
//! `cargo build --release -p cairn && cargo run --release -p cairn-bench`

mod accounts;
mod chat;
mod documents;
mod load;
mod ops;
mod search;
mod server;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(name = "cairn-bench", about = "Measure a cairn release binary")]
struct Args {
    /// The cairn binary. Default: the release build in CARGO_TARGET_DIR (or ./target).
    #[arg(long)]
    cairn: Option<PathBuf>,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results/chassis.json")]
    json: PathBuf,
    /// Seconds of load for each throughput run.
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Load-generator threads (they share the machine with the server).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Cold starts to time (the median is reported).
    #[arg(long, default_value_t = 15)]
    starts: usize,
    /// Ingest: how many times to run the ingestion measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Which measurements: chassis, accounts, documents, search, chat, ops, or all; or
    /// ingest, the documents scenario's Markdown ingestion figure alone, `--runs` times.
    #[arg(long, default_value = "all")]
    only: String,
    /// Ops: the database size of the workspace to back up, in MB.
    #[arg(long, default_value_t = 1000)]
    backup_db_mb: u64,
    /// Ops: the stored files of the workspace to back up, in MB.
    #[arg(long, default_value_t = 5000)]
    backup_blob_mb: u64,
}

fn default_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("release").join("cairn")
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    values[values.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = args.cairn.clone().unwrap_or_else(default_binary);
    anyhow::ensure!(
        binary.is_file(),
        "no cairn binary at {} — build it with `cargo build --release -p cairn` or pass --cairn",
        binary.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    if args.only == "ops" || args.only == "all" {
        ops::run(
            &runtime,
            &binary,
            &args.json,
            &ops::BackupSize {
                db_mb: args.backup_db_mb,
                blob_mb: args.backup_blob_mb,
            },
            Duration::from_secs(args.duration_secs.min(10)),
            args.connections,
        )?;
        if args.only == "ops" {
            return Ok(());
        }
    }
    if args.only == "chat" || args.only == "all" {
        chat::run(&runtime, &binary, &args.json)?;
        if args.only == "chat" {
            return Ok(());
        }
    }
    if args.only == "search" || args.only == "all" {
        search::run(&runtime, &binary, &args.json)?;
        if args.only == "search" {
            return Ok(());
        }
    }
    if args.only == "ingest" {
        // Only the headline ingestion figure, several times: for comparing changes.
        return documents::run_ingest(&binary, &args.json, args.runs.max(1));
    }
    if args.only == "documents" || args.only == "all" {
        documents::run(&runtime, &binary, &args.json)?;
        if args.only == "documents" {
            return Ok(());
        }
    }
    if args.only == "accounts" || args.only == "all" {
        accounts::run(
            &runtime,
            &binary,
            &args.json,
            args.duration_secs,
            args.connections,
        )?;
        if args.only == "accounts" {
            return Ok(());
        }
    }
    let data = tempfile::tempdir()?;
    let size_bytes = std::fs::metadata(&binary)?.len();

    // First start creates the data directory, secrets and schema; not timed.
    server::Server::start(&binary, data.path(), &[])?.stop()?;

    let mut starts = Vec::new();
    for _ in 0..args.starts {
        let s = server::Server::start(&binary, data.path(), &[])?;
        starts.push(s.ready_after.as_secs_f64() * 1000.0);
        s.stop()?;
    }
    let cold_start_ms = median(&mut starts);

    let s = server::Server::start(&binary, data.path(), &[])?;
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = s.rss_bytes().context("reading the server's RSS")?;
    s.stop()?;

    let mut runs = Vec::new();
    for (label, extra) in [
        ("default config (access log on)", vec![]),
        (
            "access log off",
            vec![("CAIRN_LOG_LEVEL", "info,cairn::http=warn")],
        ),
    ] {
        let s = server::Server::start(&binary, data.path(), &extra)?;
        let result = runtime.block_on(load::run(
            s.addr,
            load::get("/api/health", ""),
            args.connections,
            Duration::from_secs(args.duration_secs),
        ))?;
        let rss_after = s.rss_bytes().unwrap_or(0);
        s.stop()?;
        runs.push((label, result, rss_after));
    }

    println!("Cairn chassis benchmark ({} cores)", num_cpus());
    println!("{:<44} {:>14}  target", "measure", "value");
    println!(
        "{:<44} {:>11.1} ms  < 100 ms",
        "cold start to first 200 (median)", cold_start_ms
    );
    println!(
        "{:<44} {:>11.1} MB  < 25 MB",
        "idle RSS",
        idle_rss as f64 / 1_048_576.0
    );
    println!(
        "{:<44} {:>11.1} MB  < 40 MB",
        "release binary size",
        size_bytes as f64 / 1_048_576.0
    );
    for (label, r, rss) in &runs {
        println!(
            "{:<44} {:>11.0} /s  >= 30000/s",
            format!("/api/health req/s, {} conns, {label}", args.connections),
            r.requests_per_sec
        );
        println!(
            "{:<44} {:>8.2}/{:.2} ms",
            "  p50/p99 latency", r.p50_ms, r.p99_ms
        );
        println!(
            "{:<44} {:>11.1} MB",
            "  RSS after the run",
            *rss as f64 / 1_048_576.0
        );
    }

    let report = json!({
        "cores": num_cpus(),
        "binary": binary.display().to_string(),
        "cold_start_ms_median": cold_start_ms,
        "cold_start_ms_all": starts,
        "idle_rss_bytes": idle_rss,
        "binary_size_bytes": size_bytes,
        "throughput": runs.iter().map(|(label, r, rss)| json!({
            "label": label,
            "path": "/api/health",
            "connections": args.connections,
            "duration_secs": args.duration_secs,
            "loadgen_threads": args.threads,
            "requests": r.requests,
            "errors": r.errors,
            "requests_per_sec": r.requests_per_sec,
            "p50_ms": r.p50_ms,
            "p99_ms": r.p99_ms,
            "rss_after_bytes": rss,
        })).collect::<Vec<_>>(),
    });
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    println!("written to {}", args.json.display());
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
