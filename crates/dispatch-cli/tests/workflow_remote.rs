//! Workflow runs are local only for now: a server refuses one at once with
//! a clear error, instead of queueing a run no worker could coordinate.

mod remote_common;

use remote_common::{Client, Server};

#[test]
fn a_server_refuses_a_workflow_run_saying_it_is_local_only() {
    let server = Server::start(&[]);
    let client = Client::new(&server);
    let member = client.agent("member", "true\n");
    let flow = client.dir.path().join("flow");
    std::fs::create_dir_all(&flow).expect("mkdir");
    std::fs::write(
        flow.join("Agentfile"),
        format!("FROM workflow\nNAME flow\nAGENT m {member}\nROUTE m -> __end__\n"),
    )
    .expect("write");
    let out = client.run(&["run", flow.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("workflow runs are local only for now"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    let (_, runs) = server.call("GET", "/v1/runs", None);
    assert_eq!(
        runs["runs"].as_array().map(Vec::len),
        Some(0),
        "nothing was queued: {runs}"
    );
}
