//! On a cluster, a model call whose worker died mid-stream is billed by
//! the worker that takes the run over: every request the mock saw has its
//! record, the lost one estimated.

use crate::common;
use crate::native_common;
use crate::remote_common;

use native_common::{Mock, model_calls, text};
use remote_common::{Client, Server, Worker, postgres};
use serde_json::json;

#[test]
fn a_call_lost_with_its_worker_is_billed_by_the_next_one() {
    let Some(db) = postgres() else { return };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let mut first = Worker::one_slot(db.url(), "first");
    let client = Client::new(&server);
    let mock = Mock::start(json!([
        {"kind": "stall", "text_before": "thinking"},
        text("done", 5, 2),
    ]));
    let dir = client.dir.path().join("lossy");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("Agentfile"),
        format!(
            "FROM agent\nNAME lossy\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\n\
             PRICE gpt-4o-mini INPUT 1000 OUTPUT 1000\n",
            mock.url()
        ),
    )
    .expect("Agentfile");
    let id = client.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    common::eventually(30, "the first call is in flight", || {
        mock.requests().len() == 1
    });
    first.child.kill().expect("kill -9 the first worker");
    first.child.wait().expect("reap it");
    let _second = Worker::one_slot(db.url(), "second");
    assert_eq!(client.ok(&["wait", &id]), "0");
    let doc = client.inspect(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    let calls = model_calls(&doc);
    assert_eq!(calls.len(), mock.requests().len(), "{calls:#?}");
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let lost = &calls[0];
    assert_eq!(lost["finish_reason"], "lost", "{lost}");
    assert_eq!(lost["estimated"], true, "{lost}");
    assert!(
        lost["input_tokens"].as_u64().is_some_and(|n| n > 0),
        "{lost}"
    );
    assert!(lost["cost_usd"].as_f64().is_some_and(|c| c > 0.0), "{lost}");
    assert_eq!(calls[1]["finish_reason"], "stop");
    let billed: u64 = calls
        .iter()
        .map(|c| c["input_tokens"].as_u64().unwrap_or(0) + c["output_tokens"].as_u64().unwrap_or(0))
        .sum();
    let total = doc["usage"]["input_tokens"].as_u64().unwrap_or(0)
        + doc["usage"]["output_tokens"].as_u64().unwrap_or(0);
    assert_eq!(billed, total, "the run's usage counts the lost call");
}
