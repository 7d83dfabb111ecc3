//! The OpenAPI 3.1 document, generated from the route table below (the same
//! table the README's API section follows) and the error codes.

use axum::Json;
use serde_json::{Map, Value, json};

use super::codes;

/// One operation: method, path, summary, query parameters, success statuses.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    query: &'static [(&'static str, &'static str)],
    ok: &'static [(u16, &'static str)],
}

const OPS: &[Op] = &[
    Op {
        method: "post",
        path: "/v1/runs",
        summary: "Create a run from a built parcel. Body: {parcel, payload?, operation?, parent_id?, priority?, labels?, callback_url?}",
        query: &[
            ("wait", "true to block until the run ends"),
            ("timeout", "seconds to wait at most (default 30, max 300)"),
        ],
        ok: &[
            (
                201,
                "created (background); with Accept: text/event-stream, 200 and the run's events as SSE until it ends",
            ),
            (200, "finished (wait=true)"),
            (202, "still running when the wait timed out"),
        ],
    },
    Op {
        method: "get",
        path: "/v1/runs",
        summary: "List runs, newest first",
        query: &[
            ("status", "comma-separated statuses"),
            ("parcel", "parcel name or digest prefix"),
            ("parent", "parent run id"),
            ("operation", "job, heartbeat or service"),
            ("limit", "page size (default 50, max 1000)"),
            ("cursor", "next_cursor of the previous page"),
        ],
        ok: &[(200, "{runs, next_cursor}")],
    },
    Op {
        method: "get",
        path: "/v1/runs/{id}",
        summary: "One run; an id prefix is enough",
        query: &[],
        ok: &[(200, "the run")],
    },
    Op {
        method: "post",
        path: "/v1/runs/{id}/cancel",
        summary: "Cancel a run: a queued one at once, a running one through its worker",
        query: &[],
        ok: &[(200, "cancelled"), (202, "stop requested")],
    },
    Op {
        method: "get",
        path: "/v1/runs/{id}/events",
        summary: "Events as server-sent events; resume with the Last-Event-ID header",
        query: &[
            ("after", "resume after this event seq (like Last-Event-ID)"),
            (
                "format",
                "json: the events stored so far as one document, not a stream",
            ),
        ],
        ok: &[(200, "text/event-stream")],
    },
    Op {
        method: "get",
        path: "/v1/runs/{id}/logs",
        summary: "The run's log as text (shipped by the worker that ran it, or this server's own file)",
        query: &[("follow", "true to stream until the run ends")],
        ok: &[(200, "text/plain")],
    },
    Op {
        method: "get",
        path: "/v1/runs/{id}/attempts",
        summary: "The run's attempts",
        query: &[],
        ok: &[(200, "{attempts}")],
    },
    Op {
        method: "get",
        path: "/v1/runs/{id}/artifacts",
        summary: "The run's artifacts",
        query: &[],
        ok: &[(200, "{artifacts}")],
    },
    Op {
        method: "get",
        path: "/v1/approvals",
        summary: "Approvals agents asked for, oldest first",
        query: &[
            (
                "pending",
                "false to list decided approvals too (default true: pending only)",
            ),
            ("run", "only this run's (id or unique prefix)"),
        ],
        ok: &[(200, "{approvals}")],
    },
    Op {
        method: "post",
        path: "/v1/runs/{id}/approvals/{approval_id}",
        summary: "Decide an approval like dispatch approve/deny: the first decision stands, the agent reads it and the run resumes. Body: {decision: approve|deny, by, rationale?}",
        query: &[],
        ok: &[(200, "the decided approval")],
    },
    Op {
        method: "get",
        path: "/v1/dead-letters",
        summary: "Dead-lettered runs, newest first",
        query: &[],
        ok: &[(200, "{dead_letters}")],
    },
    Op {
        method: "post",
        path: "/v1/dead-letters/{id}/replay",
        summary: "Replay a dead-lettered run as a new queued run linked by origin_id. Body (optional): {payload?}",
        query: &[],
        ok: &[(201, "the new run")],
    },
    Op {
        method: "get",
        path: "/v1/parcels",
        summary: "List built parcels",
        query: &[],
        ok: &[(200, "{parcels}")],
    },
    Op {
        method: "post",
        path: "/v1/parcels",
        summary: "Upload an Agentfile directory as {files: {path: text}} and build it",
        query: &[],
        ok: &[(201, "{digest, name}")],
    },
    Op {
        method: "get",
        path: "/healthz",
        summary: "200 when the database answers, 503 when not",
        query: &[],
        ok: &[(200, "{status: ok}")],
    },
    Op {
        method: "get",
        path: "/metrics",
        summary: "Prometheus metrics",
        query: &[],
        ok: &[(200, "text/plain")],
    },
    Op {
        method: "get",
        path: "/v1/openapi.json",
        summary: "This document",
        query: &[],
        ok: &[(200, "application/json")],
    },
];

/// The document.
pub fn spec() -> Value {
    let mut paths = Map::new();
    for op in OPS {
        let mut parameters: Vec<Value> = op
            .query
            .iter()
            .map(|(name, what)| {
                json!({"name": name, "in": "query", "required": false,
                       "description": what, "schema": {"type": "string"}})
            })
            .collect();
        if op.path.contains("{id}") {
            parameters.push(json!({"name": "id", "in": "path", "required": true,
                "description": "run id or unique prefix", "schema": {"type": "string"}}));
        }
        if op.path.contains("{approval_id}") {
            parameters.push(json!({"name": "approval_id", "in": "path", "required": true,
                "description": "the approval's id, as the agent named it", "schema": {"type": "string"}}));
        }
        let mut responses = Map::new();
        for (status, what) in op.ok {
            responses.insert(status.to_string(), json!({"description": what}));
        }
        for (code, status, what) in codes::ALL {
            let entry = responses
                .entry(status.to_string())
                .or_insert_with(|| json!({"description": "", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}));
            let described = entry["description"].as_str().unwrap_or("").to_string();
            let sep = if described.is_empty() { "" } else { "; " };
            entry["description"] = json!(format!("{described}{sep}{code}: {what}"));
        }
        let item = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        item[op.method] = json!({
            "summary": op.summary,
            "parameters": parameters,
            "responses": responses,
        });
    }
    let error_codes: Vec<&str> = codes::ALL.iter().map(|(c, _, _)| *c).collect();
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Dispatch", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": {"Error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "enum": error_codes},
                "message": {"type": "string"}
            }
        }}}
    })
}

pub async fn document() -> Json<Value> {
    Json(spec())
}
