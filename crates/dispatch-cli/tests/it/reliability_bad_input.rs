//! Bad reliability flags are refused with one line and exit 125, before any run exists.

use crate::common;

use common::Dispatch;
use common::checks::BAD_RELIABILITY_FLAGS;

#[test]
fn bad_reliability_flags_are_one_line_errors_and_create_nothing() {
    let d = Dispatch::new();
    let agent = d.agent("fine", "exit 0\n");
    let a = agent.to_str().expect("utf-8");
    for &(flags, needle) in BAD_RELIABILITY_FLAGS.iter().chain(&[
        (
            &["--queue-timeout", "30s"][..],
            "--queue-timeout needs a server",
        ),
        (&["--label", "gpu"][..], "--label needs a server"),
        (&["--priority", "5"][..], "--priority needs a server"),
    ]) {
        let err = d.fails(&[&["run", a, "--detach"][..], flags].concat(), 125);
        assert_eq!(err.lines().count(), 1, "{flags:?}: {err}");
        assert!(err.contains(needle), "{flags:?}: {err}");
    }
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "", "no run was created");
    let id = d.detach(&agent, "{}");
    d.wait_terminal(&id);
    let err = d.fails(&["approve", &id, "nothing"], 125);
    assert!(err.contains("already succeeded"), "{err}");
    let err = d.fails(&["logs", &id, "--attempt", "2"], 125);
    assert!(err.contains("has no attempt 2"), "{err}");
}
