//! The HTTP API over real HTTP on an ephemeral loopback port, on SQLite and on
//! PostgreSQL (a fresh database per test).

use crate::common;

use std::collections::BTreeSet;

use common::{Db, TestServer, chatty_agent, sse};
use serde_json::json;

/// Expands each test for both databases.
macro_rules! on_both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    if let Some(server) = super::TestServer::start(super::Db::Sqlite, 4) {
                        super::$name(server);
                    }
                }
            )+
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(server) = super::TestServer::start(super::Db::Postgres, 4) {
                        super::$name(server);
                    }
                }
            )+
        }
    };
}

on_both!(
    a_synchronous_wait_returns_the_finished_run,
    a_background_run_is_created_at_once_and_finishes,
    sse_resumed_with_last_event_id_misses_nothing,
    logs_are_served_as_text_and_follow_until_the_end,
    bad_input_is_a_4xx_with_a_stable_code,
    listing_pages_with_a_cursor_and_filters,
    listing_by_labels_and_creation_time,
    operations_endpoints_answer,
    a_labelled_run_waits_for_a_matching_worker_and_cancels_at_once,
    a_wait_that_times_out_answers_202_with_the_live_run,
    every_route_in_the_openapi_document_is_served,
    creating_with_accept_event_stream_streams_the_run_to_its_end,
    a_retried_run_goes_back_through_the_queue_for_each_attempt,
);

fn a_synchronous_wait_returns_the_finished_run(server: TestServer) {
    let parcel = server.noop_parcel();
    let (status, run) = server.post(
        "/v1/runs?wait=true&timeout=30",
        &json!({"parcel": parcel, "payload": {"x": 1}}),
    );
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["attempt"], 1);
    assert_eq!(run["payload"], json!({"x": 1}));
}

fn a_background_run_is_created_at_once_and_finishes(server: TestServer) {
    let parcel = server.noop_parcel();
    let (status, run) = server.post("/v1/runs", &json!({"parcel": parcel}));
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().expect("an id").to_string();
    let done = server.wait_for(&format!("/v1/runs/{}", &id[..16]), |r| {
        r["status"] == "succeeded"
    });
    assert_eq!(done["id"], id.as_str(), "a prefix finds the run");
}

fn sse_resumed_with_last_event_id_misses_nothing(server: TestServer) {
    let files = chatty_agent(20);
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let parcel = server.upload(&files);
    // Subscribe while the run is still queued or running: the stream ends
    // after the run's last event.
    let (_, run) = server.post("/v1/runs", &json!({"parcel": parcel}));
    let id = run["id"].as_str().expect("an id").to_string();
    let (status, body) = server.text(&format!("/v1/runs/{id}/events"), &[]);
    assert_eq!(status, 200);
    let all = sse(&body);
    let seqs: Vec<i64> = all.iter().map(|(seq, _, _)| *seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    let steps = all.iter().filter(|(_, kind, _)| kind == "step").count();
    assert_eq!(steps, 20, "every agent event arrived: {body}");
    let last = &all.last().expect("events").2;
    assert_eq!(
        last["data"]["to"], "succeeded",
        "the stream ends with the end"
    );

    // Resume from every point: exactly the rest, nothing missed or repeated.
    for cut in [0, 1, all.len() / 2, all.len() - 1] {
        let after = all[cut].0;
        let (_, body) = server.text(
            &format!("/v1/runs/{id}/events"),
            &[("Last-Event-ID", &after.to_string())],
        );
        let rest: Vec<i64> = sse(&body).iter().map(|(seq, _, _)| *seq).collect();
        assert_eq!(rest, seqs[cut + 1..].to_vec(), "resumed after {after}");
    }
    let (status, body) = server.text(
        &format!("/v1/runs/{id}/events"),
        &[("Last-Event-ID", "not-a-number")],
    );
    assert_eq!(status, 400, "{body}");
}

fn logs_are_served_as_text_and_follow_until_the_end(server: TestServer) {
    let files = chatty_agent(1);
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let parcel = server.upload(&files);
    let (_, run) = server.post("/v1/runs", &json!({"parcel": parcel}));
    let id = run["id"].as_str().expect("an id").to_string();
    let (status, followed) = server.text(&format!("/v1/runs/{id}/logs?follow=true"), &[]);
    assert_eq!(status, 200);
    assert!(followed.contains("hello from the agent"), "{followed}");
    assert!(
        followed.contains("succeeded"),
        "the follow lasts to the end: {followed}"
    );
    let (_, plain) = server.text(&format!("/v1/runs/{id}/logs"), &[]);
    assert_eq!(plain, followed);
}

fn bad_input_is_a_4xx_with_a_stable_code(server: TestServer) {
    let (status, body) = server.post_raw("/v1/runs", "{not json");
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    let (status, body) = server.post("/v1/runs", &json!({"parcel": "../etc"}));
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let (status, body) = server.post("/v1/runs", &json!({"parcel": "no-such-parcel"}));
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("parcel_not_found")),
        "{body}"
    );
    let (status, body) = server.post("/v1/runs", &json!({"parcel": "x", "bogus": 1}));
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let (status, body) = server.get("/v1/runs/ffffffffffff");
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("run_not_found")),
        "{body}"
    );
    let (status, body) = server.get("/v1/runs/not-hex!");
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.get("/v1/runs?status=sleeping");
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let (status, body) = server.get("/v1/nothing-here");
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("no_such_route")),
        "{body}"
    );
    let (status, body) = server.post("/v1/parcels", &json!({"files": {"../x": "y"}}));
    assert_eq!(status, 400, "{body}");
    let (status, body) = server.post("/v1/parcels", &json!({"files": {"Agentfile": "NAME x\n"}}));
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_parcel")),
        "{body}"
    );
    let parcel = server.noop_parcel();
    let (_, run) = server.post("/v1/runs?wait=true", &json!({"parcel": parcel}));
    let id = run["id"].as_str().expect("an id");
    let (status, body) = server.post(&format!("/v1/runs/{id}/cancel"), &json!({}));
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("invalid_state")),
        "{body}"
    );
}

fn listing_pages_with_a_cursor_and_filters(server: TestServer) {
    let parcel = server.noop_parcel();
    let mut ids = BTreeSet::new();
    for _ in 0..7 {
        let (_, run) = server.post("/v1/runs?wait=true", &json!({"parcel": parcel}));
        ids.insert(run["id"].as_str().expect("an id").to_string());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/runs?limit=3&status=succeeded&parcel=bench&cursor={c}"),
            None => "/v1/runs?limit=3&status=succeeded&parcel=bench".to_string(),
        };
        let (status, page) = server.get(&path);
        assert_eq!(status, 200, "{page}");
        for run in page["runs"].as_array().expect("runs") {
            seen.push(run["id"].as_str().expect("an id").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut newest_first: Vec<String> = ids.iter().cloned().collect();
    newest_first.reverse();
    assert_eq!(seen, newest_first, "every run once, newest first");
    let (_, none) = server.get("/v1/runs?status=failed");
    assert_eq!(none["runs"], json!([]));
}

/// The ids a listing answers, in its order.
fn listed(server: &TestServer, query: &str) -> Vec<String> {
    let (status, page) = server.get(&format!("/v1/runs?{query}"));
    assert_eq!(status, 200, "{query}: {page}");
    page["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["id"].as_str().expect("an id").to_string())
        .collect()
}

fn listing_by_labels_and_creation_time(server: TestServer) {
    let parcel = server.noop_parcel();
    let mut ids = Vec::new();
    // No worker here has labels: the labelled runs stay queued.
    for labels in [json!(["gpu"]), json!(["gpu", "eu"]), json!([])] {
        let (status, run) = server.post("/v1/runs", &json!({"parcel": parcel, "labels": labels}));
        assert_eq!(status, 201, "{run}");
        assert_eq!(run["labels"], labels, "the answer shows the labels");
        ids.push(run["id"].as_str().expect("an id").to_string());
    }
    let (gpu, both, plain) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    let (_, run) = server.get(&format!("/v1/runs/{both}"));
    assert_eq!(run["labels"], json!(["gpu", "eu"]), "{run}");
    assert_eq!(
        listed(&server, "label=gpu"),
        vec![both.clone(), gpu.clone()]
    );
    assert_eq!(
        listed(&server, "label=gpu,eu"),
        vec![both.clone()],
        "all are required"
    );
    assert_eq!(
        listed(&server, "label=eu&label=gpu"),
        vec![both.clone()],
        "repeated"
    );
    assert!(listed(&server, "label=gpu,tpu").is_empty());
    assert_eq!(
        listed(&server, "label=eu&status=queued"),
        vec![both.clone()]
    );

    // Times: compared with what each run says of its own creation.
    let (_, all) = server.get("/v1/runs");
    let created: Vec<(String, i64)> = all["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| {
            let id = r["id"].as_str().expect("an id").to_string();
            (id, r["created_at"].as_i64().expect("created_at"))
        })
        .collect();
    assert_eq!(created.len(), 3);
    let at = created
        .iter()
        .find(|(id, _)| *id == both)
        .expect("listed")
        .1;
    let expect = |keep: &dyn Fn(i64) -> bool| -> Vec<String> {
        created
            .iter()
            .filter(|(_, t)| keep(*t))
            .map(|(id, _)| id.clone())
            .collect()
    };
    let rfc = dispatch_core::time::format_rfc3339(at).expect("a time");
    assert_eq!(
        listed(&server, &format!("created_after={rfc}")),
        expect(&|t| t >= at),
        "created_after is inclusive"
    );
    assert!(listed(&server, &format!("created_after={rfc}")).contains(&plain));
    assert_eq!(
        listed(&server, &format!("created_before={rfc}")),
        expect(&|t| t < at),
        "created_before is exclusive"
    );
    // The same instant in another offset (+ written %2B in a URL).
    let shifted = dispatch_core::time::format_rfc3339(at + 3_600_000)
        .expect("a time")
        .replace('Z', "%2B01:00");
    assert_eq!(
        listed(&server, &format!("created_after={shifted}")),
        expect(&|t| t >= at),
        "an offset is honoured"
    );
    assert_eq!(
        listed(&server, "created_after=1h&label=gpu"),
        vec![both.clone(), gpu.clone()]
    );
    assert!(listed(&server, "created_before=1h").is_empty());

    for bad in [
        "created_after=yesterday",
        "created_before=10w",
        "created_after=2026-11-21T10:00:00%2B01:00&created_before=2026-11-21",
    ] {
        let (status, body) = server.get(&format!("/v1/runs?{bad}"));
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("bad_request")),
            "{bad}: {body}"
        );
        let message = body["message"].as_str().expect("a message");
        assert!(
            message.starts_with("created_") && message.contains("RFC 3339"),
            "names the parameter and the forms: {message}"
        );
    }
    let (status, body) = server.get("/v1/runs?created_after=2026-11-21T11:00:00+01:00");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("%2B")),
        "an unencoded + gets a hint: {body}"
    );
}

fn operations_endpoints_answer(server: TestServer) {
    let (status, health) = server.get("/healthz");
    assert_eq!((status, &health["status"]), (200, &json!("ok")));
    let (status, doc) = server.get("/v1/openapi.json");
    assert_eq!(status, 200);
    assert!(doc["paths"]["/v1/runs"]["post"].is_object(), "{doc}");
    assert!(doc["paths"]["/v1/runs/{id}/events"]["get"].is_object());
    let create = &doc["paths"]["/v1/runs"]["post"]["requestBody"]["content"]["application/json"];
    assert_eq!(create["schema"]["$ref"], "#/components/schemas/CreateRun");
    let schemas = &doc["components"]["schemas"];
    for field in [
        "idempotency_key",
        "dedup",
        "force",
        "session",
        "policy",
        "labels",
    ] {
        assert!(
            schemas["CreateRun"]["properties"][field].is_object(),
            "CreateRun documents {field}"
        );
    }
    for field in [
        "retries",
        "backoff",
        "timeout",
        "step_timeout",
        "max_tokens",
        "max_cost",
    ] {
        assert!(
            schemas["Policy"]["properties"][field].is_object(),
            "Policy documents {field}"
        );
    }
    let list_params: Vec<&str> = doc["paths"]["/v1/runs"]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in ["label", "created_after", "created_before"] {
        assert!(list_params.contains(&name), "GET /v1/runs documents {name}");
    }
    assert_eq!(
        schemas["Run"]["properties"]["labels"]["type"], "array",
        "the run's labels are documented"
    );
    let (status, metrics) = server.text("/metrics", &[]);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("dispatch_http_requests_total"),
        "{metrics}"
    );
    let (_, parcels) = server.get("/v1/parcels");
    assert_eq!(parcels["parcels"], json!([]));
}

fn a_labelled_run_waits_for_a_matching_worker_and_cancels_at_once(server: TestServer) {
    let parcel = server.noop_parcel();
    let (status, run) = server.post(
        "/v1/runs",
        &json!({"parcel": parcel, "labels": ["gpu"], "priority": 5}),
    );
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().expect("an id").to_string();
    // An unlabelled run created after it is claimed and finished first.
    let (_, other) = server.post("/v1/runs?wait=true", &json!({"parcel": parcel}));
    assert_eq!(other["status"], "succeeded");
    let (_, still) = server.get(&format!("/v1/runs/{id}"));
    assert_eq!(
        still["status"], "queued",
        "no worker here has the gpu label"
    );
    let (status, cancelled) = server.post(&format!("/v1/runs/{id}/cancel"), &json!({}));
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
}

fn a_wait_that_times_out_answers_202_with_the_live_run(server: TestServer) {
    let parcel = server.noop_parcel();
    // Nobody here has this label: the run stays queued.
    let (status, run) = server.post(
        "/v1/runs?wait=true&timeout=0.2",
        &json!({"parcel": parcel, "labels": ["nowhere"]}),
    );
    assert_eq!(status, 202, "{run}");
    assert_eq!(run["status"], "queued");
    let (status, body) = server.post("/v1/runs?wait=maybe", &json!({"parcel": parcel}));
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
}

fn every_route_in_the_openapi_document_is_served(server: TestServer) {
    let parcel = server.noop_parcel();
    let (_, run) = server.post("/v1/runs?wait=true", &json!({"parcel": parcel}));
    let id = run["id"].as_str().expect("an id");
    let (_, doc) = server.get("/v1/openapi.json");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 10, "{doc}");
    for (path, item) in paths {
        let concrete = path
            .replace("{id}", id)
            .replace("{approval_id}", "no-such-approval");
        for method in item.as_object().expect("methods").keys() {
            let (status, body) = match method.as_str() {
                "get" => {
                    let (status, text) = server.text(&concrete, &[]);
                    (
                        status,
                        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
                    )
                }
                "post" => server.post(&concrete, &json!({})),
                "delete" => server.delete(&concrete),
                "put" => server.call(
                    "PUT",
                    &concrete,
                    &[("content-type", "application/json")],
                    Some(b"{}"),
                ),
                other => panic!("unexpected method {other}"),
            };
            assert_ne!(
                body["code"].as_str(),
                Some("no_such_route"),
                "{method} {path} is documented but not served ({status})"
            );
        }
    }
}

fn creating_with_accept_event_stream_streams_the_run_to_its_end(server: TestServer) {
    let parcel = server.noop_parcel();
    let body = json!({"parcel": parcel}).to_string();
    let base = format!("http://{}", server.addr);
    let response = dispatch_server::client::request(
        &base,
        "POST",
        "/v1/runs",
        &[("Accept", "text/event-stream")],
        Some(body.as_bytes()),
    )
    .expect("the server answers");
    assert_eq!(response.status, 200);
    let events = sse(&response.text().expect("the stream"));
    let kinds: Vec<&str> = events.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"created"), "{kinds:?}");
    let last = &events.last().expect("events").2;
    assert_eq!(last["data"]["to"], "succeeded");
}

fn a_retried_run_goes_back_through_the_queue_for_each_attempt(server: TestServer) {
    let parcel = server.upload(&[
        (
            "Agentfile",
            "NAME flaky\nCOPY agent.sh\nCOMMAND sh agent.sh\nRETRY 2 BACKOFF 100ms\n",
        ),
        ("agent.sh", "echo try $DISPATCH_ATTEMPT\nexit 1\n"),
    ]);
    let (status, run) = server.post("/v1/runs?wait=true&timeout=30", &json!({"parcel": parcel}));
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "failed");
    assert_eq!(run["attempt"], 2, "the retry is a new attempt");
    let id = run["id"].as_str().expect("an id");
    let (_, attempts) = server.get(&format!("/v1/runs/{id}/attempts"));
    assert_eq!(
        attempts["attempts"].as_array().map(Vec::len),
        Some(2),
        "{attempts}"
    );
    let (_, log) = server.text(&format!("/v1/runs/{id}/logs"), &[]);
    assert!(log.contains("try 1") && log.contains("try 2"), "{log}");
}
