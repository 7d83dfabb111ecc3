//! Removing runs and their files.

use std::time::Duration;

use dispatch_core::RunId;
use dispatch_store::{Store, StoreError};

use crate::error::RuntimeResult;
use crate::layout::Layout;
use crate::reconcile::reconcile;
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

fn remove_files(layout: &Layout, id: &RunId) {
    crate::prune::remove_run_files(layout, id);
}
