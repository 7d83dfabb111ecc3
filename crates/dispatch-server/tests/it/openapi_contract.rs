//! The OpenAPI document is the API's contract: every route the router
//! serves is documented and every documented one is served; every operation
//! has an operationId and schemas for its answers; and each operation,
//! called on a real server, answers with a documented status and a body its
//! schema accepts (errors included).

use crate::common;
#[path = "openapi_contract/answers.rs"]
mod answers;
#[path = "openapi_contract/contract.rs"]
mod contract;
#[path = "openapi_contract/guard.rs"]
mod guard;
#[path = "openapi_contract/routes.rs"]
mod routes;
#[path = "openapi_contract/sessions.rs"]
mod sessions;
#[path = "openapi_contract/strict.rs"]
mod strict;
#[path = "openapi_contract/wire.rs"]
mod wire;
#[path = "openapi_contract/wire_ops.rs"]
mod wire_ops;
#[path = "openapi_contract/wire_runs.rs"]
mod wire_runs;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use common::{Db, TestServer};
use dispatch_core::Status;
use dispatch_server::api::codes;
use serde_json::{Value, json};

use contract::{ASKING, Contract, problems, upload_body};
use routes::{documented_routes, operations, registrations, target_dir};

fn doc() -> Value {
    dispatch_server::api::openapi::spec()
}

/// Writes the document where CI's validator reads it: `$OPENAPI_OUT`, else
/// `openapi.json` in the target directory.
#[test]
fn writes_the_document() {
    let out = std::env::var_os("OPENAPI_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("openapi.json"));
    let text = serde_json::to_string_pretty(&doc()).expect("the document serializes");
    std::fs::write(&out, text + "\n").expect("the document is written");
}

/// Served and documented from one registration: every route goes through
/// the table's `routes!` (or `catch_all`, for a documented path), one
/// operation per handler. That every documented operation is served,
/// `every_operation_answers_as_documented` shows on a real server.
#[test]
fn every_route_is_registered_where_it_is_documented() {
    let registered = registrations();
    assert!(
        registered.bypasses.is_empty(),
        "routes registered around the table's `routes!`: {:?}",
        registered.bypasses
    );
    let documented = documented_routes(&doc());
    assert!(
        registered.handlers.len() >= 17,
        "the table parses: {:?}",
        registered.handlers
    );
    assert_eq!(
        registered.handlers.len(),
        documented.len(),
        "one documented operation per registered handler: {:?} / {documented:?}",
        registered.handlers
    );
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in &registered.catch_alls {
        assert!(paths.contains(path), "{path} is served, not documented");
    }
    assert!(!registered.catch_alls.is_empty(), "the webhooks' catch-all");
}

#[test]
fn every_operation_has_an_id_parameters_and_answers_with_schemas() {
    let doc = doc();
    let mut ids = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        let at = format!("{method} {path}");
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: no operationId"));
        assert!(
            id.starts_with(|c: char| c.is_ascii_lowercase())
                && id.chars().all(|c| c.is_ascii_alphanumeric()),
            "{at}: operationId `{id}` is not camelCase"
        );
        assert!(ids.insert(id.to_string()), "{at}: operationId `{id}` twice");
        assert!(op["summary"].is_string(), "{at}: no summary");
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{at}: no success answer"
        );
        for (status, response) in responses {
            let content = response["content"]
                .as_object()
                .unwrap_or_else(|| panic!("{at} {status}: no content"));
            for (media, body) in content {
                assert!(
                    body["schema"].is_object(),
                    "{at} {status} {media}: no schema"
                );
            }
            if !status.starts_with('2') {
                // Webhooks answer as a local service's listener does.
                let shape = if path.starts_with("/hooks/") {
                    "#/components/schemas/HookError"
                } else {
                    "#/components/schemas/Error"
                };
                assert_eq!(
                    content["application/json"]["schema"]["$ref"], shape,
                    "{at} {status}: errors answer the error shape"
                );
            }
        }
        // Every route needs a token but /healthz and the webhooks, which say so.
        if path == "/healthz" || path.starts_with("/hooks/") {
            assert_eq!(op["security"], json!([]), "{at}");
        } else {
            assert!(
                op.get("security").is_none(),
                "{at}: the global bearer applies"
            );
            assert!(responses.contains_key("401"), "{at}: documents 401");
        }
        if method == "post" && !path.ends_with("/cancel") && !path.ends_with("/start") {
            let body = &op["requestBody"]["content"]["application/json"]["schema"];
            let any = &op["requestBody"]["content"]["*/*"]["schema"];
            assert!(
                body["$ref"].is_string() || (path.starts_with("/hooks/") && any.is_object()),
                "{at}: a request body schema"
            );
            assert!(responses.contains_key("413"), "{at}: documents 413");
        }
        for param in op["parameters"].as_array().into_iter().flatten() {
            let name = param["name"].as_str().unwrap_or("?");
            let schema = &param["schema"];
            assert!(
                schema["type"].is_string() || schema["$ref"].is_string(),
                "{at}: parameter {name} has a type: {param}"
            );
            if path.contains(&format!("{{{name}}}")) {
                assert_eq!(param["in"], "path", "{at}: {name}");
            }
        }
    }
    assert_eq!(
        doc["paths"]["/v1/runs"]["get"]["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "limit"))
            .map(|p| p["schema"]["type"].clone()),
        Some(json!("integer"))
    );
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&bearer["type"], &bearer["scheme"]),
        (&json!("http"), &json!("bearer"))
    );
    let schemas = &doc["components"]["schemas"];
    let error_codes: Vec<&str> = codes::ALL.iter().map(|(c, _, _)| *c).collect();
    assert_eq!(
        schemas["Error"]["properties"]["code"]["enum"],
        json!(error_codes)
    );
    let statuses: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(schemas["RunStatus"]["enum"], json!(statuses));
}

#[test]
fn the_http_api_guide_lists_every_error_code_with_its_status() {
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/guide/http-api.md"
    ))
    .expect("docs/guide/http-api.md");
    for (code, status, _) in codes::ALL {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{code}` |")))
            .unwrap_or_else(|| panic!("docs/guide/http-api.md's error-code table lacks `{code}`"));
        assert!(
            row.contains(&format!("| {status}")),
            "docs/guide/http-api.md says {row:?} for `{code}`, the server answers {status}"
        );
    }
}

#[test]
fn the_schemas_refuse_what_they_do_not_describe() {
    let doc = doc();
    let error = json!({"$ref": "#/components/schemas/Error"});
    assert!(problems(&doc, &error, &json!({"code": "conflict", "message": "m"})).is_empty());
    assert!(!problems(&doc, &error, &json!({"code": "nope", "message": "m"})).is_empty());
    assert!(!problems(&doc, &error, &json!({"code": "conflict"})).is_empty());
    let page = json!({"$ref": "#/components/schemas/RunPage"});
    let bad_run = json!({"runs": [{"id": "x"}], "next_cursor": null});
    assert!(!problems(&doc, &page, &bad_run).is_empty());
}
