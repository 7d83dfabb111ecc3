//! A local run whose concurrency key has no slot free waits queued, in
//! order, until its claim is accepted (the store counts the key's slots in
//! the claim's own transaction, so two helpers never both take the last
//! one). While it waits, it stops the runs its `cancel-in-progress` dispatch
//! displaced (their helpers hold their processes).

use std::collections::HashSet;
use std::time::Duration;

use dispatch_core::{RunId, Transition, now_ms};
use dispatch_store::{Run, Store, StoreError};

use crate::error::RuntimeResult;
use crate::layout::Layout;
use crate::os;
use crate::record::{AdvanceError, advance};

/// How often a waiting helper tries its claim again.
const SLOT_POLL: Duration = Duration::from_millis(100);
/// The grace a displaced run gets between SIGTERM and SIGKILL.
const DISPLACED_GRACE: Duration = Duration::from_secs(10);

/// What came of claiming.
pub(super) enum Claim {
    /// The run is this process's (`starting`).
    Held(Run),
    /// The run ended while it waited (stopped, or dropped at dispatch).
    Ended(Run),
}

/// Claims `run` for this process, waiting for a slot of its concurrency key.
pub(super) async fn claim<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    mut run: Run,
) -> RuntimeResult<Result<Claim, AdvanceError>> {
    let mut said = false;
    let mut stopped: HashSet<RunId> = HashSet::new();
    loop {
        if run.state.is_terminal() {
            return Ok(Ok(Claim::Ended(run)));
        }
        let t = Transition::Claim {
            helper: os::this_process(),
            at: now_ms(),
        };
        match advance(store, &mut run, &t, None).await {
            Ok(()) => return Ok(Ok(Claim::Held(run))),
            Err(AdvanceError::Store(StoreError::ConcurrencyLimited { key, max, .. })) => {
                if !said {
                    println!(
                        "dispatch: waiting for a slot of concurrency key `{key}` (at most {max} live at once)"
                    );
                    said = true;
                }
                stop_displaced(store, layout, &key, &mut stopped).await;
                tokio::time::sleep(SLOT_POLL).await;
                run = store.get_run(&run.id).await?;
            }
            Err(e) => return Ok(Err(e)),
        }
    }
}

/// Stops (once each) the live runs of `key` a `cancel-in-progress` dispatch asked to stop.
async fn stop_displaced<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    key: &str,
    stopped: &mut HashSet<RunId>,
) {
    let Ok(ids) = store.concurrency_stopping(key).await else {
        return;
    };
    for id in ids {
        if stopped.insert(id.clone()) {
            let _ = crate::stop::stop(store, layout, &id, DISPLACED_GRACE, false).await;
        }
    }
}
