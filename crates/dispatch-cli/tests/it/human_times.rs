//! Human output never shows raw epoch milliseconds; `--format json` keeps them.

use crate::common;

use common::Dispatch;

/// Whether `text` holds a number that looks like epoch milliseconds
/// (13 digits, from 2001 on) standing alone: the digits inside a run id or
/// a digest (hex) are not a number (a random id once held 13 in a row).
fn has_epoch_ms(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .find(|w| w.len() == 13 && w.starts_with('1') && w.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string)
}

#[test]
fn digits_inside_an_id_are_not_epoch_ms() {
    assert_eq!(has_epoch_ms("Run: 01a21ea8ec1675689504381e3ac59355"), None);
    assert_eq!(
        has_epoch_ms(r#"{"created_at":1764275916000,"id":"x"}"#).as_deref(),
        Some("1764275916000")
    );
    assert_eq!(
        has_epoch_ms("Created: 1764275916000").as_deref(),
        Some("1764275916000")
    );
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
