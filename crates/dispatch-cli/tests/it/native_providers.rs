//! Provider details a user sees, from the binary against the scripted mock
//! model server on loopback (issue #35, item 2): keys from the provider's
//! conventional variable, the provider inferred from the model family (and
//! refused at build when it cannot be), the output-token field of reasoning
//! models, a 200 that is an HTML page, and an answer cut at its output limit.
//! And the local coding-agent CLIs as providers (`PROVIDER claude|codex`),
//! run for real against the fake `claude` and `codex` programs of
//! `tests/fixtures/cli/`, which print those CLIs' headless JSON formats.

use crate::common;
use crate::native_common;

use std::path::{Path, PathBuf};

use common::{Dispatch, alive, eventually};
use native_common::{Mock, events_of, model_calls, native_agent, text};
use serde_json::{Value, json};

/// A `dispatch` command without any model key or `LLM_*` override of the test's environment.
fn clean(d: &Dispatch) -> std::process::Command {
    let mut c = d.command();
    for k in [
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "LLM_API_KEY",
        "LLM_BASE_URL",
        "LLM_MODEL",
    ] {
        c.env_remove(k);
    }
    c
}

fn header(mock: &Mock, i: usize, name: &str) -> Option<String> {
    mock.requests()[i]
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

#[test]
fn a_model_without_key_sends_its_providers_conventional_variable() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([text("hi", 5, 1), text("hi", 5, 1)]));
    for (name, line, var, value) in [
        (
            "oai",
            format!(
                "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}",
                mock.url()
            ),
            "OPENAI_API_KEY",
            "sk-conventional-1",
        ),
        (
            "ant",
            // The SDK's convention: no /v1 on an Anthropic base URL.
            format!(
                "MODEL claude-haiku-4-5 BASE_URL {}",
                mock.url().trim_end_matches("/v1")
            ),
            "ANTHROPIC_API_KEY",
            "sk-ant-conventional-2",
        ),
    ] {
        let dir = native_agent(d.dir.path(), name, &line);
        // Detached: the key is read by the helper that calls the model.
        let out = clean(&d)
            .env(var, value)
            .args(["run", dir.to_str().expect("utf-8"), "--detach"])
            .output()
            .expect("run");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(d.wait_terminal(&id)["status"], "succeeded", "{name}");
    }
    assert_eq!(
        header(&mock, 0, "authorization").as_deref(),
        Some("Bearer sk-conventional-1")
    );
    assert_eq!(mock.requests()[1].path, "/v1/messages");
    assert_eq!(
        header(&mock, 1, "x-api-key").as_deref(),
        Some("sk-ant-conventional-2")
    );
}

#[test]
fn a_missing_key_is_one_line_naming_the_variable_but_a_local_server_needs_none() {
    let d = Dispatch::new();
    let dir = native_agent(d.dir.path(), "keyless", "MODEL gpt-4o-mini");
    let out = clean(&d)
        .args(["run", dir.to_str().expect("utf-8")])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OPENAI_API_KEY is not set"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let mock = Mock::start(json!([text("hi", 5, 1)]));
    let local = native_agent(
        d.dir.path(),
        "local",
        &format!("MODEL llama3.2 BASE_URL {}", mock.url()),
    );
    let out = clean(&d)
        .args(["run", local.to_str().expect("utf-8")])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(header(&mock, 0, "authorization"), None);
}

#[test]
fn a_model_of_no_known_family_is_refused_at_build_naming_its_line() {
    let d = Dispatch::new();
    for (lines, want) in [
        ("MODEL llama3.2", "add `PROVIDER"),
        ("MODEL gpt-4o-mini\nFALLBACK mistral-large", "add `PROVIDER"),
    ] {
        let dir = native_agent(d.dir.path(), "unknown", lines);
        let err = d.fails(&["build", dir.to_str().expect("utf-8")], 125);
        assert!(err.contains(want), "{lines}: {err}");
        let line = 2 + lines.lines().count();
        assert!(err.contains(&format!("line {line}")), "{lines}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn a_reasoning_model_is_sent_max_completion_tokens() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([text("hi", 5, 1)]));
    let dir = native_agent(
        d.dir.path(),
        "thinker",
        &format!(
            "MODEL o4-mini PROVIDER openai_chat BASE_URL {}\nLIMIT OUTPUT_TOKENS 64",
            mock.url()
        ),
    );
    d.ok(&["run", dir.to_str().expect("utf-8")]);
    let body = &mock.requests()[0].body;
    assert_eq!(body["max_completion_tokens"], 64, "{body}");
    assert!(body.get("max_tokens").is_none(), "{body}");
}

#[test]
fn an_html_page_answered_with_200_fails_the_run_naming_url_and_content_type() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([{"kind": "page"}]));
    let dir = native_agent(
        d.dir.path(),
        "portal",
        &format!(
            "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}",
            mock.url()
        ),
    );
    let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(
        reason.contains(&format!("POST {}/chat/completions", mock.url())),
        "{reason}"
    );
    assert!(reason.contains("text/html"), "{reason}");
    assert!(reason.contains("Sign in to Guest Wi-Fi"), "{reason}");
    assert!(!reason.contains("cut"), "{reason}");
}

#[test]
fn an_answer_cut_at_limit_output_tokens_fails_the_run_unless_allowed() {
    let d = Dispatch::new();
    let cut = json!({"kind": "text", "text": "{\"reply\": \"On its", "truncated": true,
                     "usage": {"input_tokens": 10, "output_tokens": 8}});
    let mock = Mock::start(json!([cut.clone(), cut]));
    for (name, allow) in [("strict", ""), ("lenient", " ALLOW_TRUNCATION")] {
        let dir = native_agent(
            d.dir.path(),
            name,
            &format!(
                "MODEL claude-haiku-4-5 PROVIDER anthropic BASE_URL {}\nLIMIT OUTPUT_TOKENS 8{allow}",
                mock.url()
            ),
        );
        let id = d.ok(&["run", dir.to_str().expect("utf-8"), "--detach"]);
        let doc = d.wait_terminal(&id);
        let call = &model_calls(&doc)[0];
        assert_eq!(call["finish_reason"], "length", "{name}: {call}");
        assert_eq!(call["truncated"], true, "{name}: {call}");
        let warnings = events_of(&doc, "warning");
        assert!(
            warnings.iter().any(|w| w["message"]
                .as_str()
                .is_some_and(|m| m.contains("cut at LIMIT OUTPUT_TOKENS 8"))),
            "{name}: {warnings:?}"
        );
        let human = d.ok(&["inspect-run", &id]);
        assert!(human.contains("truncated"), "{name}: {human}");
        if allow.is_empty() {
            assert_eq!(doc["status"], "failed");
            let reason = doc["state"]["reason"].as_str().expect("reason");
            assert!(reason.contains("output_truncated: "), "{reason}");
            assert!(reason.contains("ALLOW_TRUNCATION"), "{reason}");
        } else {
            assert_eq!(doc["status"], "succeeded", "{doc}");
            assert_eq!(doc["output"], "{\"reply\": \"On its");
        }
    }
    assert_eq!(mock.requests().len(), 2, "a cut answer is not retried");
}

/// The directory of the fake `claude` and `codex` programs.
fn fake_clis() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cli")
}

/// `dispatch` with the fake CLIs first on PATH, logging to `log`.
fn with_fakes(d: &Dispatch, log: &Path) -> std::process::Command {
    let mut c = clean(d);
    let path = std::env::var("PATH").unwrap_or_default();
    c.env("PATH", format!("{}:{path}", fake_clis().display()))
        .env("FAKE_CLI_LOG", log)
        .env_remove("DISPATCH_CLAUDE_BIN")
        .env_remove("DISPATCH_CODEX_BIN")
        .env_remove("CLAUDE_BINARY");
    c
}

fn detach_with(mut c: std::process::Command, dir: &Path, job: &str) -> String {
    let out = c
        .args([
            "run",
            dir.to_str().expect("utf-8"),
            "--detach",
            "--job",
            job,
        ])
        .output()
        .expect("dispatch run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The value of each `key:` line the fake CLI logged.
fn logged(log: &Path, key: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}:")).map(str::to_string))
        .collect()
}

#[test]
fn claude_code_runs_headless_as_the_loop_with_its_calls_tools_and_cost_recorded() {
    let d = Dispatch::new();
    let log = d.dir.path().join("claude.log");
    let dir = native_agent(
        d.dir.path(),
        "coder",
        "MODEL claude-sonnet-4-5 PROVIDER claude --reasoning-effort=high\nPROMPT You fix bugs.\nLIMIT TOOL_CALLS 5",
    );
    let id = detach_with(with_fakes(&d, &log), &dir, "\"list the workspace\"");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["output"], "The workspace holds claude-was-here.txt.");
    // Two assistant messages, msg_1 billed once though it came on two lines.
    let calls = model_calls(&doc);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0]["provider"], "claude");
    assert_eq!(calls[0]["input_tokens"], 1000, "cache reads count as input");
    assert_eq!(calls[1]["output_tokens"], 30);
    let tools = events_of(&doc, "tool_call");
    assert_eq!(tools.len(), 1, "{tools:?}");
    assert_eq!(tools[0]["name"], "Bash");
    assert_eq!(tools[0]["input"], json!({"command": "ls"}));
    assert_eq!(tools[0]["output"], "claude-was-here.txt");
    assert_eq!(tools[0]["by"], "claude");
    // The CLI's totals (1200+900 in, 50 out, $0.05) are what the run is billed.
    assert_eq!(doc["usage"]["input_tokens"], 2100, "{}", doc["usage"]);
    assert_eq!(doc["usage"]["output_tokens"], 50);
    let cost = doc["usage"]["cost_usd"].as_f64().expect("cost");
    assert!((cost - 0.05).abs() < 1e-9, "{cost}");
    // Headless, stream-json, the model, the effort, the prompt; in the run's workspace.
    let args = logged(&log, "arg");
    for want in [
        "-p",
        "stream-json",
        "--verbose",
        "claude-sonnet-4-5",
        "--effort",
        "high",
        "acceptEdits",
    ] {
        assert!(args.iter().any(|a| a == want), "{want}: {args:?}");
    }
    let whole = std::fs::read_to_string(&log).expect("log");
    let sys = whole
        .find("arg:--append-system-prompt\narg:# Task")
        .expect("system prompt");
    assert!(whole[sys..].contains("You fix bugs."), "{whole}");
    assert_eq!(
        logged(&log, "stdin"),
        vec!["list the workspace".to_string()]
    );
    let cwd = logged(&log, "cwd");
    assert!(
        cwd[0].contains(&id) && !cwd[0].starts_with(dir.to_str().expect("utf-8")),
        "{cwd:?}"
    );
}

#[test]
fn codex_runs_headless_with_its_turn_billed_at_the_model_price_and_commands_recorded() {
    let d = Dispatch::new();
    let log = d.dir.path().join("codex.log");
    let dir = native_agent(
        d.dir.path(),
        "codexer",
        "MODEL gpt-5 PROVIDER codex\nPROMPT Be brief.\nREASONING effort low\nTIMEOUT LLM 120s",
    );
    // Through DISPATCH_CODEX_BIN, with nothing named codex on PATH.
    let mut c = clean(&d);
    c.env("DISPATCH_CODEX_BIN", fake_clis().join("codex"))
        .env("FAKE_CLI_LOG", &log);
    let id = detach_with(c, &dir, "\"what is here?\"");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["output"], json!({"files": ["codex-was-here.txt"]}));
    let calls = model_calls(&doc);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["provider"], "codex");
    assert_eq!(doc["usage"]["input_tokens"], 12000);
    assert_eq!(doc["usage"]["output_tokens"], 400);
    let want = (12000.0 * 1.25 + 400.0 * 10.0) / 1e6;
    let cost = doc["usage"]["cost_usd"].as_f64().expect("gpt-5 is priced");
    assert!((cost - want).abs() < 1e-9, "{cost} != {want}");
    let tools: Vec<(Value, Value)> = events_of(&doc, "tool_call")
        .iter()
        .map(|t| (t["name"].clone(), t["ok"].clone()))
        .collect();
    assert_eq!(
        tools,
        vec![
            (json!("command"), json!(true)),
            (json!("file_change"), json!(true))
        ]
    );
    let args = logged(&log, "arg");
    for want in [
        "exec",
        "--json",
        "--skip-git-repo-check",
        "workspace-write",
        "gpt-5",
        "model_reasoning_effort=\"low\"",
        "-",
    ] {
        assert!(args.iter().any(|a| a == want), "{want}: {args:?}");
    }
    // The instructions inline (codex exec takes no system prompt), then the task.
    let whole = std::fs::read_to_string(&log).expect("log");
    let task = whole.find("what is here?").expect("the task");
    assert!(whole.find("Be brief.").is_some_and(|i| i < task), "{whole}");
    assert!(whole.contains("stdin:<instructions>"), "{whole}");
}

#[test]
fn a_cli_that_reports_an_error_fails_the_run_quoting_it() {
    let d = Dispatch::new();
    let log = d.dir.path().join("fail.log");
    for (name, line, want) in [
        (
            "c1",
            "MODEL claude-sonnet-4-5 PROVIDER claude",
            "error_during_execution: API Error: 401",
        ),
        (
            "c2",
            "MODEL gpt-5 PROVIDER codex",
            "codex: usage limit reached",
        ),
    ] {
        let dir = native_agent(d.dir.path(), name, line);
        let id = detach_with(with_fakes(&d, &log), &dir, "\"fail please\"");
        let doc = d.wait_terminal(&id);
        assert_eq!(doc["status"], "failed", "{doc}");
        let reason = doc["state"]["reason"].as_str().expect("reason");
        assert!(reason.contains(want), "{name}: {reason}");
    }
}

#[test]
fn a_missing_cli_is_one_line_at_run_naming_what_to_install() {
    let d = Dispatch::new();
    let dir = native_agent(
        d.dir.path(),
        "nocli",
        "MODEL claude-sonnet-4-5 PROVIDER claude",
    );
    let mut c = clean(&d);
    c.env("PATH", "/usr/bin:/bin")
        .env_remove("DISPATCH_CLAUDE_BIN")
        .env_remove("CLAUDE_BINARY");
    let id = detach_with(c, &dir, "\"hi\"");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("`claude` CLI, which is not on PATH"),
        "{reason}"
    );
    assert!(
        reason.contains("npm install -g @anthropic-ai/claude-code"),
        "{reason}"
    );
    assert!(!reason.contains('\n'), "{reason}");
    // `dispatch build` says so too, and builds (runs may execute elsewhere).
    let mut c = clean(&d);
    c.env("PATH", "/usr/bin:/bin")
        .env_remove("DISPATCH_CLAUDE_BIN")
        .env_remove("CLAUDE_BINARY");
    let out = c
        .args(["build", dir.to_str().expect("utf-8")])
        .output()
        .expect("build");
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: PROVIDER claude runs the `claude` CLI, which is not on PATH"),
        "{err}"
    );
}

#[test]
fn a_session_gives_the_cli_its_earlier_turns() {
    let d = Dispatch::new();
    let log = d.dir.path().join("session.log");
    let dir = native_agent(
        d.dir.path(),
        "chatty",
        "MODEL claude-sonnet-4-5 PROVIDER claude",
    );
    for turn in ["\"first question\"", "\"second question\""] {
        let mut c = with_fakes(&d, &log);
        c.args([
            "run",
            dir.to_str().expect("utf-8"),
            "--session",
            "s1",
            "--job",
            turn,
        ]);
        let out = c.output().expect("run");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let whole = std::fs::read_to_string(&log).expect("log");
    let second = &whole[whole.rfind("arg:-p").expect("two runs")..];
    let history = second.find("<conversation_so_far>").expect("the history");
    assert!(second[history..].contains("first question"), "{second}");
    assert!(
        second[history..].contains("The workspace holds claude-was-here.txt."),
        "{second}"
    );
    assert!(second.contains("second question"), "{second}");
}

/// Waits for the fake CLI logging to `log` to have started its grandchild; its pid.
fn grandchild(log: &Path) -> u32 {
    let mut pid = None;
    eventually(30, "the fake CLI started its grandchild", || {
        pid = logged(log, "grandchild")
            .pop()
            .and_then(|p| p.trim().parse().ok());
        pid.is_some()
    });
    pid.expect("pid")
}

#[test]
fn stopping_a_cli_run_ends_its_whole_process_group() {
    let d = Dispatch::new();
    for (name, line) in [
        ("s1", "MODEL claude-sonnet-4-5 PROVIDER claude"),
        ("s2", "MODEL gpt-5 PROVIDER codex"),
    ] {
        let log = d.dir.path().join(format!("{name}.log"));
        let dir = native_agent(d.dir.path(), name, line);
        let id = detach_with(with_fakes(&d, &log), &dir, "\"sleep for a while\"");
        let pid = grandchild(&log);
        assert!(alive(pid));
        d.ok(&["stop", &id]);
        let doc = d.wait_terminal(&id);
        assert_eq!(doc["status"], "cancelled", "{doc}");
        eventually(10, "the CLI's grandchild is gone", || !alive(pid));
    }
}

#[test]
fn a_token_budget_crossed_by_reported_usage_stops_the_cli() {
    let d = Dispatch::new();
    let log = d.dir.path().join("budget.log");
    let dir = native_agent(
        d.dir.path(),
        "spender",
        "MODEL claude-sonnet-4-5 PROVIDER claude\nLIMIT TOKENS 1000",
    );
    let id = detach_with(with_fakes(&d, &log), &dir, "\"expensive work\"");
    let pid = grandchild(&log);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed", "{doc}");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("budget_exceeded: 5000 tokens, limit 1000"),
        "{reason}"
    );
    assert_eq!(doc["usage"]["input_tokens"], 4000);
    eventually(10, "the CLI's grandchild is gone", || !alive(pid));
}

#[test]
fn cli_models_refuse_at_build_what_cannot_reach_them() {
    let d = Dispatch::new();
    for (lines, want) in [
        (
            "MODEL claude-sonnet-4-5 PROVIDER claude\nFALLBACK gpt-4o-mini",
            "cannot be combined with FALLBACK",
        ),
        (
            "MODEL gpt-5 PROVIDER codex\nTOOL BUILTIN system_time",
            "uses its own tools",
        ),
        (
            "MODEL gpt-5 PROVIDER codex\nLIMIT ITERATIONS 3",
            "LIMIT ITERATIONS cannot be applied",
        ),
        (
            "MODEL gpt-5 PROVIDER codex --permission-mode=plan",
            "unknown model option `--permission-mode`",
        ),
        (
            "MODEL gpt-4o PROVIDER openai --reasoning-effort=high",
            "applies to PROVIDER claude|codex only",
        ),
        (
            "MODEL claude-sonnet-4-5 PROVIDER claude --reasoning-effort=extreme",
            "must be one of low, medium, high, max",
        ),
    ] {
        let dir = native_agent(d.dir.path(), "refused", lines);
        let err = d.fails(&["build", dir.to_str().expect("utf-8")], 125);
        assert!(err.contains(want), "{lines}: {err}");
        let line = 2 + lines.lines().count();
        assert!(err.contains(&format!("line {line}")), "{lines}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn timeout_llm_bounds_the_whole_cli_run() {
    let d = Dispatch::new();
    let log = d.dir.path().join("slow.log");
    let dir = native_agent(
        d.dir.path(),
        "slowpoke",
        "MODEL gpt-5 PROVIDER codex\nTIMEOUT LLM 1s",
    );
    let id = detach_with(with_fakes(&d, &log), &dir, "\"sleep on it\"");
    let pid = grandchild(&log);
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "failed", "{doc}");
    let reason = doc["state"]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("`codex` did not finish within 1.0s (TIMEOUT LLM)"),
        "{reason}"
    );
    eventually(10, "the CLI's grandchild is gone", || !alive(pid));
}
