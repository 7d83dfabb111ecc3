//! The built-in tools: `read_file`, `write_file`, `list_files`, confined to
//! the run's working directory (a path that leaves it, through `..`, an
//! absolute path or a symlink, is refused), and `memory_get`, `memory_put`,
//! `memory_list`: a key/value memory in the run database, scoped to the
//! parcel (or the run's session), so every worker sees the same; and the
//! courier tools `send_message` and `handoff`, which record exactly the
//! `message` and `handoff` events a process agent writes to its events file.

use std::path::{Component, Path, PathBuf};

use serde_json::{Value, json};

use super::ToolContext;
use crate::agent_loop::ToolOutcome;

/// The key/value memory behind `memory_*`.
#[async_trait::async_trait]
pub trait Memory: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Value>, String>;
    async fn put(&self, key: &str, value: &Value) -> Result<(), String>;
    /// Keys starting with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, String>;
    /// Removes `key`; whether it was there.
    async fn delete(&self, key: &str) -> Result<bool, String>;
}

/// Where `send_message` and `handoff` go: the run's event log. Each gets
/// the whole checked event (`{"type":"message",…}`, `{"type":"handoff",…}`,
/// as [`dispatch_core::AgentEvent::parse`] leaves it) and answers what the
/// model is told.
#[async_trait::async_trait]
pub trait Messenger: Send + Sync {
    /// Records the `message` event.
    async fn send_message(&self, event: Value) -> Result<String, String>;
    /// Starts the run the handoff asks for and records the `handoff` event.
    async fn handoff(&self, event: Value) -> Result<String, String>;
}

/// The most bytes `read_file` returns.
const MAX_READ: u64 = 16 << 20;
/// The most entries `list_files` returns.
const MAX_ENTRIES: usize = 1000;

/// A built-in's description and arguments schema.
pub(super) fn spec(name: &str) -> Option<(&'static str, Value)> {
    let path = json!({"type": "string", "description": "a path relative to the working directory"});
    let ns = json!({"type": "string", "description": "optional namespace; keys are kept as namespace/key"});
    Some(match name {
        "read_file" => (
            "Reads a text file in the working directory.",
            json!({"type": "object", "properties": {"path": path}, "required": ["path"], "additionalProperties": false}),
        ),
        "write_file" => (
            "Writes (creates or replaces) a text file in the working directory.",
            json!({"type": "object", "properties": {"path": path, "content": {"type": "string"}},
                   "required": ["path", "content"], "additionalProperties": false}),
        ),
        "list_files" => (
            "Lists a directory of the working directory (default: its top).",
            json!({"type": "object", "properties": {"path": path}, "additionalProperties": false}),
        ),
        "memory_get" => (
            "Reads a value from the agent's memory, which lasts across runs.",
            json!({"type": "object", "properties": {"namespace": ns, "key": {"type": "string", "minLength": 1, "maxLength": 256}},
                   "required": ["key"], "additionalProperties": false}),
        ),
        "memory_put" => (
            "Stores a value (any JSON) under a key in the agent's memory, which lasts across runs.",
            json!({"type": "object", "properties": {"namespace": ns, "key": {"type": "string", "minLength": 1, "maxLength": 256}, "value": {}},
                   "required": ["key", "value"], "additionalProperties": false}),
        ),
        "memory_list" => (
            "Lists the keys in the agent's memory (those starting with `prefix`, if given).",
            json!({"type": "object", "properties": {"namespace": ns, "prefix": {"type": "string"}}, "additionalProperties": false}),
        ),
        "send_message" => (
            "Sends a typed message to another agent of the workflow (by name, or __end__, __self__, __prev__, __next__).",
            json!({"type": "object", "properties": {
                    "to": {"type": "string", "minLength": 1, "description": "the receiving agent"},
                    "kind": {"type": "string", "enum": dispatch_core::event::MESSAGE_KINDS, "description": "default RESULT"},
                    "payload": {"description": "any JSON"}},
                   "required": ["to"], "additionalProperties": false}),
        ),
        "handoff" => (
            "Hands off to another agent: starts the built parcel named `parcel` as a new run with `payload` as its input.",
            json!({"type": "object", "properties": {
                    "parcel": {"type": "string", "minLength": 1, "description": "a built parcel's name or digest"},
                    "payload": {"description": "the new run's input (any JSON; default {})"}},
                   "required": ["parcel"], "additionalProperties": false}),
        ),
        other => return super::builtin_state::spec(other),
    })
}

pub(super) async fn run(name: &str, args: &Value, ctx: &ToolContext<'_>) -> ToolOutcome {
    let text = |k: &str| args.get(k).and_then(Value::as_str).unwrap_or_default();
    let result = match name {
        "read_file" => read_file(&ctx.work_dir, text("path")),
        "write_file" => write_file(&ctx.work_dir, text("path"), text("content")),
        "list_files" => list_files(&ctx.work_dir, text("path")),
        "memory_get" | "memory_put" | "memory_list" => {
            let Some(memory) = &ctx.memory else {
                return ToolOutcome::error("error: this run has no memory store");
            };
            let key = super::builtin_state::memory_key(args, text("key"));
            match name {
                "memory_get" => memory.get(&key).await.map(|v| match v {
                    Some(v) => v.to_string(),
                    None => format!("(no value under `{key}`)"),
                }),
                "memory_put" => {
                    let value = args.get("value").cloned().unwrap_or(Value::Null);
                    memory
                        .put(&key, &value)
                        .await
                        .map(|()| format!("stored `{key}`"))
                }
                _ => {
                    let prefix = super::builtin_state::memory_key(args, text("prefix"));
                    memory
                        .list(&prefix)
                        .await
                        .map(|keys| serde_json::to_string(&keys).unwrap_or_default())
                }
            }
        }
        "send_message" | "handoff" => {
            let Some(messenger) = &ctx.messenger else {
                return ToolOutcome::error("error: this run cannot send messages");
            };
            let mut event = args.clone();
            event["type"] = json!(if name == "handoff" {
                "handoff"
            } else {
                "message"
            });
            // Exactly what a process agent's line would be, checked the same way.
            match dispatch_core::AgentEvent::parse(&event.to_string()) {
                dispatch_core::AgentEvent::Known { data, .. } if name == "handoff" => {
                    messenger.handoff(data).await
                }
                dispatch_core::AgentEvent::Known { data, .. } => messenger.send_message(data).await,
                dispatch_core::AgentEvent::Malformed { warning } => Err(warning),
            }
        }
        other => match super::builtin_state::run(other, args, ctx).await {
            Some(result) => result,
            None => Err(format!("there is no built-in tool `{other}`")),
        },
    };
    match result {
        Ok(text) => ToolOutcome::ok(text),
        Err(e) => ToolOutcome::error(format!("error: {e}")),
    }
}

/// `rel` inside `root`, or why not: no absolute paths, no `..` above the
/// root, no symlink out of it.
fn confined(root: &Path, rel: &str) -> Result<PathBuf, String> {
    let rel_path = Path::new(rel);
    let mut depth = 0i32;
    for c in rel_path.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("`{rel}` is outside the working directory"));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "`{rel}` is an absolute path; give a path relative to the working directory"
                ));
            }
        }
    }
    std::fs::create_dir_all(root)
        .map_err(|e| format!("cannot create the working directory: {e}"))?;
    let root = root
        .canonicalize()
        .map_err(|e| format!("cannot resolve the working directory: {e}"))?;
    let path = root.join(rel_path);
    // The deepest existing ancestor must resolve inside the root (symlinks).
    let mut probe = path.clone();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    let real = probe.canonicalize().unwrap_or(probe);
    if !real.starts_with(&root) {
        return Err(format!("`{rel}` leads outside the working directory"));
    }
    Ok(path)
}

fn read_file(root: &Path, rel: &str) -> Result<String, String> {
    let path = confined(root, rel)?;
    let meta = std::fs::metadata(&path).map_err(|e| format!("cannot read `{rel}`: {e}"))?;
    if meta.is_dir() {
        return Err(format!("`{rel}` is a directory (hint: list_files)"));
    }
    let file = std::fs::File::open(&path).map_err(|e| format!("cannot read `{rel}`: {e}"))?;
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_READ), &mut buf)
        .map_err(|e| format!("cannot read `{rel}`: {e}"))?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn write_file(root: &Path, rel: &str, content: &str) -> Result<String, String> {
    if rel.is_empty() {
        return Err("`path` is empty".into());
    }
    let path = confined(root, rel)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create `{rel}`: {e}"))?;
    }
    std::fs::write(&path, content).map_err(|e| format!("cannot write `{rel}`: {e}"))?;
    Ok(format!("wrote {} bytes to `{rel}`", content.len()))
}

fn list_files(root: &Path, rel: &str) -> Result<String, String> {
    let path = confined(root, rel)?;
    let entries = std::fs::read_dir(&path).map_err(|e| format!("cannot list `{rel}`: {e}"))?;
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            match e.file_type().is_ok_and(|t| t.is_dir()) {
                true => format!("{name}/"),
                false => name,
            }
        })
        .collect();
    names.sort();
    let more = names.len().saturating_sub(MAX_ENTRIES);
    names.truncate(MAX_ENTRIES);
    let mut out = names.join("\n");
    if more > 0 {
        out.push_str(&format!("\n… and {more} more"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_working_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("work");
        assert!(write_file(&root, "notes/a.txt", "hello").is_ok());
        assert_eq!(read_file(&root, "notes/a.txt").as_deref(), Ok("hello"));
        assert_eq!(list_files(&root, "").as_deref(), Ok("notes/"));
        for bad in ["../x", "/etc/passwd", "notes/../../x"] {
            assert!(read_file(&root, bad).is_err(), "{bad}");
            assert!(write_file(&root, bad, "x").is_err(), "{bad}");
        }
        std::os::unix::fs::symlink(dir.path(), root.join("out")).expect("symlink");
        let e = write_file(&root, "out/escape.txt", "x").expect_err("through a symlink");
        assert!(e.contains("outside"), "{e}");
        assert!(!dir.path().join("escape.txt").exists());
    }
}
