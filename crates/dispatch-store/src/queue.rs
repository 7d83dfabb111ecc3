//! The queue capability: workers claim queued runs under a lease, renew their
//! leases in batches, and write with a fencing token; a sweeper returns runs
//! whose lease expired to the queue.
//!
//! Opt-in: a backend that has no workers need not provide it. Both the SQLite
//! and the PostgreSQL backends do.
//!
//! A claim moves a run from `queued` to `starting` (held by the claiming
//! worker, a [`dispatch_core::Transition::Claim`]), bumps its fencing token and
//! sets `lease_expires_at`. The token only ever grows: every claim and every
//! sweep or release bumps it, so a worker whose lease was taken over can never
//! write again ([`StoreError::Fenced`](crate::StoreError::Fenced)).
//!
//! A sweep or a release is not a failed attempt: the run goes back to the queue
//! keeping its attempt number (its open attempt, if the agent had started,
//! stays open and continues with the next worker).

use async_trait::async_trait;
use dispatch_core::{NewEvent, ProcRef, RunId, Ts};

use crate::{Created, NewRun, Run, RunExtras, StateWrite, StoreResult};

/// What a worker asks for when it claims.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimRequest {
    /// The worker's name, unique in the cluster; recorded as the lease owner.
    pub worker: String,
    /// The worker process, recorded in the `starting` state.
    pub helper: ProcRef,
    /// At most this many runs.
    pub limit: usize,
    /// The claim time; runs waiting out a backoff until later are skipped.
    pub now: Ts,
    /// How long the lease lasts, in milliseconds from `now`.
    pub lease_ms: i64,
    /// The worker's labels: a run that needs labels goes only to a worker
    /// that has every one of them.
    pub labels: Vec<String>,
    /// The worker's free capacity: the runs claimed together ask, in sum,
    /// for no more than this. `None`: no capacity check.
    pub free: Option<Capacity>,
}

/// CPU and memory: what a run asks for (its parcel's `RESOURCES CPUS` and
/// `MEMORY`; zero for what it does not declare), or what a worker has free.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Thousandths of a core.
    pub cpus_milli: u64,
    pub memory_bytes: u64,
}

impl Capacity {
    /// Whether `want` fits in this.
    pub fn fits(&self, want: Capacity) -> bool {
        want.cpus_milli <= self.cpus_milli && want.memory_bytes <= self.memory_bytes
    }

    /// This less `used` (never below zero).
    pub fn minus(&self, used: Capacity) -> Capacity {
        Capacity {
            cpus_milli: self.cpus_milli.saturating_sub(used.cpus_milli),
            memory_bytes: self.memory_bytes.saturating_sub(used.memory_bytes),
        }
    }

    /// A request from `RESOURCES`.
    pub fn of(resources: &dispatch_core::isolation::Resources) -> Capacity {
        Capacity {
            cpus_milli: resources.cpus.map_or(0, |c| (c * 1000.0).ceil() as u64),
            memory_bytes: resources.memory_bytes.unwrap_or(0),
        }
    }

    /// Takes, in order, the candidates that fit together in `free`, at most
    /// `limit` of them (a claim's cumulative check; `None` takes them all).
    pub fn pick<T>(free: Option<Capacity>, candidates: Vec<(T, Capacity)>, limit: usize) -> Vec<T> {
        let mut left = free;
        let mut out = Vec::new();
        for (item, want) in candidates {
            if out.len() >= limit {
                break;
            }
            match &mut left {
                None => out.push(item),
                Some(l) if l.fits(want) => {
                    *l = l.minus(want);
                    out.push(item);
                }
                Some(_) => {}
            }
        }
        out
    }
}

/// How a run waits in the queue, set when it is enqueued.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueOptions {
    /// Higher is claimed first; default 0.
    pub priority: i64,
    /// Labels a worker must have to claim the run (affinity: `gpu`, `eu`).
    pub labels: Vec<String>,
    /// Where to POST the run when it has finished (see [`crate::CallbackStore`]).
    pub callback_url: Option<String>,
    /// How long the run may wait in the queue, in milliseconds, each time it
    /// is there (enqueued, a retry's backoff ended, its worker lost): a run
    /// nobody claimed in time ends `timed_out`
    /// ([`QueueStore::expire_queued`]). `None`: it waits as long as it takes.
    pub queue_timeout_ms: Option<i64>,
    /// What the run asks of the worker that claims it.
    pub requests: Capacity,
}

/// A run a worker holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    /// The run as it is after the claim (`starting`).
    pub run: Run,
    /// The fencing token every write about this run must carry.
    pub fence: i64,
    /// What it was dispatched with beyond [`NewRun`] (read with the claim,
    /// so the holder need not ask).
    pub extras: RunExtras,
}

/// State changes of one run a worker holds, to save with others
/// ([`QueueStore::fenced_transitions_many`]).
#[derive(Clone, Debug, PartialEq)]
pub struct HeldWrites {
    pub id: RunId,
    /// The holder's fencing token.
    pub fence: i64,
    /// The version the first write moves the run on from.
    pub expected_version: i64,
    pub writes: Vec<StateWrite>,
}

/// Events of one run a worker holds, to append with other runs'
/// ([`QueueStore::fenced_append_events_many`]).
#[derive(Clone, Debug, PartialEq)]
pub struct HeldEvents {
    pub id: RunId,
    /// The holder's fencing token.
    pub fence: i64,
    pub events: Vec<NewEvent>,
}

/// Who holds a run, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub expires_at: Ts,
    pub fence: i64,
}

/// When the queue next needs a worker's attention without anyone enqueueing:
/// the earliest backoff that ends and the earliest lease that expires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueTimes {
    /// The earliest `ready_at` after `now` of a queued run (a retry waiting
    /// out its backoff).
    pub next_ready_at: Option<Ts>,
    /// The earliest lease expiry of a held run.
    pub next_lease_expiry: Option<Ts>,
    /// The earliest queue deadline of a queued run with a queue timeout
    /// (see [`QueueOptions::queue_timeout_ms`]), passed or not.
    pub next_queue_deadline: Option<Ts>,
}

/// Claiming, leases and fenced writes.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Creates a run like [`RunStore::create_run`](crate::RunStore::create_run),
    /// with its queue options set in the same transaction (no worker can
    /// claim it before they are).
    async fn enqueue(&self, new: &NewRun, options: &QueueOptions) -> StoreResult<Run>;

    /// Creates a run with its extras exactly like
    /// [`ReliabilityStore::create_run_with`](crate::ReliabilityStore::create_run_with)
    /// (session check, deduplication), and with its queue options, all in
    /// one transaction. A duplicate ([`Created::Existing`]) inserts nothing:
    /// the existing run keeps its own options.
    async fn enqueue_with(
        &self,
        new: &NewRun,
        extras: &RunExtras,
        options: &QueueOptions,
        dedupe: bool,
    ) -> StoreResult<Created>;

    /// Claims up to `request.limit` queued runs that are ready (highest
    /// priority first, then oldest), atomically: concurrent claimers never
    /// get the same run. Each claim appends its `state` event.
    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Vec<Claimed>>;

    /// Creates the runs of `batch` as
    /// [`ReliabilityStore::create_runs_with`](crate::ReliabilityStore::create_runs_with)
    /// does (one transaction: all or none), each already held by the worker
    /// of `request` as if [`Self::claim`] had taken it the moment it was
    /// queued: `starting` under `request.helper`, its `state` event, leased
    /// to `request.worker` until `request.now + request.lease_ms` under a
    /// new fencing token. No other worker ever sees them queued, and none is
    /// woken. How a worker coordinating a workflow runs a member itself.
    /// `briefs` (SHA-256, bytes) are stored in the same transaction, as
    /// [`ParcelStore::put_brief`](crate::ParcelStore::put_brief) stores
    /// them: a worker that takes such a run over finds its brief.
    ///
    /// A run whose concurrency key has no slot for it is created queued, as
    /// any, and is not among those returned; labels and capacity are the
    /// caller's to check. `request.limit`, `labels` and `free` are not used.
    async fn create_claimed(
        &self,
        batch: &[(NewRun, RunExtras)],
        briefs: &[(String, Vec<u8>)],
        request: &ClaimRequest,
    ) -> StoreResult<Vec<Claimed>>;

    /// Extends the leases `worker` still holds among `held` (run, fencing
    /// token) to `expires_at`, in one statement. Returns the runs renewed; a
    /// run missing from the answer is no longer this worker's.
    async fn renew_leases(
        &self,
        worker: &str,
        held: &[(RunId, i64)],
        expires_at: Ts,
    ) -> StoreResult<Vec<RunId>>;

    /// A compare-and-set transition by the lease holder: `Fenced` unless
    /// `fence` is still the run's token and the lease is held, then as
    /// [`RunStore::transition`](crate::RunStore::transition). A queued or
    /// terminal state ends the lease.
    async fn fenced_transition(
        &self,
        id: &RunId,
        fence: i64,
        expected_version: i64,
        write: &StateWrite,
    ) -> StoreResult<Run> {
        self.fenced_transitions(id, fence, expected_version, std::slice::from_ref(write))
            .await
    }

    /// Several state changes at once by the lease holder: `Fenced` unless
    /// `fence` is still the run's token and the lease is held (checked once,
    /// before the first), then as
    /// [`RunStore::transitions`](crate::RunStore::transitions).
    async fn fenced_transitions(
        &self,
        id: &RunId,
        fence: i64,
        expected_version: i64,
        writes: &[StateWrite],
    ) -> StoreResult<Run>;

    /// The writes of many held runs in one transaction, each saved as
    /// [`fenced_transitions`](Self::fenced_transitions) would save it, with
    /// its own answer, in order: a run whose writes are refused (fenced,
    /// moved on, finished) is left as it was and the others are saved. `Err`
    /// when the transaction as a whole failed: nothing was saved.
    async fn fenced_transitions_many(
        &self,
        batch: &[HeldWrites],
    ) -> StoreResult<Vec<StoreResult<Run>>>;

    /// Appends events as the lease holder: `Fenced` unless `fence` is current.
    async fn fenced_append_events(
        &self,
        id: &RunId,
        fence: i64,
        events: &[NewEvent],
    ) -> StoreResult<()>;

    /// The event appends of many held runs at once, each answered as
    /// [`fenced_append_events`](Self::fenced_append_events) would answer
    /// it, in order: a run whose append is refused writes nothing and the
    /// others are saved. `Err` when the batch as a whole failed: nothing was
    /// saved. Two appends of one run in a batch were made concurrently, so
    /// either order is theirs. By default, one after another.
    async fn fenced_append_events_many(
        &self,
        batch: &[HeldEvents],
    ) -> StoreResult<Vec<StoreResult<()>>> {
        let mut answers = Vec::with_capacity(batch.len());
        for held in batch {
            answers.push(
                self.fenced_append_events(&held.id, held.fence, &held.events)
                    .await,
            );
        }
        Ok(answers)
    }

    /// The holder gives a run back to the queue (a draining worker): same as
    /// a sweep of this one run, with `reason` in the event.
    async fn release(&self, id: &RunId, fence: i64, at: Ts, reason: &str) -> StoreResult<Run>;

    /// Returns every run whose lease expired before `now` to the queue,
    /// without consuming an attempt, recording why in a `state` event.
    /// Returns the runs requeued.
    async fn sweep_expired(&self, now: Ts) -> StoreResult<Vec<RunId>>;

    /// Ends every queued run whose queue timeout passed before `now`
    /// (nobody claimed it in time) as `timed_out` with the reason, its
    /// `state` event appended, in one transaction. A run a claim holds or
    /// took meanwhile is left to it. Returns the runs ended.
    async fn expire_queued(&self, now: Ts) -> StoreResult<Vec<RunId>>;

    /// Of `ids`, the runs someone asked to stop ([`RunStore::request_stop`](crate::RunStore::request_stop)),
    /// in one statement: how a worker looks for stop requests of the runs in hand.
    async fn stops_requested(&self, ids: &[RunId]) -> StoreResult<Vec<RunId>>;

    /// Sets a run's priority (higher is claimed first; default 0).
    async fn set_priority(&self, id: &RunId, priority: i64) -> StoreResult<()>;

    /// When an idle worker must look at the queue again unprompted (one
    /// statement): see [`QueueTimes`].
    async fn queue_times(&self, now: Ts) -> StoreResult<QueueTimes>;

    /// The run's lease while a worker holds it (`starting`, `running` or
    /// `paused` under a lease), else `None`.
    async fn lease(&self, id: &RunId) -> StoreResult<Option<Lease>>;
}
