//! Backups: create, list, verify, restore, rotate.
//!
//! A backup is one file (format in [`archive`]): a consistent snapshot of the database (see
//! `cairn_store::backup`) and every document's blob, compressed with zstd and encrypted with a
//! key of its own sealed by the data key. It is written to the destination (a directory, or
//! an S3 bucket) as a multipart upload that only appears under its name once complete: a
//! backup killed half-way leaves nothing that looks like a backup.
//!
//! Restoring reads the whole file once to check every checksum before it changes anything,
//! then a second time to apply it.

pub mod archive;
pub mod cli;
pub mod routes;

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_store::backup::{self as snap, Snapshot, TableInfo};
use cairn_store::{Backend, Db};
use chrono::{DateTime, Datelike, Utc};
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, WriteMultipart};
use serde::Serialize;

use crate::blobs::BlobStore;
use crate::config::{BackupDestination, Config};
use archive::{FileEntry, Hashing, Header, Manifest, MANIFEST_PATH, SUFFIX};

/// The job kind of a backup run by the queue.
pub const BACKUP_JOB: &str = "backup.create";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the backup is corrupt: {0}")]
    Corrupt(String),
    #[error("the backup was encrypted with another data key: restore needs the `data_key` of the workspace that made it (its secrets/data_key file or CAIRN_DATA_KEY_FILE)")]
    WrongKey,
    #[error("the backup is of schema version {backup}, newer than this Cairn knows ({binary}): restore it with Cairn {cairn} or later")]
    NewerSchema {
        backup: i64,
        binary: i64,
        cairn: String,
    },
    #[error("the backup is of a {backup} workspace, but the configured database is {configured}")]
    WrongBackend { backup: String, configured: String },
    #[error("no backup named {0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("database: {0}")]
    Store(#[from] cairn_store::StoreError),
    #[error("backup storage: {0}")]
    Destination(#[from] object_store::Error),
    #[error(transparent)]
    Blob(#[from] crate::blobs::BlobError),
    #[error("{0}")]
    Internal(String),
}

impl BackupError {
    /// A stable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            BackupError::Corrupt(_) => "backup_corrupt",
            BackupError::WrongKey => "backup_wrong_key",
            BackupError::NewerSchema { .. } => "backup_newer_schema",
            BackupError::WrongBackend { .. } => "backup_wrong_backend",
            BackupError::NotFound(_) => "not_found",
            BackupError::Refused(_) => "backup_refused",
            _ => "backup_failed",
        }
    }
}

fn corrupt_io(e: io::Error) -> BackupError {
    if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::UnexpectedEof {
        BackupError::Corrupt(e.to_string())
    } else {
        BackupError::Io(e)
    }
}

/// Where backups are kept.
#[derive(Clone)]
pub struct Destination {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    local: Option<PathBuf>,
    pub describe: String,
}

/// One backup in the destination.
#[derive(Debug, Clone, Serialize)]
pub struct BackupInfo {
    pub name: String,
    pub bytes: u64,
    pub modified: DateTime<Utc>,
    /// What the file says of itself; `None` when its header does not read.
    pub header: Option<Header>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl BackupInfo {
    pub fn created(&self) -> DateTime<Utc> {
        self.header
            .as_ref()
            .and_then(|h| DateTime::parse_from_rfc3339(&h.created_at).ok())
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or(self.modified)
    }
}

/// Whether `name` could be a backup's name (no paths, our suffix).
pub fn valid_name(name: &str) -> bool {
    name.ends_with(SUFFIX)
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

impl Destination {
    pub fn from_config(config: &Config) -> Result<Self, BackupError> {
        let b = &config.backup;
        match b.destination {
            BackupDestination::Dir => {
                let dir = b
                    .dir
                    .clone()
                    .unwrap_or_else(|| config.data_dir.join("backups"));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| BackupError::Internal(format!("{}: {e}", dir.display())))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)?;
                Ok(Self {
                    store: Arc::new(fs),
                    prefix: String::new(),
                    describe: format!("directory {}", dir.display()),
                    local: Some(dir),
                })
            }
            BackupDestination::S3 => {
                let bucket = b.s3_bucket.as_deref().ok_or_else(|| {
                    BackupError::Internal(
                        "backup.s3_bucket is required with backup.destination = \"s3\"".into(),
                    )
                })?;
                Ok(Self {
                    store: Arc::new(crate::blobs::s3_store(&config.storage, bucket)?),
                    prefix: b.s3_prefix.trim_matches('/').to_owned(),
                    describe: format!("S3 bucket {bucket}"),
                    local: None,
                })
            }
        }
    }

    fn path(&self, name: &str) -> StorePath {
        if self.prefix.is_empty() {
            StorePath::from(name)
        } else {
            StorePath::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Every backup, newest first.
    pub async fn list(&self) -> Result<Vec<BackupInfo>, BackupError> {
        let prefix = (!self.prefix.is_empty()).then(|| StorePath::from(self.prefix.as_str()));
        let mut stream = self.store.list(prefix.as_ref());
        let mut out = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta?;
            let Some(name) = meta.location.filename().map(str::to_owned) else {
                continue;
            };
            if !valid_name(&name) {
                continue;
            }
            let head = self
                .store
                .get_range(&meta.location, 0..meta.size.min(64 * 1024 + 64))
                .await;
            let (header, problem) = match head {
                Ok(bytes) => match archive::read_header(&bytes[..]) {
                    Ok(h) => (Some(h), None),
                    Err(e) => (None, Some(e.to_string())),
                },
                Err(e) => (None, Some(e.to_string())),
            };
            out.push(BackupInfo {
                name,
                bytes: meta.size,
                modified: meta.last_modified,
                header,
                problem,
            });
        }
        out.sort_by_key(|b| std::cmp::Reverse(b.created()));
        Ok(out)
    }

    pub async fn delete(&self, name: &str) -> Result<(), BackupError> {
        if !valid_name(name) {
            return Err(BackupError::NotFound(name.to_owned()));
        }
        match self.store.delete(&self.path(name)).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Err(BackupError::NotFound(name.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// A backup's bytes as a stream, with its size.
    pub async fn get(&self, name: &str) -> Result<(u64, crate::blobs::ByteStream), BackupError> {
        if !valid_name(name) {
            return Err(BackupError::NotFound(name.to_owned()));
        }
        if let Some(dir) = &self.local {
            return crate::blobs::local_file_stream(&dir.join(name))
                .await?
                .ok_or_else(|| BackupError::NotFound(name.into()));
        }
        match self.store.get(&self.path(name)).await {
            Ok(r) => Ok((r.meta.size, r.into_stream())),
            Err(object_store::Error::NotFound { .. }) => Err(BackupError::NotFound(name.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Partial uploads a killed backup left in a local directory.
    fn clean_partials(&self) {
        let Some(dir) = &self.local else { return };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some((base, n)) = name.rsplit_once('#') {
                if base.ends_with(SUFFIX) && n.bytes().all(|b| b.is_ascii_digit()) {
                    let old = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .map(|t| t.elapsed().unwrap_or_default().as_secs() > 3600)
                        .unwrap_or(false);
                    if old {
                        let _ = std::fs::remove_file(e.path());
                        tracing::info!(file = %name, "removed a partial backup left by an interrupted run");
                    }
                }
            }
        }
    }
}

/// What a backup needs from the running system.
pub struct Context<'a> {
    pub config: &'a Config,
    pub db: &'a Db,
    pub blobs: &'a BlobStore,
    pub data_key: &'a [u8; 32],
}

/// A finished backup.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    pub name: String,
    pub bytes: u64,
    pub destination: String,
    pub schema_version: i64,
    pub tables: usize,
    pub rows: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub missing_blobs: usize,
    pub seconds: f64,
}

/// Removes a staging directory however its owner ends.
struct Staging(PathBuf);

impl Staging {
    fn new(config: &Config, what: &str) -> Result<Self, BackupError> {
        let dir = config
            .data_dir
            .join("tmp")
            .join(format!("{what}-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| BackupError::Internal(format!("{}: {e}", dir.display())))?;
        Ok(Self(dir))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serialises backups within a process (the queue does so across processes).
static RUNNING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sends what the archive writer produces to the destination's upload, in order.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

const CHANNEL_PIECE: usize = 1024 * 1024;

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHANNEL_PIECE {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(CHANNEL_PIECE));
            self.tx
                .blocking_send(piece)
                .map_err(|_| io::Error::other("the upload stopped"))?;
        }
        Ok(())
    }
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// Make a backup now. `trigger` says who asked (`manual`, `scheduled`, `api`).
pub async fn create(ctx: &Context<'_>, trigger: &str) -> Result<Created, BackupError> {
    let _one = RUNNING.lock().await;
    let started = std::time::Instant::now();
    let dest = Destination::from_config(ctx.config)?;
    dest.clean_partials();
    let staging = Staging::new(ctx.config, "backup")?;
    let backend = ctx.db.backend();
    let snapshot = match backend {
        Backend::Sqlite => snap::snapshot_sqlite(ctx.db, &staging.0.join("cairn.db")).await?,
        Backend::Postgres => snap::export_postgres(ctx.db, &staging.0).await?,
    };
    let now = Utc::now();
    let header = Header {
        format: 1,
        created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        cairn_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version: snapshot.schema_version,
        backend: backend_name(backend).to_owned(),
        trigger: trigger.to_owned(),
    };
    let mut tag = [0u8; 3];
    getrandom::fill(&mut tag).map_err(|_| BackupError::Internal("no randomness".into()))?;
    let name = format!(
        "cairn-{}-{}{SUFFIX}",
        now.format("%Y%m%dT%H%M%SZ"),
        hex::encode(tag)
    );
    let location = dest.path(&name);
    let upload = dest.store.put_multipart(&location).await?;
    let mut upload = WriteMultipart::new_with_chunk_size(upload, 8 * 1024 * 1024);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);

    let files = staged_files(&staging.0, &snapshot, backend)?;
    let job = {
        let blobs = ctx.blobs.clone();
        let key = *ctx.data_key;
        let level = ctx.config.backup.compression_level;
        let handle = tokio::runtime::Handle::current();
        let header = header.clone();
        let snapshot = snapshot.clone();
        tokio::task::spawn_blocking(move || {
            write_archive(
                ChannelWriter {
                    tx,
                    buf: Vec::with_capacity(CHANNEL_PIECE),
                },
                &header,
                &key,
                level,
                &files,
                &snapshot,
                &blobs,
                &handle,
            )
        })
    };
    let mut bytes = 0u64;
    let mut send_error = None;
    while let Some(piece) = rx.recv().await {
        bytes += piece.len() as u64;
        upload.write(&piece);
        if let Err(e) = upload.wait_for_capacity(2).await {
            send_error = Some(e);
            break;
        }
    }
    drop(rx);
    let written = job
        .await
        .map_err(|e| BackupError::Internal(format!("the backup writer stopped: {e}")))?;
    let manifest = match (written, send_error) {
        (Ok(m), None) => m,
        (Err(e), _) => {
            let _ = upload.abort().await;
            return Err(e);
        }
        (Ok(_), Some(e)) => {
            let _ = upload.abort().await;
            return Err(e.into());
        }
    };
    upload.finish().await?;
    let created = Created {
        name,
        bytes,
        destination: dest.describe.clone(),
        schema_version: header.schema_version,
        tables: manifest.tables.len(),
        rows: manifest.tables.iter().map(|t| t.rows).sum(),
        blobs: manifest.blobs,
        blob_bytes: manifest.blob_bytes,
        missing_blobs: manifest.missing_blobs.len(),
        seconds: started.elapsed().as_secs_f64(),
    };
    tracing::info!(
        name = %created.name, bytes = created.bytes, blobs = created.blobs,
        rows = created.rows, seconds = created.seconds, destination = %created.destination,
        "backup created"
    );
    Ok(created)
}

/// The database files of a snapshot, as (path in the archive, path on disk).
fn staged_files(
    dir: &Path,
    snapshot: &Snapshot,
    backend: Backend,
) -> Result<Vec<(String, PathBuf)>, BackupError> {
    Ok(match backend {
        Backend::Sqlite => vec![("database/cairn.db".to_owned(), dir.join("cairn.db"))],
        Backend::Postgres => snapshot
            .tables
            .iter()
            .map(|t| {
                (
                    format!("database/{}.copy", t.name),
                    dir.join(format!("{}.copy", t.name)),
                )
            })
            .collect(),
    })
}

fn tar_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mtime(0);
    h
}

/// Append `reader` (which must yield exactly `size` bytes) and return its manifest entry.
fn append<W: Write, R: Read>(
    builder: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    reader: R,
) -> Result<FileEntry, BackupError> {
    let mut hashing = Hashing::new(reader.take(size));
    let mut h = tar_header(size);
    builder.append_data(&mut h, path, &mut hashing)?;
    let (bytes, sha256) = hashing.digest();
    if bytes != size {
        return Err(BackupError::Internal(format!(
            "{path} changed while it was copied ({bytes} of {size} bytes)"
        )));
    }
    Ok(FileEntry {
        path: path.to_owned(),
        bytes,
        sha256,
    })
}

#[allow(clippy::too_many_arguments)]
fn write_archive(
    out: ChannelWriter,
    header: &Header,
    key: &[u8; 32],
    level: i32,
    files: &[(String, PathBuf)],
    snapshot: &Snapshot,
    blobs: &BlobStore,
    handle: &tokio::runtime::Handle,
) -> Result<Manifest, BackupError> {
    let sealed = archive::start(out, header, key)?;
    let encoder = zstd::Encoder::new(sealed, level)?;
    let mut builder = tar::Builder::new(encoder);
    let mut entries = Vec::new();
    for (path, file) in files {
        let f = std::fs::File::open(file)?;
        let size = f.metadata()?.len();
        entries.push(append(
            &mut builder,
            path,
            size,
            io::BufReader::with_capacity(256 * 1024, f),
        )?);
    }
    let mut blob_count = 0u64;
    let mut blob_bytes = 0u64;
    let mut missing = Vec::new();
    for key in &snapshot.blob_keys {
        match handle.block_on(blobs.raw_get(key))? {
            None => missing.push(key.clone()),
            Some((size, stream)) => {
                let reader = tokio_util::io::SyncIoBridge::new_with_handle(
                    tokio_util::io::StreamReader::new(stream.map(|r| r.map_err(io::Error::other))),
                    handle.clone(),
                );
                let reader = io::BufReader::with_capacity(1 << 20, reader);
                entries.push(append(&mut builder, &format!("blobs/{key}"), size, reader)?);
                blob_count += 1;
                blob_bytes += size;
            }
        }
    }
    if !missing.is_empty() {
        tracing::warn!(
            count = missing.len(),
            "documents were purged while the backup ran; their blobs are not in it"
        );
    }
    let manifest = Manifest {
        header: header.clone(),
        tables: snapshot.tables.clone(),
        files: entries,
        blobs: blob_count,
        blob_bytes,
        missing_blobs: missing,
    };
    let body =
        serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Internal(e.to_string()))?;
    let mut h = tar_header(body.len() as u64);
    builder.append_data(&mut h, MANIFEST_PATH, &body[..])?;
    let encoder = builder.into_inner()?;
    let sealed = encoder.finish()?;
    let mut out = sealed.finish()?;
    out.flush()?;
    Ok(manifest)
}

/// What to do with each entry while reading a backup. The reader must be read to its end.
pub trait EntrySink {
    fn entry(&mut self, path: &str, size: u64, reader: &mut dyn Read) -> Result<(), BackupError>;
}

/// Reads and discards (verification only), counting rows of PostgreSQL tables.
#[derive(Default)]
pub struct Discard {
    pub rows: std::collections::HashMap<String, u64>,
}

impl EntrySink for Discard {
    fn entry(&mut self, path: &str, _size: u64, reader: &mut dyn Read) -> Result<(), BackupError> {
        if let Some(table) = path
            .strip_prefix("database/")
            .and_then(|p| p.strip_suffix(".copy"))
        {
            let mut buf = vec![0u8; 256 * 1024];
            let mut lines = 0u64;
            loop {
                let n = reader.read(&mut buf).map_err(corrupt_io)?;
                if n == 0 {
                    break;
                }
                lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            }
            self.rows.insert(table.to_owned(), lines);
        } else {
            io::copy(reader, &mut io::sink()).map_err(corrupt_io)?;
        }
        Ok(())
    }
}

/// Read a whole backup: every entry through `sink`, every checksum against the manifest, and
/// the encryption to its last segment. Returns the manifest.
pub fn read_backup<R: Read>(
    input: R,
    data_key: &[u8; 32],
    sink: &mut dyn EntrySink,
) -> Result<Manifest, BackupError> {
    let (header, plain) = archive::open(input, data_key)?;
    let decoder = zstd::Decoder::new(plain).map_err(corrupt_io)?;
    let mut tar = tar::Archive::new(decoder);
    let mut seen: Vec<FileEntry> = Vec::new();
    let mut manifest: Option<Manifest> = None;
    for entry in tar.entries().map_err(corrupt_io)? {
        let mut entry = entry.map_err(corrupt_io)?;
        let path = entry
            .path()
            .map_err(corrupt_io)?
            .to_string_lossy()
            .into_owned();
        if manifest.is_some() {
            return Err(BackupError::Corrupt(format!("{path} follows the manifest")));
        }
        let size = entry.size();
        if path == MANIFEST_PATH {
            let mut body = Vec::new();
            (&mut entry)
                .take(16 * 1024 * 1024)
                .read_to_end(&mut body)
                .map_err(corrupt_io)?;
            manifest =
                Some(serde_json::from_slice(&body).map_err(|e| {
                    BackupError::Corrupt(format!("the manifest is not readable: {e}"))
                })?);
            continue;
        }
        if path.contains("..") || path.starts_with('/') {
            return Err(BackupError::Corrupt(format!(
                "an entry has an unsafe path: {path}"
            )));
        }
        let mut hashing = Hashing::new(&mut entry);
        sink.entry(&path, size, &mut hashing)?;
        io::copy(&mut hashing, &mut io::sink()).map_err(corrupt_io)?;
        let (bytes, sha256) = hashing.digest();
        seen.push(FileEntry {
            path,
            bytes,
            sha256,
        });
    }
    // Read on to the end: the last segment's tag and the end of the zstd frame are checked
    // only there.
    let mut rest = tar.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(corrupt_io)?;
    let manifest = manifest
        .ok_or_else(|| BackupError::Corrupt("it has no manifest (it is incomplete)".into()))?;
    if manifest.header != header {
        return Err(BackupError::Corrupt(
            "the manifest does not match the header".into(),
        ));
    }
    if seen.len() != manifest.files.len() {
        return Err(BackupError::Corrupt(format!(
            "it holds {} files; the manifest lists {}",
            seen.len(),
            manifest.files.len()
        )));
    }
    for (got, listed) in seen.iter().zip(&manifest.files) {
        if got != listed {
            return Err(BackupError::Corrupt(format!(
                "{} does not match its checksum in the manifest",
                listed.path
            )));
        }
    }
    Ok(manifest)
}

/// Open a backup for reading: a file on disk, or a name in the destination.
pub async fn open_source(
    config: &Config,
    source: &str,
) -> Result<Box<dyn Read + Send>, BackupError> {
    let path = Path::new(source);
    if path.exists() {
        let f = std::fs::File::open(path)?;
        return Ok(Box::new(io::BufReader::with_capacity(1024 * 1024, f)));
    }
    let dest = Destination::from_config(config)?;
    let (_, stream) = dest.get(source).await?;
    Ok(Box::new(tokio_util::io::SyncIoBridge::new(
        tokio_util::io::StreamReader::new(stream.map(|r| r.map_err(io::Error::other))),
    )))
}

/// Check a backup end to end without changing anything.
pub async fn verify(
    config: &Config,
    data_key: &[u8; 32],
    source: &str,
) -> Result<Manifest, BackupError> {
    let input = open_source(config, source).await?;
    let key = *data_key;
    let manifest = tokio::task::spawn_blocking(move || {
        let mut sink = Discard::default();
        let m = read_backup(input, &key, &mut sink)?;
        for t in &m.tables {
            if let Some(&rows) = sink.rows.get(&t.name) {
                if rows != t.rows {
                    return Err(BackupError::Corrupt(format!(
                        "table {} holds {rows} rows; the manifest lists {}",
                        t.name, t.rows
                    )));
                }
            }
        }
        Ok(m)
    })
    .await
    .map_err(|e| BackupError::Internal(e.to_string()))??;
    Ok(manifest)
}

/// What a restore did.
#[derive(Debug, Serialize)]
pub struct Restored {
    pub schema_version: i64,
    pub migrated_to: i64,
    pub tables: usize,
    pub rows: u64,
    pub blobs: u64,
    /// The database file that was replaced, kept beside the new one (SQLite).
    pub previous: Option<PathBuf>,
}

/// Writes database files to a staging directory and blobs to the blob store.
struct Applying<'a> {
    dir: &'a Path,
    blobs: &'a BlobStore,
    handle: tokio::runtime::Handle,
    blob_count: u64,
}

impl EntrySink for Applying<'_> {
    fn entry(&mut self, path: &str, _size: u64, reader: &mut dyn Read) -> Result<(), BackupError> {
        if let Some(name) = path.strip_prefix("database/") {
            if name.contains('/') {
                return Err(BackupError::Corrupt(format!("unexpected entry {path}")));
            }
            let mut f = std::fs::File::create(self.dir.join(name))?;
            io::copy(reader, &mut f).map_err(corrupt_io)?;
            f.sync_all()?;
        } else if let Some(key) = path.strip_prefix("blobs/") {
            let mut upload = self.handle.block_on(self.blobs.raw_put(key))?;
            let mut buf = vec![0u8; 1024 * 1024];
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = self.handle.block_on(upload.abort());
                        return Err(corrupt_io(e));
                    }
                };
                if n == 0 {
                    break;
                }
                upload.write(&buf[..n]);
                self.handle
                    .block_on(upload.wait_for_capacity(2))
                    .map_err(BackupError::Destination)?;
            }
            self.handle
                .block_on(upload.finish())
                .map_err(BackupError::Destination)?;
            self.blob_count += 1;
        } else {
            return Err(BackupError::Corrupt(format!("unexpected entry {path}")));
        }
        Ok(())
    }
}

/// The SQLite file a configuration uses, if it uses SQLite.
pub fn sqlite_file(config: &Config) -> Option<PathBuf> {
    let url = config.effective_database_url();
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    Some(PathBuf::from(path))
}

/// Restore a backup over the configured database and blob storage. Cairn must be stopped
/// (the caller holds the data directory's lock). `replace` allows overwriting a database that
/// has data.
pub async fn restore(
    config: &Config,
    db: &Db,
    blobs: &BlobStore,
    data_key: &[u8; 32],
    source: &str,
    replace: bool,
) -> Result<Restored, BackupError> {
    // 1. Read it all once: nothing changes unless every checksum holds.
    let manifest = verify(config, data_key, source).await?;
    let backend = db.backend();
    if manifest.header.backend != backend_name(backend) {
        return Err(BackupError::WrongBackend {
            backup: manifest.header.backend.clone(),
            configured: backend_name(backend).to_owned(),
        });
    }
    let latest = cairn_store::migrate::latest_version(backend);
    if manifest.header.schema_version > latest {
        return Err(BackupError::NewerSchema {
            backup: manifest.header.schema_version,
            binary: latest,
            cairn: manifest.header.cairn_version.clone(),
        });
    }
    let has_tables = snap::table_count(db).await? > 0;
    if has_tables && !replace {
        return Err(BackupError::Refused(
            "the configured database already holds a workspace; pass --replace to overwrite it"
                .into(),
        ));
    }
    if backend == Backend::Postgres {
        let others = snap::other_postgres_sessions(db).await?;
        if others > 0 {
            return Err(BackupError::Refused(format!(
                "{others} other connection(s) use the database: stop every Cairn replica first"
            )));
        }
    }
    // 2. Read it again, applying: database files to staging, blobs to storage.
    let staging = Staging::new(config, "restore")?;
    let input = open_source(config, source).await?;
    let key = *data_key;
    let dir = staging.0.clone();
    let store = blobs.clone();
    let handle = tokio::runtime::Handle::current();
    let (second, blob_count) = tokio::task::spawn_blocking(move || {
        let mut sink = Applying {
            dir: &dir,
            blobs: &store,
            handle,
            blob_count: 0,
        };
        let m = read_backup(input, &key, &mut sink)?;
        Ok::<_, BackupError>((m, sink.blob_count))
    })
    .await
    .map_err(|e| BackupError::Internal(e.to_string()))??;
    if second != manifest {
        return Err(BackupError::Corrupt(
            "the backup changed between its two readings".into(),
        ));
    }
    // 3. The database.
    let rows: u64 = manifest.tables.iter().map(|t| t.rows).sum();
    let mut previous = None;
    match backend {
        Backend::Sqlite => {
            let restored = staging.0.join("cairn.db");
            let inspected = snap::inspect_sqlite_file(&restored).await?;
            check_counts(&manifest.tables, &inspected.tables)?;
            let target = sqlite_file(config)
                .ok_or_else(|| BackupError::Internal("no SQLite file configured".into()))?;
            db.close().await;
            if target.exists() {
                let kept = target.with_extension(format!(
                    "db.before-restore-{}",
                    Utc::now().format("%Y%m%dT%H%M%SZ")
                ));
                std::fs::rename(&target, &kept)?;
                previous = Some(kept);
            }
            for suffix in ["-wal", "-shm"] {
                let mut p = target.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(p));
            }
            std::fs::copy(&restored, &target)?;
            std::fs::File::open(&target)?.sync_all()?;
        }
        Backend::Postgres => {
            if has_tables {
                snap::drop_postgres_tables(db).await?;
            }
            snap::migrate_to(db, manifest.header.schema_version).await?;
            snap::import_postgres(db, &staging.0, &manifest.tables).await?;
        }
    }
    Ok(Restored {
        schema_version: manifest.header.schema_version,
        migrated_to: latest,
        tables: manifest.tables.len(),
        rows,
        blobs: blob_count,
        previous,
    })
}

fn check_counts(listed: &[TableInfo], found: &[TableInfo]) -> Result<(), BackupError> {
    for t in listed {
        let got = found.iter().find(|f| f.name == t.name).map(|f| f.rows);
        if got != Some(t.rows) {
            return Err(BackupError::Corrupt(format!(
                "table {} holds {} rows; the manifest lists {}",
                t.name,
                got.map(|g| g.to_string()).unwrap_or_else(|| "no".into()),
                t.rows
            )));
        }
    }
    Ok(())
}

/// Which backups rotation keeps: the newest of each of the last `daily` days that have one,
/// of the last `weekly` ISO weeks, and of the last `monthly` months. Unreadable files and
/// files that are not backups are never touched.
pub fn to_delete(backups: &[BackupInfo], daily: u32, weekly: u32, monthly: u32) -> Vec<String> {
    let mut readable: Vec<&BackupInfo> = backups.iter().filter(|b| b.header.is_some()).collect();
    readable.sort_by_key(|b| std::cmp::Reverse(b.created()));
    let mut keep = std::collections::HashSet::new();
    let mut pick = |n: u32, bucket: &dyn Fn(DateTime<Utc>) -> (i32, u32)| {
        let mut seen = Vec::new();
        for b in &readable {
            let k = bucket(b.created());
            if seen.contains(&k) {
                continue;
            }
            if seen.len() as u32 >= n {
                break;
            }
            seen.push(k);
            keep.insert(b.name.clone());
        }
    };
    pick(daily, &|d| (d.year(), d.ordinal()));
    pick(weekly, &|d| (d.iso_week().year(), d.iso_week().week()));
    pick(monthly, &|d| (d.year(), d.month()));
    readable
        .iter()
        .filter(|b| !keep.contains(&b.name))
        .map(|b| b.name.clone())
        .collect()
}

/// Apply the rotation settings to the destination; returns the names removed.
pub async fn rotate(config: &Config) -> Result<Vec<String>, BackupError> {
    let b = &config.backup;
    if b.keep_daily == 0 && b.keep_weekly == 0 && b.keep_monthly == 0 {
        return Ok(Vec::new());
    }
    let dest = Destination::from_config(config)?;
    let all = dest.list().await?;
    let doomed = to_delete(&all, b.keep_daily, b.keep_weekly, b.keep_monthly);
    for name in &doomed {
        dest.delete(name).await?;
        tracing::info!(name = %name, "removed an old backup (rotation)");
    }
    Ok(doomed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, created: &str) -> BackupInfo {
        BackupInfo {
            name: name.into(),
            bytes: 1,
            modified: Utc::now(),
            header: Some(Header {
                format: 1,
                created_at: created.into(),
                cairn_version: "0".into(),
                schema_version: 1,
                backend: "sqlite".into(),
                trigger: "scheduled".into(),
            }),
            problem: None,
        }
    }

    #[test]
    fn rotation_keeps_the_newest_of_each_day_week_and_month() {
        let mut all = Vec::new();
        for day in 1..=20 {
            all.push(info(
                &format!("d{day}-a"),
                &format!("2026-03-{day:02}T03:00:00Z"),
            ));
            all.push(info(
                &format!("d{day}-b"),
                &format!("2026-03-{day:02}T15:00:00Z"),
            ));
        }
        all.push(info("feb", "2026-02-10T03:00:00Z"));
        let mut broken = info("broken", "x");
        broken.header = None;
        all.push(broken);
        let gone = to_delete(&all, 7, 0, 0);
        // 41 readable; the newest of 7 days stay.
        assert_eq!(gone.len(), 41 - 7);
        for day in 14..=20 {
            assert!(!gone.contains(&format!("d{day}-b")));
            assert!(gone.contains(&format!("d{day}-a")));
        }
        assert!(!gone.contains(&"broken".to_owned()));
        let gone = to_delete(&all, 7, 0, 2);
        assert!(!gone.contains(&"feb".to_owned()));
        let gone = to_delete(&all, 1, 2, 0);
        assert_eq!(gone.len(), 41 - 2, "{gone:?}");
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("cairn-20260101T000000Z-abcdef.cairnbackup"));
        assert!(!valid_name("../x.cairnbackup"));
        assert!(!valid_name("a/b.cairnbackup"));
        assert!(!valid_name("x.tar"));
    }
}
