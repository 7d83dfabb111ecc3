//! Saving the state changes of the runs a worker holds, many runs per
//! transaction: each run's task hands its writes over and waits for the
//! answer, and one task saves whatever piled up while its previous save was
//! in flight ([`dispatch_store::QueueStore::fenced_transitions_many`]). Nothing waits for a
//! batch to fill: a lone write is saved at once, and a busy worker's writes
//! share transactions (and commits) by themselves.

use dispatch_store::{HeldWrites, Run, StoreError, StoreResult};
use tokio::sync::{mpsc, oneshot};

use crate::SharedStore;

/// The most runs saved in one transaction.
const MAX_BATCH: usize = 256;

/// Hands writes to the worker's saving task (which ends when every
/// `Writer` is gone).
#[derive(Clone, Debug)]
pub(crate) struct Writer {
    queue: mpsc::UnboundedSender<Job>,
}

#[derive(Debug)]
struct Job {
    writes: HeldWrites,
    answer: oneshot::Sender<StoreResult<Run>>,
}

impl Writer {
    /// Starts the saving task on the current runtime.
    pub(crate) fn start(store: SharedStore) -> Writer {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(save_all(store, jobs));
        Writer { queue }
    }

    /// Saves one run's writes with whatever else is waiting; the answer
    /// [`dispatch_store::QueueStore::fenced_transitions`] would give.
    pub(crate) async fn save(&self, writes: HeldWrites) -> StoreResult<Run> {
        let (answer, wait) = oneshot::channel();
        let id = writes.id.clone();
        let gone = || StoreError::Unavailable {
            path: "the worker's writer".into(),
            message: format!("it stopped before run {id} was saved"),
        };
        if self.queue.send(Job { writes, answer }).is_err() {
            return Err(gone());
        }
        wait.await.unwrap_or_else(|_| Err(gone()))
    }
}

async fn save_all(store: SharedStore, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (writes, answers): (Vec<HeldWrites>, Vec<_>) =
            batch.into_iter().map(|j| (j.writes, j.answer)).unzip();
        match store.fenced_transitions_many(&writes).await {
            Ok(results) => {
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(result);
                }
            }
            Err(e) if writes.len() == 1 => {
                if let Some(answer) = answers.into_iter().next() {
                    let _ = answer.send(Err(e));
                }
            }
            // The transaction failed as a whole (a deadlock with another
            // worker, a lost connection): each run is saved on its own.
            Err(_) => {
                for (answer, h) in answers.into_iter().zip(writes) {
                    let result = store
                        .fenced_transitions(&h.id, h.fence, h.expected_version, &h.writes)
                        .await;
                    let _ = answer.send(result);
                }
            }
        }
    }
}
