//! The schema, as a versioned list of migrations.
//!
//! `PRAGMA user_version` is the number of migrations applied. Opening a
//! current database costs one read of it; only a database that is behind takes
//! the write lock and runs DDL. A database ahead of this binary is refused
//! untouched.

use rusqlite::{Connection, TransactionBehavior};

use super::Fail;

/// Migration `i` brings the schema from version `i` to `i + 1`. Append only:
/// a released migration never changes.
const MIGRATIONS: &[&str] = &[
    // 1: runs, their events, attempts and artifacts.
    "
    CREATE TABLE runs (
        id                TEXT PRIMARY KEY NOT NULL,
        version           INTEGER NOT NULL,
        parcel_digest     TEXT NOT NULL,
        parcel_name       TEXT NOT NULL,
        operation         TEXT NOT NULL,
        status            TEXT NOT NULL,
        state             TEXT NOT NULL,
        attempt           INTEGER NOT NULL,
        parent_id         TEXT,
        origin_id         TEXT,
        payload           TEXT NOT NULL,
        brief_sha256      TEXT NOT NULL,
        created_at        INTEGER NOT NULL,
        updated_at        INTEGER NOT NULL,
        stop_requested_at INTEGER,
        input_tokens      INTEGER NOT NULL DEFAULT 0,
        output_tokens     INTEGER NOT NULL DEFAULT 0,
        cost_usd          REAL NOT NULL DEFAULT 0,
        output            TEXT
    );
    CREATE INDEX runs_by_status ON runs (status, id);
    CREATE INDEX runs_by_parent ON runs (parent_id, id) WHERE parent_id IS NOT NULL;
    CREATE INDEX runs_by_parcel_name ON runs (parcel_name, id);

    CREATE TABLE events (
        seq     INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id  TEXT NOT NULL REFERENCES runs (id),
        attempt INTEGER NOT NULL,
        at      INTEGER NOT NULL,
        type    TEXT NOT NULL,
        data    TEXT NOT NULL
    );
    CREATE INDEX events_by_run ON events (run_id, seq);

    CREATE TABLE attempts (
        run_id     TEXT NOT NULL REFERENCES runs (id),
        number     INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        ended_at   INTEGER,
        status     TEXT,
        exit_code  INTEGER,
        error      TEXT,
        PRIMARY KEY (run_id, number)
    ) WITHOUT ROWID;

    CREATE TABLE artifacts (
        run_id TEXT NOT NULL REFERENCES runs (id),
        name   TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size   INTEGER NOT NULL,
        PRIMARY KEY (run_id, name)
    ) WITHOUT ROWID;
    ",
    // 2: reliability: dedup keys, sessions, per-run policy, approvals, dead letters.
    "
    ALTER TABLE runs ADD COLUMN idempotency_key TEXT;
    ALTER TABLE runs ADD COLUMN session TEXT;
    ALTER TABLE runs ADD COLUMN policy TEXT;
    CREATE INDEX runs_by_idempotency_key ON runs (idempotency_key, id)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX runs_by_session ON runs (session, id) WHERE session IS NOT NULL;

    CREATE TABLE approvals (
        run_id       TEXT NOT NULL REFERENCES runs (id),
        id           TEXT NOT NULL,
        attempt      INTEGER NOT NULL,
        summary      TEXT NOT NULL,
        requested_at INTEGER NOT NULL,
        deadline     INTEGER,
        decision     TEXT,
        decided_by   TEXT,
        rationale    TEXT,
        decided_at   INTEGER,
        PRIMARY KEY (run_id, id)
    ) WITHOUT ROWID;

    CREATE TABLE dead_letters (
        run_id      TEXT PRIMARY KEY NOT NULL REFERENCES runs (id),
        at          INTEGER NOT NULL,
        reason      TEXT NOT NULL,
        attempts    INTEGER NOT NULL,
        checkpoint  TEXT,
        errors      TEXT NOT NULL,
        replayed_by TEXT
    ) WITHOUT ROWID;
    ",
    // 3: the state of service runs (schedules, listeners), one row per run.
    "
    CREATE TABLE service_state (
        run_id     TEXT PRIMARY KEY NOT NULL REFERENCES runs (id),
        config     TEXT NOT NULL,
        schedules  TEXT NOT NULL,
        listeners  TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
    // 4: the queue: priority, and the lease a worker holds with its fencing token.
    "
    ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN lease_owner TEXT;
    ALTER TABLE runs ADD COLUMN lease_expires_at INTEGER;
    ALTER TABLE runs ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX runs_claimable ON runs (priority DESC, created_at, id) WHERE status = 'queued';
    CREATE INDEX runs_leased ON runs (lease_expires_at) WHERE lease_owner IS NOT NULL;
    ",
    // 5: API tokens, by the hash of their secret.
    "
    CREATE TABLE tokens (
        id         TEXT PRIMARY KEY NOT NULL,
        name       TEXT NOT NULL,
        hash       TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    ",
    // 6: the labels a worker needs to claim a run (a JSON array).
    "
    ALTER TABLE runs ADD COLUMN labels TEXT NOT NULL DEFAULT '[]';
    ",
    // 7: the callback outbox.
    "
    CREATE TABLE callbacks (
        run_id  TEXT PRIMARY KEY NOT NULL,
        url     TEXT NOT NULL,
        due_at  INTEGER NOT NULL DEFAULT 0,
        done_at INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX callbacks_due ON callbacks (due_at) WHERE done_at IS NULL;
    ",
    // 8: what a worker on another machine needs: parcels and briefs by
    // digest, and the run logs workers ship back (chunks by byte position).
    "
    CREATE TABLE parcels (
        digest     TEXT PRIMARY KEY NOT NULL,
        name       TEXT NOT NULL,
        manifest   TEXT NOT NULL,
        archive    BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE briefs (
        sha256  TEXT PRIMARY KEY NOT NULL,
        content BLOB NOT NULL
    );
    CREATE TABLE run_logs (
        run_id TEXT NOT NULL,
        pos    INTEGER NOT NULL,
        data   BLOB NOT NULL,
        PRIMARY KEY (run_id, pos)
    );
    ",
    // 9: queue timeouts: how long a run may wait to be claimed.
    "
    ALTER TABLE runs ADD COLUMN queue_timeout_ms INTEGER;
    CREATE INDEX runs_queue_timeout ON runs (id)
        WHERE status = 'queued' AND queue_timeout_ms IS NOT NULL;
    ",
    // 10: native agents' conversation sessions, by `<parcel>/<name>`.
    "
    CREATE TABLE sessions (
        key        TEXT PRIMARY KEY NOT NULL,
        data       TEXT NOT NULL,
        version    INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        updated_by TEXT
    );
    CREATE INDEX sessions_by_update ON sessions (updated_at);
    ",
    // 11: who ran each attempt (a worker's name, or the local helper).
    "
    ALTER TABLE attempts ADD COLUMN worker TEXT;
    ",
    // 12: what an approval asks (a tool call's tool, arguments, risk) and the
    // arguments an approver gave instead.
    "
    ALTER TABLE approvals ADD COLUMN details TEXT;
    ALTER TABLE approvals ADD COLUMN input TEXT;
    ",
    // 13: whether a run keeps its workspace after it ends (`--keep-workspace`).
    "
    ALTER TABLE runs ADD COLUMN keep_workspace INTEGER NOT NULL DEFAULT 0;
    ",
    // 14: what a run asks of the worker that claims it (RESOURCES CPUS and
    // MEMORY; 0 when it does not say).
    "
    ALTER TABLE runs ADD COLUMN req_cpus_milli INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN req_memory_bytes INTEGER NOT NULL DEFAULT 0;
    ",
    // 15: what started each run (`trigger`: manual, restart, replay,
    // upstream, eval, workflow), and the key of the handoff that started an
    // upstream run (one run per handoff of its origin). Older runs linked to
    // an origin were restarts, or replays where a dead letter says so.
    "
    ALTER TABLE runs ADD COLUMN trigger_kind TEXT NOT NULL DEFAULT 'manual';
    ALTER TABLE runs ADD COLUMN handoff_key TEXT;
    UPDATE runs SET trigger_kind = 'restart' WHERE origin_id IS NOT NULL;
    UPDATE runs SET trigger_kind = 'replay'
        WHERE id IN (SELECT replayed_by FROM dead_letters WHERE replayed_by IS NOT NULL);
    CREATE UNIQUE INDEX runs_by_handoff ON runs (origin_id, handoff_key)
        WHERE handoff_key IS NOT NULL;
    CREATE INDEX runs_by_trigger ON runs (trigger_kind, id) WHERE trigger_kind <> 'manual';
    ",
    // 16: eval reports kept by the cluster (`dispatch eval --host`).
    "
    CREATE TABLE evals (
        id            TEXT PRIMARY KEY,
        parcel_digest TEXT NOT NULL,
        parcel_name   TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        report        TEXT NOT NULL
    );
    CREATE INDEX evals_by_parcel ON evals (parcel_digest, created_at);
    ",
    // 17: workflow messages (see `crate::MessageStore`).
    "
    CREATE TABLE messages (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        workflow_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        id          TEXT NOT NULL UNIQUE,
        sender      TEXT NOT NULL,
        sender_run  TEXT,
        receiver    TEXT NOT NULL,
        kind        TEXT NOT NULL,
        payload     TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        child_run   TEXT
    );
    CREATE INDEX messages_by_workflow ON messages (workflow_id, seq);
    ",
    // 18: concurrency keys: the key's value, its MAX and STRATEGY (see `crate::limits`).
    "
    ALTER TABLE runs ADD COLUMN concurrency_key TEXT;
    ALTER TABLE runs ADD COLUMN concurrency_max INTEGER;
    ALTER TABLE runs ADD COLUMN concurrency_strategy TEXT;
    CREATE INDEX runs_by_concurrency_key ON runs (concurrency_key, status, created_at, id)
        WHERE concurrency_key IS NOT NULL;
    ",
    // 19: model rate limits: a sliding-window log of admitted calls per bucket.
    "
    CREATE TABLE rate_buckets (bucket TEXT PRIMARY KEY, blocked_until INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE rate_grants (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        bucket TEXT NOT NULL,
        at     INTEGER NOT NULL,
        tokens INTEGER NOT NULL
    );
    CREATE INDEX rate_grants_by_bucket ON rate_grants (bucket, at);
    ",
    // 20: cluster services: the name a service is served under (`/hooks/<name>/…`),
    // unique among named rows.
    "
    ALTER TABLE service_state ADD COLUMN name TEXT;
    CREATE UNIQUE INDEX service_state_by_name ON service_state (name) WHERE name IS NOT NULL;
    ",
    // 21: retention: finished runs by end time, and what still references an
    // artifact or a brief.
    "
    CREATE INDEX IF NOT EXISTS runs_by_end ON runs (status, updated_at, id);
    CREATE INDEX IF NOT EXISTS runs_by_brief ON runs (brief_sha256);
    CREATE INDEX IF NOT EXISTS artifacts_by_sha256 ON artifacts (sha256);
    ",
    // 22: tracing: the W3C traceparent a run was created under.
    "
    ALTER TABLE runs ADD COLUMN traceparent TEXT;
    ",
    // 23: the cluster's workers, as each last said (the dashboard's workers page).
    "
    CREATE TABLE workers (
        name       TEXT PRIMARY KEY NOT NULL,
        labels     TEXT NOT NULL,
        slots      INTEGER NOT NULL,
        lease_ms   INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        seen_at    INTEGER NOT NULL,
        stopped_at INTEGER
    );
    CREATE INDEX runs_by_lease_owner ON runs (lease_owner) WHERE lease_owner IS NOT NULL;
    ",
    // 24: finished runs' logs moved to the object store.
    "
    CREATE TABLE run_log_archives (
        run_id TEXT PRIMARY KEY NOT NULL,
        sha256 TEXT NOT NULL,
        size   INTEGER NOT NULL
    );
    CREATE INDEX run_log_archives_by_sha256 ON run_log_archives (sha256);
    ",
    // 25: scoped, expiring API tokens (existing ones stay admin, never
    // expiring), and the webhook deliveries a cluster service has taken
    // (replay refusal, see `crate::ServiceStore::claim_delivery`).
    "
    ALTER TABLE tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin';
    ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
    CREATE TABLE webhook_deliveries (
        service    TEXT NOT NULL,
        delivery   TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (service, delivery)
    );
    CREATE INDEX webhook_deliveries_by_expiry ON webhook_deliveries (expires_at);
    ",
    // 26: who holds a worker's name (its host and pid): a second live
    // worker of the same name is refused (see `crate::WorkerStore::worker_beat`).
    "
    ALTER TABLE workers ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE workers ADD COLUMN pid BIGINT NOT NULL DEFAULT 0;
    ",
    // 27: objects kept in the database (see `crate::BlobStore`): uploads
    // not committed yet, their parts (at most 4 MiB a row), and the
    // committed objects by key.
    "
    CREATE TABLE blob_uploads (
        upload     TEXT PRIMARY KEY NOT NULL,
        started_at INTEGER NOT NULL,
        size       INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX blob_uploads_by_start ON blob_uploads (started_at);
    CREATE TABLE blob_parts (
        upload TEXT NOT NULL,
        seq    INTEGER NOT NULL,
        len    INTEGER NOT NULL,
        data   BLOB NOT NULL,
        PRIMARY KEY (upload, seq)
    );
    CREATE TABLE blobs (
        key         TEXT PRIMARY KEY NOT NULL,
        upload      TEXT NOT NULL,
        size        INTEGER NOT NULL,
        modified_at INTEGER NOT NULL
    );
    ",
    // 28: finished runs by end time only (retention asks for nothing
    // else): a claim, a start or a renewal of a live run no longer moves
    // an entry of it (`updated_at` changes with every write of a run).
    "
    DROP INDEX IF EXISTS runs_by_end;
    CREATE INDEX runs_by_end ON runs (status, updated_at, id)
        WHERE status IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'stopped');
    ",
    // 29: the notification outbox (see `crate::NotificationStore`): one row
    // per thing to tell, keyed, settled once every channel has it.
    "
    CREATE TABLE notifications (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        key        TEXT NOT NULL UNIQUE,
        run_id     TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        kind       TEXT NOT NULL,
        data       TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        due_at     INTEGER NOT NULL,
        tries      INTEGER NOT NULL DEFAULT 0,
        sent       TEXT NOT NULL DEFAULT '[]',
        last_error TEXT,
        outcome    TEXT,
        done_at    INTEGER
    );
    CREATE INDEX notifications_due ON notifications (due_at, seq) WHERE done_at IS NULL;
    CREATE INDEX notifications_by_run ON notifications (run_id);
    ",
    // 30: projects: the one each run belongs to (`default` for the runs
    // made before), and the projects a token is bound to, with its role in
    // each (a token bound to none keeps its scope in every project).
    "
    ALTER TABLE runs ADD COLUMN project TEXT NOT NULL DEFAULT 'default';
    CREATE INDEX runs_by_project ON runs (project, id);
    CREATE TABLE token_projects (
        token_id TEXT NOT NULL,
        project  TEXT NOT NULL,
        role     TEXT NOT NULL,
        PRIMARY KEY (token_id, project)
    );
    ",
    // 31: quotas per project (see `crate::QuotaStore`): one row per
    // project and limit; live runs by project, for the live-run cap; the
    // tokens and USD of a project with budgets per UTC day and month.
    "
    CREATE TABLE project_quotas (
        project    TEXT NOT NULL,
        name       TEXT NOT NULL,
        value      REAL NOT NULL,
        soft_pct   INTEGER NOT NULL,
        on_hard    TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (project, name)
    );
    CREATE INDEX runs_live_by_project ON runs (project)
        WHERE status IN ('starting', 'running', 'paused');
    CREATE TABLE quota_usage (
        project TEXT NOT NULL,
        period  TEXT NOT NULL,
        tokens  INTEGER NOT NULL,
        usd     REAL NOT NULL,
        PRIMARY KEY (project, period)
    );
    ",
    // 32: live runs of a project are counted through `runs_by_status` (no
    // more live runs than slots): an index of their own cost every claim
    // and every end of every run two more writes, quota or not.
    "
    DROP INDEX IF EXISTS runs_live_by_project;
    ",
    // 33: `runs_by_end`'s predicate as equalities: written `status IN
    // (five values)`, SQLite built an ephemeral b-tree of them for the old
    // and the new row each time a claim or an end of a run ran (issue #38
    // item 6: a third of each of those updates' cost).
    "
    DROP INDEX IF EXISTS runs_by_end;
    CREATE INDEX runs_by_end ON runs (status, updated_at, id)
        WHERE (status = 'succeeded' OR status = 'failed' OR status = 'timed_out'
            OR status = 'cancelled' OR status = 'stopped');
    ",
];

/// The schema version this binary writes.
pub(crate) const CURRENT: i64 = MIGRATIONS.len() as i64;

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

/// Brings the schema to [`CURRENT`], or refuses a database from a newer binary.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), Fail> {
    let found = user_version(conn)?;
    if found == CURRENT {
        return Ok(());
    }
    if found > CURRENT {
        return Err(Fail::TooNew {
            found,
            supported: CURRENT,
        });
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process may have migrated while we waited for the lock.
    let found = user_version(&tx)?;
    if found > CURRENT {
        return Err(Fail::TooNew {
            found,
            supported: CURRENT,
        });
    }
    for (done, script) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        tx.execute_batch(script)?;
        tx.pragma_update(None, "user_version", done as i64 + 1)?;
    }
    tx.commit()?;
    Ok(())
}
