//! Log shipping: while a worker holds a run, what the run's local log file
//! gains is appended to the run's log in the store, so the API can serve it
//! from any machine.
//!
//! The shipper starts at the file's current end (a run this worker held
//! before shipped its earlier part already) and at the stored log's current
//! end (earlier attempts, maybe from other workers). It ships in batches:
//! when 64 KiB are waiting or 200 ms after the last batch, before every
//! state write of the run (so a reader that sees the run finished finds its
//! whole log stored), and once more when the run leaves this worker. The
//! file is looked at every 50 ms while it grows, every 200 ms while it is
//! quiet, and every 2 s while a native agent's is ([`QUIET_LOOK_EVERY`]).
//!
//! A batch not acknowledged is sent again as it was, at the same offset, so
//! a retry of an append that did commit writes nothing twice. When the
//! stored log is not where the shipper thought (a wrong guess of its
//! length), shipping goes on at its real end.
//!
//! Every append carries the holder's fencing token. Once the store refuses
//! one (the run was taken over: another worker claimed it, or it was swept
//! back to the queue), the shipper says so once and ships nothing more: a
//! worker cut off from the database while its agent printed never appends
//! that output after what the next holder shipped.

use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dispatch_core::RunId;
use dispatch_runtime::Layout;
use dispatch_store::{HeldLog, StoreError, StoreResult};
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

use crate::SharedStore;
use crate::writer::Writer;

/// The most bytes in one append; also the amount that ships at once.
pub const BATCH_BYTES: u64 = 64 * 1024;
/// The longest a byte waits in the file before it ships.
pub const BATCH_DELAY: Duration = Duration::from_millis(200);
/// How often the file is looked at while it grows.
const LOOK_EVERY: Duration = Duration::from_millis(50);
/// How often it is looked at while nothing waits to ship: a byte written
/// then still ships within [`BATCH_DELAY`] of the next look, and a worker
/// holding thousands of quiet runs does not wake for each every 50 ms
/// (issue #38).
const IDLE_LOOK_EVERY: Duration = BATCH_DELAY;
/// How often the log of a run whose only writer is this process (a native
/// agent's loop) is looked at while nothing waits to ship. Its streamed
/// text reaches every server live as it comes (`crate::deltas`), and the
/// log ships before each of the run's state writes and at its end; looking
/// every [`IDLE_LOOK_EVERY`] cost each waiting run five wake-ups and file
/// lookups a second, ~3 % of a worker's CPU at 10,000 runs (issue #38).
pub const QUIET_LOOK_EVERY: Duration = Duration::from_secs(2);
/// How many times the last batch is tried when the run leaves the worker.
const LAST_TRIES: u32 = 5;

/// Ships one run's log file into the store.
pub struct LogShipper {
    store: SharedStore,
    run: RunId,
    /// The holder's fencing token, carried by every append.
    fence: i64,
    /// The store refused an append for `fence`: nothing ships any more.
    refused: AtomicBool,
    path: PathBuf,
    /// How far the file has shipped (a copy of `cursor.file`, read without the lock).
    shipped: AtomicU64,
    cursor: Mutex<Cursor>,
    /// Appends with other runs' (a worker's), when set.
    writer: Option<Writer>,
    /// How often the file is looked at while nothing waits to ship.
    idle_look: Duration,
}

struct Cursor {
    /// The first byte of the file not shipped.
    file: u64,
    /// Where the next batch goes in the stored log; `None` until read.
    stored: Option<u64>,
    /// A batch sent but not acknowledged: sent again as it is.
    unacked: Option<Vec<u8>>,
    last: Instant,
}

impl LogShipper {
    /// A shipper for `run`'s log in `layout`, for the holder of fencing
    /// token `fence`, starting at the file's current end.
    pub fn new(store: SharedStore, layout: &Layout, run: &RunId, fence: i64) -> Self {
        let path = layout.log(run);
        let start = std::fs::metadata(&path).map_or(0, |m| m.len());
        LogShipper {
            store,
            run: run.clone(),
            fence,
            refused: AtomicBool::new(false),
            path,
            shipped: AtomicU64::new(start),
            cursor: Mutex::new(Cursor {
                file: start,
                stored: None,
                unacked: None,
                last: Instant::now(),
            }),
            writer: None,
            idle_look: IDLE_LOOK_EVERY,
        }
    }

    /// While nothing waits to ship, looks at the file every `every` instead
    /// of every [`BATCH_DELAY`] (see [`QUIET_LOOK_EVERY`]): for a log only
    /// this process writes, whose live text goes out another way.
    pub fn quiet_looks(mut self, every: Duration) -> Self {
        self.idle_look = every.max(IDLE_LOOK_EVERY);
        self
    }

    /// Appends go through `writer`, with other runs' appends at once.
    pub(crate) fn with_writer(mut self, writer: Writer) -> Self {
        self.writer = Some(writer);
        self
    }

    /// Starts shipping at `length` in the stored log without asking the
    /// store first (a run nobody held before has none stored). A wrong
    /// guess costs one refused append: the store answers its real length.
    pub fn stored_from(mut self, length: u64) -> Self {
        self.cursor.get_mut().stored = Some(length);
        self
    }

    /// Ships everything the file holds now. On an error, what was not
    /// acknowledged ships at the next call; but once an append was refused
    /// as stale (`Fenced`), every call answers that at once.
    pub async fn flush(&self) -> StoreResult<()> {
        let mut c = self.cursor.lock().await;
        if self.refused.load(Ordering::Relaxed) {
            return Err(self.fenced());
        }
        c.last = Instant::now();
        // Each round ships one batch; another writer appending in between
        // costs a round, and cannot keep us here forever.
        for _ in 0..1000 {
            let batch = match c.unacked.take() {
                Some(batch) => batch,
                None => read_from(&self.path, c.file, BATCH_BYTES),
            };
            if batch.is_empty() {
                return Ok(());
            }
            let at = match c.stored {
                Some(at) => at,
                None => {
                    c.unacked = Some(batch);
                    let at = self.store.log_length(&self.run).await?;
                    c.stored = Some(at);
                    continue;
                }
            };
            let appended = match &self.writer {
                Some(writer) => {
                    let chunk = HeldLog {
                        id: self.run.clone(),
                        fence: self.fence,
                        offset: at,
                        bytes: batch.clone(),
                    };
                    writer.append_log(chunk).await
                }
                None => {
                    self.store
                        .append_log(&self.run, self.fence, at, &batch)
                        .await
                }
            };
            match appended {
                Ok(()) => {
                    c.file += batch.len() as u64;
                    c.stored = Some(at + batch.len() as u64);
                    self.shipped.store(c.file, Ordering::Relaxed);
                }
                Err(StoreError::LogMoved { length, .. }) => {
                    c.stored = Some(length);
                    c.unacked = Some(batch);
                }
                Err(e @ StoreError::Fenced { .. }) => {
                    // Said once: every later call answers at once.
                    self.refused.store(true, Ordering::Relaxed);
                    let left = std::fs::metadata(&self.path)
                        .map_or(0, |m| m.len())
                        .saturating_sub(c.file);
                    tracing::warn!(
                        "run {}: the store refused this worker's log (fencing token {} is \
                         stale: the run was taken over); its last {left} bytes stay in {} \
                         and nothing more ships",
                        self.run,
                        self.fence,
                        self.path.display()
                    );
                    return Err(e);
                }
                Err(e) => {
                    c.unacked = Some(batch);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Whether the store refused this shipper's token (see [`Self::flush`]).
    pub fn refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    fn fenced(&self) -> StoreError {
        StoreError::Fenced {
            id: self.run.clone(),
            fence: self.fence,
        }
    }

    /// Runs `work` to its end while shipping in batches, then ships the
    /// rest (trying a few times). Shipping never fails the work: errors are
    /// reported on stderr with `who`.
    pub async fn ship_while<F: Future>(&self, who: &str, work: F) -> F::Output {
        let done = Notify::new();
        let work = async {
            let out = work.await;
            done.notify_one();
            out
        };
        let ship = async {
            let mut pause = LOOK_EVERY;
            let mut failing = false;
            loop {
                tokio::select! {
                    () = done.notified() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                let (due, waiting) = self.due().await;
                pause = if waiting { LOOK_EVERY } else { self.idle_look };
                if !due {
                    continue;
                }
                match self.flush().await {
                    Ok(()) => failing = false,
                    // Said once by `flush`; the work goes on without shipping.
                    Err(StoreError::Fenced { .. }) => {
                        done.notified().await;
                        return;
                    }
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!("{who}: cannot ship the log of run {}: {e}", self.run);
                    }
                    Err(_) => {}
                }
            }
        };
        let (out, ()) = tokio::join!(work, ship);
        let mut pause = Duration::from_millis(100);
        for left in (0..LAST_TRIES).rev() {
            match self.flush().await {
                Ok(()) | Err(StoreError::Fenced { .. }) => break,
                Err(e) if left == 0 => {
                    tracing::warn!(
                        "{who}: the end of the log of run {} was not shipped: {e}",
                        self.run
                    );
                }
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
        out
    }

    /// The stored log's length as of this shipper's last append (`None`
    /// when it appended nothing).
    pub async fn stored_length(&self) -> Option<u64> {
        self.cursor.lock().await.stored
    }

    /// Whether a batch is due (a full one waits, or any bytes wait and the
    /// last batch is old enough), and whether any bytes wait.
    async fn due(&self) -> (bool, bool) {
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        let waiting = size.saturating_sub(self.shipped.load(Ordering::Relaxed));
        if waiting >= BATCH_BYTES {
            return (true, true);
        }
        if waiting == 0 {
            return (false, false);
        }
        (self.cursor.lock().await.last.elapsed() >= BATCH_DELAY, true)
    }
}

/// At most `max` bytes of the file from `offset` (nothing when it does not
/// exist).
fn read_from(path: &PathBuf, offset: u64, max: u64) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path)
        && f.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = f.take(max).read_to_end(&mut out);
    }
    out
}
