//! Human output never shows raw epoch milliseconds; `--format json` keeps them.

use crate::common;

use common::Dispatch;

/// Whether `text` holds a number that looks like epoch milliseconds
/// (13 digits, from 2001 on).
fn has_epoch_ms(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 13 && w.starts_with('1'))
        .map(str::to_string)
}

#[test]
fn ps_inspect_dlq_and_images_print_times_for_people() {
    let d = Dispatch::new();
    let bad = d.agent("bad", "exit 3\n");
    let id = d.detach(&bad, "{}");
    d.wait_terminal(&id);
    for args in [
        &["ps", "-a"][..],
        &["inspect-run", &id][..],
        &["dlq", "ls"][..],
        &["images"][..],
        &["approvals", "ls", "-a"][..],
    ] {
        let out = d.ok(args);
        assert!(
            has_epoch_ms(&out).is_none(),
            "{args:?} prints epoch ms:\n{out}"
        );
    }
    let human = d.ok(&["inspect-run", &id]);
    let created = human
        .lines()
        .find(|l| l.starts_with("Created:"))
        .expect("a Created line");
    assert!(
        created.contains(" UTC (") && created.ends_with("ago)"),
        "{created}"
    );
    // JSON keeps the numbers.
    let json = d.ok(&["inspect-run", &id, "--format", "json"]);
    assert!(has_epoch_ms(&json).is_some(), "{json}");
}
