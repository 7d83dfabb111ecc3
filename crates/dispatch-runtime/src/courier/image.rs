//! The image courier (`FROM image <ref>`): the parcel's COMMAND in a
//! container, through the podman (or docker) CLI. Here the attempt's
//! container is planned from the prepared agent and its client started (see
//! [`crate::container`]); the rest of the attempt is the process courier's
//! ([`super::process`]).

use dispatch_core::parcel::Parcel;
use dispatch_store::{Run, Store};
use tokio::process::Child;

use super::process::Process;
use super::{Courier, Ended};
use crate::container::{self, Attempt, Plan, Runtime};
use crate::error::RuntimeResult;
use crate::helper::LifecycleLog;
use crate::helper::agent::AgentSpec;
use crate::layout::Layout;

pub(crate) struct Image;

impl Courier for Image {
    async fn carry<S: Store + ?Sized>(
        self,
        store: &S,
        attempt: Box<super::Attempt<'_>>,
    ) -> RuntimeResult<Ended> {
        Process::in_container().carry(store, attempt).await
    }
}

/// The container of this attempt; an error is the reason the run fails
/// (not retryable: no runtime, no image named, bad ulimits).
pub(crate) fn plan(
    layout: &Layout,
    run: &Run,
    parcel: &Parcel,
    spec: &AgentSpec,
) -> Result<Plan, String> {
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
pub(crate) fn spawn(
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
