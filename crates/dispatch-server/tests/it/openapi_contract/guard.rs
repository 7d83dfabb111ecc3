//! The guard: with tokens required every operation but health answers
//! 401, and the guard's answers and prune's body are documented.

use std::collections::BTreeMap;

use serde_json::json;

use super::common::TestServer;
use super::contract::Contract;
use super::doc;
use super::routes::operations;

/// With tokens required, every operation but `getHealth` answers 401 with
/// the error shape, as documented.
#[test]
fn every_operation_but_health_needs_a_token() {
    let server = TestServer::start_with_required_auth();
    let doc = doc();
    let mut c = Contract {
        doc: doc.clone(),
        server: &server,
        token: None,
        seen: BTreeMap::new(),
    };
    for (method, template, op) in operations(&doc) {
        let path = template
            .replace("{id}", "0123abcd")
            .replace("{approval_id}", "a")
            .replace("{name}", "nobody")
            .replace("{path}", "in");
        let body = (method == "post").then_some(&b"{}"[..]);
        let (status, answer) = c.call(&method.to_uppercase(), &template, &path, &[], body);
        if op["operationId"] == "getHealth" {
            assert_eq!(status, 200);
        } else if template.starts_with("/hooks/") {
            // A webhook's caller has the service's secret, not a token.
            assert_eq!((status, &answer["code"]), (404, &json!("not_found")));
        } else {
            assert_eq!((status, &answer["code"]), (401, &json!("unauthorized")));
        }
    }
    c.token = Some("not-a-token".into());
    assert_eq!(c.get("/v1/runs", "/v1/runs").0, 401);
}

/// The guard's answers are documented where they happen, and prune says
/// its body is required.
#[test]
fn the_guard_answers_and_the_prune_body_are_documented() {
    let doc = doc();
    let paths = &doc["paths"];
    assert!(paths["/v1/runs"]["post"]["responses"]["415"].is_object());
    assert!(paths["/v1/runs"]["post"]["responses"]["403"].is_object());
    assert!(paths["/v1/runs"]["get"]["responses"]["421"].is_object());
    assert!(paths["/v1/runs"]["get"]["responses"]["429"].is_object());
    assert!(paths["/healthz"]["get"]["responses"]["421"].is_object());
    // A token sent where none is needed still counts against its rate.
    assert!(paths["/healthz"]["get"]["responses"]["429"].is_object());
    let hook = &paths["/hooks/{name}"]["post"]["responses"];
    assert!(hook["421"].is_object() && hook["415"].is_null() && hook["403"].is_null());
    assert!(hook["429"].is_object());
    let quota = &paths["/v1/quotas/{project}"]["put"]["responses"];
    for status in ["403", "415", "421", "429"] {
        assert!(
            quota[status].is_object(),
            "PUT /v1/quotas/{{project}} {status}"
        );
    }
    assert_eq!(
        paths["/v1/runs/prune"]["post"]["requestBody"]["required"],
        true
    );
}
