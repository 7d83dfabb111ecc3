//! Per-tool approvals of a native agent from the binary: a call of a tool
//! with `APPROVAL confirm` pauses the run with an approval record (tool,
//! arguments, risk); `dispatch approve` (optionally with edited arguments,
//! checked against the tool's schema), `dispatch deny` and the approval's
//! timeout resume it, and the model is told what happened.

use crate::common;
use crate::native_common;

use std::path::Path;

use common::{Dispatch, eventually};
use native_common::{Mock, events_of, message_texts, native_agent, refund_agent, text};
use serde_json::{Value, json};

/// A detached run of an agent whose `refund` tool needs confirming; the
/// model calls it once with `{"order": "12345", "amount": 40}`.
fn paused_run(d: &Dispatch, extra: &str) -> (Mock, String, std::path::PathBuf) {
    paused_run_waiting(d, extra, None)
}

/// [`paused_run`], with `DISPATCH_APPROVAL_WAIT` set to `wait` for its helper.
fn paused_run_waiting(
    d: &Dispatch,
    extra: &str,
    wait: Option<&str>,
) -> (Mock, String, std::path::PathBuf) {
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "refund", "arguments": {"order": "12345", "amount": 40}, "id": "c0"}]},
        text("done", 1, 1),
    ]));
    let (dir, marks) = refund_agent(d.dir.path(), &mock.url(), extra);
    let mut cmd = d.command();
    if let Some(wait) = wait {
        cmd.env("DISPATCH_APPROVAL_WAIT", wait);
    }
    let args = ["run", dir.to_str().expect("utf-8"), "--detach", "--job"];
    let out = cmd
        .args(args)
        .arg("{\"ticket\":\"refund please\"}")
        .output()
        .expect("run");
    let id = common::checks::ok(&args, &out);
    eventually(20, "the run pauses for the approval", || {
        d.status(&id) == "paused"
    });
    (mock, id, marks)
}

fn tool_call(doc: &Value) -> Value {
    events_of(doc, "tool_call")
        .into_iter()
        .next()
        .unwrap_or(Value::Null)
}

fn refunds(marks: &Path) -> String {
    std::fs::read_to_string(marks).unwrap_or_default()
}

#[test]
fn a_confirmed_tool_waits_for_approve_and_runs_then() {
    let d = Dispatch::new();
    let (_mock, id, marks) = paused_run(&d, "");
    assert_eq!(refunds(&marks), "", "nothing ran before the decision");
    let listed = d.ok(&["approvals", "ls"]);
    assert!(
        listed.contains("refund-1") && listed.contains("risk high") && listed.contains("12345"),
        "{listed}"
    );
    let json_list: Value =
        serde_json::from_str(&d.ok(&["approvals", "ls", "--format", "json"])).expect("json");
    assert_eq!(json_list[0]["details"]["tool"], "refund");
    assert_eq!(json_list[0]["details"]["arguments"]["amount"], 40);
    d.ok(&[
        "approve",
        &id,
        "refund-1",
        "--by",
        "ana",
        "--rationale",
        "within policy",
    ]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(
        serde_json::from_str::<Value>(&refunds(&marks)).ok(),
        Some(json!({"order": "12345", "amount": 40}))
    );
    let call = tool_call(&doc);
    assert_eq!(call["ok"], true, "{call}");
    assert_eq!(call["approval"]["decision"], "approve");
    assert_eq!(call["approval"]["by"], "ana");
    assert_eq!(call["approval"]["id"], "refund-1");
}

#[test]
fn approve_with_edited_input_checks_it_against_the_schema() {
    let d = Dispatch::new();
    let (_mock, id, marks) = paused_run(&d, "");
    let e = d.fails(
        &[
            "approve",
            &id,
            "refund-1",
            "--input",
            r#"{"order":"12345","amount":500}"#,
        ],
        125,
    );
    assert!(e.contains("does not match") && e.contains("/amount"), "{e}");
    assert_eq!(
        d.status(&id),
        "paused",
        "a refused --input leaves it paused"
    );
    d.ok(&[
        "approve",
        &id,
        "refund-1",
        "--input",
        r#"{"order":"12345","amount":20.0}"#,
    ]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(
        serde_json::from_str::<Value>(&refunds(&marks)).ok(),
        Some(json!({"order": "12345", "amount": 20.0}))
    );
    let call = tool_call(&doc);
    assert_eq!(call["approval"]["edited"], true, "{call}");
}

#[test]
fn deny_tells_the_model_and_the_run_goes_on() {
    let d = Dispatch::new();
    let (mock, id, marks) = paused_run(&d, "");
    d.ok(&[
        "deny",
        &id,
        "refund-1",
        "--by",
        "ana",
        "--rationale",
        "needs manager",
    ]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(refunds(&marks), "", "a denied tool never runs");
    let call = tool_call(&doc);
    assert_eq!(call["ok"], false);
    assert_eq!(call["approval"]["decision"], "deny");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    assert!(
        message_texts(&reqs[1].body)
            .iter()
            .any(|t| t.contains("denied by ana: needs manager")),
        "the model is told"
    );
}

#[test]
fn an_approval_timeout_denies_the_call() {
    let d = Dispatch::new();
    let (_mock, id, marks) = paused_run(&d, "APPROVAL_TIMEOUT 1s");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(refunds(&marks), "");
    let call = tool_call(&doc);
    assert_eq!(call["approval"]["decision"], "deny");
    assert_eq!(call["approval"]["by"], "dispatch");
    assert!(
        call["output"]
            .as_str()
            .expect("text")
            .contains("no decision within 1.0s"),
        "{call}"
    );
}

#[test]
fn a_helper_killed_while_waiting_in_process_resumes_paused_without_calling_the_model_again() {
    let d = Dispatch::new();
    // The in-process wait (not the default durable wait): the helper holds
    // the run while it waits.
    let (mock, id, marks) = paused_run_waiting(&d, "\nRETRY 3", Some("process"));
    let doc = d.inspect(&id);
    let helper = doc["state"]["helper"]["pid"].as_i64().expect("a helper") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the helper");
    // A reader finds it dead; the run's next attempt resumes from the saved
    // answer and asks again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let doc = d.inspect(&id);
        if doc["attempt"] == 2 && doc["status"] == "paused" {
            break;
        }
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(d.root().join("runs").join(format!("{id}.log")))
                .unwrap_or_default();
            panic!(
                "attempt 2 did not pause: {} {} {:#}\n{log}",
                doc["status"], doc["attempt"], doc["events"]
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pending: Value =
        serde_json::from_str(&d.ok(&["approvals", "ls", "--format", "json"])).expect("json");
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending}");
    assert_eq!(pending[0]["id"], "refund-2");
    d.ok(&["approve", &id, "refund-2", "--by", "ana"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(
        refunds(&marks).lines().count(),
        1,
        "the tool ran once, after the approval"
    );
    assert_eq!(
        mock.requests().len(),
        2,
        "the paused round's model call is not repeated"
    );
}

#[test]
fn a_foreground_run_on_a_terminal_asks_inline() {
    use native_common::terminal::Terminal;
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "refund", "arguments": {"order": "1", "amount": 10}}]},
        {"kind": "tool_calls", "calls": [{"name": "refund", "arguments": {"order": "2", "amount": 20}}]},
        text("all done", 1, 1),
    ]));
    let dir = native_agent(
        d.dir.path(),
        "asker",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL LOCAL refund.sh APPROVAL confirm RISK medium",
            mock.url()
        ),
    );
    std::fs::write(dir.join("refund.sh"), "cat\n").expect("tool");
    let mut cmd = d.command();
    cmd.args(["run", dir.to_str().expect("utf-8"), "--job", "{}"]);
    let mut t = Terminal::open(cmd);
    t.wait_for("approval refund-1: refund(");
    t.wait_for("[e]dit");
    t.type_in("y\n");
    t.wait_for("approval refund-2: refund(");
    t.type_in("n\n");
    t.wait_for("why (optional):");
    t.type_in("too much\n");
    t.wait_for("all done");
    let status = t.child.wait().expect("run exits");
    assert_eq!(status.code(), Some(0), "{}", t.screen());
    let id = d.ok(&["ps", "-a", "-q"]);
    let doc = d.inspect(id.lines().next().expect("a run"));
    let calls = events_of(&doc, "tool_call");
    assert_eq!(calls[0]["approval"]["decision"], "approve", "{calls:?}");
    assert_eq!(calls[1]["approval"]["decision"], "deny");
    assert_eq!(calls[1]["approval"]["rationale"], "too much");
}

#[test]
fn a_paused_foreground_run_says_what_it_waits_for_and_how_to_decide() {
    use std::io::{BufRead, BufReader};
    let d = Dispatch::new();
    let agent = d.agent(
        "asking",
        "echo '{\"type\":\"approval\",\"id\":\"ship\",\"summary\":\"Ship it?\"}' >> \"$DISPATCH_EVENTS\"\n\
         while [ ! -f \"$DISPATCH_APPROVALS/ship.json\" ]; do sleep 0.05; done\n",
    );
    let mut child = d
        .command()
        .args([
            "run",
            agent.to_str().expect("utf-8"),
            "--tool-approval",
            "never",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = String::new();
    while !seen.contains("dispatch approve") {
        let line = lines
            .next()
            .expect("the run says it is paused")
            .expect("a line");
        seen.push_str(&line);
        seen.push('\n');
    }
    assert!(
        seen.contains("waiting for approval `ship`: Ship it?"),
        "{seen}"
    );
    let id = d.ok(&["ps", "-q"]);
    d.ok(&["approve", id.trim(), "ship"]);
    let status = child.wait().expect("the run ends");
    assert_eq!(status.code(), Some(0));
}
