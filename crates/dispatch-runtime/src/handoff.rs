//! Handoffs: any run may start another parcel as a new run, with a
//! `handoff` event (`{"type":"handoff","parcel":"billing","payload":{…}}`)
//! or the native `handoff` tool. The new run records `trigger: upstream`
//! and the run that handed off as its `origin_id`.
//!
//! Each handoff starts one run, however often the sender says it (an
//! attempt retried, a helper killed and recovered, an agent that writes
//! the same line again): the new run carries the handoff's key, unique
//! among the runs of its origin in the store ([`dispatch_store::NewRun::handoff_key`]).
//! The key is the event's `idempotency_key`, or else a digest of the
//! parcel named and the payload.
//!
//! Where the new run comes from depends on where the sender runs: a local
//! helper resolves the parcel among the built parcels (as `dispatch run
//! <name>` does) and spawns the new run's own helper ([`LocalUpstream`]);
//! a cluster worker resolves it among the parcels in the cluster's
//! database and queues it for any worker (see `dispatch-server`).

use dispatch_core::Trigger;
use dispatch_core::parcel::Parcel;
use dispatch_core::{Operation, RunId};
use dispatch_store::{Created, NewRun, Store};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::launch::{LaunchRequest, resolve_built};
use crate::layout::Layout;
use crate::submit::{self, SubmitOptions};

/// A handoff a run asked for (a checked `handoff` event's fields).
#[derive(Clone, Debug, PartialEq)]
pub struct Handoff {
    /// A built parcel's name or digest (prefix).
    pub parcel: String,
    pub payload: Value,
    /// Labels a cluster worker needs to claim the new run.
    pub labels: Vec<String>,
    /// One run per key per sender.
    pub key: String,
}

impl Handoff {
    /// The handoff of a checked `handoff` event (see
    /// [`dispatch_core::AgentEvent::parse`]).
    pub fn of_event(data: &Value) -> Handoff {
        let parcel = data["parcel"].as_str().unwrap_or_default().to_string();
        let payload = data
            .get("payload")
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        let labels = data["labels"]
            .as_array()
            .map(|ls| {
                ls.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let key = match data["idempotency_key"].as_str() {
            Some(k) => k.to_string(),
            None => default_key(&parcel, &payload),
        };
        Handoff {
            parcel,
            payload,
            labels,
            key,
        }
    }
}

/// The key of a handoff that names none: SHA-256 of the parcel named and
/// the payload's canonical JSON (object keys sorted).
pub fn default_key(parcel: &str, payload: &Value) -> String {
    let mut h = Sha256::new();
    h.update(parcel.as_bytes());
    h.update(b"\n");
    h.update(canonical(payload).as_bytes());
    hex::encode(h.finalize())
}

fn canonical(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

/// Why a handoff started nothing.
#[derive(Clone, Debug, PartialEq)]
pub enum HandoffError {
    /// It cannot succeed (an unknown parcel, a service): the sender fails.
    Refused(String),
    /// The store or the machine failed; the same handoff may work later.
    Failed(String),
}

impl HandoffError {
    pub fn message(&self) -> &str {
        match self {
            HandoffError::Refused(m) | HandoffError::Failed(m) => m,
        }
    }
}

/// Starts the run a handoff asks for.
#[async_trait::async_trait]
pub trait Upstream: Send + Sync {
    /// Starts `handoff.parcel` as a new run handed off by run `from`, or
    /// answers the run this same handoff started before.
    async fn start(&self, from: &RunId, handoff: &Handoff) -> Result<Created, HandoffError>;
}

/// The checks every host makes of the parcel a handoff resolved to, and
/// the new run's record: an upstream run of `parcel`'s entry point, in the
/// sender's `project`.
pub fn upstream_run(
    from: &RunId,
    project: &str,
    handoff: &Handoff,
    parcel: &Parcel,
    brief_sha256: String,
) -> Result<NewRun, HandoffError> {
    let operation = parcel.manifest.entrypoint;
    if operation == Operation::Service {
        return Err(HandoffError::Refused(format!(
            "`{}` is a service; a handoff starts jobs and heartbeats",
            handoff.parcel
        )));
    }
    let req = request(from, project, handoff, parcel);
    let mut new = req.new_run(parcel, operation, brief_sha256);
    new.trigger = Trigger::Upstream;
    new.handoff_key = Some(handoff.key.clone());
    Ok(new)
}

fn request(from: &RunId, project: &str, handoff: &Handoff, parcel: &Parcel) -> LaunchRequest {
    LaunchRequest {
        source: parcel.digest.clone(),
        operation: None,
        payload: handoff.payload.clone(),
        parent_id: None,
        origin_id: Some(from.clone()),
        project: project.to_string(),
    }
}

/// The longest chain of handoffs (a run handed off to by a run handed off
/// to by …): past it a handoff is refused, so that a parcel handing off to
/// itself cannot start runs for ever.
pub const MAX_HANDOFF_DEPTH: usize = 32;

/// Refuses a handoff from `from` when `from` is the end of a chain of
/// [`MAX_HANDOFF_DEPTH`] upstream runs; else answers `from`'s project (the
/// run it hands off to is in it too).
pub async fn check_depth<S: dispatch_store::RunStore + ?Sized>(
    store: &S,
    from: &RunId,
) -> Result<String, HandoffError> {
    let mut id = from.clone();
    let mut project = None;
    for _ in 0..MAX_HANDOFF_DEPTH {
        let run = store
            .get_run(&id)
            .await
            .map_err(|e| HandoffError::Failed(format!("handoff from run {from}: {e}")))?;
        let project = project.get_or_insert_with(|| run.project.clone());
        match (run.trigger, run.origin_id) {
            (Trigger::Upstream, Some(origin)) => id = origin,
            _ => return Ok(project.clone()),
        }
    }
    Err(HandoffError::Refused(format!(
        "handoff refused: run {from} ends a chain of {MAX_HANDOFF_DEPTH} handoffs \
         (hint: a parcel that hands off to itself loops; end the chain)"
    )))
}

/// What an unknown parcel is told.
pub fn unknown_parcel(reference: &str, where_: &str) -> HandoffError {
    HandoffError::Refused(format!(
        "handoff to unknown parcel `{reference}`: no parcel of that name or digest {where_} \
         (hint: `dispatch build` it first, with `--host` for a cluster; `dispatch images` lists parcels)"
    ))
}

/// Handoffs of a local helper: the parcel among the built ones, and a
/// helper spawned for the new run.
pub struct LocalUpstream<'a, S: ?Sized> {
    store: &'a S,
    layout: &'a Layout,
}

impl<'a, S: Store + ?Sized> LocalUpstream<'a, S> {
    pub fn new(store: &'a S, layout: &'a Layout) -> Self {
        LocalUpstream { store, layout }
    }
}

#[async_trait::async_trait]
impl<S: Store + ?Sized> Upstream for LocalUpstream<'_, S> {
    async fn start(&self, from: &RunId, handoff: &Handoff) -> Result<Created, HandoffError> {
        let parcel = resolve_built(self.layout, &handoff.parcel).map_err(|e| match e {
            crate::RuntimeError::UnknownParcel(_) => {
                unknown_parcel(&handoff.parcel, "is built here")
            }
            other => HandoffError::Refused(format!("handoff to `{}`: {other}", handoff.parcel)),
        })?;
        let project = check_depth(self.store, from).await?;
        upstream_run(from, &project, handoff, &parcel, String::new())?;
        let sub = submit::prepare(
            self.layout,
            &request(from, &project, handoff, &parcel),
            &SubmitOptions::default(),
        )
        .map_err(|e| HandoffError::Refused(format!("handoff to `{}`: {e}", handoff.parcel)))?;
        let (new, extras, parcel) = sub.into_parts();
        let new = upstream_run(from, &project, handoff, &parcel, new.brief_sha256)?;
        let created = self
            .store
            .create_run_with(&new, &extras, false)
            .await
            .map_err(|e| HandoffError::Failed(format!("handoff to `{}`: {e}", handoff.parcel)))?;
        if let Created::New(run) | Created::Existing(run) = &created
            && run.status() == dispatch_core::Status::Queued
        {
            // Once per run, even when the same handoff comes again before
            // the first helper claimed it.
            crate::recover::spawn_once(self.layout, run, run.created_at, "was handed off");
        }
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_same_handoff_has_the_same_key_and_an_explicit_key_wins() {
        let a = Handoff::of_event(
            &json!({"parcel": "billing", "payload": {"a": 1, "b": [1, {"y": 2, "x": 1}]}}),
        );
        let b = Handoff::of_event(
            &json!({"payload": {"b": [1, {"x": 1, "y": 2}], "a": 1}, "parcel": "billing"}),
        );
        assert_eq!(a.key, b.key, "object key order does not matter");
        let other = Handoff::of_event(&json!({"parcel": "billing", "payload": {"a": 2}}));
        assert_ne!(a.key, other.key);
        let elsewhere = Handoff::of_event(
            &json!({"parcel": "refunds", "payload": {"a": 1, "b": [1, {"y": 2, "x": 1}]}}),
        );
        assert_ne!(a.key, elsewhere.key);
        let keyed = Handoff::of_event(
            &json!({"parcel": "billing", "idempotency_key": "inv-42", "labels": ["eu"]}),
        );
        assert_eq!(keyed.key, "inv-42");
        assert_eq!(keyed.payload, json!({}));
        assert_eq!(keyed.labels, vec!["eu".to_string()]);
    }
}
