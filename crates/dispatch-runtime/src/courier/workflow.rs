//! The workflow courier (`FROM workflow`): the run's attempt is the
//! coordinator (see [`crate::workflow`]) in this helper or worker, with no
//! agent process of its own; each member's turn is a child run.

use dispatch_core::Transition;
use dispatch_store::Store;

use super::noop::NO_PROCESS;
use super::{Attempt, Courier, End, Ended, ended, fail};
use crate::error::RuntimeResult;
use crate::helper::cancelled;
use crate::record::{AdvanceError, advance};

pub(crate) struct Workflow;

impl Courier for Workflow {
    async fn carry<S: Store + ?Sized>(
        self,
        store: &S,
        a: Box<Attempt<'_>>,
    ) -> RuntimeResult<Ended> {
        let Attempt {
            layout,
            run,
            log,
            parcel,
            ctx,
            ..
        } = *a;
        let Some(wf) = parcel.manifest.workflow.as_ref() else {
            let reason = format!(
                "parcel {} has no workflow (hint: rebuild it)",
                parcel.digest
            );
            return Ok(ended(End::Final(fail(reason), None)));
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
            agent: NO_PROCESS,
            at: dispatch_core::now_ms(),
        };
        match advance(store, run, &started, None).await {
            Ok(()) => {}
            Err(AdvanceError::Illegal(_)) => {
                return Ok(ended(End::Final(cancelled(None), None)));
            }
            Err(AdvanceError::Store(e)) => return Err(e.into()),
        }
        let host = crate::workflow::Where {
            local: !ctx.leased,
            briefs: ctx.briefs,
            here: ctx.here,
        };
        let mut line = |text: &str| log.line(text);
        let coordinated =
            crate::workflow::coordinate(store, layout, run, wf, ctx.policy, host, &mut line);
        let (t, output) = coordinated.await?;
        Ok(ended(End::Final(t, output)))
    }
}
