//! Saving the writes of the runs a worker holds, many runs per statement or
//! transaction: each run's task hands its writes over and waits for the
//! answer, and one task per kind of write saves whatever piled up while its
//! previous save was in flight. Nothing waits for a batch to fill: a lone
//! write is saved at once, and a busy worker's writes share statements (and
//! commits) by themselves.
//!
//! Three kinds: state changes
//! ([`dispatch_store::QueueStore::fenced_transitions_many`]), event
//! appends ([`dispatch_store::QueueStore::fenced_append_events_many`]) and
//! log chunks ([`dispatch_store::RunLogStore::append_logs_many`]). At 1,000
//! concurrent native runs the single-run appends were a third of the
//! database's statements and most of its time (issue #38).

use std::future::Future;
use std::pin::Pin;

use dispatch_store::{HeldEvents, HeldLog, HeldWrites, Run, StoreError, StoreResult};
use tokio::sync::{mpsc, oneshot};

use crate::SharedStore;
use crate::worker::renewer::{LeaseDb, bounded_open};

/// The most runs' state changes saved in one transaction.
const MAX_BATCH: usize = 256;

/// The most runs' event appends or log chunks in one statement. Their
/// payloads are large (a tool call's input and output, up to 64 KiB of
/// log): 256 runs' tool rounds made one statement's parameters ~2.5 MB,
/// encoded in buffers a pooled connection keeps at that size, which a
/// worker's 1,000 waiting runs kept resident (issue #38 item 2).
const MAX_PAYLOAD_BATCH: usize = 32;

/// The connections of the writer's own pool on PostgreSQL: one for each
/// kind of write (each kind saves one batch at a time).
pub(crate) const CONNECTIONS: usize = 3;

/// What the writer's connections are called in `pg_stat_activity`.
pub(crate) const APPLICATION_NAME: &str = "dispatch-worker-writer";

/// How long the writer's pool may take to open.
const OPEN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The store the writer saves through: on PostgreSQL a pool of its own
/// ([`CONNECTIONS`], named [`APPLICATION_NAME`]). A connection keeps the
/// buffers it encoded and sent a statement in at that statement's size,
/// and the writer's statements are the large ones (32 runs' events or log
/// chunks: a 16 KiB input in each run's first checkpoint made them
/// ~0.5 MB): through the worker's pool, every one of its connections came
/// to keep such buffers, 18–25 MB with 1,000–2,000 runs waiting (issue #38
/// item 2). On SQLite, or when the pool does not open within [`OPEN_LIMIT`]
/// (said once, as worker `name`'s), the worker's own store.
pub(crate) async fn own_store(
    db: Option<&LeaseDb>,
    shared: &SharedStore,
    name: &str,
) -> SharedStore {
    let Some(db @ LeaseDb::Postgres(_)) = db else {
        return shared.clone();
    };
    match bounded_open(db.open_as(CONNECTIONS, Some(APPLICATION_NAME)), OPEN_LIMIT).await {
        Ok(store) => store,
        Err(why) => {
            tracing::warn!(
                "[worker {name}] cannot open the writer's own connections ({why}); saving through the worker's"
            );
            shared.clone()
        }
    }
}

/// Hands writes to the worker's saving tasks (which end when every
/// `Writer` is gone).
#[derive(Clone, Debug)]
pub(crate) struct Writer {
    states: mpsc::UnboundedSender<Job<HeldWrites, Run>>,
    events: mpsc::UnboundedSender<Job<HeldEvents, ()>>,
    logs: mpsc::UnboundedSender<Job<HeldLog, ()>>,
}

#[derive(Debug)]
struct Job<T, R> {
    write: T,
    answer: oneshot::Sender<StoreResult<R>>,
}

type Saved<'a, R> = Pin<Box<dyn Future<Output = StoreResult<R>> + Send + 'a>>;

/// One kind of held write: how a batch of them is saved, and how one is
/// saved alone (when its batch failed as a whole).
trait Held: Send + Sync + Sized + 'static {
    type Answer: Send + 'static;
    /// The most of them saved at once.
    const MAX: usize;
    fn id(&self) -> &dispatch_core::RunId;
    fn save_many<'a>(
        store: &'a SharedStore,
        batch: &'a [Self],
    ) -> Saved<'a, Vec<StoreResult<Self::Answer>>>;
    fn save_one<'a>(&'a self, store: &'a SharedStore) -> Saved<'a, Self::Answer>;
}

impl Held for HeldWrites {
    type Answer = Run;
    const MAX: usize = MAX_BATCH;
    fn id(&self) -> &dispatch_core::RunId {
        &self.id
    }
    fn save_many<'a>(
        store: &'a SharedStore,
        batch: &'a [Self],
    ) -> Saved<'a, Vec<StoreResult<Run>>> {
        Box::pin(store.fenced_transitions_many(batch))
    }
    fn save_one<'a>(&'a self, store: &'a SharedStore) -> Saved<'a, Run> {
        Box::pin(store.fenced_transitions(
            &self.id,
            self.fence,
            self.expected_version,
            &self.writes,
        ))
    }
}

impl Held for HeldEvents {
    type Answer = ();
    const MAX: usize = MAX_PAYLOAD_BATCH;
    fn id(&self) -> &dispatch_core::RunId {
        &self.id
    }
    fn save_many<'a>(store: &'a SharedStore, batch: &'a [Self]) -> Saved<'a, Vec<StoreResult<()>>> {
        Box::pin(store.fenced_append_events_many(batch))
    }
    fn save_one<'a>(&'a self, store: &'a SharedStore) -> Saved<'a, ()> {
        Box::pin(store.fenced_append_events(&self.id, self.fence, &self.events))
    }
}

impl Held for HeldLog {
    type Answer = ();
    const MAX: usize = MAX_PAYLOAD_BATCH;
    fn id(&self) -> &dispatch_core::RunId {
        &self.id
    }
    fn save_many<'a>(store: &'a SharedStore, batch: &'a [Self]) -> Saved<'a, Vec<StoreResult<()>>> {
        Box::pin(store.append_logs_many(batch))
    }
    fn save_one<'a>(&'a self, store: &'a SharedStore) -> Saved<'a, ()> {
        Box::pin(store.append_log(&self.id, self.fence, self.offset, &self.bytes))
    }
}

impl Writer {
    /// Starts the saving tasks on the current runtime.
    pub(crate) fn start(store: SharedStore) -> Writer {
        let (states, state_jobs) = mpsc::unbounded_channel();
        let (events, event_jobs) = mpsc::unbounded_channel();
        let (logs, log_jobs) = mpsc::unbounded_channel();
        tokio::spawn(save_all(store.clone(), state_jobs));
        tokio::spawn(save_all(store.clone(), event_jobs));
        tokio::spawn(save_all(store, log_jobs));
        Writer {
            states,
            events,
            logs,
        }
    }

    /// Saves one run's state writes with whatever else is waiting; the
    /// answer [`dispatch_store::QueueStore::fenced_transitions`] would give.
    pub(crate) async fn save(&self, writes: HeldWrites) -> StoreResult<Run> {
        hand_over(&self.states, writes).await
    }

    /// Appends one run's events with whatever else is waiting; the answer
    /// [`dispatch_store::QueueStore::fenced_append_events`] would give.
    pub(crate) async fn append(&self, events: HeldEvents) -> StoreResult<()> {
        hand_over(&self.events, events).await
    }

    /// Appends a chunk of one run's log with whatever else is waiting; the
    /// answer [`dispatch_store::RunLogStore::append_log`] would give.
    pub(crate) async fn append_log(&self, chunk: HeldLog) -> StoreResult<()> {
        hand_over(&self.logs, chunk).await
    }
}

async fn hand_over<T: Held>(
    queue: &mpsc::UnboundedSender<Job<T, T::Answer>>,
    write: T,
) -> StoreResult<T::Answer> {
    let (answer, wait) = oneshot::channel();
    let id = write.id().clone();
    let gone = || StoreError::Unavailable {
        path: "the worker's writer".into(),
        message: format!("it stopped before run {id} was saved"),
    };
    if queue.send(Job { write, answer }).is_err() {
        return Err(gone());
    }
    wait.await.unwrap_or_else(|_| Err(gone()))
}

async fn save_all<T: Held>(
    store: SharedStore,
    mut jobs: mpsc::UnboundedReceiver<Job<T, T::Answer>>,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < T::MAX {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (writes, answers): (Vec<T>, Vec<_>) =
            batch.into_iter().map(|j| (j.write, j.answer)).unzip();
        match T::save_many(&store, &writes).await {
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
            // The batch failed as a whole (a deadlock with another worker,
            // a lost connection): each run is saved on its own.
            Err(_) => {
                for (answer, write) in answers.into_iter().zip(&writes) {
                    let _ = answer.send(write.save_one(&store).await);
                }
            }
        }
    }
}
