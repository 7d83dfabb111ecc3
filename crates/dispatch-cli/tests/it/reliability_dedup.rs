//! Promise 6: deduplication by idempotency key.

use crate::common;

use common::Dispatch;

fn run_out(d: &Dispatch, args: &[&str]) -> (String, String) {
    let out = d.run(args);
    assert!(out.status.success(), "dispatch {args:?}: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn a_second_dispatch_with_the_same_key_returns_the_live_run_unless_forced() {
    let d = Dispatch::new();
    let gate = d.dir.path().join("gate");
    let agent = d.agent(
        "once",
        &format!("while [ ! -e {} ]; do sleep 0.02; done\n", gate.display()),
    );
    let a = agent.to_str().expect("utf-8");
    let args = ["run", a, "--detach", "--idempotency-key", "order-42"];
    let (first, _) = run_out(&d, &args);
    let (second, err) = run_out(&d, &args);
    assert_eq!(second, first, "the existing run id is returned");
    assert!(
        err.contains(&format!(
            "run {first} with the same idempotency key is already"
        )),
        "{err}"
    );
    let (forced, _) = run_out(&d, &[&args[..], &["--force"]].concat());
    assert_ne!(forced, first, "--force dispatches anyway");
    std::fs::write(&gate, b"").expect("open the gate");
    assert_eq!(d.wait_terminal(&first)["status"], "succeeded");
    assert_eq!(d.wait_terminal(&forced)["status"], "succeeded");
    let (after, err) = run_out(&d, &args);
    assert_eq!(
        after, forced,
        "the newest succeeded run answers for its key: {err}"
    );
    assert_eq!(
        d.ok(&["ps", "-a", "-q"]).lines().count(),
        2,
        "only two runs exist"
    );
}

#[test]
fn dedup_derives_the_key_from_parcel_operation_and_payload_and_a_failure_does_not_block() {
    let d = Dispatch::new();
    let agent = d.agent(
        "hashing",
        "grep -q fail \"$DISPATCH_PAYLOAD\" && exit 1\nexit 0\n",
    );
    let a = agent.to_str().expect("utf-8");
    let (one, _) = run_out(
        &d,
        &["run", a, "--detach", "--dedup", "--job", r#"{"n":1}"#],
    );
    d.wait_terminal(&one);
    let (same, _) = run_out(
        &d,
        &["run", a, "--detach", "--dedup", "--job", r#"{"n":1}"#],
    );
    assert_eq!(same, one);
    let (other, _) = run_out(
        &d,
        &["run", a, "--detach", "--dedup", "--job", r#"{"n":2}"#],
    );
    assert_ne!(other, one, "another payload is another key");
    let (bad, _) = run_out(
        &d,
        &["run", a, "--detach", "--dedup", "--job", r#"{"fail":1}"#],
    );
    assert_eq!(d.wait_terminal(&bad)["status"], "failed");
    let (again, _) = run_out(
        &d,
        &["run", a, "--detach", "--dedup", "--job", r#"{"fail":1}"#],
    );
    assert_ne!(again, bad, "a failed run does not hold its key");
}
