//! The worker loop: claim queued runs in batches while slots are free, run
//! each with the runtime's couriers through a [`FencedStore`], renew leases in
//! batches, return expired leases to the queue, and drain on shutdown.
//!
//! Runs execute in this process (the agent in its own process group, as with
//! the local helper). A stop request recorded by the API reaches the agent
//! within half a second: SIGTERM to its group.
//!
//! Drain: stop claiming; let the runs in hand finish within the grace period;
//! then give the rest back to the queue (without consuming an attempt) and
//! kill their agents.
//!
//! Leases are renewed every sixth of the lease, on a thread of their own
//! ([`renewer`]): a runtime saturated by the runs cannot delay them. A
//! worker that cannot renew one stops that run's agent before the lease can
//! expire for others ([`crate::self_fence`]).
//!
//! Claims are paced by how far behind the runtime is ([`admission`]): a
//! worker with more slots than it can serve leaves the rest queued for
//! other workers.
//!
//! A run let go before it ended (drained back to the queue, or its lease
//! lost) leaves no workspace mounted: it is unmounted when the run is let
//! go, and a stopping worker reclaims whatever is still mounted for runs no
//! live worker holds ([`reclaim`]).

pub mod admission;
pub mod fds;
mod here;
mod reclaim;
pub mod renewer;
pub mod stall;
mod timeouts;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dispatch_core::parcel::Courier;
use dispatch_core::{ProcRef, RunId, Ts, now_ms};
use dispatch_runtime::os;
use dispatch_runtime::{Layout, RuntimeError};
use dispatch_store::{Capacity, ClaimRequest, Claimed, StoreError};
use nix::sys::signal::Signal;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::fenced::FencedStore;
use crate::metrics::Metrics;
use crate::noop::{self, Couriers};
use crate::self_fence::{LeaseClock, LeaseTimes, Phase, Watchdog};
use crate::wake::Wake;
pub(crate) use crate::worker_timers::CONNECTED_POLL;
use crate::worker_timers::{MIN_SWEEP_WAIT, Timers};
use crate::writer::{self, Writer};
use crate::{ServerResult, SharedStore};
use admission::{Admission, Change, Verdict};
use renewer::{LeaseDb, RenewConfig, Renewer};
use stall::Stall;
use timeouts::bounded;

/// How often stop requests of runs in hand are looked for (runs whose agent
/// is up only).
const STOP_POLL: Duration = Duration::from_millis(500);

/// How a worker behaves.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Unique in the cluster: the lease owner.
    pub name: String,
    /// How many runs at once.
    pub slots: usize,
    /// Claim at most this many runs per statement.
    pub batch: usize,
    /// How long a lease lasts without renewal.
    pub lease: Duration,
    /// On drain, how long runs in hand may take to finish.
    pub grace: Duration,
    /// The longest an idle worker sleeps before looking at the queue anyway.
    pub poll: Duration,
    /// Affinity labels: runs that need labels are claimed only by workers
    /// with all of them.
    pub labels: Vec<String>,
    /// CPU and memory this worker offers: it claims only runs whose
    /// `RESOURCES` fit what its runs in hand leave free. `None`: no check.
    pub capacity: Option<Capacity>,
    /// Where parcels, briefs and logs live.
    pub layout: Layout,
    /// Ship run logs into the store, for an API on another machine.
    pub ship_logs: bool,
    /// Where finished runs' traces go (`--otlp-endpoint`); `None`: off.
    pub tracer: Option<crate::otel::Tracer>,
    /// The cluster's shared artifact store (`--artifacts URL`): artifacts
    /// go there and parcels' state is synchronized through it. `None`:
    /// this worker's `.dispatch/` only.
    pub shared: Option<Arc<dispatch_runtime::objects::Objects>>,
    /// Model rate buckets in Redis (`--rate-limit-store`); `None`: the database.
    pub rates: Option<Arc<crate::rates::RedisRates>>,
    /// Bus mode: the runs this worker queues (handoffs) are announced on
    /// the Redis stream, as the server announces the runs it creates, so
    /// the workers that wait on the bus take them at once.
    pub announce: Option<Arc<crate::bus::Publisher>>,
    /// Admission control: no more claims while the runtime is this far
    /// behind (see [`admission`]); zero: off.
    pub max_lag: Duration,
    /// Where the lease renewal thread opens its own database connection;
    /// `None`: it renews through the worker's store.
    pub lease_db: Option<LeaseDb>,
    /// The test knob [`stall::VAR`]: each run blocks the runtime first.
    pub stall: Option<Stall>,
}

impl WorkerConfig {
    pub fn new(layout: Layout) -> Self {
        WorkerConfig {
            name: default_name(),
            slots: 8,
            batch: 64,
            lease: Duration::from_secs(30),
            grace: Duration::from_secs(30),
            poll: Duration::from_secs(2),
            labels: Vec::new(),
            capacity: None,
            layout,
            ship_logs: true,
            tracer: None,
            shared: None,
            rates: None,
            announce: None,
            max_lag: admission::DEFAULT_MAX_LAG,
            lease_db: None,
            stall: None,
        }
    }
}

/// `<hostname>-<pid>`.
pub fn default_name() -> String {
    let host = crate::presence::hostname();
    let host = if host.is_empty() { "worker" } else { &host };
    format!("{host}-{}", std::process::id())
}

/// What a worker did, when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    pub claimed: u64,
    pub finished: u64,
    pub released: u64,
    pub lost: u64,
    /// Times claims were held back because the runtime was behind.
    pub held_back: u64,
}

/// A run in hand.
struct Held {
    store: Arc<FencedStore>,
    task: tokio::task::AbortHandle,
    /// SIGTERM already sent for a stop request.
    stopping: bool,
    /// What the run asks of this worker's capacity.
    requests: Capacity,
}

/// One worker: `slots` runs at a time from `store`.
pub struct Worker {
    store: SharedStore,
    wake: Wake,
    config: WorkerConfig,
    metrics: Arc<Metrics>,
    held: HashMap<RunId, Held>,
    /// Runs whose lease this worker lost before they ended: their
    /// workspaces go once the runs have ended (see
    /// [`Worker::leave_ended_workspaces`]).
    lost_workspaces: Vec<RunId>,
    tasks: JoinSet<RunId>,
    summary: WorkerSummary,
    couriers: Couriers,
    /// Saves the state changes of the runs in hand, many per transaction
    /// (started with the loop).
    writer: Option<Writer>,
    /// Stops the agents of runs whose lease this worker could not renew
    /// (started with the loop).
    watchdog: Option<Watchdog>,
    /// Renews the leases in hand, on its own thread (started with the loop).
    renewer: Option<Renewer>,
    /// Paces claims by the runtime's lag.
    admission: Admission,
    fds: fds::FdBudget,
    /// How the workflows this worker coordinates hand it member runs
    /// ([`here`]; set with the loop).
    here: Option<Arc<here::ToWorker>>,
}

impl Worker {
    pub fn new(
        store: SharedStore,
        wake: Wake,
        config: WorkerConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let admission = Admission::new(config.max_lag, metrics.clone());
        Worker {
            store,
            wake,
            config,
            metrics,
            held: HashMap::new(),
            lost_workspaces: Vec::new(),
            tasks: JoinSet::new(),
            summary: WorkerSummary::default(),
            couriers: Couriers::default(),
            writer: None,
            watchdog: None,
            renewer: None,
            admission,
            fds: fds::FdBudget::new(),
            here: None,
        }
    }

    fn times(&self) -> LeaseTimes {
        LeaseTimes::new(self.config.lease)
    }

    /// Runs until `shutdown` completes, then drains. Store errors while
    /// running are logged and retried; they never stop the worker.
    ///
    /// An idle worker asks the database nothing: it claims when woken (an
    /// enqueue's notification), when a retry's backoff ends, and, only while
    /// its notifications are not connected, at every `poll`; it sweeps
    /// expired leases only when one is due to expire.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> ServerResult<WorkerSummary> {
        // Ticks at the retry interval: frees the slots of runs let go.
        let mut renew = tokio::time::interval(self.times().retry_every());
        renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stops = tokio::time::interval(STOP_POLL);
        stops.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let helper = os::this_process();
        let writes = writer::own_store(
            self.config.lease_db.as_ref(),
            &self.store,
            &self.config.name,
        );
        self.writer = Some(Writer::start(writes.await));
        self.watchdog = Some(Watchdog::start(self.times(), self.config.name.clone()));
        self.renewer = Some(Renewer::start(RenewConfig {
            name: self.config.name.clone(),
            lease: self.config.lease,
            db: self.config.lease_db.clone(),
            shared: self.store.clone(),
        }));
        // Agents' process trees die at the self-fencing deadline on their
        // own, frozen worker or not (see dispatch_runtime::sandbox).
        dispatch_runtime::sandbox::hold_leases(self.times().kill_after());
        let (here, mut asked_here) = tokio::sync::mpsc::unbounded_channel();
        self.here = Some(Arc::new(here::ToWorker(here)));
        // Run logs go here; the lifecycle lines need it before the agent starts.
        let runs = self.config.layout.runs();
        if let Err(e) = std::fs::create_dir_all(&runs) {
            self.log(&format!("cannot create {}: {e}", runs.display()));
        }
        // What its previous process left (kill -9): the runs' process
        // trees are killed, then their workspaces unmounted.
        let (killed, unmounted) = self.reclaim_left_behind().await;
        if killed > 0 {
            tracing::info!("[worker] killed {killed} process(es) a previous process's runs left");
        }
        if unmounted > 0 {
            tracing::info!("[worker] unmounted {unmounted} workspace(s) a previous process left");
        }
        // Containers of helpers and workers that died (kill -9) go now.
        tokio::spawn(async {
            let n = dispatch_runtime::container::sweep_orphans().await;
            if n > 0 {
                tracing::info!("[worker] removed {n} container(s) whose owner was gone");
            }
        });
        // Listen before the first claim: nothing enqueued after it is missed.
        self.wake.connect().await;
        let mut timers = Timers::new(self.config.poll);
        let mut drain_until: Option<Instant> = None;
        let mut backoff = Duration::from_millis(50);
        tokio::pin!(shutdown);
        loop {
            // Whether the runtime keeps up with the runs in hand.
            let mut admitted = true;
            if drain_until.is_none() {
                // Bounded: a connection opened into a partition hangs. One
                // given up on may have opened part of the way: claim then too.
                let limit = self.times().renew_every();
                if timers.reconnect_due()
                    && tokio::time::timeout(limit, self.wake.connect())
                        .await
                        .unwrap_or(true)
                {
                    // Notifications sent while disconnected were missed.
                    timers.claim_due = true;
                }
                if timers.claim_due && self.held.len() < self.config.slots {
                    admitted = self.admit();
                }
                if admitted && timers.claim_due && self.held.len() < self.config.slots {
                    let at = now_ms();
                    let before = self.summary.claimed;
                    match self.claim_more(helper, at).await {
                        Ok(full) => {
                            if self.summary.claimed > before {
                                self.admission.claimed();
                            }
                            backoff = Duration::from_millis(50);
                            timers.claimed(full, self.wake.complete(), at);
                            // Runs left for want of capacity are claimed
                            // when a run holding some ends.
                            timers.saturated |= self.holds_capacity();
                            if !full {
                                self.look_ahead(&mut timers).await;
                            }
                        }
                        Err(e) => {
                            self.log(&format!("cannot claim runs: {e}"));
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            } else if self.held.is_empty() {
                break;
            }
            self.admission.holding(self.held.len());
            let free = drain_until.is_none() && self.held.len() < self.config.slots;
            let idle = free && admitted;
            let busy = !self.held.is_empty() || !self.lost_workspaces.is_empty();
            let deadline =
                drain_until.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let sweep_at = timers.sweep_at;
            tokio::select! {
                biased;
                Some(done) = self.tasks.join_next() => {
                    self.finished(done);
                    while let Some(done) = self.tasks.try_join_next() {
                        self.finished(done);
                    }
                    timers.slot_freed();
                }
                // Before the periodic arms: each of them may wait up to a
                // bounded call's limit, and in a partition they would be
                // ready again every time (the stop requests' tick is no
                // longer than that limit), so the deadline never came.
                _ = tokio::time::sleep_until(deadline), if drain_until.is_some() => {
                    self.release_all().await;
                    break;
                }
                Some(asked) = asked_here.recv() => {
                    self.take_here(asked, drain_until.is_some()).await;
                }
                _ = renew.tick(), if busy => {
                    self.let_go_of_fenced_runs().await;
                    self.leave_ended_workspaces().await;
                }
                _ = stops.tick(), if busy => self.pass_on_stop_requests().await,
                _ = sleep_until_some(sweep_at) => {
                    timers.sweep_at = None;
                    match self.sweep().await {
                        Some(swept) => {
                            timers.claim_due |= swept > 0;
                            self.look_ahead(&mut timers).await;
                        }
                        None => timers.sweep_at = Some(Instant::now() + MIN_SWEEP_WAIT),
                    }
                }
                _ = &mut shutdown, if drain_until.is_none() => {
                    let grace = i64::try_from(self.config.grace.as_millis()).unwrap_or(i64::MAX);
                    self.log(&format!(
                        "draining: {} run(s) in hand, {} grace",
                        self.held.len(),
                        dispatch_core::time::human_duration(grace)
                    ));
                    drain_until = Some(Instant::now() + self.config.grace);
                }
                // Yield first: a store that works inline (SQLite) never
                // yields, and the rest of the process (the API) must run.
                () = tokio::task::yield_now(), if idle && timers.claim_due => {}
                // Held back: look again when the next probe reports.
                () = self.admission.changed(), if free && !admitted && timers.claim_due => {}
                _ = self.wake.wait(timers.wake_deadline()), if free && !timers.claim_due => {
                    timers.claim_due = true;
                }
            }
        }
        // Renewals stop: nothing is held any more.
        if let Some(renewer) = self.renewer.take() {
            renewer.stop().await;
        }
        // What is still mounted for runs no live worker holds (a run let go
        // while its workspace was being made) goes too.
        let (killed, unmounted) = self.reclaim_left_behind().await;
        if killed + unmounted > 0 {
            self.log(&format!(
                "on stopping: killed {killed} process(es) and unmounted {unmounted} workspace(s) of runs it let go"
            ));
        }
        Ok(self.summary)
    }

    /// Whether to claim now (see [`admission`]); logs and counts a change.
    fn admit(&mut self) -> bool {
        let held = self.held.len();
        if !self.fds.admits(held, &self.config.name) {
            return false;
        }
        let (name, max) = (&self.config.name, self.config.max_lag);
        let (metrics, summary) = (&self.metrics, &mut self.summary);
        let verdict = self.admission.verdict(held, |change| match change {
            Change::HeldBack { lag } => {
                summary.held_back += 1;
                Metrics::add(&metrics.claims_held_back, 1);
                tracing::warn!(
                    "[worker {name}] runtime {} ms behind with {held} run(s) in hand: claiming no \
                     more until it is under {} ms (--max-lag-ms {})",
                    lag.as_millis(),
                    (max / 2).as_millis(),
                    max.as_millis()
                );
            }
            Change::Resumed { lag } => tracing::warn!(
                "[worker {name}] runtime caught up ({} ms behind, {held} run(s) in hand): claiming again",
                lag.as_millis()
            ),
        });
        verdict == Verdict::Open
    }

    /// Asks the queue when it next needs this worker unprompted (a backoff
    /// ending, a lease expiring) and sets the timers. A backoff that ended
    /// since the last claim counts (it is due at once): asking for those
    /// after now only would lose a run that became due in between.
    async fn look_ahead(&mut self, timers: &mut Timers) {
        // Any queued run's earliest time first: one that was ready when this
        // worker claimed and is still queued was not taken (its row locked
        // for a moment by another transaction, or not this worker's: labels,
        // capacity, a concurrency key), so it is looked at again soon,
        // backing off, and not left to the safety net.
        let limit = self.times().renew_every();
        let times = match bounded(self.store.queue_times(i64::MIN), limit, "a look ahead").await {
            Ok(all) if all.next_ready_at.is_some_and(|t| t <= timers.claimed_at) => {
                timers.ready_left();
                let later = self.store.queue_times(timers.claimed_at);
                bounded(later, limit, "a look ahead").await
            }
            Ok(all) => {
                timers.none_left();
                Ok(all)
            }
            Err(e) => Err(e),
        };
        match times {
            Ok(times) => timers.schedule(times),
            Err(e) => {
                self.log(&format!("cannot read the queue's timers: {e}"));
                // Look again after a poll interval rather than at a stale time.
                timers.ready_at = Some(Instant::now() + self.config.poll);
            }
        }
    }

    /// Claims for the free slots and starts each run. `true` when the batch
    /// was full.
    async fn claim_more(&mut self, helper: ProcRef, now: Ts) -> dispatch_store::StoreResult<bool> {
        let free = self.config.slots.saturating_sub(self.held.len());
        if free == 0 {
            return Ok(false);
        }
        let limit = free
            .min(self.config.batch.max(1))
            .min(self.fds.room(self.held.len()));
        self.fds.claimed(limit);
        // The leases run from before the request left: never later than
        // the database's idea of them.
        let sent = std::time::Instant::now();
        let request = ClaimRequest {
            worker: self.config.name.clone(),
            helper,
            limit,
            now,
            lease_ms: i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX),
            labels: self.config.labels.clone(),
            free: self.free_capacity(),
        };
        let claim = self.store.claim(&request);
        let claimed = bounded(claim, self.config.lease / 2, "a claim").await?;
        let full = claimed.len() == limit;
        Metrics::add(&self.metrics.runs_claimed, claimed.len() as u64);
        self.summary.claimed += claimed.len() as u64;
        let layout = &self.config.layout;
        let (noop, others): (Vec<Claimed>, Vec<Claimed>) = claimed
            .into_iter()
            .partition(|c| self.couriers.of(layout, &c.run.parcel_digest) == Some(Courier::Noop));
        // Noop runs finish in one statement per batch; any left over (a stop
        // request, a lost lease, an error) take the one-by-one path.
        let held: Vec<(RunId, i64)> = noop.iter().map(|c| (c.run.id.clone(), c.fence)).collect();
        let at = now_ms();
        let finished = match held.is_empty() {
            true => Ok(Vec::new()),
            false => {
                let finish = self.store.succeed_at_once(&held, at);
                bounded(finish, self.config.lease / 2, "a batch finish").await
            }
        };
        let done: HashSet<RunId> = match finished {
            Ok(ids) => ids.into_iter().collect(),
            Err(e) => {
                self.log(&format!("cannot finish noop runs in a batch: {e}"));
                HashSet::new()
            }
        };
        self.summary.finished += done.len() as u64;
        Metrics::add(&self.metrics.runs_finished, done.len() as u64);
        let (succeeded, left): (Vec<Claimed>, Vec<Claimed>) =
            noop.into_iter().partition(|c| done.contains(&c.run.id));
        if let Some(tracer) = &self.config.tracer {
            // Their traces from what is in hand: no read per run.
            for c in succeeded {
                tracer.succeeded_at_once(c.run, c.extras.traceparent, at);
            }
        }
        for c in left.into_iter().chain(others) {
            self.start(c, sent);
        }
        Ok(full)
    }

    /// Whether a run in hand holds some of this worker's capacity.
    fn holds_capacity(&self) -> bool {
        self.config.capacity.is_some()
            && self
                .held
                .values()
                .any(|h| h.requests != Capacity::default())
    }

    /// The capacity the runs in hand leave free.
    fn free_capacity(&self) -> Option<Capacity> {
        let total = self.config.capacity?;
        Some(
            self.held
                .values()
                .fold(total, |free, h| free.minus(h.requests)),
        )
    }

    fn start(&mut self, claimed: Claimed, sent: std::time::Instant) {
        let Claimed { run, fence, extras } = claimed;
        let id = run.id.clone();
        let lease = LeaseClock::of(sent, self.times());
        let mut store = FencedStore::new(self.store.clone(), fence, lease)
            .with_extras(id.clone(), extras)
            .with_rates(self.config.rates.clone());
        if let Some(writer) = &self.writer {
            store = store.with_writer(writer.clone());
        }
        let store = Arc::new(store);
        let (task_store, layout, name) = (
            store.clone(),
            self.config.layout.clone(),
            self.config.name.clone(),
        );
        let (shared, ship_logs) = (self.store.clone(), self.config.ship_logs);
        let objects = self.config.shared.clone();
        let announce = self.config.announce.clone();
        let here = self
            .here
            .clone()
            .map(|h| h as Arc<dyn dispatch_runtime::workflow::RunHere>);
        let parcel = self.couriers.parcel(&layout, &run.parcel_digest);
        let noop = parcel.as_ref().map(|p| p.manifest.courier) == Some(Courier::Noop);
        let requests = parcel
            .as_ref()
            .map_or_else(Capacity::default, |p| Capacity::of(&p.manifest.resources));
        let stall = self.config.stall;
        // Boxed: the task's future holds a pointer, not the run twice.
        let run = Box::new(run);
        let task = self.tasks.spawn(async move {
            if let Some(stall) = stall {
                stall.run().await;
            }
            let id = run.id.clone();
            let result = if noop {
                Box::pin(noop::run(&task_store, *run)).await
            } else {
                let who = format!("[worker {name}]");
                let held = crate::claimed::run(
                    &shared,
                    &task_store,
                    &layout,
                    run,
                    parcel,
                    crate::claimed::Sharing {
                        ship_logs,
                        objects,
                        announce,
                        here,
                    },
                    &who,
                );
                match held.await {
                    Ok(_) => Ok(()),
                    Err(RuntimeError::Store(e)) => Err(e),
                    Err(e) => {
                        tracing::warn!("[worker {name}] run {id}: {e}");
                        Ok(())
                    }
                }
            };
            match result {
                Ok(()) => {}
                // Requeued for a retry (any worker takes it when it is due)
                // or taken over after a lost lease: no longer ours to run.
                Err(StoreError::Fenced { .. }) => {}
                Err(e) => tracing::warn!("[worker {name}] run {id}: {e}"),
            }
            id
        });
        if let Some(watchdog) = &self.watchdog {
            watchdog.watch(id.clone(), store.clone(), task.clone());
        }
        if let Some(renewer) = &self.renewer {
            renewer.hold(id.clone(), store.clone(), task.clone());
        }
        self.held.insert(
            id,
            Held {
                store,
                task,
                stopping: false,
                requests,
            },
        );
    }

    fn finished(&mut self, done: Result<RunId, tokio::task::JoinError>) {
        match done {
            Ok(id) => {
                if let Some(watchdog) = &self.watchdog {
                    watchdog.forget(&id);
                }
                if let Some(renewer) = &self.renewer {
                    renewer.forget(&id);
                }
                match self.held.remove(&id) {
                    // Ended while it held the lease: saved, or refused for good.
                    Some(h) if h.store.lease().writable() => {
                        self.summary.finished += 1;
                        Metrics::add(&self.metrics.runs_finished, 1);
                        if let Some(tracer) = &self.config.tracer {
                            tracer.finished(&id);
                        }
                    }
                    // Ended after this worker fenced itself off the run.
                    Some(_) => {
                        self.summary.lost += 1;
                        Metrics::add(&self.metrics.leases_lost, 1);
                    }
                    None => {}
                }
            }
            // Aborted (released or lost): already accounted for.
            Err(e) if e.is_cancelled() => {}
            Err(e) => self.log(&format!("a run task failed: {e}")),
        }
    }

    /// Frees the slots of runs whose lease is lost: the watchdog killed
    /// their agent, or the renewal thread found them taken over. Their
    /// workspaces are unmounted unless another worker holds them now.
    async fn let_go_of_fenced_runs(&mut self) {
        let gone: Vec<RunId> = self
            .held
            .iter()
            .filter(|(_, h)| h.store.lease().phase() == Phase::Gone)
            .map(|(id, _)| id.clone())
            .collect();
        if gone.is_empty() {
            return;
        }
        for id in &gone {
            if let Some(h) = self.held.remove(id) {
                h.task.abort();
                self.forget(id);
                self.summary.lost += 1;
                Metrics::add(&self.metrics.leases_lost, 1);
            }
        }
        // Not now: the run is back in the queue or held by another worker,
        // which may share this root and be making the same workspace.
        self.lost_workspaces.extend(gone);
    }

    /// `id` is neither watched nor renewed any more.
    fn forget(&self, id: &RunId) {
        if let Some(watchdog) = &self.watchdog {
            watchdog.forget(id);
        }
        if let Some(renewer) = &self.renewer {
            renewer.forget(id);
        }
    }

    /// Passes stop requests on to the agents in hand (one query for all).
    async fn pass_on_stop_requests(&mut self) {
        let ids: Vec<RunId> = self
            .held
            .iter()
            .filter(|(_, h)| !h.stopping && h.store.agent().is_some())
            .map(|(id, _)| id.clone())
            .collect();
        if ids.is_empty() {
            return;
        }
        let asked = self.store.stops_requested(&ids);
        let stopped = match bounded(
            asked,
            self.times().renew_every(),
            "a look for stop requests",
        )
        .await
        {
            Ok(stopped) => stopped,
            Err(e) => {
                self.log(&format!("cannot look for stop requests: {e}"));
                return;
            }
        };
        for id in stopped {
            if let Some(h) = self.held.get_mut(&id)
                && h.store.agent().is_some()
            {
                kill(h, Signal::SIGTERM);
                // A native agent's loop is a task here: cancel it.
                dispatch_runtime::native::cancel(&id);
                h.stopping = true;
            }
        }
    }

    /// Returns expired leases to the queue. `None` when the store failed.
    async fn sweep(&mut self) -> Option<usize> {
        let sweep = self.store.sweep_expired(now_ms());
        match bounded(sweep, self.times().renew_every(), "a sweep").await {
            Ok(ids) => {
                if !ids.is_empty() {
                    Metrics::add(&self.metrics.runs_swept, ids.len() as u64);
                    self.log(&format!(
                        "returned {} run(s) with an expired lease to the queue",
                        ids.len()
                    ));
                }
                Some(ids.len())
            }
            Err(e) => {
                self.log(&format!("cannot sweep expired leases: {e}"));
                None
            }
        }
    }

    fn log(&self, message: &str) {
        tracing::warn!("[worker {}] {message}", self.config.name);
    }

    /// Runs in hand now.
    pub fn busy(&self) -> usize {
        self.held.len()
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn kill(h: &Held, signal: Signal) {
    if let Some(agent) = h.store.agent() {
        os::signal_group(agent.pid, signal);
    }
}
