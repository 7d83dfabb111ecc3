//! A native agent's tools at build time: each `SCHEMA` file is read from the
//! build context, checked to be a JSON Schema for an object (the arguments
//! of a call), and kept in the manifest, so the parcel's digest covers it.

use std::path::Path;

use serde_json::Value;

use crate::agentfile::{Agentfile, AgentfileError};

/// The largest schema file taken.
const MAX_SCHEMA_BYTES: u64 = 1 << 20;

/// Reads and checks every tool's SCHEMA file under `ctx`.
pub(crate) fn load_schemas(af: &mut Agentfile, ctx: &Path) -> Result<(), AgentfileError> {
    let Some(agent) = af.manifest.agent.as_mut() else {
        return Ok(());
    };
    for tool in &mut agent.tools {
        let Some(file) = tool.schema_file.clone() else {
            continue;
        };
        let fail = |why: String| {
            AgentfileError::new(
                tool.line,
                format!(
                    "TOOL {}: SCHEMA {}: {why}",
                    tool.name,
                    crate::event::shorten(&file, 200)
                ),
            )
        };
        let path = ctx.join(&file);
        let inside = path
            .canonicalize()
            .map_err(|e| fail(format!("cannot be read: {e} (hint: paths are relative to the directory that holds the Agentfile)")))?;
        if !inside.starts_with(ctx) {
            return Err(fail("is outside the build context".into()));
        }
        let size = inside.metadata().map(|m| m.len()).unwrap_or(0);
        if size > MAX_SCHEMA_BYTES {
            return Err(fail(format!(
                "is {size} bytes; a schema may have at most {MAX_SCHEMA_BYTES}"
            )));
        }
        let text = std::fs::read(&inside).map_err(|e| fail(format!("cannot be read: {e}")))?;
        let schema: Value =
            serde_json::from_slice(&text).map_err(|e| fail(format!("is not valid JSON: {e}")))?;
        check_schema(&schema).map_err(fail)?;
        tool.schema = Some(schema);
    }
    Ok(())
}

/// A tool's arguments schema: a valid JSON Schema describing an object.
pub fn check_schema(schema: &Value) -> Result<(), String> {
    if let Err(e) = jsonschema::meta::validate(schema) {
        return Err(format!(
            "is not a valid JSON Schema: {} (at {})",
            crate::event::shorten(&e.to_string(), 300),
            e.instance_path()
        ));
    }
    if jsonschema::validator_for(schema).is_err() {
        return Err("is not a JSON Schema this version can compile".into());
    }
    match schema.get("type") {
        Some(Value::String(t)) if t == "object" => Ok(()),
        _ => Err(
            "must describe an object, the arguments of a call (hint: `{\"type\": \"object\", \"properties\": {…}}`)"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tool::ToolKind;
    use serde_json::json;

    /// Builds an Agentfile with `files` in a fresh context.
    fn build(agentfile: &str, files: &[(&str, &str)]) -> Result<crate::parcel::Parcel, String> {
        let ctx = tempfile::tempdir().expect("tempdir");
        std::fs::write(ctx.path().join("Agentfile"), agentfile).expect("Agentfile");
        for (name, text) in files {
            let path = ctx.path().join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
            std::fs::write(path, text).expect("file");
        }
        let root = tempfile::tempdir().expect("tempdir");
        crate::parcel::build(ctx.path(), root.path()).map_err(|e| e.to_string())
    }

    const HEAD: &str = "FROM agent\nNAME support\nMODEL gpt-4o-mini\n";

    #[test]
    fn a_local_tool_brings_its_program_and_schema_into_the_parcel() {
        let af = format!(
            "{HEAD}TOOL LOCAL tools/lookup.sh AS lookup SCHEMA schemas/order.json DESCRIPTION \"Find an order\"\nLIMIT TOOL_CALLS 5\nLIMIT TOOL_OUTPUT 8KB\n"
        );
        let schema = r#"{"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]}"#;
        let p = build(
            &af,
            &[
                ("tools/lookup.sh", "echo ok\n"),
                ("schemas/order.json", schema),
            ],
        )
        .expect("builds");
        let agent = p.manifest.agent.as_ref().expect("agent");
        let tool = &agent.tools[0];
        assert_eq!(tool.name, "lookup");
        assert_eq!(tool.description.as_deref(), Some("Find an order"));
        assert_eq!(
            tool.schema.as_ref().expect("schema")["required"],
            json!(["order"])
        );
        assert!(
            matches!(&tool.kind, ToolKind::Local { program, .. } if program == "tools/lookup.sh")
        );
        assert!(p.manifest.files.iter().any(|f| f.path == "tools/lookup.sh"));
        assert_eq!(
            (agent.max_tool_calls, agent.max_tool_output_bytes),
            (Some(5), Some(8192))
        );
    }

    #[test]
    fn bad_tools_fail_the_build_with_their_line() {
        let schema = r#"{"type": "object"}"#;
        for (extra, files, needle) in [
            ("TOOL LOCAL tools/missing.sh\n", vec![], "tools/missing.sh"),
            (
                "TOOL LOCAL a.sh SCHEMA nope.json\n",
                vec![("a.sh", "echo\n")],
                "line 4",
            ),
            (
                "TOOL LOCAL a.sh SCHEMA s.json\n",
                vec![("a.sh", "echo\n"), ("s.json", "{not json")],
                "not valid JSON",
            ),
            (
                "TOOL LOCAL a.sh SCHEMA s.json\n",
                vec![("a.sh", "echo\n"), ("s.json", r#"{"type": "objekt"}"#)],
                "not a valid JSON Schema",
            ),
            (
                "TOOL LOCAL a.sh\nTOOL HTTP a POST http://127.0.0.1:1/x\n",
                vec![("a.sh", "echo\n")],
                "declared twice",
            ),
            (
                "TOOL HTTP refund POST http://127.0.0.1:1/x HEADER Authorization=TOKEN\n",
                vec![],
                "not a declared SECRET",
            ),
            ("TOOL MCP files\n", vec![], "COMMAND"),
        ] {
            let mut all = files.clone();
            all.push(("s2.json", schema));
            let e = build(&format!("{HEAD}{extra}"), &all).expect_err(extra);
            assert!(e.contains(needle), "{extra}: {e}");
        }
        let e = build(
            "FROM process\nNAME p\nCOMMAND true\nTOOL BUILTIN read_file\n",
            &[],
        )
        .expect_err("TOOL without FROM agent");
        assert!(e.contains("native agents"), "{e}");
    }

    #[test]
    fn a_schema_must_be_valid_and_describe_an_object() {
        assert!(
            check_schema(&json!({"type": "object", "properties": {"id": {"type": "string"}}}))
                .is_ok()
        );
        let e = check_schema(&json!({"type": "objekt"})).expect_err("bad type");
        assert!(e.contains("not a valid JSON Schema"), "{e}");
        let e = check_schema(&json!({"type": "string"})).expect_err("not an object");
        assert!(e.contains("must describe an object"), "{e}");
        let e =
            check_schema(&json!({"type": "object", "minProperties": -1})).expect_err("bad keyword");
        assert!(e.contains("not a valid JSON Schema"), "{e}");
    }
}
