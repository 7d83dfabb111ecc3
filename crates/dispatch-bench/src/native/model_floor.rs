//! The model calls' own floor, measured beside the concurrency measurement
//! (issue #38 item 3): the runs' 3 calls each, made by the bench itself to
//! the same mock, with the bare HTTP client every Dispatch model call goes
//! through over plain HTTP (reqwest, from `dispatch_http`), the body read
//! to its end and not parsed, nothing stored, no agent loop, no tool. The
//! mock runs in the bench too, so the bench's CPU over these calls is what
//! answering and making them costs at the least: no agent runtime, durable
//! or not, makes the runs' calls for less. With the tools' floor beside it
//! ([`super::floor`]), it says how much of what 2 cores have in 1.5× the
//! ideal (18 CPU s) the parts that are not the runtime leave to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::{Value, json};

use super::budget;
use super::report::Report;

/// What the runs' model calls cost alone.
pub(super) struct Floor {
    pub calls: usize,
    /// Runs in flight at once (bounded by the descriptors: each call holds
    /// two in this process, the client's and the mock's).
    pub lanes: usize,
    pub wall_s: f64,
    pub cpu_ms: u64,
    pub failed: usize,
}

/// A run's conversation before its call `round` (0, 1, 2): the mock
/// answers a tool call while it holds fewer than 2 assistant messages.
fn body(round: usize) -> Value {
    let mut messages = vec![json!({"role": "user", "content": "go"})];
    for r in 0..round {
        let id = format!("call_{r}");
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": id, "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
        ]}));
        messages.push(json!({"role": "tool", "tool_call_id": id, "content": "order: shipped"}));
    }
    json!({
        "model": "gpt-4o-mini",
        "stream": true,
        "messages": messages,
        "tools": [{"type": "function", "function": {
            "name": "lookup", "description": "Find an order",
            "parameters": {"type": "object", "properties": {}}
        }}],
    })
}

/// How many runs may be in flight: two descriptors a call, under this
/// process's limit (raised to the hard one), a margin kept.
fn lanes(runs: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return runs.clamp(1, 256);
    };
    let limit = match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => hard,
        Err(_) => soft,
    };
    let free = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(512);
    runs.min(free / 3).max(1)
}

/// `runs` runs' 3 calls each to the mock at `base_url` (its `/v1`).
pub(super) fn model_calls(rt: &tokio::runtime::Runtime, base_url: &str, runs: usize) -> Floor {
    let lanes = lanes(runs);
    let url = format!("{base_url}/chat/completions");
    let bodies: Arc<Vec<Vec<u8>>> =
        Arc::new((0..3).map(|r| body(r).to_string().into_bytes()).collect());
    let client = match dispatch_http::builder("dispatch-bench").and_then(|b| {
        b.pool_max_idle_per_host(lanes)
            .build()
            .map_err(dispatch_http::HttpError::Build)
    }) {
        Ok(c) => c,
        Err(e) => panic!("dispatch-bench native: the HTTP client: {e}"),
    };
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let before = budget::Sample::now();
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::with_capacity(lanes);
        for _ in 0..lanes {
            let (client, url, bodies) = (client.clone(), url.clone(), bodies.clone());
            let (next, failed) = (next.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < runs {
                    for b in bodies.iter() {
                        let answer = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(b.clone())
                            .send()
                            .await;
                        let ok = match answer {
                            Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                            _ => false,
                        };
                        if !ok {
                            failed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    Floor {
        calls: runs * 3,
        lanes,
        wall_s: started.elapsed().as_secs_f64(),
        cpu_ms: budget::Sample::now().since(before).bench_ms,
        failed: failed.load(Ordering::Relaxed),
    }
}

/// Its row, and the two floors against what 2 cores have in 1.5× the ideal.
pub(super) fn report(m: &Floor, tools_cpu_ms: u64, out: &mut Report) {
    if m.failed > 0 {
        eprintln!(
            "dispatch-bench native: {} of the floor's model calls failed; its numbers are not a floor",
            m.failed
        );
    }
    let s = |ms: u64| ms as f64 / 1e3;
    out.row(
        "the model calls' own floor, beside: as many calls as the runs made, by the bench alone to the same mock (its bare HTTP client, nothing parsed or stored; the mock's CPU included)",
        &format!(
            "{} calls, {} runs at a time, in {:.2} s: {:.1} CPU s ({:.2} ms a call)",
            m.calls,
            m.lanes,
            m.wall_s,
            s(m.cpu_ms),
            m.cpu_ms as f64 / m.calls.max(1) as f64,
        ),
        "(a floor)",
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let budget_ms = 9_000 * cores as u64;
    let parts = tools_cpu_ms + m.cpu_ms;
    out.row(
        &format!("the two floors together, against what {cores} cores have in 1.5× the ideal ({:.0} CPU s)", s(budget_ms)),
        &format!(
            "{:.1} CPU s: {:.0} %, leaving {:.1} CPU s for every run's agent loop, its calls' parsing and its record",
            s(parts),
            100.0 * parts as f64 / budget_ms as f64,
            s(budget_ms.saturating_sub(parts)),
        ),
        "(a floor)",
    );
    let c = "concurrency";
    out.set(c, "floor_model_calls", m.calls);
    out.set(c, "floor_model_lanes", m.lanes);
    out.set(c, "floor_model_wall_s", m.wall_s);
    out.set(c, "floor_model_cpu_ms", m.cpu_ms);
    out.set(c, "floor_model_failed", m.failed);
    out.set(c, "floors_cpu_ms", parts);
}

#[cfg(test)]
mod tests {
    use super::*;
    use dispatch_test_support::mock::MockServer;

    #[test]
    fn the_floor_makes_each_runs_three_calls_as_its_agent_would() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let script = serde_json::from_value(json!({
            "steps": [], "record_bodies": false,
            "fallback": {"kind": "rounds", "tool_rounds": 2, "text": "done"}
        }))
        .expect("a script");
        let mock = rt.block_on(MockServer::start(script)).expect("the mock");
        let f = model_calls(&rt, &mock.base_url(), 4);
        assert_eq!((f.calls, f.failed), (12, 0));
        assert_eq!(mock.request_count(), 12);
        // The mock answers the first two calls of a run with the tool, the
        // third with the text: the runs' conversation, round by round.
        let url = format!("{}/chat/completions", mock.base_url());
        let answer = |round: usize| {
            let body = body(round).to_string();
            rt.block_on(async {
                let r = reqwest::Client::new().post(&url).body(body).send().await;
                r.expect("the mock answers").text().await.expect("a body")
            })
        };
        let (second, last) = (answer(1), answer(2));
        assert!(
            second.contains(r#""finish_reason":"tool_calls""#),
            "{second}"
        );
        assert!(last.contains(r#""finish_reason":"stop""#), "{last}");
    }
}
