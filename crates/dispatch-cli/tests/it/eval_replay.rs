//! `dispatch eval --record/--replay`: a native agent's model calls recorded
//! against the mock model server, then replayed with the server stopped —
//! the same results; a changed prompt fails loudly with a diff.

use crate::common;
use crate::native_common;

use std::path::Path;

use common::Dispatch;
use dispatch_test_support::mock::{MockServer, Script};
use serde_json::{Value, json};

/// The mock with a `rounds` fallback: two rounds of `lookup` calls, then the answer.
struct Mock {
    server: MockServer,
    rt: tokio::runtime::Runtime,
}

impl Mock {
    fn start() -> Mock {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let script: Script = serde_json::from_value(json!({
            "steps": [],
            "fallback": {"kind": "rounds", "tool_rounds": 2, "tool_name": "lookup",
                "text": "{\"category\":\"refund\",\"reply\":\"We will refund order 12345.\"}",
                "usage": {"input_tokens": 50, "output_tokens": 10}}
        }))
        .expect("a valid script");
        let server = rt.block_on(MockServer::start(script)).expect("mock starts");
        Mock { server, rt }
    }

    /// Stops the server: its runtime is shut down, so nothing of the mock
    /// answers any more. (Whether the port is free is not checked: under a
    /// loaded test suite another test's listener may get the same port.)
    fn stop(self) {
        drop(self.server);
        self.rt.shutdown_timeout(std::time::Duration::from_secs(5));
    }
}

const CASES: &str = r#"
[[case]]
name = "refund"
payload = { ticket = "I want my money back for order 12345" }
expect.status = "succeeded"
expect.output = { path = "$.category", equals = "refund" }
expect.tools = { called = ["lookup"], count = { lookup = 2 }, args = { lookup = { round = 2 } } }

[[case]]
name = "refund again"
payload = { ticket = "Refund 777 please" }
expect.status = "succeeded"
expect.output = { path = "$.reply", contains = "refund" }
"#;

fn agent(d: &Dispatch, url: &str, prompt: &str) -> String {
    let dir = native_common::native_agent(
        d.dir.path(),
        "triage",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {url}\nPRICE gpt-4o-mini INPUT 0.15 OUTPUT 0.60\nTOOL LOCAL tools/lookup.sh AS lookup DESCRIPTION \"Find an order\"\nPROMPT {prompt}\nEVAL evals/smoke.toml"
        ),
    );
    std::fs::create_dir_all(dir.join("tools")).expect("mkdir");
    std::fs::create_dir_all(dir.join("evals")).expect("mkdir");
    std::fs::write(
        dir.join("tools/lookup.sh"),
        "echo 'order 12345: paid, shipped'\n",
    )
    .expect("tool");
    std::fs::write(dir.join("evals/smoke.toml"), CASES).expect("cases");
    dir.to_str().expect("utf-8").to_string()
}

fn eval(d: &Dispatch, args: &[&str], code: i32) -> Value {
    let out = d.run(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "dispatch {args:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

/// What must be identical between the recorded and the replayed eval.
fn essence(r: &Value) -> Vec<Value> {
    r["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|o| {
            json!([
                o["case"],
                o["passed"],
                o["status"],
                o["input_tokens"],
                o["output_tokens"],
                o["cost_usd"]
            ])
        })
        .collect()
}

fn outputs(d: &Dispatch, r: &Value) -> Vec<Value> {
    r["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|o| d.inspect(o["run_id"].as_str().expect("run id"))["output"].clone())
        .collect()
}

fn cassette_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("cassette dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .count()
}

#[test]
fn recorded_calls_replay_offline_with_identical_results_and_a_changed_prompt_fails_with_a_diff() {
    let d = Dispatch::new();
    let mock = Mock::start();
    let dir = agent(&d, &mock.server.base_url(), "Classify the ticket.");
    let cassette = d.dir.path().join("cassettes");
    let cassette_arg = cassette.to_str().expect("utf-8");
    let recorded = eval(
        &d,
        &["eval", &dir, "--record", cassette_arg, "--format", "json"],
        0,
    );
    // Two cases × three calls (two tool rounds, then the answer).
    assert_eq!(mock.server.requests().len(), 6);
    assert_eq!(cassette_files(&cassette), 6);
    mock.stop();

    let replayed = eval(
        &d,
        &["eval", &dir, "--replay", cassette_arg, "--format", "json"],
        0,
    );
    assert_eq!(essence(&recorded), essence(&replayed));
    assert_eq!(outputs(&d, &recorded), outputs(&d, &replayed));
    // The replayed runs are real runs whose model calls name the cassette.
    let run = d.inspect(replayed["results"][0]["run_id"].as_str().expect("id"));
    assert_eq!(native_common::events_of(&run, "tool_call").len(), 2);

    // A changed prompt is a request the cassette does not hold.
    let agentfile = Path::new(&dir).join("Agentfile");
    let text = std::fs::read_to_string(&agentfile).expect("Agentfile");
    std::fs::write(
        &agentfile,
        text.replace("Classify the ticket.", "Classify the ticket, politely."),
    )
    .expect("Agentfile");
    let failed = eval(
        &d,
        &["eval", &dir, "--replay", cassette_arg, "--format", "json"],
        1,
    );
    let first = failed["results"][0]["failures"][0]
        .as_str()
        .expect("a failure")
        .to_string();
    assert!(first.contains("is not in cassette"), "{first}");
    assert!(first.contains("the nearest recorded request"), "{first}");
    assert!(
        first.contains("$.system: recorded") && first.contains("politely"),
        "{first}"
    );
}

#[test]
fn replay_from_a_missing_cassette_is_refused_before_anything_runs() {
    let d = Dispatch::new();
    let dir = agent(&d, "http://127.0.0.1:9", "Classify.");
    let err = d.fails(&["eval", &dir, "--replay", "nowhere"], 125);
    assert!(
        err.contains("--replay nowhere: no such cassette directory"),
        "{err}"
    );
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn replay_offline_answers_a_native_run_from_its_own_recordings() {
    let d = Dispatch::new();
    let mock = Mock::start();
    let dir = agent(&d, &mock.server.base_url(), "Classify the ticket.");
    let id = d.detach(Path::new(&dir), r#"{"ticket":"refund 12345"}"#);
    let first = d.wait_terminal(&id);
    assert_eq!(first["status"], "succeeded", "{first:#}");
    assert_eq!(mock.server.requests().len(), 3);
    mock.stop();

    let again = d.ok(&["replay", &id, "--allow-side-effects", "--offline"]);
    let second = d.wait_terminal(again.trim());
    assert_eq!(second["status"], "succeeded", "{second:#}");
    assert_eq!(second["output"], first["output"]);
    assert_eq!(second["usage"], first["usage"]);
    let calls = native_common::events_of(&d.inspect(again.trim()), "model_call");
    assert_eq!(calls.len(), 3);

    // A process run has no model calls to replay.
    let proc_agent = d.agent("plain", "echo hi\n");
    let plain = d.detach(&proc_agent, "{}");
    d.wait_terminal(&plain);
    let err = d.fails(
        &["replay", &plain, "--allow-side-effects", "--offline"],
        125,
    );
    assert!(
        err.contains("--offline replays a native agent's model calls"),
        "{err}"
    );
}

#[test]
fn replay_tools_answers_tool_calls_from_the_cassette_without_running_them() {
    let d = Dispatch::new();
    let mock = Mock::start();
    let dir = agent(&d, &mock.server.base_url(), "Classify the ticket.");
    let cassette = d.dir.path().join("cassettes");
    let cassette_arg = cassette.to_str().expect("utf-8");
    let recorded = eval(
        &d,
        &["eval", &dir, "--record", cassette_arg, "--format", "json"],
        0,
    );
    // Each distinct tool call's result is kept beside the model calls
    // (the two cases call lookup with the same arguments).
    assert_eq!(cassette_files(&cassette.join("tools")), 2);
    mock.stop();

    // The tool now answers differently and leaves a mark when it runs.
    let ran = d.dir.path().join("tool-ran");
    std::fs::write(
        Path::new(&dir).join("tools/lookup.sh"),
        format!("touch '{}'\necho 'order 12345: lost'\n", ran.display()),
    )
    .expect("tool");
    // Without --replay-tools the tool runs for real: its new answer is a
    // model request the cassette does not hold.
    let live_tools = eval(
        &d,
        &["eval", &dir, "--replay", cassette_arg, "--format", "json"],
        1,
    );
    assert!(ran.exists(), "the tool ran");
    let first = live_tools["results"][0]["failures"][0]
        .as_str()
        .expect("a failure");
    assert!(first.contains("is not in cassette"), "{first}");
    std::fs::remove_file(&ran).expect("rm mark");

    // With it, the recorded results answer: identical results, no tool run.
    let replayed = eval(
        &d,
        &[
            "eval",
            &dir,
            "--replay",
            cassette_arg,
            "--replay-tools",
            "--format",
            "json",
        ],
        0,
    );
    assert_eq!(essence(&recorded), essence(&replayed));
    assert!(!ran.exists(), "no tool ran");
    let run = d.inspect(replayed["results"][0]["run_id"].as_str().expect("id"));
    let calls = native_common::events_of(&run, "tool_call");
    assert_eq!(calls.len(), 2);
    assert!(
        calls
            .iter()
            .all(|c| c["data"]["replayed"] == true || c["replayed"] == true),
        "{calls:#?}"
    );

    // A tool call the cassette lacks stops the run, naming the call.
    std::fs::remove_dir_all(cassette.join("tools")).expect("rm tools");
    let missing = eval(
        &d,
        &[
            "eval",
            &dir,
            "--replay",
            cassette_arg,
            "--replay-tools",
            "--format",
            "json",
        ],
        1,
    );
    let first = missing["results"][0]["failures"][0]
        .as_str()
        .expect("a failure");
    assert!(
        first.contains("replay: tool call `lookup`") && first.contains("not in the cassette"),
        "{first}"
    );
    assert!(!ran.exists(), "no tool ran");
    // --replay-tools needs --replay.
    let err = d.fails(&["eval", &dir, "--replay-tools"], 2);
    assert!(err.contains("--replay"), "{err}");
}

/// A long prompt changed near its end: the miss names where the recorded
/// and the new text first differ, with both around that place.
#[test]
fn a_cassette_miss_shows_where_a_long_text_first_differs() {
    let d = Dispatch::new();
    let mock = Mock::start();
    let preamble = "You are the triage agent of a small shop that sells tea. ".repeat(6);
    let dir = agent(
        &d,
        &mock.server.base_url(),
        &format!("{preamble}Answer briefly and name the order."),
    );
    let cassette = d.dir.path().join("cassettes");
    let cassette_arg = cassette.to_str().expect("utf-8");
    eval(
        &d,
        &["eval", &dir, "--record", cassette_arg, "--format", "json"],
        0,
    );
    mock.stop();
    let agentfile = Path::new(&dir).join("Agentfile");
    let text = std::fs::read_to_string(&agentfile).expect("Agentfile");
    std::fs::write(
        &agentfile,
        text.replace("Answer briefly", "Answer politely"),
    )
    .expect("Agentfile");
    let failed = eval(
        &d,
        &["eval", &dir, "--replay", cassette_arg, "--format", "json"],
        1,
    );
    let first = failed["results"][0]["failures"][0]
        .as_str()
        .expect("a failure");
    assert_eq!(first.lines().count(), 1, "{first}");
    let at = first.find("$.system:").expect("the system prompt differs");
    let diff = &first[at..];
    assert!(diff.contains("first differ at character"), "{diff}");
    let recorded = diff.find("recorded").expect("recorded");
    let now = diff.find("now").expect("now");
    assert!(diff[recorded..now].contains("Answer briefly"), "{diff}");
    assert!(diff[now..].contains("Answer politely"), "{diff}");
}
