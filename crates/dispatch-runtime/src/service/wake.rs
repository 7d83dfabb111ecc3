//! Manual wakes (`dispatch wake <id> [payload]`): the CLI writes
//! `runs/<service-id>/wakes/<request>.json` (atomically, by rename) and sends
//! SIGUSR1 to the service helper, which takes every request file, admits each
//! wake and answers in `<request>.ack.json`. The helper also scans the
//! directory when it starts, so a request is never lost to a race.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dispatch_core::{Operation, RunId, Status};
use dispatch_store::Store;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ServiceError;
use super::exec::Reply;
use crate::error::{RuntimeResult, io};
use crate::layout::Layout;
use crate::os;
use crate::reconcile::reconcile;

/// How often the CLI looks for the helper's answer.
const ACK_POLL: Duration = Duration::from_millis(5);

/// The helper's answer to a manual wake.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WakeAck {
    /// The heartbeat run that executes the wake.
    pub run_id: Option<RunId>,
    /// Why there is none.
    pub error: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct WakeRequest {
    payload: Value,
}

pub fn wakes_dir(layout: &Layout, id: &RunId) -> PathBuf {
    layout.run_dir(id).join("wakes")
}

/// Asks the running service `id` for a wake with `payload`; waits up to
/// `timeout` for its answer.
pub async fn request<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    id: &RunId,
    payload: Value,
    timeout: Duration,
) -> RuntimeResult<WakeAck> {
    let run = reconcile(store, layout, store.get_run(id).await?).await?;
    if run.operation != Operation::Service {
        return Err(ServiceError::new(format!(
            "run {id} is a {}, not a service (hint: `dispatch serve` starts services)",
            run.operation
        ))
        .into());
    }
    let helper = match (run.status(), run.state.helper()) {
        (Status::Running, Some(h)) => h,
        (status, _) => {
            return Err(ServiceError::new(format!(
                "service {id} is {status}, not running (hint: `dispatch restart {}` brings it back)",
                id.short()
            ))
            .into());
        }
    };
    let dir = wakes_dir(layout, id);
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let name = RunId::new().to_string();
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(format!("{name}.json"));
    let body = serde_json::to_vec(&WakeRequest { payload }).expect("a payload is JSON data");
    std::fs::write(&tmp, body).map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("renaming", &path))?;
    if !os::signal_process(helper, Signal::SIGUSR1) {
        let _ = std::fs::remove_file(&path);
        return Err(ServiceError::new(format!("service {id} stopped meanwhile")).into());
    }
    let ack_path = dir.join(format!("{name}.ack.json"));
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(bytes) = std::fs::read(&ack_path)
            && let Ok(ack) = serde_json::from_slice::<WakeAck>(&bytes)
        {
            let _ = std::fs::remove_file(&ack_path);
            return Ok(ack);
        }
        if Instant::now() >= deadline {
            return Ok(WakeAck {
                run_id: None,
                error: Some(format!(
                    "the service did not answer within {} ms; the wake stays queued in {}",
                    timeout.as_millis(),
                    path.display()
                )),
            });
        }
        tokio::time::sleep(ACK_POLL).await;
    }
}

/// Takes every waiting request: `(request name, payload)`, oldest first.
pub(super) fn take_requests(layout: &Layout, id: &RunId) -> Vec<(String, Value)> {
    let dir = wakes_dir(layout, id);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json") && !n.ends_with(".ack.json") && !n.starts_with('.'))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|n| {
            let path = dir.join(&n);
            let bytes = std::fs::read(&path).ok()?;
            let _ = std::fs::remove_file(&path);
            let req: WakeRequest = serde_json::from_slice(&bytes).ok()?;
            Some((n.trim_end_matches(".json").to_string(), req.payload))
        })
        .collect()
}

/// Writes the answer to request `name`.
pub(super) fn acknowledge(layout: &Layout, id: &RunId, name: &str, reply: &Reply) {
    let ack = match reply {
        Reply::Accepted(run) => WakeAck {
            run_id: Some(run.clone()),
            error: None,
        },
        Reply::Busy(why) | Reply::Failed(why) => WakeAck {
            run_id: None,
            error: Some(why.clone()),
        },
    };
    let dir = wakes_dir(layout, id);
    let tmp = dir.join(format!(".{name}.ack.tmp"));
    let path = dir.join(format!("{name}.ack.json"));
    let body = serde_json::to_vec(&ack).expect("an ack is JSON data");
    if std::fs::write(&tmp, body).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
}
