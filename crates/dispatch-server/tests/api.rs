//! The HTTP API over real HTTP on an ephemeral loopback port, on SQLite and on
//! PostgreSQL (a fresh database per test).

mod common;

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
