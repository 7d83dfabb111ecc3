//! The noop courier's fast path in a worker: the run "starts" and succeeds at
//! once, with the same two state changes (and events) as the helper records,
//! but no run directory, log or snapshot: there is nothing to supervise, and
//! the lease covers a worker that dies in between. Used by benchmarks.

use dispatch_core::EventKind;
use std::collections::HashMap;
use std::sync::Arc;

use dispatch_core::parcel::{self, Courier, Parcel};
use dispatch_core::{NewEvent, ProcRef, Transition, now_ms};
use dispatch_runtime::Layout;
use dispatch_store::{Run, RunStore, StateWrite, StoreResult};
use serde_json::json;

use crate::fenced::FencedStore;

/// Parcels a worker has loaded, by digest: a parcel is immutable (its
/// directory is named by its manifest's hash), so each is read once.
#[derive(Debug, Default)]
pub(crate) struct Couriers {
    known: HashMap<String, Arc<Parcel>>,
}

impl Couriers {
    /// The parcel; `None` when it cannot be loaded (not remembered: the run
    /// path fetches it from the store, or reports why not; once fetched, the
    /// parcel's next run finds it).
    pub(crate) fn parcel(&mut self, layout: &Layout, digest: &str) -> Option<Arc<Parcel>> {
        if let Some(p) = self.known.get(digest) {
            return Some(p.clone());
        }
        let loaded = Arc::new(parcel::load(&layout.parcels().join(digest)).ok()?);
        self.known.insert(digest.to_string(), loaded.clone());
        Some(loaded)
    }

    /// The parcel's courier; `None` when it cannot be loaded.
    pub(crate) fn of(&mut self, layout: &Layout, digest: &str) -> Option<Courier> {
        self.parcel(layout, digest).map(|p| p.manifest.courier)
    }
}

/// Runs a claimed noop run to `succeeded` (or `cancelled` when a stop was
/// already requested).
pub(crate) async fn run(store: &FencedStore, mut run: Run) -> StoreResult<()> {
    let first = if run.stop_requested_at.is_some() {
        Transition::Cancel {
            reason: "stopped by user".into(),
            exit_code: None,
            at: now_ms(),
        }
    } else {
        // No process: pid 0, which process-group signalling never touches.
        let agent = ProcRef {
            pid: 0,
            start_ticks: 0,
        };
        Transition::AgentStarted {
            agent,
            at: now_ms(),
        }
    };
    step(store, &mut run, &first).await?;
    if !run.state.is_terminal() {
        step(
            store,
            &mut run,
            &Transition::Exited {
                code: 0,
                at: now_ms(),
            },
        )
        .await?;
    }
    Ok(())
}

async fn step(store: &FencedStore, run: &mut Run, t: &Transition) -> StoreResult<()> {
    let Ok(next) = run.state.apply(run.operation, t) else {
        return Ok(()); // someone else moved it on (a cancel)
    };
    let mut data = json!({"from": run.status(), "to": next.status()});
    if let Some(code) = next.exit_code() {
        data["exit_code"] = json!(code);
    }
    if let Some(reason) = next.reason() {
        data["reason"] = json!(reason);
    }
    let write = StateWrite::new(
        next,
        NewEvent::new(EventKind::State, run.attempt, now_ms(), data),
    );
    *run = store.transition(&run.id, run.version, &write).await?;
    Ok(())
}
