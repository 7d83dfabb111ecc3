//! The parts of a run — its attempts, artifacts, bills of materials,
//! workflow graph and dead letter — are answered as `dispatch-api` types
//! and keep the bytes they had when they were records serialized as JSON:
//! keys in name order, compact, and nothing a type does not name.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::in_name_order;
use super::*;

/// `text` has its keys in name order and is exactly the `T` it reads as,
/// written back: no field the type does not name, none it names missing,
/// `null` where the type writes `null`.
fn exactly<T: DeserializeOwned + Serialize>(what: &str, text: &str) -> T {
    in_name_order(what, text);
    let typed: T = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{what}: not its dispatch-api type: {e}\n{text}"));
    assert_eq!(
        serde_json::to_string(&typed).expect("a typed answer writes"),
        text,
        "{what}: the answer holds what its type does not say"
    );
    typed
}

/// `GET path`, 200, exactly a `T`.
fn get_exactly<T: DeserializeOwned + Serialize>(server: &TestServer, what: &str, path: &str) -> T {
    let (status, text) = server.text(path, &[]);
    assert_eq!(status, 200, "{what} {path}: {text}");
    exactly(what, &text)
}

#[test]
fn attempts_artifacts_and_dead_letters_are_their_types_byte_for_byte() {
    let Some(server) = TestServer::start(Db::Sqlite, 2) else {
        return;
    };
    // A run that leaves an artifact.
    let maker = server.upload(&[
        (
            "Agentfile",
            "NAME maker\nCOPY agent.sh\nCOMMAND sh agent.sh\n",
        ),
        (
            "agent.sh",
            "mkdir -p \"$DISPATCH_ARTIFACTS/sub\"\necho made > \"$DISPATCH_ARTIFACTS/sub/made.txt\"\n",
        ),
    ]);
    let (status, made) = server.post("/v1/runs?wait=true", &json!({"parcel": maker}));
    assert_eq!(
        (status, &made["status"]),
        (200, &json!("succeeded")),
        "{made}"
    );
    let made = made["id"].as_str().expect("an id");
    let listed: dispatch_api::ArtifactList = get_exactly(
        &server,
        "listArtifacts",
        &format!("/v1/runs/{made}/artifacts"),
    );
    assert_eq!(listed.artifacts.len(), 1);
    assert_eq!(listed.artifacts[0].name, "sub/made.txt");
    assert_eq!(listed.artifacts[0].size, 5);
    let attempts: dispatch_api::AttemptList = get_exactly(
        &server,
        "listAttempts",
        &format!("/v1/runs/{made}/attempts"),
    );
    let [one] = attempts.attempts.as_slice() else {
        panic!("one attempt: {attempts:?}");
    };
    assert_eq!((one.number, one.exit_code), (1, Some(0)));
    assert_eq!(one.status, Some(Status::Succeeded));
    assert!(one.ended_at.is_some() && one.worker.is_some(), "{one:?}");

    // A run that fails twice and is dead-lettered.
    let doomed = server.upload(&[
        (
            "Agentfile",
            "NAME doomed\nCOPY agent.sh\nCOMMAND sh agent.sh\n",
        ),
        ("agent.sh", "echo no >&2\nexit 3\n"),
    ]);
    let body = json!({"parcel": doomed, "payload": {"x": 1},
        "policy": {"retries": 1, "backoff": "10ms..10ms"}});
    let (status, failed) = server.post("/v1/runs?wait=true&timeout=60", &body);
    assert_eq!(
        (status, &failed["status"]),
        (200, &json!("failed")),
        "{failed}"
    );
    let failed = failed["id"].as_str().expect("an id").to_string();
    let attempts: dispatch_api::AttemptList = get_exactly(
        &server,
        "listAttempts",
        &format!("/v1/runs/{failed}/attempts"),
    );
    assert_eq!(attempts.attempts.len(), 2, "{attempts:?}");
    assert!(
        attempts
            .attempts
            .iter()
            .all(|a| a.exit_code == Some(3) && a.status == Some(Status::Failed)),
        "{attempts:?}"
    );
    let empty: dispatch_api::ArtifactList = get_exactly(
        &server,
        "listArtifacts",
        &format!("/v1/runs/{failed}/artifacts"),
    );
    assert!(empty.artifacts.is_empty());

    server.wait_for("/v1/dead-letters", |b| {
        b["dead_letters"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l["run_id"] == failed.as_str()))
    });
    let letters: dispatch_api::DeadLetterList =
        get_exactly(&server, "listDeadLetters", "/v1/dead-letters");
    let [letter] = letters.dead_letters.as_slice() else {
        panic!("one dead letter: {letters:?}");
    };
    assert_eq!(letter.run_id, failed);
    assert_eq!((letter.attempts, letter.status), (2, Status::Failed));
    assert_eq!(letter.input, json!({"x": 1}));
    assert_eq!(
        (letter.checkpoint.as_ref(), letter.replayed_by.as_ref()),
        (None, None)
    );
    assert_eq!(letter.project, "default");

    // Replayed: the dead letter names the new run.
    let path = format!("/v1/dead-letters/{failed}/replay");
    let (status, text) = server.raw("POST", &path, &[], Some(b"{}"));
    assert_eq!(status, 201, "{text}");
    let again: dispatch_api::Run =
        serde_json::from_value(in_name_order("replayDeadLetter", &text)).expect("a run");
    assert_eq!(again.origin_id.as_deref(), Some(failed.as_str()));
    let letters: dispatch_api::DeadLetterList = get_exactly(
        &server,
        "listDeadLetters",
        "/v1/dead-letters?project=default",
    );
    let replayed = letters
        .dead_letters
        .iter()
        .find(|l| l.run_id == failed)
        .expect("the dead letter stays");
    assert_eq!(replayed.replayed_by.as_deref(), Some(again.id.as_str()));
}

#[test]
fn a_workflow_graph_and_an_empty_one_are_their_type_byte_for_byte() {
    let Some(server) = TestServer::start(Db::Sqlite, 4) else {
        return;
    };
    let flow = server.upload(&[
        (
            "Agentfile",
            "FROM workflow\nNAME relay\nAGENT first ./m\nAGENT second ./m\nCOORDINATOR chain\n",
        ),
        (
            "m/Agentfile",
            "NAME member\nCOMMAND sh -c 'cat > /dev/null; echo ok'\n",
        ),
    ]);
    let (status, run) = server.post("/v1/runs?wait=true&timeout=60", &json!({"parcel": flow}));
    assert_eq!(
        (status, &run["status"]),
        (200, &json!("succeeded")),
        "{run}"
    );
    let id = run["id"].as_str().expect("an id");
    let graph: dispatch_api::Graph =
        get_exactly(&server, "getRunGraph", &format!("/v1/runs/{id}/graph"));
    assert_eq!(
        (graph.workflow.as_str(), graph.name.as_str()),
        (id, "relay")
    );
    let names: Vec<&str> = graph.nodes.iter().map(|n| n.id.as_str()).collect();
    assert!(
        names.contains(&"first") && names.contains(&"second"),
        "{names:?}"
    );
    let first = graph.nodes.iter().find(|n| n.id == "first").expect("first");
    assert_eq!((first.turns, first.runs.len()), (1, 1), "{first:?}");
    assert_eq!(first.runs[0].status, Status::Succeeded);
    assert!(!graph.edges.is_empty() && !graph.messages.is_empty());
    assert!(
        graph
            .edges
            .iter()
            .all(|e| e.count == e.kinds.values().sum::<u64>()),
        "{:?}",
        graph.edges
    );

    // A run that is not a workflow: an empty graph of the same shape.
    let kid = &first.runs[0].id;
    let empty: dispatch_api::Graph =
        get_exactly(&server, "getRunGraph", &format!("/v1/runs/{kid}/graph"));
    assert_eq!(empty.workflow, *kid);
    assert!(empty.nodes.is_empty() && empty.edges.is_empty() && empty.messages.is_empty());
}

#[test]
fn bills_of_materials_are_their_type_byte_for_byte() {
    let Some(server) = TestServer::start(Db::Sqlite, 2) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let mock = rt
        .block_on(dispatch_test_support::mock::MockServer::start(
            dispatch_test_support::mock::Script::default(),
        ))
        .expect("the mock model starts");
    let agent = server.upload(&[(
        "Agentfile",
        &format!(
            "FROM agent\nNAME talker\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\nTOOL BUILTIN memory_get\n",
            mock.base_url()
        ),
    )]);
    let (status, run) = server.post("/v1/runs?wait=true&timeout=60", &json!({"parcel": agent}));
    assert_eq!(
        (status, &run["status"]),
        (200, &json!("succeeded")),
        "{run}"
    );
    let id = run["id"].as_str().expect("an id");
    let bom: dispatch_api::Bom = get_exactly(&server, "getRunBom", &format!("/v1/runs/{id}/bom"));
    assert_eq!(bom.run, id);
    assert_eq!(bom.attempts.len(), 1, "{bom:?}");
    assert_eq!(bom.attempts[0].attempt, 1);
    assert_eq!(bom.bom, bom.attempts[0].bom, "the latest in full");
    assert_eq!(bom.bom["models"][0]["provider"], "openai_chat", "{bom:?}");

    // A run that is not native: none, and the latest is null.
    let noop = server.noop_parcel();
    let (_, plain) = server.post("/v1/runs?wait=true", &json!({"parcel": noop}));
    let plain = plain["id"].as_str().expect("an id");
    let none: dispatch_api::Bom =
        get_exactly(&server, "getRunBom", &format!("/v1/runs/{plain}/bom"));
    assert!(none.attempts.is_empty() && none.bom.is_null(), "{none:?}");
}

#[test]
fn eval_reports_are_their_type_and_keep_every_field_sent() {
    let Some(server) = TestServer::start(Db::Sqlite, 1) else {
        return;
    };
    // What `dispatch eval --format json` prints, and fields no client of
    // ours sends: all kept, the answer in name order.
    let report = json!({
        "eval": "0evalwire1", "parcel": "abcdef0123", "parcel_name": "bench",
        "created_at": 1000,
        "results": [{"case": "c", "passed": true, "run_id": "r"}],
        "summary": {"runs": 1, "ok": true, "pass_rate": 1.0},
        "stopped": "Ctrl-C", "baseline": {"eval": "0old"},
        "aardvark": [1, 2], "zebra": null,
    });
    let (status, kept) = server.post("/v1/evals", &report);
    assert_eq!(status, 201, "{kept}");
    let by_id: dispatch_api::EvalReport = get_exactly(&server, "getEval", "/v1/evals/0evalwire");
    let latest: dispatch_api::EvalReport =
        get_exactly(&server, "latestEval", "/v1/evals/latest?parcel=abcdef");
    for got in [by_id, latest] {
        assert_eq!(serde_json::to_value(&got).expect("a report writes"), report);
        assert_eq!(got.other.len(), 4, "{:?}", got.other);
    }

    // A report sent without a summary is answered without one.
    let bare = json!({"eval": "0evalwire2", "parcel": "fedcba", "parcel_name": "bench",
        "created_at": 2000, "results": []});
    assert_eq!(server.post("/v1/evals", &bare).0, 201);
    let (status, text) = server.text("/v1/evals/0evalwire2", &[]);
    assert_eq!(status, 200, "{text}");
    assert_eq!(in_name_order("getEval", &text), bare);
    let typed: dispatch_api::EvalReport = serde_json::from_str(&text).expect("a report");
    assert_eq!(
        serde_json::to_string(&typed).expect("a report writes"),
        text
    );
}

#[test]
fn streamed_events_are_their_type_in_the_order_the_stream_has_always_had() {
    let Some(server) = TestServer::start(Db::Sqlite, 1) else {
        return;
    };
    let chatty = server.upload(
        &common::chatty_agent(2)
            .iter()
            .map(|(p, c)| (*p, c.as_str()))
            .collect::<Vec<_>>(),
    );
    let (_, run) = server.post("/v1/runs?wait=true", &json!({"parcel": chatty}));
    assert_eq!(run["status"], "succeeded", "{run}");
    let id = run["id"].as_str().expect("an id");
    let (status, body) = server.text(&format!("/v1/runs/{id}/events"), &[]);
    assert_eq!(status, 200, "{body}");
    let mut seen = 0;
    for data in body.lines().filter_map(|l| l.strip_prefix("data:")) {
        let data = data.trim_start();
        let typed: dispatch_api::StreamEvent =
            serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"));
        assert_eq!(
            serde_json::to_string(&typed).expect("an event writes"),
            data,
            "the stream's bytes"
        );
        assert!(
            data.starts_with(&format!(
                "{{\"seq\":{},\"run_id\":\"{id}\",\"type\":",
                typed.seq
            )),
            "{data}"
        );
        seen += 1;
    }
    assert!(seen >= 4, "created, states and two steps: {body}");
}
