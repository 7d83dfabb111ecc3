//! A native agent's tools from the binary, against the scripted mock model
//! server: LOCAL programs (valid and invalid arguments, parallel calls, a
//! timeout, output past LIMIT TOOL_OUTPUT), an HTTP tool against a loopback
//! server with a header from a SECRET, the built-ins (files and memory
//! across runs), LIMIT TOOL_CALLS, and the attempt's bill of materials.

use crate::common;
use crate::native_common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use common::{Dispatch, eventually};
use native_common::{Mock, events_of, message_texts, native_agent, text};
use serde_json::{Value, json};

fn model_line(mock: &Mock) -> String {
    format!(
        "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}",
        mock.url()
    )
}

/// A step calling tools: `(name, arguments)` each, with ids `c0`, `c1`, ….
fn calls(list: &[(&str, Value)]) -> Value {
    let calls: Vec<Value> = list
        .iter()
        .enumerate()
        .map(|(i, (name, args))| json!({"name": name, "arguments": args, "id": format!("c{i}")}))
        .collect();
    json!({"kind": "tool_calls", "calls": calls})
}

/// Writes `files` (path, text) into the agent directory `dir`.
fn files(dir: &Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(p, text).expect("file");
    }
}

/// Runs `dir` in the foreground; returns the run's inspect document.
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
fn a_local_tool_runs_with_valid_arguments_and_the_model_is_told_about_invalid_ones() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        calls(&[("lookup_order", json!({"order": "12345"}))]),
        calls(&[("lookup_order", json!({"order": 12345}))]),
        text("It ships tomorrow.", 10, 5),
    ]));
    let dir = native_agent(
        d.dir.path(),
        "support",
        &format!(
            "{}\nTOOL LOCAL tools/lookup.sh AS lookup_order SCHEMA schemas/order.json DESCRIPTION \"Find an order by id\"",
            model_line(&mock)
        ),
    );
    files(
        &dir,
        &[
            (
                "tools/lookup.sh",
                "read input\necho \"order from stdin: $input; env: $TOOL_INPUT\"\n",
            ),
            (
                "schemas/order.json",
                r#"{"type":"object","properties":{"order":{"type":"string"}},"required":["order"]}"#,
            ),
        ],
    );
    let doc = run(&d, &dir, "{\"ticket\":\"where is 12345\"}", &[]);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let tool_calls = events_of(&doc, "tool_call");
    assert_eq!(tool_calls.len(), 2, "{tool_calls:#?}");
    let first = &tool_calls[0];
    assert_eq!(first["name"], "lookup_order");
    assert_eq!(first["kind"], "local");
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["input"], json!({"order": "12345"}));
    let output = first["output"].as_str().expect("output");
    assert!(
        output.contains(r#"order from stdin: {"order":"12345"}"#),
        "{output}"
    );
    assert!(output.contains(r#"env: {"order":"12345"}"#), "{output}");
    let second = &tool_calls[1];
    assert_eq!(second["ok"], false);
    assert_eq!(second["invalid"], true);
    let why = second["output"].as_str().expect("output");
    assert!(
        why.contains("do not match the tool's schema") && why.contains("/order"),
        "{why}"
    );
    // The model saw the tool, its result, then the validation error.
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 3);
    let tools = reqs[0].body["tools"].as_array().expect("tools sent");
    assert_eq!(tools[0]["function"]["name"], "lookup_order");
    assert_eq!(tools[0]["function"]["description"], "Find an order by id");
    assert_eq!(
        tools[0]["function"]["parameters"]["required"],
        json!(["order"])
    );
    assert!(
        message_texts(&reqs[1].body)
            .iter()
            .any(|t| t.contains("order from stdin"))
    );
    assert!(
        message_texts(&reqs[2].body)
            .iter()
            .any(|t| t.contains("do not match"))
    );
    // The bill of materials of the attempt.
    let bom = events_of(&doc, "bom");
    assert_eq!(bom.len(), 1, "one per attempt");
    let bom = &bom[0];
    assert_eq!(bom["models"][0]["model"], "gpt-4o-mini");
    assert_eq!(bom["models"][0]["host"], "127.0.0.1");
    assert_eq!(bom["tools"][0]["name"], "lookup_order");
    assert_eq!(bom["tools"][0]["kind"], "local");
    assert_eq!(
        bom["tools"][0]["schema_sha256"].as_str().map(str::len),
        Some(64)
    );
}

#[test]
fn parallel_calls_run_at_once_and_are_recorded_in_order() {
    let d = Dispatch::new();
    let marks = d.dir.path().join("marks");
    std::fs::create_dir_all(&marks).expect("marks");
    let mock = Mock::start(json!([
        calls(&[("nap", json!({"who": "a"})), ("nap", json!({"who": "b"}))]),
        text("both done", 1, 1),
    ]));
    let dir = native_agent(
        d.dir.path(),
        "napper",
        &format!("{}\nTOOL LOCAL nap.sh", model_line(&mock)),
    );
    let script = format!(
        "who=$(cat | sed 's/.*\"who\":\"\\([a-z]*\\)\".*/\\1/')\ntouch '{m}/start-'$who\n\
         i=0; while [ $i -lt 200 ] && [ $(ls '{m}' | grep -c start-) -lt 2 ]; do sleep 0.02; i=$((i+1)); done\n\
         ls '{m}' | grep -c start-\n",
        m = marks.display()
    );
    files(&dir, &[("nap.sh", &script)]);
    let doc = run(&d, &dir, "{}", &[]);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let tool_calls = events_of(&doc, "tool_call");
    let ids: Vec<&Value> = tool_calls.iter().map(|c| &c["id"]).collect();
    assert_eq!(
        ids,
        vec![&json!("c0"), &json!("c1")],
        "in the model's order"
    );
    for c in &tool_calls {
        // Each saw the other started while it ran: they ran at once.
        assert_eq!(c["output"].as_str().map(str::trim), Some("2"), "{c}");
    }
}

#[test]
fn a_hung_tool_is_stopped_at_its_timeout_and_long_output_is_cut_and_kept() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        calls(&[("hang", json!({}))]),
        calls(&[("chatty", json!({}))]),
        text("ok", 1, 1),
    ]));
    let pidfile = d.dir.path().join("hang.pid");
    let dir = native_agent(
        d.dir.path(),
        "limits",
        &format!(
            "{}\nTOOL LOCAL hang.sh TIMEOUT 1s\nTOOL LOCAL chatty.sh\nLIMIT TOOL_OUTPUT 1KB",
            model_line(&mock)
        ),
    );
    files(
        &dir,
        &[
            (
                "hang.sh",
                &format!("sleep 60 &\necho $! > '{}'\nwait\n", pidfile.display()),
            ),
            (
                "chatty.sh",
                "i=0; while [ $i -lt 500 ]; do echo 0123456789; i=$((i+1)); done\n",
            ),
        ],
    );
    let doc = run(&d, &dir, "{}", &[]);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let tool_calls = events_of(&doc, "tool_call");
    let hang = &tool_calls[0];
    assert_eq!(hang["ok"], false);
    assert_eq!(hang["timed_out"], true);
    assert!(
        hang["output"]
            .as_str()
            .expect("text")
            .contains("timeout of 1s"),
        "{hang}"
    );
    let sleeper: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    eventually(5, "the tool's child is killed with its group", || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(sleeper), None).is_err()
    });
    let chatty = &tool_calls[1];
    assert_eq!(chatty["ok"], true);
    assert_eq!(chatty["bytes"], 5500);
    assert_eq!(chatty["truncated"], true);
    let seen = chatty["output"].as_str().expect("text");
    assert!(
        seen.len() < 1200 && seen.contains("output truncated"),
        "{seen}"
    );
    let artifact = chatty["artifact"].as_str().expect("an artifact");
    let kept = doc["artifacts"]
        .as_array()
        .expect("artifacts")
        .iter()
        .find(|a| a["name"] == artifact)
        .unwrap_or_else(|| panic!("{artifact} is collected: {doc:#}"));
    assert_eq!(kept["size"], 5500);
}

/// A one-request-at-a-time HTTP server on loopback: answers each request
/// with its Authorization header and body, as JSON.
fn echo_server() -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/refunds", listener.local_addr().expect("addr"));
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        if let Ok((mut stream, _)) = listener.accept() {
            let mut buf = vec![0u8; 65536];
            let mut got = Vec::new();
            loop {
                let n = stream.read(&mut buf).unwrap_or(0);
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len || n == 0 {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&got).to_string();
            let auth = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix("authorization: ")
                        .or_else(|| l.strip_prefix("Authorization: "))
                })
                .unwrap_or("")
                .to_string();
            let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
            seen.push(text.lines().next().unwrap_or("").to_string());
            let answer = json!({"auth": auth, "body": body}).to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
        seen
    });
    (url, handle)
}

#[test]
fn an_http_tool_sends_the_arguments_with_a_header_from_a_secret() {
    let d = Dispatch::new();
    let (url, server) = echo_server();
    let mock = Mock::start(json!([
        calls(&[("refund", json!({"order": "12345", "amount": 40.0}))]),
        text("refunded", 1, 1),
    ]));
    let dir = native_agent(
        d.dir.path(),
        "refunder",
        &format!(
            "{}\nSECRET BILLING_TOKEN\nTOOL HTTP refund POST {url} HEADER Authorization=BILLING_TOKEN",
            model_line(&mock)
        ),
    );
    let doc = run(&d, &dir, "{}", &[("BILLING_TOKEN", "Bearer s3cr3t-token")]);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let seen = server.join().expect("server");
    assert_eq!(seen, vec!["POST /refunds HTTP/1.1".to_string()]);
    let call = events_of(&doc, "tool_call")[0].clone();
    assert_eq!(call["kind"], "http");
    assert_eq!(call["status"], 200);
    let answer: Value =
        serde_json::from_str(call["output"].as_str().expect("text")).unwrap_or(Value::Null);
    // The secret reached the server, and is masked in what was stored.
    let auth = answer["auth"].as_str().expect("the header came back");
    assert!(!auth.is_empty() && !auth.contains("s3cr3t"), "{call}");
    assert_eq!(
        serde_json::from_str::<Value>(answer["body"].as_str().unwrap_or("{}")).ok(),
        Some(json!({"order": "12345", "amount": 40.0}))
    );
    let stored = std::fs::read(d.root().join("dispatch.db")).expect("the database");
    let needle = b"s3cr3t-token";
    assert!(
        !stored.windows(needle.len()).any(|w| w == needle),
        "the secret is never stored"
    );
}

#[test]
fn built_in_files_stay_in_the_run_and_memory_lasts_across_runs() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        calls(&[
            (
                "write_file",
                json!({"path": "notes/a.txt", "content": "hello"})
            ),
            (
                "memory_put",
                json!({"key": "customer", "value": {"name": "Ada"}})
            ),
        ]),
        calls(&[
            ("read_file", json!({"path": "notes/a.txt"})),
            ("read_file", json!({"path": "../../dispatch.db"})),
        ]),
        text("first run done", 1, 1),
        calls(&[
            ("memory_get", json!({"key": "customer"})),
            ("memory_list", json!({}))
        ]),
        text("second run done", 1, 1),
    ]));
    let dir = native_agent(
        d.dir.path(),
        "keeper",
        &format!(
            "{}\nTOOL BUILTIN read_file write_file list_files memory_get memory_put memory_list",
            model_line(&mock)
        ),
    );
    // Kept after the run, to look at what the tools wrote.
    let dir_arg = dir.to_str().expect("utf-8");
    let id = d.ok(&[
        "run",
        dir_arg,
        "--job",
        "{}",
        "--keep-workspace",
        "--detach",
    ]);
    let first = d.wait_terminal(&id);
    assert_eq!(first["status"], "succeeded", "{first:#}");
    let c = events_of(&first, "tool_call");
    assert_eq!(c[2]["output"], "hello");
    assert_eq!(c[3]["ok"], false, "{}", c[3]);
    assert!(
        c[3]["output"].as_str().expect("text").contains("outside"),
        "{}",
        c[3]
    );
    let id = first["id"].as_str().expect("id");
    let written: PathBuf = d.root().join("runs").join(id).join("work/notes/a.txt");
    assert_eq!(
        std::fs::read_to_string(written).expect("in the run's work dir"),
        "hello"
    );
    let second = run_again(&d, &dir);
    assert_eq!(second["status"], "succeeded", "{second:#}");
    let c = events_of(&second, "tool_call");
    assert_eq!(c[0]["output"], r#"{"name":"Ada"}"#, "{}", c[0]);
    assert_eq!(c[1]["output"], r#"["customer"]"#, "{}", c[1]);
}

/// Runs `dir` once more; returns the newest run's document.
fn run_again(d: &Dispatch, dir: &Path) -> Value {
    let out = d.run(&["run", dir.to_str().expect("utf-8"), "--job", "{}"]);
    assert!(out.status.code().is_some());
    let ids = d.ok(&["ps", "-a", "-q"]);
    d.inspect(ids.lines().next().expect("a run"))
}

#[test]
fn limit_tool_calls_ends_the_run_saying_so() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        calls(&[
            ("read_file", json!({"path": "a"})),
            ("read_file", json!({"path": "b"}))
        ]),
        text("never", 1, 1),
    ]));
    let dir = native_agent(
        d.dir.path(),
        "greedy",
        &format!(
            "{}\nTOOL BUILTIN read_file\nLIMIT TOOL_CALLS 1",
            model_line(&mock)
        ),
    );
    let doc = run(&d, &dir, "{}", &[]);
    assert_eq!(doc["status"], "failed", "{doc:#}");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(reason.contains("tool_calls_exceeded"), "{reason}");
    assert_eq!(mock.requests().len(), 1, "no call after the limit");
}

#[test]
fn list_tools_and_print_prompt_show_what_the_model_would_see_without_running() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([]));
    let dir = native_agent(
        d.dir.path(),
        "lister",
        &format!(
            "{}\nTOOL LOCAL tools/lookup.sh AS lookup_order DESCRIPTION \"Find an order\" APPROVAL confirm RISK high\nTOOL BUILTIN read_file",
            model_line(&mock)
        ),
    );
    files(&dir, &[("tools/lookup.sh", "echo ok\n")]);
    let table = d.ok(&["run", dir.to_str().expect("utf-8"), "--list-tools"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(
        lines[1].contains("lookup_order")
            && lines[1].contains("local")
            && lines[1].contains("confirm")
            && lines[1].contains("high")
            && lines[1].contains("Find an order"),
        "{table}"
    );
    assert!(
        lines[2].contains("read_file") && lines[2].contains("builtin"),
        "{table}"
    );
    let json_out = d.ok(&[
        "run",
        dir.to_str().expect("utf-8"),
        "--list-tools",
        "--format",
        "json",
    ]);
    let doc: Value = serde_json::from_str(&json_out).expect("json");
    assert_eq!(doc["tools"][1]["parameters"]["required"], json!(["path"]));
    let prompt = d.ok(&["run", dir.to_str().expect("utf-8"), "--print-prompt"]);
    let prompt: Value = serde_json::from_str(&prompt).expect("json");
    let sent: Vec<&str> = prompt["body"]["tools"]
        .as_array()
        .expect("tools in the request")
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert_eq!(sent, vec!["lookup_order", "read_file"]);
    assert!(mock.requests().is_empty(), "no model call");
    assert!(d.ok(&["ps", "-a", "-q"]).is_empty(), "no run");
    let e = d.fails(&["run", "examples/none", "--list-tools"], 125);
    assert!(!e.is_empty());
}
