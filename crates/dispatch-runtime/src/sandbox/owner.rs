//! The files a sandboxed run writes belong to the sandbox's user.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Gives `path` (not what is in it) to `owner` unless it has it already.
pub(crate) fn give(path: &Path, (uid, gid): (u32, u32)) -> std::io::Result<()> {
    let m = std::fs::symlink_metadata(path)?;
    if m.uid() == uid && m.gid() == gid {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

/// Gives `dir` and everything in it to `owner`; a tree whose top has it
/// already is taken as done (what the agent makes is its own).
pub(crate) fn give_tree(dir: &Path, owner: (u32, u32)) -> std::io::Result<()> {
    let m = std::fs::symlink_metadata(dir)?;
    if m.uid() == owner.0 && m.gid() == owner.1 {
        return Ok(());
    }
    give_all(dir, owner)
}

/// Gives `path` and everything in it to `owner`, whoever has the top (files
/// that came from elsewhere, such as a parcel's state pulled from the
/// cluster's store into a directory the sandbox's user already had).
pub(crate) fn give_all(path: &Path, owner: (u32, u32)) -> std::io::Result<()> {
    let m = std::fs::symlink_metadata(path)?;
    if m.is_dir() {
        for entry in std::fs::read_dir(path)? {
            give_all(&entry?.path(), owner)?;
        }
    }
    std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1))
}

/// The sandbox's user, when a run of `courier` started in this environment
/// is sandboxed (a process agent or a native agent's tools, as root).
pub(crate) fn of_courier(courier: dispatch_core::parcel::Courier) -> Option<(u32, u32)> {
    use dispatch_core::parcel::Courier;
    match courier {
        Courier::Process | Courier::Agent => super::Settings::from_env().owner(),
        _ => None,
    }
}
