//! Upstream Dispatch's directives (instruction files, mounts, advisory
//! metadata, `ADD`, tool timeouts, `USING`) and the local coding-agent CLIs
//! as providers: parsed, and refused by line where they cannot mean anything.

use super::tests::{err, ok};
use crate::parcel::DocumentKind;

/// An upstream-style native agent (`FROM dispatch/native`) followed by `extra`.
fn upstream_with(extra: &str) -> String {
    format!("FROM dispatch/native:latest\nNAME up\nMODEL gpt-5-mini PROVIDER openai\n{extra}\n")
}

#[test]
fn upstream_instruction_files_are_documents_in_agentfile_order() {
    let af = ok(&upstream_with(
        "TOOLS TOOLS.md\nUSER USER.md\nMEMORY POLICY MEMORY.md\nAGENTS AGENTS.md\n\
         HEARTBEAT FILE HEARTBEAT.md\nENTRYPOINT heartbeat",
    ));
    let docs: Vec<(DocumentKind, &str, usize)> = af
        .documents
        .iter()
        .map(|(k, src)| (*k, src.text.as_str(), src.line))
        .collect();
    assert_eq!(
        docs,
        vec![
            (DocumentKind::Tools, "TOOLS.md", 4),
            (DocumentKind::User, "USER.md", 5),
            (DocumentKind::Memory, "MEMORY.md", 6),
            (DocumentKind::Agents, "AGENTS.md", 7),
            (DocumentKind::Heartbeat, "HEARTBEAT.md", 8),
        ]
    );
    // `HEARTBEAT <file>` without FILE means the same.
    let af = ok(&upstream_with("HEARTBEAT beat.md\nENTRYPOINT heartbeat"));
    assert_eq!(af.documents[0].1.text, "beat.md");
}

#[test]
fn upstream_instruction_files_refuse_what_they_cannot_mean() {
    let e = err(&upstream_with("HEARTBEAT FILE HEARTBEAT.md"));
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("ENTRYPOINT heartbeat"), "{e}");
    let e = err(&upstream_with("MEMORY notes.md"));
    assert_eq!(e.line, 4);
    assert!(e.message.contains("MEMORY POLICY"), "{e}");
    let e = err(&upstream_with("USER"));
    assert!(e.message.starts_with("USER expects"), "{e}");
}

#[test]
fn mounts_record_their_drivers_and_refuse_what_dispatch_cannot_back() {
    let af = ok(&upstream_with(
        "MOUNT SESSION sqlite\nMOUNT MEMORY sqlite\nMOUNT ARTIFACTS local",
    ));
    let m = &af.manifest.mounts;
    assert_eq!(m.session.as_deref(), Some("sqlite"));
    assert_eq!(m.memory.as_deref(), Some("sqlite"));
    assert_eq!(m.artifacts.as_deref(), Some("local"));
    for (line, why) in [
        ("MOUNT SESSION postgres", "SESSION"),
        ("MOUNT MEMORY pgvector", "pgvector"),
        ("MOUNT ARTIFACTS s3", "s3"),
        ("MOUNT CACHE redis", "CACHE"),
    ] {
        let e = err(&upstream_with(line));
        assert_eq!(e.line, 4, "{line}: {e}");
        assert!(e.message.contains(why), "{line}: {e}");
    }
    let e = err(&upstream_with("MOUNT SESSION sqlite\nMOUNT SESSION sqlite"));
    assert_eq!(e.line, 5, "{e}");
    // No memory, yet a memory built-in: refused naming the TOOL line.
    let e = err(&upstream_with("MOUNT MEMORY none\nTOOL BUILTIN memory_get"));
    assert_eq!(e.line, 5, "{e}");
    assert!(e.message.contains("MOUNT MEMORY none"), "{e}");
}

#[test]
fn advisory_metadata_is_recorded_and_checked() {
    let af = ok(&upstream_with(
        "VISIBILITY opaque\nROUTING deep\nFRAMEWORK langgraph VERSION 0.2 TARGET python\nCOMPACTION 40 OVERLAP 5",
    ));
    let a = &af.manifest.advisory;
    assert_eq!(a.visibility.as_deref(), Some("opaque"));
    assert_eq!(a.routing.as_deref(), Some("deep"));
    let fw = a.framework.as_ref().expect("framework");
    assert_eq!(
        (
            fw.name.as_str(),
            fw.version.as_deref(),
            fw.target.as_deref()
        ),
        ("langgraph", Some("0.2"), Some("python"))
    );
    let c = a.compaction.as_ref().expect("compaction");
    assert_eq!((c.events, c.overlap), (40, Some(5)));
    for line in ["VISIBILITY secret", "ROUTING slowest", "COMPACTION many"] {
        let e = err(&upstream_with(line));
        assert_eq!(e.line, 4, "{line}: {e}");
    }
}

#[test]
fn add_is_copy_for_local_paths_and_refuses_urls() {
    let af = ok(&upstream_with("ADD data/ data/"));
    let c = af
        .copies
        .iter()
        .find(|c| c.src.trim_end_matches('/') == "data")
        .unwrap_or_else(|| panic!("copied: {:?}", af.copies));
    assert_eq!(c.line, 4);
    let e = err(&upstream_with("ADD https://example.com/x.tar.gz x/"));
    assert_eq!(e.line, 4);
    assert!(e.message.contains("COPY"), "{e}");
}

#[test]
fn timeout_tool_limit_iterations_approval_audit_and_using_are_parsed() {
    let af = ok(&upstream_with(
        "TIMEOUT TOOL 45s\nLIMIT ITERATIONS 12\n\
         TOOL LOCAL tools/fetch.py AS fetch USING python3 -u APPROVAL audit RISK low",
    ));
    let agent = af.manifest.agent.as_ref().expect("agent");
    assert_eq!(agent.tool_timeout_ms, Some(45_000));
    assert_eq!(agent.max_iterations, Some(12));
    let t = &agent.tools[0];
    assert_eq!(t.name, "fetch");
    assert_eq!(t.approval, Some(crate::tool::ApprovalPolicy::Audit));
    match &t.kind {
        crate::tool::ToolKind::Local { program, using } => {
            assert_eq!(program, "tools/fetch.py");
            assert_eq!(using, &vec!["python3".to_string(), "-u".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    for (line, want) in [
        ("LIMIT ITERATIONS 0", "LIMIT ITERATIONS"),
        ("TIMEOUT TOOL soon", "invalid duration `soon`"),
        ("TOOL LOCAL tools/x.py USING", "USING"),
    ] {
        let e = err(&upstream_with(line));
        assert_eq!(e.line, 4, "{line}: {e}");
        assert!(e.message.contains(want), "{line}: {e}");
    }
}

#[test]
fn local_cli_providers_take_upstream_model_options() {
    let af = ok(&upstream_with("").replace(
        "MODEL gpt-5-mini PROVIDER openai",
        "MODEL gpt-5.4 PROVIDER codex --persist-thread=false --reasoning-effort=HIGH --sandbox=read-only",
    ));
    let m = &af.manifest.agent.as_ref().expect("agent").models[0];
    assert_eq!(m.provider, crate::agent::ProviderKind::Codex);
    assert_eq!(m.options.reasoning_effort.as_deref(), Some("high"));
    assert_eq!(m.options.persist_thread, Some(false));
    assert_eq!(m.options.sandbox.as_deref(), Some("read-only"));
    let af = ok(&upstream_with("").replace(
        "MODEL gpt-5-mini PROVIDER openai",
        "MODEL claude-sonnet-4-6 PROVIDER claude --permission-mode=plan --reasoning-effort=max",
    ));
    let m = &af.manifest.agent.as_ref().expect("agent").models[0];
    assert_eq!(m.provider, crate::agent::ProviderKind::Claude);
    assert_eq!(m.options.permission_mode.as_deref(), Some("plan"));
    assert_eq!(m.options.reasoning_effort.as_deref(), Some("max"));
    // Written nowhere else, the options leave the manifest (and old digests) as they were.
    let af = ok(&upstream_with(""));
    let json =
        serde_json::to_value(&af.manifest.agent.as_ref().expect("agent").models[0]).expect("json");
    assert!(json.get("options").is_none(), "{json}");
}

#[test]
fn local_cli_models_refuse_what_cannot_reach_their_loop_naming_the_line() {
    let cli = |model: &str, extra: &str| format!("FROM agent\nNAME a\nMODEL {model}\n{extra}\n");
    for (text, line, want) in [
        (
            cli("gpt-5 PROVIDER codex --effort=high", ""),
            3,
            "unknown model option `--effort`",
        ),
        (
            cli("gpt-5 PROVIDER codex --reasoning-effort=max", ""),
            3,
            "minimal, low, medium, high, xhigh",
        ),
        (
            cli("gpt-5 PROVIDER codex --persist-thread", ""),
            3,
            "needs a value",
        ),
        (
            cli("gpt-4o PROVIDER openai_chat --persist-thread=true", ""),
            3,
            "PROVIDER claude|codex only",
        ),
        (
            cli("claude-sonnet-4-5 PROVIDER claude BASE_URL http://x", ""),
            3,
            "takes no BASE_URL or KEY",
        ),
        (
            cli("claude-sonnet-4-5 PROVIDER claude", "FALLBACK gpt-4o"),
            4,
            "FALLBACK",
        ),
        (
            cli("gpt-4o", "FALLBACK gpt-5 PROVIDER codex"),
            4,
            "FALLBACK",
        ),
        (
            cli(
                "claude-sonnet-4-5 PROVIDER claude",
                "TOOL BUILTIN system_time",
            ),
            4,
            "own tools",
        ),
        (
            cli(
                "claude-sonnet-4-5 PROVIDER claude",
                "LIMIT OUTPUT_TOKENS 100",
            ),
            4,
            "LIMIT OUTPUT_TOKENS",
        ),
        (
            cli("claude-sonnet-4-5 PROVIDER claude", "LIMIT TOOL_ROUNDS 3"),
            4,
            "LIMIT ITERATIONS",
        ),
        (
            cli("gpt-5 PROVIDER codex", "LIMIT ITERATIONS 3"),
            4,
            "LIMIT ITERATIONS cannot",
        ),
    ] {
        let e = err(&text);
        assert_eq!(e.line, line, "{text}: {e}");
        assert!(e.message.contains(want), "{text}: {e}");
    }
    // What does reach it: budgets, tool calls, Claude's turns, the run's timeouts.
    let af = ok(&cli(
        "claude-sonnet-4-5 PROVIDER claude",
        "LIMIT ITERATIONS 5\nLIMIT TOOL_CALLS 9\nLIMIT TOKENS 1000\nTIMEOUT LLM 2m\nREASONING effort low",
    ));
    let agent = af.manifest.agent.as_ref().expect("agent");
    assert_eq!(
        (agent.max_iterations, agent.max_tool_calls),
        (Some(5), Some(9))
    );
}
