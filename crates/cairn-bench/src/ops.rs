//! The operations scenario: a backup of a workspace of a given size (database plus files),
//! timed end to end through `cairn backup create` with its peak memory, then verified; and TLS:
//! full handshakes per second and keep-alive HTTPS throughput next to plain HTTP.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::accounts::create_owner;
use crate::documents::{markdown, post_json, sign_in, upload_body, wait_ready};
use crate::load;
use crate::server::Server;

/// Sizes of the workspace the backup copies.
pub struct BackupSize {
    pub db_mb: u64,
    pub blob_mb: u64,
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                files_under(&p, out);
            } else {
                out.push(p);
            }
        }
    }
}

/// What one run of a `cairn` command cost.
struct Run {
    seconds: f64,
    cpu_seconds: f64,
    peak_rss: u64,
    stdout: String,
}

/// Run `cairn` with `args` on `data` under GNU time (`/usr/bin/time`, Debian package `time`)
/// for its wall time, CPU time and peak RSS.
fn run_timed(binary: &Path, data: &Path, args: &[&str]) -> anyhow::Result<Run> {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "cairn-bench-time %e %U %S %M"])
        .arg(binary)
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env("CAIRN_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .context("running /usr/bin/time (apt-get install time)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "cairn {args:?} failed: {stderr}");
    let line = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("cairn-bench-time "))
        .context("no timing from /usr/bin/time")?;
    let f: Vec<f64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    anyhow::ensure!(f.len() == 4, "unexpected timing line: {line}");
    Ok(Run {
        seconds: f[0],
        cpu_seconds: f[1] + f[2],
        peak_rss: (f[3] * 1024.0) as u64,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

/// Build a workspace: Markdown ingested until the database holds `db_mb`, then the stored
/// files replaced by incompressible bytes (like their ciphertext) until they hold `blob_mb`.
fn workspace(binary: &Path, data: &Path, size: &BackupSize) -> anyhow::Result<(u64, u64)> {
    create_owner(binary, data)?;
    let env = [
        ("CAIRN_RATE_LIMIT__ENABLED", "false"),
        ("CAIRN_UPLOADS__MAX_FILE_BYTES", "67108864"),
        ("CAIRN_UPLOADS__USER_QUOTA_BYTES", "0"),
        ("CAIRN_INGEST__WORKERS", "2"),
        ("CAIRN_BACKUP__SCHEDULE", "off"),
        ("CAIRN_LOG_LEVEL", "warn"),
    ];
    let s = Server::start(binary, data, &env)?;
    let token = sign_in(s.addr)?;
    let c = post_json(s.addr, "/api/collections", &token, r#"{"name":"Bench"}"#)?;
    let collection = c["id"].as_str().context("no collection id")?.to_owned();
    let db = data.join("cairn.db");
    let target = size.db_mb * 1_000_000;
    let mut ids = Vec::new();
    let mut i = 0;
    // The database grows behind the uploads; check it after each batch is indexed.
    while std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0) < target {
        let mut batch = Vec::new();
        for _ in 0..8 {
            let body = markdown(i * 7919, 8 << 20);
            batch.push(upload_body(
                s.addr,
                &token,
                &collection,
                &format!("notes-{i}.md"),
                &body,
            )?);
            i += 1;
        }
        wait_ready(s.addr, &token, &batch)?;
        ids.extend(batch);
    }
    s.stop()?;
    let db_bytes = std::fs::metadata(&db)?.len();
    let mut blobs = Vec::new();
    files_under(&data.join("blobs"), &mut blobs);
    anyhow::ensure!(!blobs.is_empty(), "no stored files");
    let each = size.blob_mb * 1_000_000 / blobs.len() as u64;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; 1 << 20];
    for path in &blobs {
        let mut f = std::fs::File::create(path)?;
        let mut left = each;
        while left > 0 {
            for word in buf.chunks_exact_mut(8) {
                // xorshift64*: fast, and as incompressible as ciphertext for zstd.
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                word.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
            }
            let n = left.min(buf.len() as u64) as usize;
            f.write_all(&buf[..n])?;
            left -= n as u64;
        }
    }
    Ok((db_bytes, dir_bytes(&data.join("blobs"))))
}

pub fn backup(binary: &Path, size: &BackupSize) -> anyhow::Result<serde_json::Value> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let built = Instant::now();
    let (db_bytes, blob_bytes) = workspace(binary, &data, size)?;
    eprintln!(
        "ops: workspace of {:.0} MB database + {:.0} MB files built in {:.0} s",
        db_bytes as f64 / 1e6,
        blob_bytes as f64 / 1e6,
        built.elapsed().as_secs_f64()
    );
    // The files were just written and sit in the page cache (24 GiB here): this measures
    // Cairn's pipeline (snapshot, zstd, encryption, checksums), not the disk.
    let create = run_timed(
        binary,
        &data,
        &["backup", "create", "--json", "--no-rotate"],
    )?;
    let created: serde_json::Value =
        serde_json::from_str(&create.stdout).with_context(|| create.stdout.clone())?;
    let name = created["name"]
        .as_str()
        .context("no backup name")?
        .to_owned();
    let verify = run_timed(binary, &data, &["backup", "verify", &name])?;
    let input = (db_bytes + blob_bytes) as f64 / 1e6;
    let backup_mb = created["bytes"].as_f64().unwrap_or(0.0) / 1e6;
    Ok(json!({
        "database_bytes": db_bytes,
        "blob_bytes": blob_bytes,
        "backup_bytes": created["bytes"],
        "create_seconds": create.seconds,
        "create_cpu_seconds": create.cpu_seconds,
        "create_mb_per_sec": input / create.seconds,
        "create_peak_rss_bytes": create.peak_rss,
        "verify_seconds": verify.seconds,
        "verify_cpu_seconds": verify.cpu_seconds,
        "verify_mb_per_sec": backup_mb / verify.seconds,
        "verify_peak_rss_bytes": verify.peak_rss,
    }))
}

pub fn tls(
    runtime: &tokio::runtime::Runtime,
    binary: &Path,
    duration: Duration,
    connections: usize,
) -> anyhow::Result<serde_json::Value> {
    let data = tempfile::tempdir()?;
    let quiet = ("CAIRN_LOG_LEVEL", "warn");
    // Plain HTTP first.
    let plain = Server::start(binary, data.path(), &[quiet])?;
    let mut rows = Vec::new();
    for (label, per_request) in [("keep-alive", false), ("new connection per request", true)] {
        let r = runtime.block_on(load::run_over(
            plain.addr,
            load::get("/api/health/live", ""),
            connections,
            duration,
            load::Transport {
                tls: None,
                connection_per_request: per_request,
            },
        ))?;
        rows.push(("http", label, r));
    }
    plain.stop()?;
    let tls_env = [quiet, ("CAIRN_TLS__MODE", "self-signed")];
    let s = Server::start_tls(binary, data.path(), &tls_env)?;
    let root = std::fs::read(data.path().join("tls").join("self-signed.crt"))?;
    let connector = load::tls_connector(&root)?;
    for (label, per_request) in [
        ("keep-alive", false),
        ("new connection per request (full handshake)", true),
    ] {
        let r = runtime.block_on(load::run_over(
            s.addr,
            load::get("/api/health/live", ""),
            connections,
            duration,
            load::Transport {
                tls: Some(connector.clone()),
                connection_per_request: per_request,
            },
        ))?;
        rows.push(("https", label, r));
    }
    let rss = s.rss_bytes().unwrap_or(0);
    s.stop()?;
    Ok(json!({
        "connections": connections,
        "duration_secs": duration.as_secs(),
        "https_rss_after_bytes": rss,
        "runs": rows.iter().map(|(scheme, label, r)| json!({
            "scheme": scheme,
            "mode": label,
            "requests": r.requests,
            "errors": r.errors,
            "requests_per_sec": r.requests_per_sec,
            "p50_ms": r.p50_ms,
            "p99_ms": r.p99_ms,
        })).collect::<Vec<_>>(),
    }))
}

pub fn run(
    runtime: &tokio::runtime::Runtime,
    binary: &Path,
    json_path: &Path,
    size: &BackupSize,
    duration: Duration,
    connections: usize,
) -> anyhow::Result<()> {
    let tls = tls(runtime, binary, duration, connections)?;
    let backup = backup(binary, size)?;
    println!("Cairn operations benchmark");
    println!("{:<56} {:>14}  target", "measure", "value");
    let db_mb = backup["database_bytes"].as_f64().unwrap_or(0.0) / 1e6;
    let blob_mb = backup["blob_bytes"].as_f64().unwrap_or(0.0) / 1e6;
    println!(
        "{:<56} {:>9.1} MB/s  >= 100 MB/s",
        format!("backup create ({db_mb:.0} MB database + {blob_mb:.0} MB files)"),
        backup["create_mb_per_sec"].as_f64().unwrap_or(0.0)
    );
    println!(
        "{:<56} {:>10.1} s / {:.1} s",
        "  wall time / CPU time (user + system)",
        backup["create_seconds"].as_f64().unwrap_or(0.0),
        backup["create_cpu_seconds"].as_f64().unwrap_or(0.0)
    );
    println!(
        "{:<56} {:>12.1} MB  < 100 MB",
        "  peak RSS of `cairn backup create`",
        backup["create_peak_rss_bytes"].as_f64().unwrap_or(0.0) / 1_048_576.0
    );
    println!(
        "{:<56} {:>9.1} MB/s",
        "backup verify (of the backup file)",
        backup["verify_mb_per_sec"].as_f64().unwrap_or(0.0)
    );
    println!(
        "{:<56} {:>12.1} MB",
        "  peak RSS of `cairn backup verify`",
        backup["verify_peak_rss_bytes"].as_f64().unwrap_or(0.0) / 1_048_576.0
    );
    if let Some(runs) = tls["runs"].as_array() {
        for r in runs {
            println!(
                "{:<56} {:>11.0} /s  p50 {:.2} ms, p99 {:.2} ms",
                format!(
                    "{} {} ({connections} conns)",
                    r["scheme"].as_str().unwrap_or(""),
                    r["mode"].as_str().unwrap_or("")
                ),
                r["requests_per_sec"].as_f64().unwrap_or(0.0),
                r["p50_ms"].as_f64().unwrap_or(0.0),
                r["p99_ms"].as_f64().unwrap_or(0.0),
            );
        }
    }
    let report = json!({ "backup": backup, "tls": tls });
    let path = json_path.with_file_name("ops.json");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("written to {}", path.display());
    Ok(())
}
