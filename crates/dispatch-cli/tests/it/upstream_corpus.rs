//! Agentfiles written for upstream Dispatch build and run here unchanged:
//! the corpus under `tests/fixtures/upstream/` is built with the real
//! `dispatch build`, the native agents run against the scripted mock model
//! server (through `LLM_BASE_URL`, so their MODEL lines stay as written),
//! and each upstream directive Dispatch cannot honour is refused at build
//! with one line naming its line number. See docs/agentfile-compat.md.

use crate::common;
use crate::native_common;

use std::path::{Path, PathBuf};

use common::Dispatch;
use native_common::{Mock, events_of, text};
use serde_json::{Value, json};

const CORPUS: [&str; 7] = [
    "a2a-delegate",
    "basic",
    "codex",
    "file-analyst",
    "heartbeat-monitor",
    "release-notes",
    "state-tools",
];

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/upstream")
        .join(name)
}

/// A step calling tools: `(name, arguments)` each, with ids `c0`, `c1`, ….
fn calls(list: &[(&str, Value)]) -> Value {
    let calls: Vec<Value> = list
        .iter()
        .enumerate()
        .map(|(i, (name, args))| json!({"name": name, "arguments": args, "id": format!("c{i}")}))
        .collect();
    json!({"kind": "tool_calls", "calls": calls})
}

/// Runs the corpus agent `name` in the foreground against `mock`; returns
/// the run's inspect document.
fn run(d: &Dispatch, name: &str, mock: &Mock) -> Value {
    let dir = corpus(name);
    let out = d
        .command()
        .args(["run", dir.to_str().expect("utf-8"), "--job", "\"go\""])
        .env("LLM_BASE_URL", mock.url())
        .env("OZ_WORKSPACE_AGENT_TOKEN", "t0ken")
        .output()
        .expect("dispatch run");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let id = d
        .ok(&["ps", "-a", "-q"])
        .lines()
        .next()
        .unwrap_or_else(|| panic!("a run: {stderr}"))
        .to_string();
    d.inspect(&id)
}

/// The system prompt of the first model request.
fn system_prompt(mock: &Mock) -> String {
    let req = mock.requests().into_iter().next().expect("a model request");
    req.body["messages"][0]["content"]
        .as_str()
        .expect("a system message")
        .to_string()
}

fn call<'a>(calls: &'a [Value], name: &str) -> &'a Value {
    calls
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("a call of {name}: {calls:#?}"))
}

#[test]
fn every_corpus_agentfile_builds_with_dispatch_build() {
    let d = Dispatch::new();
    for name in CORPUS {
        let digest = d.ok(&["build", corpus(name).to_str().expect("utf-8"), "-q"]);
        assert_eq!(digest.len(), 64, "{name}: {digest}");
    }
}

#[test]
fn the_codex_parcel_runs_unchanged_on_the_codex_cli_with_its_options() {
    let d = Dispatch::new();
    let log = d.dir.path().join("codex.log");
    let fake = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cli/codex");
    let out = d
        .command()
        .args([
            "run",
            corpus("codex").to_str().expect("utf-8"),
            "--job",
            "\"go\"",
        ])
        .env("DISPATCH_CODEX_BIN", &fake)
        .env("FAKE_CLI_LOG", &log)
        .env_remove("LLM_BASE_URL")
        .output()
        .expect("dispatch run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = d
        .ok(&["ps", "-a", "-q"])
        .lines()
        .next()
        .expect("a run")
        .to_string();
    let doc = d.inspect(&id);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["output"], json!({"files": ["codex-was-here.txt"]}));
    let logged = std::fs::read_to_string(&log).expect("the fake ran");
    // `--reasoning-effort=medium` reaches Codex; the instruction files are its prompt.
    assert!(
        logged.contains("arg:model_reasoning_effort=\"medium\""),
        "{logged}"
    );
    assert!(logged.contains("arg:gpt-5.4"), "{logged}");
    assert!(logged.contains("Small, reviewable changes."), "{logged}");
}

#[test]
fn the_basic_assistant_runs_with_its_instruction_files_and_system_time() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        calls(&[("system_time", json!({}))]),
        text("It is late.", 10, 5),
    ]));
    let doc = run(&d, "basic", &mock);
    assert_eq!(doc["status"], "succeeded", "{:#}", doc["state"]);
    let prompt = system_prompt(&mock);
    for needle in [
        "# Skill: SKILL",
        "Answer clearly and concisely.",
        "# Operating procedures\n\nAlways check the clock",
        "# User\n\nThe operator works in UTC",
        "# Tools\n\nsystem_time returns",
        "# Memory policy\n\nRemember nothing",
    ] {
        assert!(prompt.contains(needle), "{needle:?} in:\n{prompt}");
    }
    let tool_calls = events_of(&doc, "tool_call");
    let time = call(&tool_calls, "system_time");
    assert_eq!(time["ok"], true, "{time}");
    let out: Value = serde_json::from_str(time["output"].as_str().expect("output")).expect("JSON");
    assert!(
        out["unix_ms"].as_i64().expect("unix_ms") > 1_600_000_000_000,
        "{out}"
    );
    assert!(out["utc"].as_str().expect("utc").ends_with('Z'), "{out}");
    // VISIBILITY is advisory: recorded and shown, nothing else.
    assert_eq!(doc["advisory"]["visibility"], "open");
    assert_eq!(doc["mounts"]["memory"], "none");
    let human = d.ok(&["inspect-run", doc["id"].as_str().expect("id")]);
    assert!(human.contains("visibility=open"), "{human}");
}

#[test]
fn a_skill_bundle_is_packaged_prompted_and_its_files_and_sidecar_tools_work() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        calls(&[
            (
                "read_skill_file",
                json!({"path": "skills/file-analyst/references/style.md"})
            ),
            ("list_dir", json!({"path": "."})),
            ("find_files", json!({"pattern": "*.rs"})),
            (
                "memory_put",
                json!({"namespace": "files", "key": "src/main.rs", "value": "the entry point"})
            ),
        ]),
        calls(&[(
            "memory_get",
            json!({"namespace": "files", "key": "src/main.rs"})
        )]),
        text("main.rs is the entry point.", 10, 5),
    ]));
    let doc = run(&d, "file-analyst", &mock);
    assert_eq!(doc["status"], "succeeded", "{:#}", doc["state"]);
    let prompt = system_prompt(&mock);
    assert!(
        prompt.contains("# Skill: file-analyst\n\nAnalyze files and directories."),
        "{prompt}"
    );
    assert!(
        prompt.contains("List directories before reading files."),
        "{prompt}"
    );
    assert!(
        !prompt.contains("dispatch-manifest"),
        "frontmatter stripped: {prompt}"
    );
    assert!(prompt.contains("`skills/file-analyst/`"), "{prompt}");
    let tool_calls = events_of(&doc, "tool_call");
    let read = call(&tool_calls, "read_skill_file");
    assert_eq!(
        read["output"],
        "Summaries are one line each: the purpose of the file.\n"
    );
    assert_eq!(
        call(&tool_calls, "list_dir")["output"]
            .as_str()
            .map(str::trim),
        Some("listed: README.md src/")
    );
    let find = call(&tool_calls, "find_files");
    assert_eq!(
        find["output"].as_str().map(str::trim),
        Some("found: src/main.rs")
    );
    assert_eq!(find["approval"]["policy"], "audit", "{find}");
    let put = call(&tool_calls, "memory_put");
    assert_eq!(put["approval"]["policy"], "audit", "{put}");
    assert_eq!(
        call(&tool_calls, "memory_get")["output"],
        "\"the entry point\""
    );
    // TIMEOUT TOOL is every tool's timeout unless its own line sets one.
    let bom_tools = doc["bom"]["tools"].as_array().cloned().unwrap_or_default();
    let list_dir = bom_tools
        .iter()
        .find(|t| t["name"] == "list_dir")
        .expect("list_dir in the bom");
    assert_eq!(list_dir["timeout_ms"], 30_000, "{list_dir}");
}

#[test]
fn dispatch_skill_lists_and_inspects_the_bundles_a_parcel_carries() {
    let d = Dispatch::new();
    let dir = corpus("file-analyst");
    let dir = dir.to_str().expect("utf-8");
    let table = d.ok(&["skill", "ls", dir]);
    let row = table.lines().nth(1).unwrap_or_default();
    for want in [
        "file-analyst",
        "6",
        "list_dir,find_files",
        "Analyze files and directories.",
    ] {
        assert!(row.contains(want), "{want}: {table}");
    }
    let doc: Value =
        serde_json::from_str(&d.ok(&["skill", "ls", dir, "--format", "json"])).expect("json");
    let skill = &doc["skills"][0];
    assert_eq!(skill["name"], "file-analyst");
    assert_eq!(skill["kind"], "bundle");
    let files: Vec<&str> = skill["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert!(
        files.contains(&"SKILL.md") && files.contains(&"scripts/find_files.sh"),
        "{files:?}"
    );
    let find = &skill["tools"][1];
    assert_eq!(find["name"], "find_files");
    assert_eq!(find["script"], "scripts/find_files.sh");
    assert_eq!(find["approval"], "audit");
    // A built parcel, by name: one skill inspected, its instructions without frontmatter.
    d.ok(&["build", dir, "-q"]);
    let one: Value = serde_json::from_str(&d.ok(&[
        "skill",
        "inspect",
        "file-analyst",
        "file-analyst",
        "--format",
        "json",
    ]))
    .expect("json");
    let text = one["instructions"].as_str().expect("instructions");
    assert!(!text.starts_with("---") && !text.is_empty(), "{text}");
    let human = d.ok(&["skill", "inspect", dir, "file-analyst"]);
    assert!(
        human.contains("Tools:       2") && human.contains("Instructions:"),
        "{human}"
    );
    let err = d.fails(&["skill", "inspect", dir, "nope"], 125);
    assert!(
        err.contains("no skill named `nope`") && err.contains("file-analyst"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// `dispatch eval <corpus agent> [extra]` against `mock`: exit code and JSON report.
fn eval(d: &Dispatch, name: &str, mock: &Mock, extra: &[&str]) -> (Option<i32>, Value) {
    let out = d
        .command()
        .args([
            "eval",
            corpus(name).to_str().expect("utf-8"),
            "-j",
            "1",
            "--format",
            "json",
        ])
        .args(extra)
        .env("LLM_BASE_URL", mock.url())
        .output()
        .expect("dispatch eval");
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("a report: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), report)
}

#[test]
fn upstream_eval_files_run_with_dispatch_eval() {
    let d = Dispatch::new();
    // basic's evals/smoke.eval: `expects_tool = "system_time"`.
    let mock = Mock::start(json!([
        calls(&[("system_time", json!({}))]),
        text("It is noon.", 10, 3),
    ]));
    let (code, report) = eval(&d, "basic", &mock, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["summary"]["passed"], 1, "{report:#}");
    // An upstream file given with --cases: its text and tool expectations checked.
    let cases = d.dir.path().join("more.eval");
    std::fs::write(
        &cases,
        "[[cases]]\nname = \"quiet\"\ninput = \"What time is it?\"\nexpects_no_tool = true\nexpects_text_contains = \"midnight\"\nexpects_text_not_contains = \"noon\"\n",
    )
    .expect("cases");
    let mock = Mock::start(json!([text("It is noon.", 10, 3)]));
    let (code, report) = eval(
        &d,
        "basic",
        &mock,
        &["--cases", cases.to_str().expect("utf-8")],
    );
    assert_eq!(code, Some(1), "{report:#}");
    let failures: Vec<&str> = report["results"][0]["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        failures[0].starts_with("expects_text_contains: \"It is noon.\""),
        "{failures:?}"
    );
    assert!(
        failures[1].starts_with("expects_text_not_contains"),
        "{failures:?}"
    );
    // A key with no counterpart is refused before anything runs, naming it.
    std::fs::write(
        &cases,
        "name = \"x\"\ninput = \"y\"\nexpects_a2a_endpoint = \"z\"\n",
    )
    .expect("cases");
    let err = d.fails(
        &[
            "eval",
            corpus("basic").to_str().expect("utf-8"),
            "--cases",
            cases.to_str().expect("utf-8"),
        ],
        125,
    );
    assert!(
        err.contains("upstream's `expects_a2a_endpoint` is not supported"),
        "{err}"
    );
}

#[test]
fn limit_iterations_ends_a_run_whose_model_keeps_asking_for_tools() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        calls(&[("git_log", json!({}))]),
        calls(&[("git_log", json!({}))]),
        text("never reached", 1, 1),
    ]));
    let doc = run(&d, "release-notes", &mock);
    assert_eq!(doc["status"], "failed", "{doc:#}");
    let reason = doc["state"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("LIMIT ITERATIONS 2"), "{reason}");
    assert_eq!(mock.requests().len(), 2, "two model calls, no third");
}

#[test]
fn memory_checkpoint_and_using_tools_run_and_advisory_metadata_is_recorded() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        calls(&[
            (
                "memory_put_many",
                json!({"entries": [{"key": "a1", "value": 1}, {"key": "a2", "value": 2}, {"key": "b1", "value": 3}]})
            ),
            (
                "checkpoint_put",
                json!({"name": "plan", "value": {"step": 2}})
            ),
            ("report", json!({"q": 1})),
        ]),
        calls(&[
            ("memory_delete", json!({"key": "a2"})),
            ("checkpoint_get", json!({"name": "plan"})),
            ("checkpoint_list", json!({})),
        ]),
        calls(&[(
            "memory_list_range",
            json!({"start_key": "a", "end_key": "b"})
        )]),
        text("done", 1, 1),
    ]));
    let doc = run(&d, "state-tools", &mock);
    assert_eq!(doc["status"], "succeeded", "{:#}", doc["state"]);
    let tool_calls = events_of(&doc, "tool_call");
    for c in &tool_calls {
        assert_eq!(c["ok"], true, "{c}");
    }
    assert_eq!(
        call(&tool_calls, "checkpoint_get")["output"],
        "{\"step\":2}"
    );
    assert_eq!(call(&tool_calls, "checkpoint_list")["output"], "[\"plan\"]");
    assert_eq!(
        call(&tool_calls, "memory_delete")["approval"]["policy"],
        "audit"
    );
    let range: Value = serde_json::from_str(
        call(&tool_calls, "memory_list_range")["output"]
            .as_str()
            .expect("output"),
    )
    .expect("JSON");
    assert_eq!(range, json!([{"key": "a1", "value": 1}]));
    // USING sh -e runs the program with that interpreter (it is not executable).
    let report = call(&tool_calls, "report");
    assert_eq!(
        report["output"].as_str().map(str::trim),
        Some("report for {\"q\":1}")
    );
    assert_eq!(doc["advisory"]["routing"], "balanced");
    assert_eq!(doc["advisory"]["framework"]["version"], "0.5.0");
    assert_eq!(
        doc["advisory"]["compaction"],
        json!({"events": 200, "overlap": 32})
    );
}

/// Upstream directives Dispatch cannot honour: `(lines after the header,
/// the refused line's number, a piece of its one-line error)`.
const REFUSALS: &[(&str, usize, &str)] = &[
    (
        "TOOL BUILTIN web_search APPROVAL confirm",
        4,
        "no one can approve a search before it runs",
    ),
    (
        "TOOL BUILTIN topic_lookup",
        4,
        "unknown built-in `topic_lookup`",
    ),
    (
        "NETWORK allow api.example.com via-egress",
        4,
        "`via-egress` is not supported",
    ),
    (
        "NETWORK publishers-only",
        4,
        "publishers-only is not enforced",
    ),
    (
        "COMPONENT components/a.wasm",
        4,
        "COMPONENT is for WASM agents",
    ),
    (
        "TEST tool:report",
        4,
        "TEST tool:<alias> smoke tests are not supported",
    ),
    (
        "MOUNT SESSION postgres",
        4,
        "MOUNT SESSION postgres is not supported",
    ),
    (
        "MOUNT SESSION memory",
        4,
        "MOUNT SESSION memory is not supported",
    ),
    (
        "MOUNT MEMORY pgvector",
        4,
        "MOUNT MEMORY pgvector is not supported",
    ),
    (
        "MOUNT ARTIFACTS s3",
        4,
        "MOUNT ARTIFACTS s3 is not supported",
    ),
    (
        "\nHEARTBEAT FILE HEARTBEAT.md",
        5,
        "HEARTBEAT needs `ENTRYPOINT heartbeat`",
    ),
    (
        "MOUNT MEMORY none\nTOOL BUILTIN memory_get",
        5,
        "`MOUNT MEMORY none` declares none",
    ),
    (
        "ADD https://example.com/refs.tar.gz refs/",
        4,
        "fetching remote sources at build is not supported",
    ),
    ("MEMORY notes.md", 4, "MEMORY expects `POLICY <file>`"),
    (
        "VISIBILITY secret",
        4,
        "VISIBILITY expects one of open, opaque",
    ),
    (
        "SKILL skills/missing",
        4,
        "SKILL file `skills/missing` not found",
    ),
    (
        "SKILL nofront",
        4,
        "SKILL.md does not start with YAML frontmatter",
    ),
];

#[test]
fn upstream_directives_dispatch_cannot_honour_are_refused_naming_their_line() {
    let d = Dispatch::new();
    for (i, (lines, line, needle)) in REFUSALS.iter().enumerate() {
        let dir = d.dir.path().join(format!("refused-{i}"));
        std::fs::create_dir_all(dir.join("nofront")).expect("dir");
        std::fs::write(dir.join("nofront/SKILL.md"), "# no frontmatter\n").expect("skill");
        std::fs::write(dir.join("HEARTBEAT.md"), "beat\n").expect("heartbeat");
        std::fs::write(
            dir.join("Agentfile"),
            format!("FROM dispatch/native:latest\nNAME refused\nMODEL gpt-5.4-mini PROVIDER openai\n{lines}\n"),
        )
        .expect("Agentfile");
        let err = d.fails(&["build", dir.to_str().expect("utf-8")], 125);
        let first = err.lines().next().unwrap_or_default();
        assert_eq!(err.trim().lines().count(), 1, "{lines}: one line: {err}");
        assert!(
            first.contains(&format!("line {line}: ")),
            "{lines}: {first}"
        );
        assert!(first.contains(needle), "{lines}: {first}");
    }
}
