//! `dispatch-bench wasm [--dispatch PATH] [--n N]`: a WASM agent's start
//! beside a process agent's and a native agent's, in one run, against the
//! release binary and the scripted mock model server on loopback.
//!
//! Each round, in turn: `run --detach` of a `FROM process` agent → its
//! first line (`date +%s%N`, the baseline); `run --detach` of a native
//! agent → its first request at the mock; `run --detach` of a WASM agent
//! (the test guest `answer.wat`, whose first act is a model call) → its
//! first request at the mock, and its first instruction: the `guest_started`
//! event's `at_us` (the store made, the component instantiated, its export
//! about to be entered). The first WASM run
//! compiles the component (Cranelift) and keeps the compilation next to
//! the parcels; it is reported alone.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use dispatch_test_support::mock::{MockServer, Script};
use serde_json::json;

const GUEST: &str = include_str!("../../dispatch-cli/tests/it/wasm_guests/answer.wat");

use crate::{now_us, pct};

pub fn main(dispatch: &Path, args: &[String]) {
    let n: usize = crate::flag_value(args, "--n")
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let script: Script =
        serde_json::from_value(json!({"steps": [], "record_bodies": false})).expect("script");
    let mock = rt.block_on(MockServer::start(script)).expect("mock");
    let root = tempfile::tempdir().expect("tempdir");
    let state = root.path().join(".dispatch");
    let write = |name: &str, agentfile: String| {
        let dir = root.path().join(name);
        std::fs::create_dir_all(dir.join("components")).expect("dir");
        std::fs::write(dir.join("Agentfile"), agentfile).expect("Agentfile");
        dir
    };
    let model = format!(
        "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}",
        mock.base_url()
    );
    let process = write(
        "process",
        "FROM process\nNAME process\nCOMMAND [\"/bin/date\", \"+%s%N\"]\n".into(),
    );
    let native = write("native", format!("FROM agent\nNAME native\n{model}\n"));
    let wasm = write(
        "wasm",
        format!("FROM dispatch/wasm\nNAME wasm\n{model}\nCOMPONENT components/guest.wasm\n"),
    );
    let component = wat::parse_str(GUEST).expect("the guest compiles");
    std::fs::write(wasm.join("components/guest.wasm"), &component).expect("component");
    let cmd = |args: &[&str]| {
        let mut c = Command::new(dispatch);
        c.args(args)
            .env("DISPATCH_ROOT", &state)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        c
    };
    for dir in [&process, &native, &wasm] {
        let _ = cmd(&["build", dir.to_str().expect("utf-8")]).status();
    }
    // `run --detach` of `dir` → the mock's next request (µs), and the run's id.
    let to_mock = |dir: &Path| -> (Option<f64>, String) {
        let before = mock.requests().len();
        let t0 = now_us();
        let out = cmd(&["run", dir.to_str().expect("utf-8"), "--detach"])
            .output()
            .expect("run");
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let got = crate::next_request_at(&mock, before, Duration::from_secs(20));
        let _ = cmd(&["wait", &id]).status();
        (got.map(|at| at.saturating_sub(t0) as f64 / 1e3), id)
    };
    // The guest's `guest_started` event, ms after `t0_us`.
    let entered = |id: &str, t0_us: u64| -> Option<f64> {
        let out = cmd(&["inspect-run", id, "--format", "json"])
            .output()
            .ok()?;
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        doc[0]["events"]
            .as_array()?
            .iter()
            .find(|e| e["type"] == "guest_started")
            .and_then(|e| e["data"]["at_us"].as_u64())
            .map(|at| at.saturating_sub(t0_us) as f64 / 1e3)
    };
    // The first WASM run compiles the component.
    let t0 = now_us();
    let (cold, cold_id) = to_mock(&wasm);
    let cold_entered = entered(&cold_id, t0);
    let (mut proc_start, mut native_start, mut wasm_start, mut wasm_entered) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n + 3 {
        let t1 = now_us();
        let out = cmd(&["run", process.to_str().expect("utf-8"), "--detach"])
            .output()
            .expect("run");
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let _ = cmd(&["wait", &id]).status();
        let log = std::fs::read_to_string(state.join("runs").join(format!("{id}.log")))
            .unwrap_or_default();
        let ran = log.lines().find_map(|l| l.trim().parse::<u64>().ok());
        let (n_at, _) = to_mock(&native);
        let t0 = now_us();
        let (w_at, w_id) = to_mock(&wasm);
        if i < 3 {
            continue;
        }
        if let Some(ns) = ran {
            proc_start.push((ns / 1_000).saturating_sub(t1) as f64 / 1e3);
        }
        native_start.extend(n_at);
        wasm_start.extend(w_at);
        wasm_entered.extend(entered(&w_id, t0));
    }
    let base = pct(proc_start.clone(), 0.5);
    println!("| measurement | p50 | p99 | × process |\n|---|---|---|---|");
    let row = |what: &str, v: Vec<f64>| {
        let p50 = pct(v.clone(), 0.5);
        println!(
            "| {what}, {} runs | {p50:.2} ms | {:.2} ms | {:.2}× |",
            v.len(),
            pct(v, 0.99),
            p50 / base
        );
    };
    row(
        "`run --detach` → process agent's first line (`date`)",
        proc_start,
    );
    row(
        "`run --detach` → native agent's first model request",
        native_start,
    );
    row(
        "`run --detach` → WASM agent's first model request (its first act)",
        wasm_start,
    );
    row(
        "`run --detach` → WASM guest's first instruction (its export entered: `guest_started`)",
        wasm_entered,
    );
    println!(
        "| first WASM run (compiles {} KiB of component with Cranelift): → first model request | {} | | |",
        component.len() / 1024,
        cold.map_or("-".into(), |c| format!(
            "{c:.2} ms (entered at {} ms)",
            cold_entered.map_or("-".into(), |e| format!("{e:.0}"))
        ))
    );
}
