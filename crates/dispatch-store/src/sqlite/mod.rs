//! The SQLite backend: one database file in WAL mode, shared by every CLI
//! command and helper process of a project.
//!
//! The store holds one connection behind a mutex. The trait methods are async
//! but do their SQLite work inline: every call is a few short statements, and a
//! thread hop would cost more than the work. Every write runs in a
//! `BEGIN IMMEDIATE` transaction, so a writer waits for the lock (up to the
//! busy timeout) instead of failing on a read-to-write upgrade; readers never
//! wait, thanks to WAL.

mod batch;
mod blobs;
mod catalog;
mod checkpoint;
mod evals;
mod events;
mod expire;
mod fenced;
mod limits;
mod messages;
mod notifications;
mod parcels;
mod queue;
mod quotas;
mod reliability;
mod retention;
mod runs;
mod schema;
mod service;
mod sessions;
mod tokens;
mod traces;
mod usage;
mod workers;

use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dispatch_core::{NewEvent, RunId, Ts};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};

use crate::{
    Approval, Artifact, ArtifactStore, Attempt, AttemptStore, ClaimRequest, Claimed, Created,
    DeadLetter, Decision, Event, EventStore, HeldWrites, Lease, NewRun, QueueOptions, QueueStore,
    QueueTimes, ReliabilityStore, Run, RunExtras, RunFilter, RunStore, ServiceState, ServiceStore,
    StateWrite, StoreError, StoreResult,
};
use crate::{LogArchive, ParcelStore, RunLogStore, StoredParcel};

/// The schema version (`PRAGMA user_version`) this binary writes.
pub const SCHEMA_VERSION: i64 = schema::CURRENT;

/// How many distinct statements each connection keeps prepared.
const STATEMENT_CACHE: usize = 64;

/// A run store in one SQLite file.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// `path` as shown in errors.
    shown: String,
    /// Checkpoints put off ([`SqliteStore::defer_checkpoints`]): when `n > 0`,
    /// the next `n - 1` writes commit without one, then the next checkpoints
    /// first.
    deferred: AtomicU32,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// WAL pages after which a commit checkpoints (SQLite's default is 1000).
const WAL_AUTOCHECKPOINT: i64 = 32;

impl SqliteStore {
    /// Opens (creating when missing) the database at `path` and brings its
    /// schema up to date. A writer waits up to `busy_timeout` for another
    /// process's lock before giving up with [`StoreError::Locked`].
    ///
    /// Cheap when the schema is current: a few pragmas and one read.
    pub fn open(path: &Path, busy_timeout: Duration) -> StoreResult<SqliteStore> {
        let shown = path.display().to_string();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Unavailable {
                path: shown.clone(),
                message: format!("cannot create directory {}: {e}", parent.display()),
            })?;
        }
        memory_statistics_off();
        let conn = Connection::open(path).map_err(|e| driver_error(&shown, e))?;
        let store = SqliteStore {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            shown,
            deferred: AtomicU32::new(0),
        };
        store.configure(busy_timeout)?;
        Ok(store)
    }

    /// From now on a writer waits up to `busy_timeout` for another
    /// process's lock (a helper, whose writes are its run's record, waits
    /// longer than a command a person is waiting for).
    pub fn set_busy_timeout(&self, busy_timeout: Duration) -> StoreResult<()> {
        let conn = self.lock();
        conn.busy_timeout(busy_timeout)
            .map_err(|e| StoreError::Unavailable {
                path: self.shown.clone(),
                message: e.to_string(),
            })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn configure(&self, busy_timeout: Duration) -> StoreResult<()> {
        let mut conn = self.lock();
        let result = (|| {
            // The busy timeout first, so that switching to WAL waits for the lock too.
            conn.busy_timeout(busy_timeout)?;
            conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            enable_wal(&conn, busy_timeout)?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "foreign_keys", true)?;
            // Statement journals (and sorts) in memory. An `UPDATE …
            // RETURNING` inside a write transaction keeps a statement
            // journal of every page it changes that the transaction had
            // already changed; past 64 KiB SQLite spills it to a temporary
            // file (`etilqs_*`) and then writes every later statement's
            // journal there, page by page, for the life of the connection.
            // A claim or a batch finish of 512 runs did that: 330,000
            // writes of 4 KiB for 20,000 noop runs, against 29,000 to the
            // WAL (see BENCHMARKS.md, "SQLite noop throughput"). They are
            // transient and never durable, so memory loses nothing.
            conn.pragma_update(None, "temp_store", "MEMORY")?;
            // A page cache of up to 16 MiB (SQLite's default is 2 MiB,
            // filled only as pages are read: a short CLI command never
            // grows it). With the indexes the runs table has gained, a
            // worker draining the queue touched more pages than 2 MiB hold
            // and read them again from the OS: 8.7 reads a noop run
            // against 1.7 before (see BENCHMARKS.md).
            conn.pragma_update(None, "cache_size", -16_384)?;
            // Every CLI command and helper is a short-lived process; without
            // this, each one closing the last connection would checkpoint and
            // delete the WAL (two fsyncs), and the next would recreate it.
            conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
            // But the first connection of a process that finds no other one
            // open rebuilds the WAL index by reading the whole WAL: keep it
            // short (checkpoints are cheap; a 4 MB WAL costs every process
            // several milliseconds of checksumming).
            conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT)?;
            schema::migrate(&mut conn)
        })();
        self.finish(result)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock rolled its transaction back on
        // unwinding; the connection itself is still sound.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, committed when `f`
    /// succeeds: the write lock is taken up front (waiting up to the busy
    /// timeout), so the transaction never fails half-way on a lock upgrade.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, Fail>) -> StoreResult<T> {
        self.in_transaction(TransactionBehavior::Immediate, f)
    }

    /// Runs `f` in one read transaction (a consistent snapshot).
    fn read<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, Fail>) -> StoreResult<T> {
        self.in_transaction(TransactionBehavior::Deferred, f)
    }

    fn in_transaction<T>(
        &self,
        behavior: TransactionBehavior,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, Fail>,
    ) -> StoreResult<T> {
        let mut conn = self.lock();
        let writing = matches!(behavior, TransactionBehavior::Immediate);
        if writing {
            self.catch_up(&conn);
        }
        let result = (|| {
            // Dropped without a commit (an error in `f`), the transaction rolls back.
            let tx = conn.transaction_with_behavior(behavior)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })();
        if writing && result.is_ok() {
            self.count_deferred();
        }
        self.finish(result)
    }

    fn finish<T>(&self, result: Result<T, Fail>) -> StoreResult<T> {
        result.map_err(|fail| match fail {
            Fail::Store(e) => e,
            Fail::Sql(e) => driver_error(&self.shown, e),
            Fail::Corrupt(message) => StoreError::Corrupt {
                path: self.shown.clone(),
                message,
            },
            Fail::Encode(message) => StoreError::Unavailable {
                path: self.shown.clone(),
                message,
            },
            Fail::TooNew { found, supported } => StoreError::TooNew {
                path: self.shown.clone(),
                found,
                supported,
            },
        })
    }
}

/// Turns SQLite's memory statistics off, once, before this process's first
/// connection. With them on (the bundled library's default) every one of
/// SQLite's allocations and frees takes a process-wide mutex and asks
/// `malloc` for the block's size; nothing here reads them. A helper's
/// connection is new and compiles every statement it runs, which allocates
/// a lot (issue #38).
fn memory_statistics_off() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_config` takes an option and its `int` argument;
        // it only changes the setting before SQLite initializes, which the
        // first connection does (every one in this crate is opened after
        // this), and otherwise returns `SQLITE_MISUSE` and changes nothing.
        unsafe {
            rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int);
        }
    });
}

/// Puts the database in WAL mode (a no-op read when it already is).
///
/// Converting a new database needs an exclusive lock, and when several
/// connections race to convert the same new file SQLite returns `SQLITE_BUSY`
/// at once instead of calling the busy handler (each holds a shared lock and
/// wants the exclusive one; one must back off). So the conversion is retried
/// with a short backoff until the busy timeout runs out.
fn enable_wal(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
    if mode.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    let deadline = Instant::now() + busy_timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        {
            Ok(_) => return Ok(()),
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(err, _)
            if matches!(err.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Why an operation failed, before the database path is attached.
#[derive(Debug)]
pub(crate) enum Fail {
    /// A domain error, complete as it is.
    Store(StoreError),
    /// The driver failed.
    Sql(rusqlite::Error),
    /// A stored value does not decode.
    Corrupt(String),
    /// A value could not be encoded for storage.
    Encode(String),
    /// The schema is newer than this binary.
    TooNew { found: i64, supported: i64 },
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<rusqlite::types::FromSqlError> for Fail {
    fn from(e: rusqlite::types::FromSqlError) -> Self {
        Fail::Corrupt(format!("unexpected value: {e}"))
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

/// Maps a driver error to the store's own: a lock held past the busy timeout
/// is `Locked`, a value of the wrong type or a damaged file is `Corrupt`, a
/// violated constraint `Refused`, anything else `Unavailable`.
fn driver_error(path: &str, e: rusqlite::Error) -> StoreError {
    let path = path.to_string();
    match &e {
        _ if is_busy(&e) => StoreError::Locked { path },
        rusqlite::Error::SqliteFailure(err, _)
            if matches!(
                err.code,
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase
            ) =>
        {
            StoreError::Damaged {
                path,
                message: e.to_string(),
            }
        }
        rusqlite::Error::SqliteFailure(err, _) if err.code == ErrorCode::ConstraintViolation => {
            StoreError::Refused {
                path,
                message: e.to_string(),
            }
        }
        rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..)
        | rusqlite::Error::Utf8Error(..) => StoreError::Corrupt {
            path,
            message: e.to_string(),
        },
        _ => StoreError::Unavailable {
            path,
            message: e.to_string(),
        },
    }
}

/// JSON text for a value we are about to store.
fn to_json<T: serde::Serialize>(what: &str, value: &T) -> Result<String, Fail> {
    serde_json::to_string(value).map_err(|e| Fail::Encode(format!("cannot encode {what}: {e}")))
}

#[async_trait]
impl RunStore for SqliteStore {
    fn latency_path(&self, on: bool) {
        self.set_latency_path(on);
    }

    async fn create_run(&self, new: &NewRun) -> StoreResult<Run> {
        self.write(|tx| quotas::create(tx, new))
    }

    async fn get_run(&self, id: &RunId) -> StoreResult<Run> {
        self.read(|tx| runs::get(tx, id))
    }

    async fn resolve_prefix(&self, prefix: &str) -> StoreResult<RunId> {
        self.read(|tx| runs::resolve_prefix(tx, prefix))
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        self.read(|tx| runs::list(tx, filter))
    }

    async fn transitions(
        &self,
        id: &RunId,
        expected_version: i64,
        writes: &[StateWrite],
    ) -> StoreResult<Run> {
        self.write(|tx| runs::transition(tx, id, expected_version, writes))
    }

    async fn request_stop(&self, id: &RunId, at: Ts) -> StoreResult<Run> {
        self.write(|tx| runs::request_stop(tx, id, at))
    }

    async fn delete_run(&self, id: &RunId) -> StoreResult<()> {
        self.write(|tx| runs::delete(tx, id))
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append_events(&self, run: &RunId, events: &[NewEvent]) -> StoreResult<()> {
        self.write(|tx| events::append(tx, run, events))
    }

    async fn list_events(&self, run: &RunId, after: i64, limit: usize) -> StoreResult<Vec<Event>> {
        self.read(|tx| events::list(tx, run, after, limit))
    }

    async fn latest_event(&self, run: &RunId, kinds: &[&str]) -> StoreResult<Option<Event>> {
        self.read(|tx| events::latest(tx, run, kinds))
    }
}

#[async_trait]
impl ArtifactStore for SqliteStore {
    async fn add_artifacts(&self, run: &RunId, artifacts: &[Artifact]) -> StoreResult<()> {
        self.write(|tx| events::add_artifacts(tx, run, artifacts))
    }

    async fn list_artifacts(&self, run: &RunId) -> StoreResult<Vec<Artifact>> {
        self.read(|tx| events::list_artifacts(tx, run))
    }

    async fn artifact_in_use(&self, sha256: &str) -> StoreResult<bool> {
        self.read(|tx| events::artifact_in_use(tx, sha256))
    }
}

#[async_trait]
impl AttemptStore for SqliteStore {
    async fn list_attempts(&self, run: &RunId) -> StoreResult<Vec<Attempt>> {
        self.read(|tx| events::list_attempts(tx, run))
    }
}

#[async_trait]
impl QueueStore for SqliteStore {
    async fn enqueue(&self, new: &NewRun, options: &QueueOptions) -> StoreResult<Run> {
        self.write(|tx| queue::enqueue(tx, new, options))
    }

    async fn enqueue_with(
        &self,
        new: &NewRun,
        extras: &RunExtras,
        options: &QueueOptions,
        dedupe: bool,
    ) -> StoreResult<Created> {
        self.write(|tx| queue::enqueue_with(tx, new, extras, options, dedupe))
    }

    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
        self.write(|tx| queue::claim(tx, request))
    }

    async fn create_claimed(
        &self,
        batch: &[(NewRun, RunExtras)],
        briefs: &[(String, Vec<u8>)],
        request: &ClaimRequest,
    ) -> StoreResult<Vec<Claimed>> {
        self.write(|tx| queue::create_claimed(tx, batch, briefs, request))
    }

    async fn renew_leases(
        &self,
        worker: &str,
        held: &[(RunId, i64)],
        expires_at: Ts,
    ) -> StoreResult<Vec<RunId>> {
        self.write(|tx| queue::renew(tx, worker, held, expires_at))
    }

    async fn fenced_transitions(
        &self,
        id: &RunId,
        fence: i64,
        expected_version: i64,
        writes: &[StateWrite],
    ) -> StoreResult<Run> {
        self.write(|tx| queue::fenced_transitions(tx, id, fence, expected_version, writes))
    }

    async fn fenced_transitions_many(
        &self,
        batch: &[HeldWrites],
    ) -> StoreResult<Vec<StoreResult<Run>>> {
        self.write(|tx| queue::fenced_transitions_many(tx, batch))
    }

    async fn fenced_append_events(
        &self,
        id: &RunId,
        fence: i64,
        events: &[NewEvent],
    ) -> StoreResult<()> {
        self.write(|tx| queue::fenced_append(tx, id, fence, events))
    }

    async fn release(&self, id: &RunId, fence: i64, at: Ts, reason: &str) -> StoreResult<Run> {
        self.write(|tx| queue::release(tx, id, fence, at, reason))
    }

    async fn sweep_expired(&self, now: Ts) -> StoreResult<Vec<RunId>> {
        self.write(|tx| queue::sweep(tx, now))
    }

    async fn expire_queued(&self, now: Ts) -> StoreResult<Vec<RunId>> {
        self.write(|tx| expire::expire(tx, now))
    }

    async fn stops_requested(&self, ids: &[RunId]) -> StoreResult<Vec<RunId>> {
        self.read(|tx| queue::stops_requested(tx, ids))
    }

    async fn set_priority(&self, id: &RunId, priority: i64) -> StoreResult<()> {
        self.write(|tx| queue::set_priority(tx, id, priority))
    }

    async fn queue_times(&self, now: Ts) -> StoreResult<QueueTimes> {
        self.read(|tx| queue::queue_times(tx, now))
    }

    async fn lease(&self, id: &RunId) -> StoreResult<Option<Lease>> {
        self.read(|tx| queue::lease(tx, id))
    }
}

#[async_trait]
impl ReliabilityStore for SqliteStore {
    async fn create_run_with(
        &self,
        new: &NewRun,
        extras: &RunExtras,
        dedupe: bool,
    ) -> StoreResult<Created> {
        self.write(|tx| reliability::create_with(tx, new, extras, dedupe))
    }

    async fn create_runs_with(&self, batch: &[(NewRun, RunExtras)]) -> StoreResult<Vec<Created>> {
        self.write(|tx| {
            batch
                .iter()
                .map(|(new, extras)| reliability::create_with(tx, new, extras, false))
                .collect()
        })
    }

    async fn run_extras(&self, id: &RunId) -> StoreResult<RunExtras> {
        self.read(|tx| reliability::extras(tx, id))
    }

    async fn request_approval(&self, approval: &Approval) -> StoreResult<Approval> {
        self.write(|tx| reliability::request_approval(tx, approval))
    }

    async fn decide_approval(
        &self,
        run: &RunId,
        approval_id: &str,
        decision: &Decision,
    ) -> StoreResult<Approval> {
        self.write(|tx| reliability::decide(tx, run, approval_id, decision))
    }

    async fn list_approvals(
        &self,
        run: Option<&RunId>,
        pending_only: bool,
    ) -> StoreResult<Vec<Approval>> {
        self.read(|tx| reliability::list_approvals(tx, run, pending_only))
    }

    async fn add_dead_letter(&self, letter: &DeadLetter) -> StoreResult<()> {
        self.write(|tx| reliability::add_dead_letter(tx, letter))
    }

    async fn list_dead_letters(&self) -> StoreResult<Vec<DeadLetter>> {
        self.read(reliability::list_dead_letters)
    }

    async fn dead_letter(&self, run: &RunId) -> StoreResult<Option<DeadLetter>> {
        self.read(|tx| reliability::dead_letter(tx, run))
    }

    async fn mark_replayed(&self, run: &RunId, by: &RunId) -> StoreResult<()> {
        self.write(|tx| reliability::mark_replayed(tx, run, by))
    }

    async fn decide_approval_moving(
        &self,
        run: &RunId,
        approval_id: &str,
        decision: &Decision,
        expected_version: i64,
        write: &StateWrite,
    ) -> StoreResult<(Approval, Run)> {
        let moving = (expected_version, write);
        self.write(|tx| reliability::decide_moving(tx, run, approval_id, decision, moving))
    }
}

#[async_trait]
impl crate::TraceStore for SqliteStore {
    async fn finished_traces(&self, ids: &[RunId]) -> StoreResult<Vec<crate::RunTrace>> {
        self.read(|tx| traces::finished(tx, ids))
    }
}

#[async_trait]
impl crate::CallbackStore for SqliteStore {
    async fn claim_callbacks(
        &self,
        now: Ts,
        hold_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<crate::DueCallback>> {
        self.write(|tx| queue::claim_callbacks(tx, now, hold_ms, limit))
    }

    async fn finish_callback(&self, run: &RunId, at: Ts) -> StoreResult<()> {
        self.write(|tx| queue::finish_callback(tx, run, at))
    }
}

#[async_trait]
impl ServiceStore for SqliteStore {
    async fn put_service_state(&self, state: &ServiceState) -> StoreResult<()> {
        self.write(|tx| service::put(tx, state))
    }

    async fn get_service_state(&self, run: &RunId) -> StoreResult<Option<ServiceState>> {
        self.read(|tx| service::get(tx, run))
    }

    async fn fire_service(
        &self,
        state: &ServiceState,
        expected: Ts,
        wakes: &[crate::QueuedWake],
    ) -> StoreResult<Option<Vec<Run>>> {
        self.write(|tx| service::fire(tx, state, expected, wakes))
    }

    async fn named_services(&self) -> StoreResult<Vec<ServiceState>> {
        self.read(|tx| service::named(tx, None))
    }

    async fn service_named(&self, name: &str) -> StoreResult<Option<ServiceState>> {
        Ok(self
            .read(|tx| service::named(tx, Some(name)))?
            .into_iter()
            .next())
    }
    async fn claim_delivery(&self, svc: &str, key: &str, exp: Ts, now: Ts) -> StoreResult<bool> {
        self.write(|tx| service::claim_delivery(tx, svc, key, exp, now))
    }

    async fn release_delivery(&self, svc: &str, key: &str) -> StoreResult<()> {
        self.write(|tx| service::release_delivery(tx, svc, key))
    }
}

#[async_trait]
impl crate::MessageStore for SqliteStore {
    async fn put_messages(
        &self,
        workflow: &RunId,
        attempt: u32,
        msgs: &[crate::NewMessage],
    ) -> StoreResult<Vec<crate::Message>> {
        self.write(|tx| messages::put(tx, workflow, attempt, msgs))
    }

    async fn list_messages(&self, workflow: &RunId) -> StoreResult<Vec<crate::Message>> {
        self.read(|tx| messages::list(tx, workflow))
    }
}

#[async_trait]
impl ParcelStore for SqliteStore {
    async fn put_parcel(&self, parcel: &StoredParcel) -> StoreResult<bool> {
        self.write(|tx| parcels::put_parcel(tx, parcel))
    }

    async fn has_parcel(&self, digest: &str) -> StoreResult<bool> {
        self.read(|tx| parcels::has_parcel(tx, digest))
    }

    async fn get_parcel(&self, digest: &str) -> StoreResult<Option<StoredParcel>> {
        self.read(|tx| parcels::get_parcel(tx, digest))
    }

    async fn find_parcels(&self, reference: &str) -> StoreResult<Vec<String>> {
        self.read(|tx| parcels::find_parcels(tx, reference))
    }

    async fn put_brief(&self, sha256: &str, bytes: &[u8]) -> StoreResult<bool> {
        self.write(|tx| parcels::put_brief(tx, sha256, bytes))
    }

    async fn get_brief(&self, sha256: &str) -> StoreResult<Option<Vec<u8>>> {
        self.read(|tx| parcels::get_brief(tx, sha256))
    }

    async fn delete_unreferenced_briefs(&self, sha256s: &[String]) -> StoreResult<u64> {
        self.write(|tx| parcels::delete_unreferenced_briefs(tx, sha256s))
    }
}

#[async_trait]
impl RunLogStore for SqliteStore {
    async fn append_log(&self, run: &RunId, fence: i64, at: u64, bytes: &[u8]) -> StoreResult<()> {
        self.write(|tx| parcels::append_log(tx, run, fence, at, bytes))
    }

    async fn log_length(&self, run: &RunId) -> StoreResult<u64> {
        self.read(|tx| parcels::log_length(tx, run))
    }

    async fn read_log(&self, run: &RunId, offset: u64, max: usize) -> StoreResult<Vec<u8>> {
        self.read(|tx| parcels::read_log(tx, run, offset, max))
    }

    async fn archive_log(&self, run: &RunId, archive: &LogArchive) -> StoreResult<bool> {
        self.write(|tx| parcels::archive_log(tx, run, archive))
    }

    async fn log_archive(&self, run: &RunId) -> StoreResult<Option<LogArchive>> {
        self.read(|tx| parcels::log_archive(tx, run))
    }

    async fn log_archive_in_use(&self, sha256: &str) -> StoreResult<bool> {
        self.read(|tx| parcels::log_archive_in_use(tx, sha256))
    }
}

#[async_trait]
impl crate::EvalStore for SqliteStore {
    async fn put_eval(&self, eval: &crate::EvalRecord) -> StoreResult<bool> {
        self.write(|tx| evals::put(tx, eval))
    }

    async fn evals_with_prefix(
        &self,
        prefix: &str,
        limit: u32,
    ) -> StoreResult<Vec<crate::EvalRecord>> {
        self.read(|tx| evals::with_prefix(tx, prefix, limit))
    }

    async fn latest_eval_of(&self, digest: &str) -> StoreResult<Option<crate::EvalRecord>> {
        self.read(|tx| evals::latest_of(tx, digest))
    }
}

#[async_trait]
impl crate::RetentionStore for SqliteStore {
    async fn expire_runs(
        &self,
        status: dispatch_core::Status,
        before: Ts,
        after: Option<&crate::RetentionCursor>,
        limit: usize,
    ) -> StoreResult<crate::Expired> {
        self.write(|tx| retention::expire_runs(tx, status, before, after, limit))
    }

    async fn expire_events(
        &self,
        before: Ts,
        after: Option<&crate::RetentionCursor>,
        limit: usize,
    ) -> StoreResult<(usize, Option<crate::RetentionCursor>)> {
        self.write(|tx| retention::expire_events(tx, before, after, limit))
    }
}

#[async_trait]
impl crate::NoopStore for SqliteStore {
    async fn succeed_at_once(&self, held: &[(RunId, i64)], at: Ts) -> StoreResult<Vec<RunId>> {
        self.write(|tx| queue::succeed_at_once(tx, held, at))
    }
}
