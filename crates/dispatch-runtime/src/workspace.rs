//! A private workspace per run: `runs/<id>/work/` starts as a copy of the
//! parcel's files and is the agent's working directory (and the root of a
//! native agent's file tools and LOCAL tools); `runs/<id>/home/` is its
//! `HOME` and `runs/<id>/tmp/` its `TMPDIR`.
//!
//! - The copy is made once per run, before its first attempt: a retry or a
//!   wake from a durable wait of the same run (on the same machine) finds
//!   the workspace as the last attempt left it and never copies over it.
//! - Each file is cloned (`FICLONE`, a reflink: instant and shares blocks
//!   until written, on btrfs and xfs) or else copied (ext4 has no
//!   reflinks). Hard links are never used: the parcel's read-only modes do
//!   not stop a process running as root, which would write through a link
//!   into the parcel. The copies are writable by the agent (0644, or 0755
//!   when executable).
//! - The copy is written under a temporary name and renamed into place, so
//!   a helper killed halfway leaves no half workspace to be reused.
//! - When the run ends the workspace is removed, unless the run was
//!   dispatched with `--keep-workspace`: then it stays until `rm`, `prune`
//!   or retention removes the run (with the rest of its directory).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use dispatch_core::RunId;
use dispatch_core::parcel::FileEntry;
use dispatch_core::parcel_seal::remove_tree;

use crate::layout::Layout;

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

/// Makes run `id`'s workspace from the parcel's `files_dir` and `files`,
/// unless it exists already (an earlier attempt of the run made it).
pub fn ensure(
    layout: &Layout,
    id: &RunId,
    files_dir: &Path,
    files: &[FileEntry],
) -> io::Result<Workspace> {
    let ws = paths(layout, id);
    if !ws.work.is_dir() {
        let parent = ws.work.parent().unwrap_or(Path::new("."));
        let tmp = parent.join(format!(".work.tmp-{}", std::process::id()));
        let _ = remove_tree(&tmp);
        if let Err(e) = populate(files_dir, files, &tmp).and_then(|_| fs::rename(&tmp, &ws.work)) {
            let _ = remove_tree(&tmp);
            // Another process of the same run (a takeover) may have won.
            if !ws.work.is_dir() {
                return Err(e);
            }
        }
    }
    fs::create_dir_all(&ws.home)?;
    fs::create_dir_all(&ws.tmp)?;
    Ok(ws)
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
/// ended and did not ask to keep them).
pub fn release(layout: &Layout, id: &RunId) {
    let ws = paths(layout, id);
    for dir in [&ws.work, &ws.home, &ws.tmp] {
        let _ = remove_tree(dir);
    }
}

/// What `inspect-run` says of a run's workspace.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WorkspaceInfo {
    pub path: PathBuf,
    /// Kept after the run ends (`--keep-workspace`).
    pub keep: bool,
    /// Whether it is there now (on this machine).
    pub exists: bool,
    /// `in use`, `kept`, `removed`, or `not created`.
    pub state: &'static str,
}

/// Run `id`'s workspace as `inspect-run` shows it.
pub fn info(layout: &Layout, id: &RunId, keep: bool, terminal: bool) -> WorkspaceInfo {
    let path = paths(layout, id).work;
    let exists = path.is_dir();
    let state = match (exists, terminal, keep) {
        (true, false, _) => "in use",
        (true, true, _) => "kept",
        (false, true, false) => "removed",
        (false, _, _) => "not created",
    };
    WorkspaceInfo {
        path,
        keep,
        exists,
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entry(path: &str, executable: bool) -> FileEntry {
        FileEntry {
            path: path.into(),
            sha256: String::new(),
            size: 0,
            executable,
        }
    }

    #[test]
    fn a_workspace_is_a_writable_copy_made_once() {
        let parcel = tempfile::tempdir().expect("tempdir");
        let p = parcel.path();
        fs::create_dir_all(p.join("lib")).expect("mkdir");
        fs::write(p.join("run.sh"), "echo hi\n").expect("write");
        fs::write(p.join("lib/data"), "data\n").expect("write");
        for (f, m) in [("run.sh", 0o555), ("lib/data", 0o444)] {
            fs::set_permissions(p.join(f), fs::Permissions::from_mode(m)).expect("chmod");
        }
        let files = [entry("lib/data", false), entry("run.sh", true)];
        let root = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(root.path());
        let id = RunId::new();
        fs::create_dir_all(layout.run_dir(&id)).expect("mkdir");
        let ws = ensure(&layout, &id, p, &files).expect("workspace");
        let mode = |f: &str| {
            fs::metadata(ws.work.join(f))
                .expect("meta")
                .permissions()
                .mode()
        };
        assert_eq!(mode("run.sh") & 0o777, 0o755);
        assert_eq!(mode("lib/data") & 0o777, 0o644);
        assert_eq!(
            fs::read_to_string(ws.work.join("lib/data")).expect("read"),
            "data\n"
        );
        // Written by an attempt: a later attempt finds it as it was.
        fs::write(ws.work.join("lib/data"), "changed\n").expect("write");
        let again = ensure(&layout, &id, p, &files).expect("workspace");
        assert_eq!(
            fs::read_to_string(again.work.join("lib/data")).expect("read"),
            "changed\n"
        );
        assert_eq!(
            fs::read_to_string(p.join("lib/data")).expect("read"),
            "data\n"
        );
        assert!(ws.home.is_dir() && ws.tmp.is_dir());
        release(&layout, &id);
        assert!(!ws.work.exists() && !ws.home.exists() && !ws.tmp.exists());
    }
}
