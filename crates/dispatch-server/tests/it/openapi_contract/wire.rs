//! The run, event and approval answers are built as `dispatch-api` types
//! and keep the bytes they had when they were the store's records as JSON:
//! keys in name order, compact, and the fields only some answers carry
//! (`deduplicated`, `concurrency`, `waiting`) absent, never `null`, where
//! they do not apply.

use super::*;

/// `text` is compact JSON whose every object has its keys in name order.
pub(super) fn in_name_order(what: &str, text: &str) -> Value {
    let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}"));
    // serde_json's map sorts its keys: written back, it is the text only
    // when the text had them in that order.
    assert_eq!(
        serde_json::to_string(&value).expect("a value writes"),
        text,
        "{what}: keys out of name order"
    );
    value
}

fn keys(run: &Value) -> BTreeSet<&str> {
    run.as_object()
        .expect("a run is an object")
        .keys()
        .map(String::as_str)
        .collect()
}

#[test]
fn run_answers_keep_their_bytes_and_leave_out_what_does_not_apply() {
    let Some(server) = TestServer::start(Db::Sqlite, 1) else {
        return;
    };
    let parcel = server.noop_parcel();
    let stored = [
        "attempt",
        "brief_sha256",
        "created_at",
        "id",
        "labels",
        "operation",
        "origin_id",
        "output",
        "parcel_digest",
        "parcel_name",
        "parent_id",
        "payload",
        "project",
        "state",
        "status",
        "stop_requested_at",
        "trigger",
        "updated_at",
        "usage",
        "version",
    ];
    let body = json!({"parcel": parcel}).to_string();
    let (status, text) = server.raw("POST", "/v1/runs?wait=true", &[], Some(body.as_bytes()));
    assert_eq!(status, 200, "{text}");
    let created = in_name_order("createRun", &text);
    let mut with_dedup: BTreeSet<&str> = stored.into();
    with_dedup.insert("deduplicated");
    assert_eq!(keys(&created), with_dedup);
    assert_eq!(created["deduplicated"], json!(false));
    assert_eq!(created["parent_id"], Value::Null, "present as null");

    let id = created["id"].as_str().expect("an id");
    let (_, text) = server.text(&format!("/v1/runs/{id}"), &[]);
    let one = in_name_order("getRun", &text);
    assert_eq!(
        keys(&one),
        stored.into(),
        "no concurrency, waiting or deduplicated"
    );

    // A run held back: no live worker has its label, and a concurrency key.
    let body = json!({
        "parcel": parcel,
        "labels": ["no-such-gpu"],
        "concurrency_key": "customer-42",
        "concurrency_max": 2,
    })
    .to_string();
    let (status, text) = server.raw("POST", "/v1/runs", &[], Some(body.as_bytes()));
    assert_eq!(status, 201, "{text}");
    let queued = in_name_order("createRun", &text);
    let id = queued["id"].as_str().expect("an id");
    let (_, text) = server.text(&format!("/v1/runs/{id}"), &[]);
    let one = in_name_order("getRun", &text);
    assert_eq!(
        one["waiting"],
        json!("no live worker has label no-such-gpu")
    );
    assert_eq!(
        one["concurrency"],
        json!({"key": format!("{}/customer-42", one["parcel_name"].as_str().expect("a parcel name")), "max": 2, "strategy": "queue"})
    );
    let (_, text) = server.text("/v1/runs?status=queued,succeeded", &[]);
    let page = in_name_order("listRuns", &text);
    let runs = page["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["waiting"], one["waiting"]);
    assert!(runs[0].get("concurrency").is_none(), "only getRun shows it");
    assert!(
        runs[1].get("waiting").is_none(),
        "a finished run waits for nothing"
    );
    assert_eq!(page["next_cursor"], Value::Null);

    let (_, text) = server.text(
        &format!(
            "/v1/runs/{}/events?format=json",
            created["id"].as_str().expect("an id")
        ),
        &[],
    );
    let events = in_name_order("getRunEvents", &text);
    assert!(events["events"].as_array().is_some_and(|e| !e.is_empty()));

    let body = json!({"runs": [{"parcel": parcel}]}).to_string();
    let (status, text) = server.raw("POST", "/v1/runs/batch", &[], Some(body.as_bytes()));
    assert_eq!(status, 201, "{text}");
    let batch = in_name_order("createRuns", &text);
    assert_eq!(batch["runs"][0]["deduplicated"], json!(false));
}
