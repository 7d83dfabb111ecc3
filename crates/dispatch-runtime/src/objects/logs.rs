//! Log archives: when a run finishes on a worker with an artifact store,
//! its log (shipped into the database while it ran) moves to the object
//! store as `logs/<sha256>` once it is over [`ARCHIVE_OVER`] bytes, and the
//! database keeps only the reference (see [`dispatch_store::LogArchive`]).
//! Small logs stay in the database: a row or two costs less than an object
//! per run.
//!
//! A reader (the API, the dashboard) downloads an archive once into
//! `.dispatch/log-archives/<sha256>`, checked against the digest before it
//! lands, and reads from that copy; whatever the log gains after the
//! archive (a later attempt) is still read from the database.

use std::path::{Path as FsPath, PathBuf};

use dispatch_core::RunId;
use dispatch_store::{LogArchive, RunLogStore};
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{Objects, ObjectsError, ObjectsResult, Verified, chain};

/// A finished run's stored log longer than this moves to the object store.
pub const ARCHIVE_OVER: u64 = 64 * 1024;

/// Bytes read from the database at once while archiving.
const READ: usize = 1 << 20;

impl Objects {
    fn log_key(&self, sha256: &str) -> object_store::path::Path {
        self.key(["logs", sha256])
    }

    /// Log archive `sha256`, checked as it streams (see [`Objects::get_artifact`]).
    pub async fn get_log(&self, sha256: &str) -> ObjectsResult<(u64, Verified)> {
        self.get_verified(self.log_key(sha256), sha256, "log archive")
            .await
    }

    /// Removes log archive `sha256` (nothing when the store does not have it).
    pub async fn delete_log(&self, sha256: &str) -> ObjectsResult<()> {
        self.delete(&self.log_key(sha256)).await
    }

    /// A checked copy of log archive `sha256` in `dir`, downloaded the
    /// first time it is asked for.
    pub async fn cached_log(&self, sha256: &str, dir: &FsPath) -> ObjectsResult<PathBuf> {
        let path = dir.join(sha256);
        if path.is_file() {
            return Ok(path);
        }
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| ObjectsError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        let (_, stream) = self.get_log(sha256).await?;
        super::download(stream, &path).await?;
        Ok(path)
    }
}

/// Moves `run`'s stored log to `objects` when it is over [`ARCHIVE_OVER`]
/// bytes and not archived yet: written to a file in `dir` while hashed,
/// uploaded as `logs/<sha256>`, then swapped for the reference in the
/// store. `Ok(None)` when nothing moved (small, archived already, or the
/// log grew meanwhile: it stays in the database). `Err` is one line.
pub async fn archive_run_log<S: RunLogStore + ?Sized>(
    store: &S,
    objects: &Objects,
    run: &RunId,
    dir: &FsPath,
) -> Result<Option<LogArchive>, String> {
    let size = store.log_length(run).await.map_err(|e| e.to_string())?;
    if size <= ARCHIVE_OVER
        || store
            .log_archive(run)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
    {
        return Ok(None);
    }
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    let tmp = dir.join(format!(".{run}.{}.archiving", std::process::id()));
    let result = async {
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        while offset < size {
            let want = READ.min(usize::try_from(size - offset).unwrap_or(READ));
            let chunk = store
                .read_log(run, offset, want)
                .await
                .map_err(|e| e.to_string())?;
            if chunk.is_empty() {
                return Ok(None);
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
            offset += chunk.len() as u64;
        }
        file.flush().await.map_err(io)?;
        drop(file);
        let archive = LogArchive {
            sha256: hex::encode(hasher.finalize()),
            size,
        };
        let key = objects.log_key(&archive.sha256);
        if !matches!(objects.store.head(&key).await, Ok(m) if m.size == size) {
            objects.put_file(&key, &tmp).await.map_err(|e| chain(&e))?;
        }
        match store.archive_log(run, &archive).await {
            Ok(true) => Ok(Some(archive)),
            Ok(false) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
    .await;
    let _ = tokio::fs::remove_file(&tmp).await;
    result
}
