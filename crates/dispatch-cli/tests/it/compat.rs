//! Backward compatibility: a database written by the first release (schema
//! version 1, checked in under tests/fixtures/) is read by this binary, and
//! new runs can be added to it. Later migrations must keep this passing.

use crate::common;

use common::Dispatch;

const OK_RUN: &str = "01a1fe85cdf9724e859b1397aa517cc9";
const BAD_RUN: &str = "01a1fe85ce0475c5ad2be499625f589e";

fn with_v1_database() -> Dispatch {
    let d = Dispatch::new();
    std::fs::create_dir_all(d.root()).expect("mkdir root");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1-dispatch.db"),
        d.root().join("dispatch.db"),
    )
    .expect("copy fixture");
    d
}

#[test]
fn a_version_1_database_is_read_and_extended() {
    let d = with_v1_database();
    let ps: serde_json::Value =
        serde_json::from_str(&d.ok(&["ps", "-a", "--format", "json"])).expect("json");
    let ids: Vec<&str> = ps
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, [BAD_RUN, OK_RUN], "newest first");

    let ok = d.inspect(&OK_RUN[..12]);
    assert_eq!(ok["status"], "succeeded");
    assert_eq!(ok["payload"]["n"], 1);
    assert_eq!(ok["output"]["answer"], 42);
    assert_eq!(ok["usage"]["input_tokens"], 5);
    assert_eq!(ok["usage"]["output_tokens"], 6);
    assert_eq!(ok["artifacts"][0]["name"], "a.txt");
    assert_eq!(ok["attempts"][0]["exit_code"], 0);
    let bad = d.inspect(BAD_RUN);
    assert_eq!(bad["status"], "failed");
    assert_eq!(bad["exit_code"], 3);

    let agent = d.agent("after-upgrade", "exit 0\n");
    let id = d.detach(&agent, "{}");
    assert_eq!(d.ok(&["wait", &id]), "0");
    assert_eq!(d.ok(&["ps", "-a", "-q"]).lines().count(), 3);
}
