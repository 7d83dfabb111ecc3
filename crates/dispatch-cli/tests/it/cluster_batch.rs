//! `POST /v1/runs/batch` and `dispatch run --batch FILE.jsonl --host`: many
//! runs in one request, all or none, idempotency keys honoured.

use crate::remote_common;

use remote_common::{Client, Server};
use serde_json::{Value, json};

fn count_runs(server: &Server) -> usize {
    let (_, body) = server.call("GET", "/v1/runs?limit=1000", None);
    body["runs"].as_array().map_or(0, Vec::len)
}

#[test]
fn a_jsonl_file_becomes_runs_in_one_request_and_again_dedups() {
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let agent = client.agent("echoer", "cat \"$DISPATCH_PAYLOAD\" > \"$DISPATCH_OUTPUT\"");
    let file = client.dir.path().join("jobs.jsonl");
    std::fs::write(&file, "{\"n\":1}\n{\"n\":2}\n\n{\"n\":3}\n").expect("jsonl");
    let file = file.to_str().expect("utf-8");
    let ids = client.ok(&["run", &agent, "--batch", file, "--dedup"]);
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    for (i, id) in ids.iter().enumerate() {
        client.ok(&["wait", id, "--timeout-ms", "60000"]);
        let doc = client.inspect(id);
        assert_eq!(doc["status"], "succeeded", "{doc:#}");
        assert_eq!(doc["output"], json!({"n": i + 1}), "in the file's order");
    }
    // The same file with --dedup: the same runs, nothing new.
    let again = client.ok(&["run", &agent, "--batch", file, "--dedup"]);
    assert_eq!(again.lines().collect::<Vec<_>>(), ids);
    assert_eq!(count_runs(&server), 3);

    // A bad line names itself; nothing is sent.
    std::fs::write(client.dir.path().join("bad.jsonl"), "{\"n\":1}\n{nope\n").expect("jsonl");
    let bad = client.dir.path().join("bad.jsonl");
    let err = client.fails(
        &["run", &agent, "--batch", bad.to_str().expect("utf-8")],
        125,
    );
    assert!(err.contains("bad.jsonl:2: not a JSON payload"), "{err}");
    assert_eq!(count_runs(&server), 3);
}

#[test]
fn a_batch_with_a_bad_item_creates_nothing_and_names_the_item() {
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let agent = client.agent("quiet", "true");
    // Uploads the parcel (one run).
    client.ok(&["run", &agent, "--detach"]);
    assert_eq!(count_runs(&server), 1);
    let good = json!({"parcel": "quiet", "payload": {"a": 1}});
    let bad = json!({"parcel": "quiet", "queue_timeout": "soon"});
    let (status, body) = server.call(
        "POST",
        "/v1/runs/batch",
        Some(&json!({"runs": [good, good, bad]})),
    );
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("runs[2]: queue_timeout"), "{body}");
    assert_eq!(count_runs(&server), 1, "all or none");

    let too_many: Vec<Value> = (0..1001).map(|_| good.clone()).collect();
    let (status, body) = server.call("POST", "/v1/runs/batch", Some(&json!({"runs": too_many})));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains("1 to 1000 runs, not 1001"),
        "{body}"
    );

    let keyed = |k: &str| json!({"parcel": "quiet", "idempotency_key": k});
    let (status, body) = server.call(
        "POST",
        "/v1/runs/batch",
        Some(&json!({"runs": [keyed("a"), keyed("b"), keyed("a")]})),
    );
    assert_eq!(status, 201, "{body}");
    let runs = body["runs"].as_array().expect("runs");
    assert_eq!(
        runs[0]["id"], runs[2]["id"],
        "a key seen earlier answers that run"
    );
    assert_eq!(runs[2]["deduplicated"], true);
    assert_ne!(runs[0]["id"], runs[1]["id"]);
    assert_eq!(count_runs(&server), 3);
}
