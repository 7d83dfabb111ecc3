//! Checks on a finished `dispatch` command and the agent directories the
//! tests run, shared by the local (`common`) and remote (`remote_common`)
//! test helpers.

use std::path::{Path, PathBuf};
use std::process::Output;

/// Reliability flags `dispatch run` refuses, locally and against a server,
/// each with a piece of the one line it prints (exit 125).
pub const BAD_RELIABILITY_FLAGS: &[(&[&str], &str)] = &[
    (&["--backoff", "soon"], "--backoff soon: invalid duration"),
    (&["--backoff", "5s..1s"], "longer than the max"),
    (&["--timeout", "0s"], "--timeout must be longer than zero"),
    (
        &["--step-timeout", "forever"],
        "--step-timeout: invalid duration",
    ),
    (&["--max-cost", "0"], "--max-cost 0"),
    (
        &["--max-tokens", "0"],
        "--max-tokens must be greater than zero",
    ),
    (
        &["--idempotency-key", ""],
        "--idempotency-key must not be empty",
    ),
    (&["--session", ".hidden"], "invalid session name"),
];

/// Asserts `dispatch <args>` succeeded; returns its trimmed stdout.
pub fn ok(args: &[&str], out: &Output) -> String {
    assert!(
        out.status.success(),
        "dispatch {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Asserts `dispatch <args>` failed with `code`; returns its stderr.
pub fn fails(args: &[&str], out: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(code),
        "dispatch {args:?}: expected exit {code}\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

/// Writes `<base>/<name>/` with an `Agentfile` (`head` first, then the
/// agent, then `extra` directives) and `agent.sh` running `script`.
pub fn agent(base: &Path, name: &str, head: &str, script: &str, extra: &str) -> PathBuf {
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir agent");
    std::fs::write(
        dir.join("Agentfile"),
        format!("{head}NAME {name}\nCOPY agent.sh\nCOMMAND sh agent.sh\n{extra}"),
    )
    .expect("write Agentfile");
    std::fs::write(dir.join("agent.sh"), script).expect("write agent.sh");
    dir
}
