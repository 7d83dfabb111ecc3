//! The built-ins upstream Dispatch's Agentfiles name, beyond our own:
//!
//! - `memory_delete`, `memory_list_range`, `memory_delete_range`,
//!   `memory_put_many`: more of the key/value memory behind `memory_*` (each
//!   memory tool takes an optional `namespace`: keys are then `namespace/key`);
//! - `checkpoint_put`, `checkpoint_get`, `checkpoint_list`,
//!   `checkpoint_delete`: named checkpoints, a second key/value store scoped
//!   like the memory (the run's session, else its parcel);
//! - `system_time`: the current time, UTC;
//! - `human_approval`: asks a person (the call always waits for a decision,
//!   through the run's approvals; a denial is what the model is told);
//! - `read_skill_file`: reads a file of the parcel (an Agent Skills bundle's
//!   scripts, references and assets), confined to the parcel's files.

use serde_json::{Value, json};

use super::ToolContext;
use super::builtin::Memory;

/// The most entries a range call returns or deletes.
const MAX_RANGE: usize = 1000;
/// The most bytes `read_skill_file` returns.
const MAX_SKILL_READ: u64 = 1 << 20;

fn ns() -> Value {
    json!({"type": "string", "description": "optional namespace; keys are kept as namespace/key"})
}

/// A built-in's description and arguments schema.
pub(super) fn spec(name: &str) -> Option<(&'static str, Value)> {
    let key = json!({"type": "string", "minLength": 1, "maxLength": 256});
    let checkpoint = json!({"type": "string", "minLength": 1, "maxLength": 256});
    Some(match name {
        "memory_delete" => (
            "Deletes a key from the agent's memory.",
            json!({"type": "object", "properties": {"namespace": ns(), "key": key}, "required": ["key"], "additionalProperties": false}),
        ),
        "memory_list_range" => (
            "Lists the keys and values of the agent's memory from `start_key` (inclusive) to `end_key` (exclusive), in key order.",
            json!({"type": "object", "properties": {"namespace": ns(), "start_key": {"type": "string"}, "end_key": {"type": "string"},
                   "limit": {"type": "integer", "minimum": 1}}, "additionalProperties": false}),
        ),
        "memory_delete_range" => (
            "Deletes the keys of the agent's memory from `start_key` (inclusive) to `end_key` (exclusive).",
            json!({"type": "object", "properties": {"namespace": ns(), "start_key": {"type": "string"}, "end_key": {"type": "string"}},
                   "additionalProperties": false}),
        ),
        "memory_put_many" => (
            "Stores several values in the agent's memory in one call.",
            json!({"type": "object", "properties": {"namespace": ns(), "entries": {"type": "array", "items": {
                    "type": "object", "properties": {"key": key, "value": {}}, "required": ["key", "value"], "additionalProperties": false}}},
                   "required": ["entries"], "additionalProperties": false}),
        ),
        "checkpoint_put" => (
            "Stores a named checkpoint (any JSON) that lasts across runs of this session.",
            json!({"type": "object", "properties": {"name": checkpoint, "value": {}}, "required": ["name", "value"], "additionalProperties": false}),
        ),
        "checkpoint_get" => (
            "Reads a named checkpoint.",
            json!({"type": "object", "properties": {"name": checkpoint}, "required": ["name"], "additionalProperties": false}),
        ),
        "checkpoint_list" => (
            "Lists the names of the checkpoints (those starting with `prefix`, if given).",
            json!({"type": "object", "properties": {"prefix": {"type": "string"}}, "additionalProperties": false}),
        ),
        "checkpoint_delete" => (
            "Deletes a named checkpoint.",
            json!({"type": "object", "properties": {"name": checkpoint}, "required": ["name"], "additionalProperties": false}),
        ),
        "system_time" => (
            "Returns the current date and time (UTC, RFC 3339) and the Unix time in milliseconds.",
            json!({"type": "object", "properties": {}, "additionalProperties": false}),
        ),
        "human_approval" => (
            "Asks a person to approve something before you go on. Say what and why in `summary`. The answer is the decision.",
            json!({"type": "object", "properties": {"summary": {"type": "string", "minLength": 1}, "details": {}},
                   "required": ["summary"], "additionalProperties": false}),
        ),
        "read_skill_file" => (
            "Reads a file of a skill bundle (its scripts, references, assets) by its path in the parcel, e.g. `skills/my-skill/references/guide.md`.",
            json!({"type": "object", "properties": {"path": {"type": "string", "minLength": 1}}, "required": ["path"], "additionalProperties": false}),
        ),
        _ => return None,
    })
}

/// Runs one of these built-ins; `None` when `name` is not one of them.
pub(super) async fn run(
    name: &str,
    args: &Value,
    ctx: &ToolContext<'_>,
) -> Option<Result<String, String>> {
    let text = |k: &str| args.get(k).and_then(Value::as_str).unwrap_or_default();
    Some(match name {
        "system_time" => {
            let now = dispatch_core::time::now_ms();
            let utc = dispatch_core::time::format_rfc3339(now).unwrap_or_default();
            Ok(json!({"utc": utc, "unix_ms": now}).to_string())
        }
        "human_approval" => {
            // Reached only once a person approved the call (see ToolDecl::approval).
            Ok(json!({"decision": "approve", "summary": text("summary")}).to_string())
        }
        "read_skill_file" => read_parcel_file(ctx, text("path")),
        "checkpoint_put" | "checkpoint_get" | "checkpoint_list" | "checkpoint_delete" => {
            let Some(store) = ctx.checkpoints else {
                return Some(Err("this run has no checkpoint store".into()));
            };
            checkpoint(store, name, args).await
        }
        "memory_delete" | "memory_list_range" | "memory_delete_range" | "memory_put_many" => {
            let Some(memory) = ctx.memory else {
                return Some(Err("this run has no memory store".into()));
            };
            memory_more(memory, name, args).await
        }
        _ => return None,
    })
}

/// The memory key for `key`, with the call's `namespace` when it gives one.
pub(super) fn memory_key(args: &Value, key: &str) -> String {
    match args.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != "default" => format!("{ns}/{key}"),
        _ => key.to_string(),
    }
}

async fn memory_more(memory: &dyn Memory, name: &str, args: &Value) -> Result<String, String> {
    let text = |k: &str| args.get(k).and_then(Value::as_str).unwrap_or_default();
    match name {
        "memory_delete" => {
            let key = memory_key(args, text("key"));
            match memory.delete(&key).await? {
                true => Ok(format!("deleted `{key}`")),
                false => Ok(format!("(no value under `{key}`)")),
            }
        }
        "memory_put_many" => {
            let entries = args
                .get("entries")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for e in &entries {
                let key = memory_key(
                    args,
                    e.get("key").and_then(Value::as_str).unwrap_or_default(),
                );
                memory
                    .put(&key, e.get("value").unwrap_or(&Value::Null))
                    .await?;
            }
            Ok(format!("stored {} values", entries.len()))
        }
        _ => {
            let base = memory_key(args, "");
            let (start, end) = (text("start_key"), text("end_key"));
            let limit = args
                .get("limit")
                .and_then(Value::as_u64)
                .map_or(MAX_RANGE, |l| (l as usize).min(MAX_RANGE));
            let keys: Vec<String> = memory
                .list(&base)
                .await?
                .into_iter()
                .filter(|k| {
                    let short = &k[base.len()..];
                    short >= start && (end.is_empty() || short < end)
                })
                .take(limit)
                .collect();
            if name == "memory_delete_range" {
                for k in &keys {
                    memory.delete(k).await?;
                }
                return Ok(format!("deleted {} keys", keys.len()));
            }
            let mut out = Vec::new();
            for k in keys {
                let value = memory.get(&k).await?.unwrap_or(Value::Null);
                out.push(json!({"key": k[base.len()..], "value": value}));
            }
            Ok(Value::Array(out).to_string())
        }
    }
}

async fn checkpoint(store: &dyn Memory, name: &str, args: &Value) -> Result<String, String> {
    let id = args.get("name").and_then(Value::as_str).unwrap_or_default();
    match name {
        "checkpoint_put" => {
            let value = args.get("value").cloned().unwrap_or(Value::Null);
            store.put(id, &value).await?;
            Ok(format!("stored checkpoint `{id}`"))
        }
        "checkpoint_get" => Ok(match store.get(id).await? {
            Some(v) => v.to_string(),
            None => format!("(no checkpoint named `{id}`)"),
        }),
        "checkpoint_delete" => Ok(match store.delete(id).await? {
            true => format!("deleted checkpoint `{id}`"),
            false => format!("(no checkpoint named `{id}`)"),
        }),
        _ => {
            let prefix = args
                .get("prefix")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Ok(serde_json::to_string(&store.list(prefix).await?).unwrap_or_default())
        }
    }
}

/// A file of the parcel, by its path under the parcel's files (no `..`, no
/// absolute path, no symlink out).
fn read_parcel_file(ctx: &ToolContext<'_>, rel: &str) -> Result<String, String> {
    let root = ctx
        .parcel_dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve the parcel's files: {e}"))?;
    let rel = rel.trim_start_matches("./");
    if rel.starts_with('/') || rel.split('/').any(|p| p == "..") {
        return Err(format!(
            "`{rel}` is not a path inside the parcel (hint: e.g. `skills/<name>/references/guide.md`)"
        ));
    }
    let path = root
        .join(rel)
        .canonicalize()
        .map_err(|_| format!("`{rel}`: no such file in the parcel"))?;
    if !path.starts_with(&root) {
        return Err(format!("`{rel}` leads outside the parcel"));
    }
    if path.is_dir() {
        let mut names: Vec<String> = std::fs::read_dir(&path)
            .map_err(|e| format!("cannot list `{rel}`: {e}"))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        return Ok(format!(
            "`{rel}` is a directory holding: {}",
            names.join(", ")
        ));
    }
    let file = std::fs::File::open(&path).map_err(|e| format!("cannot read `{rel}`: {e}"))?;
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_SKILL_READ), &mut buf)
        .map_err(|e| format!("cannot read `{rel}`: {e}"))?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
