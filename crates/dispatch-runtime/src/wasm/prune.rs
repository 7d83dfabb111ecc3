//! Pruning `cache/wasm/`: the compilations no parcel on this machine needs
//! any more (its component's parcel was removed), or that this binary's
//! engine cannot load (compiled by another wasmtime or with other
//! settings), and temporary files a killed writer left.

use std::collections::HashSet;
use std::path::Path;

use crate::layout::Layout;

/// What a prune removed: files and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub files: u64,
    pub bytes: u64,
}

/// Removes from `layout`'s `cache/wasm/` every compiled component whose
/// SHA-256 is no remaining parcel's COMPONENT, or whose engine fingerprint
/// is not this binary's, and every leftover temporary file.
pub fn prune_cache(layout: &Layout) -> Pruned {
    let dir = layout.root().join("cache").join("wasm");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Pruned::default();
    };
    let keep = components_in_use(&layout.parcels());
    // Only when there is a cache: making the engines takes milliseconds.
    // Either engine's compilations are current (with and without fuel).
    let current: Vec<u64> = [false, true]
        .into_iter()
        .filter_map(|fuel| super::engine(fuel).ok().map(super::engine_fingerprint))
        .collect();
    let mut pruned = Pruned::default();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let stale = match parse(&name) {
            Some((sha, fp)) => {
                !keep.contains(sha) || (!current.is_empty() && !current.contains(&fp))
            }
            // A writer's temporary (`…cwasm` renamed to `….tmpPID`): only
            // when that writer is gone.
            None => temporary_of_a_dead_writer(&name),
        };
        if !stale {
            continue;
        }
        let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
        if std::fs::remove_file(entry.path()).is_ok() {
            pruned.files += 1;
            pruned.bytes += len;
        }
    }
    pruned
}

/// The SHA-256s of the components of every parcel under `parcels`.
fn components_in_use(parcels: &Path) -> HashSet<String> {
    dispatch_core::parcel::list(parcels)
        .into_iter()
        .filter_map(|p| {
            let c = p.manifest.component.as_ref()?;
            let f = p.manifest.files.iter().find(|f| f.path == c.path)?;
            Some(f.sha256.clone())
        })
        .collect()
}

/// `{sha256}-{fingerprint:016x}.cwasm`.
fn parse(name: &str) -> Option<(&str, u64)> {
    let stem = name.strip_suffix(".cwasm")?;
    let (sha, fp) = stem.rsplit_once('-')?;
    Some((sha, u64::from_str_radix(fp, 16).ok()?))
}

fn temporary_of_a_dead_writer(name: &str) -> bool {
    let Some((_, pid)) = name.rsplit_once(".tmp") else {
        return false;
    };
    match pid.parse::<i32>() {
        Ok(pid) => nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_are_read_back_and_others_are_not_taken_for_them() {
        let sha = "ab".repeat(32);
        let name = format!("{sha}-{:016x}.cwasm", 0x1234_u64);
        assert_eq!(parse(&name), Some((sha.as_str(), 0x1234)));
        assert_eq!(parse("notes.txt"), None);
        assert_eq!(parse(&format!("{sha}-{:016x}.tmp42", 1_u64)), None);
        assert!(!temporary_of_a_dead_writer("x.cwasm"));
        // Our own pid is alive: its temporary is being written.
        assert!(!temporary_of_a_dead_writer(&format!(
            "x.tmp{}",
            std::process::id()
        )));
    }
}
