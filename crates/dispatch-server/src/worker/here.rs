//! The member runs of a workflow this worker coordinates that it runs
//! itself (see [`dispatch_runtime::workflow::RunHere`]).
//!
//! The coordinator runs in one of this worker's run tasks; it asks the
//! worker loop, which alone knows the slots and capacity in hand, over a
//! channel. The loop takes, of the runs asked for, as many as its free
//! slots and capacity allow (none while it drains), creates them claimed
//! by itself in one transaction ([`dispatch_store::QueueStore::create_claimed`])
//! and starts each through [`Worker::start`], as a run it claimed from the
//! queue. Member runs carry no queue labels, so any worker may run them.

use std::future::Future;
use std::pin::Pin;

use dispatch_core::{RunId, now_ms};
use dispatch_runtime::workflow::{MemberRun, RunHere};
use dispatch_store::{Capacity, ClaimRequest, NewRun, RunExtras, StoreError, StoreResult};
use tokio::sync::{mpsc, oneshot};

use super::{Metrics, Worker, bounded};

/// Runs a coordinator asks this worker to create claimed and start.
pub(super) struct Request {
    batch: Vec<MemberRun>,
    reply: oneshot::Sender<StoreResult<Vec<RunId>>>,
}

/// The coordinator's side: a line to the worker loop.
pub(super) struct ToWorker(pub(super) mpsc::UnboundedSender<Request>);

impl RunHere for ToWorker {
    fn create_and_start<'a>(
        &'a self,
        batch: &'a [MemberRun],
    ) -> Pin<Box<dyn Future<Output = StoreResult<Vec<RunId>>> + Send + 'a>> {
        Box::pin(async move {
            let gone = || StoreError::Unavailable {
                path: "the worker".into(),
                message: "the worker loop takes no more runs".into(),
            };
            let (reply, answer) = oneshot::channel();
            let request = Request {
                batch: batch.to_vec(),
                reply,
            };
            self.0.send(request).map_err(|_| gone())?;
            answer.await.map_err(|_| gone())?
        })
    }
}

impl Worker {
    /// Answers `request`: creates claimed and starts the runs this worker
    /// has room for (none while `draining`).
    pub(super) async fn take_here(&mut self, request: Request, draining: bool) {
        let Request { batch, reply } = request;
        let free = match draining {
            true => 0,
            false => self.config.slots.saturating_sub(self.held.len()),
        };
        let layout = self.config.layout.clone();
        let candidates: Vec<(usize, Capacity)> = batch
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let parcel = self.couriers.parcel(&layout, &m.new.parcel_digest);
                let want =
                    parcel.map_or_else(Capacity::default, |p| Capacity::of(&p.manifest.resources));
                (i, want)
            })
            .collect();
        let picked = Capacity::pick(self.free_capacity(), candidates, free);
        if picked.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
            return;
        }
        let take: Vec<(NewRun, RunExtras)> = picked
            .iter()
            .map(|&i| (batch[i].new.clone(), batch[i].extras.clone()))
            .collect();
        // Stored with the runs: a worker that takes one over fetches it.
        let briefs: Vec<(String, Vec<u8>)> = picked
            .iter()
            .map(|&i| (batch[i].new.brief_sha256.clone(), batch[i].brief.clone()))
            .collect();
        let now = now_ms();
        // The leases run from before the request left, as a claim's.
        let sent = std::time::Instant::now();
        let request = ClaimRequest {
            worker: self.config.name.clone(),
            helper: dispatch_runtime::os::this_process(),
            limit: take.len(),
            now,
            lease_ms: i64::try_from(self.config.lease.as_millis()).unwrap_or(i64::MAX),
            labels: self.config.labels.clone(),
            free: None,
        };
        // A transaction that commits after the bound gave up leaves runs
        // leased to this worker that it never started: their leases run
        // out (never renewed) and another worker takes them.
        let created = self.store.create_claimed(&take, &briefs, &request);
        let claimed = match bounded(created, self.config.lease / 2, "creating member runs").await {
            Ok(claimed) => claimed,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        Metrics::add(&self.metrics.runs_claimed, claimed.len() as u64);
        self.summary.claimed += claimed.len() as u64;
        let ids = claimed.iter().map(|c| c.run.id.clone()).collect();
        for c in claimed {
            self.start(c, sent);
        }
        let _ = reply.send(Ok(ids));
    }
}
