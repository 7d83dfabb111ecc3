//! `dispatch-bench eval [--dispatch PATH] [--cases N] [--calls N]`: `dispatch
//! eval` of a 3-round native agent (two tool rounds, then the answer) —
//! `--cases` (default 100) cases recorded live against the mock model server
//! (the baseline), then replayed from the cassette with the server stopped;
//! and the cost of one replayed model call through the provider interface
//! (`--calls` calls, in process), beside one live call to the mock on loopback.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use dispatch_agent::cassette;
use dispatch_agent::{Flow, ModelRequest, Provider, ProviderKind};
use dispatch_test_support::mock::{MockServer, Script};
use serde_json::{Value, json};

pub fn main(dispatch: &Path, args: &[String]) {
    let value = |flag: &str| crate::flag_value(args, flag);
    let cases: usize = value("--cases").and_then(|v| v.parse().ok()).unwrap_or(100);
    let calls: usize = value("--calls")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let script: Script = serde_json::from_value(json!({
        "steps": [],
        "fallback": {"kind": "rounds", "tool_rounds": 2, "tool_name": "lookup",
            "text": "{\"category\":\"shipping\",\"reply\":\"On its way.\"}"},
        "record_bodies": false
    }))
    .expect("a valid script");
    let server = rt.block_on(MockServer::start(script)).expect("mock starts");
    let url = server.base_url();
    let agent = dir.path().join("agent");
    std::fs::create_dir_all(agent.join("evals")).expect("agent dir");
    std::fs::write(
        agent.join("Agentfile"),
        format!(
            "FROM agent\nNAME bench-eval\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {url}\nTOOL LOCAL lookup.sh AS lookup DESCRIPTION \"Find an order\"\nPROMPT Classify the ticket.\nEVAL evals/cases.toml\n"
        ),
    )
    .expect("Agentfile");
    std::fs::write(agent.join("lookup.sh"), "echo 'order: shipped'\n").expect("tool");
    let mut toml = String::new();
    for i in 0..cases {
        toml.push_str(&format!(
            "[[case]]\nname = \"case {i}\"\npayload = {{ ticket = \"order {i}\" }}\nexpect.status = \"succeeded\"\nexpect.output = {{ path = \"$.category\", equals = \"shipping\" }}\nexpect.tools = {{ count = {{ lookup = 2 }} }}\n\n"
        ));
    }
    std::fs::write(agent.join("evals/cases.toml"), toml).expect("cases");
    let cassette = dir.path().join("cassette");
    let root = dir.path().join(".dispatch");
    let run_eval = |flag: &str| {
        let started = Instant::now();
        let out = Command::new(dispatch)
            .args([
                "eval",
                agent.to_str().expect("utf-8"),
                "-j",
                "8",
                "--format",
                "json",
            ])
            .arg(flag)
            .arg(&cassette)
            .env("DISPATCH_ROOT", &root)
            .env_remove("LLM_BASE_URL")
            .output()
            .expect("dispatch eval");
        let took = started.elapsed();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert!(
            out.status.success(),
            "dispatch eval {flag} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(report["summary"]["passed"].as_u64(), Some(cases as u64));
        took
    };
    // Build the parcel first so neither eval pays for it.
    let built = Command::new(dispatch)
        .args(["build", agent.to_str().expect("utf-8")])
        .env("DISPATCH_ROOT", &root)
        .output()
        .expect("dispatch build");
    assert!(built.status.success(), "build failed");
    let live = run_eval("--record");
    let entries = std::fs::read_dir(&cassette).expect("cassette").count();
    let (live_call, request) = rt.block_on(one_live_call(&url, &cassette));
    drop(server);
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    let replayed = run_eval("--replay");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let per_call = rt.block_on(replayed_calls(&cassette, &request, calls));
    println!("| measurement | result | target |\n|---|---|---|");
    println!(
        "| {cases} cases of a 3-round native agent, live against the mock (`--record`, -j 8; baseline) | {:.2} s ({entries} cassette entries) | — |",
        live.as_secs_f64()
    );
    println!(
        "| the same {cases} cases replayed, mock stopped (`--replay`, -j 8) | **{:.2} s** | ≤ 5 s |",
        replayed.as_secs_f64()
    );
    println!(
        "| one model call live to the mock on loopback (baseline) | {:.3} ms | — |",
        live_call * 1e3
    );
    println!(
        "| one replayed model call (provider interface, mean of {calls}) | **{:.3} ms** | ≤ 1 ms |",
        per_call * 1e3
    );
}

/// One call of a recorded request live to the mock: seconds, and the request.
async fn one_live_call(url: &str, cassette: &Path) -> (f64, ModelRequest<'static>) {
    let entry = std::fs::read_dir(cassette)
        .expect("cassette")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .expect("an entry");
    let v: Value =
        serde_json::from_slice(&std::fs::read(entry.path()).expect("read")).expect("json");
    let request: ModelRequest = serde_json::from_value(v["request"].clone()).expect("a request");
    let provider = dispatch_agent::openai::OpenAi::new(
        ProviderKind::Openai,
        dispatch_runtime::native::client().clone(),
        Some(url.to_string()),
        None,
    );
    let mut ex = dispatch_agent::Exchange::default();
    let mut on_delta = |_: dispatch_agent::Delta<'_>| Flow::Continue;
    // Once to warm the connection, then timed.
    let _ = provider.stream(&request, &mut on_delta, &mut ex).await;
    let started = Instant::now();
    provider
        .stream(&request, &mut on_delta, &mut ex)
        .await
        .expect("the mock answers");
    (started.elapsed().as_secs_f64(), request)
}

/// Mean seconds of one replayed call of `request`.
async fn replayed_calls(cassette: &Path, request: &ModelRequest<'_>, calls: usize) -> f64 {
    let provider = cassette::replaying(cassette.to_path_buf(), ProviderKind::Openai);
    let mut on_delta = |_: dispatch_agent::Delta<'_>| Flow::Continue;
    let started = Instant::now();
    for _ in 0..calls {
        let mut ex = dispatch_agent::Exchange::default();
        provider
            .stream(request, &mut on_delta, &mut ex)
            .await
            .expect("the cassette answers");
    }
    started.elapsed().as_secs_f64() / calls.max(1) as f64
}
