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

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dispatch_core::parcel::Courier;
use dispatch_core::{ProcRef, RunId, now_ms};
use dispatch_runtime::os;
use dispatch_runtime::{Layout, RuntimeError};
use dispatch_store::{ClaimRequest, Claimed, StoreError};
use nix::sys::signal::Signal;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::fenced::FencedStore;
use crate::metrics::Metrics;
use crate::noop::{self, Couriers};
use crate::wake::Wake;
use crate::{ServerResult, SharedStore};

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
    /// Where parcels, briefs and logs live.
    pub layout: Layout,
    /// Ship run logs into the store, for an API on another machine.
    pub ship_logs: bool,
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
            layout,
            ship_logs: true,
        }
    }
}

/// `<hostname>-<pid>`.
pub fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// What a worker did, when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    pub claimed: u64,
    pub finished: u64,
    pub released: u64,
    pub lost: u64,
}

/// A run in hand.
struct Held {
    store: Arc<FencedStore>,
    task: tokio::task::AbortHandle,
    /// SIGTERM already sent for a stop request.
    stopping: bool,
}

/// One worker: `slots` runs at a time from `store`.
pub struct Worker {
    store: SharedStore,
    wake: Wake,
    config: WorkerConfig,
    metrics: Arc<Metrics>,
    held: HashMap<RunId, Held>,
    tasks: JoinSet<RunId>,
    summary: WorkerSummary,
    couriers: Couriers,
}

impl Worker {
    pub fn new(
        store: SharedStore,
        wake: Wake,
        config: WorkerConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Worker {
            store,
            wake,
            config,
            metrics,
            held: HashMap::new(),
            tasks: JoinSet::new(),
            summary: WorkerSummary::default(),
            couriers: Couriers::default(),
        }
    }

    /// Runs until `shutdown` completes, then drains. Store errors while
    /// running are logged and retried; they never stop the worker.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> ServerResult<WorkerSummary> {
        let tick = (self.config.lease / 3).max(Duration::from_millis(50));
        let mut renew = tokio::time::interval(tick);
        renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stops = tokio::time::interval(STOP_POLL);
        stops.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(self.config.lease.max(Duration::from_millis(100)));
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let helper = os::this_process();
        // Run logs go here; the lifecycle lines need it before the agent starts.
        let runs = self.config.layout.runs();
        if let Err(e) = std::fs::create_dir_all(&runs) {
            self.log(&format!("cannot create {}: {e}", runs.display()));
        }
        let mut drain_until: Option<Instant> = None;
        let mut backoff = Duration::from_millis(50);
        tokio::pin!(shutdown);
        loop {
            // A full batch means there may be more: claim again at once, but
            // only after whatever else is due (renewals, a shutdown, results).
            let mut more = false;
            if drain_until.is_none() {
                match self.claim_more(helper).await {
                    Ok(full) => {
                        more = full;
                        backoff = Duration::from_millis(50);
                    }
                    Err(e) => {
                        self.log(&format!("cannot claim runs: {e}"));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            } else if self.held.is_empty() {
                break;
            }
            let idle = drain_until.is_none() && self.held.len() < self.config.slots;
            let deadline =
                drain_until.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                Some(done) = self.tasks.join_next() => {
                    self.finished(done);
                    while let Some(done) = self.tasks.try_join_next() {
                        self.finished(done);
                    }
                }
                _ = renew.tick() => self.renew().await,
                _ = stops.tick() => self.pass_on_stop_requests().await,
                _ = sweep.tick() => self.sweep().await,
                _ = &mut shutdown, if drain_until.is_none() => {
                    let grace = i64::try_from(self.config.grace.as_millis()).unwrap_or(i64::MAX);
                    self.log(&format!(
                        "draining: {} run(s) in hand, {} grace",
                        self.held.len(),
                        dispatch_core::time::human_duration(grace)
                    ));
                    drain_until = Some(Instant::now() + self.config.grace);
                }
                _ = tokio::time::sleep_until(deadline), if drain_until.is_some() => {
                    self.release_all().await;
                    break;
                }
                // Yield first: a store that works inline (SQLite) never
                // yields, and the rest of the process (the API) must run.
                () = tokio::task::yield_now(), if more && drain_until.is_none() => {}
                _ = self.wake.wait(self.config.poll), if idle && !more => {}
            }
        }
        Ok(self.summary)
    }

    /// Claims for the free slots and starts each run. `true` when the batch
    /// was full.
    async fn claim_more(&mut self, helper: ProcRef) -> dispatch_store::StoreResult<bool> {
        let free = self.config.slots.saturating_sub(self.held.len());
        if free == 0 {
            return Ok(false);
        }
        let limit = free.min(self.config.batch.max(1));
        let now = now_ms();
        let claimed = self
            .store
            .claim(&ClaimRequest {
                worker: self.config.name.clone(),
                helper,
                limit,
                now,
                lease_ms: i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX),
                labels: self.config.labels.clone(),
            })
            .await?;
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
        let done: HashSet<RunId> = match self.store.succeed_at_once(&held, now_ms()).await {
            Ok(ids) => ids.into_iter().collect(),
            Err(e) => {
                self.log(&format!("cannot finish noop runs in a batch: {e}"));
                HashSet::new()
            }
        };
        self.summary.finished += done.len() as u64;
        Metrics::add(&self.metrics.runs_finished, done.len() as u64);
        for c in noop
            .into_iter()
            .filter(|c| !done.contains(&c.run.id))
            .chain(others)
        {
            self.start(c);
        }
        Ok(full)
    }

    fn start(&mut self, claimed: Claimed) {
        let Claimed { run, fence } = claimed;
        let id = run.id.clone();
        let store = Arc::new(FencedStore::new(self.store.clone(), fence));
        let (task_store, layout, name) = (
            store.clone(),
            self.config.layout.clone(),
            self.config.name.clone(),
        );
        let (shared, ship_logs) = (self.store.clone(), self.config.ship_logs);
        let noop = self.couriers.of(&layout, &run.parcel_digest) == Some(Courier::Noop);
        let task = self.tasks.spawn(async move {
            let id = run.id.clone();
            let result = if noop {
                noop::run(&task_store, run).await
            } else {
                let who = format!("[worker {name}]");
                match crate::claimed::run(&shared, &task_store, &layout, run, ship_logs, &who).await
                {
                    Ok(_) => Ok(()),
                    Err(RuntimeError::Store(e)) => Err(e),
                    Err(e) => {
                        eprintln!("[worker {name}] run {id}: {e}");
                        Ok(())
                    }
                }
            };
            match result {
                Ok(()) => {}
                // Requeued for a retry (any worker takes it when it is due)
                // or taken over after a lost lease: no longer ours to run.
                Err(StoreError::Fenced { .. }) => {}
                Err(e) => eprintln!("[worker {name}] run {id}: {e}"),
            }
            id
        });
        self.held.insert(
            id,
            Held {
                store,
                task,
                stopping: false,
            },
        );
    }

    fn finished(&mut self, done: Result<RunId, tokio::task::JoinError>) {
        match done {
            Ok(id) => {
                if self.held.remove(&id).is_some() {
                    self.summary.finished += 1;
                    Metrics::add(&self.metrics.runs_finished, 1);
                }
            }
            // Aborted (released or lost): already accounted for.
            Err(e) if e.is_cancelled() => {}
            Err(e) => self.log(&format!("a run task failed: {e}")),
        }
    }

    /// Renews every lease in hand in one statement; a run not renewed was
    /// taken over, so its agent is killed and its task dropped.
    async fn renew(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let held: Vec<(RunId, i64)> = self
            .held
            .iter()
            .map(|(id, h)| (id.clone(), h.store.fence()))
            .collect();
        let lease = i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX);
        let renewed: HashSet<RunId> = match self
            .store
            .renew_leases(&self.config.name, &held, now_ms() + lease)
            .await
        {
            Ok(ids) => ids.into_iter().collect(),
            Err(e) => {
                self.log(&format!("cannot renew leases: {e}"));
                return;
            }
        };
        for (id, _) in held {
            if renewed.contains(&id) {
                continue;
            }
            // Finished between the snapshot and the renewal, or taken over.
            if let Some(h) = self.held.remove(&id) {
                let ended = match self.store.get_run(&id).await {
                    Ok(run) => run.state.is_terminal(),
                    Err(_) => false,
                };
                if ended {
                    // Its task is about to report; nothing was lost.
                    self.held.insert(id, h);
                    continue;
                }
                self.log(&format!("run {id}: lease lost; stopping its agent"));
                kill(&h, Signal::SIGKILL);
                h.task.abort();
                self.summary.lost += 1;
                Metrics::add(&self.metrics.leases_lost, 1);
            }
        }
    }

    async fn pass_on_stop_requests(&mut self) {
        let ids: Vec<RunId> = self
            .held
            .iter()
            .filter(|(_, h)| !h.stopping && h.store.agent().is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let Ok(run) = self.store.get_run(&id).await else {
                continue;
            };
            if run.stop_requested_at.is_none() {
                continue;
            }
            if let Some(h) = self.held.get_mut(&id)
                && h.store.agent().is_some()
            {
                kill(h, Signal::SIGTERM);
                h.stopping = true;
            }
        }
    }

    async fn sweep(&mut self) {
        match self.store.sweep_expired(now_ms()).await {
            Ok(ids) if !ids.is_empty() => {
                Metrics::add(&self.metrics.runs_swept, ids.len() as u64);
                self.log(&format!(
                    "returned {} run(s) with an expired lease to the queue",
                    ids.len()
                ));
            }
            Ok(_) => {}
            Err(e) => self.log(&format!("cannot sweep expired leases: {e}")),
        }
    }

    /// The grace period is over: every run still in hand goes back to the
    /// queue, then its agent is killed.
    async fn release_all(&mut self) {
        let held: Vec<(RunId, Held)> = self.held.drain().collect();
        for (id, h) in held {
            match self
                .store
                .release(
                    &id,
                    h.store.fence(),
                    now_ms(),
                    "worker drained before the run finished",
                )
                .await
            {
                Ok(_) => {
                    self.summary.released += 1;
                    Metrics::add(&self.metrics.runs_released, 1);
                }
                Err(e) => self.log(&format!("run {id}: cannot release: {e}")),
            }
            kill(&h, Signal::SIGKILL);
            h.task.abort();
        }
        self.log(&format!(
            "released {} run(s) back to the queue",
            self.summary.released
        ));
    }

    fn log(&self, message: &str) {
        eprintln!("[worker {}] {message}", self.config.name);
    }

    /// Runs in hand now.
    pub fn busy(&self) -> usize {
        self.held.len()
    }
}

fn kill(h: &Held, signal: Signal) {
    if let Some(agent) = h.store.agent() {
        os::signal_group(agent.pid, signal);
    }
}
