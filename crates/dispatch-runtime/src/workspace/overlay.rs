//! The overlayfs workspace: when the runtime may mount (root), a run's
//! `work/` is an overlay whose lower layer is a read-only template of the
//! parcel's files and whose upper layer (`runs/<id>/overlay/upper`, with
//! overlayfs's `overlay/work`) takes every write. Making one is a `mount`,
//! whatever the parcel's size; nothing is copied per run.
//!
//! - The template, `parcels/.lower/<digest>/`, is the parcel's files as a
//!   workspace shows them (owned by root, 0644 or 0755, directories 0755),
//!   made once per parcel by the first run that needs it (a copy, or
//!   reflinks) under a temporary name and renamed into place. The parcel
//!   itself cannot be the lower layer: its files are owned by `nobody` and
//!   read-only, and overlayfs shows the lower layer's owners and modes, so
//!   an agent could not change its workspace's files.
//! - `parcels/.lower/` is owned by `nobody` with mode 0700: a root agent
//!   (which lost the powers that override modes, see
//!   `dispatch_agent::tools::powers`) can neither reach nor change the
//!   templates; writes through the overlay go to the run's upper layer.
//! - A mount outlives a helper killed with `kill -9`: the reader that
//!   reconciles the dead helper unmounts it ([`crate::workspace::unmount`]),
//!   and `rm`, `prune` and retention unmount before they remove files.
//!   Unmounting is lazy (`MNT_DETACH`): a straggler that still has a file
//!   open cannot keep the mount in the mount table.
//! - Mounted `volatile`: no syncs, so unmounting does not wait for the
//!   whole filesystem under `runs/` to be synced (tens of milliseconds on a
//!   busy disk). A workspace is scratch space: after a machine crash its
//!   writes may be lost, as a copied workspace's unsynced writes would be.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use dispatch_core::parcel::Parcel;
use dispatch_core::parcel_seal::remove_tree;

use crate::layout::Layout;

/// The owner of `parcels/.lower/` (`nobody`, like the parcels).
const HIDDEN_OWNER: u32 = 65534;

/// `runs/<id>/overlay/`: the upper layer and overlayfs's work directory.
pub(crate) fn state_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("overlay")
}

/// Whether this process may mount (an overlay is tried only then).
pub(crate) fn can_mount() -> Result<(), &'static str> {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root");
    }
    Ok(())
}

/// The template of `parcel`'s files, made now unless it exists; with an
/// `owner`, that user's copy (its files are theirs: a sandboxed agent may
/// change its workspace's files).
pub(crate) fn template(
    layout: &Layout,
    parcel: &Parcel,
    owner: Option<(u32, u32)>,
) -> io::Result<PathBuf> {
    let hidden = layout.parcels().join(".lower");
    let dir = match owner {
        Some((uid, _)) => hidden.join(format!("{}.{uid}", parcel.digest)),
        None => hidden.join(&parcel.digest),
    };
    if dir.is_dir() {
        return Ok(dir);
    }
    if !hidden.is_dir() {
        match fs::create_dir(&hidden) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    // Out of an agent's reach (see the module docs); made so every time,
    // since it is cheap and a directory made by an older build may differ.
    if fs::metadata(&hidden)?.uid() != HIDDEN_OWNER {
        std::os::unix::fs::chown(&hidden, Some(HIDDEN_OWNER), Some(HIDDEN_OWNER))?;
    }
    fs::set_permissions(&hidden, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    let tmp = hidden.join(format!(".tmp-{}-{}", std::process::id(), parcel.digest));
    let _ = remove_tree(&tmp);
    let made = super::populate(&parcel.files_dir(), &parcel.manifest.files, &tmp)
        .and_then(|_| match owner {
            Some(owner) => crate::sandbox::owner::give_tree(&tmp, owner),
            None => Ok(()),
        })
        .and_then(|_| fs::rename(&tmp, &dir));
    if let Err(e) = made {
        let _ = remove_tree(&tmp);
        // Another run of the parcel may have made it meanwhile.
        if !dir.is_dir() {
            return Err(e);
        }
    }
    Ok(dir)
}

/// Mounts the overlay of `lower` and the run's upper layer (under
/// `state`, made if missing) at `merged`. With an `owner`, the upper
/// layer's top (the workspace's top directory) is theirs, given before the
/// mount: overlayfs takes a directory's owner when it first looks it up.
pub(crate) fn mount(
    lower: &Path,
    state: &Path,
    merged: &Path,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    let (upper, work) = (state.join("upper"), state.join("work"));
    for d in [&upper, &work, &merged.to_path_buf()] {
        fs::create_dir_all(d)?;
    }
    if let Some(owner) = owner {
        crate::sandbox::owner::give(&upper, owner)?;
    }
    let mut opts = Vec::new();
    for (key, path) in [
        ("lowerdir", lower),
        ("upperdir", &upper),
        ("workdir", &work),
    ] {
        let bytes = path.as_os_str().as_bytes();
        // The legacy option string cannot carry these unescaped.
        if bytes.iter().any(|b| matches!(b, b',' | b':' | b'\\' | 0)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} has a character overlayfs options cannot carry",
                    path.display()
                ),
            ));
        }
        opts.push(format!("{key}={}", path.display()));
    }
    // No syncs (an unmount would otherwise sync the whole filesystem of the
    // upper layer): a workspace is scratch space, like the copy it replaces.
    opts.push("volatile".into());
    // A volatile upper layer that was unmounted (a helper killed, a later
    // attempt) is refused until this marker goes.
    let _ = remove_tree(&work.join("work/incompat/volatile"));
    let c = |b: &[u8]| CString::new(b).map_err(io::Error::other);
    let (src, target, fstype, data) = (
        c(b"overlay")?,
        c(merged.as_os_str().as_bytes())?,
        c(b"overlay")?,
        c(opts.join(",").as_bytes())?,
    );
    // SAFETY: every pointer is a valid NUL-terminated string for the call.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether something is mounted at `dir` (its device differs from its
/// parent's).
pub(crate) fn is_mounted(dir: &Path) -> bool {
    let Some(parent) = dir.parent() else {
        return false;
    };
    match (fs::symlink_metadata(dir), fs::metadata(parent)) {
        (Ok(d), Ok(p)) => d.is_dir() && d.dev() != p.dev(),
        _ => false,
    }
}

/// Unmounts `dir` (lazily) when something is mounted there; says whether
/// it was.
pub(crate) fn unmount(dir: &Path) -> io::Result<bool> {
    if !is_mounted(dir) {
        return Ok(false);
    }
    let target = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: target is a valid NUL-terminated path.
    let r = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// The mount points under `root` (this process's mount table, read from
/// `/proc/self/mountinfo`; its fifth field is the mount point, with space,
/// tab, newline and backslash written as octal escapes).
pub(crate) fn mounted_under(root: &Path) -> Vec<PathBuf> {
    let Ok(table) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .filter(|point| point.starts_with(root) && point != root)
        .collect()
}

/// `\ooo` octal escapes undone.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let n = d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0'));
                out.push(n as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(super::unescape("/a\\040b/c"), "/a b/c");
        assert_eq!(super::unescape("/plain"), "/plain");
        assert_eq!(super::unescape("/x\\134y"), "/x\\y");
        assert_eq!(super::unescape("/trailing\\"), "/trailing\\");
    }
}
