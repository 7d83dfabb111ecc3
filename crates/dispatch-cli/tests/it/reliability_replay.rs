//! Promise 11: replay re-runs the exact parcel, brief and payload, and only
//! when side effects are allowed.

use crate::common;

use common::Dispatch;

#[test]
fn replay_refuses_without_consent_and_reuses_digest_brief_and_payload() {
    let d = Dispatch::new();
    let agent = d.agent("echoer", "cat > \"$DISPATCH_OUTPUT\"\n");
    let id = d.detach(&agent, r#"{"to":"ada"}"#);
    let old = d.wait_terminal(&id);
    let err = d.fails(&["replay", &id], 125);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--allow-side-effects"), "{err}");
    assert_eq!(
        d.ok(&["ps", "-a", "-q"]).lines().count(),
        1,
        "nothing was created"
    );
    // Change the agent directory: a replay still runs the original parcel.
    std::fs::write(agent.join("agent.sh"), "exit 9\n").expect("edit the agent");
    let new = d.ok(&["replay", &id[..10], "--allow-side-effects"]);
    let doc = d.wait_terminal(&new);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    for key in ["parcel_digest", "brief_sha256", "payload", "output"] {
        assert_eq!(doc[key], old[key], "{key} is the original's");
    }
    assert_eq!(doc["origin_id"], id.as_str());
}
