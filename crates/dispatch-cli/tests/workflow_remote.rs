//! Workflow runs in a cluster: the worker that claims the workflow run
//! coordinates it; its members' runs go through the queue, so any worker
//! claims them.

mod remote_common;

use remote_common::{Client, Server, Worker};
use serde_json::Value;

#[test]
fn a_fan_out_of_twenty_spreads_across_two_workers_on_postgres() {
    let Some(db) = remote_common::postgres() else {
        return;
    };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let _one = Worker::start(db.url(), "wf-one", &["--slots", "4"]);
    let _two = Worker::start(db.url(), "wf-two", &["--slots", "4"]);
    let client = Client::new(&server);
    let flow = client.dir.path().join("fan");
    std::fs::create_dir_all(flow.join("m")).expect("mkdir");
    std::fs::write(
        flow.join("m/Agentfile"),
        "FROM process\nNAME sleepy\nCOMMAND sh -c 'cat > /dev/null; sleep 0.3; echo ok'\n",
    )
    .expect("write");
    let mut af =
        String::from("FROM workflow\nNAME fan20\nCOORDINATOR fan_out\nAGGREGATE merge_all\n");
    for i in 0..20 {
        af.push_str(&format!("AGENT m{i} ./m\n"));
    }
    std::fs::write(flow.join("Agentfile"), af).expect("write");
    let id = client.ok(&["run", "-d", flow.to_str().expect("utf-8")]);
    let done = server.wait_for(&format!("/v1/runs/{id}"), |r| {
        matches!(
            r["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
    });
    assert_eq!(done["status"], "succeeded", "{done}");
    let (_, kids) = server.call("GET", &format!("/v1/runs?parent={id}&limit=100"), None);
    let kids: Vec<Value> = kids["runs"].as_array().expect("runs").clone();
    assert_eq!(kids.len(), 20, "{kids:?}");
    let mut workers = std::collections::BTreeSet::new();
    for k in &kids {
        assert_eq!(k["status"], "succeeded", "{k}");
        let kid = k["id"].as_str().expect("id");
        let (_, attempts) = server.call("GET", &format!("/v1/runs/{kid}/attempts"), None);
        if let Some(w) = attempts["attempts"][0]["worker"].as_str() {
            workers.insert(w.to_string());
        }
    }
    assert_eq!(workers.len(), 2, "both workers took members: {workers:?}");
    let (_, graph) = server.call("GET", &format!("/v1/runs/{id}/graph"), None);
    assert_eq!(
        graph["messages"].as_array().map(Vec::len),
        Some(21),
        "20 tasks and the aggregate"
    );
    assert_eq!(
        done["output"].as_object().map(|o| o.len()),
        Some(20),
        "{}",
        done["output"]
    );
}
