//! The permission review as a run state (issue #37, item 5): a run the
//! policy's `review` rule sends to a person is created in `review`, shown
//! with its reason by `ps`, `inspect-run` and the API, claimed by nobody;
//! `dispatch approve` runs it (locally with no daemon, on a cluster through
//! a worker), `dispatch deny` cancels it with the reviewer and rationale.
//! Locally on SQLite, and on a cluster on PostgreSQL through the HTTP API.

use crate::common;
use crate::native_common;
use crate::remote_common;

use std::process::Command;

use common::{Dispatch, eventually};
use native_common::events_of;
use remote_common::{Client, Server, Worker, postgres};
use serde_json::{Value, json};

const POLICY: &str = r#"package dispatch

review contains "deploys need a person" if {
    input.action == "create_run"
    input.parcel.name == "deploy"
}

modify := {"limit_cost_usd": 0.5} if {
    input.action == "create_run"
    input.parcel.name == "deploy"
}
"#;

/// A deploy agent that waits for `go` in `dir` (when `gated`), then says so.
fn deploy_script(dir: &std::path::Path, gated: bool) -> String {
    let gate = match gated {
        true => format!(
            "while [ ! -f {} ]; do sleep 0.02; done\n",
            dir.join("go").display()
        ),
        false => String::new(),
    };
    format!(
        "{gate}echo deployed\necho '{{\"type\":\"output\",\"value\":\"deployed\"}}' >> \"$DISPATCH_EVENTS\"\n"
    )
}

fn local() -> Dispatch {
    let d = Dispatch::new();
    std::fs::create_dir_all(d.root()).expect("root");
    std::fs::write(d.root().join("policy.rego"), POLICY).expect("policy");
    d
}

/// `dispatch run DIR --detach`: the id, and what it said on stderr.
fn dispatched(d: &Dispatch, dir: &std::path::Path) -> (String, String) {
    let out = d.run(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    assert!(out.status.success(), "{out:?}");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn a_run_in_review_waits_for_a_person_then_runs_or_is_cancelled_locally() {
    let d = local();
    let deploy = d.agent("deploy", &deploy_script(d.dir.path(), false));
    let (id, said) = dispatched(&d, &deploy);
    assert!(
        said.contains(&format!("run {id} waits in review: deploys need a person"))
            && said.contains("dispatch approve"),
        "{said}"
    );

    // Shown with its reason; claimed by nobody; `wait` keeps waiting.
    let ps = d.ok(&["ps"]);
    assert!(ps.contains("review: deploys need a person"), "{ps}");
    let listed: Value =
        serde_json::from_str(&d.ok(&["ps", "--filter", "status=review", "--format", "json"]))
            .expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed:#}");
    let doc = d.inspect(&id);
    assert_eq!(doc["status"], "review", "{doc:#}");
    assert_eq!(doc["state"]["reason"], "deploys need a person", "{doc:#}");
    let decision = events_of(&doc, "policy").remove(0);
    assert_eq!(decision["decision"], "review", "{decision:#}");
    assert_eq!(decision["reasons"], json!(["deploys need a person"]));
    let out = d.run(&["wait", &id, "--timeout-ms", "300"]);
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("still review"),
        "{out:?}"
    );
    let table = d.ok(&["approvals", "ls"]);
    assert!(
        table.contains("policy-review") && table.contains("deploys need a person"),
        "{table}"
    );

    // Approved with no approval named (its only one): it runs, no daemon.
    let out = d.run(&[
        "approve",
        &id[..12],
        "--by",
        "ada",
        "--rationale",
        "release window",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("approved `policy-review` of run"),
        "{out:?}"
    );
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["output"], "deployed", "{doc:#}");
    assert_eq!(doc["attempt"], 1, "{doc:#}");
    let decided = events_of(&doc, "approval_decided").remove(0);
    assert_eq!(
        (&decided["id"], &decided["decision"], &decided["by"]),
        (&json!("policy-review"), &json!("approve"), &json!("ada"))
    );
    let queued = events_of(&doc, "state")
        .into_iter()
        .find(|s| s["from"] == "review")
        .expect("the approval's state event");
    assert_eq!(
        (&queued["to"], &queued["by"], &queued["rationale"]),
        (&json!("queued"), &json!("ada"), &json!("release window"))
    );

    // Denied: cancelled, never run, with who and why.
    let (other, _) = dispatched(&d, &deploy);
    d.ok(&[
        "deny",
        &other,
        "policy-review",
        "--by",
        "bob",
        "--rationale",
        "not on a Friday",
    ]);
    let doc = d.inspect(&other);
    assert_eq!(doc["status"], "cancelled", "{doc:#}");
    assert_eq!(
        doc["state"]["reason"], "denied in review by bob: not on a Friday",
        "{doc:#}"
    );
    assert_eq!(doc["state"]["started_at"], Value::Null, "{doc:#}");

    // Bad input: one line each, nothing changed.
    let err = d.fails(&["approve", &other], 125);
    assert!(
        err.contains("already cancelled; there is nothing to approve"),
        "{err}"
    );
    let hello = d.agent("hello", "echo hi");
    let created = d.ok(&["create", hello.to_str().expect("utf-8")]);
    let err = d.fails(&["approve", &created], 125);
    assert!(
        err.contains("is created and waits for no approval; there is nothing to approve"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = d.fails(&["approve", &created, "policy-review"], 125);
    assert!(err.contains("has no approval `policy-review`"), "{err}");
    let err = d.fails(&["start", &dispatched(&d, &deploy).0], 125);
    assert!(
        err.contains("waits in review (deploys need a person)"),
        "{err}"
    );
}

#[test]
fn deciding_twice_keeps_the_first_and_stop_rm_and_prune_handle_a_run_in_review() {
    let d = local();
    let deploy = d.agent("deploy", &deploy_script(d.dir.path(), true));
    let (id, _) = dispatched(&d, &deploy);
    d.ok(&["approve", &id, "--by", "ada"]);
    eventually(20, "the approved run to start", || {
        d.status(&id) == "running"
    });
    let err = d.fails(&["deny", &id, "policy-review", "--by", "bob"], 125);
    assert!(
        err.contains("approval `policy-review` of run")
            && err.contains("already decided: approve by ada"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    std::fs::write(d.dir.path().join("go"), "").expect("go");
    assert_eq!(d.wait_terminal(&id)["status"], "succeeded");

    // Stopped while in review: cancelled, its approval with it.
    let (stopped, _) = dispatched(&d, &deploy);
    d.ok(&["stop", &stopped]);
    let doc = d.inspect(&stopped);
    assert_eq!(doc["status"], "cancelled", "{doc:#}");
    assert_eq!(doc["state"]["reason"], "cancelled in review", "{doc:#}");
    let all: Value =
        serde_json::from_str(&d.ok(&["approvals", "ls", "-a", "--format", "json"])).expect("json");
    let ended = all
        .as_array()
        .expect("approvals")
        .iter()
        .find(|a| a["run_id"] == stopped.as_str())
        .expect("its approval");
    assert_eq!(ended["decision"], "cancelled", "{all:#}");

    // Pruning finished runs keeps the one in review; `rm` needs -f.
    let (waiting, _) = dispatched(&d, &deploy);
    d.ok(&["prune", "--force"]);
    assert_eq!(d.status(&waiting), "review");
    let err = d.fails(&["rm", &waiting], 125);
    assert!(err.contains("is review; stop it first"), "{err}");
    d.ok(&["rm", "-f", &waiting]);
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "", "everything else was pruned");
}

/// `dispatch token create` on the server's PostgreSQL database.
fn token(db: &str, name: &str, scope: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args([
            "token",
            "create",
            "--name",
            name,
            "--scope",
            scope,
            "--database-url",
            db,
        ])
        .env_remove("DISPATCH_HOST")
        .env(
            "DISPATCH_ROOT",
            tempfile::tempdir().expect("tempdir").path(),
        )
        .output()
        .expect("dispatch token");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One API request with `token`: the status and the JSON answer.
fn call(
    server: &Server,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let body = body.map(Value::to_string);
    let response = dispatch_server::client::request(
        &format!("http://{}", server.host),
        method,
        path,
        &[("authorization", &auth)],
        body.as_deref().map(str::as_bytes),
    )
    .expect("the server answers");
    let status = response.status;
    let text = response.text().expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn on_a_cluster_a_run_in_review_is_decided_through_the_api_by_a_named_token() {
    let Some(db) = postgres() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.rego");
    std::fs::write(&file, POLICY).expect("policy");
    let server = Server::start_with_env(
        Some(db.url()),
        &["--workers", "0", "--require-auth"],
        &[("DISPATCH_POLICY", file.to_str().expect("utf-8"))],
    );
    let _worker = Worker::start(db.url(), "w1", &["--slots", "2"]);
    let runner = token(db.url(), "ci", "run");
    let approver = token(db.url(), "release-bot", "approve");
    let client = Client::new(&server);
    let deploy = client.agent("deploy", &deploy_script(dir.path(), false));

    let out = client.run_with(&["run", &deploy, "--detach"], Some(&runner));
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("run {id} waits in review: deploys need a person")),
        "{out:?}"
    );
    let (status, run) = call(&server, &runner, "GET", &format!("/v1/runs/{id}"), None);
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "review", "{run:#}");
    assert_eq!(run["state"]["reason"], "deploys need a person", "{run:#}");
    let (_, listed) = call(&server, &runner, "GET", "/v1/runs?status=review", None);
    assert_eq!(
        listed["runs"].as_array().map(Vec::len),
        Some(1),
        "{listed:#}"
    );
    let (_, report) = call(
        &server,
        &runner,
        "GET",
        &format!("/v1/runs/{id}/report"),
        None,
    );
    assert_eq!(
        report["status_text"], "review: deploys need a person",
        "{report:#}"
    );
    assert_eq!(report["approvals"][0]["id"], "policy-review", "{report:#}");
    let out = client.run_with(&["ps"], Some(&runner));
    let ps = String::from_utf8_lossy(&out.stdout);
    assert!(ps.contains("review: deploys need a person"), "{ps}");
    // The worker claims nothing meanwhile.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (_, run) = call(&server, &runner, "GET", &format!("/v1/runs/{id}"), None);
    assert_eq!(
        (run["status"].as_str(), run["attempt"].as_u64()),
        (Some("review"), Some(1))
    );
    let (_, pending) = call(
        &server,
        &approver,
        "GET",
        &format!("/v1/approvals?run={id}"),
        None,
    );
    assert_eq!(
        pending["approvals"][0]["id"], "policy-review",
        "{pending:#}"
    );

    // Approved by the API: the worker runs it; the token is on the record.
    let path = format!("/v1/runs/{id}/approvals/policy-review");
    let approve = json!({"decision": "approve", "by": "ada", "rationale": "change 42"});
    let (status, decided) = call(&server, &runner, "POST", &path, Some(&approve));
    assert_eq!(status, 403, "a runner cannot approve: {decided}");
    let (status, decided) = call(&server, &approver, "POST", &path, Some(&approve));
    assert_eq!(status, 200, "{decided}");
    assert_eq!(
        decided["decided_by"], "ada (token release-bot)",
        "{decided:#}"
    );
    let done = eventually_status(&server, &approver, &id, "succeeded");
    assert_eq!(done["output"], "deployed", "{done:#}");
    // Twice: the first decision stands.
    let deny = json!({"decision": "deny", "by": "bob"});
    let (status, again) = call(&server, &approver, "POST", &path, Some(&deny));
    assert_eq!(
        (status, again["code"].as_str()),
        (409, Some("already_decided")),
        "{again}"
    );

    // Denied through the CLI (`--host`): cancelled with who and why.
    let out = client.run_with(&["run", &deploy, "--detach"], Some(&runner));
    let other = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = client.run_with(
        &[
            "deny",
            &other,
            "--by",
            "release-bot",
            "--rationale",
            "freeze",
        ],
        Some(&approver),
    );
    assert!(out.status.success(), "{out:?}");
    let doc = eventually_status(&server, &approver, &other, "cancelled");
    assert_eq!(
        doc["state"]["reason"], "denied in review by release-bot: freeze",
        "{doc:#}"
    );
    assert_eq!(doc["attempt"], 1, "{doc:#}");
    // A replay of it is asked of the policy again: in review, not run.
    let (status, replayed) = call(
        &server,
        &runner,
        "POST",
        &format!("/v1/runs/{other}/replay"),
        Some(&json!({"allow_side_effects": true})),
    );
    assert_eq!(status, 201, "{replayed}");
    assert_eq!(
        (&replayed["status"], &replayed["trigger"]),
        (&json!("review"), &json!("replay")),
        "{replayed:#}"
    );
    // Approving what is not in review any more, or a run with no such approval.
    let (status, again) = call(
        &server,
        &approver,
        "POST",
        &format!("/v1/runs/{other}/approvals/policy-review"),
        Some(&approve),
    );
    assert_eq!(
        (status, again["code"].as_str()),
        (409, Some("already_decided")),
        "{again}"
    );
    let hello = client.agent("hello", "echo hi");
    let out = client.run_with(&["create", &hello], Some(&runner));
    assert!(out.status.success(), "{out:?}");
    let created = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (status, none) = call(
        &server,
        &approver,
        "POST",
        &format!("/v1/runs/{created}/approvals/policy-review"),
        Some(&approve),
    );
    assert_eq!(
        (status, none["code"].as_str()),
        (404, Some("approval_not_found")),
        "{none}"
    );
    let out = client.run_with(&["approve", &id], Some(&approver));
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("already succeeded; there is nothing to approve"),
        "{out:?}"
    );
}

/// `GET /v1/runs/{id}` until the run is `status` (deadline 30 s).
fn eventually_status(server: &Server, token: &str, id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    eventually(30, &format!("run {id} to be {status}"), || {
        last = call(server, token, "GET", &format!("/v1/runs/{id}"), None).1;
        last["status"] == status
    });
    last
}
