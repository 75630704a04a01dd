//! The accounts scenario: authenticated `GET /api/me` throughput, sign-ins per second at the
//! configured Argon2 parameters, access-token verification time, and the in-process rate
//! limiter's memory with a million distinct addresses.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use crate::load;
use crate::server::Server;

pub(crate) const EMAIL: &str = "bench@example.com";
pub(crate) const PASSWORD: &str = "correct horse battery staple";

pub(crate) fn create_owner(binary: &Path, data: &Path) -> anyhow::Result<()> {
    let mut child = Command::new(binary)
        .args([
            "admin",
            "create",
            "--email",
            EMAIL,
            "--password-stdin",
            "--data-dir",
        ])
        .arg(data)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{PASSWORD}\n").as_bytes())?;
    anyhow::ensure!(child.wait()?.success(), "cairn admin create failed");
    Ok(())
}

/// One blocking request; the response body.
pub(crate) fn request(addr: SocketAddr, bytes: &[u8]) -> anyhow::Result<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(bytes)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= len {
                return Ok(body.to_owned());
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn verify_micros() -> anyhow::Result<(f64, f64, f64)> {
    let signing = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let keys = cairn::accounts::tokens::TokenKeys::new(&signing, "bench", &[1u8; 32])
        .map_err(anyhow::Error::msg)?;
    let (user, session) = (cairn_store::Id::new(), cairn_store::Id::new());
    let n = 20_000;
    let started = Instant::now();
    let mut token = String::new();
    for _ in 0..n {
        token = keys
            .issue(user, session, cairn_store::Timestamp::now(), 900)
            .map_err(anyhow::Error::msg)?;
    }
    let issue = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    let started = Instant::now();
    for _ in 0..n {
        keys.verify(&token).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let verify = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    let started = Instant::now();
    for _ in 0..n {
        keys.verify_uncached(&token)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let uncached = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    Ok((issue, verify, uncached))
}

/// Token check plus the standing check that revocation and suspension rest on, as a request
/// does it: verify the token, then look the session and user up (from the standing cache, kept
/// current by every change). Against a real migrated SQLite store; microseconds per check.
fn verify_with_standing_micros(runtime: &tokio::runtime::Runtime) -> anyhow::Result<(f64, f64)> {
    use cairn_store::accounts::{NewUser, SessionRow};
    use cairn_store::standing::StandingCache;
    use cairn_store::{Id, Timestamp};
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    runtime.block_on(async {
        let db = cairn_store::Db::connect(&cairn_store::ConnectOptions::new(url)).await?;
        cairn_store::migrate::run(&db).await?;
        let store = cairn_store::Store::with_standing_cache(
            db,
            StandingCache::new(Duration::from_secs(5), 100_000),
        );
        let user = store
            .create_user(&NewUser {
                email: "verify@example.com".into(),
                display_name: "Verify".into(),
                password_hash: String::new(),
                role: "member".into(),
                state: "active".into(),
            })
            .await?;
        let now = Timestamp::now();
        let session = SessionRow {
            id: Id::new(),
            user_id: user.id,
            created_at: now,
            last_used_at: now,
            expires_at: now.plus_millis(3_600_000),
            revoked_at: None,
            revoked_reason: None,
            user_agent: None,
            ip: None,
        };
        store.create_session(&session, "bench-refresh-hash").await?;
        let signing = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let keys = cairn::accounts::tokens::TokenKeys::new(&signing, "bench", &[1u8; 32])
            .map_err(anyhow::Error::msg)?;
        let token = keys
            .issue(user.id, session.id, Timestamp::now(), 900)
            .map_err(anyhow::Error::msg)?;
        let check = |store: &cairn_store::Store| {
            let claims = keys.verify(&token).map_err(|e| anyhow::anyhow!("{e}"));
            let store = store.clone();
            async move {
                let claims = claims?;
                let found = store.auth_context(claims.sub, claims.sid).await?;
                let found = found.context("session missing")?;
                anyhow::ensure!(found.1.revoked_at.is_none() && found.0.state == "active");
                Ok::<_, anyhow::Error>(())
            }
        };
        let n = 20_000;
        let started = Instant::now();
        for _ in 0..n {
            check(&store).await?;
        }
        let cached = started.elapsed().as_secs_f64() * 1e6 / n as f64;
        // The same with the cache voided each time: a database read per check.
        let n = 2_000;
        let started = Instant::now();
        for _ in 0..n {
            store.standing().forget_all();
            check(&store).await?;
        }
        let uncached = started.elapsed().as_secs_f64() * 1e6 / n as f64;
        store.db().close().await;
        Ok((cached, uncached))
    })
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 4096
}

fn limiter_megabytes() -> f64 {
    let before = rss_bytes();
    let limiter = cairn_ratelimit::MemoryLimiter::new(1_000_000);
    // An hour-long window: every key stays active (nothing to sweep) for the whole loop, so this
    // measures a million live entries.
    let quota = cairn_ratelimit::Quota {
        limit: 60,
        period: Duration::from_secs(3600),
    };
    for i in 0..1_000_000u32 {
        let ip = Ipv4Addr::from(0x0A00_0000 + i).to_string();
        limiter.check(ip.as_bytes(), &quota);
    }
    let used = rss_bytes().saturating_sub(before);
    assert!(limiter.len() > 990_000, "{}", limiter.len());
    used as f64 / 1_048_576.0
}

pub fn run(
    runtime: &tokio::runtime::Runtime,
    binary: &Path,
    json_path: &Path,
    duration_secs: u64,
    connections: usize,
) -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    create_owner(binary, data.path())?;
    // The limiter counts every request as in production, with the per-principal limit raised
    // out of reach so none is refused.
    let env = [
        ("CAIRN_RATE_LIMIT__GENERAL_PER_MINUTE", "1000000"),
        ("CAIRN_RATE_LIMIT__AUTH_PER_MINUTE", "1000000"),
        ("CAIRN_RATE_LIMIT__ACCOUNT_PER_MINUTE", "1000000"),
        ("CAIRN_LOG_LEVEL", "info,cairn::http=warn"),
    ];
    let s = Server::start(binary, data.path(), &env)?;
    let body = request(
        s.addr,
        &load::post_json(
            "/api/auth/sign-in",
            &json!({ "email": EMAIL, "password": PASSWORD }).to_string(),
        ),
    )?;
    let session: serde_json::Value = serde_json::from_str(&body).with_context(|| body.clone())?;
    let token = session["access_token"]
        .as_str()
        .context("no access token")?
        .to_owned();
    let me = runtime.block_on(load::run(
        s.addr,
        load::get("/api/me", &format!("Authorization: Bearer {token}\r\n")),
        connections,
        Duration::from_secs(duration_secs),
    ))?;
    let sign_in = runtime.block_on(load::run(
        s.addr,
        load::post_json(
            "/api/auth/sign-in",
            &json!({ "email": EMAIL, "password": PASSWORD }).to_string(),
        ),
        8,
        Duration::from_secs(duration_secs.min(10)),
    ))?;
    s.stop()?;
    let (issue_us, verify_us, uncached_us) = verify_micros()?;
    let (standing_us, standing_db_us) = verify_with_standing_micros(runtime)?;
    let limiter_mb = limiter_megabytes();

    println!("Cairn accounts benchmark");
    println!("{:<52} {:>12}  target", "measure", "value");
    println!(
        "{:<52} {:>9.0} /s  >= 20000/s",
        format!("GET /api/me (bearer token), {connections} conns"),
        me.requests_per_sec
    );
    println!(
        "{:<52} {:>6.2}/{:.2} ms",
        "  p50/p99 latency", me.p50_ms, me.p99_ms
    );
    println!(
        "{:<52} {:>9.1} /s",
        "sign-ins (Argon2id defaults), 8 conns", sign_in.requests_per_sec
    );
    println!(
        "{:<52} {:>6.2}/{:.2} ms",
        "  p50/p99 latency", sign_in.p50_ms, sign_in.p99_ms
    );
    println!(
        "{:<52} {:>9.1} µs",
        "access token issue (in process)", issue_us
    );
    println!(
        "{:<52} {:>9.1} µs",
        "access token signature check, uncached", uncached_us
    );
    println!(
        "{:<52} {:>9.1} µs",
        "access token verify, cached (in process)", verify_us
    );
    println!(
        "{:<52} {:>9.1} µs  < 20 µs",
        "token verify + revocation/standing check", standing_us
    );
    println!(
        "{:<52} {:>9.1} µs",
        "  the same, standing read from SQLite", standing_db_us
    );
    println!(
        "{:<52} {:>9.1} MB  < 64 MB",
        "rate limiter holding 1,000,000 addresses", limiter_mb
    );
    let report = json!({
        "me": { "requests_per_sec": me.requests_per_sec, "p50_ms": me.p50_ms, "p99_ms": me.p99_ms, "errors": me.errors, "connections": connections },
        "sign_in": { "requests_per_sec": sign_in.requests_per_sec, "p50_ms": sign_in.p50_ms, "p99_ms": sign_in.p99_ms, "errors": sign_in.errors },
        "token_issue_us": issue_us,
        "token_verify_us": verify_us,
        "token_verify_uncached_us": uncached_us,
        "token_and_standing_us": standing_us,
        "token_and_standing_from_db_us": standing_db_us,
        "rate_limit": "on, general limit raised out of reach",
        "limiter_1m_addresses_mb": limiter_mb,
    });
    let path = json_path.with_file_name("accounts.json");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("written to {}", path.display());
    Ok(())
}
