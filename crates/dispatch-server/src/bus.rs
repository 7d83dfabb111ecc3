//! Bus mode: Redis Streams as the dispatch channel. The server appends each
//! new run's id to a stream (`XADD`); workers read it through one consumer
//! group (`XREADGROUP`), so each new run wakes one worker instead of all of
//! them, which then claims from the database queue as usual (the queue stays
//! the source of truth: a lost message only delays a run until the next poll).
//!
//! Entries left unacknowledged by a worker that died are reclaimed
//! (`XAUTOCLAIM`) by the next worker that joins. The transport is the `redis`
//! crate (`redis://host:port`, no auth or TLS).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamReadReply};
use tokio::sync::{Mutex, mpsc};

/// The consumer group every worker reads through.
pub const GROUP: &str = "dispatch-workers";
/// The stream used when none is given.
pub const DEFAULT_STREAM: &str = "dispatch:runs";

/// Where the bus is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusConfig {
    /// `host:port`.
    pub addr: String,
    pub stream: String,
}

impl BusConfig {
    /// From `redis://host:port` (the default stream).
    pub fn from_url(url: &str) -> Result<BusConfig, BusError> {
        let addr = url
            .strip_prefix("redis://")
            .map(|a| a.trim_end_matches('/'))
            .filter(|a| !a.is_empty() && !a.contains('/') && !a.contains('@'))
            .ok_or_else(|| BusError::Url(url.to_string()))?;
        Ok(BusConfig {
            addr: addr.to_string(),
            stream: DEFAULT_STREAM.to_string(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("`{0}` is not a redis://host:port URL (no password or database)")]
    Url(String),
    #[error("the Redis bus at {addr} is unreachable")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the Redis bus answered an error: {0}")]
    Redis(String),
}

/// How long an entry may sit unacknowledged with a consumer (a worker that
/// died between reading and acknowledging) before another worker reclaims it.
const RECLAIM_IDLE_MS: u64 = 30_000;

async fn connect(addr: &str) -> Result<MultiplexedConnection, BusError> {
    let client = redis::Client::open(format!("redis://{addr}/"))
        .map_err(|_| BusError::Url(format!("redis://{addr}")))?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| bus_error(addr, e))
}

/// A broken or refused connection is `Io` (the caller reconnects or falls
/// back to polling); anything else is an error Redis answered.
fn bus_error(addr: &str, e: redis::RedisError) -> BusError {
    if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        BusError::Io {
            addr: addr.to_string(),
            source: std::io::Error::other(e.to_string()),
        }
    } else {
        BusError::Redis(e.to_string())
    }
}

/// The server's side: announces new runs.
pub struct Publisher {
    config: BusConfig,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(config: BusConfig) -> Publisher {
        Publisher {
            config,
            conn: Mutex::new(None),
        }
    }

    /// `XADD <stream> * run <id>`, reconnecting once if the connection broke.
    pub async fn announce(&self, run: &str) -> Result<(), BusError> {
        let mut conn = self.conn.lock().await;
        for _ in 0..2 {
            if conn.is_none() {
                let mut fresh = connect(&self.config.addr).await?;
                // The group exists before the first message, so workers that
                // join later still get everything announced since.
                create_group(&mut fresh, &self.config).await?;
                *conn = Some(fresh);
            }
            if let Some(c) = conn.as_mut() {
                let added: Result<redis::Value, _> = redis::cmd("XADD")
                    .arg(&self.config.stream)
                    .arg("*")
                    .arg("run")
                    .arg(run)
                    .query_async(c)
                    .await;
                match added.map_err(|e| bus_error(&self.config.addr, e)) {
                    Ok(_) => return Ok(()),
                    Err(BusError::Io { .. }) => *conn = None,
                    Err(e) => return Err(e),
                }
            }
        }
        Err(BusError::Redis("the bus connection keeps breaking".into()))
    }
}

/// A worker's side: a task reading the stream through the consumer group,
/// forwarding one wake-up per batch of messages.
pub struct Subscription {
    rx: mpsc::Receiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscription {
    /// Joins the consumer group (creating it and the stream when missing)
    /// as `consumer`.
    pub async fn open(config: &BusConfig, consumer: &str) -> Result<Subscription, BusError> {
        let mut conn = connect(&config.addr).await?;
        create_group(&mut conn, config).await?;
        let (tx, rx) = mpsc::channel(1);
        let (config, consumer) = (config.clone(), consumer.to_string());
        let task = tokio::spawn(async move {
            // Entries a dead worker read but never acknowledged.
            let reclaimed = reclaim(&mut conn, &config, &consumer).await;
            if !reclaimed.is_empty() {
                if ack(&mut conn, &config, &reclaimed).await.is_err() {
                    return;
                }
                let _ = tx.try_send(());
            }
            loop {
                let read: Result<Option<StreamReadReply>, _> = redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(&consumer)
                    .arg("COUNT")
                    .arg(512)
                    .arg("BLOCK")
                    .arg(5000)
                    .arg("STREAMS")
                    .arg(&config.stream)
                    .arg(">")
                    .query_async(&mut conn)
                    .await;
                let ids: Vec<String> = match read {
                    Ok(reply) => reply
                        .into_iter()
                        .flat_map(|r| r.keys)
                        .flat_map(|k| k.ids)
                        .map(|e| e.id)
                        .collect(),
                    Err(_) => break, // the worker falls back to polling
                };
                if ids.is_empty() {
                    continue;
                }
                if ack(&mut conn, &config, &ids).await.is_err() {
                    break;
                }
                // Full means a wake-up is already pending.
                let _ = tx.try_send(());
            }
        });
        Ok(Subscription { rx, task })
    }

    /// The next wake-up; `false` when the bus connection is gone.
    pub async fn notified(&mut self) -> bool {
        self.rx.recv().await.is_some()
    }
}

/// Creates the workers' group (and the stream) unless it exists.
async fn create_group(
    conn: &mut MultiplexedConnection,
    config: &BusConfig,
) -> Result<(), BusError> {
    let created: Result<redis::Value, _> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&config.stream)
        .arg(GROUP)
        .arg("$")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(bus_error(&config.addr, e)),
    }
}

/// Claims entries idle for longer than [`RECLAIM_IDLE_MS`] with any consumer
/// (`XAUTOCLAIM`); returns their ids.
async fn reclaim(
    conn: &mut MultiplexedConnection,
    config: &BusConfig,
    consumer: &str,
) -> Vec<String> {
    let claimed: Result<StreamAutoClaimReply, _> = redis::cmd("XAUTOCLAIM")
        .arg(&config.stream)
        .arg(GROUP)
        .arg(consumer)
        .arg(RECLAIM_IDLE_MS)
        .arg("0-0")
        .arg("COUNT")
        .arg(512)
        .query_async(conn)
        .await;
    claimed
        .map(|r| r.claimed.into_iter().map(|e| e.id).collect())
        .unwrap_or_default()
}

/// Acknowledges `ids` (`XACK`).
async fn ack(
    conn: &mut MultiplexedConnection,
    config: &BusConfig,
    ids: &[String],
) -> Result<(), BusError> {
    let acked: Result<redis::Value, _> = redis::cmd("XACK")
        .arg(&config.stream)
        .arg(GROUP)
        .arg(ids)
        .query_async(conn)
        .await;
    acked.map(|_| ()).map_err(|e| bus_error(&config.addr, e))
}

/// How long a worker waits before retrying a bus it could not join.
pub const RETRY: Duration = Duration::from_secs(5);
