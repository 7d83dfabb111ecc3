//! Removing runs and their files.

use std::time::Duration;

use dispatch_core::RunId;
use dispatch_store::{RunFilter, Store, StoreError};

use crate::error::RuntimeResult;
use crate::layout::Layout;
use crate::reconcile::{reconcile, reconcile_all};
use crate::stop::stop;

/// Removes run `id`: its record, events, attempts, log, snapshot and run
/// directory. A live run is refused unless `force`, which kills it first.
/// Collected artifacts stay in the content-addressed store.
pub async fn remove<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    id: &RunId,
    force: bool,
) -> RuntimeResult<()> {
    let run = reconcile(store, layout, store.get_run(id).await?).await?;
    if !run.state.is_terminal() {
        if !force {
            return Err(StoreError::InvalidState {
                id: id.clone(),
                status: run.status(),
                hint: "stop it first, or remove it with `rm -f`",
            }
            .into());
        }
        stop(store, layout, id, Duration::ZERO, true).await?;
    }
    store.delete_run(id).await?;
    remove_files(layout, id);
    Ok(())
}

/// Removes every terminal run; returns their ids.
pub async fn prune<S: Store + ?Sized>(store: &S, layout: &Layout) -> RuntimeResult<Vec<RunId>> {
    let mut runs = store.list_runs(&RunFilter::default()).await?;
    reconcile_all(store, layout, &mut runs).await?;
    let mut removed = Vec::new();
    for run in runs.into_iter().filter(|r| r.state.is_terminal()) {
        match store.delete_run(&run.id).await {
            Ok(()) => {
                remove_files(layout, &run.id);
                removed.push(run.id);
            }
            // Deleted by a concurrent prune: fine.
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(removed)
}

fn remove_files(layout: &Layout, id: &RunId) {
    let _ = std::fs::remove_file(layout.log(id));
    let _ = std::fs::remove_file(layout.final_snapshot(id));
    let _ = std::fs::remove_dir_all(layout.run_dir(id));
}
