//! `RESOURCES` through `--host`: the API refuses a run larger than the
//! machine with a 4xx and one line, and `inspect-run --host` shows each
//! attempt's limits, peak memory and CPU time as locally.

use crate::remote_common;

use remote_common::{Client, Server};
use serde_json::json;

#[test]
fn the_api_refuses_resources_larger_than_the_machine() {
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let huge = client.agent_with("huge", "true\n", "RESOURCES CPUS 4096\n");
    let stderr = client.fails(&["run", &huge, "--detach"], 125);
    assert!(
        stderr.contains("RESOURCES CPUS 4096 exceeds this machine's"),
        "{stderr}"
    );
    // The endpoint itself (the CLI uploaded the parcel before it asked):
    // a 400 with a code and the same line.
    let (status, body) = server.call(
        "POST",
        "/v1/runs",
        Some(&json!({"parcel": "huge", "payload": {}})),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "bad_request", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("exceeds this machine's")),
        "{body}"
    );
    assert_eq!(client.ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn inspect_run_through_the_api_shows_limits_and_usage_per_attempt() {
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let agent = client.agent_with("limited", "true\n", "RESOURCES MEMORY 256M DISK 64M\n");
    let id = client.ok(&["run", &agent, "--detach"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let doc = loop {
        let doc = client.inspect(&id);
        if doc["status"] == "succeeded" && !doc["attempts"][0]["resources"].is_null() {
            break doc;
        }
        assert!(std::time::Instant::now() < deadline, "{doc:#}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let r = &doc["attempts"][0]["resources"];
    let limits: Vec<&str> = r["limits"]
        .as_array()
        .expect("limits")
        .iter()
        .filter_map(|l| l["limit"].as_str())
        .collect();
    assert_eq!(limits, ["memory", "disk"], "{r}");
    assert!(!r["measured_by"].is_null(), "{r}");
    let human = client.ok(&["inspect-run", &id]);
    assert!(human.contains("limits: memory 256M ("), "{human}");
    assert!(human.contains("used: peak memory"), "{human}");
}
