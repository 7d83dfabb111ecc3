//! The directives of upstream Dispatch's Agentfile that are not our own
//! (see `docs/agentfile-compat.md`):
//!
//! - instruction files: `USER <file>`, `TOOLS <file>`, `MEMORY POLICY
//!   <file>`, `HEARTBEAT [FILE] <file>` (needs `ENTRYPOINT heartbeat`), and
//!   `AGENTS <file>` outside workflows;
//! - state mounts: `MOUNT SESSION|MEMORY|ARTIFACTS <driver>`;
//! - advisory metadata: `VISIBILITY open|opaque`, `ROUTING
//!   balanced|deep|fast`, `FRAMEWORK <name> [VERSION v] [TARGET t]`,
//!   `COMPACTION <n> [OVERLAP m]`;
//! - directives refused with their reason (`Parse::Refused` in the registry).

use super::lex::{expected, positive, unquote, usage};
use super::{Agentfile, AgentfileError, TextSource};
use crate::parcel::DocumentKind;
use crate::parcel_meta::{Advisory, Compaction, Framework, MOUNT_DRIVERS, Mounts};
use crate::state::Operation;

/// An instruction file of `kind` named by `arg` (the line of `key`).
fn document(
    kind: DocumentKind,
    key: &str,
    line: usize,
    arg: &str,
) -> Result<(DocumentKind, TextSource), String> {
    let (text, quoted) = unquote(arg);
    if text.trim().is_empty() {
        return Err(usage(key));
    }
    Ok((kind, TextSource { text, quoted, line }))
}

/// `USER <file>`.
pub(super) fn user(line: usize, rest: &str) -> Result<(DocumentKind, TextSource), String> {
    document(DocumentKind::User, "USER", line, rest)
}

/// `TOOLS <file>`.
pub(super) fn tools(line: usize, rest: &str) -> Result<(DocumentKind, TextSource), String> {
    document(DocumentKind::Tools, "TOOLS", line, rest)
}

/// `MEMORY POLICY <file>`.
pub(super) fn memory(line: usize, rest: &str) -> Result<(DocumentKind, TextSource), String> {
    let (word, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    if !word.eq_ignore_ascii_case("POLICY") {
        return Err(format!(
            "MEMORY expects `POLICY <file>`, got `{rest}` (hint: `MEMORY POLICY MEMORY.md`; the memory itself is `MOUNT MEMORY sqlite` with the memory_* built-ins)"
        ));
    }
    document(DocumentKind::Memory, "MEMORY", line, arg.trim())
}

/// `HEARTBEAT [FILE] <file>`.
pub(super) fn heartbeat(line: usize, rest: &str) -> Result<(DocumentKind, TextSource), String> {
    let (word, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let arg = if word.eq_ignore_ascii_case("FILE") {
        arg.trim()
    } else {
        rest
    };
    document(DocumentKind::Heartbeat, "HEARTBEAT", line, arg)
}

/// `MOUNT SESSION|MEMORY|ARTIFACTS <driver>` into `mounts`; the mount's key
/// for the once-only check.
pub(super) fn mount(
    mounts: &mut Mounts,
    rest: &str,
    args: &[String],
) -> Result<&'static str, String> {
    let [kind, driver] = args else {
        return Err(expected("MOUNT", rest));
    };
    let kind = kind.to_ascii_uppercase();
    let Some((name, drivers, why)) = MOUNT_DRIVERS.iter().find(|(k, _, _)| *k == kind) else {
        return Err(format!(
            "MOUNT: unknown mount `{kind}` (hint: MOUNT SESSION sqlite, MOUNT MEMORY sqlite|none or MOUNT ARTIFACTS local)"
        ));
    };
    let driver = driver.to_ascii_lowercase();
    if !drivers.contains(&driver.as_str()) {
        return Err(format!(
            "MOUNT {name} {driver} is not supported: {why} (hint: MOUNT {name} {})",
            drivers.join("|")
        ));
    }
    let (slot, key) = match *name {
        "SESSION" => (&mut mounts.session, "MOUNT SESSION"),
        "MEMORY" => (&mut mounts.memory, "MOUNT MEMORY"),
        _ => (&mut mounts.artifacts, "MOUNT ARTIFACTS"),
    };
    *slot = Some(driver);
    Ok(key)
}

/// `key`'s one argument, one of `allowed` (lower case).
fn choice(key: &str, rest: &str, args: &[String], allowed: &[&str]) -> Result<String, String> {
    match args {
        [one] if allowed.contains(&one.to_ascii_lowercase().as_str()) => {
            Ok(one.to_ascii_lowercase())
        }
        _ => Err(format!(
            "{key} expects one of {}, got `{rest}` (hint: `{key} {}`)",
            allowed.join(", "),
            allowed[0]
        )),
    }
}

/// `VISIBILITY open|opaque` (advisory).
pub(super) fn visibility(a: &mut Advisory, rest: &str, args: &[String]) -> Result<(), String> {
    a.visibility = Some(choice("VISIBILITY", rest, args, &["open", "opaque"])?);
    Ok(())
}

/// `ROUTING balanced|deep|fast` (advisory).
pub(super) fn routing(a: &mut Advisory, rest: &str, args: &[String]) -> Result<(), String> {
    a.routing = Some(choice(
        "ROUTING",
        rest,
        args,
        &["balanced", "deep", "fast"],
    )?);
    Ok(())
}

/// `FRAMEWORK <name> [VERSION v] [TARGET t]` (advisory).
pub(super) fn framework(a: &mut Advisory, rest: &str, args: &[String]) -> Result<(), String> {
    let hint = "(hint: `FRAMEWORK adk-rust VERSION 0.5.0 TARGET wasm`)";
    let Some((name, mut opts)) = args.split_first() else {
        return Err(expected("FRAMEWORK", rest));
    };
    let mut f = Framework {
        name: name.clone(),
        version: None,
        target: None,
    };
    while let [word, value, more @ ..] = opts {
        let slot = match word.to_ascii_uppercase().as_str() {
            "VERSION" => &mut f.version,
            "TARGET" => &mut f.target,
            _ => return Err(format!("FRAMEWORK: unexpected `{word}` {hint}")),
        };
        if slot.replace(value.clone()).is_some() {
            return Err(format!("FRAMEWORK sets {word} twice {hint}"));
        }
        opts = more;
    }
    if let [dangling] = opts {
        return Err(format!("FRAMEWORK: `{dangling}` needs a value {hint}"));
    }
    a.framework = Some(f);
    Ok(())
}

/// `COMPACTION <n> [OVERLAP m]` (advisory).
pub(super) fn compaction(a: &mut Advisory, args: &[String]) -> Result<(), String> {
    let hint = "(hint: `COMPACTION 200` or `COMPACTION 200 OVERLAP 32`)";
    let (events, overlap) = match args {
        [n] => (n, None),
        [n, w, m] if w.eq_ignore_ascii_case("OVERLAP") => (n, Some(m)),
        _ => return Err(format!("COMPACTION expects a number of events {hint}")),
    };
    let events = positive(events, "COMPACTION")?;
    let overlap = overlap
        .map(|m| {
            m.parse::<u64>()
                .ok()
                .filter(|m| *m < events)
                .ok_or_else(|| {
                    format!(
                        "COMPACTION OVERLAP must be a whole number below {events}, got `{m}` {hint}"
                    )
                })
        })
        .transpose()?;
    a.compaction = Some(Compaction { events, overlap });
    Ok(())
}

/// `NETWORK publishers-only`: a policy naming upstream's publishers, which
/// Dispatch has no list of, refused with what to do instead.
pub(super) fn refuse_network(args: &[String]) -> Result<(), String> {
    match args.first().map(|a| a.to_ascii_lowercase()).as_deref() {
        Some("publishers-only") => Err(
            "NETWORK publishers-only is not enforced by Dispatch (hint: list the hosts with `NETWORK allow <host>` lines)"
                .into(),
        ),
        _ => Ok(()),
    }
}

/// `HEARTBEAT` needs `ENTRYPOINT heartbeat`; `MOUNT MEMORY none` takes no
/// `memory_*` built-in (its line is `memory_tool_line`).
pub(super) fn check(af: &Agentfile, memory_tool_line: Option<usize>) -> Result<(), AgentfileError> {
    let m = &af.manifest;
    if let Some((_, src)) = af
        .documents
        .iter()
        .find(|(k, _)| *k == DocumentKind::Heartbeat)
        && m.entrypoint != Operation::Heartbeat
    {
        return Err(AgentfileError::new(
            src.line,
            "HEARTBEAT needs `ENTRYPOINT heartbeat` (hint: add `ENTRYPOINT heartbeat`; `dispatch serve` then wakes the agent on its SCHEDULE or --interval)",
        ));
    }
    let tools = m.agent.as_ref().map(|a| a.tools.as_slice()).unwrap_or(&[]);
    if m.tool_sandbox.is_some()
        && let Some(t) = tools.iter().find(
            |t| matches!(&t.kind, crate::tool::ToolKind::Local { using, .. } if !using.is_empty()),
        )
    {
        return Err(AgentfileError::new(
            t.line,
            format!(
                "TOOL LOCAL {}: USING is not supported with TOOL_SANDBOX (hint: make the program executable with a `#!` line instead)",
                t.name
            ),
        ));
    }
    if let Some(line) = memory_tool_line
        && !m.mounts.has_memory()
    {
        return Err(AgentfileError::new(
            line,
            "the memory_* built-ins need a memory store, but `MOUNT MEMORY none` declares none (hint: `MOUNT MEMORY sqlite`, or remove the memory_* built-ins)",
        ));
    }
    Ok(())
}
