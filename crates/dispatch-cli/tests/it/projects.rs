//! Projects and roles against a real `dispatch server --require-auth`, on
//! PostgreSQL with a `dispatch worker` and on SQLite: two projects, a token
//! of each role (`viewer`, `runner`, `approver`, `admin`) bound to one of
//! them, and an admin token bound to none. Each role does what it allows in
//! its project, and a token used on another project, or beyond its role, gets
//! 403 naming the project and what it lacks, through the CLI and the API;
//! listings show only the token's projects.

use crate::remote_common;

use std::process::Command;

use dispatch_test_support::eventually;
use remote_common::{Client, Server, Worker, postgres};
use serde_json::{Value, json};

/// `dispatch token create <args>` on the server's database; the token.
pub(crate) fn token(server: &Server, db: Option<&str>, args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dispatch"));
    command
        .args(["token", "create"])
        .args(args)
        .env("DISPATCH_ROOT", server.state.path().join(".dispatch"))
        .env_remove("DISPATCH_HOST")
        .env_remove("DISPATCH_PROJECT");
    if let Some(url) = db {
        command.args(["--database-url", url]);
    }
    let out = command.output().expect("dispatch token");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{args:?}: {err}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `dispatch token ls <args>` on the server's database.
fn token_ls(server: &Server, db: Option<&str>, args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dispatch"));
    command
        .args(["token", "ls"])
        .args(args)
        .env("DISPATCH_ROOT", server.state.path().join(".dispatch"))
        .env_remove("DISPATCH_HOST");
    if let Some(url) = db {
        command.args(["--database-url", url]);
    }
    let out = command.output().expect("dispatch token ls");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// One API request with `token`; the status and the JSON answer.
pub(crate) fn call(
    server: &Server,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let body = body.map(|b| b.to_string());
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

/// A 403 whose message says `says`.
fn refused(answer: (u16, Value), says: &str) {
    let (status, doc) = answer;
    assert_eq!(status, 403, "{doc}");
    assert_eq!(doc["code"], "forbidden", "{doc}");
    let message = doc["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "`{says}` in: {message}");
}

/// `dispatch <args>` as `token`, with `env`.
fn cli(client: &Client, token: &str, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    client
        .command()
        .env("DISPATCH_TOKEN", token)
        .env_remove("DISPATCH_PROJECT")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("dispatch runs")
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn ids(doc: &Value, key: &str) -> Vec<String> {
    doc[key]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            r["id"]
                .as_str()
                .or(r["run_id"].as_str())
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// An agent that asks for approval `send` and succeeds only when approved.
const ASKING: &str = "echo '{\"type\":\"approval\",\"id\":\"send\",\"summary\":\"Send?\",\"timeout_s\":3600}' >> \"$DISPATCH_EVENTS\"\n\
while [ ! -e \"$DISPATCH_APPROVALS/send.json\" ]; do sleep 0.02; done\n\
grep -q '\"decision\":\"approve\"' \"$DISPATCH_APPROVALS/send.json\"\n";

/// The whole story on one server (`db`: PostgreSQL, else its SQLite).
fn two_projects_and_four_roles(server: &Server, db: Option<&str>) {
    let root = token(server, db, &["--name", "root"]);
    let viewer = token(
        server,
        db,
        &[
            "--name",
            "watch",
            "--project",
            "payments",
            "--role",
            "viewer",
        ],
    );
    let runner = token(
        server,
        db,
        &[
            "--name",
            "ci",
            "--project",
            "payments",
            "--role",
            "runner",
            "--project",
            "search",
            "--role",
            "viewer",
        ],
    );
    let approver = token(
        server,
        db,
        &[
            "--name",
            "lead",
            "--project",
            "payments",
            "--role",
            "approver",
        ],
    );
    let owner = token(
        server,
        db,
        &[
            "--name",
            "owner",
            "--project",
            "payments",
            "--role",
            "admin",
        ],
    );
    let table = token_ls(server, db, &[]);
    assert!(
        table.contains("PROJECTS") && table.contains("payments:runner,search:viewer"),
        "{table}"
    );
    let listed: Value =
        serde_json::from_str(&token_ls(server, db, &["--format", "json"])).expect("JSON");
    let ci = listed
        .as_array()
        .and_then(|l| l.iter().find(|t| t["name"] == "ci"))
        .expect("the ci token");
    assert_eq!(
        ci["projects"],
        json!([{"project": "payments", "role": "runner"}, {"project": "search", "role": "viewer"}])
    );

    let client = Client::new(server);
    let hello = client.agent("hello", "echo hi\n");
    let careful = client.agent("careful", ASKING);

    // Runs: the runner in payments (by flag), the unbound admin in search
    // (by DISPATCH_PROJECT).
    let paid = ok(&cli(
        &client,
        &runner,
        &[],
        &["run", &hello, "--detach", "--project", "payments"],
    ));
    let searched = ok(&cli(
        &client,
        &root,
        &[("DISPATCH_PROJECT", "search")],
        &["run", &careful, "--detach"],
    ));
    ok(&cli(&client, &runner, &[], &["wait", &paid]));

    // A token used on another project, or beyond its role there: 403 naming both.
    let out = cli(
        &client,
        &runner,
        &[],
        &["run", &hello, "--detach", "--project", "search"],
    );
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("token ci may not run in project search: it is a viewer there"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let create = |project: &str| Some(json!({"parcel": "hello", "project": project}));
    refused(
        call(server, &viewer, "POST", "/v1/runs", create("payments")),
        "token watch may not run in project payments: it is a viewer there",
    );
    refused(
        call(server, &owner, "POST", "/v1/runs", create("search")),
        "token owner may not run in project search: it is bound to payments only",
    );
    refused(
        call(
            server,
            &viewer,
            "GET",
            &format!("/v1/runs/{searched}"),
            None,
        ),
        "token watch may not read in project search",
    );
    refused(
        call(
            server,
            &viewer,
            "GET",
            &format!("/v1/runs/{searched}/logs"),
            None,
        ),
        "project search",
    );
    refused(
        call(
            server,
            &viewer,
            "POST",
            &format!("/v1/runs/{paid}/cancel"),
            Some(json!({})),
        ),
        "may not run in project payments: it is a viewer there",
    );
    let (status, answer) = call(server, &viewer, "GET", &format!("/v1/runs/{paid}"), None);
    assert_eq!(
        (status, answer["project"].as_str()),
        (200, Some("payments"))
    );

    // Listings show the token's projects only; `?project=` must be one of them.
    let (_, page) = call(server, &viewer, "GET", "/v1/runs", None);
    assert_eq!(ids(&page, "runs"), vec![paid.clone()], "{page}");
    refused(
        call(server, &viewer, "GET", "/v1/runs?project=search", None),
        "may not read in project search",
    );
    let (_, page) = call(server, &runner, "GET", "/v1/runs", None);
    assert_eq!(ids(&page, "runs"), vec![searched.clone(), paid.clone()]);
    let (_, page) = call(server, &root, "GET", "/v1/runs?project=search", None);
    assert_eq!(ids(&page, "runs"), vec![searched.clone()]);
    let (status, page) = call(server, &root, "GET", "/v1/runs?project=Not%20One", None);
    assert_eq!(status, 400, "{page}");
    refused(
        call(server, &viewer, "GET", "/v1/usage?project=search", None),
        "may not read in project search",
    );
    assert_eq!(call(server, &viewer, "GET", "/v1/usage", None).0, 200);
    let ps = ok(&cli(&client, &runner, &[], &["ps", "-a"]));
    assert!(
        ps.contains("PROJECT") && ps.contains("payments") && ps.contains("search"),
        "{ps}"
    );
    let json: Value = serde_json::from_str(&ok(&cli(
        &client,
        &runner,
        &[("DISPATCH_PROJECT", "payments")],
        &["ps", "-a", "--format", "json"],
    )))
    .expect("ps JSON");
    assert_eq!(json.as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(json[0]["id"], paid.as_str());
    assert_eq!(json[0]["project"], "payments");

    // Approvals follow their run's project.
    eventually(30, "the approval to be asked for", || {
        let (_, doc) = call(server, &root, "GET", "/v1/approvals", None);
        doc["approvals"].as_array().is_some_and(|a| !a.is_empty())
    });
    let (_, doc) = call(server, &root, "GET", "/v1/approvals", None);
    assert_eq!(doc["approvals"][0]["project"], "search", "{doc}");
    let (_, doc) = call(server, &approver, "GET", "/v1/approvals", None);
    assert_eq!(doc["approvals"], json!([]), "not its project's: {doc}");
    let listed = |project: &str| {
        let out = cli(
            &client,
            &root,
            &[],
            &["approvals", "ls", "--format", "json", "--project", project],
        );
        let doc: Value = serde_json::from_str(&ok(&out)).expect("approvals JSON");
        doc.as_array().map_or(0, Vec::len)
    };
    assert_eq!((listed("search"), listed("payments")), (1, 0));
    let decide = format!("/v1/runs/{searched}/approvals/send");
    let body = Some(json!({"decision": "approve", "by": "ada"}));
    refused(
        call(server, &approver, "POST", &decide, body.clone()),
        "token lead may not approve in project search: it is bound to payments only",
    );
    refused(
        call(server, &runner, "POST", &decide, body.clone()),
        "token ci may not approve in project search: it is a viewer there",
    );
    let (status, answer) = call(server, &root, "POST", &decide, body);
    assert_eq!(status, 200, "{answer}");
    ok(&cli(&client, &root, &[], &["wait", &searched]));
    // The approver gets past its project's check (its run has ended:
    // nothing to decide, 404 or 409, not 403).
    let (status, answer) = call(
        server,
        &approver,
        "POST",
        &format!("/v1/runs/{paid}/approvals/none"),
        Some(json!({"decision": "approve", "by": "ada"})),
    );
    assert!(matches!(status, 404 | 409), "{status} {answer}");

    // Admin: removes its project's runs, not another's; a prune touches
    // every project and needs a token bound to none.
    refused(
        call(
            server,
            &approver,
            "DELETE",
            &format!("/v1/runs/{paid}"),
            None,
        ),
        "token lead may not administer in project payments: it is an approver there",
    );
    refused(
        call(
            server,
            &owner,
            "DELETE",
            &format!("/v1/runs/{searched}"),
            None,
        ),
        "token owner may not administer in project search",
    );
    refused(
        call(server, &owner, "POST", "/v1/runs/prune", Some(json!({}))),
        "touches every project",
    );
    let (status, answer) = call(server, &owner, "DELETE", &format!("/v1/runs/{paid}"), None);
    assert!(status < 300, "{status} {answer}");
    let (status, answer) = call(server, &root, "POST", "/v1/runs/prune", Some(json!({})));
    assert!(status < 300, "{status} {answer}");
    let (_, page) = call(server, &root, "GET", "/v1/runs", None);
    assert_eq!(ids(&page, "runs"), Vec::<String>::new(), "{page}");
}

#[test]
fn two_projects_and_four_roles_on_postgres_with_a_worker() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--require-auth", "--workers", "0"]);
    let _worker = Worker::start(db.url(), "w1", &["--slots", "2"]);
    two_projects_and_four_roles(&server, Some(db.url()));
}

#[test]
fn two_projects_and_four_roles_on_sqlite() {
    let server = Server::start(&["--require-auth"]);
    two_projects_and_four_roles(&server, None);
}

#[test]
fn local_runs_belong_to_their_project_and_bad_names_are_one_line() {
    let d = crate::common::Dispatch::new();
    let agent = d.agent("hello", "echo hi\n").to_string_lossy().to_string();
    let paid = d.ok(&["run", &agent, "--detach", "--project", "payments"]);
    let plain = d.ok(&["run", &agent, "--detach"]);
    d.ok(&["wait", &paid, &plain]);
    let json: Value =
        serde_json::from_str(&d.ok(&["ps", "-a", "--format", "json"])).expect("ps JSON");
    let project_of = |id: &str| {
        json.as_array()
            .and_then(|l| l.iter().find(|r| r["id"] == id))
            .map(|r| r["project"].clone())
    };
    assert_eq!(project_of(&paid), Some(json!("payments")), "{json}");
    assert_eq!(project_of(&plain), Some(json!("default")), "{json}");
    let only = d.ok(&["ps", "-a", "-q", "--project", "payments"]);
    assert_eq!(only, paid);
    let table = d.ok(&["ps", "-a"]);
    assert!(
        table.contains("PROJECT") && table.contains("payments"),
        "{table}"
    );
    let inspect = d.ok(&["inspect-run", &paid]);
    assert!(inspect.contains("Project:    payments"), "{inspect}");
    assert_eq!(
        d.inspect(&paid)["project"],
        "payments",
        "inspect-run --format json carries it"
    );

    let err = d.fails(&["run", &agent, "--detach", "--project", "Pay Ments"], 125);
    assert!(
        err.contains("--project: `Pay Ments` is not a project name"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

const FROZEN: &str = r#"package dispatch

deny contains sprintf("project %s is frozen", [input.project]) if {
    input.action == "create_run"
    input.project == "frozen"
}
"#;

#[test]
fn a_policy_decides_on_the_project_a_run_is_created_in() {
    let d = crate::common::Dispatch::new();
    std::fs::create_dir_all(d.root()).expect("root");
    std::fs::write(d.root().join("policy.rego"), FROZEN).expect("policy");
    let agent = d.agent("hello", "echo hi\n").to_string_lossy().to_string();
    let err = d.fails(&["run", &agent, "--detach", "--project", "frozen"], 125);
    assert!(err.contains("project frozen is frozen"), "{err}");
    d.ok(&["run", &agent, "--detach", "--project", "payments"]);

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.rego");
    std::fs::write(&file, FROZEN).expect("policy");
    let server = Server::start_with_env(
        None,
        &[],
        &[("DISPATCH_POLICY", file.to_str().expect("utf-8"))],
    );
    let client = Client::new(&server);
    let hello = client.agent("hello", "echo hi\n");
    let err = client.fails(&["run", &hello, "--detach", "--project", "frozen"], 125);
    assert!(err.contains("project frozen is frozen"), "{err}");
    let id = client.ok(&["run", &hello, "--detach", "--project", "payments"]);
    let doc = server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "succeeded");
    assert_eq!(doc["project"], "payments", "{doc:#}");
}
