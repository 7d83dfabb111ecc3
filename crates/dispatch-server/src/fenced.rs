//! A view of the store for one claimed run: its state writes (and the
//! output they carry), event appends and artifact records carry the
//! worker's fencing token, as its log appends do (see [`crate::ship`]), so
//! a worker whose lease was taken over can no longer change the run.
//! Everything else goes straight through.
//!
//! Those writes are durable: one that fails because the database is out of
//! reach (a restart, a partition) is retried, with its token, until it is
//! saved, the database refuses it (the lease was taken over), or this worker
//! fenced itself off the run (see [`crate::self_fence`]) — so an outage
//! shorter than the lease never makes finished work run again.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use dispatch_core::{NewEvent, ProcRef, RunId, Ts};
use dispatch_store::{
    Approval, Artifact, ArtifactStore, Attempt, AttemptStore, Created, DeadLetter, Decision, Event,
    EventStore, HeldEvents, HeldWrites, NewRun, ReliabilityStore, Run, RunExtras, RunFilter,
    RunStore, StateWrite, StoreError, StoreResult,
};

use crate::SharedStore;
use crate::self_fence::LeaseClock;
use crate::ship::LogShipper;
use crate::writer::Writer;

/// The store as the holder of one run sees it.
pub struct FencedStore {
    inner: SharedStore,
    fence: i64,
    /// The agent process, once the run recorded one.
    agent: Mutex<Option<ProcRef>>,
    /// Ships the run's log; flushed before every state write but a start.
    log: OnceLock<Arc<LogShipper>>,
    /// The run's extras as the claim read them (they never change).
    extras: Option<(RunId, RunExtras)>,
    /// Saves state changes with other runs' (a worker's).
    writer: Option<Writer>,
    /// The lease as this holder sees it: writes stop when it is given up.
    lease: LeaseClock,
    /// Rate buckets in Redis (`--rate-limit-store`) instead of the database.
    rates: Option<Arc<crate::rates::RedisRates>>,
}

impl FencedStore {
    /// The holder of token `fence`, whose lease was taken (or last
    /// renewed) as `lease` says.
    pub fn new(inner: SharedStore, fence: i64, lease: LeaseClock) -> Self {
        FencedStore {
            inner,
            fence,
            agent: Mutex::new(None),
            log: OnceLock::new(),
            extras: None,
            writer: None,
            lease,
            rates: None,
        }
    }

    /// Keeps the rate buckets in Redis.
    pub fn with_rates(mut self, rates: Option<Arc<crate::rates::RedisRates>>) -> Self {
        self.rates = rates;
        self
    }

    /// The run's lease as this holder sees it.
    pub fn lease(&self) -> &LeaseClock {
        &self.lease
    }

    /// Runs `write` until it is saved or refused for good: a database out
    /// of reach is waited out (backing off to four tries a second) while this
    /// worker still holds the lease as far as it knows; the database itself
    /// refuses a stale token. Returns the answer and whether it was retried.
    async fn durably<T, F, Fut>(
        &self,
        id: &RunId,
        what: &str,
        mut write: F,
    ) -> (StoreResult<T>, bool)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let mut wait = Duration::from_millis(20);
        let mut retried = false;
        loop {
            if !self.lease.writable() {
                let fenced = StoreError::Fenced {
                    id: id.clone(),
                    fence: self.fence,
                };
                return (Err(fenced), retried);
            }
            match write().await {
                Err(e @ (StoreError::Unavailable { .. } | StoreError::Locked { .. })) => {
                    if !retried {
                        tracing::warn!(
                            "run {id}: cannot save {what} ({e}); retrying until it is saved \
                             or the lease is gone"
                        );
                    }
                    retried = true;
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_millis(250));
                }
                answer => {
                    if retried {
                        tracing::info!("run {id}: {what} saved after the database came back");
                    }
                    return (answer, retried);
                }
            }
        }
    }

    /// The writes' own result, after a retry whose first try may have been
    /// saved though its answer was lost: the run as they left it, or `None`.
    async fn already_saved(
        &self,
        id: &RunId,
        expected_version: i64,
        writes: &[StateWrite],
    ) -> Option<Run> {
        let last = writes.last()?;
        let n = i64::try_from(writes.len()).ok()?;
        let (run, _) = self
            .durably(id, "a state change", || self.inner.get_run(id))
            .await;
        let run = run.ok()?;
        (run.version == expected_version + n && run.state == last.state).then_some(run)
    }

    /// Ships the run's log before each state write but the agent's start
    /// from now on, so that whoever sees the run end, wait or requeue finds
    /// the log that led there stored.
    pub fn ship_log_with(&self, shipper: Arc<LogShipper>) {
        let _ = self.log.set(shipper);
    }

    /// State changes and event appends go through `writer`, saved with
    /// other runs' at once.
    pub(crate) fn with_writer(mut self, writer: Writer) -> Self {
        self.writer = Some(writer);
        self
    }

    /// Answers [`ReliabilityStore::run_extras`] for `run` with `extras`,
    /// read with the claim, instead of asking the store again.
    pub fn with_extras(mut self, run: RunId, extras: RunExtras) -> Self {
        self.extras = Some((run, extras));
        self
    }

    /// Where this run's writes are saved with other runs', if anywhere.
    pub(crate) fn writer(&self) -> Option<&Writer> {
        self.writer.as_ref()
    }

    pub fn fence(&self) -> i64 {
        self.fence
    }

    /// The agent process the run recorded when it started, if any (pid 0:
    /// the native loop, a task of this worker).
    pub fn agent(&self) -> Option<ProcRef> {
        *self.agent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl RunStore for FencedStore {
    async fn create_run(&self, new: &NewRun) -> StoreResult<Run> {
        self.inner.create_run(new).await
    }

    async fn get_run(&self, id: &RunId) -> StoreResult<Run> {
        self.inner.get_run(id).await
    }

    async fn resolve_prefix(&self, prefix: &str) -> StoreResult<RunId> {
        self.inner.resolve_prefix(prefix).await
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        self.inner.list_runs(filter).await
    }

    async fn transitions(
        &self,
        id: &RunId,
        expected_version: i64,
        writes: &[StateWrite],
    ) -> StoreResult<Run> {
        // Whoever sees the run end, wait or go back to the queue finds the
        // log that led there; an agent's start is not held up by a log
        // write (it ships at its own pace: the start of a workflow's
        // member is on the hop).
        let starts = writes
            .last()
            .is_some_and(|w| w.state.status() == dispatch_core::Status::Running);
        if !starts && let Some(log) = self.log.get() {
            match log.flush().await {
                // Refused as stale: said once by the shipper, and this
                // write will be refused too.
                Ok(()) | Err(StoreError::Fenced { .. }) => {}
                // The log ships later; the state write does not wait for it.
                Err(e) => tracing::warn!("run {id}: cannot ship its log before a state write: {e}"),
            }
        }
        // The agent is known before its start is saved: if the save never
        // happens, fencing can still find and stop it.
        let agent = writes.iter().rev().find_map(|w| w.state.agent());
        if let Some(agent) = agent {
            *self.agent.lock().unwrap_or_else(PoisonError::into_inner) = Some(agent);
        }
        let what = match writes.last().map(|w| w.state.status()) {
            Some(status) if status.is_terminal() => "the run's result",
            _ => "a state change",
        };
        let (answer, retried) = self
            .durably(id, what, || async {
                match &self.writer {
                    Some(writer) => {
                        let held = HeldWrites {
                            id: id.clone(),
                            fence: self.fence,
                            expected_version,
                            writes: writes.to_vec(),
                        };
                        writer.save(held).await
                    }
                    None => {
                        self.inner
                            .fenced_transitions(id, self.fence, expected_version, writes)
                            .await
                    }
                }
            })
            .await;
        match answer {
            Err(StoreError::Conflict { .. }) if retried => {
                match self.already_saved(id, expected_version, writes).await {
                    Some(run) => Ok(run),
                    None => answer,
                }
            }
            answer => answer,
        }
    }

    async fn request_stop(&self, id: &RunId, at: Ts) -> StoreResult<Run> {
        self.inner.request_stop(id, at).await
    }

    async fn delete_run(&self, id: &RunId) -> StoreResult<()> {
        self.inner.delete_run(id).await
    }
}

#[async_trait]
impl EventStore for FencedStore {
    async fn append_events(&self, run: &RunId, events: &[NewEvent]) -> StoreResult<()> {
        let (answer, _) = self
            .durably(run, "events", || async {
                match &self.writer {
                    Some(writer) => {
                        let held = HeldEvents {
                            id: run.clone(),
                            fence: self.fence,
                            events: events.to_vec(),
                        };
                        writer.append(held).await
                    }
                    None => {
                        self.inner
                            .fenced_append_events(run, self.fence, events)
                            .await
                    }
                }
            })
            .await;
        answer
    }

    async fn list_events(&self, run: &RunId, after: i64, limit: usize) -> StoreResult<Vec<Event>> {
        self.inner.list_events(run, after, limit).await
    }

    async fn latest_event(&self, run: &RunId, kinds: &[&str]) -> StoreResult<Option<Event>> {
        self.inner.latest_event(run, kinds).await
    }
}

#[async_trait]
impl ArtifactStore for FencedStore {
    async fn add_artifacts(&self, run: &RunId, artifacts: &[Artifact]) -> StoreResult<()> {
        let (answer, _) = self
            .durably(run, "artifacts", || {
                self.inner.fenced_add_artifacts(run, self.fence, artifacts)
            })
            .await;
        answer
    }

    async fn list_artifacts(&self, run: &RunId) -> StoreResult<Vec<Artifact>> {
        self.inner.list_artifacts(run).await
    }

    async fn artifact_in_use(&self, sha256: &str) -> StoreResult<bool> {
        self.inner.artifact_in_use(sha256).await
    }
}

#[async_trait]
impl AttemptStore for FencedStore {
    async fn list_attempts(&self, run: &RunId) -> StoreResult<Vec<Attempt>> {
        self.inner.list_attempts(run).await
    }
}

#[async_trait]
impl ReliabilityStore for FencedStore {
    async fn create_run_with(
        &self,
        new: &NewRun,
        extras: &RunExtras,
        dedupe: bool,
    ) -> StoreResult<Created> {
        self.inner.create_run_with(new, extras, dedupe).await
    }

    async fn create_runs_with(&self, batch: &[(NewRun, RunExtras)]) -> StoreResult<Vec<Created>> {
        self.inner.create_runs_with(batch).await
    }

    async fn run_extras(&self, id: &RunId) -> StoreResult<RunExtras> {
        match &self.extras {
            Some((run, extras)) if run == id => Ok(extras.clone()),
            _ => self.inner.run_extras(id).await,
        }
    }

    /// Fenced: a holder cut off from its run asks for nothing.
    async fn request_approval(&self, approval: &Approval) -> StoreResult<Approval> {
        let (answer, _) = self
            .durably(&approval.run_id, "an approval request", || {
                self.inner.fenced_request_approval(self.fence, approval)
            })
            .await;
        answer
    }

    async fn decide_approval(
        &self,
        run: &RunId,
        approval_id: &str,
        decision: &Decision,
    ) -> StoreResult<Approval> {
        self.inner.decide_approval(run, approval_id, decision).await
    }

    async fn list_approvals(
        &self,
        run: Option<&RunId>,
        pending_only: bool,
    ) -> StoreResult<Vec<Approval>> {
        self.inner.list_approvals(run, pending_only).await
    }

    async fn add_dead_letter(&self, letter: &DeadLetter) -> StoreResult<()> {
        self.inner.add_dead_letter(letter).await
    }

    async fn list_dead_letters(&self) -> StoreResult<Vec<DeadLetter>> {
        self.inner.list_dead_letters().await
    }

    async fn dead_letter(&self, run: &RunId) -> StoreResult<Option<DeadLetter>> {
        self.inner.dead_letter(run).await
    }

    async fn mark_replayed(&self, run: &RunId, by: &RunId) -> StoreResult<()> {
        self.inner.mark_replayed(run, by).await
    }

    /// A person's decision, not the holder's: not fenced.
    async fn decide_approval_moving(
        &self,
        run: &RunId,
        approval_id: &str,
        decision: &Decision,
        expected_version: i64,
        write: &StateWrite,
    ) -> StoreResult<(Approval, Run)> {
        self.inner
            .decide_approval_moving(run, approval_id, decision, expected_version, write)
            .await
    }
}

/// Sessions are not the run's: their writes are compare-and-set by version,
/// not fenced by the lease.
#[async_trait::async_trait]
impl dispatch_store::SessionStore for FencedStore {
    async fn get_session(&self, key: &str) -> StoreResult<Option<dispatch_store::SessionRecord>> {
        self.inner.get_session(key).await
    }

    async fn put_session(
        &self,
        key: &str,
        data: &serde_json::Value,
        expected: i64,
        by: Option<&RunId>,
        at: dispatch_core::Ts,
    ) -> StoreResult<i64> {
        self.inner.put_session(key, data, expected, by, at).await
    }

    async fn list_sessions(
        &self,
        prefix: Option<&str>,
    ) -> StoreResult<Vec<dispatch_store::SessionRecord>> {
        self.inner.list_sessions(prefix).await
    }

    async fn delete_session(&self, key: &str) -> StoreResult<bool> {
        self.inner.delete_session(key).await
    }

    async fn session_holder(&self, name: &str) -> StoreResult<Option<RunId>> {
        self.inner.session_holder(name).await
    }

    async fn remove_session(&self, name: &str) -> StoreResult<u64> {
        self.inner.remove_session(name).await
    }

    async fn expire_sessions(
        &self,
        prefix: &str,
        before: dispatch_core::Ts,
    ) -> StoreResult<Vec<String>> {
        self.inner.expire_sessions(prefix, before).await
    }
}

/// Messages are stored once by id (a coordinator that lost its lease can
/// only write what its successor writes too), so they are not fenced.
#[async_trait::async_trait]
impl dispatch_store::MessageStore for FencedStore {
    async fn put_messages(
        &self,
        workflow: &RunId,
        attempt: u32,
        messages: &[dispatch_store::NewMessage],
    ) -> StoreResult<Vec<dispatch_store::Message>> {
        self.inner.put_messages(workflow, attempt, messages).await
    }

    async fn list_messages(&self, workflow: &RunId) -> StoreResult<Vec<dispatch_store::Message>> {
        self.inner.list_messages(workflow).await
    }
}

/// Concurrency keys and rate buckets are shared by every run: not fenced
/// (the buckets are in Redis with `--rate-limit-store`).
#[async_trait::async_trait]
impl dispatch_store::LimitStore for FencedStore {
    async fn concurrency_stopping(&self, key: &str) -> StoreResult<Vec<RunId>> {
        self.inner.concurrency_stopping(key).await
    }

    async fn concurrency_holding(&self, key: &str) -> StoreResult<u32> {
        self.inner.concurrency_holding(key).await
    }

    async fn rate_acquire(
        &self,
        bucket: &str,
        limits: &dispatch_store::BucketLimits,
        est_tokens: u64,
        now: Ts,
    ) -> StoreResult<dispatch_store::RateGrant> {
        match &self.rates {
            Some(redis) => redis.acquire(bucket, limits, est_tokens, now).await,
            None => {
                self.inner
                    .rate_acquire(bucket, limits, est_tokens, now)
                    .await
            }
        }
    }

    async fn rate_settle(&self, grant: i64, tokens: u64) -> StoreResult<()> {
        match &self.rates {
            Some(redis) => redis.settle(grant, tokens).await,
            None => self.inner.rate_settle(grant, tokens).await,
        }
    }

    async fn rate_block(&self, bucket: &str, until: Ts) -> StoreResult<()> {
        match &self.rates {
            Some(redis) => redis.block(bucket, until).await,
            None => self.inner.rate_block(bucket, until).await,
        }
    }
}

/// Quotas are the project's, shared by every run: not fenced.
#[async_trait::async_trait]
impl dispatch_store::QuotaStore for FencedStore {
    async fn set_quotas(&self, quotas: &[dispatch_core::quota::Quota]) -> StoreResult<()> {
        self.inner.set_quotas(quotas).await
    }

    async fn remove_quotas(
        &self,
        project: &str,
        limit: Option<dispatch_core::quota::QuotaLimit>,
    ) -> StoreResult<u64> {
        self.inner.remove_quotas(project, limit).await
    }

    async fn list_quotas(
        &self,
        projects: &[String],
    ) -> StoreResult<Vec<dispatch_core::quota::Quota>> {
        self.inner.list_quotas(projects).await
    }

    async fn live_runs(&self, project: &str) -> StoreResult<u32> {
        self.inner.live_runs(project).await
    }

    async fn quota_use(
        &self,
        projects: &[String],
        now: Ts,
    ) -> StoreResult<Vec<dispatch_store::QuotaUse>> {
        self.inner.quota_use(projects, now).await
    }
}
