//! The data directory: created owner-only on first start, checked for being a writable
//! directory on every start. What goes inside (database, secrets, files) is decided by the
//! modules that own it.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DataDirError {
    #[error("cannot create the data directory {}: {error}. Create it, or set CAIRN_DATA_DIR (or --data-dir) to a writable place", path.display())]
    Create {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the data directory {} is not a directory. Set CAIRN_DATA_DIR (or --data-dir) to a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error("the data directory {} is not writable by this user: {error}. Give this user ownership of it, or set CAIRN_DATA_DIR (or --data-dir) elsewhere", path.display())]
    NotWritable {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// What [`prepare`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDirReport {
    pub created: bool,
    /// The directory's mode when group or others have any access to it.
    pub loose_mode: Option<u32>,
}

/// Make sure `dir` exists (creating it `0700`) and is a writable directory.
pub fn prepare(dir: &Path) -> Result<DataDirReport, DataDirError> {
    let mut created = false;
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|error| DataDirError::Create {
                path: dir.to_owned(),
                error,
            })?;
        created = true;
    }
    let meta = fs::metadata(dir).map_err(|error| DataDirError::NotWritable {
        path: dir.to_owned(),
        error,
    })?;
    if !meta.is_dir() {
        return Err(DataDirError::NotADirectory {
            path: dir.to_owned(),
        });
    }
    let probe = dir.join(".cairn-write-check");
    fs::write(&probe, b"")
        .and_then(|_| fs::remove_file(&probe))
        .map_err(|error| DataDirError::NotWritable {
            path: dir.to_owned(),
            error,
        })?;
    let mode = meta.permissions().mode() & 0o777;
    Ok(DataDirReport {
        created,
        loose_mode: (mode & 0o077 != 0).then_some(mode),
    })
}

/// The lock file every process using a data directory holds (shared); a restore holds it
/// alone, so it never replaces a database under a running server.
const LOCK_FILE: &str = "cairn.lock";

/// Hold the data directory as one of possibly several processes (server, worker, import).
/// Fails only when a restore holds it.
pub fn hold_shared(dir: &Path) -> Result<fs::File, String> {
    let f = open_lock(dir)?;
    match f.try_lock_shared() {
        Ok(()) => Ok(f),
        Err(fs::TryLockError::WouldBlock) => Err(format!(
            "a restore is running on the data directory {}; start Cairn when it has finished",
            dir.display()
        )),
        Err(fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", dir.display())),
    }
}

/// Hold the data directory alone (for a restore). Fails while any Cairn process uses it.
pub fn hold_exclusive(dir: &Path) -> Result<fs::File, String> {
    let f = open_lock(dir)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(fs::TryLockError::WouldBlock) => Err(format!(
            "Cairn is running on the data directory {} (a server, worker or import): stop it first",
            dir.display()
        )),
        Err(fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", dir.display())),
    }
}

fn open_lock(dir: &Path) -> Result<fs::File, String> {
    let path = dir.join(LOCK_FILE);
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_data_dir_is_owner_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        let report = prepare(&dir).unwrap();
        assert!(report.created);
        assert_eq!(report.loose_mode, None);
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(!prepare(&dir).unwrap().created);
    }

    #[test]
    fn a_file_in_place_of_the_data_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            prepare(&file),
            Err(DataDirError::NotADirectory { .. })
        ));
    }
}
