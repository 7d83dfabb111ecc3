//! What a write of a run's status costs on SQLite (issue #38 item 6).
//!
//! Every claim and every end of a run changes its `status`, so SQLite
//! evaluates the predicate of each partial index over `status` for the old
//! and the new row. A predicate written `status IN (a, b, c, …)` with more
//! than two constants is evaluated through an ephemeral b-tree that SQLite
//! builds anew each time the statement runs, two per update: that was most
//! of the noop drain's slowdown against `3bf2759` (the claim's and the
//! end's updates 18.5 and 18.0 µs against 12.0 and 10.4, SQLite alone).
//! The predicates are written as equalities instead.

use dispatch_store::sqlite::SqliteStore;
use rusqlite::Connection;

/// The statement's program, one opcode per row.
fn opcodes(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).expect("explain");
    stmt.query_map([], |row| row.get::<_, String>(1))
        .expect("the program")
        .collect::<Result<_, _>>()
        .expect("opcodes")
}

#[test]
fn a_status_update_builds_no_ephemeral_table_for_the_indexes_of_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dispatch.db");
    drop(SqliteStore::open(&path, std::time::Duration::from_secs(5)).expect("the store opens"));
    let conn = Connection::open(&path).expect("the database");
    for (what, sql) in [
        (
            "a claim",
            "UPDATE runs SET status = 'starting', updated_at = 1, lease_owner = 'w' WHERE id = 'x'",
        ),
        (
            "an end",
            "UPDATE runs SET status = 'succeeded', updated_at = 2, lease_owner = NULL WHERE id = 'x'",
        ),
    ] {
        let program = opcodes(&conn, sql);
        let ephemeral = program.iter().filter(|op| *op == "OpenEphemeral").count();
        assert_eq!(
            ephemeral, 0,
            "{what} builds {ephemeral} ephemeral tables each time it runs: a partial index of runs has an IN list (write it as equalities)"
        );
    }
}
