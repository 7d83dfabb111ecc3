//! `ON BUDGET pause` (#37): a running native agent whose project goes over
//! a hard budget of its quota pauses, holding no process and no slot,
//! instead of failing; `dispatch quota set` raising the quota (or `quota rm`
//! removing it) resumes it where it was: the model call it had not made is
//! made, none is made twice.

use crate::common;
use crate::native_common;

use common::{Dispatch, eventually};
use native_common::{Mock, native_agent, text};
use serde_json::json;

/// An agent (`extra` lines added) whose first call uses 500 tokens (its
/// answer asks for a tool), started under a quota of 300 tokens a day.
fn over_budget_run(d: &Dispatch, name: &str, extra: &str) -> (Mock, String) {
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "search", "arguments": {"q": "x"}}],
         "usage": {"input_tokens": 500, "output_tokens": 0}},
        text("done", 10, 2),
    ]));
    let agent = native_agent(
        d.dir.path(),
        name,
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\n{extra}",
            mock.url()
        ),
    );
    d.ok(&["quota", "set", "default", "--tokens-per-day", "300"]);
    let id = d.ok(&["run", agent.to_str().expect("utf-8"), "--detach"]);
    (mock, id)
}

/// [`over_budget_run`] with `ON BUDGET pause`, once it paused.
fn paused_run(d: &Dispatch, extra: &str) -> (Mock, String) {
    let (mock, id) = over_budget_run(d, "spender", extra);
    eventually(30, "the run pauses for its quota", || {
        d.status(&id) == "paused"
    });
    (mock, id)
}

#[test]
fn a_native_agent_over_its_projects_budget_pauses_and_a_raise_resumes_it() {
    let d = Dispatch::new();
    let (mock, id) = paused_run(&d, "ON BUDGET pause");
    assert_eq!(
        mock.requests().len(),
        1,
        "no call after the budget was reached"
    );
    let doc = d.inspect(&id);
    let reason = doc["state"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("project `default` is over its quota"),
        "{doc:#}"
    );
    // What `ps` shows.
    let ps = d.ok(&["ps", "-a"]);
    assert!(ps.contains("paused"), "{ps}");

    let out = d.run(&["quota", "set", "default", "--tokens-per-day", "1M"]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("resumed 1 run(s) of project `default` paused for its quota"),
        "{stderr}"
    );
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let requests = mock.requests();
    assert_eq!(requests.len(), 2, "the call not made is made once");
    // It went on from where it paused: the second call carries the
    // conversation with the tool's answer, not a fresh start.
    let second = requests[1].body.to_string();
    assert!(second.contains("search"), "{second}");
    let calls = native_common::events_of(&doc, "model_call");
    assert_eq!(calls.len(), 2, "every call recorded once: {doc:#}");
}

#[test]
fn removing_the_quota_resumes_a_paused_run_and_without_on_budget_pause_it_fails() {
    let d = Dispatch::new();
    let (mock, id) = paused_run(&d, "ON BUDGET pause");
    d.ok(&["quota", "rm", "default"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(mock.requests().len(), 2);

    // `ON BUDGET fail` is what a run does without the line.
    let d = Dispatch::new();
    let (_mock, id) = over_budget_run(&d, "failer", "ON BUDGET fail");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed", "{doc:#}");
    assert!(
        doc["state"]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("budget_exceeded: project `default`")),
        "{doc:#}"
    );
}

#[test]
fn bad_on_lines_are_refused_at_build_naming_the_line() {
    let d = Dispatch::new();
    for (body, says) in [
        (
            "FROM agent\nNAME x\nMODEL gpt-4o-mini\nON BUDGET later\n",
            "line 4: ON BUDGET takes `pause` or `fail`, not `later`",
        ),
        (
            "FROM agent\nNAME x\nMODEL gpt-4o-mini\nON FAILURE pause\n",
            "line 4: ON takes BUDGET, not `FAILURE`",
        ),
        (
            "FROM process\nNAME x\nCOMMAND sh agent.sh\nON BUDGET pause\n",
            "line 4: ON BUDGET is for native agents",
        ),
    ] {
        let dir = d.dir.path().join("bad");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("Agentfile"), body).expect("Agentfile");
        std::fs::write(dir.join("agent.sh"), "true\n").expect("agent");
        let err = d.fails(&["build", dir.to_str().expect("utf-8")], 125);
        assert!(err.contains(says), "{body}: {err}");
    }
}
