//! `prune`: removing finished runs, and the files no run needs any more.
//!
//! Two steps, so that a caller can ask before removing: [`candidates`]
//! lists the runs a prune would remove, [`prune_runs`] removes them with
//! their log, snapshot and run directory, then every artifact and brief
//! (both content-addressed, shared between runs) that no remaining run
//! references.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use dispatch_core::{RunId, Status, Ts};
use dispatch_store::{Run, RunFilter, Store, StoreError};

use crate::error::RuntimeResult;
use crate::layout::Layout;
use crate::reconcile::reconcile_all;

/// A file in `artifacts/` or `briefs/` that no run references is removed
/// only when it is older than this: a run being created writes its brief
/// before its record, and a finishing run stores its artifacts before it
/// records them.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(600);

/// Which finished runs to prune. Every field set must hold (values within
/// `statuses` and `parcels` are alternatives).
#[derive(Clone, Debug, Default)]
pub struct PruneFilter {
    /// Any of these terminal statuses; empty means all.
    pub statuses: Vec<Status>,
    /// Only runs that ended before this time.
    pub until: Option<Ts>,
    /// Any of these parcel names (or digest prefixes); empty means all.
    pub parcels: Vec<String>,
    /// Also runs with a dead letter or a pending approval.
    pub dead_letters: bool,
}

impl PruneFilter {
    fn matches(&self, run: &Run) -> bool {
        let status = run.status();
        status.is_terminal()
            && (self.statuses.is_empty() || self.statuses.contains(&status))
            && self
                .until
                .is_none_or(|until| run.state.ended_at().is_some_and(|end| end < until))
            && (self.parcels.is_empty()
                || self
                    .parcels
                    .iter()
                    .any(|p| run.parcel_name == *p || run.parcel_digest.starts_with(p.as_str())))
    }
}

/// What a prune removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: Vec<RunId>,
    /// Bytes of files deleted (the database is not counted).
    pub reclaimed_bytes: u64,
}

/// The runs a prune would remove, and how many it keeps for their dead
/// letter or pending approval.
#[derive(Clone, Debug, Default)]
pub struct Candidates {
    pub runs: Vec<Run>,
    pub kept: usize,
}

/// The finished runs `filter` selects, newest first. Runs with a dead letter
/// not replayed yet or a pending approval are kept unless
/// `filter.dead_letters` (every job that ends failed or timed out is
/// dead-lettered, so by default those stay until replayed).
pub async fn candidates<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    filter: &PruneFilter,
) -> RuntimeResult<Candidates> {
    let mut runs = store.list_runs(&RunFilter::default()).await?;
    reconcile_all(store, layout, &mut runs).await?;
    select(store, runs, filter).await
}

/// The runs of `runs` a prune with `filter` removes, as [`candidates`]
/// chooses them but without reconciling `runs` first (a server: its
/// workers' runs are not this machine's to reconcile, the cluster's
/// sweeper does that).
pub async fn select<S: Store + ?Sized>(
    store: &S,
    runs: Vec<Run>,
    filter: &PruneFilter,
) -> RuntimeResult<Candidates> {
    let kept: HashSet<RunId> = if filter.dead_letters {
        HashSet::new()
    } else {
        let letters = store.list_dead_letters().await?;
        let pending = store.list_approvals(None, true).await?;
        letters
            .into_iter()
            .filter(|l| l.replayed_by.is_none())
            .map(|l| l.run_id)
            .chain(pending.into_iter().map(|a| a.run_id))
            .collect()
    };
    let (held, runs): (Vec<Run>, Vec<Run>) = runs
        .into_iter()
        .filter(|r| filter.matches(r))
        .partition(|r| kept.contains(&r.id));
    Ok(Candidates {
        runs,
        kept: held.len(),
    })
}

/// Removes `runs` (as [`candidates`] chose them) and their files, then the
/// artifacts and briefs that no remaining run references.
pub async fn prune_runs<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    runs: &[Run],
) -> RuntimeResult<PruneReport> {
    let mut report = PruneReport::default();
    // Read before the runs go: their artifact records go with them.
    let mut theirs = Referenced::default();
    for run in runs {
        theirs.add(store, run).await?;
    }
    for run in runs {
        match store.delete_run(&run.id).await {
            Ok(()) => {
                report.reclaimed_bytes += remove_run_files(layout, &run.id);
                report.removed.push(run.id.clone());
            }
            // Deleted by a concurrent prune or rm: fine.
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    report.reclaimed_bytes += remove_unreferenced(store, layout, &theirs).await?;
    Ok(report)
}

/// Removes the log, snapshot and directory of run `id`; returns their size.
pub fn remove_run_files(layout: &Layout, id: &RunId) -> u64 {
    let mut bytes = 0;
    for file in [layout.log(id), layout.final_snapshot(id)] {
        bytes += remove_file(&file);
    }
    // A group a killed helper left (and what is still in it) goes first;
    // an overlay workspace (a kept one) is unmounted, never walked into.
    crate::contain::remove_recorded(layout, id);
    crate::workspace::unmount(layout, id);
    let dir = layout.run_dir(id);
    let size = tree_size(&dir);
    // The workspace may hold read-only directories the agent made.
    if dispatch_core::parcel_seal::remove_tree(&dir).is_ok() {
        bytes += size;
    }
    bytes
}

/// The artifact and brief files some runs reference, by file name.
#[derive(Default)]
struct Referenced {
    artifacts: HashSet<String>,
    briefs: HashSet<String>,
}

impl Referenced {
    async fn add<S: Store + ?Sized>(&mut self, store: &S, run: &Run) -> RuntimeResult<()> {
        for a in store.list_artifacts(&run.id).await? {
            self.artifacts.insert(a.sha256);
        }
        self.briefs.insert(format!("{}.json", run.brief_sha256));
        Ok(())
    }
}

/// Removes the artifacts and briefs no remaining run references: at once
/// those the pruned runs referenced (`theirs`), any other only after
/// [`ORPHAN_GRACE`].
async fn remove_unreferenced<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    theirs: &Referenced,
) -> RuntimeResult<u64> {
    let mut kept = Referenced::default();
    for run in store.list_runs(&RunFilter::default()).await? {
        kept.add(store, &run).await?;
    }
    let old_enough = SystemTime::now()
        .checked_sub(ORPHAN_GRACE)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut bytes = sweep(&layout.artifacts(), |name, modified| {
        !kept.artifacts.contains(name) && (theirs.artifacts.contains(name) || modified < old_enough)
    });
    bytes += sweep(&layout.briefs(), |name, modified| {
        !kept.briefs.contains(name) && (theirs.briefs.contains(name) || modified < old_enough)
    });
    Ok(bytes)
}

/// Removes the regular files directly in `dir` for which `remove(name,
/// modified)` holds; returns their total size. Hidden files (a write in
/// progress) are left alone.
fn sweep(dir: &Path, remove: impl Fn(&str, SystemTime) -> bool) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut bytes = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !meta.is_file() || name.starts_with('.') {
            continue;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        if remove(name, modified) && std::fs::remove_file(entry.path()).is_ok() {
            bytes += meta.len();
        }
    }
    bytes
}

/// Removes `path`; returns its size, 0 when there was nothing to remove.
fn remove_file(path: &Path) -> u64 {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    match std::fs::remove_file(path) {
        Ok(()) => size,
        Err(_) => 0,
    }
}

/// The total size of the regular files under `dir`.
fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}
