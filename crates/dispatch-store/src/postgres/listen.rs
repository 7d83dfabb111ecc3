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
