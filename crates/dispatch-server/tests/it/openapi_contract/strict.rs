//! The document is as strict as the server, both ways: path parameters
//! carry the patterns the server checks, query numbers the bounds it
//! enforces (and it answers 400 outside them), and object schemas refuse
//! fields they do not name (the server refuses unknown request fields; an
//! answer field the document does not declare fails the contract test).

use super::*;
use dispatch_server::api::strict;

/// Path parameters that take any string, and why.
const FREE: &[(&str, &str, &str)] = &[
    (
        "/v1/evals/{id}",
        "id",
        "an eval's id is the client's (`dispatch eval` makes it)",
    ),
    (
        "/v1/parcels/{reference}",
        "reference",
        "a parcel's name or digest prefix",
    ),
    (
        "/v1/runs/{id}/approvals/{approval_id}",
        "approval_id",
        "the agent names its approvals",
    ),
    ("/v1/sessions/{parcel}/{name}", "parcel", "a parcel's name"),
    ("/hooks/{name}", "name", "a webhook answers its own 404"),
    (
        "/hooks/{name}/{path}",
        "name",
        "a webhook answers its own 404",
    ),
    ("/hooks/{name}/{path}", "path", "any listen path"),
];

#[test]
fn every_path_parameter_has_the_pattern_the_server_checks() {
    let doc = doc();
    for (method, path, op) in operations(&doc) {
        for param in op["parameters"].as_array().into_iter().flatten() {
            if param["in"] != "path" {
                continue;
            }
            let name = param["name"].as_str().unwrap_or_default();
            let pattern = param["schema"]["pattern"].as_str();
            let free = FREE.iter().any(|(p, n, _)| *p == path && *n == name);
            assert!(
                pattern.is_some() || free,
                "{method} {path}: path parameter `{name}` takes any string (give it a pattern in api/strict.rs, or list it in FREE with the reason)"
            );
            assert_eq!(
                pattern,
                strict::path_pattern(&path, name),
                "{method} {path} {name}"
            );
        }
    }
    // The run-id pattern takes every full id, prefix and service name.
    let run_ref = regex_lite(strict::RUN_REF);
    for ok in [
        "0123abcd",
        "0198A2B4C5D6E7F80123456789abcdef",
        "hooks-eu",
        "a.b_c",
    ] {
        assert!(run_ref(ok), "{ok}");
    }
    for bad in ["", ".hidden", "a/b", "a b", &"f".repeat(65)] {
        assert!(!run_ref(bad), "{bad}");
    }
}

/// `pattern` as the document's validator reads it.
fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
    let schema = json!({"type": "string", "pattern": pattern});
    let validator = jsonschema::draft202012::new(&schema).expect("the pattern compiles");
    move |s: &str| validator.is_valid(&json!(s))
}

#[test]
fn object_schemas_refuse_undeclared_fields() {
    let doc = doc();
    let schemas = doc["components"]["schemas"]
        .as_object()
        .expect("components");
    for (name, schema) in schemas {
        if schema["properties"].is_object() && !strict::OPEN.contains(&name.as_str()) {
            assert_eq!(
                schema["additionalProperties"],
                json!(false),
                "{name} takes fields it does not name"
            );
        }
    }
    let error = json!({"$ref": "#/components/schemas/Error"});
    let extra = json!({"code": "conflict", "message": "m", "hint": "x"});
    assert!(!problems(&doc, &error, &extra).is_empty());
    let create = json!({"$ref": "#/components/schemas/CreateRun"});
    assert!(problems(&doc, &create, &json!({"parcel": "p"})).is_empty());
    assert!(!problems(&doc, &create, &json!({"parcel": "p", "parcle": "q"})).is_empty());
}

#[test]
fn the_server_refuses_what_the_document_refuses() {
    let Some(server) = TestServer::start(Db::Sqlite, 0) else {
        return;
    };
    let parcel = server.noop_parcel();
    let (status, run) = server.post("/v1/runs", &json!({"parcel": parcel}));
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().expect("an id").to_string();
    // Query numbers outside the document's bounds, and not numbers at all.
    for path in [
        "/v1/runs?limit=2147483648".to_string(),
        "/v1/runs?limit=1001".to_string(),
        "/v1/runs?limit=-1".to_string(),
        format!("/v1/runs/{id}?wait=-1"),
        format!("/v1/runs/{id}?wait=61"),
        format!("/v1/runs/{id}?wait=NaN"),
        format!("/v1/runs/{id}/logs?follow=-634365"),
        "/v1/notifications?limit=1001".to_string(),
    ] {
        let (status, answer) = server.get(&path);
        assert_eq!(
            (status, &answer["code"]),
            (400, &json!("bad_request")),
            "{path}: {answer}"
        );
    }
    for query in ["timeout=NaN", "timeout=-1", "timeout=301", "timeout=inf"] {
        let path = format!("/v1/runs?wait=true&{query}");
        let (status, answer) = server.post(&path, &json!({"parcel": parcel}));
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap_or_default()
                .contains("expected 0 to 300"),
            "{answer}"
        );
    }
    // At the bounds: accepted.
    assert_eq!(server.get("/v1/runs?limit=1000").0, 200);
    assert_eq!(server.get("/v1/runs?limit=0").0, 200);
    // Unknown fields of a request body: a 400 naming the field.
    for (path, body) in [
        ("/v1/runs", json!({"parcel": parcel, "parcle": 1})),
        ("/v1/runs/prune", json!({"dry_run": true, "filter": {}})),
        ("/v1/sessions/prune", json!({"until": "1d", "prefx": "a"})),
        (
            "/v1/runs/batch",
            json!({"runs": [{"parcel": parcel}], "x": 1}),
        ),
    ] {
        let (status, answer) = server.post(path, &body);
        assert_eq!(status, 400, "{path}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains("unknown field"), "{path}: {answer}");
    }
    // Prune's body is required, as documented: a stray POST removes nothing.
    let doc = doc();
    assert_eq!(
        doc["paths"]["/v1/runs/prune"]["post"]["requestBody"]["required"],
        json!(true)
    );
    let (status, answer) = server.post_raw("/v1/runs/prune", "");
    assert_eq!(status, 400, "{answer}");
    // Those the server reads as `{}` when empty say so.
    for path in strict::OPTIONAL_BODIES {
        assert_eq!(
            doc["paths"][path]["post"]["requestBody"]["required"],
            json!(false),
            "{path}"
        );
    }
    let (status, answer) = server.post_raw("/v1/parcels/prune", "");
    assert_eq!(status, 200, "{answer}");
}

/// Answers read as their `dispatch-api` types (what a typed client does).
#[test]
fn answers_read_as_their_dispatch_api_types() {
    fn typed<T: serde::de::DeserializeOwned>(what: &str, (status, body): (u16, Value)) -> T {
        assert!((200..300).contains(&status), "{what}: {status} {body}");
        serde_json::from_value(body.clone())
            .unwrap_or_else(|e| panic!("{what} as its dispatch-api type: {e}: {body}"))
    }
    let Some(server) = TestServer::start(Db::Sqlite, 1) else {
        return;
    };
    let parcel = server.noop_parcel();
    let run: dispatch_api::Run = typed(
        "a finished run",
        server.post("/v1/runs?wait=true", &json!({"parcel": parcel})),
    );
    assert!(matches!(run.status, dispatch_api::RunStatus::Succeeded));
    let id = run.id;
    let one: dispatch_api::Run = typed("getRun", server.get(&format!("/v1/runs/{id}")));
    assert_eq!(one.id, id);
    let page: dispatch_api::RunPage = typed("listRuns", server.get("/v1/runs?limit=1"));
    assert_eq!(page.runs.len(), 1);
    let attempts: dispatch_api::AttemptList = typed(
        "listAttempts",
        server.get(&format!("/v1/runs/{id}/attempts")),
    );
    assert_eq!(attempts.attempts.len(), 1);
    let events: dispatch_api::EventList = typed(
        "getRunEvents",
        server.get(&format!("/v1/runs/{id}/events?format=json")),
    );
    assert!(!events.events.is_empty());
    let health: dispatch_api::Health = typed("getHealth", server.get("/healthz"));
    assert_eq!(health.status, "ok");
    let would: dispatch_api::PruneAnswer = typed(
        "pruneRuns",
        server.post("/v1/runs/prune", &json!({"dry_run": true})),
    );
    assert_eq!(would.removed, vec![id.clone()]);
    let removed: dispatch_api::Removed =
        typed("deleteRun", server.delete(&format!("/v1/runs/{id}")));
    assert_eq!(removed.removed, id);
}
