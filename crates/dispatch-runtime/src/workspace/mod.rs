//! A private workspace per run: `runs/<id>/work/` starts as a copy of the
//! parcel's files and is the agent's working directory (and the root of a
//! native agent's file tools and LOCAL tools); `runs/<id>/home/` is its
//! `HOME` and `runs/<id>/tmp/` its `TMPDIR`.
//!
//! - The copy is made once per run, before its first attempt: a retry or a
//!   wake from a durable wait of the same run (on the same machine) finds
//!   the workspace as the last attempt left it and never copies over it.
//! - As root, the workspace of a parcel with more than [`SMALL_FILES`]
//!   files or [`SMALL_BYTES`] bytes is an overlayfs mount of a read-only
//!   template of the parcel's files: a `mount`, whatever the parcel's size
//!   (see [`overlay`]). A smaller parcel's is a copy: copying a few small
//!   files costs less than a mount and its unmount, and a copy costs the
//!   kernel the same at any number of live runs, where every mount and
//!   unmount walks the whole mount table (thousands of live runs on one
//!   worker made each mount slower and the machine's system time
//!   dominant). `DISPATCH_WORKSPACE=overlay` or `copy` chooses for every
//!   parcel. Without root, or when the mount fails, it is a copy (the
//!   reason is recorded and `inspect-run` shows it).
//! - A copy clones each file (`FICLONE`, a reflink: instant and shares blocks
//!   until written, on btrfs and xfs) or else copies it (ext4 has no
//!   reflinks). Hard links are never used: the parcel's read-only modes do
//!   not stop a process running as root, which would write through a link
//!   into the parcel. The copies are writable by the agent (0644, or 0755
//!   when executable).
//! - The copy is written under a temporary name and renamed into place, so
//!   a helper killed halfway leaves no half workspace to be reused.
//! - When the run ends the workspace is removed (an overlay unmounted
//!   first), unless the run was
//!   dispatched with `--keep-workspace`: then it stays until `rm`, `prune`
//!   or retention removes the run (with the rest of its directory).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use dispatch_core::RunId;
use dispatch_core::parcel::{FileEntry, Parcel};
use dispatch_core::parcel_seal::remove_tree;

use crate::layout::Layout;

pub(crate) mod overlay;

/// `runs/<id>/workspace-kind`: how the workspace was made, for `inspect-run`.
const KIND_FILE: &str = "workspace-kind";

/// Chooses how workspaces are made: `auto` (the default), `overlay`, `copy`.
pub const WORKSPACE_ENV: &str = "DISPATCH_WORKSPACE";
/// A parcel with at most this many files (and [`SMALL_BYTES`]) is copied.
pub const SMALL_FILES: usize = 64;
/// A parcel with at most this many bytes (and [`SMALL_FILES`]) is copied.
pub const SMALL_BYTES: u64 = 1 << 20;

/// Why a workspace is a copy even where an overlay could be mounted, or
/// `None` when an overlay is to be tried.
fn copy_instead(parcel: &Parcel) -> Option<String> {
    let choice = std::env::var(WORKSPACE_ENV).unwrap_or_default();
    match choice.trim() {
        "overlay" => None,
        "copy" => Some(format!("{WORKSPACE_ENV}=copy")),
        _ => {
            let files = &parcel.manifest.files;
            let bytes: u64 = files.iter().map(|f| f.size).sum();
            (files.len() <= SMALL_FILES && bytes <= SMALL_BYTES).then(|| {
                format!(
                    "a small parcel: {} file(s), {bytes} bytes; {WORKSPACE_ENV}=overlay mounts one",
                    files.len()
                )
            })
        }
    }
}

/// The directories a run's agent gets.
#[derive(Clone, Debug)]
pub struct Workspace {
    /// `runs/<id>/work/`: the agent's working directory.
    pub work: PathBuf,
    /// `runs/<id>/home/`: its `HOME`.
    pub home: PathBuf,
    /// `runs/<id>/tmp/`: its `TMPDIR`.
    pub tmp: PathBuf,
}

/// Where run `id`'s workspace is (whether or not it exists).
pub fn paths(layout: &Layout, id: &RunId) -> Workspace {
    let dir = layout.run_dir(id);
    Workspace {
        work: dir.join("work"),
        home: dir.join("home"),
        tmp: dir.join("tmp"),
    }
}

/// How the files of a workspace were made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Populated {
    /// Files cloned (reflinks).
    pub cloned: usize,
    /// Files copied byte for byte.
    pub copied: usize,
}

/// Makes run `id`'s workspace from `parcel`'s files, unless it exists
/// already (an earlier attempt of the run made it; an overlay that is no
/// longer mounted, after a helper was killed, is mounted again).
pub fn ensure(layout: &Layout, id: &RunId, parcel: &Parcel) -> io::Result<Workspace> {
    ensure_owned(layout, id, parcel, None)
}

/// [`ensure`], with the workspace's files, `HOME`, `TMPDIR` and the run
/// directory itself belonging to `owner` (uid, gid): the sandbox's user
/// (see [`crate::sandbox`]). An overlay's template is then that user's
/// (`parcels/.lower/<digest>.<uid>`), so the files the agent finds are its
/// own to change.
pub fn ensure_owned(
    layout: &Layout,
    id: &RunId,
    parcel: &Parcel,
    owner: Option<(u32, u32)>,
) -> io::Result<Workspace> {
    let ws = paths(layout, id);
    let dir = layout.run_dir(id);
    let state = overlay::state_dir(&dir);
    if state.is_dir() {
        if !overlay::is_mounted(&ws.work) {
            let lower = overlay::template(layout, parcel, owner)?;
            overlay::mount(&lower, &state, &ws.work, owner)?;
        }
    } else if !ws.work.is_dir() {
        let made = match copy_instead(parcel) {
            Some(why) => Err(why),
            None => make_overlay(layout, parcel, &state, &ws.work, owner)
                .map_err(|why| format!("no overlayfs: {why}")),
        };
        let kind = match made {
            Ok(()) => "overlayfs".to_string(),
            Err(why) => {
                let how = make_copy(&dir, parcel, &ws.work)?;
                if let Some(owner) = owner {
                    crate::sandbox::owner::give_tree(&ws.work, owner)?;
                }
                format!("{how} ({why})")
            }
        };
        let _ = fs::write(dir.join(KIND_FILE), kind);
    }
    fs::create_dir_all(&ws.home)?;
    fs::create_dir_all(&ws.tmp)?;
    if let Some(owner) = owner {
        for d in [&dir, &ws.home, &ws.tmp] {
            if d.exists() {
                crate::sandbox::owner::give(d, owner)?;
            }
        }
        if !state.is_dir() {
            crate::sandbox::owner::give(&ws.work, owner)?;
        }
    }
    Ok(ws)
}

/// The overlay workspace, or why there is none (nothing left behind then).
fn make_overlay(
    layout: &Layout,
    parcel: &Parcel,
    state: &Path,
    work: &Path,
    owner: Option<(u32, u32)>,
) -> Result<(), String> {
    overlay::can_mount()?;
    let lower = overlay::template(layout, parcel, owner)
        .map_err(|e| format!("cannot make the parcel's template: {e}"))?;
    overlay::mount(&lower, state, work, owner).map_err(|e| {
        let _ = remove_tree(state);
        let _ = fs::remove_dir(work);
        format!("mount failed: {e}")
    })
}

/// The copied workspace; says `reflinks` or `copies`.
fn make_copy(dir: &Path, parcel: &Parcel, work: &Path) -> io::Result<&'static str> {
    let tmp = dir.join(format!(".work.tmp-{}", std::process::id()));
    let _ = remove_tree(&tmp);
    match populate(&parcel.files_dir(), &parcel.manifest.files, &tmp)
        .and_then(|p| fs::rename(&tmp, work).map(|_| p))
    {
        Ok(p) if p.copied == 0 && p.cloned > 0 => Ok("reflinks"),
        Ok(_) => Ok("copies"),
        Err(e) => {
            let _ = remove_tree(&tmp);
            // Another process of the same run (a takeover) may have won.
            match work.is_dir() {
                true => Ok("copies"),
                false => Err(e),
            }
        }
    }
}

/// Copies `files` (paths inside `from`) into the new directory `to`: each
/// cloned when the filesystem can, else copied.
pub fn populate(from: &Path, files: &[FileEntry], to: &Path) -> io::Result<Populated> {
    fs::create_dir_all(to)?;
    let mut made: HashSet<PathBuf> = HashSet::new();
    let mut done = Populated::default();
    let mut try_clone = true;
    for f in files {
        let dest = to.join(&f.path);
        if let Some(parent) = dest.parent()
            && parent != to
            && !made.contains(parent)
        {
            fs::create_dir_all(parent)?;
            made.insert(parent.to_path_buf());
        }
        let mut src = File::open(from.join(&f.path))?;
        let mut dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if f.executable { 0o755 } else { 0o644 })
            .open(&dest)?;
        if try_clone {
            match clone_file(&src, &dst) {
                Ok(()) => {
                    done.cloned += 1;
                    continue;
                }
                // Not this filesystem (or across filesystems): copy the rest.
                Err(_) => try_clone = false,
            }
        }
        io::copy(&mut src, &mut dst)?;
        done.copied += 1;
    }
    Ok(done)
}

/// Clones `src` into the empty `dst` (`FICLONE`: a reflink).
#[cfg(target_os = "linux")]
fn clone_file(src: &File, dst: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: both descriptors are open for the duration of the call;
    // FICLONE reads an int (the source descriptor) and writes no memory.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    match r {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

#[cfg(not(target_os = "linux"))]
fn clone_file(_src: &File, _dst: &File) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Removes run `id`'s workspace, home and temporary directory (the run
/// ended and did not ask to keep them); an overlay is unmounted first.
pub fn release(layout: &Layout, id: &RunId) {
    let ws = paths(layout, id);
    let dir = layout.run_dir(id);
    let _ = overlay::unmount(&ws.work);
    for d in [&ws.work, &overlay::state_dir(&dir), &ws.home, &ws.tmp] {
        let _ = remove_tree(d);
    }
    let _ = fs::remove_file(dir.join(KIND_FILE));
}

/// Unmounts run `id`'s overlay workspace, if one is mounted, and keeps its
/// files (the upper layer): a later attempt mounts it again. For a helper
/// that died, and before a run's directory is removed.
pub fn unmount(layout: &Layout, id: &RunId) {
    let _ = overlay::unmount(&paths(layout, id).work);
}

/// The runs whose overlay workspace is mounted under `layout`'s runs now
/// (a mount outlives a process killed with `kill -9`: a starting worker
/// unmounts those of runs it no longer holds, see [`unmount`]).
pub fn mounted(layout: &Layout) -> Vec<RunId> {
    let runs = layout.runs();
    let runs = runs.canonicalize().unwrap_or(runs);
    overlay::mounted_under(&runs)
        .into_iter()
        .filter(|point| point.file_name().is_some_and(|n| n == "work"))
        .filter_map(|point| point.parent()?.file_name()?.to_str()?.parse().ok())
        .collect()
}

/// What `inspect-run` says of a run's workspace.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct WorkspaceInfo {
    pub path: PathBuf,
    /// Kept after the run ends (`--keep-workspace`).
    pub keep: bool,
    /// Whether it is there now (on this machine).
    pub exists: bool,
    /// `in use`, `kept`, `removed`, `not created`, or `not mounted` (an
    /// overlay whose helper died: its files are in `runs/<id>/overlay/upper`).
    pub state: String,
    /// How it was made: `overlayfs`, `reflinks` or `copies` (then with the
    /// reason there is no overlay), when this machine made it.
    pub kind: Option<String>,
}

/// Run `id`'s workspace as `inspect-run` shows it.
pub fn info(layout: &Layout, id: &RunId, keep: bool, terminal: bool) -> WorkspaceInfo {
    let path = paths(layout, id).work;
    let dir = layout.run_dir(id);
    let overlaid = overlay::state_dir(&dir).is_dir();
    let exists = path.is_dir() && (!overlaid || overlay::is_mounted(&path));
    let state = match (exists, terminal, keep) {
        _ if overlaid && !exists => "not mounted",
        (true, false, _) => "in use",
        (true, true, _) => "kept",
        (false, true, false) => "removed",
        (false, _, _) => "not created",
    }
    .to_string();
    let kind = fs::read_to_string(dir.join(KIND_FILE)).ok();
    WorkspaceInfo {
        path,
        keep,
        exists,
        state,
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_workspace_is_a_writable_private_view_made_once() {
        let ctx = tempfile::tempdir().expect("tempdir");
        let c = ctx.path();
        fs::create_dir_all(c.join("lib")).expect("mkdir");
        fs::write(
            c.join("Agentfile"),
            "NAME ws\nCOMMAND ./run.sh\nCOPY run.sh\nCOPY lib\n",
        )
        .expect("write");
        fs::write(c.join("run.sh"), "echo hi\n").expect("write");
        fs::set_permissions(c.join("run.sh"), fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::write(c.join("lib/data"), "data\n").expect("write");
        let root = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(root.path());
        let parcel = dispatch_core::parcel::build(c, &layout.parcels()).expect("build");
        let id = RunId::new();
        fs::create_dir_all(layout.run_dir(&id)).expect("mkdir");
        let ws = ensure(&layout, &id, &parcel).expect("workspace");
        let mode = |f: &str| {
            fs::metadata(ws.work.join(f))
                .expect("meta")
                .permissions()
                .mode()
        };
        assert_eq!(mode("run.sh") & 0o777, 0o755);
        assert_eq!(mode("lib/data") & 0o777, 0o644);
        assert_eq!(mode("lib") & 0o777, 0o755);
        assert_eq!(
            fs::read_to_string(ws.work.join("lib/data")).expect("read"),
            "data\n"
        );
        // Written by an attempt: a later attempt finds it as it was, also
        // after an overlay was unmounted (its helper was killed).
        fs::write(ws.work.join("lib/data"), "changed\n").expect("write");
        fs::write(ws.work.join("lib/new"), "new\n").expect("write");
        unmount(&layout, &id);
        let again = ensure(&layout, &id, &parcel).expect("workspace");
        assert_eq!(
            fs::read_to_string(again.work.join("lib/data")).expect("read"),
            "changed\n"
        );
        let data = parcel.files_dir().join("lib/data");
        assert_eq!(fs::read_to_string(&data).expect("read"), "data\n");
        assert!(!parcel.files_dir().join("lib/new").exists());
        assert!(ws.home.is_dir() && ws.tmp.is_dir());
        let kind = info(&layout, &id, false, false).kind.expect("recorded");
        // SAFETY: geteuid has no arguments and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            // A small parcel: a copy, not a mount (`DISPATCH_WORKSPACE`
            // unset); the overlay is tested from the binary.
            assert!(kind.contains("(a small parcel: "), "{kind}");
        } else {
            assert!(kind.contains("no overlayfs: not root"), "{kind}");
        }
        release(&layout, &id);
        assert!(!overlay::is_mounted(&ws.work));
        assert!(!ws.work.exists() && !ws.home.exists() && !ws.tmp.exists());
    }
}
