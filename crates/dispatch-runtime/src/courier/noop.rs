//! The noop courier (`FROM noop`): nothing runs. The run "starts" and
//! succeeds at once, with the two state changes an agent that exits 0 at
//! once would have (`starting → running → succeeded`), saved together with
//! the end. Benchmarks and wiring tests use it; a worker saves its runs'
//! steps through the same fenced writes as any other run's.

use dispatch_core::{ProcRef, Transition, Ts, now_ms};
use dispatch_store::{Run, StateWrite, Store, StoreError};

use super::{Attempt, Courier, End, Ended, Unsaved};
use crate::error::RuntimeResult;
use crate::helper::cancelled;
use crate::record::{AdvanceError, advance_all, writes_for};

/// No process: pid 0, which process-group signalling never touches.
pub const NO_PROCESS: ProcRef = ProcRef {
    pid: 0,
    start_ticks: 0,
};

/// The noop courier's attempt, as values: the agent started and exited 0 at `at`.
pub fn steps(at: Ts) -> [Transition; 2] {
    [
        Transition::AgentStarted {
            agent: NO_PROCESS,
            at,
        },
        Transition::Exited { code: 0, at },
    ]
}

/// What the attempt of the claimed (`starting`) `run` is: the steps at
/// `at`, or a cancel when a stop was asked for already.
fn attempt_of(run: &Run, at: Ts) -> Vec<Transition> {
    match run.stop_requested_at {
        Some(_) => vec![cancelled(None)],
        None => steps(at).to_vec(),
    }
}

/// The writes that save the attempt of the claimed `run` at `at` as any
/// attempt's end is saved (see [`finish`]); empty when the run moved on
/// (someone else ended it).
pub fn writes(run: &Run, at: Ts) -> Vec<StateWrite> {
    writes_for(run, &attempt_of(run, at), &[], None).unwrap_or_default()
}

/// Carries a claimed noop run to its end outside a helper (a worker's way:
/// no run directory, log or snapshot, since nothing runs): its attempt
/// saved through `store` (which fences it) as a helper saves an attempt's
/// end, deciding again on a conflict.
pub async fn finish<S: Store + ?Sized>(store: &S, mut run: Run) -> Result<(), StoreError> {
    let steps = attempt_of(&run, now_ms());
    match advance_all(store, &mut run, &steps, &[], None).await {
        Ok(()) | Err(AdvanceError::Illegal(_)) => Ok(()),
        Err(AdvanceError::Store(e)) => Err(e),
    }
}

pub(crate) struct Noop;

impl Courier for Noop {
    async fn carry<S: Store + ?Sized>(self, _: &S, a: Box<Attempt<'_>>) -> RuntimeResult<Ended> {
        a.log.line(&format!(
            "run {} attempt {}: noop courier",
            a.run.id, a.run.attempt
        ));
        let [started, done] = steps(now_ms());
        // Saved with the end, at once.
        Ok(Ended {
            end: End::Final(done, None),
            checkpoint: None,
            start: Some(Unsaved::start(started)),
        })
    }
}
