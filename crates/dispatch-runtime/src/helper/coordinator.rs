//! A workflow run's attempt: the coordinator (see [`crate::workflow`]) in
//! this helper or worker, with no agent process of its own.

use dispatch_core::parcel::Parcel;
use dispatch_core::policy::RunPolicy;
use dispatch_core::{ProcRef, Transition, now_ms};
use dispatch_store::{Run, Store};

use super::LifecycleLog;
use super::attempt::{End, Ended};
use crate::error::RuntimeResult;
use crate::layout::Layout;
use crate::record::{AdvanceError, advance};

pub(super) async fn attempt<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: &mut Run,
    log: &mut LifecycleLog,
    policy: &RunPolicy,
    parcel: &Parcel,
    host: crate::workflow::Where<'_>,
) -> RuntimeResult<Ended> {
    let Some(wf) = parcel.manifest.workflow.as_ref() else {
        let t = Transition::Fail {
            reason: format!(
                "parcel {} has no workflow (hint: rebuild it)",
                parcel.digest
            ),
            exit_code: None,
            at: now_ms(),
        };
        return Ok(Ended {
            end: End::Final(t, None),
            checkpoint: None,
            start: None,
        });
    };
    log.line(&format!(
        "run {} attempt {}: {} coordinator of {} member(s)",
        run.id,
        run.attempt,
        wf.coordinator.as_str(),
        wf.members.len()
    ));
    // Running, with no process group of its own (pid 0 is never signalled).
    let started = Transition::AgentStarted {
        agent: ProcRef {
            pid: 0,
            start_ticks: 0,
        },
        at: now_ms(),
    };
    match advance(store, run, &started, None).await {
        Ok(()) => {}
        Err(AdvanceError::Illegal(_)) => {
            let t = super::cancelled(None);
            return Ok(Ended {
                end: End::Final(t, None),
                checkpoint: None,
                start: None,
            });
        }
        Err(AdvanceError::Store(e)) => return Err(e.into()),
    }
    let mut line = |text: &str| log.line(text);
    let (t, output) =
        crate::workflow::coordinate(store, layout, run, wf, policy, host, &mut line).await?;
    Ok(Ended {
        end: End::Final(t, output),
        checkpoint: None,
        start: None,
    })
}
