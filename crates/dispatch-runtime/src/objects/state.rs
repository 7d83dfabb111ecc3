//! A parcel's state (`DISPATCH_STATE_DIR`) shared by every worker through
//! the artifact store, under `state/<parcel>/<path>`, one object per file.
//!
//! - At an attempt's start the worker **pulls**: files the store has and
//!   this machine does not (or has at another version) are written into the
//!   state directory; files this machine got from the store before and the
//!   store no longer has are deleted. Files that were never synchronized are
//!   left alone.
//! - At its end (before the run's terminal state is saved) it **pushes**
//!   what the attempt changed: files written or changed since the pull are
//!   uploaded, files deleted since the pull are deleted from the store.
//!   Files the attempt did not touch are not written, so two runs that
//!   change different files both keep their change: **the last writer wins
//!   per file**.
//! - A state directory larger than [`STATE_LIMIT`] is not pushed (the run's
//!   log says so); symlinks and special files are never synchronized.
//!
//! What was synchronized is recorded outside the state directory (in
//! `.dispatch/state-sync/<parcel>.json`), so the agent never sees it.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};

use futures_util::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Objects, ObjectsError, ObjectsResult};

/// The largest state directory that is synchronized.
pub const STATE_LIMIT: u64 = 64 * 1024 * 1024;

/// One synchronized file: its digest and the store's version of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    sha256: String,
    version: String,
}

/// The files synchronized with the store, by path in the state directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Synced {
    files: BTreeMap<String, Entry>,
}

impl Synced {
    fn load(record: &FsPath) -> Synced {
        std::fs::read(record)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub(super) fn save(&self, record: &FsPath) -> ObjectsResult<()> {
        let bytes = serde_json::to_vec(self).expect("a sync record is JSON data");
        write_atomically(record, &bytes)
    }

    /// How many files are synchronized.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// What a push did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pushed {
    pub written: usize,
    pub deleted: usize,
}

impl Objects {
    fn state_prefix(&self, parcel: &str) -> Path {
        self.key(["state", parcel])
    }

    /// Brings `dir` (the parcel's state directory on this machine) up to
    /// the store's copy; `record` keeps what was synchronized. Returns it,
    /// for the push at the attempt's end.
    pub async fn pull_state(
        &self,
        parcel: &str,
        dir: &FsPath,
        record: &FsPath,
    ) -> ObjectsResult<Synced> {
        let prefix = self.state_prefix(parcel);
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(self.failed("cannot list", &prefix))?;
        let before = Synced::load(record);
        let mut now = Synced::default();
        for meta in listed {
            let Some(rel) = relative(&prefix, &meta.location) else {
                continue;
            };
            let version = version_of(&meta);
            let local = dir.join(&rel);
            if let Some(entry) = before.files.get(&rel)
                && entry.version == version
                && hash_file(&local).as_deref() == Some(entry.sha256.as_str())
            {
                now.files.insert(rel, entry.clone());
                continue;
            }
            let bytes = self
                .store
                .get(&meta.location)
                .await
                .map_err(self.failed("cannot read", &meta.location))?
                .bytes()
                .await
                .map_err(self.failed("cannot read", &meta.location))?;
            write_atomically(&local, &bytes)?;
            let sha256 = hex::encode(Sha256::digest(&bytes));
            now.files.insert(rel, Entry { sha256, version });
        }
        // Deleted from the store since this machine last synchronized.
        for rel in before.files.keys().filter(|r| !now.files.contains_key(*r)) {
            let _ = std::fs::remove_file(dir.join(rel));
        }
        // Nothing new (a parcel whose state is empty, most often): no write.
        if now != before {
            now.save(record)?;
        }
        Ok(now)
    }

    /// Saves what changed in `dir` since `base` (what the pull left) into
    /// the store. Refused, with nothing written, when the directory holds
    /// more than [`STATE_LIMIT`].
    pub async fn push_state(
        &self,
        parcel: &str,
        dir: &FsPath,
        record: &FsPath,
        base: &Synced,
    ) -> ObjectsResult<Pushed> {
        let mut files = Vec::new();
        walk(dir, dir, &mut files);
        let total: u64 = files
            .iter()
            .filter_map(|(_, p)| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        if total > STATE_LIMIT {
            return Err(ObjectsError::Io {
                path: dir.display().to_string(),
                source: std::io::Error::other(format!(
                    "the state directory holds {total} bytes, over the {STATE_LIMIT}-byte limit of shared state; not synchronized (hint: keep large files as artifacts)"
                )),
            });
        }
        let prefix = self.state_prefix(parcel);
        let mut now = Synced::default();
        let mut pushed = Pushed::default();
        for (rel, path) in files {
            let Some(sha256) = hash_file(&path) else {
                continue;
            };
            if let Some(entry) = base.files.get(&rel)
                && entry.sha256 == sha256
            {
                now.files.insert(rel, entry.clone());
                continue;
            }
            let key = rel.split('/').fold(prefix.clone(), |k, part| k.join(part));
            let put = self.put_file(&key, &path).await?;
            let version = match put.e_tag {
                Some(tag) => tag,
                None => self
                    .store
                    .head(&key)
                    .await
                    .map(|m| version_of(&m))
                    .unwrap_or_default(),
            };
            pushed.written += 1;
            now.files.insert(rel, Entry { sha256, version });
        }
        for rel in base.files.keys().filter(|r| !now.files.contains_key(*r)) {
            let key = rel.split('/').fold(prefix.clone(), |k, part| k.join(part));
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => pushed.deleted += 1,
                Err(e) => return Err(self.failed("cannot delete", &key)(e)),
            }
        }
        if now != *base {
            now.save(record)?;
        }
        Ok(pushed)
    }
}

/// A stored object's version: its entity tag, else its time and size.
fn version_of(meta: &object_store::ObjectMeta) -> String {
    meta.e_tag
        .clone()
        .unwrap_or_else(|| format!("{}:{}", meta.last_modified.timestamp_millis(), meta.size))
}

/// The path of `location` under `prefix`, `/`-separated and decoded;
/// `None` for a part that could climb out of the directory.
fn relative(prefix: &Path, location: &Path) -> Option<String> {
    let parts: Vec<String> = location
        .prefix_match(prefix)?
        .map(|p| {
            percent_encoding::percent_decode_str(p.as_ref())
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let safe =
        |p: &String| !p.is_empty() && p != "." && p != ".." && !p.contains(['/', '\\', '\0']);
    (!parts.is_empty() && parts.iter().all(safe)).then(|| parts.join("/"))
}

fn hash_file(path: &FsPath) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::io::BufReader::new(file), &mut hasher).ok()?;
    Some(hex::encode(hasher.finalize()))
}

/// Writes `bytes` to `path` through a temporary file of a unique name (the
/// runs of one worker write at once) renamed over it.
fn write_atomically(path: &FsPath, bytes: &[u8]) -> ObjectsResult<()> {
    let io = |source| ObjectsError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{:016x}.sync",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Regular files under `dir`, by `/`-separated path (symlinks not followed).
fn walk(root: &FsPath, dir: &FsPath, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        let path = entry.path();
        if ft.is_dir() {
            walk(root, &path, out);
        } else if ft.is_file()
            && let Ok(rel) = path.strip_prefix(root)
        {
            let rel = rel.to_string_lossy().replace('\\', "/");
            out.push((rel, path));
        }
    }
    out.sort();
}
