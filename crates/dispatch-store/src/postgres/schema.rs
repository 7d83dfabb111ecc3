//! The PostgreSQL schema, as a versioned list of migrations.
//!
//! `dispatch_schema.version` is the number of migrations applied. Migrating
//! takes a transaction-scoped advisory lock, so servers and workers starting
//! together migrate once. A database ahead of this binary is refused untouched.

use deadpool_postgres::Client;

use super::Fail;

/// Migration `i` brings the schema from version `i` to `i + 1`. Append only.
///
/// Same tables and meaning as the SQLite schema; the queue columns
/// (`priority`, `ready_at`, `lease_owner`, `lease_expires_at`, `fence`) are
/// there from the start.
const MIGRATIONS: &[&str] = &[
    // 1: runs (with queue and lease columns), events, attempts and artifacts.
    r#"
    CREATE TABLE runs (
        id                TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        version           BIGINT NOT NULL,
        parcel_digest     TEXT NOT NULL,
        parcel_name       TEXT NOT NULL,
        operation         TEXT NOT NULL,
        status            TEXT NOT NULL,
        state             TEXT NOT NULL,
        attempt           BIGINT NOT NULL,
        parent_id         TEXT COLLATE "C",
        origin_id         TEXT COLLATE "C",
        payload           TEXT NOT NULL,
        brief_sha256      TEXT NOT NULL,
        created_at        BIGINT NOT NULL,
        updated_at        BIGINT NOT NULL,
        stop_requested_at BIGINT,
        input_tokens      BIGINT NOT NULL DEFAULT 0,
        output_tokens     BIGINT NOT NULL DEFAULT 0,
        cost_usd          DOUBLE PRECISION NOT NULL DEFAULT 0,
        output            TEXT,
        priority          BIGINT NOT NULL DEFAULT 0,
        ready_at          BIGINT NOT NULL DEFAULT 0,
        lease_owner       TEXT,
        lease_expires_at  BIGINT,
        fence             BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_by_status ON runs (status, id);
    CREATE INDEX runs_by_parent ON runs (parent_id, id) WHERE parent_id IS NOT NULL;
    CREATE INDEX runs_by_parcel_name ON runs (parcel_name, id);
    CREATE INDEX runs_claimable ON runs (priority DESC, created_at, id) WHERE status = 'queued';
    CREATE INDEX runs_leased ON runs (lease_expires_at) WHERE lease_owner IS NOT NULL;

    CREATE TABLE events (
        seq     BIGSERIAL PRIMARY KEY,
        run_id  TEXT COLLATE "C" NOT NULL REFERENCES runs (id),
        attempt BIGINT NOT NULL,
        at      BIGINT NOT NULL,
        type    TEXT NOT NULL,
        data    TEXT NOT NULL
    );
    CREATE INDEX events_by_run ON events (run_id, seq);

    CREATE TABLE attempts (
        run_id     TEXT COLLATE "C" NOT NULL REFERENCES runs (id),
        number     BIGINT NOT NULL,
        started_at BIGINT NOT NULL,
        ended_at   BIGINT,
        status     TEXT,
        exit_code  INTEGER,
        error      TEXT,
        PRIMARY KEY (run_id, number)
    );

    CREATE TABLE artifacts (
        run_id TEXT COLLATE "C" NOT NULL REFERENCES runs (id),
        name   TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size   BIGINT NOT NULL,
        PRIMARY KEY (run_id, name)
    );
    "#,
    // 2: API tokens, by the hash of their secret.
    r#"
    CREATE TABLE tokens (
        id         TEXT PRIMARY KEY NOT NULL,
        name       TEXT NOT NULL,
        hash       TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    "#,
    // 3: the labels a worker needs to claim a run.
    r#"
    ALTER TABLE runs ADD COLUMN labels TEXT[] NOT NULL DEFAULT '{}';
    "#,
    // 4: the callback outbox.
    r#"
    CREATE TABLE callbacks (
        run_id  TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        url     TEXT NOT NULL,
        due_at  BIGINT NOT NULL DEFAULT 0,
        done_at BIGINT
    );
    CREATE INDEX callbacks_due ON callbacks (due_at) WHERE done_at IS NULL;
    "#,
    // 5: reliability (as SQLite's migration 2): dedup keys, sessions,
    // per-run policy, approvals, dead letters.
    r#"
    ALTER TABLE runs ADD COLUMN idempotency_key TEXT;
    ALTER TABLE runs ADD COLUMN session TEXT;
    ALTER TABLE runs ADD COLUMN policy TEXT;
    CREATE INDEX runs_by_idempotency_key ON runs (idempotency_key, id)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX runs_by_session ON runs (session, id) WHERE session IS NOT NULL;

    CREATE TABLE approvals (
        run_id       TEXT COLLATE "C" NOT NULL REFERENCES runs (id),
        id           TEXT NOT NULL,
        attempt      BIGINT NOT NULL,
        summary      TEXT NOT NULL,
        requested_at BIGINT NOT NULL,
        deadline     BIGINT,
        decision     TEXT,
        decided_by   TEXT,
        rationale    TEXT,
        decided_at   BIGINT,
        PRIMARY KEY (run_id, id)
    );

    CREATE TABLE dead_letters (
        run_id      TEXT COLLATE "C" PRIMARY KEY NOT NULL REFERENCES runs (id),
        at          BIGINT NOT NULL,
        reason      TEXT NOT NULL,
        attempts    BIGINT NOT NULL,
        checkpoint  TEXT,
        errors      TEXT NOT NULL,
        replayed_by TEXT
    );
    "#,
    // 6 (as SQLite's migration 8): parcels and briefs by digest, and the run
    // logs workers ship back (chunks by byte position).
    r#"
    CREATE TABLE parcels (
        digest     TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        name       TEXT NOT NULL,
        manifest   TEXT NOT NULL,
        archive    BYTEA NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE briefs (
        sha256  TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        content BYTEA NOT NULL
    );
    CREATE TABLE run_logs (
        run_id TEXT COLLATE "C" NOT NULL,
        pos    BIGINT NOT NULL,
        data   BYTEA NOT NULL,
        PRIMARY KEY (run_id, pos)
    );
    "#,
    // 7 (as SQLite's migration 9): queue timeouts, and their deadlines indexed.
    r#"
    ALTER TABLE runs ADD COLUMN queue_timeout_ms BIGINT;
    CREATE INDEX runs_queue_deadline ON runs ((ready_at + queue_timeout_ms))
        WHERE status = 'queued' AND queue_timeout_ms IS NOT NULL;
    "#,
    // 8 (as SQLite's migration 10): native agents' conversation sessions.
    r#"
    CREATE TABLE sessions (
        key        TEXT COLLATE "C" PRIMARY KEY,
        data       TEXT NOT NULL,
        version    BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        updated_by TEXT
    );
    CREATE INDEX sessions_by_update ON sessions (updated_at);
    "#,
    // 9 (as SQLite's migration 11): who ran each attempt.
    "ALTER TABLE attempts ADD COLUMN worker TEXT;",
    // 10 (as SQLite's migration 12): what an approval asks, and edited arguments.
    "ALTER TABLE approvals ADD COLUMN details TEXT; ALTER TABLE approvals ADD COLUMN input TEXT;",
    // 11 (as SQLite's migration 13): whether a run keeps its workspace after it ends.
    "ALTER TABLE runs ADD COLUMN keep_workspace BOOLEAN NOT NULL DEFAULT FALSE;",
    // 12 (as SQLite's migration 14): what a run asks of the worker that claims it.
    "ALTER TABLE runs ADD COLUMN req_cpus_milli BIGINT NOT NULL DEFAULT 0; \
     ALTER TABLE runs ADD COLUMN req_memory_bytes BIGINT NOT NULL DEFAULT 0;",
    // 13 (as SQLite's migration 15): what started each run, and the key of
    // the handoff that started an upstream run (one run per handoff of its
    // origin).
    r#"
    ALTER TABLE runs ADD COLUMN trigger_kind TEXT NOT NULL DEFAULT 'manual';
    ALTER TABLE runs ADD COLUMN handoff_key TEXT;
    UPDATE runs SET trigger_kind = 'restart' WHERE origin_id IS NOT NULL;
    UPDATE runs SET trigger_kind = 'replay'
        WHERE id IN (SELECT replayed_by FROM dead_letters WHERE replayed_by IS NOT NULL);
    CREATE UNIQUE INDEX runs_by_handoff ON runs (origin_id, handoff_key)
        WHERE handoff_key IS NOT NULL;
    CREATE INDEX runs_by_trigger ON runs (trigger_kind, id) WHERE trigger_kind <> 'manual';
    "#,
    // 14 (as SQLite's migration 16): eval reports kept by the cluster (`dispatch eval --host`).
    "CREATE TABLE evals ( \
        id            TEXT COLLATE \"C\" PRIMARY KEY, \
        parcel_digest TEXT COLLATE \"C\" NOT NULL, \
        parcel_name   TEXT NOT NULL, \
        created_at    BIGINT NOT NULL, \
        report        TEXT NOT NULL); \
     CREATE INDEX evals_by_parcel ON evals (parcel_digest, created_at);",
    // 15 (as SQLite's migration 17): workflow messages (see `crate::MessageStore`).
    r#"
    CREATE TABLE messages (
        seq         BIGSERIAL PRIMARY KEY,
        workflow_id TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        id          TEXT COLLATE "C" NOT NULL UNIQUE,
        sender      TEXT NOT NULL,
        sender_run  TEXT,
        receiver    TEXT NOT NULL,
        kind        TEXT NOT NULL,
        payload     TEXT NOT NULL,
        created_at  BIGINT NOT NULL,
        child_run   TEXT
    );
    CREATE INDEX messages_by_workflow ON messages (workflow_id, seq);
    "#,
    // 16 (as SQLite's migration 18): concurrency keys (see `crate::limits`).
    "ALTER TABLE runs ADD COLUMN concurrency_key TEXT; \
     ALTER TABLE runs ADD COLUMN concurrency_max BIGINT; \
     ALTER TABLE runs ADD COLUMN concurrency_strategy TEXT; \
     CREATE INDEX runs_by_concurrency_key ON runs (concurrency_key, status, created_at, id) \
     WHERE concurrency_key IS NOT NULL;",
    // 17 (as SQLite's migration 19): model rate limits, a sliding-window log per bucket.
    "CREATE TABLE rate_buckets (bucket TEXT PRIMARY KEY, blocked_until BIGINT NOT NULL DEFAULT 0); \
     CREATE TABLE rate_grants (id BIGSERIAL PRIMARY KEY, bucket TEXT NOT NULL, \
     at BIGINT NOT NULL, tokens BIGINT NOT NULL); \
     CREATE INDEX rate_grants_by_bucket ON rate_grants (bucket, at);",
    // 18 (as SQLite's migrations 3 and 20): the state of service runs
    // (schedules, listeners), one row per run; a cluster service's name is
    // unique among named rows.
    r#"
    CREATE TABLE service_state (
        run_id     TEXT COLLATE "C" PRIMARY KEY NOT NULL REFERENCES runs (id),
        config     TEXT NOT NULL,
        schedules  TEXT NOT NULL,
        listeners  TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        name       TEXT COLLATE "C"
    );
    CREATE UNIQUE INDEX service_state_by_name ON service_state (name) WHERE name IS NOT NULL;
    "#,
    // 19 (as SQLite's 21): retention: finished runs by end time, and what still
    // references an artifact or a brief.
    "CREATE INDEX IF NOT EXISTS runs_by_end ON runs (status, updated_at, id); \
     CREATE INDEX IF NOT EXISTS runs_by_brief ON runs (brief_sha256); \
     CREATE INDEX IF NOT EXISTS artifacts_by_sha256 ON artifacts (sha256);",
    // 20 (as SQLite's 22): tracing: the W3C traceparent a run was created under.
    "ALTER TABLE runs ADD COLUMN traceparent TEXT;",
    // 21 (as SQLite's 23): the cluster's workers, as each last said.
    r#"
    CREATE TABLE workers (
        name       TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        labels     TEXT NOT NULL,
        slots      BIGINT NOT NULL,
        lease_ms   BIGINT NOT NULL,
        started_at BIGINT NOT NULL,
        seen_at    BIGINT NOT NULL,
        stopped_at BIGINT
    );
    CREATE INDEX runs_by_lease_owner ON runs (lease_owner) WHERE lease_owner IS NOT NULL;
    "#,
    // 22 (as SQLite's 24): finished runs' logs moved to the object store.
    r#"
    CREATE TABLE run_log_archives (
        run_id TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        sha256 TEXT COLLATE "C" NOT NULL,
        size   BIGINT NOT NULL
    );
    CREATE INDEX run_log_archives_by_sha256 ON run_log_archives (sha256);
    "#,
    // 23 (as SQLite's 25): scoped, expiring API tokens (existing ones stay
    // admin, never expiring), and the webhook deliveries a cluster service
    // has taken (replay refusal).
    r#"
    ALTER TABLE tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin';
    ALTER TABLE tokens ADD COLUMN expires_at BIGINT;
    CREATE TABLE webhook_deliveries (
        service    TEXT COLLATE "C" NOT NULL,
        delivery   TEXT COLLATE "C" NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (service, delivery)
    );
    CREATE INDEX webhook_deliveries_by_expiry ON webhook_deliveries (expires_at);
    "#,
    // 26: who holds a worker's name (its host and pid): a second live
    // worker of the same name is refused (see `crate::WorkerStore::worker_beat`).
    r#"
    ALTER TABLE workers ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE workers ADD COLUMN pid BIGINT NOT NULL DEFAULT 0;
    "#,
    // (as SQLite's 27): objects kept in the database, the cluster's object
    // store without `--artifacts` (see `crate::BlobStore`): uploads not
    // committed yet, their parts (at most 4 MiB a row; stored out of line
    // uncompressed: artifacts are mostly compressed already, and a part is
    // read whole), and the committed objects by key.
    r#"
    CREATE TABLE blob_uploads (
        upload     TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        started_at BIGINT NOT NULL,
        size       BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX blob_uploads_by_start ON blob_uploads (started_at);
    CREATE TABLE blob_parts (
        upload TEXT COLLATE "C" NOT NULL,
        seq    BIGINT NOT NULL,
        len    BIGINT NOT NULL,
        data   BYTEA NOT NULL,
        PRIMARY KEY (upload, seq)
    );
    ALTER TABLE blob_parts ALTER COLUMN data SET STORAGE EXTERNAL;
    CREATE TABLE blobs (
        key         TEXT COLLATE "C" PRIMARY KEY NOT NULL,
        upload      TEXT COLLATE "C" NOT NULL,
        size        BIGINT NOT NULL,
        modified_at BIGINT NOT NULL
    );
    "#,
    // (as SQLite's 29): the notification outbox (see `crate::NotificationStore`).
    r#"
    CREATE TABLE notifications (
        seq        BIGSERIAL PRIMARY KEY,
        key        TEXT COLLATE "C" NOT NULL UNIQUE,
        run_id     TEXT COLLATE "C" NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        kind       TEXT NOT NULL,
        data       TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        due_at     BIGINT NOT NULL,
        tries      BIGINT NOT NULL DEFAULT 0,
        sent       TEXT NOT NULL DEFAULT '[]',
        last_error TEXT,
        outcome    TEXT,
        done_at    BIGINT
    );
    CREATE INDEX notifications_due ON notifications (due_at, seq) WHERE done_at IS NULL;
    CREATE INDEX notifications_by_run ON notifications (run_id);
    "#,
    // (as SQLite's 30): projects: the one each run belongs to (`default`
    // for the runs made before; a constant default adds the column without
    // rewriting the table), and the projects a token is bound to, with its
    // role in each (a token bound to none keeps its scope in every project).
    r#"
    ALTER TABLE runs ADD COLUMN project TEXT COLLATE "C" NOT NULL DEFAULT 'default';
    CREATE INDEX runs_by_project ON runs (project, id);
    CREATE TABLE token_projects (
        token_id TEXT COLLATE "C" NOT NULL,
        project  TEXT COLLATE "C" NOT NULL,
        role     TEXT NOT NULL,
        PRIMARY KEY (token_id, project)
    );
    "#,
    // (as SQLite's 31): quotas per project (see `crate::QuotaStore`): one
    // row per project and limit (a claimer locks the `max_live_runs` row);
    // live runs by project, for the live-run cap; the tokens and USD of a
    // project with budgets per UTC day and month.
    r#"
    CREATE TABLE project_quotas (
        project    TEXT COLLATE "C" NOT NULL,
        name       TEXT COLLATE "C" NOT NULL,
        value      DOUBLE PRECISION NOT NULL,
        soft_pct   BIGINT NOT NULL,
        on_hard    TEXT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (project, name)
    );
    CREATE INDEX runs_live_by_project ON runs (project)
        WHERE status IN ('starting', 'running', 'paused');
    CREATE TABLE quota_usage (
        project TEXT COLLATE "C" NOT NULL,
        period  TEXT COLLATE "C" NOT NULL,
        tokens  BIGINT NOT NULL,
        usd     DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (project, period)
    );
    "#,
    // 32: live runs of a project are counted through `runs_by_status` (no
    // more live runs than slots): an index of their own cost every claim
    // and every start of every run another entry, quota or not.
    r#"
    DROP INDEX IF EXISTS runs_live_by_project;
    "#,
    // 33: every write of a run moves its entries in every index whose
    // predicate it meets (a change of `status`, which is indexed, is never
    // a heap-only update). `runs_by_end` holds finished runs only (as
    // SQLite's 28: a claim or a start no longer adds an entry), and
    // `runs_by_project` the runs of named projects only (runs of the
    // default project, most of them, are listed through the other
    // indexes). Queries that want these indexes say the same predicate.
    r#"
    DROP INDEX IF EXISTS runs_by_end;
    CREATE INDEX runs_by_end ON runs (status, updated_at, id)
        WHERE status IN ('succeeded', 'failed', 'timed_out', 'cancelled', 'stopped');
    DROP INDEX IF EXISTS runs_by_project;
    CREATE INDEX runs_by_project ON runs (project, id) WHERE project <> 'default';
    "#,
];

/// The schema version this binary writes.
pub(crate) const CURRENT: i64 = MIGRATIONS.len() as i64;

/// A constant key for the migration advisory lock ("dispatch" in ASCII).
const MIGRATION_LOCK: i64 = 0x6469_7370_6174_6368;

async fn found_version(client: &impl tokio_postgres::GenericClient) -> Result<i64, Fail> {
    let row = client
        .query_opt("SELECT version FROM dispatch_schema", &[])
        .await?;
    Ok(row.map(|r| r.get::<_, i64>(0)).unwrap_or(0))
}

/// Brings the schema to [`CURRENT`], or refuses a database from a newer binary.
///
/// A current database costs one read. Otherwise everything, the creation of
/// `dispatch_schema` included, happens under a transaction-scoped advisory
/// lock, so any number of servers and workers may start at once on an empty
/// or an old database: one migrates, the others wait and find it done.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), Fail> {
    match client
        .query_opt("SELECT version FROM dispatch_schema", &[])
        .await
    {
        Ok(row) => {
            let found = row.map(|r| r.get::<_, i64>(0)).unwrap_or(0);
            if found == CURRENT {
                return Ok(());
            }
            if found > CURRENT {
                return Err(Fail::TooNew {
                    found,
                    supported: CURRENT,
                });
            }
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {}
        Err(e) => return Err(e.into()),
    }
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS dispatch_schema (version BIGINT NOT NULL)")
        .await?;
    // Another process may have migrated while we waited for the lock.
    let found = found_version(&*tx).await?;
    if found > CURRENT {
        return Err(Fail::TooNew {
            found,
            supported: CURRENT,
        });
    }
    for script in MIGRATIONS.iter().skip(found.max(0) as usize) {
        tx.batch_execute(script).await?;
    }
    tx.execute("DELETE FROM dispatch_schema", &[]).await?;
    tx.execute(
        "INSERT INTO dispatch_schema (version) VALUES ($1)",
        &[&CURRENT],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
