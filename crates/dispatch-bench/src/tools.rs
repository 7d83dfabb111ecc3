//! `dispatch-bench tools [--dispatch PATH] [--calls N] [--approvals N]`: the
//! native agent's tool targets.
//!
//! - LOCAL: `--calls` (300) calls of a LOCAL tool through the tool box
//!   (arguments checked against its schema, its process group, its timeout)
//!   against the same number of bare spawns of the same program with the
//!   same stdin and captured stdout, alternating; p50 of each and the
//!   difference.
//! - MCP over stdio: calls of the fixture server's `echo` tool three ways:
//!   raw JSON-RPC lines written to the server's stdin and read from its
//!   stdout (the server's own time and the pipes), through the MCP client,
//!   and through the tool box; p50 of each.
//! - Approvals: `--approvals` (30) runs on a `dispatch server` (SQLite, two
//!   in-process workers) against the mock model server, each pausing on a
//!   tool with `APPROVAL confirm`; the time from the answer of `POST
//!   /v1/runs/{id}/approvals/{aid}` to the tool's first instruction (it
//!   reads the clock), p50 and max.
//!
//! Needs the release build of the workspace (`dispatch-mcp-fixture` beside
//! this program).

use dispatch_test_support::http;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dispatch_agent::mcp::{McpConfig, McpServer};
use dispatch_agent::tools::{ToolBox, ToolContext};
use dispatch_agent::{ToolCall, Tools};
use dispatch_core::tool::{ToolDecl, ToolKind};
use serde_json::{Value, json};

pub fn main(dispatch: &Path, args: &[String]) {
    let value = |flag: &str, default: usize| {
        crate::flag_value(args, flag)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (calls, approvals) = (value("--calls", 300), value("--approvals", 30));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("| measurement | p50 | target |\n|---|---|---|");
    rt.block_on(local(calls));
    rt.block_on(mcp(calls));
    approval_latency(dispatch, approvals);
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn context(dir: &Path) -> ToolContext<'static> {
    ToolContext {
        parcel_dir: dir.to_path_buf(),
        work_dir: dir.join("work"),
        artifacts_dir: dir.join("artifacts"),
        env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())].into(),
        secrets: Default::default(),
        scoped: Default::default(),
        mask: Vec::new(),
        memory: None,
        checkpoints: None,
        default_timeout_ms: None,
        approver: None,
        messenger: None,
        max_calls: Some(u64::MAX),
        max_output_bytes: None,
        http: reqwest_client(),
        sandbox: None,
        spawn_hook: None,
        gate: None,
        launcher: None,
    }
}

fn reqwest_client() -> dispatch_agent::tools::HttpClient {
    dispatch_agent::tools::HttpClient::new()
}

fn decl(name: &str, kind: ToolKind, schema: Option<Value>) -> ToolDecl {
    serde_json::from_value(json!({"name": name, "kind": "builtin"}))
        .map(|mut d: ToolDecl| {
            d.kind = kind;
            d.schema = schema;
            d
        })
        .expect("a declaration")
}

async fn local(n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let program = dir.path().join("tool.sh");
    std::fs::write(&program, "#!/bin/sh\ncat > /dev/null\necho ok\n").expect("tool");
    let mut perms = std::fs::metadata(&program).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&program, perms).expect("chmod");
    let schema = json!({"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]});
    let d = decl(
        "lookup",
        ToolKind::Local {
            program: "tool.sh".into(),
            using: Vec::new(),
        },
        Some(schema),
    );
    let tools = ToolBox::start(&[d], context(dir.path()))
        .await
        .expect("tools");
    let call = ToolCall {
        id: "c".into(),
        name: "lookup".into(),
        arguments: r#"{"order":"12345"}"#.into(),
        signature: None,
    };
    let (mut boxed, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let out = tools.call(&call).await;
        assert!(!out.is_error, "{}", out.text);
        boxed.push(ms(t.elapsed()));
        let t = Instant::now();
        let mut child = tokio::process::Command::new(&program)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        if let Some(mut stdin) = child.stdin.take() {
            tokio::io::AsyncWriteExt::write_all(&mut stdin, br#"{"order":"12345"}"#)
                .await
                .expect("stdin");
        }
        let out = child.wait_with_output().await.expect("output");
        assert!(out.status.success());
        bare.push(ms(t.elapsed()));
    }
    tools.shutdown().await;
    let (b, s) = (p50(boxed), p50(bare));
    println!("| LOCAL tool call, through the tool box ({n}) | {b:.3} ms | |");
    println!("| bare spawn of the same program ({n}) | {s:.3} ms | |");
    println!(
        "| **overhead per LOCAL call** | **{:.3} ms** | ≤ 1 ms |",
        b - s
    );
}

fn fixture() -> std::path::PathBuf {
    dispatch_test_support::mock::mcp::fixture_program()
}

async fn mcp(n: usize) {
    // The server's own time: JSON-RPC lines straight over its pipes.
    let mut child = Command::new(fixture())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the fixture starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let mut send = |v: Value, answer: bool, line: &mut String| {
        writeln!(stdin, "{v}").expect("write");
        stdin.flush().expect("flush");
        if answer {
            line.clear();
            stdout.read_line(line).expect("read");
        }
    };
    send(
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-03-26", "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"}}}),
        true,
        &mut line,
    );
    send(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        false,
        &mut line,
    );
    let mut raw = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        send(
            json!({"jsonrpc": "2.0", "id": i + 1, "method": "tools/call",
                   "params": {"name": "echo", "arguments": {"text": "hi"}}}),
            true,
            &mut line,
        );
        raw.push(ms(t.elapsed()));
        assert!(line.contains("hi"), "{line}");
    }
    let _ = child.kill();
    let _ = child.wait();

    let dir = tempfile::tempdir().expect("tempdir");
    let config = McpConfig {
        name: "fixture".into(),
        command: Some(format!("exec '{}'", fixture().display())),
        cwd: dir.path().to_path_buf(),
        env: vec![("PATH".into(), std::env::var("PATH").unwrap_or_default())],
        ..McpConfig::default()
    };
    let server = McpServer::start(&config, Duration::from_secs(10))
        .await
        .expect("the client starts it");
    let mut client = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let (text, _) = server
            .call("echo", json!({"text": "hi"}), Duration::from_secs(5))
            .await
            .expect("a call");
        client.push(ms(t.elapsed()));
        assert_eq!(text, "hi");
    }
    server.shutdown().await;
    let d = decl(
        "fixture",
        ToolKind::Mcp {
            command: Some(format!("exec '{}'", fixture().display())),
            url: None,
            headers: Vec::new(),
            allow: vec!["echo".into()],
        },
        None,
    );
    let tools = ToolBox::start(&[d], context(dir.path()))
        .await
        .expect("tools");
    let call = ToolCall {
        id: "c".into(),
        name: "echo".into(),
        arguments: r#"{"text":"hi"}"#.into(),
        signature: None,
    };
    let mut boxed = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let out = tools.call(&call).await;
        boxed.push(ms(t.elapsed()));
        assert_eq!(out.text, "hi");
    }
    tools.shutdown().await;
    let (r, c, b) = (p50(raw), p50(client), p50(boxed));
    println!("| MCP stdio `echo`, raw JSON-RPC lines: the server's own time ({n}) | {r:.3} ms | |");
    println!("| … through the MCP client (rmcp) ({n}) | {c:.3} ms | |");
    println!("| … through the tool box ({n}) | {b:.3} ms | |");
    println!(
        "| **overhead per MCP stdio call** | **{:.3} ms** | ≤ 0.5 ms |",
        b - r
    );
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

fn approval_latency(dispatch: &Path, n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let script: dispatch_test_support::mock::Script = serde_json::from_value(json!({
        "fallback": {"kind": "rounds", "tool_rounds": 1, "tool_name": "stamp", "text": "done"},
        "record_bodies": false,
    }))
    .expect("script");
    let mock = rt
        .block_on(dispatch_test_support::mock::MockServer::start(script))
        .expect("mock");
    let stamps = dir.path().join("stamps");
    std::fs::create_dir_all(&stamps).expect("stamps");
    let agent = dir.path().join("agent");
    std::fs::create_dir_all(&agent).expect("agent");
    std::fs::write(
        agent.join("stamp.sh"),
        format!("date +%s%N > '{}'/$$\n", stamps.display()),
    )
    .expect("tool");
    std::fs::write(
        agent.join("Agentfile"),
        format!(
            "FROM agent\nNAME stamper\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL LOCAL stamp.sh APPROVAL confirm\n",
            mock.base_url()
        ),
    )
    .expect("Agentfile");
    let mut server = Command::new(dispatch)
        .args(["server", "--listen", "127.0.0.1:0", "--workers", "2"])
        .env("DISPATCH_ROOT", dir.path().join(".dispatch"))
        .env_remove("DISPATCH_HOST")
        .env_remove("DISPATCH_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server starts");
    let mut first = String::new();
    BufReader::new(server.stderr.take().expect("stderr"))
        .read_line(&mut first)
        .expect("where it listens");
    let host = first
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("an address")
        .trim_end_matches('/')
        .to_string();
    let run = |args: &[&str]| {
        let out = Command::new(dispatch)
            .args(args)
            .env("DISPATCH_HOST", &host)
            .output()
            .expect("dispatch");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let get = |path: &str| -> Value {
        http::get(&format!("http://{host}{path}"))
            .call()
            .ok()
            .and_then(|r| r.into_string().ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    };
    let mut lat = Vec::new();
    for _ in 0..n {
        let id = run(&["run", agent.to_str().expect("utf-8"), "--detach"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(&format!("/v1/runs/{id}"))["status"] != "paused" {
            assert!(Instant::now() < deadline, "run {id} never paused");
            std::thread::sleep(Duration::from_millis(5));
        }
        let before: Vec<_> = std::fs::read_dir(&stamps)
            .expect("stamps")
            .flatten()
            .collect();
        let body = json!({"decision": "approve", "by": "bench"});
        let answered = http::post(&format!("http://{host}/v1/runs/{id}/approvals/stamp-1"))
            .set("content-type", "application/json")
            .send_string(&body.to_string())
            .map(|_| now_ns())
            .expect("decided");
        let deadline = Instant::now() + Duration::from_secs(30);
        let stamp = loop {
            let now: Vec<_> = std::fs::read_dir(&stamps)
                .expect("stamps")
                .flatten()
                .collect();
            if let Some(new) = now
                .iter()
                .find(|e| !before.iter().any(|b| b.file_name() == e.file_name()))
                && let Ok(text) = std::fs::read_to_string(new.path())
                && let Ok(ns) = text.trim().parse::<i128>()
            {
                break ns;
            }
            assert!(Instant::now() < deadline, "the tool never started");
            std::thread::sleep(Duration::from_millis(1));
        };
        lat.push((stamp - answered) as f64 / 1e6);
    }
    let _ = server.kill();
    let _ = server.wait();
    let max = lat.iter().copied().fold(f64::MIN, f64::max);
    println!(
        "| **approval decided through the API → the tool starts** ({n}; max {max:.2} ms) | **{:.2} ms** | ≤ 10 ms |",
        p50(lat)
    );
}
