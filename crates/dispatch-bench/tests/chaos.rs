//! `dispatch-bench chaos` at a bounded size, as CI runs it: workers killed
//! alone and with their agents, frozen past their lease, partitioned, agents
//! killed and the database restarted, over process and native agents (some
//! longer than the lease). Nothing may run twice at once, outlive its run,
//! repeat or go unbilled, be lost or stuck.

use std::path::PathBuf;
use std::process::Command;

/// The `dispatch` binary `cargo test --workspace` built beside this one.
fn dispatch() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_dispatch-bench"));
    let d = bench.with_file_name("dispatch");
    assert!(
        d.is_file(),
        "{} is missing: build it first (cargo build -p dispatch-cli, or cargo test --workspace)",
        d.display()
    );
    d
}

#[test]
fn chaos_at_ci_size_finds_no_overlap_orphan_repeat_unbilled_loss_or_stuck_run() {
    chaos_at_ci_size(&[]);
}

/// The same with no sandbox (what a user who is not root gets, and anyone
/// with `DISPATCH_SANDBOX=off`): each run's tree is kept by its keeper and
/// its cgroup alone. It found runs' processes left frozen (#33).
#[test]
fn chaos_at_ci_size_with_the_sandbox_off_finds_no_overlap_orphan_repeat_unbilled_loss_or_stuck_run()
{
    chaos_at_ci_size(&[("DISPATCH_SANDBOX", "off")]);
}

/// One chaos at a time: each loads both cores of a CI machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn chaos_at_ci_size(env: &[(&str, &str)]) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Outside CI, no PostgreSQL skips (TestDatabase says how to start it).
    if rt
        .block_on(dispatch_test_support::testdb::TestDatabase::create())
        .is_none()
    {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_dispatch-bench"))
        .envs(env.iter().copied())
        .args(["chaos", "--dispatch"])
        .arg(dispatch())
        .args([
            "--runs",
            "60",
            "--rate",
            "5",
            "--workers",
            "3",
            "--slots",
            "3",
        ])
        .args(["--lease-ms", "2000", "--fault-every-ms", "1500"])
        .args(["--deadline-secs", "300", "--format", "json"])
        .output()
        .expect("dispatch-bench runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chaos failed: {stderr}");
    let got: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("chaos printed no JSON ({e}): {stderr}"));
    let n = |k: &str| got[k].as_u64().unwrap_or_else(|| panic!("no {k} in {got}"));
    assert_eq!(n("runs"), 60, "{got}");
    // The faults happened.
    for fault in ["worker_kills", "machine_kills", "freezes", "agent_kills"] {
        assert!(n(fault) > 0, "no {fault}: {got}\n{stderr}");
    }
    assert!(
        n("model_requests") > 0,
        "no native run called its model: {got}"
    );
    // And did no harm. (Re-executions of completed work are counted by
    // cause, not asserted: work a cut-off or frozen worker finished but
    // could not save runs again, by design.)
    for harm in [
        "overlaps",
        "orphans",
        "repeated_model_calls",
        "unbilled_model_calls",
        "lost",
        "stuck",
    ] {
        assert_eq!(n(harm), 0, "{harm}: {got}\n{stderr}");
    }
}
