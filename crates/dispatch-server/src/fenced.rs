//! A view of the store for one claimed run: its state writes and event
//! appends carry the worker's fencing token, so a worker whose lease was taken
//! over can no longer change the run. Everything else goes straight through.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use async_trait::async_trait;
use dispatch_core::{NewEvent, ProcRef, RunId, Ts};
use dispatch_store::{
    Approval, Artifact, ArtifactStore, Attempt, AttemptStore, Created, DeadLetter, Decision, Event,
    EventStore, HeldWrites, NewRun, ReliabilityStore, Run, RunExtras, RunFilter, RunStore,
    StateWrite, StoreResult,
};

use crate::SharedStore;
use crate::ship::LogShipper;
use crate::writer::Writer;

/// The store as the holder of one run sees it.
pub struct FencedStore {
    inner: SharedStore,
    fence: i64,
    /// The agent process, once the run recorded one.
    agent: Mutex<Option<ProcRef>>,
    /// Ships the run's log; flushed before every state write.
    log: OnceLock<Arc<LogShipper>>,
    /// The run's extras as the claim read them (they never change).
    extras: Option<(RunId, RunExtras)>,
    /// Saves state changes with other runs' (a worker's).
    writer: Option<Writer>,
}

impl FencedStore {
    pub fn new(inner: SharedStore, fence: i64) -> Self {
        FencedStore {
            inner,
            fence,
            agent: Mutex::new(None),
            log: OnceLock::new(),
            extras: None,
            writer: None,
        }
    }

    /// Ships the run's log before each state write from now on, so that
    /// whoever sees the new state finds the log that led to it stored.
    pub fn ship_log_with(&self, shipper: Arc<LogShipper>) {
        let _ = self.log.set(shipper);
    }

    /// State changes go through `writer`, saved with other runs' at once.
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
        if let Some(log) = self.log.get()
            && let Err(e) = log.flush().await
        {
            // The log ships later; the state write does not wait for it.
            eprintln!("run {id}: cannot ship its log before a state write: {e}");
        }
        let run = match &self.writer {
            Some(writer) => {
                let held = HeldWrites {
                    id: id.clone(),
                    fence: self.fence,
                    expected_version,
                    writes: writes.to_vec(),
                };
                writer.save(held).await?
            }
            None => {
                self.inner
                    .fenced_transitions(id, self.fence, expected_version, writes)
                    .await?
            }
        };
        // A native agent's loop is a task of this worker (pid 0: no process
        // to signal); it is recorded too, so stop requests reach it.
        let agent = writes.iter().rev().find_map(|w| w.state.agent());
        if let Some(agent) = agent {
            *self.agent.lock().unwrap_or_else(PoisonError::into_inner) = Some(agent);
        }
        Ok(run)
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
        self.inner
            .fenced_append_events(run, self.fence, events)
            .await
    }

    async fn list_events(&self, run: &RunId, after: i64, limit: usize) -> StoreResult<Vec<Event>> {
        self.inner.list_events(run, after, limit).await
    }
}

#[async_trait]
impl ArtifactStore for FencedStore {
    async fn add_artifacts(&self, run: &RunId, artifacts: &[Artifact]) -> StoreResult<()> {
        self.inner.add_artifacts(run, artifacts).await
    }

    async fn list_artifacts(&self, run: &RunId) -> StoreResult<Vec<Artifact>> {
        self.inner.list_artifacts(run).await
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

    async fn run_extras(&self, id: &RunId) -> StoreResult<RunExtras> {
        match &self.extras {
            Some((run, extras)) if run == id => Ok(extras.clone()),
            _ => self.inner.run_extras(id).await,
        }
    }

    async fn request_approval(&self, approval: &Approval) -> StoreResult<Approval> {
        self.inner.request_approval(approval).await
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
}
