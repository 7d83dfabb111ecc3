//! When this connection checkpoints the WAL (see [`SqliteStore::defer_checkpoints`]):
//! a checkpoint's fsyncs take milliseconds, so the writes on a latency path
//! (a run's start, a workflow's hop) leave them for later.

use std::sync::atomic::Ordering;

use rusqlite::Connection;

use super::{SqliteStore, WAL_AUTOCHECKPOINT};

/// WAL pages after which a commit checkpoints while on a latency path
/// (SQLite's default): rarely, for a process that writes on one.
const LATENCY_PATH_AUTOCHECKPOINT: i64 = 1000;

impl SqliteStore {
    /// The next `writes` write transactions of this connection commit
    /// without checkpointing the WAL: for the writes on the path from
    /// `dispatch run` to its agent starting, which a checkpoint's fsyncs
    /// (a millisecond or more) would delay. The first write after them
    /// checkpoints the whole WAL *before* it begins, and so starts the WAL
    /// over from its first frame (SQLite restarts a fully checkpointed WAL
    /// at the next write): the WAL stays a few frames long, and a process
    /// that opens the database alone reads only those.
    ///
    /// With `writes` 0, only that: the next write checkpoints first.
    pub fn defer_checkpoints(&self, writes: u32) {
        let conn = self.lock();
        if conn.pragma_update(None, "wal_autocheckpoint", 0).is_ok() {
            self.deferred
                .store(writes.saturating_add(1), Ordering::Relaxed);
        }
    }

    /// Counts a committed write against [`Self::defer_checkpoints`].
    pub(super) fn count_deferred(&self) {
        let left = self.deferred.load(Ordering::Relaxed);
        if left > 1 {
            self.deferred.store(left - 1, Ordering::Relaxed);
        }
    }

    /// The checkpoint [`Self::defer_checkpoints`] put off, before a write
    /// once the deferred ones are done; automatic checkpoints resume. Best
    /// effort: a busy WAL is left to them.
    pub(super) fn catch_up(&self, conn: &Connection) {
        if self.deferred.load(Ordering::Relaxed) == 1 {
            self.deferred.store(0, Ordering::Relaxed);
            let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            let _ = conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT);
        }
    }

    /// Checkpoints what [`Self::defer_checkpoints`] put off now, at once
    /// (best effort), and resumes automatic checkpoints: for a process
    /// whose latency path is behind it (a workflow member's helper once its
    /// coordinator knows the run ended).
    pub fn checkpoint_now(&self) {
        let conn = self.lock();
        if self.deferred.swap(0, Ordering::Relaxed) > 0 {
            let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            let _ = conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT);
        }
    }

    /// While `on`, this connection's commits checkpoint only a long WAL
    /// (a workflow's coordinator: its members' helpers checkpoint when
    /// their runs end); off, as usual again, with a checkpoint now.
    pub(super) fn set_latency_path(&self, on: bool) {
        let conn = self.lock();
        let pages = match on {
            true => LATENCY_PATH_AUTOCHECKPOINT,
            false => {
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                WAL_AUTOCHECKPOINT
            }
        };
        let _ = conn.pragma_update(None, "wal_autocheckpoint", pages);
    }
}
