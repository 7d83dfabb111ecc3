//! Retention: `dispatch server --retention` deletes old finished runs (with
//! their events, records and files) in the background and keeps what the
//! spec does not name, dead letters and runs still to act on; `dispatch
//! prune --older-than --status` does it by hand; bad specs stop the server
//! from starting with one line.

use crate::common;
use crate::remote_common;

use std::path::Path;

use common::{Dispatch, eventually};
use remote_common::{Client, Server, postgres};

/// Whether any file or directory under `dir` is named after run `id`.
fn files_of(dir: &Path, id: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.contains(id) {
            found.push(entry.path().display().to_string());
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(files_of(&entry.path(), id));
        }
    }
    found
}

fn status_of(server: &Server, id: &str) -> u16 {
    server.call("GET", &format!("/v1/runs/{id}"), None).0
}

/// How many events of run `id` the server's database holds (read from the
/// database itself: the API streams events as SSE).
fn events_of(server: &Server, database_url: Option<&str>, id: &str) -> usize {
    use dispatch_store::{EventStore, PgStore, SqliteStore};
    let id: dispatch_core::RunId = id.parse().expect("a run id");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(async {
            let events = match database_url {
                Some(url) => {
                    let store = PgStore::connect(url, 1).await.expect("the database");
                    store.list_events(&id, 0, 1000).await
                }
                None => {
                    let path = server.state.path().join(".dispatch").join("dispatch.db");
                    let store = SqliteStore::open(&path, std::time::Duration::from_secs(5))
                        .expect("the database");
                    store.list_events(&id, 0, 1000).await
                }
            };
            events.expect("the run is there").len()
        })
}

/// succeeded=0s deletes a success at the next pass; cancelled=1h keeps a
/// fresh cancellation; a failure stays for its dead letter; events=0s
/// empties the kept runs' logs but the dead-lettered one's.
fn retention_deletes_what_the_spec_names(database_url: Option<&str>) {
    let server = Server::start_on(
        database_url,
        &[
            "--retention",
            "succeeded=0s,cancelled=1h,failed=0s,events=0s",
            "--retention-interval",
            "1s",
        ],
    );
    let client = Client::new(&server);
    let slow = client.agent("slow", "sleep 30\n");
    let bad = client.agent("bad", "echo failing\nexit 3\n");
    let good = client.agent("good", "echo hello\n");

    let cancelled = client.ok(&["run", "-d", &slow]);
    client.ok(&["stop", &cancelled]);
    let out = client.run(&["run", &bad]);
    assert_eq!(out.status.code(), Some(3));
    let failed = client.ok(&["ps", "-a", "-q", "--filter", "status=failed"]);
    let ok = client.ok(&["run", "-d", &good]);
    eventually(60, "the succeeded run is deleted", || {
        status_of(&server, &ok) == 404
    });
    assert_eq!(status_of(&server, &cancelled), 200, "cancelled=1h keeps it");
    assert_eq!(status_of(&server, &failed), 200, "its dead letter keeps it");
    let (_, letters) = server.call("GET", "/v1/dead-letters", None);
    assert!(letters.to_string().contains(&failed), "{letters}");
    eventually(30, "the cancelled run's events are deleted", || {
        events_of(&server, database_url, &cancelled) == 0
    });
    assert_eq!(
        server.call("GET", &format!("/v1/runs/{cancelled}"), None).1["status"],
        "cancelled",
        "the run itself stays"
    );
    assert!(
        events_of(&server, database_url, &failed) > 0,
        "a dead-lettered run keeps its events"
    );
    let left = files_of(server.state.path(), &ok);
    assert!(
        left.is_empty(),
        "the deleted run's files are gone: {left:?}"
    );
}

#[test]
fn server_retention_deletes_old_finished_runs_on_sqlite() {
    retention_deletes_what_the_spec_names(None);
}

#[test]
fn server_retention_deletes_old_finished_runs_on_postgres() {
    let Some(db) = postgres() else { return };
    retention_deletes_what_the_spec_names(Some(db.url()));
}

#[test]
fn a_bad_retention_spec_stops_the_server_with_one_line() {
    let d = Dispatch::new();
    for (args, says) in [
        (&["--retention", "succeeded=7"][..], "not a duration"),
        (&["--retention", "running=7d"][..], "only finished runs"),
        (&["--retention", "done=1d"][..], "not a key"),
        (
            &["--retention", "succeeded=1d,succeeded=2d"][..],
            "given twice",
        ),
        (&["--retention", ""][..], "empty"),
        (
            &["--retention", "failed=30d", "--retention-interval", "0s"][..],
            "not a positive duration",
        ),
    ] {
        let mut all = vec!["server", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let e = d.fails(&all, 125);
        assert!(e.contains(says), "{args:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{args:?}: one line: {e}");
    }
}

#[test]
fn prune_older_than_and_status_select_like_the_filters() {
    let d = Dispatch::new();
    let good = d.agent("good", "exit 0\n");
    let bad = d.agent("bad", "exit 3\n");
    let ok = d.detach(&good, "{}");
    d.wait_terminal(&ok);
    let failed = d.detach(&bad, "{}");
    d.wait_terminal(&failed);
    assert_eq!(
        d.ok(&["prune", "-f", "--older-than", "1h", "--status", "succeeded"]),
        "",
        "nothing ended an hour ago"
    );
    assert_eq!(
        d.ok(&[
            "prune",
            "-f",
            "--older-than",
            "0s",
            "--status",
            "succeeded,cancelled"
        ]),
        ok
    );
    assert_eq!(
        d.ok(&[
            "prune",
            "-f",
            "--older-than",
            "0s",
            "--status",
            "failed",
            "--dead-letters"
        ]),
        failed
    );
    for (args, says) in [
        (&["--older-than", "yesterday"][..], "not a duration"),
        (
            &["--older-than", "2026-01-01T00:00:00Z"][..],
            "not a duration",
        ),
        (&["--status", "running"][..], "finished runs only"),
        (&["--status", "succeeded,"][..], "needs a finished status"),
    ] {
        let mut all = vec!["prune", "-f"];
        all.extend_from_slice(args);
        let e = d.fails(&all, 125);
        assert!(e.contains(says), "{args:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{args:?}: one line: {e}");
    }
}
