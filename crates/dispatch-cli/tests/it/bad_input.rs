//! Bad input: one clear line, a non-zero exit, nothing stored lost.

use crate::common;

use common::Dispatch;

#[test]
fn a_missing_path_is_one_line_and_exit_125() {
    let d = Dispatch::new();
    let err = d.fails(&["run", "./no-such-agent", "--detach"], 125);
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let err = d.fails(&["run", "no-such-parcel"], 125);
    assert!(
        err.contains("neither a directory with an Agentfile nor a built parcel"),
        "{err}"
    );
}

#[test]
fn a_malformed_agentfile_names_the_line_and_the_nearest_directive() {
    let d = Dispatch::new();
    let dir = d.dir.path().join("typo");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("Agentfile"),
        "FROM process\nNAME typo\nCOMAND sh agent.sh\n",
    )
    .expect("write");
    let err = d.fails(&["build", dir.to_str().expect("path")], 125);
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("COMMAND"), "suggests the nearest name: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn unknown_ambiguous_and_malformed_ids_are_refused() {
    let d = Dispatch::new();
    let agent = d.agent("two", "exit 0\n");
    let a = d.detach(&agent, "{}");
    let b = d.detach(&agent, "{}");
    d.ok(&["wait", &a, &b]);
    let err = d.fails(&["inspect-run", "0"], 125);
    assert!(err.contains("matches 2 runs"), "{err}");
    let err = d.fails(&["logs", "fffffff"], 125);
    assert!(err.contains("no run matches `fffffff`"), "{err}");
    let err = d.fails(&["stop", "not-an-id"], 125);
    assert!(err.contains("is not a run id"), "{err}");
    assert_eq!(d.ok(&["ps", "-a", "-q"]).lines().count(), 2, "nothing lost");
}

#[test]
fn a_non_json_payload_is_refused_before_anything_is_stored() {
    let d = Dispatch::new();
    let agent = d.agent("strict", "exit 0\n");
    let err = d.fails(
        &[
            "run",
            agent.to_str().expect("path"),
            "--detach",
            "--job",
            "{name: ada}",
        ],
        125,
    );
    assert!(err.contains("--job is not valid JSON"), "{err}");
    assert!(d.ok(&["ps", "-a", "-q"]).is_empty());
}

#[test]
fn usage_errors_exit_2() {
    let d = Dispatch::new();
    d.fails(&["ps", "--bogus"], 2);
    // `run` is parsed by the helper it forks first: the same codes and text.
    let err = d.fails(&["run"], 2);
    assert!(err.contains("Usage: dispatch run"), "{err}");
    let err = d.fails(&["run", "examples/hello", "--bogus"], 2);
    assert!(err.contains("unexpected argument '--bogus'"), "{err}");
    let help = d.ok(&["run", "--help"]);
    assert!(help.contains("Usage: dispatch run"), "{help}");
    assert!(
        !d.root().join("dispatch.db").exists(),
        "a bad command line stores nothing"
    );
    let err = d.fails(&["ps", "--filter", "colour=red"], 125);
    assert!(err.contains("unknown key `colour`"), "{err}");
    assert!(
        err.contains("label, trigger, since or until"),
        "lists the keys: {err}"
    );
    for bad in ["since=yesterday", "until=2026-11-21"] {
        let err = d.fails(&["ps", "--filter", bad], 125);
        assert!(
            err.contains(&format!("--filter {bad}")) && err.contains("RFC 3339"),
            "names the filter and the forms: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let err = d.fails(&["ps", "--filter", "status=sleeping"], 125);
    assert!(err.contains("unknown status `sleeping`"), "{err}");
}

#[test]
fn a_locked_database_is_reported_and_nothing_is_lost() {
    let d = Dispatch::new();
    let agent = d.agent("locked", "exit 0\n");
    let first = d.detach(&agent, "{}");
    d.ok(&["wait", &first]);
    let db = rusqlite::Connection::open(d.root().join("dispatch.db")).expect("open db");
    db.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let out = d
        .command()
        .env("DISPATCH_BUSY_TIMEOUT_MS", "100")
        .args(["run", agent.to_str().expect("path"), "--detach"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is locked by another process"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    db.execute_batch("ROLLBACK").expect("unlock");
    assert_eq!(d.ok(&["ps", "-a", "-q"]), first, "the stored run is intact");
    assert_eq!(d.status(&first), "succeeded");
}

#[test]
fn a_tampered_brief_refuses_to_start() {
    let d = Dispatch::new();
    let marker = d.dir.path().join("ran");
    let agent = d.agent("victim", &format!("touch {}\n", marker.display()));
    let id = d.ok(&[
        "create",
        agent.to_str().expect("path"),
        "--job",
        r#"{"x":1}"#,
    ]);
    assert_eq!(d.status(&id), "created");
    let sha = d.inspect(&id)["brief_sha256"]
        .as_str()
        .expect("sha")
        .to_string();
    let brief = d.root().join("briefs").join(format!("{sha}.json"));
    let mut text = std::fs::read_to_string(&brief).expect("brief");
    text = text.replace("\"x\": 1", "\"x\": 2");
    std::fs::write(&brief, text).expect("tamper");
    d.ok(&["start", &id]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(reason.contains("failed verification"), "{reason}");
    assert!(!marker.exists(), "the agent never started");
}

#[test]
fn completion_scripts_load_and_an_unknown_shell_is_a_usage_error() {
    let d = Dispatch::new();
    let bash = d.ok(&["completion", "bash"]);
    assert!(
        bash.contains("complete -F _dispatch") || bash.contains("-F _dispatch"),
        "a bash script"
    );
    let out = std::process::Command::new("bash")
        .args(["-c", "source /dev/stdin && complete -p dispatch"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(bash.as_bytes())?;
            c.wait_with_output()
        })
        .expect("bash runs");
    assert!(String::from_utf8_lossy(&out.stdout).contains("_dispatch dispatch"));
    for shell in ["zsh", "fish"] {
        assert!(d.ok(&["completion", shell]).contains("approve"), "{shell}");
    }
    let e = d.fails(&["completion", "tcsh"], 2);
    assert!(e.contains("possible values"), "{e}");
}

#[test]
fn a_root_directory_that_is_not_there_is_an_error_for_readers() {
    let d = Dispatch::new();
    let missing = d.dir.path().join("nope");
    let e = d.fails(
        &["--root", missing.to_str().expect("utf-8"), "ps", "-a"],
        125,
    );
    assert!(e.contains("no state directory at"), "{e}");
    assert!(!missing.exists(), "a reader creates nothing");
}

#[test]
fn an_argument_that_is_not_utf8_is_a_usage_error_not_a_panic() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let d = Dispatch::new();
    let bad = OsStr::from_bytes(b"caf\xe9");
    for args in [vec![OsStr::new("ps"), bad], vec![OsStr::new("run"), bad]] {
        let out = d.command().args(&args).output().expect("dispatch runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            err.contains("invalid UTF-8") || err.contains("unexpected argument"),
            "{err}"
        );
    }
    // A path may be any bytes: `--root` names it as given.
    let out = d
        .command()
        .args([OsStr::new("--root"), bad, OsStr::new("ps")])
        .output()
        .expect("dispatch runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}
