//! Secrets that stay secret, from the real binary: each leak the security
//! review measured, run for real and shown to do no harm. A secret value is
//! looked for in every byte under `.dispatch/` (the run's log, terminal
//! snapshot, output and events files, model calls, the SQLite database and
//! its journal), in what `dispatch` printed, in `inspect-run`, and in the
//! request bodies the scripted mock model server received. A model's KEY
//! reaches no tool process; a secret scoped `TO` a tool reaches that tool
//! only, and what it prints of it is masked before the model sees it.
//!
//! The MCP server is the fixture program `dispatch-mcp-fixture` (a binary of
//! `dispatch-agent`) started through a shell line that first writes its
//! environment to a file outside the state directory.

use crate::common;
use crate::native_common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::Dispatch;
use native_common::{Mock, events_of, native_agent, text};
use serde_json::{Value, json};

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => {
                    let bytes = std::fs::read(&path).unwrap_or_default();
                    if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                        found.push(path);
                    }
                }
                _ => {}
            }
        }
    }
    found
}

/// Asserts `secret` is nowhere: not under `.dispatch/`, not in what the
/// command printed, not in `inspect-run` (JSON and text).
fn nowhere(d: &Dispatch, id: &str, out: &Output, secret: &str) {
    let files = files_containing(&d.root(), secret);
    assert!(files.is_empty(), "{secret} in clear in {files:?}");
    for (what, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(secret), "{secret} printed on {what}: {text}");
    }
    let json = d.ok(&["inspect-run", id, "--format", "json"]);
    assert!(!json.contains(secret), "{json}");
    let plain = d.ok(&["inspect-run", id]);
    assert!(!plain.contains(secret), "{plain}");
}

fn only_run(d: &Dispatch, out: &Output) -> String {
    let ids = d.ok(&["ps", "-a", "-q"]);
    ids.lines()
        .next()
        .unwrap_or_else(|| panic!("a run: {}", String::from_utf8_lossy(&out.stderr)))
        .to_string()
}

fn mcp_fixture() -> PathBuf {
    dispatch_test_support::mock::mcp::fixture_program()
}

#[test]
fn a_provider_error_that_quotes_the_key_is_stored_and_printed_masked() {
    let d = Dispatch::new();
    let key = "sk-test-QuotedBackByTheProvider-7f3a9c";
    let mock = Mock::start(json!([
        {"kind": "error", "status": 401, "message": "Incorrect API key provided: {api_key}."},
    ]));
    let dir = native_agent(
        d.dir.path(),
        "keyed",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {} KEY OPENAI_API_KEY\nSECRET OPENAI_API_KEY",
            mock.url()
        ),
    );
    let out = d
        .command()
        .args(["run", dir.to_str().expect("utf-8"), "--job", "{}"])
        .env("OPENAI_API_KEY", key)
        .output()
        .expect("dispatch run");
    let id = only_run(&d, &out);
    let doc = d.inspect(&id);
    assert_eq!(doc["status"], "failed", "{doc:#}");
    let reason = doc["state"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("Incorrect API key provided: ****"),
        "the reason says what went wrong, key masked: {reason}"
    );
    // The provider did get the key, in its header only.
    let got = mock.requests();
    let auth = got[0].headers.iter().find(|(k, _)| k == "authorization");
    assert_eq!(
        auth.map(|(_, v)| v.as_str()),
        Some(&*format!("Bearer {key}"))
    );
    assert!(!got[0].body.to_string().contains(key));
    nowhere(&d, &id, &out, key);
}

#[test]
fn a_secret_the_agent_prints_or_outputs_is_in_no_file() {
    let d = Dispatch::new();
    let token = "tok-AgentWritesIt-41c2\"quoted";
    let dir = d.agent_with(
        "leaky",
        r#"echo "stdout has $TOKEN"
echo "stderr has $TOKEN" >&2
printf '{"type":"step","name":"%s","phase":"start"}\n' "$(printf '%s' "$TOKEN" | sed 's/"/\\"/g')" >> "$DISPATCH_EVENTS"
printf '{"token":"%s","note":"kept"}' "$(printf '%s' "$TOKEN" | sed 's/"/\\"/g')" > "$DISPATCH_OUTPUT"
"#,
        "SECRET TOKEN",
    );
    let out = d
        .command()
        .args(["run", dir.to_str().expect("utf-8"), "--job", "{}"])
        .env("TOKEN", token)
        .output()
        .expect("dispatch run");
    let id = only_run(&d, &out);
    let doc = d.inspect(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(doc["output"], json!({"token": "****", "note": "kept"}));
    let kept = d.root().join("runs").join(&id).join("output.json");
    let kept: Value =
        serde_json::from_slice(&std::fs::read(&kept).expect("output.json stays")).expect("JSON");
    assert_eq!(kept["token"], "****", "output.json is masked in place");
    let log = std::fs::read_to_string(d.root().join("runs").join(format!("{id}.log")))
        .expect("the run's log");
    assert!(log.contains("stdout has ****"), "{log}");
    nowhere(&d, &id, &out, token);
}

#[test]
fn a_failing_agent_s_error_with_a_secret_is_a_masked_reason() {
    let d = Dispatch::new();
    let token = "tok-InTheReason-93be";
    let dir = d.agent_with(
        "fails",
        r#"printf '{"type":"error","message":"login refused for %s","retryable":false}\n' "$TOKEN" >> "$DISPATCH_EVENTS"
exit 3
"#,
        "SECRET TOKEN",
    );
    let out = d
        .command()
        .args(["run", dir.to_str().expect("utf-8"), "--job", "{}"])
        .env("TOKEN", token)
        .output()
        .expect("dispatch run");
    let id = only_run(&d, &out);
    let doc = d.inspect(&id);
    assert_eq!(doc["status"], "failed", "{doc:#}");
    assert_eq!(doc["state"]["reason"], "login refused for ****");
    nowhere(&d, &id, &out, token);
}

#[test]
fn a_models_key_reaches_no_tool_and_a_scoped_secret_only_its_own() {
    let d = Dispatch::new();
    let (key, probe, mcp) = (
        "sk-test-ModelOnly-c0ffee",
        "probe-ScopedToProbe-1234",
        "mcp-ScopedToDemo-5678",
    );
    let mock = Mock::start(json!([
        {"kind": "tool_calls", "calls": [
            {"name": "probe", "arguments": {}, "id": "c0"},
            {"name": "echo", "arguments": {"text": "hello"}, "id": "c1"},
        ]},
        text("done", 5, 5),
    ]));
    let mcp_env = d.dir.path().join("mcp-env.txt");
    let dir = native_agent(
        d.dir.path(),
        "scoped",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {} KEY OPENAI_API_KEY\n\
             SECRET OPENAI_API_KEY\nSECRET PROBE_TOKEN TO probe\nSECRET MCP_TOKEN TO demo\n\
             TOOL LOCAL tools/probe.sh AS probe\n\
             TOOL MCP demo COMMAND \"env > '{}'; exec '{}'\" ALLOW echo",
            mock.url(),
            mcp_env.display(),
            mcp_fixture().display()
        ),
    );
    std::fs::create_dir_all(dir.join("tools")).expect("tools");
    std::fs::write(dir.join("tools/probe.sh"), "env\n").expect("probe");
    let out = d
        .command()
        .args(["run", dir.to_str().expect("utf-8"), "--job", "{}"])
        .env("OPENAI_API_KEY", key)
        .env("PROBE_TOKEN", probe)
        .env("MCP_TOKEN", mcp)
        .output()
        .expect("dispatch run");
    let id = only_run(&d, &out);
    let doc = d.inspect(&id);
    assert_eq!(
        doc["status"],
        "succeeded",
        "{doc:#} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The LOCAL tool had its own secret (masked in what it printed) and no other.
    let calls = events_of(&doc, "tool_call");
    let printed = calls[0]["output"].as_str().expect("probe's output");
    assert!(printed.contains("PROBE_TOKEN=****"), "{printed}");
    assert!(!printed.contains("OPENAI_API_KEY"), "{printed}");
    assert!(!printed.contains("MCP_TOKEN"), "{printed}");
    // The MCP server had its own secret and no other.
    let server_env = std::fs::read_to_string(&mcp_env).expect("the server wrote its environment");
    assert!(
        server_env.contains(&format!("MCP_TOKEN={mcp}")),
        "{server_env}"
    );
    assert!(!server_env.contains("OPENAI_API_KEY"), "{server_env}");
    assert!(!server_env.contains("PROBE_TOKEN"), "{server_env}");
    // What the model was sent holds the tool's output, masked.
    let bodies: Vec<String> = mock.requests().iter().map(|r| r.body.to_string()).collect();
    assert!(bodies[1].contains("PROBE_TOKEN=****"), "{}", bodies[1]);
    for secret in [key, probe, mcp] {
        assert!(
            bodies.iter().all(|b| !b.contains(secret)),
            "{secret} sent to the model"
        );
        nowhere(&d, &id, &out, secret);
    }
}

#[test]
fn a_model_without_key_takes_the_conventional_variable_and_never_stores_it() {
    let d = Dispatch::new();
    let key = "sk-test-Conventional-ab12";
    let mock = Mock::start(json!([text("fine", 3, 1)]));
    let dir = native_agent(
        d.dir.path(),
        "conventional",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}",
            mock.url()
        ),
    );
    let out = d
        .command()
        .args(["run", dir.to_str().expect("utf-8"), "--job", "{}"])
        .env("OPENAI_API_KEY", key)
        .output()
        .expect("dispatch run");
    let id = only_run(&d, &out);
    assert_eq!(d.inspect(&id)["status"], "succeeded");
    let got = mock.requests();
    let auth = got[0].headers.iter().find(|(k, _)| k == "authorization");
    assert_eq!(
        auth.map(|(_, v)| v.as_str()),
        Some(&*format!("Bearer {key}"))
    );
    nowhere(&d, &id, &out, key);
}

#[test]
fn a_secret_scoped_to_a_tool_that_does_not_exist_fails_the_build_naming_its_line() {
    let d = Dispatch::new();
    let dir = native_agent(
        d.dir.path(),
        "typo",
        "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL http://127.0.0.1:9/v1\n\
         SECRET GH_TOKEN TO githb\nTOOL BUILTIN read_file",
    );
    let out = d.run(&["build", dir.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("`githb`, which is not a TOOL"), "{err}");
}
