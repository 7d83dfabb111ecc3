//! `dispatch notify ls --host`: the server's notification outbox, listed as
//! the local one (a table, or `--format json`), from a real `dispatch
//! server` on SQLite that delivers to a receiver on loopback; a token bound
//! to projects is refused in one line (the outbox spans every project).

use crate::remote_common::{Client, Server};
use dispatch_test_support::eventually;
use dispatch_test_support::receiver::HttpReceiver;
use serde_json::Value;

#[test]
fn notify_ls_under_host_lists_the_servers_outbox() {
    let hooks = HttpReceiver::start().expect("http");
    let conf = tempfile::tempdir().expect("tempdir");
    let file = conf.path().join("notifications.toml");
    std::fs::write(
        &file,
        format!(
            "[channels.ops]\ntype = \"webhook\"\nurl = \"{}\"\nsecret = \"whsec-test-1234\"\n\n[failures]\nnotify = [\"ops\"]\n\n\
             [delivery]\npoll = \"50ms\"\nbackoff = \"100ms\"\n",
            hooks.url("/ops")
        ),
    )
    .expect("config");
    let server = Server::start_with_env(
        None,
        &[],
        &[("DISPATCH_NOTIFICATIONS", file.to_str().expect("utf-8"))],
    );
    let client = Client::new(&server);
    let agent = client.agent("broken", "echo broken >&2\nexit 3\n");
    let id = client.ok(&["run", &agent, "--detach"]);
    server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "failed");

    let listed = || -> Vec<Value> {
        let out = client.ok(&["notify", "ls", "--format", "json"]);
        serde_json::from_str::<Value>(&out)
            .expect("notify ls prints JSON")
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    eventually(30, "the server delivers the failure", || {
        listed()
            .first()
            .is_some_and(|n| n["outcome"] == "delivered")
    });
    let list = listed();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["run_id"], id.as_str());
    assert_eq!(list[0]["kind"], "run.failed");
    assert_eq!(list[0]["sent"], serde_json::json!(["ops"]));
    assert_eq!(hooks.posted_to("/ops").len(), 1);

    let table = client.ok(&["notify", "ls"]);
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.contains("RUN ID") && header.contains("EVENT") && header.contains("SENT TO"),
        "{table}"
    );
    assert!(
        table.contains("run.failed") && table.contains("delivered") && table.contains("ops"),
        "{table}"
    );
    let err = client.fails(&["notify", "ls", "--limit", "0"], 125);
    assert!(err.contains("limit=0: expected 1 to 1000"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = client.fails(&["notify", "check"], 125);
    assert!(err.contains("not the server's"), "{err}");
}

#[test]
fn a_token_bound_to_projects_may_not_read_the_outbox() {
    let server = Server::start(&["--require-auth"]);
    let bound = crate::projects::token(
        &server,
        None,
        &[
            "--name",
            "watch",
            "--project",
            "payments",
            "--role",
            "viewer",
        ],
    );
    let root = crate::projects::token(&server, None, &["--name", "root"]);
    let client = Client::new(&server);
    let out = client.run_with(&["notify", "ls"], Some(&bound));
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "token watch may not read the notification outbox: it is bound to projects (payments)"
        ),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = client.run_with(&["notify", "ls", "--format", "json"], Some(&root));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}
