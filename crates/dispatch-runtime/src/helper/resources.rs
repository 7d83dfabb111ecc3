//! An attempt's `RESOURCES`: set up before the agent starts (and said in the
//! log: every limit and how it holds), checked while it runs (see
//! [`crate::limits::LimitWatch`]), and at its end the reason a limit
//! explains, the groups killed and removed, and what the attempt used
//! recorded as the runtime's `resources` event.

use dispatch_core::EventKind;
use dispatch_core::parcel::Parcel;
use dispatch_core::{NewEvent, RunId, now_ms};
use dispatch_store::Store;
use serde_json::json;

use super::LifecycleLog;
use crate::limits::{RusageMark, Sandbox};

/// The limits and the usage measure of one attempt.
pub(crate) struct AttemptLimits {
    pub(crate) sandbox: Option<Sandbox>,
    mark: Option<RusageMark>,
}

impl AttemptLimits {
    /// `own_process`: this process runs this agent alone (a run's helper),
    /// so its children's rusage is the attempt's.
    pub(crate) fn begin(
        run_id: &RunId,
        attempt: u32,
        parcel: Option<&Parcel>,
        log: &mut LifecycleLog,
        own_process: bool,
    ) -> AttemptLimits {
        let sandbox = parcel.and_then(|p| {
            Sandbox::prepare(
                &format!("dispatch-{run_id}-{attempt}"),
                &p.manifest.resources,
            )
        });
        if let Some(s) = &sandbox {
            log.line(&s.summary());
        }
        // Without groups, one getrusage(2): what the helper's children used
        // so far. Only for runs that declare RESOURCES, in a process that
        // runs this agent alone: a run without RESOURCES pays nothing, and
        // reads the same locally and through a server's workers.
        let mark = match &sandbox {
            Some(s) if own_process && !s.has_groups() => RusageMark::now(),
            _ => None,
        };
        AttemptLimits { sandbox, mark }
    }

    /// What puts a native agent's tool processes under the limits.
    pub(crate) fn hook(&self) -> Option<dispatch_agent::tools::SpawnHook> {
        self.sandbox.as_ref().map(Sandbox::hook)
    }

    /// The attempt's agent exited with `code` and its process group is
    /// gone: kills what is left in its groups, records what it used, and
    /// returns the reason a limit gives for its failure.
    pub(crate) async fn end<S: Store + ?Sized>(
        &mut self,
        store: &S,
        run_id: &RunId,
        attempt: u32,
        code: i32,
    ) -> Option<String> {
        let reason = match (&self.sandbox, code) {
            (Some(s), c) if c != 0 => s.failure_reason(c),
            _ => None,
        };
        if let Some(s) = &self.sandbox {
            s.finish_tasks();
        }
        let usage = self
            .sandbox
            .as_ref()
            .and_then(Sandbox::usage)
            .or_else(|| self.mark.and_then(RusageMark::since));
        let limits = self.sandbox.as_ref().map(|s| s.applied.clone());
        if let Some(s) = &mut self.sandbox {
            s.finish();
        }
        if limits.is_some() {
            let u = usage.unwrap_or_default();
            let data = json!({
                "limits": limits.unwrap_or_default(),
                "peak_memory_bytes": u.peak_memory_bytes,
                "cpu_time_ms": u.cpu_time_ms,
                "measured_by": u.measured_by,
            });
            let event = NewEvent::new(EventKind::Resources, attempt, now_ms(), data);
            if let Err(e) = store.append_events(run_id, &[event]).await {
                crate::say_warn!("[dispatch] could not record the attempt's resources: {e}");
            }
        }
        reason
    }
}

/// A container attempt's `resources` event: its limits (the runtime's) and
/// what it used, read from its accounting parent (see
/// [`crate::container::usage`]), which then goes. Recorded when the
/// container was measured or declared limits.
pub(crate) async fn record_container<S: Store + ?Sized>(
    store: &S,
    run_id: &RunId,
    attempt: u32,
    plan: &crate::container::Plan,
    resources: &dispatch_core::isolation::Resources,
) {
    let usage = plan.accounting.as_ref().map(|a| {
        let u = a.usage();
        a.remove();
        u
    });
    if usage.is_none() && resources.is_empty() {
        return;
    }
    let u = usage.unwrap_or_else(|| crate::limits::AttemptUsage {
        measured_by: "not measured (needs podman with cgroup v1, as root)".to_string(),
        ..Default::default()
    });
    let data = json!({
        "limits": crate::limits::container_limits(resources),
        "peak_memory_bytes": u.peak_memory_bytes,
        "cpu_time_ms": u.cpu_time_ms,
        "measured_by": u.measured_by,
    });
    let event = NewEvent::new(EventKind::Resources, attempt, now_ms(), data);
    if let Err(e) = store.append_events(run_id, &[event]).await {
        crate::say_warn!("[dispatch] could not record the container's resources: {e}");
    }
}
