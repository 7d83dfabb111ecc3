//! The helper's side of the container courier: plan the attempt's
//! container from the prepared agent and start its client (see
//! [`crate::container`]). The rest of the attempt is the process courier's.

use dispatch_core::parcel::Parcel;
use dispatch_store::Run;
use tokio::process::Child;

use super::LifecycleLog;
use super::agent::AgentSpec;
use crate::container::{self, Attempt, Plan, Runtime};
use crate::layout::Layout;

/// The container of this attempt; an error is the reason the run fails
/// (not retryable: no runtime, no image named, bad ulimits).
pub(super) fn plan(
    layout: &Layout,
    run: &Run,
    parcel: Result<&Parcel, &String>,
    spec: &AgentSpec,
) -> Result<Plan, String> {
    let parcel = parcel.map_err(String::clone)?;
    let runtime = Runtime::detect().map_err(|e| e.to_string())?;
    let attempt = Attempt {
        run,
        manifest: &parcel.manifest,
        cwd: &spec.cwd,
        run_dir: &layout.run_dir(&run.id),
        root: layout.root(),
        env: &spec.env,
        command: &spec.command,
    };
    container::plan(runtime, &attempt).map_err(|e| e.to_string())
}

/// Starts the planned container's client, and says in the log what runs where.
pub(super) fn spawn(
    layout: &Layout,
    run: &Run,
    plan: &Plan,
    spec: &AgentSpec,
    jail: &crate::sandbox::Plan,
    log: &mut LifecycleLog,
) -> std::io::Result<Child> {
    log.line(&format!(
        "container {} (image {}, {} {}): {}",
        plan.name,
        plan.image,
        plan.runtime.name(),
        plan.runtime.path.display(),
        plan.notes.join(", ")
    ));
    let piped = !spec.secrets.is_empty();
    let job = container::Job {
        cwd: &spec.cwd,
        env: &spec.env,
        log: &spec.log,
        piped,
        jail: Some(jail),
    };
    container::spawn(layout, &run.id, plan, &job).map_err(std::io::Error::other)
}
