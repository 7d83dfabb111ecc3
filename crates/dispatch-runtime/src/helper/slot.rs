//! A local run whose concurrency key has no slot free, or whose project is
//! at its live-run cap, waits queued until its claim is accepted (the store
//! counts the key's slots, and the project's live runs, in the claim's own
//! transaction, so two helpers never both take the last one). While it waits, it stops the runs its `cancel-in-progress` dispatch
//! displaced (their helpers hold their processes).
//!
//! A waiting helper leaves `runs/<id>/slot-waiter.json` (its pid and start
//! time) while it waits: a queued run has no helper in its state, so this is
//! how a reader knows the waiter died ([`revive_dead_waiter`], called by
//! reconcile) and starts a new helper for it, which waits in its place.

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

/// The file a helper waiting for a slot of `id`'s key leaves.
fn waiter_file(layout: &Layout, id: &RunId) -> std::path::PathBuf {
    layout.run_dir(id).join("slot-waiter.json")
}

/// Starts a new helper for queued `run` when the helper that waited for a
/// slot of its key died (killed, or the machine restarted): once per dead
/// helper, whoever looks first.
pub(crate) fn revive_dead_waiter(layout: &Layout, run: &Run) {
    if !matches!(
        run.state,
        dispatch_core::RunState::Queued { not_before: None }
    ) || run.stop_requested_at.is_some()
    {
        return;
    }
    let Some(waiter) = std::fs::read(waiter_file(layout, &run.id))
        .ok()
        .and_then(|b| serde_json::from_slice::<dispatch_core::ProcRef>(&b).ok())
    else {
        return;
    };
    if os::is_alive(waiter) {
        return;
    }
    crate::recover::spawn_once(
        layout,
        run,
        i64::from(waiter.pid),
        "waited for a concurrency slot but its helper died",
    );
}

/// Claims `run` for this process, waiting for a slot of its concurrency key.
pub(super) async fn claim<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: Run,
) -> RuntimeResult<Result<Claim, AdvanceError>> {
    let id = run.id.clone();
    let claimed = wait_and_claim(store, layout, run).await;
    // Waiting or not, this helper no longer waits.
    let _ = std::fs::remove_file(waiter_file(layout, &id));
    claimed
}

async fn wait_and_claim<S: Store + ?Sized>(
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
                    leave_waiter_file(layout, &run.id);
                    println!(
                        "dispatch: waiting for a slot of concurrency key `{key}` (at most {max} live at once)"
                    );
                    said = true;
                }
                stop_displaced(store, layout, &key, &mut stopped).await;
                tokio::time::sleep(SLOT_POLL).await;
                run = store.get_run(&run.id).await?;
            }
            Err(AdvanceError::Store(StoreError::QuotaLimited { project, why, .. })) => {
                if !said {
                    leave_waiter_file(layout, &run.id);
                    println!("dispatch: waiting: project quota, {why} in project `{project}`");
                    said = true;
                }
                tokio::time::sleep(SLOT_POLL).await;
                run = store.get_run(&run.id).await?;
            }
            Err(e) => return Ok(Err(e)),
        }
    }
}

/// Leaves the file that says this helper waits for `id`'s slot.
fn leave_waiter_file(layout: &Layout, id: &RunId) {
    let me = serde_json::to_vec(&os::this_process()).expect("a process reference is plain JSON");
    let file = waiter_file(layout, id);
    let _ = std::fs::create_dir_all(layout.run_dir(id));
    // Whole or not at all: a reader never sees it half written.
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, me).is_ok() && std::fs::rename(&tmp, &file).is_err() {
        let _ = std::fs::remove_file(&tmp);
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
