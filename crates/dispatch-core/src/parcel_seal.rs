//! Parcels are immutable on disk: sealing a written parcel, checking it
//! before a run starts from it, verifying it fully, and removing one.
//!
//! A sealed parcel has read-only files (0444, or 0555 when executable) and
//! read-only directories (0555), and a stamp, `<digest>/stamp.json`, with
//! the size and modification time of every file as it was written. The
//! stamp is not part of what the digest covers: it only makes the check
//! before each run cheap ([`quick_check`]: the manifest re-hashed, every
//! file's size and mtime compared with the stamp). [`verify_fully`]
//! re-hashes every file (`dispatch images --verify`).
//!
//! Written as root, a parcel (and the parcels directory) is owned by
//! `nobody` (65534), and the processes started for runs lose the powers
//! that override modes (see `dispatch_agent::tools::powers`), so a root
//! agent cannot write into it either. The runtime never gives an agent the
//! parcel as its working directory (it works in a private copy), and checks
//! the parcel before every run.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::parcel::{FileEntry, Parcel, ParcelError};
use crate::parcel_build::{FILES, MANIFEST, copy_hashing};

/// The stamp's file name, beside `manifest.json`.
pub const STAMP: &str = "stamp.json";

/// What a file looked like when the parcel was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    size: u64,
    /// Modification time, nanoseconds since the epoch.
    mtime_ns: i128,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stamp {
    /// By path inside `files/`.
    files: BTreeMap<String, Seen>,
}

fn seen(path: &Path) -> io::Result<Option<Seen>> {
    use std::os::unix::fs::MetadataExt;
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_file() {
        return Ok(None);
    }
    Ok(Some(Seen {
        size: meta.len(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    }))
}

/// Seals the parcel written in `dir` (complete, with these `files`): writes
/// its stamp, then makes every directory read-only (files are made
/// read-only as they are written).
pub(crate) fn seal(dir: &Path, files: &[FileEntry]) -> io::Result<()> {
    write_stamp(dir, files)?;
    give_away(dir);
    set_dir_modes(dir, 0o555)
}

/// The user that owns parcels written as root (`nobody`).
const OWNER: u32 = 65534;

/// Written as root (the new files are root's): the parcel and the parcels
/// directory go to another user, so the read-only modes bind a root agent
/// that lost the powers to override them (see `dispatch_agent::tools::powers`).
fn give_away(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    if fs::symlink_metadata(dir).map(|m| m.uid()).ok() != Some(0) {
        return;
    }
    fn walk_chown(path: &Path) {
        let _ = std::os::unix::fs::lchown(path, Some(OWNER), Some(OWNER));
        if let Ok(entries) = fs::read_dir(path) {
            for e in entries.flatten() {
                match e.file_type() {
                    Ok(t) if t.is_dir() => walk_chown(&e.path()),
                    _ => {
                        let _ = std::os::unix::fs::lchown(e.path(), Some(OWNER), Some(OWNER));
                    }
                }
            }
        }
    }
    walk_chown(dir);
    if let Some(root) = dir.parent() {
        let _ = std::os::unix::fs::lchown(root, Some(OWNER), Some(OWNER));
    }
}

fn write_stamp(dir: &Path, files: &[FileEntry]) -> io::Result<()> {
    let root = dir.join(FILES);
    let mut stamp = Stamp::default();
    for f in files {
        let s = seen(&root.join(&f.path))?
            .ok_or_else(|| io::Error::other(format!("{} is not a regular file", f.path)))?;
        stamp.files.insert(f.path.clone(), s);
    }
    let bytes = serde_json::to_vec(&stamp).map_err(io::Error::other)?;
    let path = dir.join(STAMP);
    let tmp = dir.join(".stamp.json.tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, &path)?;
    crate::parcel_build::make_read_only(&path, false)
}

/// Sets `mode` on `dir` and every directory below it (deepest first, so a
/// read-only mode never stops the walk).
fn set_dir_modes(dir: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if mode & 0o700 == 0o700 {
        // Opening up: the top first, so the walk can enter.
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            set_dir_modes(&entry.path(), mode)?;
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
}

/// Removes the directory tree `dir` (a parcel, sealed or not, or any
/// other tree with read-only directories). A missing `dir` is fine.
pub fn remove_tree(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            // Read-only directories (a sealed parcel) stop a plain removal.
            let _ = set_dir_modes(dir, 0o755);
            match fs::remove_dir_all(dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
    }
}

fn changed(parcel: &Parcel, path: String) -> ParcelError {
    ParcelError::Changed {
        digest: parcel.short_digest().to_string(),
        path,
    }
}

/// The cheap check before a run starts from `parcel`: its manifest still
/// hashes to its digest, and every file has the size and modification time
/// the stamp recorded. A parcel without a stamp (built by an older version)
/// is verified fully once, then stamped and sealed.
pub fn quick_check(parcel: &Parcel) -> Result<(), ParcelError> {
    let path = parcel.dir.join(MANIFEST);
    let bytes = fs::read(&path).map_err(|_| changed(parcel, MANIFEST.into()))?;
    if hex::encode(Sha256::digest(&bytes)) != parcel.digest {
        return Err(changed(parcel, MANIFEST.into()));
    }
    let stamp: Stamp = match fs::read(parcel.dir.join(STAMP)) {
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(s) => s,
            Err(_) => return stamp_after_full_check(parcel),
        },
        Err(_) => return stamp_after_full_check(parcel),
    };
    let root = parcel.dir.join(FILES);
    for f in &parcel.manifest.files {
        let now = seen(&root.join(&f.path)).ok().flatten();
        if now.is_none() || now.as_ref() != stamp.files.get(&f.path) {
            return Err(changed(parcel, format!("{FILES}/{}", f.path)));
        }
    }
    // Nothing added either (one directory read per directory).
    let mut present = Vec::new();
    walk(&root, &root, &mut present);
    if present.len() != parcel.manifest.files.len() {
        let listed: BTreeSet<&str> = parcel
            .manifest
            .files
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        let extra = present.iter().find(|p| !listed.contains(p.as_str()));
        let path = extra.map_or_else(|| FILES.to_string(), |p| format!("{FILES}/{p}"));
        return Err(changed(parcel, path));
    }
    Ok(())
}

fn stamp_after_full_check(parcel: &Parcel) -> Result<(), ParcelError> {
    if let Some(first) = verify_fully(parcel).into_iter().next() {
        return Err(changed(parcel, first.path));
    }
    let sealed =
        set_dir_modes(&parcel.dir, 0o755).and_then(|()| seal(&parcel.dir, &parcel.manifest.files));
    sealed.map_err(|source| ParcelError::Io {
        what: "cannot stamp parcel",
        path: parcel.dir.clone(),
        source,
    })
}

/// One way a parcel on disk differs from its manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Relative to the parcel directory (`files/agent.sh`, `manifest.json`).
    pub path: String,
    /// `modified`, `missing`, `unexpected` (not in the manifest) or `unreadable`.
    pub kind: &'static str,
}

/// Re-hashes the manifest and every file of `parcel`, and looks for files
/// the manifest does not list. No problems: the parcel is what its digest says.
pub fn verify_fully(parcel: &Parcel) -> Vec<Problem> {
    let mut problems = Vec::new();
    let problem = |path: String, kind| Problem { path, kind };
    match fs::read(parcel.dir.join(MANIFEST)) {
        Ok(b) if hex::encode(Sha256::digest(&b)) == parcel.digest => {}
        Ok(_) => problems.push(problem(MANIFEST.into(), "modified")),
        Err(_) => problems.push(problem(MANIFEST.into(), "missing")),
    }
    let root = parcel.dir.join(FILES);
    let listed: BTreeSet<&str> = parcel
        .manifest
        .files
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    for f in &parcel.manifest.files {
        let path = root.join(&f.path);
        let shown = format!("{FILES}/{}", f.path);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => {}
            Ok(_) => {
                problems.push(problem(shown, "modified"));
                continue;
            }
            Err(_) => {
                problems.push(problem(shown, "missing"));
                continue;
            }
        }
        let hashed =
            fs::File::open(&path).and_then(|mut file| copy_hashing(&mut file, &mut io::sink()));
        match hashed {
            Ok((sha, size)) if sha == f.sha256 && size == f.size => {}
            Ok(_) => problems.push(problem(shown, "modified")),
            Err(_) => problems.push(problem(shown, "unreadable")),
        }
    }
    let mut present = Vec::new();
    walk(&root, &root, &mut present);
    for extra in present.iter().filter(|p| !listed.contains(p.as_str())) {
        problems.push(problem(format!("{FILES}/{extra}"), "unexpected"));
    }
    problems
}

/// Every non-directory under `dir`, relative to `root`, with `/` separators.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path: PathBuf = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(root, &path, out),
            Ok(_) => {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
            Err(_) => {}
        }
    }
}

/// Whether the parcel at `dir` (complete) may be used as it is; one that
/// changed on disk is removed, so that a build or an unpack writes it anew.
pub(crate) fn usable_or_removed(dir: &Path) -> Option<Parcel> {
    let parcel = crate::parcel_build::load(dir).ok();
    if let Some(p) = parcel.filter(|p| quick_check(p).is_ok()) {
        return Some(p);
    }
    let _ = remove_tree(dir);
    None
}

#[cfg(test)]
#[path = "parcel_seal_tests.rs"]
mod tests;
