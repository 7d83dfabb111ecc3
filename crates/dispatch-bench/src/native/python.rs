//! `dispatch-bench native --python`: the same 3-round loop as a Python
//! process agent using the `openai` package, beside the native agent.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dispatch_test_support::mock::MockServer;
use serde_json::json;

use super::report::Report;
use super::{agent_dir, now_us, pct, rss_kb, script};

const PY_AGENT: &str = r#"import os, json, sys
from openai import OpenAI
client = OpenAI(base_url=os.environ["LLM_BASE_URL"], api_key="unused")
messages = [{"role": "user", "content": "go"}]
for _ in range(3):
    r = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=False)
    m = r.choices[0].message
    if not m.tool_calls:
        break
    messages.append({"role": "assistant", "content": m.content, "tool_calls": [t.model_dump() for t in m.tool_calls]})
    for t in m.tool_calls:
        messages.append({"role": "tool", "tool_call_id": t.id, "content": "none"})
print(m.content)
"#;

/// The same loop as a Python process agent with the `openai` package.
pub(super) fn side_by_side(
    rt: &tokio::runtime::Runtime,
    dispatch: &Path,
    root: &Path,
    out: &mut Report,
) {
    let venv = root.join("venv");
    let py = venv.join("bin/python");
    if !py.exists() {
        let ok = Command::new("python3")
            .args(["-m", "venv", venv.to_str().expect("utf-8")])
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "openai"])
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            out.row(
                "Python `openai` agent",
                "skipped (could not install the openai package)",
                "",
            );
            return;
        }
    }
    let mock = rt
        .block_on(MockServer::start(script(json!({
            "steps": [], "record_bodies": false,
            "fallback": {"kind": "rounds", "tool_rounds": 2, "delay_ms": 1000, "text": "done"}
        }))))
        .expect("mock");
    let state = root.join("python");
    let pyagent = agent_dir(
        root,
        "py-agent",
        &format!(
            "FROM process\nNAME py-agent\nCOPY agent.py\nCOMMAND [\"{}\", \"agent.py\"]\nENV LLM_BASE_URL={}\n",
            py.display(),
            mock.base_url()
        ),
    );
    std::fs::write(pyagent.join("agent.py"), PY_AGENT).expect("agent.py");
    let native = agent_dir(
        root,
        "native-py",
        &format!(
            "FROM agent\nNAME native-py\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}\n",
            mock.base_url()
        ),
    );
    let measure = |dir: &Path| {
        let mut starts = Vec::new();
        let mut rss = Vec::new();
        for _ in 0..10 {
            let before = mock.requests().len();
            let t0 = now_us();
            let out = Command::new(dispatch)
                .args(["run", dir.to_str().expect("utf-8"), "--detach"])
                .env("DISPATCH_ROOT", &state)
                .stderr(Stdio::null())
                .output()
                .expect("run");
            let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let deadline = Instant::now() + Duration::from_secs(20);
            while mock.requests().len() == before && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(500));
            }
            if let Some(r) = mock.requests().get(before) {
                starts.push(r.received_at_us.saturating_sub(t0) as f64 / 1e3);
            }
            // The process that holds the loop: the agent's group (Python) or the helper (native).
            let doc = Command::new(dispatch)
                .args(["inspect-run", &id, "--format", "json"])
                .env("DISPATCH_ROOT", &state)
                .output()
                .expect("inspect");
            let v: serde_json::Value = serde_json::from_slice(&doc.stdout).unwrap_or_default();
            if let Some(pid) = v[0]["state"]["agent"]["pid"].as_u64() {
                std::thread::sleep(Duration::from_millis(300));
                rss.push(rss_kb(pid as u32, "VmRSS:") as f64 / 1024.0);
            }
            let _ = Command::new(dispatch)
                .args(["wait", &id])
                .env("DISPATCH_ROOT", &state)
                .stdout(Stdio::null())
                .status();
        }
        (pct(starts, 0.5), pct(rss, 0.5))
    };
    let (py_start, py_rss) = measure(&pyagent);
    let (n_start, n_rss) = measure(&native);
    out.row(
        "start → first request: Python `openai` agent vs native",
        &format!(
            "{py_start:.1} ms vs {n_start:.2} ms ({:.0}× sooner)",
            py_start / n_start
        ),
        "—",
    );
    out.row(
        "memory of the process holding the loop: Python agent vs native run's helper (the whole helper: SQLite, runtime, HTTP client)",
        &format!(
            "{py_rss:.1} MB vs {n_rss:.1} MB ({:.1}× less; in a worker a native run adds far less, see the memory measurement)",
            py_rss / n_rss
        ),
        "—",
    );
    for (k, v) in [
        ("python_start_p50_ms", py_start),
        ("native_start_p50_ms", n_start),
        ("python_rss_mb", py_rss),
        ("native_helper_rss_mb", n_rss),
    ] {
        out.set("python", k, v);
    }
}
