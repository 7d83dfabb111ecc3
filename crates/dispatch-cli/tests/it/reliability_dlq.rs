//! Promise 5: a run whose attempts are exhausted is dead-lettered and can be replayed.

use crate::common;

use common::Dispatch;
use serde_json::Value;

#[test]
fn exhausted_runs_are_dead_lettered_with_input_checkpoint_and_errors_and_replay_links_back() {
    let d = Dispatch::new();
    let agent = d.agent(
        "doomed",
        "if grep -q fixed \"$DISPATCH_PAYLOAD\"; then exit 0; fi\n\
         echo '{\"type\":\"checkpoint\",\"step\":\"half\",\"state\":{\"n\":1}}' >> \"$DISPATCH_EVENTS\"\n\
         echo \"boom $DISPATCH_ATTEMPT\" >&2\nexit 4\n",
    );
    let id = d.ok(&[
        "run",
        agent.to_str().expect("utf-8"),
        "--detach",
        "--job",
        r#"{"order":42}"#,
        "--retries",
        "1",
        "--backoff",
        "10ms..10ms",
    ]);
    assert_eq!(d.wait_terminal(&id)["status"], "failed");
    let list: Value =
        serde_json::from_str(&d.ok(&["dlq", "ls", "--format", "json"])).expect("JSON");
    let letters = list.as_array().expect("a list");
    assert_eq!(letters.len(), 1, "{list:#}");
    let l = &letters[0];
    assert_eq!(l["run_id"], id.as_str());
    assert_eq!(l["input"]["order"], 42);
    assert_eq!(l["attempts"], 2);
    assert_eq!(l["checkpoint"]["step"], "half");
    let errors = l["errors"].as_array().expect("error history");
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["exit_code"], 4);
    assert_eq!(
        d.inspect(&id)["dead_letter"]["attempts"],
        2,
        "inspect-run shows it"
    );
    let table = d.ok(&["dlq", "ls"]);
    assert!(
        table.contains(&id[..12]) && table.contains("doomed"),
        "{table}"
    );

    let replay = d.ok(&["dlq", "replay", &id[..10], "--payload", r#"{"fixed":true}"#]);
    assert_ne!(replay, id);
    let doc = d.wait_terminal(&replay);
    assert_eq!(doc["status"], "succeeded");
    assert_eq!(doc["origin_id"], id.as_str(), "linked to the dead letter");
    let list: Value =
        serde_json::from_str(&d.ok(&["dlq", "ls", "--format", "json"])).expect("JSON");
    assert_eq!(list[0]["replayed_by"], replay.as_str());
    let err = d.fails(&["dlq", "replay", &replay], 125);
    assert!(err.contains("not in the dead-letter queue"), "{err}");
}
