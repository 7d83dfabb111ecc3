//! MCP tools of a native agent from the binary: a server over stdio and one
//! over streamable HTTP (the fixture server of `dispatch_test_support::mock::mcp`,
//! built on the official SDK, as a real process), a server that fails to
//! start, and `replay` noticing that a server's tools changed.
//!
//! The fixture program is `dispatch-mcp-fixture`, a binary of the
//! `dispatch-test-support` package, built by `cargo test --workspace`.

use crate::common;
use crate::native_common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::Dispatch;
use native_common::{Mock, events_of, native_agent, text};
use serde_json::{Value, json};

fn fixture() -> PathBuf {
    dispatch_test_support::mock::mcp::fixture_program()
}

fn run(d: &Dispatch, dir: &std::path::Path, env: &[(&str, &str)]) -> Value {
    let out = d
        .command()
        .args(["run", dir.to_str().expect("utf-8"), "--job", "{}"])
        .envs(env.iter().copied())
        .output()
        .expect("dispatch run");
    let id = d.ok(&["ps", "-a", "-q"]);
    let id = id
        .lines()
        .next()
        .unwrap_or_else(|| panic!("a run: {}", String::from_utf8_lossy(&out.stderr)));
    d.inspect(id)
}

#[test]
fn a_stdio_mcp_server_s_tools_are_called_and_in_the_bill_of_materials() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [
            {"name": "echo", "arguments": {"text": "hi there"}, "id": "c0"},
            {"name": "add", "arguments": {"a": 2, "b": 3}, "id": "c1"},
        ]},
        text("5", 1, 1),
    ]));
    let dir = native_agent(
        d.dir.path(),
        "mcp-user",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL MCP demo COMMAND \"{}\" ALLOW echo,add",
            mock.url(),
            fixture().display()
        ),
    );
    let listed = d.ok(&["run", dir.to_str().expect("utf-8"), "--list-tools"]);
    assert!(
        listed.contains("echo") && listed.contains("mcp:demo"),
        "{listed}"
    );
    assert!(!listed.contains("slow"), "ALLOW hides the rest: {listed}");
    let doc = run(&d, &dir, &[]);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let calls = events_of(&doc, "tool_call");
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert_eq!(calls[0]["kind"], "mcp");
    assert_eq!(calls[0]["server"], "demo");
    assert_eq!(calls[0]["output"], "hi there");
    assert_eq!(calls[1]["output"], "5");
    let bom = &events_of(&doc, "bom")[0];
    let server = &bom["mcp_servers"][0];
    assert_eq!(server["name"], "demo");
    assert!(server["server_name"].is_string(), "{bom}");
    assert_eq!(server["tools_sha256"].as_str().map(str::len), Some(64));
    let tools: Vec<&str> = bom["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(tools, vec!["echo", "add"]);
    // The model got the server's own schemas.
    let sent = &mock.requests()[0].body["tools"];
    assert!(sent.to_string().contains("\"text\""), "{sent}");
}

#[test]
fn a_streamable_http_mcp_server_is_reached_at_its_url() {
    let d = Dispatch::new();
    let mut server = Command::new(fixture())
        .args(["--http", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the fixture serves HTTP");
    let mut url = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut url)
        .expect("its URL");
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [{"name": "echo", "arguments": {"text": "over http"}}]},
        text("ok", 1, 1),
    ]));
    let dir = native_agent(
        d.dir.path(),
        "mcp-http",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL MCP web URL {}",
            mock.url(),
            url.trim()
        ),
    );
    let doc = run(&d, &dir, &[]);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(events_of(&doc, "tool_call")[0]["output"], "over http");
}

#[test]
fn an_mcp_server_that_fails_to_start_fails_the_attempt_naming_it_and_its_stderr() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([text("never", 1, 1)]));
    let dir = native_agent(
        d.dir.path(),
        "mcp-bad",
        &format!(
            // The server reads the variable: the parcel passes it on by name.
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL MCP broken COMMAND \"{}\"\n\
             ENV_PASSTHROUGH MCP_FIXTURE_FAIL_START",
            mock.url(),
            fixture().display()
        ),
    );
    let doc = run(&d, &dir, &[("MCP_FIXTURE_FAIL_START", "1")]);
    assert_eq!(doc["status"], "failed", "{doc:#}");
    let reason = doc["state"]["reason"].as_str().expect("a reason");
    assert!(reason.contains("MCP server `broken`"), "{reason}");
    assert!(reason.contains("stderr"), "{reason}");
    assert!(
        mock.requests().is_empty(),
        "no model call without the tools"
    );
}

#[test]
fn replay_warns_or_refuses_when_a_server_s_tools_changed() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([text("first", 1, 1), text("again", 1, 1)]));
    let dir = native_agent(
        d.dir.path(),
        "mcp-drift",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL MCP demo COMMAND \"{}\"\nENV_PASSTHROUGH MCP_FIXTURE_EXTRA_TOOL",
            mock.url(),
            fixture().display()
        ),
    );
    let doc = run(&d, &dir, &[]);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let id = doc["id"].as_str().expect("id");
    let strict = d
        .command()
        .args(["replay", id, "--allow-side-effects", "--strict"])
        .env("MCP_FIXTURE_EXTRA_TOOL", "surprise")
        .output()
        .expect("replay");
    assert_eq!(strict.status.code(), Some(125));
    let err = String::from_utf8_lossy(&strict.stderr);
    assert!(err.contains("MCP server `demo`'s tools changed"), "{err}");
    let warned = d
        .command()
        .args(["replay", id, "--allow-side-effects"])
        .env("MCP_FIXTURE_EXTRA_TOOL", "surprise")
        .output()
        .expect("replay");
    assert_eq!(warned.status.code(), Some(0), "{warned:?}");
    let err = String::from_utf8_lossy(&warned.stderr);
    assert!(
        err.contains("warning: MCP server `demo`'s tools changed"),
        "{err}"
    );
    // Unchanged: no word about it.
    let same = d
        .command()
        .args(["replay", id, "--allow-side-effects", "--strict"])
        .output()
        .expect("replay");
    assert_eq!(same.status.code(), Some(0), "{same:?}");
}
