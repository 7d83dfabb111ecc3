//! A mistyped subcommand or flag gets a "similar ... exists" tip and exit 2.

use crate::common;

use common::Dispatch;

fn tip(d: &Dispatch, args: &[&str]) -> String {
    let e = d.fails(args, 2);
    e.lines()
        .find(|l| l.contains("tip:"))
        .unwrap_or_else(|| panic!("no tip for {args:?}: {e}"))
        .trim()
        .to_string()
}

#[test]
fn mistyped_subcommands_aliases_and_flags_get_a_suggestion() {
    let d = Dispatch::new();
    for (args, want) in [
        (&["rnu"][..], "a similar subcommand exists: 'run'"),
        (&["prnue"][..], "a similar subcommand exists: 'prune'"),
        (&["sp"][..], "a similar subcommand exists: 'ps'"),
        (&["imagse"][..], "a similar subcommand exists: 'images'"),
        (
            &["container", "lss"][..],
            "a similar subcommand exists: 'ls'",
        ),
        (
            &["dlq", "replya"][..],
            "a similar subcommand exists: 'replay'",
        ),
        (
            &["ps", "--fitler", "x"][..],
            "a similar argument exists: '--filter'",
        ),
        (
            &["prune", "--forec"][..],
            "a similar argument exists: '--force'",
        ),
    ] {
        assert_eq!(tip(&d, args), format!("tip: {want}"), "{args:?}");
    }
    // Nothing near: no tip, still one clear error.
    let e = d.fails(&["xyzzy"], 2);
    assert!(e.contains("unrecognized subcommand 'xyzzy'"), "{e}");
    assert!(!e.contains("tip:"), "{e}");
}
