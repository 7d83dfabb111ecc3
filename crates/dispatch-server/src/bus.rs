//! Bus mode: Redis Streams as the dispatch channel. The server appends each
//! new run's id to a stream (`XADD`); workers read it through one consumer
//! group (`XREADGROUP`), so each new run wakes one worker instead of all of
//! them, which then claims from the database queue as usual (the queue stays
//! the source of truth: a lost message only delays a run until the next poll).
//!
//! A minimal RESP client over TCP (`redis://host:port`, no auth or TLS).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
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

/// A RESP reply.
#[derive(Clone, Debug, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

struct Conn {
    addr: String,
    reader: BufReader<TcpStream>,
}

impl Conn {
    async fn open(addr: &str) -> Result<Conn, BusError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| BusError::Io {
                addr: addr.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            addr: addr.to_string(),
            reader: BufReader::new(stream),
        })
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> BusError + '_ {
        move |source| BusError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    async fn call(&mut self, args: &[&str]) -> Result<Reply, BusError> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let addr = self.addr.clone();
        self.reader
            .get_mut()
            .write_all(&out)
            .await
            .map_err(|source| BusError::Io { addr, source })?;
        match self.read().await? {
            Reply::Error(e) => Err(BusError::Redis(e)),
            reply => Ok(reply),
        }
    }

    async fn read(&mut self) -> Result<Reply, BusError> {
        // Iterative over nesting depth via boxing: replies here are shallow.
        Box::pin(self.read_inner()).await
    }

    async fn read_inner(&mut self) -> Result<Reply, BusError> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).await.map_err(self.io())?;
        if n == 0 {
            return Err(BusError::Io {
                addr: self.addr.clone(),
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        let line = line.trim_end();
        let (kind, rest) = line.split_at(1.min(line.len()));
        let number = || {
            rest.parse::<i64>()
                .map_err(|_| BusError::Redis(format!("bad reply `{line}`")))
        };
        Ok(match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(number()?),
            "$" => match number()? {
                n if n < 0 => Reply::Bulk(None),
                n => {
                    let mut buf = vec![0; usize::try_from(n).unwrap_or(0) + 2];
                    self.reader.read_exact(&mut buf).await.map_err(self.io())?;
                    buf.truncate(buf.len() - 2);
                    Reply::Bulk(Some(buf))
                }
            },
            "*" => match number()? {
                n if n < 0 => Reply::Array(None),
                n => {
                    let mut items = Vec::new();
                    for _ in 0..n {
                        items.push(self.read().await?);
                    }
                    Reply::Array(Some(items))
                }
            },
            _ => return Err(BusError::Redis(format!("bad reply `{line}`"))),
        })
    }
}

/// The server's side: announces new runs.
pub struct Publisher {
    config: BusConfig,
    conn: Mutex<Option<Conn>>,
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
                let mut fresh = Conn::open(&self.config.addr).await?;
                // The group exists before the first message, so workers that
                // join later still get everything announced since.
                create_group(&mut fresh, &self.config.stream).await?;
                *conn = Some(fresh);
            }
            if let Some(c) = conn.as_mut() {
                match c
                    .call(&["XADD", &self.config.stream, "*", "run", run])
                    .await
                {
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
        let mut conn = Conn::open(&config.addr).await?;
        create_group(&mut conn, &config.stream).await?;
        let (tx, rx) = mpsc::channel(1);
        let (stream, consumer) = (config.stream.clone(), consumer.to_string());
        let task = tokio::spawn(async move {
            loop {
                let reply = conn
                    .call(&[
                        "XREADGROUP",
                        "GROUP",
                        GROUP,
                        &consumer,
                        "COUNT",
                        "512",
                        "BLOCK",
                        "5000",
                        "STREAMS",
                        &stream,
                        ">",
                    ])
                    .await;
                let ids = match reply {
                    Ok(reply) => message_ids(&reply),
                    Err(_) => break, // the worker falls back to polling
                };
                if ids.is_empty() {
                    continue;
                }
                let mut ack = vec!["XACK", stream.as_str(), GROUP];
                ack.extend(ids.iter().map(String::as_str));
                if conn.call(&ack).await.is_err() {
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
async fn create_group(conn: &mut Conn, stream: &str) -> Result<(), BusError> {
    match conn
        .call(&["XGROUP", "CREATE", stream, GROUP, "$", "MKSTREAM"])
        .await
    {
        Ok(_) => Ok(()),
        Err(BusError::Redis(e)) if e.starts_with("BUSYGROUP") => Ok(()),
        Err(e) => Err(e),
    }
}

/// The entry ids in an `XREADGROUP` reply.
fn message_ids(reply: &Reply) -> Vec<String> {
    let mut ids = Vec::new();
    if let Reply::Array(Some(streams)) = reply {
        for stream in streams {
            if let Reply::Array(Some(parts)) = stream
                && let Some(Reply::Array(Some(entries))) = parts.get(1)
            {
                for entry in entries {
                    if let Reply::Array(Some(fields)) = entry
                        && let Some(Reply::Bulk(Some(id))) = fields.first()
                    {
                        ids.push(String::from_utf8_lossy(id).to_string());
                    }
                }
            }
        }
    }
    ids
}

/// How long a worker waits before retrying a bus it could not join.
pub const RETRY: Duration = Duration::from_secs(5);
