//! `cairn import PATH… --collection NAME`: bring a folder of files in through the same pipeline
//! as uploads — type from content, the same limits, encrypted blobs, the ingestion queue — and
//! by default ingest them here and wait, with a progress bar. Files whose content the
//! collection already has are skipped, so a second run adds only what is new.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_ingest::detect::{self, Sniffed};
use cairn_store::collections::CollectionRole;
use cairn_store::Id;
use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::blobs::FileKey;

/// What an import did.
#[derive(Debug, Default)]
pub struct Report {
    pub queued: Vec<Id>,
    pub skipped_existing: usize,
    pub refused: Vec<(PathBuf, String)>,
}

/// Every regular file under `paths` (directories walked; hidden entries and symlinks skipped),
/// in a stable order.
pub fn files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in paths {
        for entry in walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'))
            .flatten()
        {
            if entry.file_type().is_file() {
                out.push(entry.into_path());
            }
        }
    }
    out
}

fn sha256_of(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    Ok((hex::encode(h.finalize()), n))
}

/// The collection named `name` that `user` may add to, created (shared, owned by them) if they
/// have none by that name.
pub async fn collection_named(state: &AppState, user: Id, name: &str) -> anyhow::Result<Id> {
    let mut after = None;
    loop {
        let page = state.store.collections_of(user, after, 200).await?;
        if let Some(c) = page.iter().find(|c| c.collection.name == name) {
            anyhow::ensure!(
                c.role != "viewer",
                "you may only read the collection {name:?}"
            );
            return Ok(c.collection.id);
        }
        match page.last() {
            Some(last) => after = Some(last.collection.id),
            None => break,
        }
    }
    Ok(state.store.create_collection(user, name, "").await?.id)
}

/// Queue every new file for ingestion, calling `progress` after each.
pub async fn queue_files(
    state: &AppState,
    user: Id,
    collection: Id,
    files: &[PathBuf],
    mut progress: impl FnMut(&Path),
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let cap = state.config.uploads.max_file_bytes;
    let quota = state.config.uploads.user_quota_bytes;
    for path in files {
        progress(path);
        match queue_one(state, user, collection, path, cap, quota).await {
            Ok(Some(id)) => report.queued.push(id),
            Ok(None) => report.skipped_existing += 1,
            Err(Refused(why)) => report.refused.push((path.clone(), why)),
        }
    }
    state.jobs_ready.notify_waiters();
    Ok(report)
}

struct Refused(String);

impl<E: std::fmt::Display> From<E> for Refused {
    fn from(e: E) -> Self {
        Refused(e.to_string())
    }
}

async fn queue_one(
    state: &AppState,
    user: Id,
    collection: Id,
    path: &Path,
    cap: u64,
    quota: u64,
) -> Result<Option<Id>, Refused> {
    let owned = path.to_owned();
    let (sha, size) = tokio::task::spawn_blocking(move || sha256_of(&owned)).await??;
    if size > cap {
        return Err(Refused(format!(
            "larger than uploads.max_file_bytes ({cap})"
        )));
    }
    if state
        .store
        .document_by_content(collection, &sha)
        .await?
        .is_some()
    {
        return Ok(None);
    }
    if quota > 0 {
        let used = u64::try_from(state.store.storage_used_by(user).await?).unwrap_or(0);
        if used + size > quota {
            return Err(Refused("the storage quota would be exceeded".into()));
        }
    }
    let filename = super::upload::sanitize_filename(
        &path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
    );
    let mut file = std::fs::File::open(path)?;
    let mut head = vec![0u8; 8192];
    let mut filled = 0;
    while filled < head.len() {
        let k = file.read(&mut head[filled..])?;
        if k == 0 {
            break;
        }
        filled += k;
    }
    head.truncate(filled);
    let kind = match detect::sniff(&head, &filename).map_err(|e| Refused(e.to_string()))? {
        Sniffed::Known(k) if super::allowed(&state.config, k) => k.as_str(),
        Sniffed::Known(k) => return Err(Refused(format!("{} files are not allowed", k.as_str()))),
        Sniffed::Zip if super::any_office_allowed(&state.config) => super::upload::ZIP_KIND,
        Sniffed::Zip => return Err(Refused("office files are not allowed".into())),
    };
    let id = Id::new();
    let key = FileKey::generate()?;
    let mut writer = state.blobs.writer(&super::blob_key(id), &key).await?;
    // What is stored is hashed and counted again as it is written: a file that changed since
    // it was checked is refused rather than stored under the wrong hash or past the cap.
    let mut hasher = Sha256::new();
    hasher.update(&head);
    let mut written = head.len() as u64;
    let copied: Result<(), Refused> = async {
        writer.write(&head).await?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let k = file.read(&mut buf)?;
            if k == 0 {
                break;
            }
            written += k as u64;
            if written > cap {
                return Err(Refused(
                    "the file grew past uploads.max_file_bytes while importing".into(),
                ));
            }
            hasher.update(&buf[..k]);
            writer.write(&buf[..k]).await?;
        }
        if hex::encode(hasher.finalize_reset()) != sha || written != size {
            return Err(Refused(
                "the file changed while it was being imported".into(),
            ));
        }
        Ok(())
    }
    .await;
    if let Err(e) = copied {
        writer.abort().await;
        let _ = state.blobs.delete(&super::blob_key(id)).await;
        return Err(e);
    }
    writer.finish().await?;
    let row = super::new_document(
        state,
        super::NewFile {
            id,
            collection,
            uploader: user,
            filename,
            kind,
            size,
            sha256: sha,
        },
        &key,
    )?;
    if let Err(e) = state
        .store
        .insert_document(
            user,
            &row,
            &super::ingest_job(&state.config, id),
            super::quota_limit(&state.config),
        )
        .await
    {
        let _ = state.blobs.delete(&super::blob_key(id)).await;
        return match e {
            cairn_store::StoreError::Conflict {
                constraint: Some(c),
            } if c == "storage_quota" => Err(Refused("the storage quota would be exceeded".into())),
            // Another import of the same content won the race.
            cairn_store::StoreError::Conflict { .. } => Ok(None),
            other => Err(other.into()),
        };
    }
    Ok(Some(id))
}

/// Wait until every document in `ids` has finished ingesting; `progress(done, failed)` after
/// each check.
pub async fn wait_for(
    state: &AppState,
    user: Id,
    ids: &[Id],
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<(usize, usize)> {
    loop {
        let (mut done, mut failed) = (0, 0);
        for id in ids {
            match state
                .store
                .document_for(user, *id, CollectionRole::Viewer)
                .await?
            {
                Some(d) if d.status == "ready" => done += 1,
                Some(d) if matches!(d.status.as_str(), "failed" | "cancelled") => failed += 1,
                Some(_) => {}
                None => failed += 1,
            }
        }
        progress(done, failed);
        if done + failed == ids.len() {
            return Ok((done, failed));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
