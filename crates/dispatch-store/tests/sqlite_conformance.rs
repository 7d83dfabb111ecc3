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
