//! What makes the OpenAPI document as strict as the server, applied to the
//! generated document as a last pass (see [`super::openapi::spec`]):
//!
//! - path parameters carry the pattern the server checks (a run id or
//!   prefix, a digest, a project or session name), so a generated client
//!   or a contract fuzzer knows what the server refuses with a 400;
//! - every object schema that names its fields refuses others
//!   (`additionalProperties: false`): the request bodies, whose types the
//!   server reads with `deny_unknown_fields` (a 400 names the field), and
//!   the answers, so that the contract test fails on a field an answer
//!   carries but the document does not declare. The few shapes that keep
//!   whatever they are sent are listed in [`OPEN`].

use serde_json::{Map, Value, json};

/// A run's id, a unique prefix of one (1 to 32 hex digits, any case), or a
/// running cluster service's name, which stands for its run (see
/// `runs::resolve` and `check_service_name`): 1 to 64 letters, digits,
/// `-`, `_` or `.`, not starting with `.`.
pub const RUN_REF: &str = "^[0-9A-Za-z_-][0-9A-Za-z._-]{0,63}$";

/// An artifact's SHA-256: 64 hex digits.
pub const SHA256: &str = "^[0-9a-fA-F]{64}$";

/// A project's name (`dispatch_core::project::check_project`).
pub const PROJECT: &str = "^[a-z0-9][a-z0-9_-]{0,62}$";

/// A session's name within its parcel (`check_session_name`).
pub const SESSION: &str = "^[0-9A-Za-z_-][0-9A-Za-z._-]{0,127}$";

/// Component schemas that keep fields they do not name: an eval report is
/// stored as `dispatch eval --format json` printed it; a model call carries
/// its event's own fields, which grow with the providers.
pub const OPEN: &[&str] = &["EvalReport", "ModelCall"];

/// Operations whose body may be left out (the server reads an empty body as
/// `{}`: `runs::optional_body`).
pub const OPTIONAL_BODIES: &[&str] = &[
    "/v1/parcels/prune",
    "/v1/runs/{id}/wake",
    "/v1/dead-letters/{id}/replay",
];

/// The pattern of path parameter `name` of `path`, when the server checks one.
pub fn path_pattern(path: &str, name: &str) -> Option<&'static str> {
    match name {
        "id" if path.starts_with("/v1/runs/") || path.starts_with("/v1/dead-letters/") => {
            Some(RUN_REF)
        }
        "sha256" => Some(SHA256),
        "project" if path.starts_with("/v1/quotas/") => Some(PROJECT),
        "name" if path.starts_with("/v1/sessions/") => Some(SESSION),
        _ => None,
    }
}

/// Applies both rules to the document.
pub fn tighten(doc: &mut Value) {
    let originals = doc["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            let optional = OPTIONAL_BODIES.contains(&path.as_str());
            for op in item.values_mut() {
                if let Some(body) = op.get_mut("requestBody").filter(|_| optional) {
                    body["required"] = Value::Bool(false);
                }
                // (`get_mut`: indexing would add a null `parameters`.)
                let params = op.get_mut("parameters").and_then(Value::as_array_mut);
                for param in params.into_iter().flatten() {
                    let name = param["name"].as_str().unwrap_or_default().to_string();
                    if param["in"] != "path" {
                        continue;
                    }
                    if let Some(pattern) = path_pattern(path, &name) {
                        param["schema"]["pattern"] = json!(pattern);
                    }
                }
                close(op, &originals);
            }
        }
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        for (name, schema) in schemas.iter_mut() {
            if !OPEN.contains(&name.as_str()) {
                close(schema, &originals);
            }
        }
    }
}

/// Sets `additionalProperties: false` on every object in `value` that has
/// `properties` and says nothing of others. A composition (`allOf`: a run
/// and the report's fields) is closed as a whole with
/// `unevaluatedProperties: false`, its parts left open (a part's own
/// `additionalProperties: false` would refuse the other parts' fields): a
/// part that is a component, itself closed where it stands alone, is
/// inlined as it was before closing.
fn close(value: &mut Value, components: &Map<String, Value>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(parts)) = map.get_mut("allOf") {
                for part in parts.iter_mut() {
                    let component = part["$ref"]
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/components/schemas/"))
                        .and_then(|name| components.get(name));
                    if let Some(original) = component {
                        *part = original.clone();
                    }
                    if let Value::Object(part) = part {
                        close_children(part, components);
                    }
                }
                if !map.contains_key("unevaluatedProperties") {
                    map.insert("unevaluatedProperties".into(), Value::Bool(false));
                }
            } else if map.get("properties").is_some_and(Value::is_object)
                && !map.contains_key("additionalProperties")
            {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            close_children(map, components);
        }
        Value::Array(items) => items.iter_mut().for_each(|v| close(v, components)),
        _ => {}
    }
}

/// [`close`] on what `map` holds, not on `map` itself.
fn close_children(map: &mut Map<String, Value>, components: &Map<String, Value>) {
    for (key, child) in map.iter_mut() {
        match key.as_str() {
            // Examples are data, not schemas; the parts are done.
            "example" | "examples" | "allOf" => {}
            // Field names, each with its schema.
            "properties" | "patternProperties" => {
                if let Value::Object(fields) = child {
                    fields.values_mut().for_each(|f| close(f, components));
                }
            }
            _ => close(child, components),
        }
    }
}
