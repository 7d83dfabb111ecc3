//! `LISTEN` on a channel: a dedicated connection whose notifications wake
//! idle workers when a run becomes claimable, and callback dispatchers when a
//! run with a callback finishes.

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use super::{CALLBACK_CHANNEL, Fail, PgStore, QUEUE_CHANNEL};
use crate::StoreResult;

/// Wakes on a channel's notifications. Dropping it closes its connection.
#[derive(Debug)]
pub struct QueueListener {
    _client: tokio_postgres::Client,
    rx: mpsc::Receiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl QueueListener {
    /// Waits for the next notification (several sent meanwhile count as one).
    /// `false` when the connection is gone: the caller falls back to polling
    /// or listens again.
    pub async fn notified(&mut self) -> bool {
        self.rx.recv().await.is_some()
    }
}

impl Drop for QueueListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgStore {
    /// Opens a connection that listens for queue notifications.
    pub async fn listen_queue(&self) -> StoreResult<QueueListener> {
        self.listen(QUEUE_CHANNEL).await
    }

    /// Opens a connection that listens for finished runs with a callback.
    pub async fn listen_callbacks(&self) -> StoreResult<QueueListener> {
        self.listen(CALLBACK_CHANNEL).await
    }

    async fn listen(&self, channel: &str) -> StoreResult<QueueListener> {
        let result = async {
            let (client, mut connection) = self.config().connect(NoTls).await?;
            let (tx, rx) = mpsc::channel(1);
            let task = tokio::spawn(async move {
                loop {
                    match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                        Some(Ok(AsyncMessage::Notification(_))) => {
                            // Full means a wake-up is already pending.
                            let _ = tx.try_send(());
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    }
                }
            });
            client.batch_execute(&format!("LISTEN {channel}")).await?;
            Ok::<_, Fail>(QueueListener {
                _client: client,
                rx,
                task,
            })
        }
        .await;
        result.map_err(|e| self.error(e))
    }
}

/// The channel live text of native agents travels on, from `dispatch worker`
/// processes to the servers whose SSE streams show it (never stored).
pub const DELTA_CHANNEL: &str = "dispatch_deltas";
/// The largest payload PostgreSQL carries in one notification, with room to spare.
pub const MAX_NOTIFY_BYTES: usize = 7_000;

/// Receives the payloads of delta notifications. Dropping it closes its connection.
#[derive(Debug)]
pub struct DeltaListener {
    _client: tokio_postgres::Client,
    rx: mpsc::Receiver<String>,
    task: tokio::task::JoinHandle<()>,
}

impl DeltaListener {
    /// The next payload; `None` when the connection is gone.
    pub async fn next(&mut self) -> Option<String> {
        self.rx.recv().await
    }
}

impl Drop for DeltaListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgStore {
    /// Sends one delta payload (at most [`MAX_NOTIFY_BYTES`]) to every listener.
    pub async fn notify_delta(&self, payload: &str) -> StoreResult<()> {
        let result = async {
            let client = self.client().await?;
            let stmt = client.prepare_cached("SELECT pg_notify($1, $2)").await?;
            client.execute(&stmt, &[&DELTA_CHANNEL, &payload]).await?;
            Ok::<_, Fail>(())
        }
        .await;
        result.map_err(|e| self.error(e))
    }

    /// Opens a connection that receives delta payloads (a slow reader loses
    /// the oldest-pending ones, never blocks the connection).
    pub async fn listen_deltas(&self) -> StoreResult<DeltaListener> {
        let result = async {
            let (client, mut connection) = self.config().connect(NoTls).await?;
            let (tx, rx) = mpsc::channel(4096);
            let task = tokio::spawn(async move {
                loop {
                    match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                        Some(Ok(AsyncMessage::Notification(n))) => {
                            let _ = tx.try_send(n.payload().to_string());
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    }
                }
            });
            client
                .batch_execute(&format!("LISTEN {DELTA_CHANNEL}"))
                .await?;
            Ok::<_, Fail>(DeltaListener {
                _client: client,
                rx,
                task,
            })
        }
        .await;
        result.map_err(|e| self.error(e))
    }
}
