//! A worker's writer saves the runs' state changes, events and log chunks
//! over connections of its own on PostgreSQL (issue #38 item 2): a
//! connection keeps its buffers at the size of the largest statement it
//! sent, and the writer's are the large ones, so they stay on the writer's
//! few connections instead of every one of the worker's pool.

use crate::remote_common;

use remote_common::{Client, Server, Worker, postgres};

#[test]
fn a_workers_writes_go_over_its_writers_own_connections() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let _worker = Worker::start(db.url(), "writes", &["--slots", "4"]);
    let client = Client::new(&server);
    let agent = client.agent(
        "chatty",
        "echo a line for the log; echo '{\"ok\":1}' > \"$DISPATCH_OUTPUT\"",
    );
    let ids: Vec<String> = (0..3)
        .map(|_| client.ok(&["run", &agent, "--detach"]).trim().to_string())
        .collect();
    for id in &ids {
        client.ok(&["wait", id, "--timeout-ms", "60000"]);
        assert_eq!(client.inspect(id)["status"], "succeeded", "{id}");
    }
    let count = |name: &str| {
        db.scalar_blocking(&format!(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = '{name}'"
        ))
        .parse::<u32>()
        .expect("a count")
    };
    let writer = count("dispatch-worker-writer");
    assert!(
        (1..=3).contains(&writer),
        "the writer's own connections, at most one per kind of write: {writer}"
    );
}
