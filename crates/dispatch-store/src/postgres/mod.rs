//! The PostgreSQL backend: the same tables and promises as SQLite, for a
//! cluster of servers and workers sharing one database.
//!
//! A pool of connections; every write is one transaction (a one-statement
//! read runs on its own, see `macros.rs`). A write to a run takes its row
//! lock first (`UPDATE`, or `SELECT … FOR UPDATE`), so a run's events are
//! numbered in commit order: paging by `seq` never skips a later commit.

#[macro_use]
mod macros;
mod appends;
mod batch;
mod blobs;
mod catalog;
mod evals;
mod events;
mod expire;
mod fenced;
mod limits;
mod listen;
mod messages;
mod notifications;
mod one_statement;
mod parcels;
pub(crate) mod queue;
mod quotas;
mod reliability;
mod retention;
mod runs;
mod schema;
mod service;
mod sessions;
mod tokens;
mod traces;
mod transitions;
mod usage;
mod workers;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use dispatch_core::{NewEvent, RunId, Ts};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::{Approval, Created, DeadLetter, Decision, ReliabilityStore, RunExtras};
use crate::{
    Artifact, ArtifactStore, Attempt, AttemptStore, ClaimRequest, Claimed, Event, EventStore,
    HeldWrites, Lease, NewRun, QueueOptions, QueueStore, QueueTimes, Run, RunFilter, RunStore,
    StateWrite, StoreError, StoreResult,
};
use crate::{ParcelStore, StoredParcel};

pub use listen::{DELTA_CHANNEL, DeltaListener, MAX_NOTIFY_BYTES, QueueListener};

/// The channel a `NOTIFY` is sent on whenever a run becomes claimable.
pub const QUEUE_CHANNEL: &str = "dispatch_queue";
/// The channel a `NOTIFY` is sent on whenever a run with a pending
/// completion callback finishes.
pub const CALLBACK_CHANNEL: &str = "dispatch_callbacks";

/// A run store in a PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    /// The database as shown in errors (no password).
    shown: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.shown)
            .finish_non_exhaustive()
    }
}

/// How long a transaction may sit idle before the database ends it.
const IDLE_IN_TRANSACTION_MS: u64 = 10_000;

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`)
    /// with at most `max_connections`, and brings its schema up to date.
    /// An unreachable server is [`StoreError::Unavailable`].
    pub async fn connect(url: &str, max_connections: usize) -> StoreResult<PgStore> {
        Self::connect_as(url, max_connections, None).await
    }

    /// [`PgStore::connect`], its connections named `name` in the server's
    /// `pg_stat_activity` (`application_name`) unless the URL names them.
    pub async fn connect_as(
        url: &str,
        max_connections: usize,
        name: Option<&str>,
    ) -> StoreResult<PgStore> {
        let mut config =
            tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Unavailable {
                path: redact(url),
                message: format!("not a PostgreSQL URL: {e}"),
            })?;
        if let Some(name) = name
            && config.get_application_name().is_none()
        {
            config.application_name(name);
        }
        // A worker cut off mid-transaction would hold its row locks (and
        // block the run's takeover) until TCP noticed, which a proxy keeping
        // the socket open never does: unless the URL's options say otherwise.
        let options = config.get_options().unwrap_or_default().to_string();
        if !options.contains("idle_in_transaction_session_timeout") {
            let timeout =
                format!("-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}");
            config.options(format!("{options} {timeout}").trim());
        }
        let shown = shown(&config);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(5)))
            .wait_timeout(Some(Duration::from_secs(30)))
            .build()
            .map_err(|e| StoreError::Unavailable {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        let store = PgStore {
            pool,
            config,
            shown,
        };
        let result = async {
            let mut client = store.client().await?;
            schema::migrate(&mut client).await
        }
        .await;
        store.finish(result)?;
        Ok(store)
    }

    /// Saves one run's writes; its answer is the call's (nothing is saved
    /// when it is an error).
    async fn save_one(&self, item: transitions::Item<'_>) -> StoreResult<Run> {
        let result: Result<Run, Fail> = async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            if item.fence.is_none()
                && item.writes.first().map(|w| w.state.status())
                    == Some(dispatch_core::Status::Starting)
                && runs::get(&tx, item.id).await?.status() == dispatch_core::Status::Queued
            {
                // A claim: only when the run's concurrency key has a slot for it.
                let at = item.writes.first().map_or(0, |w| w.event.at);
                limits::check_admitted(&tx, item.id, at).await?;
            }
            let answer = transitions::save(&tx, std::slice::from_ref(&item))
                .await?
                .pop()
                .unwrap_or_else(|| Err(StoreError::NotFound(item.id.to_string())));
            let run = answer.map_err(Fail::Store)?;
            tx.commit().await?;
            Ok(run)
        }
        .await;
        self.finish(result)
    }

    /// The database as shown in messages (without a password).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The connection settings, for a dedicated connection (`LISTEN`).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, Fail> {
        self.pool
            .get()
            .await
            .map_err(|e| Fail::Connect(pool_error(&e)))
    }

    fn finish<T>(&self, result: Result<T, Fail>) -> StoreResult<T> {
        result.map_err(|fail| self.error(fail))
    }

    pub(crate) fn error(&self, fail: Fail) -> StoreError {
        let path = self.shown.clone();
        match fail {
            Fail::Store(e) => e,
            Fail::Pg(e) => driver_error(path, e),
            Fail::Connect(message) | Fail::Encode(message) => {
                StoreError::Unavailable { path, message }
            }
            Fail::Corrupt(message) => StoreError::Corrupt { path, message },
            Fail::TooNew { found, supported } => StoreError::TooNew {
                path,
                found,
                supported,
            },
        }
    }
}

/// What went wrong getting a connection, in the server's words when it
/// said something (`database "x" does not exist`, a refused password), else
/// the connection's own error (refused, timed out).
fn pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(pg) => match pg.as_db_error() {
            Some(db) => format!("{} (hint: check --database-url)", db.message()),
            None => {
                let mut message = pg.to_string();
                let mut source = std::error::Error::source(pg);
                while let Some(cause) = source {
                    message = format!("{message}: {cause}");
                    source = cause.source();
                }
                message
            }
        },
        other => other.to_string(),
    }
}

/// `user@host:port/db` from the settings.
fn shown(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        config.get_user().unwrap_or(""),
        config.get_dbname().unwrap_or("")
    )
}

/// A URL we could not parse, without anything that looks like a password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Why an operation failed, before the database name is attached.
#[derive(Debug)]
pub(crate) enum Fail {
    Store(StoreError),
    Pg(tokio_postgres::Error),
    /// No connection could be had from the pool.
    Connect(String),
    Corrupt(String),
    Encode(String),
    TooNew {
        found: i64,
        supported: i64,
    },
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Pg(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

/// Lock waits and serialization failures are `Locked` (retry); damaged data
/// is `Corrupt`; a violated constraint (class 23) is `Refused`; a lost
/// connection and everything else `Unavailable`.
fn driver_error(path: String, e: tokio_postgres::Error) -> StoreError {
    let code = e.code();
    if code == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
        || code == Some(&SqlState::T_R_DEADLOCK_DETECTED)
        || code == Some(&SqlState::LOCK_NOT_AVAILABLE)
    {
        return StoreError::Locked { path };
    }
    if code == Some(&SqlState::DATA_CORRUPTED) || code == Some(&SqlState::INDEX_CORRUPTED) {
        return StoreError::Corrupt {
            path,
            message: e.to_string(),
        };
    }
    let message = match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    };
    if code.is_some_and(|c| c.code().starts_with("23")) {
        return StoreError::Refused { path, message };
    }
    StoreError::Unavailable { path, message }
}

/// JSON text for a value we are about to store.
fn to_json<T: serde::Serialize>(what: &str, value: &T) -> Result<String, Fail> {
    serde_json::to_string(value).map_err(|e| Fail::Encode(format!("cannot encode {what}: {e}")))
}

#[async_trait]
impl RunStore for PgStore {
    async fn create_run(&self, new: &NewRun) -> StoreResult<Run> {
        in_tx!(self, |tx| quotas::create(&tx, new))
    }

    async fn get_run(&self, id: &RunId) -> StoreResult<Run> {
        read!(self, |client| runs::get(&client, id))
    }

    async fn resolve_prefix(&self, prefix: &str) -> StoreResult<RunId> {
        in_tx!(self, |tx| runs::resolve_prefix(&tx, prefix))
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        read!(self, |client| runs::list(&client, filter))
    }

    async fn transitions(
        &self,
        id: &RunId,
        expected_version: i64,
        writes: &[StateWrite],
    ) -> StoreResult<Run> {
        let item = transitions::Item {
            id,
            fence: None,
            expected: expected_version,
            writes,
        };
        self.save_one(item).await
    }

    async fn request_stop(&self, id: &RunId, at: Ts) -> StoreResult<Run> {
        in_tx!(self, |tx| runs::request_stop(&tx, id, at))
    }

    async fn delete_run(&self, id: &RunId) -> StoreResult<()> {
        in_tx!(self, |tx| runs::delete(&tx, id))
    }
}

#[async_trait]
impl EventStore for PgStore {
    async fn append_events(&self, run: &RunId, events: &[NewEvent]) -> StoreResult<()> {
        in_tx!(self, |tx| events::append(&tx, run, events))
    }

    async fn list_events(&self, run: &RunId, after: i64, limit: usize) -> StoreResult<Vec<Event>> {
        read!(self, |client| events::list(&client, run, after, limit))
    }

    async fn latest_event(&self, run: &RunId, kinds: &[&str]) -> StoreResult<Option<Event>> {
        read!(self, |client| events::latest(&client, run, kinds))
    }
}

#[async_trait]
impl ArtifactStore for PgStore {
    async fn add_artifacts(&self, run: &RunId, artifacts: &[Artifact]) -> StoreResult<()> {
        in_tx!(self, |tx| events::add_artifacts(&tx, run, artifacts))
    }

    async fn list_artifacts(&self, run: &RunId) -> StoreResult<Vec<Artifact>> {
        in_tx!(self, |tx| events::list_artifacts(&tx, run))
    }

    async fn artifact_in_use(&self, sha256: &str) -> StoreResult<bool> {
        read!(self, |client| events::artifact_in_use(&client, sha256))
    }
}

#[async_trait]
impl AttemptStore for PgStore {
    async fn list_attempts(&self, run: &RunId) -> StoreResult<Vec<Attempt>> {
        in_tx!(self, |tx| events::list_attempts(&tx, run))
    }
}

#[async_trait]
impl QueueStore for PgStore {
    async fn enqueue(&self, new: &NewRun, options: &QueueOptions) -> StoreResult<Run> {
        in_tx!(self, |tx| queue::enqueue(&tx, new, options))
    }

    async fn enqueue_with(
        &self,
        new: &NewRun,
        extras: &RunExtras,
        options: &QueueOptions,
        dedupe: bool,
    ) -> StoreResult<Created> {
        in_tx!(self, |tx| queue::enqueue_with(
            &tx, new, extras, options, dedupe
        ))
    }

    async fn claim(&self, request: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
        in_tx!(self, |tx| queue::claim(&tx, request))
    }

    async fn create_claimed(
        &self,
        batch: &[(NewRun, RunExtras)],
        briefs: &[(String, Vec<u8>)],
        request: &ClaimRequest,
    ) -> StoreResult<Vec<Claimed>> {
        in_tx!(self, |tx| queue::create_claimed(
            &tx, batch, briefs, request
        ))
    }

    async fn renew_leases(
        &self,
        worker: &str,
        held: &[(RunId, i64)],
        expires_at: Ts,
    ) -> StoreResult<Vec<RunId>> {
        // Not one statement over every run held: it locks the rows one by
        // one and keeps them until it commits, so when it waits for one run
        // whose events are being appended, every run it passed waits too (a
        // renewal of 1,000 runs held 0.5 s and the appends behind it 2 ms
        // each, issue #38). First the rows nobody has locked, committed at
        // once; then the few that were busy, waiting for them.
        let mut renewed = in_tx!(self, |tx| queue::renew(
            &tx, worker, held, expires_at, false
        ))?;
        if renewed.len() < held.len() {
            let done: std::collections::HashSet<&RunId> = renewed.iter().collect();
            let rest: Vec<(RunId, i64)> = held
                .iter()
                .filter(|(id, _)| !done.contains(id))
                .cloned()
                .collect();
            let more = in_tx!(self, |tx| queue::renew(
                &tx, worker, &rest, expires_at, true
            ))?;
            renewed.extend(more);
        }
        Ok(renewed)
    }

    async fn fenced_transitions(
        &self,
        id: &RunId,
        fence: i64,
        expected_version: i64,
        writes: &[StateWrite],
    ) -> StoreResult<Run> {
        let item = transitions::Item {
            id,
            fence: Some(fence),
            expected: expected_version,
            writes,
        };
        self.save_one(item).await
    }

    async fn fenced_transitions_many(
        &self,
        batch: &[HeldWrites],
    ) -> StoreResult<Vec<StoreResult<Run>>> {
        let items: Vec<transitions::Item<'_>> = batch
            .iter()
            .map(|h| transitions::Item {
                id: &h.id,
                fence: Some(h.fence),
                expected: h.expected_version,
                writes: &h.writes,
            })
            .collect();
        in_tx!(self, |tx| transitions::save(&tx, &items))
    }

    async fn fenced_append_events(
        &self,
        id: &RunId,
        fence: i64,
        events: &[NewEvent],
    ) -> StoreResult<()> {
        if events::usage_of(events).is_none() {
            return read!(self, |client| one_statement::fenced_append(
                &client, id, fence, events
            ));
        }
        if read!(self, |client| one_statement::fenced_append_usage(
            &client, id, fence, events
        ))? {
            return Ok(());
        }
        in_tx!(self, |tx| queue::fenced_append(&tx, id, fence, events))
    }

    async fn fenced_append_events_many(
        &self,
        batch: &[crate::HeldEvents],
    ) -> StoreResult<Vec<StoreResult<()>>> {
        self.append_events_many(batch).await
    }

    async fn release(&self, id: &RunId, fence: i64, at: Ts, reason: &str) -> StoreResult<Run> {
        in_tx!(self, |tx| async {
            queue::release(&tx, id, fence, at, reason).await?;
            runs::get(&tx, id).await
        })
    }

    async fn sweep_expired(&self, now: Ts) -> StoreResult<Vec<RunId>> {
        in_tx!(self, |tx| queue::sweep(&tx, now))
    }

    async fn expire_queued(&self, now: Ts) -> StoreResult<Vec<RunId>> {
        in_tx!(self, |tx| expire::expire(&tx, now))
    }

    async fn stops_requested(&self, ids: &[RunId]) -> StoreResult<Vec<RunId>> {
        // One statement: no transaction (one round trip, not three).
        read!(self, |client| queue::stops_requested(&client, ids))
    }

    async fn set_priority(&self, id: &RunId, priority: i64) -> StoreResult<()> {
        in_tx!(self, |tx| queue::set_priority(&tx, id, priority))
    }

    async fn queue_times(&self, now: Ts) -> StoreResult<QueueTimes> {
        in_tx!(self, |tx| queue::queue_times(&tx, now))
    }

    async fn lease(&self, id: &RunId) -> StoreResult<Option<Lease>> {
        in_tx!(self, |tx| queue::lease(&tx, id))
    }
}

#[async_trait]
impl crate::MessageStore for PgStore {
    async fn put_messages(
        &self,
        workflow: &RunId,
        attempt: u32,
        msgs: &[crate::NewMessage],
    ) -> StoreResult<Vec<crate::Message>> {
        in_tx!(self, |tx| messages::put(&tx, workflow, attempt, msgs))
    }

    async fn list_messages(&self, workflow: &RunId) -> StoreResult<Vec<crate::Message>> {
        read!(self, |client| messages::list(&client, workflow))
    }
}

#[async_trait]
impl crate::CallbackStore for PgStore {
    async fn claim_callbacks(
        &self,
        now: Ts,
        hold_ms: i64,
        limit: usize,
    ) -> StoreResult<Vec<crate::DueCallback>> {
        in_tx!(self, |tx| queue::claim_callbacks(&tx, now, hold_ms, limit))
    }

    async fn finish_callback(&self, run: &RunId, at: Ts) -> StoreResult<()> {
        in_tx!(self, |tx| queue::finish_callback(&tx, run, at))
    }
}

#[async_trait]
impl ReliabilityStore for PgStore {
    async fn create_run_with(
        &self,
        new: &NewRun,
        extras: &RunExtras,
        dedupe: bool,
    ) -> StoreResult<Created> {
        in_tx!(self, |tx| reliability::create_with(
            &tx, new, extras, dedupe
        ))
    }

    async fn create_runs_with(&self, batch: &[(NewRun, RunExtras)]) -> StoreResult<Vec<Created>> {
        in_tx!(self, |tx| async {
            let mut created = Vec::with_capacity(batch.len());
            for (new, extras) in batch {
                created.push(reliability::create_with(&tx, new, extras, false).await?);
            }
            Ok::<_, Fail>(created)
        })
    }

    async fn run_extras(&self, id: &RunId) -> StoreResult<RunExtras> {
        in_tx!(self, |tx| reliability::extras(&tx, id))
    }

    async fn request_approval(&self, approval: &Approval) -> StoreResult<Approval> {
        in_tx!(self, |tx| reliability::request_approval(&tx, approval))
    }

    async fn decide_approval(
        &self,
        run: &RunId,
        approval_id: &str,
        decision: &Decision,
    ) -> StoreResult<Approval> {
        in_tx!(self, |tx| reliability::decide(
            &tx,
            run,
            approval_id,
            decision
        ))
    }

    async fn list_approvals(
        &self,
        run: Option<&RunId>,
        pending_only: bool,
    ) -> StoreResult<Vec<Approval>> {
        in_tx!(self, |tx| reliability::list_approvals(
            &tx,
            run,
            pending_only
        ))
    }

    async fn add_dead_letter(&self, letter: &DeadLetter) -> StoreResult<()> {
        in_tx!(self, |tx| reliability::add_dead_letter(&tx, letter))
    }

    async fn list_dead_letters(&self) -> StoreResult<Vec<DeadLetter>> {
        in_tx!(self, |tx| reliability::dead_letters(&tx, None))
    }

    async fn dead_letter(&self, run: &RunId) -> StoreResult<Option<DeadLetter>> {
        let mut found = in_tx!(self, |tx| reliability::dead_letters(&tx, Some(run)))?;
        Ok(found.pop())
    }

    async fn mark_replayed(&self, run: &RunId, by: &RunId) -> StoreResult<()> {
        in_tx!(self, |tx| reliability::mark_replayed(&tx, run, by))
    }

    async fn decide_approval_moving(
        &self,
        run: &RunId,
        approval_id: &str,
        decision: &Decision,
        expected_version: i64,
        write: &StateWrite,
    ) -> StoreResult<(Approval, Run)> {
        in_tx!(self, |tx| reliability::decide_moving(
            &tx,
            run,
            approval_id,
            decision,
            (expected_version, write)
        ))
    }
}

#[async_trait]
impl ParcelStore for PgStore {
    async fn put_parcel(&self, parcel: &StoredParcel) -> StoreResult<bool> {
        in_tx!(self, |tx| parcels::put_parcel(&tx, parcel))
    }

    async fn has_parcel(&self, digest: &str) -> StoreResult<bool> {
        in_tx!(self, |tx| parcels::has_parcel(&tx, digest))
    }

    async fn get_parcel(&self, digest: &str) -> StoreResult<Option<StoredParcel>> {
        in_tx!(self, |tx| parcels::get_parcel(&tx, digest))
    }

    async fn find_parcels(&self, reference: &str) -> StoreResult<Vec<String>> {
        in_tx!(self, |tx| parcels::find_parcels(&tx, reference))
    }

    async fn put_brief(&self, sha256: &str, bytes: &[u8]) -> StoreResult<bool> {
        in_tx!(self, |tx| parcels::put_brief(&tx, sha256, bytes))
    }

    async fn get_brief(&self, sha256: &str) -> StoreResult<Option<Vec<u8>>> {
        in_tx!(self, |tx| parcels::get_brief(&tx, sha256))
    }

    async fn delete_unreferenced_briefs(&self, sha256s: &[String]) -> StoreResult<u64> {
        in_tx!(self, |tx| parcels::delete_unreferenced_briefs(&tx, sha256s))
    }
}

#[async_trait]
impl crate::EvalStore for PgStore {
    async fn put_eval(&self, eval: &crate::EvalRecord) -> StoreResult<bool> {
        in_tx!(self, |tx| evals::put(&tx, eval))
    }

    async fn evals_with_prefix(
        &self,
        prefix: &str,
        limit: u32,
    ) -> StoreResult<Vec<crate::EvalRecord>> {
        in_tx!(self, |tx| evals::with_prefix(&tx, prefix, limit))
    }

    async fn latest_eval_of(&self, digest: &str) -> StoreResult<Option<crate::EvalRecord>> {
        in_tx!(self, |tx| evals::latest_of(&tx, digest))
    }
}

#[async_trait]
impl crate::RetentionStore for PgStore {
    async fn expire_runs(
        &self,
        status: dispatch_core::Status,
        before: Ts,
        after: Option<&crate::RetentionCursor>,
        limit: usize,
    ) -> StoreResult<crate::Expired> {
        in_tx!(self, |tx| retention::expire_runs(
            &tx, status, before, after, limit
        ))
    }

    async fn expire_events(
        &self,
        before: Ts,
        after: Option<&crate::RetentionCursor>,
        limit: usize,
    ) -> StoreResult<(usize, Option<crate::RetentionCursor>)> {
        in_tx!(self, |tx| retention::expire_events(
            &tx, before, after, limit
        ))
    }
}

#[async_trait]
impl crate::NoopStore for PgStore {
    async fn succeed_at_once(&self, held: &[(RunId, i64)], at: Ts) -> StoreResult<Vec<RunId>> {
        in_tx!(self, |tx| queue::succeed_at_once(&tx, held, at))
    }
}
