//! The OpenAPI 3.1 document, generated from the route table below (the same
//! table the README's API section follows) and the error codes.

use axum::Json;
use dispatch_core::Status;
use serde_json::{Map, Value, json};

use super::codes;

/// One operation: method, path, summary, query parameters, request body
/// and answer (schemas under `components`), success statuses.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    query: &'static [(&'static str, &'static str)],
    body: Option<&'static str>,
    /// The schema of the first success status's JSON body, when it has one.
    returns: Option<&'static str>,
    ok: &'static [(u16, &'static str)],
}

const OPS: &[Op] = &[
    Op {
        method: "post",
        path: "/v1/runs",
        summary: "Create a run from a built parcel, with the reliability options of dispatch run (policy overrides, idempotency key or dedup, force, session) and queue options (priority, labels, callback_url, queue_timeout), stored in one transaction. A request whose idempotency key matches a live or succeeded run answers that run (200, deduplicated: true) and creates nothing",
        query: &[
            ("wait", "true to block until the run ends"),
            ("timeout", "seconds to wait at most (default 30, max 300)"),
        ],
        body: Some("CreateRun"),
        returns: None,
        ok: &[
            (
                201,
                "created (background), with deduplicated: false; with Accept: text/event-stream, 200 and the run's events as SSE until it ends",
            ),
            (
                200,
                "finished (wait=true), or the existing run with deduplicated: true when the idempotency key matched one",
            ),
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
            (
                "label",
                "comma-separated labels, all required: runs dispatched with every one (the parameter may be repeated)",
            ),
            (
                "created_after",
                "runs created at or after this time: RFC 3339 (2026-11-21T10:00:00Z; write a + offset as %2B) or an age before now (30s, 10m, 2h, 7d); when paging, send the same absolute time with every page",
            ),
            (
                "created_before",
                "runs created before this time (exclusive), in the same forms as created_after",
            ),
            ("limit", "page size (default 50, max 1000)"),
            ("cursor", "next_cursor of the previous page"),
        ],
        body: None,
        returns: Some("RunPage"),
        ok: &[(200, "{runs, next_cursor}")],
    },
    Op {
        method: "get",
        path: "/v1/runs/{id}",
        summary: "One run; an id prefix is enough",
        query: &[(
            "wait",
            "seconds (at most 60): answer once the run has ended, or after that long (a long poll)",
        )],
        body: None,
        returns: Some("Run"),
        ok: &[(200, "the run")],
    },
    Op {
        method: "post",
        path: "/v1/runs/{id}/cancel",
        summary: "Cancel a run: a queued one at once, a running one through its worker",
        query: &[],
        body: None,
        returns: None,
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
        body: None,
        returns: None,
        ok: &[(200, "text/event-stream")],
    },
    Op {
        method: "get",
        path: "/v1/runs/{id}/logs",
        summary: "The run's log as text (shipped by the worker that ran it, or this server's own file)",
        query: &[("follow", "true to stream until the run ends")],
        body: None,
        returns: None,
        ok: &[(200, "text/plain")],
    },
    Op {
        method: "get",
        path: "/v1/runs/{id}/attempts",
        summary: "The run's attempts",
        query: &[],
        body: None,
        returns: None,
        ok: &[(200, "{attempts}")],
    },
    Op {
        method: "get",
        path: "/v1/runs/{id}/artifacts",
        summary: "The run's artifacts",
        query: &[],
        body: None,
        returns: None,
        ok: &[(200, "{artifacts}")],
    },
    Op {
        method: "get",
        path: "/v1/runs/{id}/bom",
        summary: "The bill of materials of each attempt of a native run (models, tools and their schema digests, MCP servers and their tools/list digests, limits)",
        query: &[],
        body: None,
        returns: None,
        ok: &[(200, "{run, bom, attempts}")],
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
        body: None,
        returns: None,
        ok: &[(200, "{approvals}")],
    },
    Op {
        method: "post",
        path: "/v1/runs/{id}/approvals/{approval_id}",
        summary: "Decide an approval like dispatch approve/deny: the first decision stands, the agent reads it and the run resumes",
        query: &[],
        body: Some("Decision"),
        returns: None,
        ok: &[(200, "the decided approval")],
    },
    Op {
        method: "get",
        path: "/v1/dead-letters",
        summary: "Dead-lettered runs, newest first",
        query: &[],
        body: None,
        returns: None,
        ok: &[(200, "{dead_letters}")],
    },
    Op {
        method: "post",
        path: "/v1/dead-letters/{id}/replay",
        summary: "Replay a dead-lettered run as a new queued run linked by origin_id, under the original run's stored policy (body optional)",
        query: &[],
        body: Some("Replay"),
        returns: None,
        ok: &[(201, "the new run")],
    },
    Op {
        method: "get",
        path: "/v1/parcels",
        summary: "List built parcels",
        query: &[],
        body: None,
        returns: None,
        ok: &[(200, "{parcels}")],
    },
    Op {
        method: "post",
        path: "/v1/parcels",
        summary: "Upload an Agentfile directory and build it",
        query: &[],
        body: Some("ParcelUpload"),
        returns: None,
        ok: &[(201, "{digest, name}")],
    },
    Op {
        method: "get",
        path: "/healthz",
        summary: "200 when the database answers, 503 when not",
        query: &[],
        body: None,
        returns: None,
        ok: &[(200, "{status: ok}")],
    },
    Op {
        method: "get",
        path: "/metrics",
        summary: "Prometheus metrics",
        query: &[],
        body: None,
        returns: None,
        ok: &[(200, "text/plain")],
    },
    Op {
        method: "get",
        path: "/v1/openapi.json",
        summary: "This document",
        query: &[],
        body: None,
        returns: None,
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
        for (n, (status, what)) in op.ok.iter().enumerate() {
            let mut response = json!({"description": what});
            if let Some(schema) = op.returns.filter(|_| n == 0) {
                response["content"] = json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}});
            }
            responses.insert(status.to_string(), response);
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
        if let Some(schema) = op.body {
            item[op.method]["requestBody"] = json!({
                "required": schema != "Replay",
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}},
            });
        }
    }
    let error_codes: Vec<&str> = codes::ALL.iter().map(|(c, _, _)| *c).collect();
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Dispatch", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas(error_codes)}
    })
}

/// A duration as the CLI's flags take it.
const DURATION: &str =
    "a duration: a number with a unit, e.g. 500ms, 30s, 5m, 2h (no unit: seconds)";

/// The request bodies and the error shape.
fn schemas(error_codes: Vec<&str>) -> Value {
    let string = |what: &str| json!({"type": "string", "description": what});
    let statuses: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
    json!({
        "Error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "enum": error_codes},
                "message": {"type": "string"}
            }
        },
        "Run": {
            "type": "object",
            "description": "a run as stored, with its status",
            "properties": {
                "id": string("32 hex digits, time-ordered"),
                "status": {"type": "string", "enum": statuses},
                "state": {"type": "object", "description": "the status with its data (times, processes, exit code, reason)"},
                "version": {"type": "integer", "description": "bumped by every state change"},
                "parcel_name": string("the parcel's name"),
                "parcel_digest": string("the parcel's digest"),
                "operation": {"type": "string", "enum": ["job", "heartbeat", "service"]},
                "attempt": {"type": "integer", "description": "the current attempt, from 1"},
                "parent_id": {"type": ["string", "null"], "description": "the run that started this one"},
                "origin_id": {"type": ["string", "null"], "description": "the run this one restarts or replays"},
                "payload": {"description": "the run's input"},
                "brief_sha256": string("the brief's SHA-256"),
                "created_at": {"type": "integer", "description": "Unix milliseconds"},
                "updated_at": {"type": "integer", "description": "Unix milliseconds of the last state change"},
                "stop_requested_at": {"type": ["integer", "null"], "description": "Unix milliseconds"},
                "usage": {"type": "object", "description": "input_tokens, output_tokens, cost_usd"},
                "output": {"description": "the run's result, when it has one"},
                "labels": {"type": "array", "items": {"type": "string"},
                           "description": "the labels it was dispatched with: only a worker with all of them claims it"}
            }
        },
        "RunPage": {
            "type": "object",
            "required": ["runs", "next_cursor"],
            "properties": {
                "runs": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}},
                "next_cursor": {"type": ["string", "null"], "description": "pass as cursor for the next page; null on the last"}
            }
        },
        "CreateRun": {
            "type": "object",
            "required": ["parcel"],
            "additionalProperties": false,
            "properties": {
                "parcel": string("a built parcel's name or digest (prefix)"),
                "payload": {"description": "the run's input (JSON; default {})"},
                "operation": {"type": "string", "enum": ["job", "heartbeat", "service"]},
                "parent_id": string("the parent run's id or unique prefix"),
                "priority": {"type": "integer", "description": "higher is claimed first (default 0)"},
                "labels": {"type": "array", "items": {"type": "string"},
                           "description": "labels a worker needs to claim the run"},
                "callback_url": string("http://host:port/path to POST the finished run to, signed (the server needs a callback secret)"),
                "queue_timeout": string("how long the run may wait to be claimed each time it is queued (30s, 5m, 1h); nobody claimed it by then: it ends timed_out with reason 'queue timeout: …'"),
                "idempotency_key": string("while a run with this key is live or succeeded, answer it instead of creating another (non-empty)"),
                "dedup": {"type": "boolean", "description": "derive the key from parcel digest + operation + payload"},
                "force": {"type": "boolean", "description": "create a new run even when the key matches one"},
                "session": string("bind the parcel's named session (letters, digits, . _ -); one live run per session, else 409 session_busy"),
                "policy": {"$ref": "#/components/schemas/Policy"}
            }
        },
        "Policy": {
            "type": "object",
            "description": "overrides of the parcel's RETRY / TIMEOUT / LIMIT, like dispatch run's flags; stored with the run and applied by the worker to every attempt",
            "additionalProperties": false,
            "properties": {
                "retries": {"type": "integer", "minimum": 0, "description": "retries after the first attempt (--retries)"},
                "backoff": string("<initial>..<max> between attempts, doubled each retry, with jitter, e.g. 1s..30s (--backoff)"),
                "timeout": string(&format!("time limit of each attempt, {DURATION} (--timeout)")),
                "step_timeout": string(&format!("time limit of each step, {DURATION} (--step-timeout)")),
                "max_tokens": {"type": "integer", "minimum": 1, "description": "stop the run past this many tokens (--max-tokens)"},
                "max_cost": {"type": "number", "exclusiveMinimum": 0, "description": "stop the run past this many US dollars (--max-cost)"}
            }
        },
        "Decision": {
            "type": "object",
            "required": ["decision", "by"],
            "additionalProperties": false,
            "properties": {
                "decision": {"type": "string", "enum": ["approve", "deny"]},
                "by": string("who decides"),
                "rationale": string("why")
            }
        },
        "Replay": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "payload": {"description": "replaces the dead-lettered run's input"}
            }
        },
        "ParcelUpload": {
            "type": "object",
            "required": ["files"],
            "properties": {
                "files": {"type": "object", "additionalProperties": {"type": "string"},
                          "description": "path → text; must include Agentfile"}
            }
        }
    })
}

pub async fn document() -> Json<Value> {
    Json(spec())
}
