//! The `dispatch-mcp-fixture` program as other crates' tests start it.
//!
//! This file is also why the program exists for them: Cargo builds a
//! package's binaries under `target/debug/` only for that package's own
//! integration tests, so without a test here `cargo test --workspace` on a
//! cold target directory leaves `mock::mcp::fixture_program()` nothing to find.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const PROGRAM: &str = env!("CARGO_BIN_EXE_dispatch-mcp-fixture");

#[test]
fn the_program_sits_where_fixture_program_looks() {
    // An integration test runs from `target/<profile>/deps/`, as the other
    // crates' tests do; the lookup must land on what Cargo built.
    assert_eq!(
        dispatch_test_support::mock::mcp::fixture_program(),
        std::path::PathBuf::from(PROGRAM)
    );
}

#[test]
fn http_mode_prints_its_url_and_serves_until_killed() {
    let mut child = Command::new(PROGRAM)
        .args(["--http", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dispatch-mcp-fixture");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the fixture's first line");
    let alive = child.try_wait().expect("poll the fixture").is_none();
    child.kill().expect("kill the fixture");
    child.wait().expect("reap the fixture");
    assert!(
        line.starts_with("http://127.0.0.1:") && line.trim_end().ends_with("/mcp"),
        "first line: {line:?}"
    );
    assert!(alive, "the fixture exited after printing its URL");
}

#[test]
fn bad_usage_exits_2() {
    let out = Command::new(PROGRAM)
        .arg("--nonsense")
        .output()
        .expect("run dispatch-mcp-fixture");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: dispatch-mcp-fixture"));
}
