//! The OpenAPI 3.1 document, generated with `utoipa` from the handlers'
//! `#[utoipa::path]` attributes as the route table registers them
//! ([`super::table`]) and the wire types of `dispatch-api` (the request
//! bodies they parse, the answer shapes), made as strict as the server by
//! [`super::strict`]; served at `GET /v1/openapi.json`.
//! CI writes it with the contract test (`tests/it/openapi_contract.rs`) and
//! checks it with an OpenAPI validator.

use std::sync::Arc;

use axum::{Extension, Json};
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, Object, ObjectBuilder, Ref, RefOr, Required, ResponseBuilder, Schema, Type,
};
use utoipa::{Modify, OpenApi};

use super::{codes, schemas};

#[derive(OpenApi)]
#[openapi(
    info(title = "Dispatch", description = "Durable runs of AI agents over HTTP. Every route but `/healthz` needs `Authorization: Bearer <token>` when the server requires tokens (it listens beyond loopback, or was told to)."),
    components(schemas(schemas::Error, schemas::RunStatus)),
    security(("bearer" = [])),
    tags(
        (name = "runs", description = "Create, list, watch and cancel runs"),
        (name = "reliability", description = "Approvals and dead letters"),
        (name = "parcels", description = "Built agents"),
        (name = "evals", description = "Eval reports (`dispatch eval --host`)"),
        (name = "services", description = "Services owned by the cluster: timers and webhooks"),
        (name = "operations", description = "Health, metrics and this document"),
    )
)]
struct ApiDoc;

/// What the document says besides its paths: title, tags, security, the
/// shared schemas. The route table adds the paths.
pub(super) fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// What the derive cannot say: the bearer scheme, `/healthz` without one,
/// and the error codes (from [`codes::ALL`]).
struct Contract;

impl Modify for Contract {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("a token from `dispatch token create`"))
                    .build(),
            ),
        );
        let error_codes: Vec<&str> = codes::ALL.iter().map(|(c, _, _)| *c).collect();
        let listed = codes::ALL
            .iter()
            .map(|(c, status, what)| format!("`{c}` ({status}): {what}"))
            .collect::<Vec<_>>()
            .join("; ");
        let code: Object = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(error_codes))
            .description(Some(format!("Stable: {listed}")))
            .build();
        if let Some(RefOr::T(Schema::Object(error))) = components.schemas.get_mut("Error") {
            error
                .properties
                .insert("code".into(), RefOr::T(Schema::Object(code)));
        }
        // Open routes: no token needed.
        if let Some(get) = doc
            .paths
            .paths
            .get_mut("/healthz")
            .and_then(|p| p.get.as_mut())
        {
            get.security = Some(Vec::new());
        }
        // Webhooks: their callers prove themselves with the service's secret.
        // (and an A2A service's card holds no secret).
        for path in ["/hooks/{name}", "/hooks/{name}/{path}"] {
            let Some(item) = doc.paths.paths.get_mut(path) else {
                continue;
            };
            for op in [item.post.as_mut(), item.get.as_mut()]
                .into_iter()
                .flatten()
            {
                op.security = Some(Vec::new());
            }
        }
        // Every operation that reads the store may find it failing.
        let store_failures = [
            (
                "500",
                "`internal`: the server failed (stored data it cannot read)",
            ),
            (
                "503",
                "`unavailable`: the database is unavailable or locked; retry later",
            ),
        ];
        // The document, the metrics and the parcels on disk need no store.
        let storeless = ["/v1/openapi.json", "/metrics", "/v1/parcels"];
        let own_errors = ["/hooks/{name}", "/hooks/{name}/{path}"];
        for (path, item) in doc.paths.paths.iter_mut() {
            let get = item
                .get
                .as_mut()
                .filter(|_| !storeless.contains(&path.as_str()));
            let post = item
                .post
                .as_mut()
                .filter(|_| !own_errors.contains(&path.as_str()));
            for op in [get, post].into_iter().flatten() {
                for (status, what) in store_failures {
                    if !op.responses.responses.contains_key(status) {
                        op.responses
                            .responses
                            .insert(status.to_string(), RefOr::T(error_response(what)));
                    }
                }
            }
        }
        guarded(doc);
        // An empty body replays the dead letter as it was.
        if let Some(body) = doc
            .paths
            .paths
            .get_mut("/v1/dead-letters/{id}/replay")
            .and_then(|p| p.post.as_mut())
            .and_then(|op| op.request_body.as_mut())
        {
            body.required = Some(Required::False);
        }
    }
}

/// What [`crate::guard`] and [`crate::limits`] answer before any handler:
/// 421 on every route, 403 and 415 on those that change something, 429
/// wherever a token may be sent (its rate counts on open routes too).
fn guarded(doc: &mut utoipa::openapi::OpenApi) {
    const HOST: &str =
        "`host_not_allowed`: the Host is not a name this server answers to (hint: --allowed-host)";
    const RATE: &str =
        "`rate_limited`: too many requests with this token; retry after `Retry-After` seconds";
    const RATE_SENT: &str = "`rate_limited`: a token was sent (none is needed here) and it has sent too many requests; retry after `Retry-After` seconds";
    for (path, item) in doc.paths.paths.iter_mut() {
        let webhook = path.starts_with("/hooks/");
        if webhook {
            // Webhooks answer in their listener's shape, and only the Host
            // rule applies (and a token's rate, when one is sent).
            for op in [item.post.as_mut(), item.get.as_mut()]
                .into_iter()
                .flatten()
            {
                add(op, "421", HOST, "HookError");
                add(op, "429", RATE_SENT, "HookError");
            }
            continue;
        }
        let open = path == "/healthz";
        for op in [item.get.as_mut()].into_iter().flatten() {
            add(op, "421", HOST, "Error");
            add(op, "429", if open { RATE_SENT } else { RATE }, "Error");
        }
        for op in [item.post.as_mut(), item.put.as_mut(), item.delete.as_mut()]
            .into_iter()
            .flatten()
        {
            add(op, "421", HOST, "Error");
            add(
                op,
                "403",
                "`cross_origin`: sent by a page of another origin",
                "Error",
            );
            add(
                op,
                "415",
                "`unsupported_media_type`: a body that is not `Content-Type: application/json`",
                "Error",
            );
            add(op, "429", RATE, "Error");
        }
    }
    if let Some(body) = doc
        .paths
        .paths
        .get_mut("/v1/runs/prune")
        .and_then(|p| p.post.as_mut())
        .and_then(|op| op.request_body.as_mut())
    {
        body.required = Some(Required::True);
    }
}

/// Documents `status` on `op`, answering `schema`, unless it is already.
fn add(op: &mut utoipa::openapi::path::Operation, status: &str, what: &str, schema: &str) {
    if !op.responses.responses.contains_key(status) {
        let response = ResponseBuilder::new()
            .description(what)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(schema)))
                    .build(),
            )
            .build();
        op.responses
            .responses
            .insert(status.to_string(), RefOr::T(response));
    }
}

/// An error answer: `{code, message}`.
fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        )
        .build()
}

/// The document the route table describes, completed ([`Contract`]) and
/// made strict ([`super::strict`]).
pub(super) fn finish(mut doc: utoipa::openapi::OpenApi) -> Value {
    Contract.modify(&mut doc);
    let mut doc = serde_json::to_value(doc).unwrap_or(Value::Null);
    super::strict::tighten(&mut doc);
    doc
}

/// The document as JSON: the one the server serves.
pub fn spec() -> Value {
    finish(super::table::routes().into_openapi())
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "getOpenApi",
    tag = "operations",
    responses(
        (status = 200, description = "this document (OpenAPI 3.1)", body = Object),
        (status = 401, description = "`unauthorized`", body = schemas::Error),
    )
)]
pub async fn document(Extension(doc): Extension<Arc<Value>>) -> Json<Value> {
    Json(Value::clone(&doc))
}
