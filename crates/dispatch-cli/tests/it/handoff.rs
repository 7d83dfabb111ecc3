//! Handoffs: any run starts another built parcel as a new run with a
//! `handoff` event; the new run records `trigger: upstream` and its origin;
//! each handoff starts one run, even after its sender's helper is killed
//! and the run recovered; an unknown parcel fails the sender clearly; and
//! malformed `message` / `handoff` events are warnings.

use crate::common;
use crate::remote_common;

use common::{Dispatch, alive, eventually};
use remote_common::{Client, Server, Worker, postgres};
use serde_json::Value;

/// `billing` echoes its payload as its output.
fn billing(d: &Dispatch) {
    let dir = d.agent(
        "billing",
        "cat \"$DISPATCH_PAYLOAD\" > \"$DISPATCH_OUTPUT\"\n",
    );
    d.ok(&["build", dir.to_str().expect("utf-8")]);
}

fn ps_json(d: &Dispatch, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["ps", "-a", "--format", "json"];
    all.extend_from_slice(args);
    let out = d.ok(&all);
    match serde_json::from_str(&out).expect("ps prints JSON") {
        Value::Array(runs) => runs,
        other => panic!("not a list: {other}"),
    }
}

fn upstream_runs(d: &Dispatch) -> Vec<Value> {
    ps_json(d, &["--filter", "trigger=upstream"])
}

fn events_of(doc: &Value, kind: &str) -> Vec<Value> {
    doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["type"] == kind)
        .cloned()
        .collect()
}

const HANDOFF: &str = "echo '{\"type\":\"handoff\",\"parcel\":\"billing\",\"payload\":{\"invoice\":42}}' >> \"$DISPATCH_EVENTS\"\n";

#[test]
fn a_handoff_starts_the_parcel_as_an_upstream_run_linked_to_its_sender() {
    let d = Dispatch::new();
    billing(&d);
    let sender = d.agent("sender", HANDOFF);
    let id = d.detach(&sender, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["trigger"], "manual");

    let handoffs = events_of(&doc, "handoff");
    assert_eq!(handoffs.len(), 1, "{doc:#}");
    let new_id = handoffs[0]["data"]["run_id"]
        .as_str()
        .expect("the handoff names the run it started")
        .to_string();
    assert_eq!(handoffs[0]["data"]["parcel"], "billing");
    assert_eq!(handoffs[0]["data"]["deduplicated"], false);

    let up = upstream_runs(&d);
    assert_eq!(up.len(), 1, "{up:#?}");
    assert_eq!(up[0]["id"], new_id.as_str());
    assert_eq!(up[0]["parcel_name"], "billing");
    assert_eq!(up[0]["trigger"], "upstream");
    assert_eq!(up[0]["origin_id"], id.as_str());

    let new = d.wait_terminal(&new_id);
    assert_eq!(new["status"], "succeeded", "{new:#}");
    assert_eq!(new["output"], serde_json::json!({"invoice": 42}));
    let human = d.ok(&["inspect-run", &new_id]);
    assert!(human.contains("Trigger:    upstream"), "{human}");
    assert!(human.contains(&format!("Origin:     {id}")), "{human}");
    let sender_text = d.ok(&["inspect-run", &id]);
    assert!(
        sender_text.contains(&format!("Handoffs:   {new_id} (billing)")),
        "{sender_text}"
    );
    // The sender itself is no upstream run; the manual filter lists it.
    let manual = ps_json(&d, &["--filter", "trigger=manual"]);
    assert!(manual.iter().any(|r| r["id"] == id.as_str()));
    assert!(manual.iter().all(|r| r["trigger"] == "manual"));
}

#[test]
fn a_handoff_starts_one_run_even_when_the_senders_helper_is_killed_and_it_recovers() {
    let d = Dispatch::new();
    billing(&d);
    // The first execution hands off, then hangs until its helper is killed;
    // the recovered one hands off the same again, and ends.
    let script = format!(
        "{HANDOFF}if [ ! -f \"$DISPATCH_STATE_DIR/again\" ]; then\n  touch \"$DISPATCH_STATE_DIR/again\"\n  sleep 300\nfi\n"
    );
    let sender = d.agent_with("sender", &script, "RETRY 3\n");
    let id = d.detach(&sender, "{}");
    eventually(20, "the handoff started its run", || {
        upstream_runs(&d).len() == 1
    });
    let helper = d.inspect(&id)["state"]["helper"]["pid"]
        .as_u64()
        .expect("a helper") as u32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the helper");
    eventually(5, "helper gone", || !alive(helper));
    // A reader finds the helper dead and recovers the run.
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let handoffs = events_of(&doc, "handoff");
    assert_eq!(handoffs.len(), 2, "said twice: {doc:#}");
    assert_eq!(handoffs[0]["data"]["run_id"], handoffs[1]["data"]["run_id"]);
    assert_eq!(handoffs[1]["data"]["deduplicated"], true);
    let up = upstream_runs(&d);
    assert_eq!(up.len(), 1, "started once: {up:#?}");
    let new_id = up[0]["id"].as_str().expect("id").to_string();
    assert_eq!(d.wait_terminal(&new_id)["status"], "succeeded");
    assert_eq!(upstream_runs(&d).len(), 1);
}

#[test]
fn a_handoff_to_an_unknown_parcel_fails_the_sender_for_good_with_a_clear_reason() {
    let d = Dispatch::new();
    let script = "echo '{\"type\":\"handoff\",\"parcel\":\"nosuch\",\"payload\":{}}' >> \"$DISPATCH_EVENTS\"\nsleep 30\n";
    let sender = d.agent_with("sender", script, "RETRY 3\n");
    let id = d.detach(&sender, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed", "{doc:#}");
    let reason = doc["state"]["reason"].as_str().expect("a reason");
    assert!(
        reason.contains("handoff to unknown parcel `nosuch`") && reason.contains("dispatch build"),
        "{reason}"
    );
    assert_eq!(doc["attempt"], 1, "not retried: {doc:#}");
    let warnings = events_of(&doc, "warning");
    assert!(
        warnings.iter().any(|w| w["data"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`handoff` event started nothing"))),
        "{warnings:#?}"
    );
    let errors = events_of(&doc, "error");
    assert_eq!(errors.len(), 1, "{doc:#}");
    assert_eq!(errors[0]["data"]["retryable"], false);
    assert!(events_of(&doc, "handoff").is_empty());
    assert!(upstream_runs(&d).is_empty());
}

#[test]
fn malformed_message_and_handoff_events_are_warnings_and_good_messages_are_kept() {
    let d = Dispatch::new();
    let script = "\
echo '{\"type\":\"message\",\"kind\":\"RESULT\",\"payload\":{}}' >> \"$DISPATCH_EVENTS\"
echo '{\"type\":\"message\",\"to\":\"writer\",\"kind\":\"SHOUT\"}' >> \"$DISPATCH_EVENTS\"
echo '{\"type\":\"handoff\",\"payload\":{}}' >> \"$DISPATCH_EVENTS\"
echo '{\"type\":\"handoff\",\"parcel\":\"./billing\"}' >> \"$DISPATCH_EVENTS\"
echo '{\"type\":\"message\",\"to\":\"writer\",\"payload\":{\"draft\":1}}' >> \"$DISPATCH_EVENTS\"
echo '{\"type\":\"message\",\"to\":\"analyst\",\"kind\":\"validation\"}' >> \"$DISPATCH_EVENTS\"
";
    let sender = d.agent("talker", script);
    let id = d.detach(&sender, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let warnings = events_of(&doc, "warning");
    assert_eq!(warnings.len(), 4, "{warnings:#?}");
    let text: Vec<&str> = warnings
        .iter()
        .filter_map(|w| w["data"]["message"].as_str())
        .collect();
    assert!(text[0].contains("non-empty string `to`"), "{text:?}");
    assert!(text[1].contains("`kind`"), "{text:?}");
    assert!(text[2].contains("`parcel`"), "{text:?}");
    assert!(text[3].contains("a path"), "{text:?}");
    let messages = events_of(&doc, "message");
    assert_eq!(messages.len(), 2, "{doc:#}");
    assert_eq!(messages[0]["data"]["to"], "writer");
    assert_eq!(messages[0]["data"]["kind"], "RESULT", "the default kind");
    assert_eq!(
        messages[0]["data"]["payload"],
        serde_json::json!({"draft": 1})
    );
    assert_eq!(messages[1]["data"]["kind"], "VALIDATION");
    assert_eq!(messages[1]["data"]["payload"], serde_json::json!({}));
}

#[test]
fn ps_refuses_an_unknown_trigger_naming_the_known_ones() {
    let d = Dispatch::new();
    let err = d.fails(&["ps", "--filter", "trigger=cron"], 125);
    assert!(
        err.contains("--filter trigger=cron") && err.contains("upstream"),
        "{err}"
    );
}

/// On a cluster: the handoff of a run on a worker queues the new run for any
/// worker (the parcel found in the cluster's database); an unknown parcel
/// fails the sender there too.
#[test]
fn on_a_cluster_a_handoff_queues_an_upstream_run_that_a_worker_claims() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let _w1 = Worker::start(db.url(), "w1", &["--slots", "1"]);
    let _w2 = Worker::start(db.url(), "w2", &["--slots", "1"]);
    let client = Client::new(&server);
    let billing = client.agent(
        "billing",
        "cat \"$DISPATCH_PAYLOAD\" > \"$DISPATCH_OUTPUT\"\n",
    );
    // Uploaded (and kept in the cluster's database) by creating a run of it.
    client.ok(&["create", &billing]);
    let sender = client.agent("sender", HANDOFF);
    let id = client.ok(&["run", &sender, "--detach"]);
    assert_eq!(client.ok(&["wait", &id]), "0");

    let list = |args: &[&str]| -> Vec<Value> {
        let mut all = vec!["ps", "-a", "--format", "json"];
        all.extend_from_slice(args);
        serde_json::from_str(&client.ok(&all)).expect("ps prints JSON")
    };
    let up = list(&["--filter", "trigger=upstream"]);
    assert_eq!(up.len(), 1, "{up:#?}");
    assert_eq!(up[0]["origin_id"], id.as_str());
    assert_eq!(up[0]["parcel_name"], "billing");
    let new_id = up[0]["id"].as_str().expect("id").to_string();
    assert_eq!(client.ok(&["wait", &new_id]), "0");
    let new = client.inspect(&new_id);
    assert_eq!(new["trigger"], "upstream", "{new:#}");
    assert_eq!(new["output"], serde_json::json!({"invoice": 42}));
    let worker = new["attempts"][0]["worker"].as_str().unwrap_or_default();
    assert!(
        worker == "w1" || worker == "w2",
        "claimed by a worker: {new:#}"
    );
    let (status, page) = server.call("GET", "/v1/runs?trigger=upstream", None);
    assert_eq!(status, 200);
    assert_eq!(page["runs"][0]["id"], new_id.as_str(), "{page}");
    let human = client.ok(&["inspect-run", &new_id]);
    assert!(human.contains(&format!("Origin:     {id}")), "{human}");

    let lost = client.agent(
        "lost",
        "echo '{\"type\":\"handoff\",\"parcel\":\"nosuch\"}' >> \"$DISPATCH_EVENTS\"\nsleep 30\n",
    );
    let lost_id = client.ok(&["run", &lost, "--detach"]);
    let waited = client.run(&["wait", &lost_id]);
    assert!(!waited.status.success(), "{waited:?}");
    let doc = client.inspect(&lost_id);
    let reason = doc["state"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("unknown parcel `nosuch`") && reason.contains("cluster's database"),
        "{doc:#}"
    );
    assert_eq!(list(&["--filter", "trigger=upstream"]).len(), 1);
}

#[test]
fn every_run_says_what_started_it_and_ps_filters_by_it() {
    let d = Dispatch::new();
    let dir = d.agent("plain", "echo hi\n");
    let id = d.detach(&dir, "{}");
    d.wait_terminal(&id);
    let restarted = d.ok(&["restart", &id]);
    d.wait_terminal(&restarted);
    let replayed = d.ok(&["replay", &id, "--allow-side-effects"]);
    d.wait_terminal(&replayed);
    for (run, trigger) in [
        (&id, "manual"),
        (&restarted, "restart"),
        (&replayed, "replay"),
    ] {
        assert_eq!(d.inspect(run)["trigger"], trigger, "{run}");
        let listed = ps_json(&d, &["--filter", &format!("trigger={trigger}")]);
        let ids: Vec<&str> = listed.iter().filter_map(|r| r["id"].as_str()).collect();
        assert_eq!(ids, vec![run.as_str()], "trigger={trigger}");
    }
    assert_eq!(d.inspect(&replayed)["origin_id"], id.as_str());
}

#[test]
fn a_parcel_that_hands_off_to_itself_stops_at_the_chain_limit() {
    let d = Dispatch::new();
    // Each run hands off to its own parcel with a payload one deeper.
    let script = "n=$(sed 's/[^0-9]//g' \"$DISPATCH_PAYLOAD\")\n\
        echo \"{\\\"type\\\":\\\"handoff\\\",\\\"parcel\\\":\\\"looper\\\",\\\"payload\\\":{\\\"n\\\":$((n+1))}}\" >> \"$DISPATCH_EVENTS\"\n";
    let dir = d.agent("looper", script);
    d.ok(&["build", dir.to_str().expect("utf-8")]);
    let first = d.ok(&["run", "looper", "--detach", "--job", "{\"n\":0}"]);
    eventually(120, "the chain ends with a refused handoff", || {
        ps_json(&d, &["--filter", "status=failed"]).len() == 1
    });
    let failed = &ps_json(&d, &["--filter", "status=failed"])[0];
    let doc = d.inspect(failed["id"].as_str().expect("id"));
    let reason = doc["state"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("chain of 32 handoffs"), "{doc:#}");
    assert_eq!(upstream_runs(&d).len(), 32);
    assert_eq!(d.inspect(&first)["status"], "succeeded");
}
