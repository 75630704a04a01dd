//! `cairn doctor`: look at everything a deployment depends on and say, for each problem, how
//! to fix it. Reads only; changes nothing (it does not migrate, generate keys or start jobs).

use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, StorageBackend};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
pub struct Finding {
    pub level: Level,
    pub check: &'static str,
    pub finding: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

fn ok(check: &'static str, finding: impl Into<String>) -> Finding {
    Finding {
        level: Level::Ok,
        check,
        finding: finding.into(),
        fix: String::new(),
    }
}

fn bad(
    level: Level,
    check: &'static str,
    finding: impl Into<String>,
    fix: impl Into<String>,
) -> Finding {
    Finding {
        level,
        check,
        finding: finding.into(),
        fix: fix.into(),
    }
}

/// Free bytes on the filesystem holding `path`.
fn free_bytes(path: &std::path::Path) -> Option<(u64, u64)> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some((
        s.f_bavail.saturating_mul(s.f_frsize),
        s.f_blocks.saturating_mul(s.f_frsize),
    ))
}

const PROBE: Duration = Duration::from_secs(5);

/// Every check, in order.
pub async fn examine(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    // Configuration as production would judge it.
    let problems = crate::config::production::problems(config);
    if problems.is_empty() {
        out.push(ok(
            "configuration",
            "valid; production mode would accept it",
        ));
    } else {
        let level = if config.mode == crate::config::Mode::Production {
            Level::Fail
        } else {
            Level::Warn
        };
        for p in problems {
            out.push(bad(level, "configuration", p.message.clone(), p.fix));
        }
    }
    // The data directory.
    let dir = &config.data_dir;
    match std::fs::metadata(dir) {
        Err(e) => out.push(bad(
            Level::Fail,
            "data directory",
            format!("{}: {e}", dir.display()),
            "create it owner-only (`install -d -m 700 DIR`) or set CAIRN_DATA_DIR",
        )),
        Ok(meta) => {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            let probe = dir.join(".cairn-doctor-check");
            let writable = std::fs::write(&probe, b"").and_then(|_| std::fs::remove_file(&probe));
            match writable {
                Err(e) => out.push(bad(
                    Level::Fail,
                    "data directory",
                    format!("{} is not writable: {e}", dir.display()),
                    "give Cairn's user ownership of it",
                )),
                Ok(()) if mode & 0o077 != 0 => out.push(bad(
                    Level::Warn,
                    "data directory",
                    format!(
                        "{} has mode {mode:o}: others can read secrets and data",
                        dir.display()
                    ),
                    format!("chmod 700 {}", dir.display()),
                )),
                Ok(()) => out.push(ok(
                    "data directory",
                    format!("{} (mode {mode:o})", dir.display()),
                )),
            }
            if let Some((free, total)) = free_bytes(dir) {
                let pct = if total > 0 {
                    free as f64 * 100.0 / total as f64
                } else {
                    100.0
                };
                let text = format!("{:.1} GB free ({pct:.0}%)", free as f64 / 1e9);
                if free < 1_000_000_000 || pct < 5.0 {
                    out.push(bad(Level::Fail, "free disk", text, "free space or grow the volume: uploads, the database and backups need room"));
                } else if pct < 15.0 {
                    out.push(bad(
                        Level::Warn,
                        "free disk",
                        text,
                        "plan more space; backups are full copies (see backup.keep_*)",
                    ));
                } else {
                    out.push(ok("free disk", text));
                }
            }
            let secrets = dir.join("secrets").join(crate::keys::DATA_KEY_FILE);
            if config.data_key.is_none() && !secrets.exists() {
                out.push(bad(Level::Warn, "data key", "none yet: it is generated at first start", "after the first start, copy secrets/data_key somewhere safe, apart from backups"));
            } else {
                out.push(ok("data key", "present (keep a copy apart from backups)"));
            }
        }
    }
    // The database and its schema.
    let db = match tokio::time::timeout(PROBE * 3, crate::app::connect_db(config)).await {
        Ok(Ok(db)) => {
            out.push(ok(
                "database",
                cairn_store::redact_url(&config.effective_database_url()),
            ));
            Some(db)
        }
        Ok(Err(e)) => {
            out.push(bad(
                Level::Fail,
                "database",
                e.to_string(),
                "start the database, or fix CAIRN_DATABASE_URL",
            ));
            None
        }
        Err(_) => {
            out.push(bad(
                Level::Fail,
                "database",
                "no answer in 15 s",
                "check the database host and network",
            ));
            None
        }
    };
    if let Some(db) = &db {
        match cairn_store::migrate::status(db).await {
            Ok(s) if s.current > s.latest => out.push(bad(Level::Fail, "schema", format!("version {} is newer than this Cairn knows ({})", s.current, s.latest), "run the newer Cairn that wrote it, or restore a backup")),
            Ok(s) if !s.pending.is_empty() => out.push(bad(Level::Warn, "schema", format!("version {}; {} migration(s) pending", s.current, s.pending.len()), "`cairn migrate --dry-run` lists them; `cairn serve` or `cairn migrate` applies them")),
            Ok(s) => out.push(ok("schema", format!("version {} (current)", s.current))),
            Err(e) => out.push(bad(Level::Fail, "schema", e.to_string(), "check the database user's rights")),
        }
        {
            let server = db.server_time().await;
            if let Ok(Some(t)) = server {
                let skew = (chrono::Utc::now() - t).num_milliseconds().abs();
                if skew > 5_000 {
                    out.push(bad(Level::Warn, "clock", format!("{:.1} s apart from the database server", skew as f64 / 1000.0), "run NTP (chrony, systemd-timesyncd) on both: tokens, TOTP and schedules use the clock"));
                } else {
                    out.push(ok(
                        "clock",
                        format!("within {skew} ms of the database server"),
                    ));
                }
            }
        }
    }
    // Redis.
    if let Some(url) = &config.redis_url {
        let redacted = cairn_store::redact_url(url.expose());
        let ping = async {
            let client = redis::Client::open(url.expose())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        match tokio::time::timeout(PROBE, ping).await {
            Ok(Ok(_)) => out.push(ok("redis", redacted)),
            Ok(Err(e)) => out.push(bad(Level::Fail, "redis", format!("{redacted}: {e}"), "start Redis or fix CAIRN_REDIS_URL; without it replicas keep their own rate limits")),
            Err(_) => out.push(bad(Level::Fail, "redis", format!("{redacted}: no answer in 5 s"), "check the Redis host and network")),
        }
    }
    // File storage.
    match crate::blobs::BlobStore::from_config(config) {
        Err(e) => out.push(bad(
            Level::Fail,
            "file storage",
            e.to_string(),
            "fix storage.*",
        )),
        Ok(blobs) => match tokio::time::timeout(PROBE, blobs.ping()).await {
            Ok(Ok(())) => out.push(ok("file storage", blobs.describe.clone())),
            Ok(Err(e)) => out.push(bad(
                Level::Fail,
                "file storage",
                format!("{}: {e}", blobs.describe),
                if config.storage.backend == StorageBackend::S3 {
                    "check the bucket, endpoint and credentials (storage.s3_*)"
                } else {
                    "check the blobs directory's ownership"
                },
            )),
            Err(_) => out.push(bad(
                Level::Fail,
                "file storage",
                format!("{}: no answer in 5 s", blobs.describe),
                "check the S3 endpoint and network",
            )),
        },
    }
    // Backups.
    match crate::backup::Destination::from_config(config) {
        Err(e) => out.push(bad(Level::Fail, "backups", e.to_string(), "fix backup.*")),
        Ok(dest) => match tokio::time::timeout(PROBE, dest.list()).await {
            Ok(Ok(list)) => {
                let newest = list.iter().filter_map(|b| b.header.as_ref()).next();
                match (newest, &config.backup.schedule) {
                    (None, None) => out.push(bad(Level::Warn, "backups", "none, and none scheduled", "set backup.schedule (e.g. \"0 3 * * *\") or run `cairn backup create` from cron")),
                    (None, Some(_)) => out.push(bad(Level::Warn, "backups", format!("none yet in {}", dest.describe), "the schedule makes the first one; `cairn backup create` makes one now")),
                    (Some(h), _) => {
                        let age = chrono::DateTime::parse_from_rfc3339(&h.created_at).map(|t| chrono::Utc::now() - t.with_timezone(&chrono::Utc)).ok();
                        let hours = age.map(|a| a.num_hours()).unwrap_or(0);
                        let text = format!("{} in {}; newest {} h old", list.len(), dest.describe, hours);
                        if hours > 48 {
                            out.push(bad(Level::Warn, "backups", text, "check the log for `backup failed` and that some process runs jobs"));
                        } else {
                            out.push(ok("backups", text));
                        }
                    }
                }
                if config.backup.destination == crate::config::BackupDestination::Dir {
                    use std::os::unix::fs::MetadataExt;
                    let dir = config
                        .backup
                        .dir
                        .clone()
                        .unwrap_or_else(|| config.data_dir.join("backups"));
                    let device = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.dev()).ok();
                    if device(&dir).is_some() && device(&dir) == device(&config.data_dir) {
                        out.push(bad(Level::Warn, "backups", "kept on the same filesystem as the data", "set backup.dir to another disk, use backup.destination = \"s3\", or copy them off the machine"));
                    }
                }
            }
            Ok(Err(e)) => out.push(bad(
                Level::Fail,
                "backups",
                format!("{}: {e}", dest.describe),
                "check the backup destination",
            )),
            Err(_) => out.push(bad(
                Level::Fail,
                "backups",
                "the destination gave no answer in 5 s",
                "check the backup destination",
            )),
        },
    }
    // TLS: the certificate Cairn serves, or the proxy in front of it.
    match crate::tls::certificate_on_disk(config) {
        _ if !config.tls.enabled() => {
            if config
                .public_url
                .as_ref()
                .is_some_and(|u| u.scheme() == "http")
                && config.mode == crate::config::Mode::Production
            {
                out.push(bad(Level::Warn, "tls", "public_url is plain http", "set tls.mode, or serve Cairn over HTTPS through a reverse proxy (docs/operations.md#tls)"));
            }
        }
        Err(e) => out.push(bad(
            Level::Fail,
            "tls certificate",
            e,
            "fix tls.cert_file / tls.key_file (PEM chain, leaf first, and its key)",
        )),
        Ok(None) => out.push(bad(
            Level::Warn,
            "tls certificate",
            "none yet",
            "it is generated (self-signed) or obtained (acme) when the server starts",
        )),
        Ok(Some(info)) => {
            let days = (info.not_after - crate::tls::certs::now()) as f64 / 86_400.0;
            let text = format!(
                "{} for {}, expires in {days:.0} days",
                info.serial.chars().take(16).collect::<String>(),
                info.names.join(", ")
            );
            let missing: Vec<String> = config
                .tls_hosts()
                .into_iter()
                .filter(|h| !info.covers(std::slice::from_ref(h)))
                .collect();
            if days <= 0.0 {
                out.push(bad(
                    Level::Fail,
                    "tls certificate",
                    format!("expired: {text}"),
                    "renew it (files), or start the server so it renews (self-signed, acme)",
                ));
            } else if !missing.is_empty() {
                out.push(bad(
                    Level::Warn,
                    "tls certificate",
                    format!("does not cover {}: {text}", missing.join(", ")),
                    "issue one for every name in tls.hosts / public_url",
                ));
            } else if days < 14.0 {
                out.push(bad(
                    Level::Warn,
                    "tls certificate",
                    text,
                    "renew it soon; acme and self-signed renew by themselves while the server runs",
                ));
            } else {
                out.push(ok("tls certificate", text));
            }
        }
    }
    // Model providers (their keys are sealed with the data key).
    if let (Some(db), Ok(data_key)) = (&db, crate::backup::cli::existing_data_key(config)) {
        let store = cairn_store::Store::new(db.clone());
        if let Ok(providers) = store.providers().await {
            for p in providers.iter() {
                let result = match crate::chat::client_for(config, &data_key, p) {
                    Ok(client) => tokio::time::timeout(PROBE * 2, client.models())
                        .await
                        .map_err(|_| "no answer in 10 s".to_owned())
                        .and_then(|r| r.map_err(|e| e.to_string())),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(models) => out.push(ok("model provider", format!("{} ({} models)", p.name, models.len()))),
                    Err(e) => out.push(bad(Level::Warn, "model provider", format!("{}: {e}", p.name), "check its URL and key in the admin settings; answers from its models fail until it answers")),
                }
            }
        }
    }
    if let Some(db) = db {
        db.close().await;
    }
    out
}

pub async fn run(config: Config, json: bool) -> ExitCode {
    let findings = examine(&config).await;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&findings).unwrap_or_default()
        );
    } else {
        for f in &findings {
            let mark = match f.level {
                Level::Ok => "ok  ",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            println!("{mark}  {:<16} {}", f.check, f.finding);
            if !f.fix.is_empty() {
                println!("      {:<16} fix: {}", "", f.fix);
            }
        }
    }
    if findings.iter().any(|f| f.level == Level::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
