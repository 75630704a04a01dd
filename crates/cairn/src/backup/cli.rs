//! `cairn backup create | list | verify | restore`.

use std::process::ExitCode;

use clap::Subcommand;

use super::{Context, Destination};
use crate::app;
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Make a backup now (online: the server may keep running), then apply rotation.
    Create {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Do not delete old backups afterwards.
        #[arg(long)]
        no_rotate: bool,
    },
    /// List the backups in the destination, newest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Read a backup end to end and check every checksum; change nothing.
    Verify {
        /// A backup's name in the destination, or a path to a backup file.
        backup: String,
    },
    /// Restore a backup into the configured database and file storage. Stop Cairn first.
    Restore {
        /// A backup's name in the destination, or a path to a backup file.
        backup: String,
        /// Overwrite a database that already holds a workspace (SQLite keeps the old file
        /// beside the new one).
        #[arg(long)]
        replace: bool,
    },
}

fn fail(what: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("cairn: {what}: {e}");
    ExitCode::FAILURE
}

/// The data key without generating one: a restore needs the original.
pub(crate) fn existing_data_key(config: &Config) -> Result<zeroize::Zeroizing<[u8; 32]>, String> {
    let file = config
        .data_dir
        .join("secrets")
        .join(crate::keys::DATA_KEY_FILE);
    if config.data_key.is_none() && !file.exists() {
        return Err(format!(
            "no data key: put the original workspace's `data_key` at {} or set CAIRN_DATA_KEY_FILE",
            file.display()
        ));
    }
    let (keys, _) = crate::keys::KeyRing::load_or_generate(config).map_err(|e| e.to_string())?;
    Ok(keys.data_key)
}

pub async fn run(config: Config, cmd: &BackupCommand) -> ExitCode {
    match cmd {
        BackupCommand::Create { json, no_rotate } => create(config, *json, *no_rotate).await,
        BackupCommand::List { json } => list(config, *json).await,
        BackupCommand::Verify { backup } => verify(config, backup).await,
        BackupCommand::Restore { backup, replace } => restore(config, backup, *replace).await,
    }
}

/// The database and file storage a backup reads or a restore writes.
async fn open_storage(
    config: &Config,
) -> Result<(cairn_store::Db, crate::blobs::BlobStore), ExitCode> {
    let db = app::connect_db(config)
        .await
        .map_err(|e| fail("cannot open the database", e))?;
    let blobs = crate::blobs::BlobStore::from_config(config)
        .map_err(|e| fail("cannot open file storage", e))?;
    Ok((db, blobs))
}

async fn create(config: Config, json: bool, no_rotate: bool) -> ExitCode {
    if let Err(e) = crate::datadir::prepare(&config.data_dir) {
        return fail("cannot use the data directory", e);
    }
    let (keys, _) = match crate::keys::KeyRing::load_or_generate(&config) {
        Ok(k) => k,
        Err(e) => return fail("cannot load keys", e),
    };
    let (db, blobs) = match open_storage(&config).await {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let ctx = Context {
        config: &config,
        db: &db,
        blobs: &blobs,
        data_key: &keys.data_key,
    };
    let created = match super::create(&ctx, "manual").await {
        Ok(c) => c,
        Err(e) => return fail("backup failed (older backups are untouched)", e),
    };
    db.close().await;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&created).unwrap_or_default()
        );
    } else {
        println!(
            "{} — {:.1} MB, {} tables ({} rows), {} files ({:.1} MB), in {:.1} s, to {}",
            created.name,
            created.bytes as f64 / 1e6,
            created.tables,
            created.rows,
            created.blobs,
            created.blob_bytes as f64 / 1e6,
            created.seconds,
            created.destination
        );
        if created.missing_blobs > 0 {
            println!(
                "  {} document(s) were purged while it ran; their files are not in it",
                created.missing_blobs
            );
        }
    }
    if !no_rotate {
        match super::rotate(&config).await {
            Ok(gone) => {
                for name in gone {
                    if !json {
                        println!("removed {name} (rotation)");
                    }
                }
            }
            Err(e) => return fail("rotation failed", e),
        }
    }
    ExitCode::SUCCESS
}

async fn list(config: Config, json: bool) -> ExitCode {
    let dest = match Destination::from_config(&config) {
        Ok(d) => d,
        Err(e) => return fail("cannot open the backup destination", e),
    };
    let items = match dest.list().await {
        Ok(i) => i,
        Err(e) => return fail("cannot list backups", e),
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&items).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    if items.is_empty() {
        println!("no backups in {}", dest.describe);
    }
    for b in items {
        match &b.header {
            Some(h) => println!(
                "{}  {:>10.1} MB  {}  schema {}  {}  Cairn {}  ({})",
                b.name,
                b.bytes as f64 / 1e6,
                h.created_at,
                h.schema_version,
                h.backend,
                h.cairn_version,
                h.trigger
            ),
            None => println!(
                "{}  {:>10.1} MB  unreadable: {}",
                b.name,
                b.bytes as f64 / 1e6,
                b.problem.as_deref().unwrap_or("?")
            ),
        }
    }
    ExitCode::SUCCESS
}

async fn verify(config: Config, backup: &str) -> ExitCode {
    let key = match existing_data_key(&config) {
        Ok(k) => k,
        Err(e) => return fail("cannot verify", e),
    };
    match super::verify(&config, &key, backup).await {
        Ok(m) => {
            println!(
                "{backup}: intact — schema {}, {} tables ({} rows), {} files ({:.1} MB), made {} by Cairn {}",
                m.header.schema_version,
                m.tables.len(),
                m.tables.iter().map(|t| t.rows).sum::<u64>(),
                m.blobs,
                m.blob_bytes as f64 / 1e6,
                m.header.created_at,
                m.header.cairn_version
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("{backup} fails verification"), e),
    }
}

async fn restore(config: Config, backup: &str, replace: bool) -> ExitCode {
    if let Err(e) = crate::datadir::prepare(&config.data_dir) {
        return fail("cannot use the data directory", e);
    }
    let _lock = match crate::datadir::hold_exclusive(&config.data_dir) {
        Ok(l) => l,
        Err(e) => return fail("cannot restore", e),
    };
    let key = match existing_data_key(&config) {
        Ok(k) => k,
        Err(e) => return fail("cannot restore", e),
    };
    let (db, blobs) = match open_storage(&config).await {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let restored = match super::restore(&config, &db, &blobs, &key, backup, replace).await {
        Ok(r) => r,
        Err(e) => return fail("restore refused or failed (nothing was replaced)", e),
    };
    db.close().await;
    // Bring the restored schema up to this binary's.
    let db = match app::connect_db(&config).await {
        Ok(db) => db,
        Err(e) => return fail("cannot reopen the database", e),
    };
    let applied = match cairn_store::migrate::run(&db).await {
        Ok(a) => a,
        Err(e) => return fail("the restored database could not be migrated", e),
    };
    db.close().await;
    println!(
        "restored {backup}: schema {} ({} tables, {} rows), {} files{}",
        restored.schema_version,
        restored.tables,
        restored.rows,
        restored.blobs,
        if applied.is_empty() {
            String::new()
        } else {
            format!(", then migrated to schema {}", restored.migrated_to)
        }
    );
    if let Some(previous) = restored.previous {
        println!("the previous database is kept at {}", previous.display());
    }
    ExitCode::SUCCESS
}
