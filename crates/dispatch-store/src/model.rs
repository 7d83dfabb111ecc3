use dispatch_core::event::Usage;
use dispatch_core::{NewEvent, Operation, ProcRef, RunId, RunState, Status, Trigger, Ts};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A run as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    /// Bumped by every state change; the compare-and-set token.
    pub version: i64,
    pub parcel_digest: String,
    pub parcel_name: String,
    pub operation: Operation,
    pub state: RunState,
    /// The current attempt number, from 1.
    pub attempt: u32,
    pub parent_id: Option<RunId>,
    /// The run this one restarts or replays, if any.
    pub origin_id: Option<RunId>,
    pub payload: Value,
    pub brief_sha256: String,
    pub created_at: Ts,
    /// When the state last changed: the time of the last transition's event.
    pub updated_at: Ts,
    pub stop_requested_at: Option<Ts>,
    pub usage: Usage,
    pub output: Option<Value>,
    /// The labels it was dispatched with: only a worker with every one of
    /// them claims it (see [`crate::QueueOptions::labels`]).
    #[serde(default)]
    pub labels: Vec<String>,
    /// What started it (`manual` in databases from before it was recorded).
    #[serde(default)]
    pub trigger: Trigger,
    /// The fencing token of the run's current holder: it moves on with every
    /// claim (a worker's, or a local helper's) and every sweep or release, and
    /// never goes back. The holder's writes carry it and a stale one is
    /// refused ([`crate::StoreError::Fenced`]); the agent gets it as
    /// `DISPATCH_FENCE`. Not shown by the API.
    #[serde(default, skip_serializing)]
    pub fence: i64,
    /// The project it belongs to (`default` for runs from before projects).
    #[serde(default = "default_project")]
    pub project: String,
}

fn default_project() -> String {
    dispatch_core::project::DEFAULT_PROJECT.to_string()
}

impl Run {
    pub fn status(&self) -> Status {
        self.state.status()
    }
}

/// What a new run is made of.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRun {
    pub id: RunId,
    pub parcel_digest: String,
    pub parcel_name: String,
    pub operation: Operation,
    pub parent_id: Option<RunId>,
    pub origin_id: Option<RunId>,
    pub payload: Value,
    pub brief_sha256: String,
    pub created_at: Ts,
    /// Created already claimed by this helper process (`starting`, its
    /// `state` event after the `created` one, in the same transaction):
    /// `dispatch run` creates its run for the helper it forked, which then
    /// starts the agent without a claim of its own.
    pub claimed_by: Option<ProcRef>,
    /// Created by `dispatch create`: `created`, out of the queue (never
    /// claimed) until `dispatch start` queues it.
    pub created: bool,
    /// What started it.
    pub trigger: Trigger,
    /// For a run another run handed off to (`trigger` upstream): the
    /// handoff's key, unique among the runs of the same `origin_id`. A
    /// create with a key its origin already used inserts nothing and
    /// answers the run it started ([`crate::Created::Existing`]), whatever
    /// that run's state: each handoff starts one run, however often the
    /// sender says it.
    pub handoff_key: Option<String>,
    /// The project it belongs to (checked by the caller:
    /// [`dispatch_core::project::check_project`]).
    pub project: String,
}

/// One compare-and-set state change.
#[derive(Clone, Debug, PartialEq)]
pub struct StateWrite {
    pub state: RunState,
    /// Appended in the same transaction.
    pub event: NewEvent,
    /// The run's result, when it has one.
    pub output: Option<Value>,
    /// Events appended right after `event`, in the same transaction: what
    /// a quick agent wrote, saved with its start (and its end) at once.
    pub then: Vec<NewEvent>,
}

impl StateWrite {
    /// A change to `state`, recorded by `event`, with no result and no
    /// events after it.
    pub fn new(state: RunState, event: NewEvent) -> Self {
        StateWrite {
            state,
            event,
            output: None,
            then: Vec::new(),
        }
    }
}

/// Which runs to list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunFilter {
    /// Any of these statuses; empty means all.
    pub statuses: Vec<Status>,
    /// A parcel name, or a prefix of a parcel digest.
    pub parcel: Option<String>,
    pub operation: Option<Operation>,
    pub parent_id: Option<RunId>,
    /// Runs dispatched with every one of these labels (and maybe others);
    /// empty means all.
    pub labels: Vec<String>,
    /// Only runs started this way.
    pub trigger: Option<Trigger>,
    /// Runs of any of these projects; empty means all.
    pub projects: Vec<String>,
    /// Runs created at or after this time.
    pub created_after: Option<Ts>,
    /// Runs created before this time.
    pub created_before: Option<Ts>,
    /// Only runs older than this one (a smaller id): the cursor of the
    /// previous page, which ended with it.
    pub before: Option<RunId>,
    pub limit: Option<usize>,
    /// Only what a table of runs shows (`dispatch ps`): a store may leave
    /// out each run's payload (null), output (none) and labels (empty),
    /// which are the costly part of reading many runs.
    pub summary: bool,
}

/// A stored event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the store's event log; increases with every append.
    pub seq: i64,
    pub run_id: RunId,
    #[serde(flatten)]
    pub event: NewEvent,
}

/// One try of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub number: u32,
    pub started_at: Ts,
    pub ended_at: Option<Ts>,
    pub status: Option<Status>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// Who ran it: the worker's name (the lease owner), or `local helper
    /// <pid>` for a run of the local runtime; `None` in databases from
    /// before it was recorded.
    #[serde(default)]
    pub worker: Option<String>,
}

/// A file a run produced, stored content-addressed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Path relative to the run's artifacts directory.
    pub name: String,
    pub sha256: String,
    pub size: u64,
}
