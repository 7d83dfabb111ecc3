//! Log shipping (`dispatch_server::ship`) against a real SQLite store: what a
//! worker's log file gains reaches the store in batches, exactly once, after
//! what earlier holders of the run shipped; and nothing of it once the run
//! was taken over.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatch_core::RunId;
use dispatch_runtime::Layout;
use dispatch_server::SharedStore;
use dispatch_server::ship::{BATCH_BYTES, LogShipper, QUIET_LOOK_EVERY};
use dispatch_store::conformance::{id, new_run, request};
use dispatch_store::{RunStore, SqliteStore, StoreError};

struct Fixture {
    dir: tempfile::TempDir,
    store: SharedStore,
    layout: Layout,
    run: RunId,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path().join(".dispatch"));
        std::fs::create_dir_all(layout.runs()).expect("runs dir");
        let sqlite =
            SqliteStore::open(&layout.db(), Duration::from_secs(5)).expect("a fresh database");
        let run = sqlite
            .create_run(&new_run(id(1), "p", 10))
            .await
            .expect("a run")
            .id;
        Fixture {
            dir,
            store: Arc::new(sqlite),
            layout,
            run,
        }
    }

    fn append(&self, bytes: &[u8]) {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.layout.log(&self.run))
            .and_then(|mut f| f.write_all(bytes))
            .expect("append to the log file");
    }

    async fn stored(&self) -> Vec<u8> {
        self.store
            .read_log(&self.run, 0, usize::MAX)
            .await
            .expect("read the stored log")
    }

    /// The size of every stored chunk.
    fn chunk_sizes(&self) -> Vec<usize> {
        let conn = rusqlite::Connection::open(self.layout.db()).expect("raw connection");
        let mut stmt = conn
            .prepare("SELECT length(data) FROM run_logs ORDER BY pos")
            .expect("prepare");
        stmt.query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }
}

#[tokio::test]
async fn a_log_ships_in_batches_from_where_the_file_stood_exactly_once() {
    let f = Fixture::new().await;
    // An earlier hold of the run on this worker shipped its part already.
    f.append(b"earlier\n");
    f.store
        .append_log(&f.run, 0, 0, b"earlier\n")
        .await
        .expect("shipped before");
    let shipper = LogShipper::new(f.store.clone(), &f.layout, &f.run, 0);
    shipper.flush().await.expect("nothing new to ship");
    assert_eq!(f.stored().await, b"earlier\n", "nothing shipped twice");

    let big: Vec<u8> = (0..150_000u32).map(|n| b'a' + (n % 26) as u8).collect();
    f.append(&big);
    shipper.flush().await.expect("flush");
    let mut want = b"earlier\n".to_vec();
    want.extend(&big);
    assert_eq!(f.stored().await, want);
    let sizes = f.chunk_sizes();
    assert!(
        sizes.iter().all(|&n| n as u64 <= BATCH_BYTES),
        "batches of at most 64 KiB: {sizes:?}"
    );

    drop(f.dir);
}

#[tokio::test]
async fn a_shipper_whose_run_was_taken_over_ships_nothing_more() {
    let f = Fixture::new().await;
    let shipper = LogShipper::new(f.store.clone(), &f.layout, &f.run, 0);
    f.append(b"attempt 1\n");
    shipper.flush().await.expect("flush");
    // Another worker claims the run (a new token) and appends.
    let taken = f
        .store
        .claim(&request("other", 1, 100))
        .await
        .expect("claim")
        .remove(0);
    assert!(taken.fence > 0);
    f.store
        .append_log(&f.run, taken.fence, 10, b"attempt 2\n")
        .await
        .expect("the new holder appends");
    f.append(b"attempt 1, late\n");
    for _ in 0..3 {
        let err = shipper.flush().await.expect_err("refused");
        assert!(
            matches!(err, StoreError::Fenced { fence: 0, .. }),
            "{err:?}"
        );
    }
    assert!(shipper.refused());
    assert_eq!(
        f.stored().await,
        b"attempt 1\nattempt 2\n",
        "nothing after theirs"
    );
    // `ship_while` runs the work to its end all the same, shipping nothing.
    f.append(b"attempt 1, later\n");
    assert_eq!(shipper.ship_while("test", async { 7 }).await, 7);
    assert_eq!(f.stored().await, b"attempt 1\nattempt 2\n");
}

/// Under `ship_while`: after `quiet`, a line is written and must be stored
/// while the work goes on (within `within`), then a last one, which must be
/// stored when the work ends; each exactly once.
async fn ships_while_working_and_at_the_end(
    f: &Fixture,
    shipper: LogShipper,
    quiet: Duration,
    within: Duration,
) {
    let work = async {
        tokio::time::sleep(quiet).await;
        f.append(b"while running\n");
        let deadline = Instant::now() + within;
        while f.stored().await != b"while running\n" {
            assert!(Instant::now() < deadline, "not shipped while running");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        f.append(b"at the end\n");
        42
    };
    assert_eq!(shipper.ship_while("test", work).await, 42);
    assert_eq!(
        f.stored().await,
        b"while running\nat the end\n",
        "the rest shipped when the work ended, exactly once"
    );
}

#[tokio::test]
async fn ship_while_ships_during_the_work_and_the_rest_when_it_ends() {
    let f = Fixture::new().await;
    let shipper = LogShipper::new(f.store.clone(), &f.layout, &f.run, 0);
    // Shipped within a batch delay or so, while the work goes on.
    ships_while_working_and_at_the_end(&f, shipper, Duration::ZERO, Duration::from_secs(10)).await;
}

/// A native run's shipper looks at its quiet log every two seconds, not
/// five times a second: what it writes after a quiet while still ships
/// while it runs, and all of it when it ends.
#[tokio::test]
async fn a_quiet_shipper_still_ships_during_the_work_and_everything_at_its_end() {
    let f = Fixture::new().await;
    let shipper =
        LogShipper::new(f.store.clone(), &f.layout, &f.run, 0).quiet_looks(QUIET_LOOK_EVERY);
    let quiet = Duration::from_millis(300);
    ships_while_working_and_at_the_end(&f, shipper, quiet, QUIET_LOOK_EVERY * 5).await;
}

#[tokio::test]
async fn a_wrong_guess_of_the_stored_length_costs_one_refusal_and_loses_nothing() {
    let f = Fixture::new().await;
    // Another holder shipped a part this shipper was told was not there.
    f.store
        .append_log(&f.run, 0, 0, b"theirs\n")
        .await
        .expect("shipped by another holder");
    let shipper = LogShipper::new(f.store.clone(), &f.layout, &f.run, 0).stored_from(0);
    f.append(b"ours\n");
    shipper.flush().await.expect("ship");
    assert_eq!(f.stored().await, b"theirs\nours\n");
    assert_eq!(shipper.stored_length().await, Some(12));

    // Right guesses append at once.
    let g = Fixture::new().await;
    let shipper = LogShipper::new(g.store.clone(), &g.layout, &g.run, 0).stored_from(0);
    g.append(b"first\n");
    shipper.flush().await.expect("ship");
    assert_eq!(g.stored().await, b"first\n");
}
