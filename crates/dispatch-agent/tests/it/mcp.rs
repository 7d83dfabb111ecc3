//! The MCP client against the fixture server, both built on the official
//! SDK: over stdio the fixture is a real process (`dispatch-mcp-fixture`)
//! started as a COMMAND, over streamable HTTP it serves on a loopback port.

use std::time::Duration;

use dispatch_agent::mcp::{McpConfig, McpServer};
use dispatch_test_support::eventually_async;
use dispatch_test_support::mock::mcp::{FAIL_TEXT, serve_http};
use nix::sys::signal::killpg;
use nix::unistd::Pid;
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::time::Instant;

const START: Duration = Duration::from_secs(10);
const CALL: Duration = Duration::from_secs(10);
/// The fixture program (`dispatch-mcp-fixture`, of dispatch-test-support).
fn fixture_exe() -> String {
    dispatch_test_support::mock::mcp::fixture_program()
        .display()
        .to_string()
}

/// A stdio server running `command` with PATH plus `env`.
fn stdio(name: &str, command: &str, env: &[(&str, &str)]) -> McpConfig {
    let mut vars = vec![(
        "PATH".to_string(),
        std::env::var("PATH").unwrap_or_default(),
    )];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    McpConfig {
        name: name.to_string(),
        command: Some(command.to_string()),
        cwd: std::env::temp_dir(),
        env: vars,
        ..McpConfig::default()
    }
}

/// The fixture over stdio.
fn fixture(name: &str, env: &[(&str, &str)]) -> McpConfig {
    stdio(name, &format!("exec '{}'", fixture_exe()), env)
}

async fn start(config: &McpConfig) -> McpServer {
    match McpServer::start(config, START).await {
        Ok(server) => server,
        Err(e) => panic!("the server starts: {e}"),
    }
}

async fn start_err(config: &McpConfig, limit: Duration) -> String {
    match McpServer::start(config, limit).await {
        Ok(server) => {
            server.shutdown().await;
            panic!("`{}` should not start", config.name)
        }
        Err(e) => {
            eprintln!("start error: {e}");
            e
        }
    }
}

fn names(server: &McpServer) -> Vec<&str> {
    server.tools().iter().map(|t| t.name.as_str()).collect()
}

fn group_exists(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

/// The fixture serving HTTP in this process; its `/mcp` URL.
async fn http_fixture() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("a local address");
    tokio::spawn(serve_http(listener));
    format!("http://{addr}/mcp")
}

fn http(name: &str, url: &str, headers: &[(&str, &str)]) -> McpConfig {
    McpConfig {
        name: name.to_string(),
        url: Some(url.to_string()),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..McpConfig::default()
    }
}

#[tokio::test]
async fn a_stdio_server_lists_its_tools_and_answers_calls() {
    let server = start(&fixture("files", &[])).await;
    assert_eq!(server.name(), "files");
    assert_eq!(
        server.server_info(),
        (
            "dispatch-mcp-fixture".to_string(),
            env!("CARGO_PKG_VERSION").to_string()
        )
    );
    assert_eq!(names(&server), ["echo", "add", "fail", "slow", "whoami"]);
    let echo = &server.tools()[0];
    assert_eq!(echo.description, "Returns the text it is given.");
    assert_eq!(echo.input_schema["properties"]["text"]["type"], "string");
    assert_eq!(server.tools_digest().len(), 64);

    let echoed = server.call("echo", json!({"text": "hello"}), CALL).await;
    assert_eq!(echoed, Ok(("hello".to_string(), false)));
    let sum = server.call("add", json!({"a": 2, "b": 3.5}), CALL).await;
    assert_eq!(sum, Ok(("5.5".to_string(), false)));
    let who = server.call("whoami", json!(null), CALL).await;
    assert_eq!(who, Ok(("stdio".to_string(), false)));

    let bad = server.call("echo", json!(["hello"]), CALL).await;
    assert!(bad.is_err_and(|e| e.contains("JSON object")));
    eventually_async(10, "stderr is captured", || {
        server.stderr_tail().contains("mcp fixture: ready")
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_tool_error_comes_back_as_is_error() {
    let server = start(&fixture("files", &[])).await;
    let failed = server.call("fail", json!({}), CALL).await;
    assert_eq!(failed, Ok((FAIL_TEXT.to_string(), true)));
    // A protocol error (bad arguments) is an Err, not a tool result.
    let rejected = server.call("add", json!({"a": "two"}), CALL).await;
    assert!(
        rejected
            .as_ref()
            .is_err_and(|e| e.contains("`a` must be a number") && e.contains("files")),
        "{rejected:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn allow_exposes_only_the_named_tools_and_the_digest_covers_all() {
    let mut config = fixture("files", &[]);
    let everything = start(&config).await;
    config.allow = vec!["echo".to_string()];
    let some = start(&config).await;
    assert_eq!(names(&some), ["echo"]);
    assert_eq!(some.tools_digest(), everything.tools_digest());
    let refused = some.call("add", json!({"a": 1, "b": 2}), CALL).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("`add`")),
        "{refused:?}"
    );
    tokio::join!(some.shutdown(), everything.shutdown());
}

#[tokio::test]
async fn an_allow_name_the_server_lacks_fails_start_naming_it() {
    let mut config = fixture("files", &[]);
    config.allow = vec!["echo".to_string(), "delete_everything".to_string()];
    let error = start_err(&config, START).await;
    assert!(error.contains("`files`"), "{error}");
    assert!(error.contains("`delete_everything`"), "{error}");
    assert!(error.contains("echo, add, fail, slow, whoami"), "{error}");
}

#[tokio::test]
async fn a_call_past_its_timeout_is_an_error_naming_the_timeout() {
    let server = start(&fixture("files", &[])).await;
    let slow = server
        .call("slow", json!({"ms": 30_000}), Duration::from_millis(200))
        .await;
    assert!(
        slow.as_ref()
            .is_err_and(|e| e.contains("200ms") && e.contains("`slow`")),
        "{slow:?}"
    );
    // The session survives a timed-out call.
    let echoed = server
        .call("echo", json!({"text": "still here"}), CALL)
        .await;
    assert_eq!(echoed, Ok(("still here".to_string(), false)));
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_leaves_no_process_of_the_group_behind() {
    // A grandchild in the server's group that would outlive the server.
    let command = format!(
        "sleep 300 </dev/null >/dev/null 2>&1 & exec '{}'",
        fixture_exe()
    );
    let server = start(&stdio("files", &command, &[])).await;
    let pgid = server.process_group().expect("a stdio server has a group");
    assert!(group_exists(pgid));
    server.shutdown().await;
    // Orphans are reaped by init, which may take a moment.
    eventually_async(10, "the process group is gone", || !group_exists(pgid)).await;
}

#[tokio::test]
async fn dropping_a_server_kills_its_process_group() {
    let command = format!(
        "sleep 300 </dev/null >/dev/null 2>&1 & exec '{}'",
        fixture_exe()
    );
    let server = start(&stdio("files", &command, &[])).await;
    let pgid = server.process_group().expect("a stdio server has a group");
    drop(server);
    eventually_async(10, "the process group is gone", || !group_exists(pgid)).await;
}

#[tokio::test]
async fn a_server_that_dies_mid_session_fails_calls_instead_of_hanging() {
    let server = start(&fixture("files", &[])).await;
    let pgid = server.process_group().expect("a stdio server has a group");
    killpg(Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL).expect("the group exists");
    let call = server.call("echo", json!({"text": "anyone?"}), CALL).await;
    eprintln!("call after death: {call:?}");
    assert!(
        call.as_ref()
            .is_err_and(|e| e.contains("`echo`") && e.contains("`files`")),
        "{call:?}"
    );
    server.shutdown().await;
}

#[test]
fn servers_and_their_futures_can_move_between_threads() {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>() {}
    fn call_is_send(server: &McpServer) {
        send(&server.call("echo", json!({}), CALL));
    }
    send_sync::<McpServer>();
    send(&McpServer::start(&McpConfig::default(), START));
    let _ = call_is_send as fn(&McpServer);
}

#[tokio::test]
async fn a_server_that_exits_at_start_fails_with_its_stderr_tail() {
    let config = fixture("files", &[("MCP_FIXTURE_FAIL_START", "1")]);
    let error = start_err(&config, START).await;
    assert!(
        error.starts_with("MCP server `files` exited before answering initialize"),
        "{error}"
    );
    assert!(error.contains("exit status: 1"), "{error}");
    assert!(
        error.contains(
            "its stderr ended with: mcp fixture: refusing to start because MCP_FIXTURE_FAIL_START=1"
        ),
        "{error}"
    );
    assert!(!error.contains('\n'), "one line: {error}");
}

#[tokio::test]
async fn a_command_that_does_not_exist_fails_clearly() {
    let config = stdio("files", "/nonexistent/dispatch-mcp-server --stdio", &[]);
    let error = start_err(&config, START).await;
    assert!(error.contains("`files`"), "{error}");
    assert!(error.contains("exit status: 127"), "{error}");
    assert!(
        error.contains("/nonexistent/dispatch-mcp-server"),
        "{error}"
    );
    assert!(error.contains("not found"), "{error}");
}

#[tokio::test]
async fn a_missing_working_directory_fails_clearly() {
    let mut config = fixture("files", &[]);
    config.cwd = "/nonexistent/work".into();
    let error = start_err(&config, START).await;
    assert!(
        error.starts_with("MCP server `files` could not be started in /nonexistent/work"),
        "{error}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_and_is_stopped() {
    let config = stdio("mute", "echo 'thinking about it' >&2; exec sleep 300", &[]);
    let began = Instant::now();
    let error = start_err(&config, Duration::from_secs(1)).await;
    assert!(
        error.starts_with("MCP server `mute` did not answer initialize within 1s"),
        "{error}"
    );
    assert!(
        error.contains("its stderr ended with: thinking about it"),
        "{error}"
    );
    assert!(began.elapsed() < START, "start gave up in time");
}

#[tokio::test]
async fn the_tools_digest_is_stable_and_changes_with_the_tool_list() {
    let plain = fixture("files", &[]);
    let extra = fixture("files", &[("MCP_FIXTURE_EXTRA_TOOL", "summarize")]);
    let (a, b, c) = tokio::join!(start(&plain), start(&plain), start(&extra));
    assert_eq!(a.tools_digest(), b.tools_digest());
    assert_ne!(a.tools_digest(), c.tools_digest());
    assert!(names(&c).contains(&"summarize"));
    let extra_call = c.call("summarize", json!({}), CALL).await;
    assert_eq!(extra_call, Ok(("extra".to_string(), false)));
    tokio::join!(a.shutdown(), b.shutdown(), c.shutdown());
}

#[tokio::test]
async fn an_http_server_lists_its_tools_and_answers_calls() {
    let url = http_fixture().await;
    let server = start(&http("remote", &url, &[])).await;
    assert_eq!(server.server_info().0, "dispatch-mcp-fixture");
    assert_eq!(names(&server), ["echo", "add", "fail", "slow", "whoami"]);
    assert_eq!(server.process_group(), None);
    let sum = server.call("add", json!({"a": 40, "b": 2}), CALL).await;
    assert_eq!(sum, Ok(("42".to_string(), false)));
    let failed = server.call("fail", json!({}), CALL).await;
    assert_eq!(failed, Ok((FAIL_TEXT.to_string(), true)));
    let slow = server
        .call("slow", json!({"ms": 30_000}), Duration::from_millis(200))
        .await;
    assert!(slow.is_err_and(|e| e.contains("200ms")));
    server.shutdown().await;
}

#[tokio::test]
async fn http_headers_reach_the_server() {
    let url = http_fixture().await;
    let config = http("remote", &url, &[("Authorization", "Bearer s3cret")]);
    let server = start(&config).await;
    let who = server.call("whoami", json!({}), CALL).await;
    assert_eq!(who, Ok(("Bearer s3cret".to_string(), false)));
    server.shutdown().await;
}

#[tokio::test]
async fn an_http_server_that_is_not_there_fails_start() {
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener.local_addr().expect("a local address")
    };
    let config = http("gone", &format!("http://{addr}/mcp"), &[]);
    let error = start_err(&config, Duration::from_secs(3)).await;
    assert!(error.starts_with("MCP server `gone`"), "{error}");
    assert!(error.contains("initialize"), "{error}");
}

#[tokio::test]
async fn an_invalid_header_fails_start() {
    let config = http("remote", "http://127.0.0.1:9/mcp", &[("bad header", "x")]);
    let error = start_err(&config, START).await;
    assert!(
        error.contains("`bad header` is not a valid header name"),
        "{error}"
    );
}

#[tokio::test]
async fn the_fixture_program_serves_http_at_the_url_it_prints() {
    let mut child = tokio::process::Command::new(fixture_exe())
        .args(["--http", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the fixture starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let url = tokio::time::timeout(START, lines.next_line())
        .await
        .expect("the fixture prints its URL in time")
        .expect("stdout is readable")
        .expect("a line");
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"),
        "{url}"
    );
    let server = start(&http("remote", &url, &[])).await;
    let echoed = server
        .call("echo", json!({"text": "over http"}), CALL)
        .await;
    assert_eq!(echoed, Ok(("over http".to_string(), false)));
    server.shutdown().await;
    child.kill().await.expect("the fixture stops");
}
