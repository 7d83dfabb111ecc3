//! Workflow runs in a cluster: the worker that claims the workflow run
//! coordinates it; it runs the member runs it has a free slot for itself
//! (created claimed by it) and the others go through the queue, so any
//! worker claims them.

use crate::remote_common;

use std::path::PathBuf;

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
    // The CLI over the API shows what it shows locally: the graph, and
    // usage by agent with the messages.
    let mermaid = client.ok(&["inspect-run", &id, "--graph", "mermaid"]);
    assert!(mermaid.starts_with("flowchart LR"), "{mermaid}");
    assert!(mermaid.contains("m19"), "{mermaid}");
    let human = client.ok(&["inspect-run", &id]);
    assert!(human.contains("Workflow:\n  usage by agent:"), "{human}");
    assert!(human.contains("__coordinator__ → __end__"), "{human}");
    let doc = client.inspect(&id);
    assert_eq!(
        doc["workflow"]["messages"].as_array().map(Vec::len),
        Some(21)
    );
    let kid = kids[0]["id"].as_str().expect("id");
    let refused = client.fails(&["inspect-run", kid, "--graph", "dot"], 125);
    assert!(refused.contains("is not a workflow run"), "{refused}");
}

/// A member that appends its name to `$RAN` once it starts; `second` then
/// waits for `$GATE`; `third` ends the workflow.
fn gated_member(dir: &std::path::Path, name: &str, extra: &str) {
    let wait = if name == "second" {
        "while [ ! -e \"$GATE\" ]; do sleep 0.05; done\n"
    } else {
        ""
    };
    let out = if name == "third" {
        "echo '{\"type\":\"output\",\"value\":\"done\"}' >> \"$DISPATCH_EVENTS\"\n"
    } else {
        ""
    };
    let d = dir.join(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    std::fs::write(
        d.join("agent.sh"),
        format!("cat > /dev/null\necho {name} >> \"$RAN\"\n{wait}{out}"),
    )
    .expect("write");
    std::fs::write(
        d.join("Agentfile"),
        format!("FROM process\nNAME {name}\nCOPY agent.sh\nCOMMAND sh agent.sh\n{extra}"),
    )
    .expect("write");
}

/// A chain workflow `name` of three gated members (see [`gated_member`])
/// in the client's directory: its directory, the file the members append
/// to as they run, and the gate file.
fn gated_chain(client: &Client, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let flow = client.dir.path().join("chain");
    let ran = client.dir.path().join("ran.txt");
    let gate = client.dir.path().join("gate");
    let extra = format!("ENV RAN={}\nENV GATE={}\n", ran.display(), gate.display());
    for member in ["first", "second", "third"] {
        gated_member(&flow, member, &extra);
    }
    std::fs::write(
        flow.join("Agentfile"),
        format!("FROM workflow\nNAME {name}\nAGENT first ./first\nAGENT second ./second\nAGENT third ./third\nCOORDINATOR chain\n"),
    )
    .expect("write");
    (flow, ran, gate)
}

#[test]
fn a_killed_coordinating_worker_is_replaced_without_a_message_or_member_twice() {
    let Some(db) = remote_common::postgres() else {
        return;
    };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);
    let (flow, ran, gate) = gated_chain(&client, "killchain");
    // The coordinator's worker has one slot: the workflow run holds it, so
    // every member goes to the other worker.
    let mut coordinator = Worker::start(
        db.url(),
        "wf-coordinator",
        &["--slots", "1", "--lease-ms", "1000"],
    );
    let id = client.ok(&["run", "-d", flow.to_str().expect("utf-8")]);
    server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "running");
    let _members = Worker::start(
        db.url(),
        "wf-members",
        &["--slots", "4", "--lease-ms", "1000"],
    );
    let members = |server: &Server| -> Vec<Value> {
        let (_, kids) = server.call("GET", &format!("/v1/runs?parent={id}&limit=100"), None);
        kids["runs"].as_array().cloned().unwrap_or_default()
    };
    server.wait_for(&format!("/v1/runs?parent={id}&limit=100"), |kids| {
        kids["runs"].as_array().is_some_and(|k| {
            k.iter()
                .any(|k| k["parcel_name"] == "second" && k["status"] == "running")
        })
    });
    // kill -9 of the worker holding the workflow run, mid-flow.
    coordinator.child.kill().expect("kill -9");
    coordinator.child.wait().expect("reaped");
    std::fs::write(&gate, "").expect("open the gate");
    // Its lease runs out; the other worker claims the workflow run and
    // resumes it from the store.
    let done = server.wait_for(&format!("/v1/runs/{id}"), |r| {
        matches!(
            r["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
    });
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], "done");
    assert_eq!(
        std::fs::read_to_string(&ran).expect("ran"),
        "first\nsecond\nthird\n",
        "each member ran once"
    );
    let kids = members(&server);
    assert_eq!(kids.len(), 3, "{kids:?}");
    assert!(
        kids.iter().all(|k| k["attempt"] == 1),
        "no member ran twice: {kids:?}"
    );
    let (_, graph) = server.call("GET", &format!("/v1/runs/{id}/graph"), None);
    let msgs = graph["messages"].as_array().expect("messages");
    let ids: std::collections::HashSet<&str> =
        msgs.iter().map(|m| m["id"].as_str().expect("id")).collect();
    assert_eq!(
        (msgs.len(), ids.len()),
        (4, 4),
        "each message once: {msgs:?}"
    );
    let delivered: std::collections::HashSet<&str> = msgs
        .iter()
        .filter_map(|m| m["child_run"].as_str())
        .collect();
    assert_eq!(delivered.len(), 3, "one member run per message: {msgs:?}");
    let (_, attempts) = server.call("GET", &format!("/v1/runs/{id}/attempts"), None);
    let holders: Vec<&str> = attempts["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter_map(|a| a["worker"].as_str())
        .collect();
    assert_eq!(
        holders,
        ["wf-coordinator", "wf-members"],
        "the second worker resumed the coordinator: {attempts}"
    );
}

/// The worker that held run `kid`'s attempts, in order.
fn holders(server: &Server, kid: &str) -> Vec<String> {
    let (_, attempts) = server.call("GET", &format!("/v1/runs/{kid}/attempts"), None);
    attempts["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .filter_map(|a| a["worker"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_chains_members_run_on_the_coordinating_worker_and_outlive_its_kill() {
    let Some(db) = remote_common::postgres() else {
        return;
    };
    let server = Server::start_on(Some(db.url()), &["--workers", "0"]);
    let client = Client::new(&server);
    let (flow, ran, gate) = gated_chain(&client, "herechain");
    let mut coordinator =
        Worker::start(db.url(), "wf-here", &["--slots", "4", "--lease-ms", "1000"]);
    let id = client.ok(&["run", "-d", flow.to_str().expect("utf-8")]);
    server.wait_for(&format!("/v1/runs/{id}"), |r| r["status"] == "running");
    // Another worker waits on the queue: a member sent there could go to
    // either; one created claimed by the coordinating worker cannot.
    let _other = Worker::start(
        db.url(),
        "wf-other",
        &["--slots", "4", "--lease-ms", "1000"],
    );
    let kids = server.wait_for(&format!("/v1/runs?parent={id}&limit=100"), |kids| {
        kids["runs"].as_array().is_some_and(|k| {
            k.iter()
                .any(|k| k["parcel_name"] == "second" && k["status"] == "running")
        })
    });
    let kid = |kids: &Value, name: &str| -> String {
        kids["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .find(|k| k["parcel_name"] == name)
            .and_then(|k| k["id"].as_str())
            .unwrap_or_else(|| panic!("no run of `{name}`: {kids}"))
            .to_string()
    };
    let (first, second) = (kid(&kids, "first"), kid(&kids, "second"));
    assert_eq!(holders(&server, &first), ["wf-here"], "first ran here");
    assert_eq!(holders(&server, &second), ["wf-here"], "second runs here");

    // kill -9 of the coordinating worker while a member runs on it.
    coordinator.child.kill().expect("kill -9");
    coordinator.child.wait().expect("reaped");
    std::fs::write(&gate, "").expect("open the gate");
    // Both leases run out; the other worker takes the workflow run and the
    // member, and the coordinator resumes from the store.
    let done = server.wait_for(&format!("/v1/runs/{id}"), |r| {
        matches!(
            r["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
    });
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], "done");
    let (_, kids) = server.call("GET", &format!("/v1/runs?parent={id}&limit=100"), None);
    let runs = kids["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 3, "one member run per message: {kids}");
    let third = kid(&kids, "third");
    assert_eq!(
        holders(&server, &second),
        ["wf-here", "wf-other"],
        "the member's lease ran out and the other worker took it"
    );
    assert_eq!(holders(&server, &third), ["wf-other"]);
    for k in [&first, &third] {
        let run = runs.iter().find(|r| r["id"] == k.as_str()).expect("run");
        assert_eq!(run["attempt"], 1, "ran once: {run}");
    }
    let lines = std::fs::read_to_string(&ran).expect("ran");
    let count = |name: &str| lines.lines().filter(|l| *l == name).count();
    assert_eq!(
        (count("first"), count("third")),
        (1, 1),
        "the members not on the killed worker ran once: {lines}"
    );
    let (_, graph) = server.call("GET", &format!("/v1/runs/{id}/graph"), None);
    let msgs = graph["messages"].as_array().expect("messages");
    let ids: std::collections::HashSet<&str> =
        msgs.iter().map(|m| m["id"].as_str().expect("id")).collect();
    assert_eq!(
        (msgs.len(), ids.len()),
        (4, 4),
        "each message once: {msgs:?}"
    );
    let delivered: std::collections::HashSet<&str> = msgs
        .iter()
        .filter_map(|m| m["child_run"].as_str())
        .collect();
    assert_eq!(delivered.len(), 3, "one member run per message: {msgs:?}");
    assert_eq!(
        holders(&server, &id),
        ["wf-here", "wf-other"],
        "the other worker resumed the coordinator"
    );
}
