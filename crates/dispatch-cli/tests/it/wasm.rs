//! WASM agents (`FROM dispatch/wasm`) from the binary: a component written
//! in WebAssembly text (`wasm_guests/*.wat`, compiled here with the `wat`
//! crate) calls the model on the scripted mock server and a LOCAL tool, its
//! answer is the run's output, with the native agent's events and billing;
//! budgets, TIMEOUT RUN, `dispatch stop`, the memory cap and the guest's
//! capabilities hold; a bad COMPONENT is refused at build in one line.

use crate::common;
use crate::native_common;

use std::path::{Path, PathBuf};

use common::{Dispatch, eventually};
use native_common::{Mock, events_of, message_texts, text};
use serde_json::{Value, json};

/// The guest `name` (`wasm_guests/<name>.wat`) as a component binary.
pub fn guest(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/wasm_guests")
        .join(format!("{name}.wat"));
    wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A WASM agent `name` under `root` running guest `guest_name`, with
/// `lines` after the header and an `echo` LOCAL tool.
pub fn wasm_agent(root: &Path, name: &str, guest_name: &str, lines: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("components")).expect("dir");
    std::fs::create_dir_all(dir.join("tools")).expect("dir");
    std::fs::write(dir.join("components/guest.wasm"), guest(guest_name)).expect("component");
    std::fs::write(
        dir.join("tools/echo.sh"),
        "#!/bin/sh\nprintf 'echoed: %s' \"${DISPATCH_TOOL_INPUT:-}\"\n",
    )
    .expect("tool");
    std::fs::write(
        dir.join("Agentfile"),
        format!(
            "FROM dispatch/wasm:latest\nNAME {name}\nCOMPONENT components/guest.wasm\nTOOL LOCAL tools/echo.sh AS echo DESCRIPTION \"Echo the input\"\n{lines}\n"
        ),
    )
    .expect("Agentfile");
    dir
}

pub fn model_line(mock: &Mock) -> String {
    format!(
        "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}",
        mock.url()
    )
}

/// The mock's script for the `answer` guest: call `echo`, then answer.
pub fn echo_then_answer() -> Value {
    json!([
        {"kind": "tool_calls", "calls": [{"name": "echo", "arguments": {"text": "hi"}, "id": "c0"}],
         "usage": {"input_tokens": 12, "output_tokens": 4}},
        text("The echo said hi.", 20, 6),
    ])
}

/// Runs `dir` in the foreground with `job`; the run's inspect document.
fn run(d: &Dispatch, dir: &Path, job: &str, env: &[(&str, &str)]) -> Value {
    let out = d
        .command()
        .args(["run", dir.to_str().expect("utf-8"), "--job", job])
        .envs(env.iter().copied())
        .output()
        .expect("dispatch run");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let id = d
        .ok(&["ps", "-a", "-q"])
        .lines()
        .next()
        .unwrap_or_else(|| panic!("a run: {stderr}"))
        .to_string();
    d.inspect(&id)
}

#[test]
fn a_wasm_agent_calls_the_model_and_a_tool_and_its_answer_is_the_output() {
    let d = Dispatch::new();
    let mock = Mock::start(echo_then_answer());
    let dir = wasm_agent(d.dir.path(), "wasm-agent", "answer", &model_line(&mock));
    let doc = run(&d, &dir, "\"say hi\"", &[]);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["output"], json!("The echo said hi."), "{doc:#}");
    // The model calls and the tool call, as a native agent's.
    let calls = events_of(&doc, "model_call");
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(calls[0]["input_tokens"], 12);
    assert_eq!(calls[1]["output_tokens"], 6);
    let tools = events_of(&doc, "tool_call");
    assert_eq!(tools.len(), 1, "{tools:#?}");
    assert_eq!(tools[0]["name"], "echo");
    assert_eq!(tools[0]["kind"], "local");
    assert_eq!(tools[0]["ok"], true, "{}", tools[0]);
    assert_eq!(events_of(&doc, "usage").len(), 2);
    let bom = &events_of(&doc, "bom")[0];
    assert_eq!(bom["component"]["path"], "components/guest.wasm", "{bom}");
    assert_eq!(bom["component"]["abi"], "dispatch:courier@0.0.1");
    assert_eq!(events_of(&doc, "guest_started").len(), 1);
    // Billing: the run's usage is the two calls'.
    assert_eq!(doc["usage"]["input_tokens"], 32, "{doc:#}");
    assert_eq!(doc["usage"]["output_tokens"], 10, "{doc:#}");
    // What the model saw: the user's text, the tool offered; then the
    // tool's output as the result of its call.
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    assert!(
        message_texts(&reqs[0].body).contains(&"say hi"),
        "{:#}",
        reqs[0].body
    );
    assert_eq!(reqs[0].body["tools"][0]["function"]["name"], "echo");
    let second = message_texts(&reqs[1].body).join("\n");
    assert!(second.contains("echoed: {\"text\":\"hi\"}"), "{second}");
    // The log has the answer's text; `logs` shows it.
    let id = doc["id"].as_str().expect("id");
    let logs = d.ok(&["logs", id]);
    assert!(logs.contains("WASM agent components/guest.wasm"), "{logs}");
}

#[test]
fn a_wasm_agent_past_its_token_budget_is_stopped() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "echo", "arguments": {}, "id": "c0"}],
         "usage": {"input_tokens": 40, "output_tokens": 10}},
        text("never asked", 1, 1),
    ]));
    let lines = format!("{}\nLIMIT TOKENS 30", model_line(&mock));
    let dir = wasm_agent(d.dir.path(), "budget", "answer", &lines);
    let doc = run(&d, &dir, "\"go\"", &[]);
    assert_eq!(doc["status"], "failed", "{doc:#}");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(reason.contains("budget_exceeded"), "{reason}");
    assert_eq!(mock.requests().len(), 1, "no call past the budget");
    assert!(events_of(&doc, "tool_call").is_empty());
}

#[test]
fn a_guest_in_an_endless_loop_is_ended_by_its_timeout() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([]));
    let lines = format!("{}\nTIMEOUT RUN 1s", model_line(&mock));
    let dir = wasm_agent(d.dir.path(), "spin", "spin", &lines);
    let started = std::time::Instant::now();
    let doc = run(&d, &dir, "\"go\"", &[]);
    assert_eq!(doc["status"], "timed_out", "{doc:#}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn dispatch_stop_ends_a_guest_in_an_endless_loop() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([]));
    let dir = wasm_agent(d.dir.path(), "spin", "spin", &model_line(&mock));
    let id = d.detach(&dir, "\"go\"");
    eventually(30, "the guest runs", || {
        !events_of(&d.inspect(&id), "guest_started").is_empty()
    });
    let ps = d.ok(&["ps", "--format", "json"]);
    assert!(ps.contains(&id), "{ps}");
    d.ok(&["stop", &id]);
    eventually(30, "the run is cancelled", || d.status(&id) == "cancelled");
}

#[test]
fn a_guest_that_grows_past_its_memory_cap_fails_saying_so() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([]));
    let lines = format!("{}\nRESOURCES MEMORY 8M", model_line(&mock));
    let dir = wasm_agent(d.dir.path(), "hog", "hog", &lines);
    let doc = run(&d, &dir, "\"go\"", &[]);
    assert_eq!(doc["status"], "failed", "{doc:#}");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(reason.contains("memory cap exceeded"), "{reason}");
    assert!(reason.contains("the cap is 8 MiB"), "{reason}");
}

#[test]
fn a_guest_gets_only_what_the_agentfile_grants() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([]));
    let lines = format!(
        "{}\nENV GREETING=hello\nSECRET WASM_TEST_SECRET",
        model_line(&mock)
    );
    let dir = wasm_agent(d.dir.path(), "caps", "env", &lines);
    let env = [
        ("WASM_TEST_SECRET", "s3cr3t-value"),
        ("WASM_TEST_AMBIENT", "ambient"),
    ];
    let doc = run(&d, &dir, "\"go\"", &env);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let out = doc["output"].as_str().expect("text output");
    // Its environment is the Agentfile's ENV: no secret, nothing ambient.
    assert!(out.contains("GREETING=hello\n"), "{out}");
    for absent in ["s3cr3t", "WASM_TEST_AMBIENT", "PATH=", "HOME="] {
        assert!(!out.contains(absent), "{absent} in {out}");
    }
    // One preopened directory: the run's workspace, as `.`.
    assert!(out.contains("dirs:. \n"), "{out}");
    // A tool the parcel does not declare is refused.
    assert!(out.contains("tool `rm` is not declared"), "{out}");
    assert!(mock.requests().is_empty());
}

#[test]
fn a_bad_component_is_refused_at_build_in_one_line() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([]));
    let dir = wasm_agent(d.dir.path(), "bad", "answer", &model_line(&mock));
    let build = |d: &Dispatch| d.fails(&["build", dir.to_str().expect("utf-8")], 125);
    // A core module, not a component.
    std::fs::write(
        dir.join("components/guest.wasm"),
        wat::parse_str("(module)").expect("module"),
    )
    .expect("module");
    let err = build(&d);
    assert!(
        err.contains(
            "COMPONENT components/guest.wasm: is a core WebAssembly module, not a component"
        ),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Not WebAssembly at all.
    std::fs::write(dir.join("components/guest.wasm"), "(component)").expect("text");
    let err = build(&d);
    assert!(err.contains("is text, not a WebAssembly binary"), "{err}");
    // No such file.
    std::fs::remove_file(dir.join("components/guest.wasm")).expect("rm");
    let err = build(&d);
    assert!(
        err.contains("COMPONENT components/guest.wasm: no such file"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // COMPONENT without FROM dispatch/wasm, and the reverse.
    std::fs::write(
        dir.join("Agentfile"),
        format!(
            "FROM agent\nNAME bad\n{}\nCOMPONENT guest.wasm\n",
            model_line(&mock)
        ),
    )
    .expect("Agentfile");
    assert!(build(&d).contains("COMPONENT is for WASM agents"));
    std::fs::write(
        dir.join("Agentfile"),
        format!("FROM dispatch/wasm\nNAME bad\n{}\n", model_line(&mock)),
    )
    .expect("Agentfile");
    assert!(build(&d).contains("FROM dispatch/wasm needs a COMPONENT"));
}

#[test]
fn a_component_that_is_not_a_dispatch_guest_fails_its_run_in_one_line() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([]));
    let dir = wasm_agent(d.dir.path(), "empty", "spin", &model_line(&mock));
    // A valid component that exports nothing.
    std::fs::write(
        dir.join("components/guest.wasm"),
        wat::parse_str("(component)").expect("component"),
    )
    .expect("component");
    let doc = run(&d, &dir, "\"go\"", &[]);
    assert_eq!(doc["status"], "failed", "{doc:#}");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("cannot instantiate the component components/guest.wasm")
            && reason.contains("dispatch:courier/guest@0.0.1"),
        "{reason}"
    );
    assert!(!reason.contains('\n'), "{reason}");
}

#[test]
fn a_wasm_agents_turns_are_kept_in_its_session() {
    let d = Dispatch::new();
    let mut script = echo_then_answer().as_array().expect("steps").clone();
    script.extend(echo_then_answer().as_array().expect("steps").clone());
    let mock = Mock::start(Value::Array(script));
    let dir = wasm_agent(d.dir.path(), "wasm-agent", "answer", &model_line(&mock));
    let a = dir.to_str().expect("utf-8");
    for turn in ["\"first\"", "\"second\""] {
        let out = d.run(&["run", a, "--session", "alice", "--job", turn]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let db = rusqlite::Connection::open(d.root().join("dispatch.db")).expect("open db");
    let (data, version): (String, i64) = db
        .query_row(
            "SELECT data, version FROM sessions WHERE key LIKE '%alice'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("the session's record");
    assert_eq!(version, 2, "{data}");
    let data: Value = serde_json::from_str(&data).expect("JSON");
    let said: Vec<(&str, &str)> = data["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or(""),
                m["content"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        said,
        [
            ("user", "first"),
            ("assistant", "The echo said hi."),
            ("user", "second"),
            ("assistant", "The echo said hi.")
        ],
        "{data}"
    );
}

#[test]
fn dispatch_chat_with_a_wasm_agent_prints_each_answer_once() {
    let d = Dispatch::new();
    let mut script = echo_then_answer().as_array().expect("steps").clone();
    script.extend(echo_then_answer().as_array().expect("steps").clone());
    let mock = Mock::start(Value::Array(script));
    let dir = wasm_agent(d.dir.path(), "wasm-chat", "answer", &model_line(&mock));
    let mut child = d
        .command()
        .args(["chat", dir.to_str().expect("utf-8")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("dispatch chat");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"say hi\nagain\n").expect("two turns");
    }
    let out = child.wait_with_output().expect("chat ends at EOF");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("The echo said hi.").count(),
        2,
        "each turn's answer once: {stdout:?}"
    );
}

#[test]
fn rmi_removes_the_compilations_no_remaining_parcel_uses() {
    let d = Dispatch::new();
    let mock = Mock::start(echo_then_answer());
    let dir = wasm_agent(d.dir.path(), "cached", "answer", &model_line(&mock));
    let doc = run(&d, &dir, "\"say hi\"", &[]);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let cache = d.root().join("cache/wasm");
    let listed = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&cache)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let ours = listed();
    assert_eq!(ours.len(), 1, "the run's compilation is kept: {ours:?}");
    // A compilation of a component no parcel has, one of an older engine,
    // and a temporary file whose writer is gone.
    let (sha, _) = ours[0].split_once('-').expect("sha-fingerprint.cwasm");
    let stale = [
        format!("{}-{:016x}.cwasm", "cd".repeat(32), 7_u64),
        format!("{sha}-{:016x}.cwasm", 7_u64),
        format!("{}.tmp{}", ours[0], i32::MAX),
    ];
    for name in &stale {
        std::fs::write(cache.join(name), b"old").expect("a stale file");
    }
    let out = d.run(&["rmi", "--prune"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("removed 3 compiled WASM component(s)"),
        "{said}"
    );
    assert_eq!(listed(), ours, "the parcel's own compilation stays");
    // Removing the parcel removes its compilation.
    d.ok(&["rm", "-f", doc["id"].as_str().expect("id")]);
    let out = d.run(&["rmi", "cached"]);
    assert!(out.status.success(), "{out:?}");
    assert!(listed().is_empty(), "{:?}", listed());
}
