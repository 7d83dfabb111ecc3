//! The conformance suite on SQLite, plus the promises that need several
//! connections to one database file.

use std::time::Duration;

use dispatch_store::SqliteStore;
use tempfile::TempDir;

async fn fresh_store() -> (SqliteStore, TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(&dir.path().join("dispatch.db"), Duration::from_secs(5))
        .expect("a fresh database opens");
    (store, dir)
}

dispatch_store::conformance_suite!(fresh_store);
dispatch_store::queue_conformance_suite!(fresh_store);
dispatch_store::parcel_conformance_suite!(fresh_store);
dispatch_store::service_conformance_suite!(fresh_store);
dispatch_store::retention_conformance_suite!(fresh_store);
dispatch_store::blob_conformance_suite!(fresh_store);

// What follows needs several connections to one file, or raw access to it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::Instant;

use dispatch_core::event::Usage;
use dispatch_core::{NewEvent, RunId, Transition};
use dispatch_store::conformance::{id, new_run, start, write_for};
use dispatch_store::{EventStore, RunFilter, RunStore, StoreError};
use serde_json::json;

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("dispatch.db")
}

fn open(path: &Path, busy: Duration) -> SqliteStore {
    SqliteStore::open(path, busy).expect("the database opens")
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).expect("a raw connection opens")
}

/// Runs `f` on its own single-threaded runtime: one "process" of the test.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(f)
}

const WORKERS: u128 = 50;

#[test]
fn fifty_connections_create_and_append_concurrently_without_losing_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let shared = id(0xffff);
    block_on(async {
        open(&path, Duration::from_secs(5))
            .create_run(&new_run(shared.clone(), "shared", 1))
            .await
            .expect("the shared run is created")
    });
    let gate = Arc::new(Barrier::new(WORKERS as usize));
    let workers: Vec<_> = (1..=WORKERS)
        .map(|n| {
            let (path, gate, shared) = (path.clone(), gate.clone(), shared.clone());
            thread::spawn(move || {
                // Each worker is its own connection, as separate processes would be.
                let store = open(&path, Duration::from_secs(30));
                gate.wait();
                block_on(async {
                    let run = store
                        .create_run(&new_run(id(n), "worker", n as i64))
                        .await
                        .expect("create under contention");
                    let run = start(&store, &run, 100).await;
                    let usage = NewEvent::new(
                        "usage",
                        1,
                        200,
                        json!({"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.25}),
                    );
                    let log = NewEvent::new("log", 1, 201, json!({"worker": n as u64}));
                    store
                        .append_events(&run.id, &[usage, log])
                        .await
                        .expect("append under contention");
                    for _ in 0..3 {
                        let shared_usage = NewEvent::new(
                            "usage",
                            1,
                            300,
                            json!({"input_tokens": 1, "output_tokens": 2, "cost_usd": 0.5}),
                        );
                        store
                            .append_events(&shared, &[shared_usage])
                            .await
                            .expect("append to the shared run under contention");
                    }
                    let done = write_for(&run, &Transition::Exited { code: 0, at: 400 });
                    store
                        .transition(&run.id, run.version, &done)
                        .await
                        .expect("finish under contention");
                });
            })
        })
        .collect();
    for w in workers {
        w.join().expect("no worker panicked");
    }

    let store = open(&path, Duration::from_secs(5));
    block_on(async {
        let runs = store
            .list_runs(&RunFilter {
                parcel: Some("worker".into()),
                ..RunFilter::default()
            })
            .await
            .expect("list");
        assert_eq!(
            runs.len(),
            WORKERS as usize,
            "every worker's run was recorded"
        );
        for run in &runs {
            assert!(run.state.is_terminal(), "{} finished", run.id);
            assert_eq!(
                run.usage,
                Usage {
                    input_tokens: 10,
                    output_tokens: 5,
                    cost_usd: 0.25
                }
            );
            let events = store.list_events(&run.id, 0, 100).await.expect("events");
            // created, claim, agent started, usage, log, exited
            assert_eq!(events.len(), 6, "{}: no event lost", run.id);
        }
        let shared_run = store.get_run(&shared).await.expect("shared run");
        assert_eq!(
            shared_run.usage,
            Usage {
                input_tokens: 3 * WORKERS as u64,
                output_tokens: 6 * WORKERS as u64,
                cost_usd: 1.5 * WORKERS as f64,
            },
            "no usage update was lost"
        );
        assert_eq!(shared_run.version, 1, "usage never bumps the version");
        let shared_events = store.list_events(&shared, 0, 1000).await.expect("events");
        assert_eq!(shared_events.len(), 1 + 3 * WORKERS as usize);
    });
}

#[test]
fn fifty_connections_opening_a_new_database_at_once_all_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("new").join("dispatch.db");
    let gate = Arc::new(Barrier::new(WORKERS as usize));
    let workers: Vec<_> = (1..=WORKERS)
        .map(|n| {
            let (path, gate) = (path.clone(), gate.clone());
            thread::spawn(move || {
                gate.wait();
                let store = open(&path, Duration::from_secs(30));
                block_on(store.create_run(&new_run(id(n), "p", n as i64)))
                    .expect("create right after a racing open");
            })
        })
        .collect();
    for w in workers {
        w.join().expect("no opener failed");
    }
    let store = open(&path, Duration::from_secs(5));
    let runs = block_on(store.list_runs(&RunFilter::default())).expect("list");
    assert_eq!(runs.len(), WORKERS as usize);
    let version: i64 = raw(&path)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version");
    assert_eq!(
        version,
        dispatch_store::sqlite::SCHEMA_VERSION,
        "the schema was migrated exactly once, to the current version"
    );
}

#[test]
fn a_locked_database_reports_locked_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = open(&path, Duration::from_millis(100));
    let queued = block_on(store.create_run(&new_run(id(1), "p", 10))).expect("create");

    // Another process takes the write lock and keeps it.
    let holder = raw(&path);
    holder
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("the other process locks the database");

    let locked = |what: &str, r: Result<(), StoreError>| match r {
        Err(StoreError::Locked { path: shown }) => {
            assert_eq!(shown, path.display().to_string(), "{what}: names the file");
        }
        other => panic!("{what} under a held lock: expected Locked, got {other:?}"),
    };
    let began = Instant::now();
    locked(
        "create",
        block_on(store.create_run(&new_run(id(2), "p", 20))).map(drop),
    );
    assert!(
        began.elapsed() >= Duration::from_millis(90),
        "the writer waited for the busy timeout before giving up"
    );
    let claim = write_for(
        &queued,
        &Transition::Claim {
            helper: dispatch_store::conformance::HELPER,
            at: 30,
        },
    );
    locked(
        "transition",
        block_on(store.transition(&queued.id, queued.version, &claim)).map(drop),
    );
    let usage = NewEvent::new("usage", 1, 30, json!({"input_tokens": 5}));
    locked(
        "append",
        block_on(store.append_events(&queued.id, std::slice::from_ref(&usage))),
    );
    locked(
        "request_stop",
        block_on(store.request_stop(&queued.id, 30)).map(drop),
    );
    let err = block_on(store.create_run(&new_run(id(3), "p", 20))).expect_err("still locked");
    assert!(
        err.to_string().contains("locked by another process"),
        "one clear line: {err}"
    );

    // Readers are not blocked, and a command can still open the database.
    let reader = open(&path, Duration::from_millis(100));
    let seen = block_on(reader.get_run(&queued.id)).expect("reads work under the lock");
    assert_eq!(seen, queued);

    holder.execute_batch("COMMIT").expect("release the lock");
    drop(holder);

    block_on(async {
        assert_eq!(store.get_run(&queued.id).await.expect("get"), queued);
        assert!(matches!(
            store.get_run(&id(2)).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(
            store
                .list_events(&queued.id, 0, 100)
                .await
                .expect("events")
                .len(),
            1,
            "no half-written event"
        );
        store
            .transition(&queued.id, queued.version, &claim)
            .await
            .expect("writes work again once the lock is gone");
        store
            .append_events(&queued.id, &[usage])
            .await
            .expect("append works again");
        store
            .create_run(&new_run(id(2), "p", 20))
            .await
            .expect("create works again");
    });
    let check: String = raw(&path)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity check");
    assert_eq!(check, "ok");
}

#[test]
fn a_writer_waits_for_a_lock_that_is_released_within_the_busy_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = open(&path, Duration::from_secs(10));
    let (locked_tx, locked_rx) = mpsc::channel();
    let holder_path = path.clone();
    let holder = thread::spawn(move || {
        let conn = raw(&holder_path);
        conn.execute_batch("BEGIN EXCLUSIVE").expect("lock");
        locked_tx.send(()).expect("the test is listening");
        // Hold the lock for a while, then let the waiting writer in.
        thread::sleep(Duration::from_millis(200));
        conn.execute_batch("COMMIT").expect("unlock");
    });
    locked_rx.recv().expect("the holder took the lock");
    block_on(store.create_run(&new_run(id(1), "p", 10)))
        .expect("the writer waits for the lock instead of failing");
    holder.join().expect("holder thread");
}

#[test]
fn a_database_from_a_newer_dispatch_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    block_on(open(&path, Duration::from_secs(1)).create_run(&new_run(id(1), "p", 10)))
        .expect("create");
    raw(&path)
        .execute_batch("PRAGMA user_version = 999")
        .expect("a future dispatch migrated the database");

    let err = SqliteStore::open(&path, Duration::from_secs(1)).expect_err("refused");
    assert!(
        matches!(
            err,
            StoreError::TooNew {
                found: 999,
                supported: dispatch_store::sqlite::SCHEMA_VERSION,
                ..
            }
        ),
        "got {err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("newer dispatch"), "says why: {msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "names the file: {msg}"
    );
    let conn = raw(&path);
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version");
    assert_eq!(version, 999, "the schema version was not touched");
    let runs: i64 = conn
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .expect("count");
    assert_eq!(runs, 1, "the data was not touched");
}

#[test]
fn opening_creates_missing_directories_and_reopening_finds_the_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir
        .path()
        .join("project")
        .join(".dispatch")
        .join("dispatch.db");
    let store = open(&path, Duration::from_secs(1));
    assert_eq!(store.path(), path);
    let created = block_on(store.create_run(&new_run(id(1), "p", 10))).expect("create");
    drop(store);

    let again = open(&path, Duration::from_secs(1));
    assert_eq!(block_on(again.get_run(&created.id)).expect("get"), created);
    let mode: String = raw(&path)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal", "readers never wait for writers");
}

#[test]
fn a_file_that_is_not_a_database_is_reported_as_damaged_with_how_to_recover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let junk = b"this is not an SQLite database, it is a plain text file".repeat(4);
    std::fs::write(&path, &junk).expect("write junk");
    let err = SqliteStore::open(&path, Duration::from_secs(1)).expect_err("refused");
    assert!(matches!(err, StoreError::Damaged { .. }), "got {err:?}");
    let line = err.to_string();
    assert!(
        line.contains("is damaged") && line.contains(".dump"),
        "says what is wrong and how to save what is left: {line}"
    );
    assert_eq!(
        std::fs::read(&path).expect("still there"),
        junk,
        "the file was left as it was"
    );
}

#[test]
fn an_unreadable_stored_state_is_reported_as_corrupt_naming_the_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = open(&path, Duration::from_secs(1));
    let run: RunId = block_on(store.create_run(&new_run(id(1), "p", 10)))
        .expect("create")
        .id;
    raw(&path)
        .execute("UPDATE runs SET state = '{\"status\":\"exploded\"}'", [])
        .expect("damage the row");
    for result in [
        block_on(store.get_run(&run)).map(drop),
        block_on(store.list_runs(&RunFilter::default())).map(drop),
    ] {
        match result {
            Err(StoreError::Corrupt { message, .. }) => {
                assert!(message.contains(run.as_str()), "names the run: {message}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}

#[test]
fn three_connections_racing_over_1000_runs_claim_each_exactly_once() {
    use dispatch_store::QueueStore;
    use dispatch_store::conformance::request;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = open(&path, Duration::from_secs(5));
    block_on(async {
        for n in 1..=1000u128 {
            store
                .create_run(&new_run(id(n), "p", n as i64))
                .await
                .expect("create");
        }
    });
    let gate = Arc::new(Barrier::new(3));
    let claimers: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|worker| {
            let (path, gate) = (path.clone(), gate.clone());
            thread::spawn(move || {
                let store = open(&path, Duration::from_secs(30));
                gate.wait();
                block_on(async {
                    let mut mine = Vec::new();
                    loop {
                        let batch = store
                            .claim(&request(worker, 25, 10_000))
                            .await
                            .expect("claim under contention");
                        if batch.is_empty() {
                            return mine;
                        }
                        mine.extend(batch.into_iter().map(|c| c.run.id));
                    }
                })
            })
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    for claimer in claimers {
        for run in claimer.join().expect("claimer thread") {
            assert!(seen.insert(run.clone()), "run {run} was claimed twice");
        }
    }
    assert_eq!(seen.len(), 1000, "every run was claimed");
}

#[test]
fn racing_dispatches_with_one_idempotency_key_create_exactly_one_run() {
    use dispatch_store::{Created, ReliabilityStore, RunExtras};
    const RACERS: usize = 8;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    drop(open(&path, Duration::from_secs(5)));
    let barrier = Arc::new(Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|i| {
            let (path, barrier) = (path.clone(), Arc::clone(&barrier));
            thread::spawn(move || {
                let store = open(&path, Duration::from_secs(10));
                let extras = RunExtras {
                    idempotency_key: Some("race".into()),
                    ..RunExtras::default()
                };
                barrier.wait();
                block_on(store.create_run_with(
                    &new_run(id(100 + i as u128), "racer", i as i64),
                    &extras,
                    true,
                ))
                .expect("every racer gets an answer")
            })
        })
        .collect();
    let results: Vec<Created> = racers
        .into_iter()
        .map(|r| r.join().expect("racer thread"))
        .collect();
    let new: Vec<_> = results
        .iter()
        .filter(|c| matches!(c, Created::New(_)))
        .collect();
    assert_eq!(new.len(), 1, "exactly one racer created the run");
    let winner = new[0].run().id.clone();
    assert!(
        results.iter().all(|c| c.run().id == winner),
        "every other racer got the winner's run back"
    );
    let all = block_on(open(&path, Duration::from_secs(5)).list_runs(&RunFilter::default()))
        .expect("list");
    assert_eq!(all.len(), 1);
}

/// The schema as version 1 of dispatch wrote it (before the reliability columns).
const SCHEMA_V1: &str = "
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
";

#[test]
fn a_version_1_database_is_migrated_and_keeps_its_runs() {
    use dispatch_store::{ReliabilityStore, RunExtras};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    {
        let conn = raw(&path);
        conn.execute_batch(SCHEMA_V1).expect("the v1 schema");
        conn.execute_batch(
            "INSERT INTO runs (id, version, parcel_digest, parcel_name, operation, status, state, \
             attempt, payload, brief_sha256, created_at, updated_at) VALUES \
             ('0000000000000000000000000000002a', 1, 'd', 'old', 'job', 'queued', \
             '{\"status\":\"queued\"}', 1, '{}', 'b', 5, 5); \
             PRAGMA user_version = 1;",
        )
        .expect("a v1 run");
    }
    let store = open(&path, Duration::from_secs(5));
    let run = block_on(store.get_run(&id(42))).expect("the old run reads");
    assert_eq!(run.parcel_name, "old");
    assert_eq!(
        block_on(store.run_extras(&id(42))).expect("extras"),
        RunExtras::default(),
        "an old run has no extras"
    );
    let version: i64 = raw(&path)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version");
    assert_eq!(version, dispatch_store::sqlite::SCHEMA_VERSION);
    assert_eq!(
        run.trigger,
        dispatch_core::Trigger::Manual,
        "an old run was dispatched by hand"
    );
    block_on(store.create_run_with(&new_run(id(43), "new", 6), &RunExtras::default(), true))
        .expect("new runs go in next to old ones");
}

#[test]
fn tokens_made_before_scopes_are_admin_and_never_expire_after_the_migration() {
    use dispatch_store::{TokenScope, TokenStore};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    drop(open(&path, Duration::from_secs(5)));
    // Back to version 24, as the binary before scopes (and worker hosts,
    // and objects in the database) left it, with a token.
    raw(&path)
        .execute_batch(
            "DROP TABLE webhook_deliveries; \
             DROP TABLE blob_uploads; DROP TABLE blob_parts; DROP TABLE blobs; \
             DROP TABLE project_quotas; DROP TABLE quota_usage; \
             DROP INDEX IF EXISTS runs_live_by_project; \
             DROP TABLE token_projects; DROP INDEX runs_by_project; \
             ALTER TABLE runs DROP COLUMN project; \
             DROP TABLE notifications; \
             ALTER TABLE tokens DROP COLUMN scope; \
             ALTER TABLE tokens DROP COLUMN expires_at; \
             ALTER TABLE workers DROP COLUMN host; \
             ALTER TABLE workers DROP COLUMN pid; \
             INSERT INTO tokens (id, name, hash, created_at) VALUES ('old', 'ci', 'h', 5); \
             PRAGMA user_version = 24;",
        )
        .expect("a version 24 database");
    let store = open(&path, Duration::from_secs(5));
    let old = block_on(store.find_token("h"))
        .expect("find")
        .expect("the old token still works");
    assert_eq!(
        (old.scope, old.expires_at),
        (TokenScope::Admin, None),
        "an old token keeps all its powers"
    );
}

#[test]
fn runs_and_tokens_made_before_projects_are_in_the_default_project() {
    use dispatch_store::{RunStore, TokenRecord, TokenScope, TokenStore};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = open(&path, Duration::from_secs(5));
    block_on(store.create_run(&new_run(id(1), "p", 1))).expect("create");
    let old = TokenRecord {
        id: "old".into(),
        name: "ci".into(),
        created_at: 5,
        revoked_at: None,
        scope: TokenScope::Run,
        expires_at: None,
        projects: Vec::new(),
    };
    block_on(store.create_token(&old, "h")).expect("token");
    drop(store);
    // Back to the version before projects (quotas, then the live-run
    // index dropped, then `runs_by_end` as equalities, came after them).
    let conn = raw(&path);
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    conn.execute_batch(&format!(
        "DROP TABLE project_quotas; DROP TABLE quota_usage; DROP INDEX IF EXISTS runs_live_by_project; \
         DROP TABLE token_projects; DROP INDEX runs_by_project; \
         ALTER TABLE runs DROP COLUMN project; PRAGMA user_version = {};",
        version - 4
    ))
    .expect("a database from before projects");
    drop(conn);
    let store = open(&path, Duration::from_secs(5));
    let run = block_on(store.get_run(&id(1))).expect("the old run");
    assert_eq!(run.project, "default");
    let token = block_on(store.find_token("h"))
        .expect("find")
        .expect("the old token still works");
    assert!(token.projects.is_empty(), "bound to no project");
    assert_eq!(
        token.role_in("payments"),
        Some(TokenScope::Run),
        "its scope everywhere"
    );
}

#[test]
fn deferred_checkpoints_are_caught_up_by_the_next_write_which_starts_the_wal_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(&dir);
    let store = open(&path, Duration::from_secs(5));
    let frames = |path: &Path| -> i64 {
        // (busy, frames in the WAL, frames checkpointed)
        raw(path)
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
            .expect("checkpoint")
    };
    store.defer_checkpoints(40);
    for n in 1..=40 {
        block_on(store.create_run(&new_run(id(n), "p", n as i64))).expect("create");
    }
    assert_eq!(
        std::fs::metadata(path.with_extension("db-wal"))
            .map(|m| m.len() > 32 * 4096)
            .ok(),
        Some(true),
        "40 writes left their frames in the WAL, unchecked"
    );
    // This write checkpoints them all first, then starts the WAL over:
    // what is left is its own few frames.
    block_on(store.create_run(&new_run(id(41), "p", 41))).expect("create");
    let after = frames(&path);
    assert!(after <= 12, "the WAL started over: {after} frames");
    let runs = block_on(store.list_runs(&RunFilter::default())).expect("list");
    assert_eq!(runs.len(), 41, "every run is stored");
}

/// An object may not grow past `MAX_BLOB`: the part that would take it
/// over is refused and the upload stays as it was. (The upload's size is
/// set near the limit by hand: 2 GiB of parts is no test.)
#[tokio::test]
async fn a_part_that_takes_an_object_over_the_limit_is_refused() {
    use dispatch_store::{BlobExpect, BlobStore, MAX_BLOB};
    let (store, dir) = fresh_store().await;
    store.begin_blob_upload("big", 1).await.expect("begin");
    store.put_blob_part("big", 0, b"abc").await.expect("part");
    let raw = rusqlite::Connection::open(db_path(&dir)).expect("a raw connection");
    raw.execute(
        "UPDATE blob_uploads SET size = ?1 WHERE upload = 'big'",
        [MAX_BLOB as i64 - 10],
    )
    .expect("near the limit");
    let err = store
        .put_blob_part("big", 1, &[0u8; 11])
        .await
        .expect_err("over the limit");
    assert!(
        matches!(err, StoreError::BlobTooLarge { limit, .. } if limit == MAX_BLOB),
        "{err:?}"
    );
    assert!(err.to_string().contains("--artifacts"), "{err}");
    // Exactly at the limit is fine; rewriting a part counts it once.
    store
        .put_blob_part("big", 1, &[0u8; 10])
        .await
        .expect("at the limit");
    store
        .put_blob_part("big", 1, &[1u8; 10])
        .await
        .expect("rewritten");
    let meta = store
        .commit_blob("k", "big", &BlobExpect::Any, 2)
        .await
        .expect("commit")
        .expect("committed");
    assert_eq!(meta.size, MAX_BLOB);
}
