//! Building and loading parcels (see [`crate::parcel`] for the layout).
//!
//! Build steps: parse the Agentfile; resolve IDENTITY, SOUL, SKILL and PROMPT
//! against the build context; list and hash every file named by COPY; compute
//! the digest of the canonical manifest; if `<parcels_root>/<digest>` exists,
//! return it; otherwise write the parcel into a temporary directory inside
//! `parcels_root` and rename it into place.
//!
//! Rules for files:
//! - The build context is the directory that holds the Agentfile. COPY,
//!   SKILL, IDENTITY, SOUL and PROMPT only read files inside it.
//! - `manifest.json` holds exactly the canonical bytes (`serde_json::to_vec`
//!   of the [`Manifest`]); the directory name is their SHA-256.
//! - Copying a directory skips `.git` and `.dispatch` entries at any depth,
//!   the parcels root itself when it lies inside the context, and anything
//!   that is not a file or directory. Empty directories are not recorded.
//! - Symlinks: a symlink named directly by COPY is followed if it resolves
//!   inside the context, and is an error otherwise. Inside a copied directory,
//!   a symlink to a file inside the context is copied as a regular file (the
//!   target's content under the link's name); symlinks to directories, to
//!   anything outside the context, and dangling symlinks are skipped.
//! - Copied files keep their executable bit and are made read-only (0o444, or
//!   0o555 when executable); once complete, the parcel is sealed (see
//!   [`crate::parcel_seal`]): its directories are made read-only (0o555) and
//!   a stamp of every file's size and mtime is written beside the manifest.
//!   A parcel with the same digest that changed on disk is written anew.
//! - `Parcel::created_at` is the modification time of `manifest.json`.
//! - Temporary directories (`.tmp-*`) older than an hour, left by builds
//!   that died, are removed after a build writes a new parcel.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

use crate::agentfile::{self, Agentfile, AgentfileError, TextSource};
use crate::parcel::{Document, FileEntry, Instructions, Manifest, Parcel, ParcelError, Skill};
use crate::parcel_seal::remove_tree;

/// The manifest format this code writes and reads.
pub(crate) const SCHEMA: u32 = 1;
pub(crate) const MANIFEST: &str = "manifest.json";
pub(crate) const FILES: &str = "files";
const TMP_PREFIX: &str = ".tmp-";
const SKIPPED_DIRS: &[&str] = &[".git", ".dispatch"];

/// A file to copy into the parcel.
struct Planned {
    /// Where to read it (symlinks resolved).
    src: PathBuf,
    entry: FileEntry,
    /// The COPY that named it.
    copy_src: String,
    line: usize,
}

pub(crate) fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ParcelError {
    let path = path.to_path_buf();
    move |source| ParcelError::Io { what, path, source }
}

pub(crate) fn build(context: &Path, parcels_root: &Path) -> Result<Parcel, ParcelError> {
    let (dir, agentfile_path) = locate(context)?;
    let af_err = |source: AgentfileError| ParcelError::Agentfile {
        path: agentfile_path.clone(),
        source,
    };
    let raw = fs::read(&agentfile_path).map_err(io_err("cannot read", &agentfile_path))?;
    let text = String::from_utf8(raw).map_err(|e| {
        let valid = e
            .as_bytes()
            .get(..e.utf8_error().valid_up_to())
            .unwrap_or_default();
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let message = "the Agentfile is not valid UTF-8 text (hint: save it as UTF-8)";
        af_err(AgentfileError::new(line, message))
    })?;
    let mut af = agentfile::parse(&text).map_err(af_err)?;
    let ctx = fs::canonicalize(&dir).map_err(io_err("cannot resolve build context", &dir))?;
    let skills = crate::parcel_skill::resolve(&mut af, &ctx).map_err(af_err)?;
    crate::parcel_tools::load_schemas(&mut af, &ctx).map_err(af_err)?;
    crate::component::check(&af, &ctx).map_err(af_err)?;
    fs::create_dir_all(parcels_root)
        .map_err(io_err("cannot create parcels directory", parcels_root))?;
    let root = fs::canonicalize(parcels_root).map_err(io_err("cannot resolve", parcels_root))?;
    crate::parcel_members::resolve(&mut af, &ctx, parcels_root).map_err(af_err)?;

    let instructions = resolve_instructions(&af, skills, &ctx).map_err(af_err)?;
    let plan = plan_files(&af, &ctx, &root)?;
    let manifest = Manifest {
        schema: SCHEMA,
        instructions,
        files: plan.iter().map(|p| p.entry.clone()).collect(),
        ..af.manifest
    };
    let bytes = serde_json::to_vec(&manifest).map_err(|e| {
        io_err("cannot serialize the manifest of", &agentfile_path)(io::Error::other(e))
    })?;
    let digest = hex::encode(Sha256::digest(&bytes));
    let final_dir = parcels_root.join(&digest);
    // One that changed on disk is written anew.
    if final_dir.join(MANIFEST).is_file()
        && let Some(parcel) = crate::parcel_seal::usable_or_removed(&final_dir)
    {
        return Ok(parcel);
    }

    let tmp = parcels_root.join(temp_name());
    if let Err(e) = write_parcel(&tmp, &bytes, &plan) {
        let _ = remove_tree(&tmp);
        return Err(e);
    }
    move_into_place(&tmp, &final_dir)?;
    remove_stale_temps(parcels_root);
    load(&final_dir)
}

/// Renames the complete parcel directory `tmp` to `final_dir`. When another
/// writer of the same parcel won the race, theirs is kept and `tmp` removed.
pub(crate) fn move_into_place(tmp: &Path, final_dir: &Path) -> Result<(), ParcelError> {
    if let Err(e) = fs::rename(tmp, final_dir) {
        let complete = |dir: &Path| dir.join(MANIFEST).is_file();
        if final_dir.exists() && !complete(final_dir) {
            // A leftover without a manifest is not a parcel: replace it.
            let _ = remove_tree(final_dir);
            let _ = fs::rename(tmp, final_dir);
        }
        // Otherwise another writer of the same parcel won the race: use it.
        let _ = remove_tree(tmp);
        if !complete(final_dir) {
            return Err(io_err("cannot move the new parcel into", final_dir)(e));
        }
    }
    Ok(())
}

/// Removes temporary directories left by builds that died (older than an hour).
pub(crate) fn remove_stale_temps(parcels_root: &Path) {
    let Ok(entries) = fs::read_dir(parcels_root) else {
        return;
    };
    let hour = std::time::Duration::from_secs(3600);
    for entry in entries.filter_map(Result::ok) {
        let is_temp = entry.file_name().to_string_lossy().starts_with(TMP_PREFIX);
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| t.elapsed());
        if is_temp && matches!(age, Ok(Ok(age)) if age > hour) {
            match entry.file_type().is_ok_and(|t| t.is_dir()) {
                true => drop(remove_tree(&entry.path())),
                false => drop(fs::remove_file(entry.path())),
            }
        }
    }
}

pub(crate) fn load(dir: &Path) -> Result<Parcel, ParcelError> {
    if !dir.is_dir() {
        return Err(ParcelError::NoSuchPath(dir.to_path_buf()));
    }
    let digest = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let corrupt = |problem: String| ParcelError::Corrupt {
        digest: digest.clone(),
        problem,
    };
    let path = dir.join(MANIFEST);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(corrupt(format!("{MANIFEST} is missing")));
        }
        Err(e) => return Err(io_err("cannot read", &path)(e)),
    };
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != digest {
        return Err(corrupt(format!(
            "{MANIFEST} hashes to {actual}, not to the directory name"
        )));
    }
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(format!("{MANIFEST} is not a valid manifest: {e}")))?;
    if manifest.schema != SCHEMA {
        return Err(corrupt(format!(
            "unsupported manifest schema {} (this version reads schema {SCHEMA})",
            manifest.schema
        )));
    }
    let created_at = fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Ok(Parcel {
        digest,
        dir: dir.to_path_buf(),
        manifest,
        created_at,
    })
}

pub(crate) fn list(parcels_root: &Path) -> Vec<Parcel> {
    let Ok(entries) = fs::read_dir(parcels_root) else {
        return Vec::new();
    };
    let mut parcels: Vec<Parcel> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| load(&e.path()).ok())
        .collect();
    parcels.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| a.digest.cmp(&b.digest))
    });
    parcels
}

/// `(context directory, Agentfile path)` for a directory or an Agentfile path.
fn locate(context: &Path) -> Result<(PathBuf, PathBuf), ParcelError> {
    let meta = fs::metadata(context).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ParcelError::NoSuchPath(context.to_path_buf()),
        _ => io_err("cannot read", context)(e),
    })?;
    if meta.is_dir() {
        let file = context.join("Agentfile");
        if !file.is_file() {
            return Err(ParcelError::NoAgentfile(context.to_path_buf()));
        }
        return Ok((context.to_path_buf(), file));
    }
    let dir = match context.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, context.to_path_buf()))
}

pub(crate) fn temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{TMP_PREFIX}{}-{nanos}-{n}", std::process::id())
}

/// The file in the context that `rel` names, if it is a file inside the context.
fn context_file(ctx: &Path, rel: &str) -> Option<PathBuf> {
    let rel = norm_rel(rel)?;
    if rel.is_empty() {
        return None;
    }
    let real = fs::canonicalize(ctx.join(rel)).ok()?;
    (real.starts_with(ctx) && real.is_file()).then_some(real)
}

/// A relative path that stays inside its root, or None.
pub(crate) fn norm_rel(p: &str) -> Option<String> {
    if p.starts_with('/') || p.starts_with('\\') || p.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

fn read_text(
    path: &Path,
    directive: &str,
    arg: &str,
    line: usize,
) -> Result<String, AgentfileError> {
    fs::read_to_string(path).map_err(|e| {
        let problem = match e.kind() {
            io::ErrorKind::InvalidData => "is not valid UTF-8 text".to_string(),
            _ => format!("cannot be read: {e}"),
        };
        AgentfileError::new(line, format!("{directive} file `{arg}` {problem}"))
    })
}

fn resolve_text(src: &TextSource, directive: &str, ctx: &Path) -> Result<String, AgentfileError> {
    if let Some(path) = context_file(ctx, &src.text) {
        return read_text(&path, directive, &src.text, src.line);
    }
    let lower = src.text.to_ascii_lowercase();
    let looks_like_file = !src.text.contains(char::is_whitespace)
        && [".md", ".markdown", ".txt"]
            .iter()
            .any(|ext| lower.ends_with(ext));
    if !src.quoted && looks_like_file {
        let problem = match norm_rel(&src.text) {
            Some(_) => "not found in",
            None => "is outside",
        };
        return Err(AgentfileError::new(
            src.line,
            format!(
                "{directive} file `{}` {problem} the build context (hint: paths are relative to the directory that holds the Agentfile; to use the text itself, quote it)",
                src.text
            ),
        ));
    }
    Ok(src.text.clone())
}

fn resolve_instructions(
    af: &Agentfile,
    skills: Vec<Skill>,
    ctx: &Path,
) -> Result<Instructions, AgentfileError> {
    let identity = af
        .identity
        .as_ref()
        .map(|s| resolve_text(s, "IDENTITY", ctx))
        .transpose()?;
    let soul = af
        .soul
        .as_ref()
        .map(|s| resolve_text(s, "SOUL", ctx))
        .transpose()?;
    let prompts = af
        .prompts
        .iter()
        .map(|s| resolve_text(s, "PROMPT", ctx))
        .collect::<Result<_, _>>()?;
    let documents = af
        .documents
        .iter()
        .map(|(kind, src)| {
            let content = resolve_text(src, kind.directive(), ctx)?;
            Ok(Document {
                kind: *kind,
                content,
            })
        })
        .collect::<Result<_, AgentfileError>>()?;
    Ok(Instructions {
        identity,
        soul,
        skills,
        prompts,
        documents,
    })
}

fn join_rel(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Every file the COPY directives name, hashed, sorted by destination.
/// The longest file name (one part of a path) Linux file systems take.
const MAX_NAME_BYTES: usize = 255;

fn plan_files(af: &Agentfile, ctx: &Path, root: &Path) -> Result<Vec<Planned>, ParcelError> {
    let mut by_dest: BTreeMap<String, Planned> = BTreeMap::new();
    for spec in &af.copies {
        let copy_err = |problem: String| ParcelError::Copy {
            src: if spec.src.is_empty() {
                ".".into()
            } else {
                spec.src.clone()
            },
            line: spec.line,
            problem,
        };
        let path = ctx.join(&spec.src);
        if let Err(e) = fs::symlink_metadata(&path) {
            let hint = if spec.src.contains(['*', '?', '[']) {
                "wildcards are not supported; name a file or a directory"
            } else {
                "paths are relative to the directory that holds the Agentfile"
            };
            return Err(copy_err(match e.kind() {
                io::ErrorKind::NotFound => {
                    format!("no such file or directory in the build context (hint: {hint})")
                }
                _ => format!("cannot be read: {e}"),
            }));
        }
        let real = fs::canonicalize(&path)
            .map_err(|e| copy_err(format!("cannot be resolved (a dangling symlink?): {e}")))?;
        if !real.starts_with(ctx) {
            return Err(copy_err(format!(
                "resolves to {}, outside the build context (hint: symlinks must point inside the directory that holds the Agentfile)",
                real.display()
            )));
        }
        let mut add = |dest: String, src: PathBuf| -> Result<(), ParcelError> {
            if let Some(part) = dest.split('/').find(|p| p.len() > MAX_NAME_BYTES) {
                return Err(copy_err(format!(
                    "destination `{}` has a part of {} bytes; a file name has at most {MAX_NAME_BYTES} (hint: give a shorter destination)",
                    crate::event::shorten(part, 40),
                    part.len()
                )));
            }
            if let Some(prev) = by_dest.get(&dest) {
                return Err(copy_err(format!(
                    "destination `{dest}` is also written by COPY {} on line {} (hint: give one of them another destination)",
                    prev.copy_src, prev.line
                )));
            }
            let (sha256, size) = hash_file(&src).map_err(io_err("cannot read", &src))?;
            let executable = is_executable(&src);
            let entry = FileEntry {
                path: dest.clone(),
                sha256,
                size,
                executable,
            };
            by_dest.insert(
                dest,
                Planned {
                    src,
                    entry,
                    copy_src: spec.src.clone(),
                    line: spec.line,
                },
            );
            Ok(())
        };
        if real.is_file() {
            let dest = if spec.dest_is_dir {
                let base = spec.src.rsplit('/').next().unwrap_or_default();
                join_rel(&spec.dest, base)
            } else {
                spec.dest.clone()
            };
            add(dest, real)?;
        } else if real.is_dir() {
            walk(&real, &spec.dest, ctx, root, &mut add).map_err(|e| match e {
                WalkError::Parcel(e) => e,
                WalkError::Problem(p) => copy_err(p),
            })?;
        } else {
            return Err(copy_err("is not a regular file or a directory".into()));
        }
    }
    // A file may not be where another file needs a directory.
    for dest in by_dest.keys() {
        let mut ancestor = dest.as_str();
        while let Some((parent, _)) = ancestor.rsplit_once('/') {
            if let Some(p) = by_dest.get(parent) {
                return Err(ParcelError::Copy {
                    src: p.copy_src.clone(),
                    line: p.line,
                    problem: format!(
                        "destination `{parent}` is a file, but `{dest}` needs it to be a directory (hint: give one of them another destination)"
                    ),
                });
            }
            ancestor = parent;
        }
    }
    Ok(by_dest.into_values().collect())
}

enum WalkError {
    Parcel(ParcelError),
    Problem(String),
}

impl From<ParcelError> for WalkError {
    fn from(e: ParcelError) -> Self {
        WalkError::Parcel(e)
    }
}

fn walk(
    dir: &Path,
    dest: &str,
    ctx: &Path,
    root: &Path,
    add: &mut dyn FnMut(String, PathBuf) -> Result<(), ParcelError>,
) -> Result<(), WalkError> {
    let entries = fs::read_dir(dir).map_err(io_err("cannot read directory", dir))?;
    let mut entries: Vec<fs::DirEntry> = entries
        .collect::<Result<_, _>>()
        .map_err(io_err("cannot read directory", dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            return Err(WalkError::Problem(format!(
                "file name {} is not valid UTF-8 (hint: rename it)",
                path.display()
            )));
        };
        if SKIPPED_DIRS.contains(&name.as_str()) || path == root {
            continue;
        }
        let file_type = entry.file_type().map_err(io_err("cannot read", &path))?;
        let target = join_rel(dest, &name);
        if file_type.is_symlink() {
            // Followed only to a file inside the context; everything else is skipped.
            let real = fs::canonicalize(&path).ok();
            if let Some(real) = real.filter(|r| r.starts_with(ctx) && r.is_file()) {
                add(target, real)?;
            }
        } else if file_type.is_dir() {
            walk(&path, &target, ctx, root, add)?;
        } else if file_type.is_file() {
            add(target, path)?;
        }
    }
    Ok(())
}

/// SHA-256 (hex) and size of a file, read in chunks.
fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = fs::File::open(path)?;
    copy_hashing(&mut file, &mut io::sink())
}

/// Copies `from` into `to`, returning the SHA-256 (hex) and size of what was copied.
pub(crate) fn copy_hashing(from: &mut impl Read, to: &mut impl Write) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = buf.get(..n).unwrap_or_default();
        hasher.update(chunk);
        to.write_all(chunk)?;
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(_path: &Path) -> bool {
    false
}

#[cfg(unix)]
pub(crate) fn make_read_only(path: &Path, executable: bool) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = if executable { 0o555 } else { 0o444 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
pub(crate) fn make_read_only(path: &Path, _executable: bool) -> io::Result<()> {
    let mut perms = fs::metadata(path)?.permissions();
    perms.set_readonly(true);
    fs::set_permissions(path, perms)
}

/// Writes a complete parcel into `tmp` (which must not exist).
fn write_parcel(tmp: &Path, manifest: &[u8], plan: &[Planned]) -> Result<(), ParcelError> {
    let files = tmp.join(FILES);
    fs::create_dir_all(&files).map_err(io_err("cannot create", &files))?;
    for p in plan {
        let dest = files.join(&p.entry.path);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
        }
        let mut from = fs::File::open(&p.src).map_err(io_err("cannot read", &p.src))?;
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .map_err(io_err("cannot create", &dest))?;
        let (sha, _) = copy_hashing(&mut from, &mut to).map_err(io_err("cannot copy", &p.src))?;
        if sha != p.entry.sha256 {
            return Err(ParcelError::Copy {
                src: p.copy_src.clone(),
                line: p.line,
                problem: format!(
                    "{} changed while the parcel was being built (hint: build again)",
                    p.src.display()
                ),
            });
        }
        to.sync_all().map_err(io_err("cannot write", &dest))?;
        make_read_only(&dest, p.entry.executable)
            .map_err(io_err("cannot set permissions on", &dest))?;
    }
    let path = tmp.join(MANIFEST);
    let mut file = fs::File::create(&path).map_err(io_err("cannot create", &path))?;
    file.write_all(manifest)
        .and_then(|()| file.sync_all())
        .map_err(io_err("cannot write", &path))?;
    make_read_only(&path, false).map_err(io_err("cannot set permissions on", &path))?;
    let files: Vec<FileEntry> = plan.iter().map(|p| p.entry.clone()).collect();
    crate::parcel_seal::seal(tmp, &files).map_err(io_err("cannot seal", tmp))
}

#[cfg(test)]
#[path = "parcel_build_tests.rs"]
mod tests;
