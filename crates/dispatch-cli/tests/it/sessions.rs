//! `dispatch session ls|inspect|rm|prune`, locally and against a `dispatch
//! server`: what a session keeps is listed and shown, removed whole, never
//! while a live run holds it, and pruned when unused since a time.

use crate::common;
use crate::remote_common;

use common::{Dispatch, eventually};
use remote_common::{Client, Server};
use serde_json::Value;

/// A process agent that counts its turns in its session file and waits for
/// the file `gate` when its input says `wait`.
fn counter(gate: &std::path::Path) -> String {
    format!(
        "n=$(cat \"$DISPATCH_SESSION_FILE\" 2>/dev/null || echo 0)\n\
         echo $((n+1)) > \"$DISPATCH_SESSION_FILE\"\n\
         case \"$(cat)\" in *wait*) while [ ! -e {} ]; do sleep 0.02; done;; esac\n",
        gate.display()
    )
}

fn listing(out: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(out)
        .expect("session ls --format json prints JSON")
        .as_array()
        .cloned()
        .expect("an array")
}

#[test]
fn sessions_are_listed_shown_and_removed_but_never_while_a_live_run_holds_one() {
    let d = Dispatch::new();
    let gate = d.dir.path().join("gate");
    let agent = d.agent("counter", &counter(&gate));
    let a = agent.to_str().expect("utf-8");
    let one = d.ok(&["run", a, "--detach", "--session", "alice", "--job", "{}"]);
    d.wait_terminal(&one);
    let two = d.ok(&["run", a, "--detach", "--session", "bob", "--job", "{}"]);
    d.wait_terminal(&two);

    let all = listing(&d.ok(&["session", "ls", "--format", "json"]));
    let names: Vec<&str> = all.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(
        names,
        ["counter/bob", "counter/alice"],
        "newest first: {all:?}"
    );
    assert_eq!(all[1]["file"], true);
    assert_eq!(all[1]["last_run"], one.as_str());
    assert_eq!(all[1]["in_use_by"], Value::Null);
    let table = d.ok(&["session", "ls"]);
    assert!(
        table.starts_with("NAME") && table.contains("counter/alice"),
        "{table}"
    );
    let only = listing(&d.ok(&[
        "session",
        "ls",
        "--prefix",
        "counter/al",
        "--format",
        "json",
    ]));
    assert_eq!(only.len(), 1, "{only:?}");
    let shown: Value =
        serde_json::from_str(&d.ok(&["session", "inspect", "counter/alice"])).expect("JSON");
    assert_eq!(shown[0]["file_text"].as_str().map(str::trim), Some("1"));

    // A live run holds alice: removing it is refused, and nothing goes.
    let held = d.ok(&[
        "run",
        a,
        "--detach",
        "--session",
        "alice",
        "--job",
        "\"wait\"",
    ]);
    eventually(10, "the holder runs", || d.status(&held) == "running");
    let err = d.fails(&["session", "rm", "counter/alice"], 125);
    assert!(
        err.contains(&format!(
            "session `counter/alice` is in use by live run {held}"
        )) && err.contains("dispatch stop"),
        "{err}"
    );
    let all = listing(&d.ok(&["session", "ls", "--format", "json"]));
    let alice = all
        .iter()
        .find(|s| s["name"] == "counter/alice")
        .expect("kept");
    assert_eq!(alice["in_use_by"], held.as_str());
    std::fs::write(&gate, b"").expect("open the gate");
    d.wait_terminal(&held);

    // Ended: removed whole, this machine's file too.
    let file = d.root().join("state/counter/sessions/alice.json");
    assert!(file.exists());
    assert_eq!(d.ok(&["session", "rm", "counter/alice"]), "counter/alice");
    assert!(!file.exists(), "the local session file went with it");
    let names: Vec<String> = listing(&d.ok(&["session", "ls", "--format", "json"]))
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names, ["counter/bob"]);
    // The next run in that session starts afresh.
    let again = d.ok(&["run", a, "--detach", "--session", "alice", "--job", "{}"]);
    d.wait_terminal(&again);
    assert_eq!(
        std::fs::read_to_string(&file).expect("a new file").trim(),
        "1"
    );

    // Bad input: one line each, exit 125; the good names still go.
    let err = d.fails(&["session", "rm", "nope/none", "counter/bob"], 125);
    assert!(err.contains("no session `nope/none`"), "{err}");
    let err = d.fails(&["session", "inspect", "../etc"], 125);
    assert!(err.contains("is not a session name"), "{err}");
    let err = d.fails(&["session", "prune", "--until", "yesterday"], 125);
    assert!(err.starts_with("error: --until:"), "{err}");
    // Prune: only what nothing used since the cut.
    assert_eq!(d.ok(&["session", "prune", "--until", "1h"]), "");
    assert_eq!(
        d.ok(&["session", "prune", "--until", "2099-01-01T00:00:00Z"]),
        "counter/alice"
    );
    assert_eq!(d.ok(&["session", "ls", "--format", "json"]), "[]");
}

#[test]
fn session_commands_under_host_use_the_servers_routes() {
    let server = Server::start(&[]);
    let c = Client::new(&server);
    let agent = c.agent("counter", &counter(&server.state.path().join("never")));
    c.ok(&["run", &agent, "--session", "alice", "--job", "{}"]);
    let all = listing(&c.ok(&["session", "ls", "--format", "json"]));
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["name"], "counter/alice");
    let shown: Value =
        serde_json::from_str(&c.ok(&["session", "inspect", "counter/alice"])).expect("JSON");
    assert_eq!(shown[0]["file_text"].as_str().map(str::trim), Some("1"));
    let (code, body) = server.call("DELETE", "/v1/sessions/counter/.hidden", None);
    assert_eq!(code, 400, "{body}");
    let (code, body) = server.call("GET", "/v1/sessions/counter/nobody", None);
    assert_eq!(
        (code, body["code"].as_str()),
        (404, Some("session_not_found"))
    );
    assert_eq!(c.ok(&["session", "rm", "counter/alice"]), "counter/alice");
    let err = c.fails(&["session", "rm", "counter/alice"], 125);
    assert!(err.contains("no session `counter/alice`"), "{err}");
    let (code, body) = server.call(
        "POST",
        "/v1/sessions/prune",
        Some(&serde_json::json!({"until": "soon"})),
    );
    assert_eq!((code, body["code"].as_str()), (400, Some("bad_request")));
    assert_eq!(c.ok(&["session", "ls", "--format", "json"]), "[]");
}

/// `dispatch token create <args>` on the server's database; the token.
fn token(server: &Server, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args(["token", "create"])
        .args(args)
        .env("DISPATCH_ROOT", server.state.path().join(".dispatch"))
        .env_remove("DISPATCH_HOST")
        .output()
        .expect("dispatch token create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn call(server: &Server, token: &str, method: &str, path: &str) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let body = (method == "POST").then_some(&b"{\"until\": \"1h\"}"[..]);
    let r = dispatch_server::client::request(
        &format!("http://{}", server.host),
        method,
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body,
    )
    .expect("the server answers");
    let status = r.status;
    (
        status,
        serde_json::from_str(&r.text().expect("a body")).unwrap_or_default(),
    )
}

#[test]
fn sessions_are_no_projects_so_a_token_bound_to_one_may_not_touch_them() {
    let server = Server::start(&["--require-auth"]);
    let root = token(&server, &["--name", "root"]);
    let reader = token(&server, &["--name", "reader", "--scope", "read"]);
    let owner = token(
        &server,
        &[
            "--name",
            "owner",
            "--project",
            "payments",
            "--role",
            "admin",
        ],
    );
    assert_eq!(call(&server, &root, "GET", "/v1/sessions").0, 200);
    assert_eq!(call(&server, &reader, "GET", "/v1/sessions").0, 200);
    for (method, path) in [
        ("GET", "/v1/sessions"),
        ("GET", "/v1/sessions/p/s"),
        ("DELETE", "/v1/sessions/p/s"),
        ("POST", "/v1/sessions/prune"),
    ] {
        let (status, body) = call(&server, &owner, method, path);
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("bound to projects") && m.contains("hint:")),
            "{body}"
        );
    }
    // Removing needs `admin`.
    let (status, body) = call(&server, &reader, "DELETE", "/v1/sessions/p/s");
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, _) = call(&server, &root, "DELETE", "/v1/sessions/p/s");
    assert_eq!(status, 404);
}
