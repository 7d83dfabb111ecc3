//! `dispatch-bench native --only memory`: the worker's memory per native
//! run waiting on its model. The runs of the concurrency agent do their two
//! tool rounds at once (the LOCAL tool runs each time); the mock then holds
//! their third call for an hour, so each run waits with its whole
//! conversation in flight. The worker is sampled idle and once each level
//! of `--memory-levels` runs waits; memory per run is the difference
//! between two samples over the difference in runs (what a run costs, not
//! what the worker costs).

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dispatch_runtime::Layout;
use dispatch_runtime::launch;
use dispatch_store::PgStore;
use dispatch_test_support::testdb::TestDatabase;
use serde_json::json;

use super::report::Report;
use super::{Args, launch_request_with, script, serve_mock, tool_agent, worker_trusting};

/// One look at the worker's memory, in KiB (threads: a count).
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    rss: u64,
    anon: u64,
    threads: u64,
}

fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn sample(pid: u32) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    Sample {
        rss: field(&status, "VmRSS:"),
        anon: field(&status, "RssAnon:"),
        threads: field(&status, "Threads:"),
    }
}

/// The median of three samples a second apart (the worker settles: a
/// run's last checkpoint and log lines are written as its call goes out).
fn settled(pid: u32) -> Sample {
    let mut s: Vec<Sample> = (0..3)
        .map(|_| {
            std::thread::sleep(Duration::from_secs(1));
            sample(pid)
        })
        .collect();
    s.sort_by_key(|s| s.rss);
    s[1]
}

/// KiB per run between two samples `runs` apart.
fn per_run(a: Sample, b: Sample, runs: usize) -> [f64; 2] {
    let d = |x: u64, y: u64| (y as f64 - x as f64) / runs as f64;
    [d(a.rss, b.rss), d(a.anon, b.anon)]
}

/// How the mock model is reached.
#[derive(Clone, Copy)]
enum Transport {
    /// Plain HTTP/1.1: a connection per call in flight.
    Http1,
    /// TLS, HTTP/2 by ALPN (as the providers serve): calls share a connection.
    Http2,
}

impl Transport {
    /// The key of its results in the JSON report.
    fn key(self) -> &'static str {
        match self {
            Transport::Http1 => "memory",
            Transport::Http2 => "memory_h2",
        }
    }

    /// How the rows name it.
    fn says(self) -> &'static str {
        match self {
            Transport::Http1 => "HTTP/1.1 to the mock",
            Transport::Http2 => "HTTPS, HTTP/2 by ALPN, as providers are reached",
        }
    }
}

/// Both transports, one after the other (each its own database and worker).
pub(super) fn measure(
    rt: &tokio::runtime::Runtime,
    dispatch: &Path,
    root: &Path,
    a: &Args,
    out: &mut Report,
) {
    for t in [Transport::Http1, Transport::Http2] {
        measure_over(rt, dispatch, root, a, out, t);
    }
}

/// A run's input: `go`, or `kib` KiB of words (text a model would read).
fn input(kib: usize) -> serde_json::Value {
    if kib == 0 {
        return json!("go");
    }
    let words = ["order", "shipped", "lookup", "customer", "parcel", "status"];
    let mut text = String::with_capacity(kib * 1024 + 16);
    let mut i = 0;
    while text.len() < kib * 1024 {
        text.push_str(words[i % words.len()]);
        text.push(' ');
        i += 1;
    }
    text.truncate(kib * 1024);
    json!(text)
}

fn measure_over(
    rt: &tokio::runtime::Runtime,
    dispatch: &Path,
    root: &Path,
    a: &Args,
    out: &mut Report,
    t: Transport,
) {
    let levels = &a.memory_levels;
    let Some(db) = rt.block_on(TestDatabase::create()) else {
        out.row(
            &format!("memory per waiting run ({})", t.says()),
            "skipped (PostgreSQL unreachable)",
            "",
        );
        return;
    };
    const HOLD_MS: u64 = 3_600_000;
    let script = script(json!({
            "steps": [], "record_bodies": false,
            "fallback": {"kind": "rounds", "tool_rounds": 2, "delay_ms": 0,
                         "answer_delay_ms": HOLD_MS, "text": "done"}
    }));
    let mock = serve_mock(rt, a.mock_port, script, matches!(t, Transport::Http2));
    let state = root.join(t.key());
    let layout = Layout::new(&state);
    // The held call must not time out (TIMEOUT LLM is 2 minutes by default).
    tool_agent(
        root,
        "native-mem",
        &mock.base_url(),
        "TIMEOUT LLM 2h\n",
        &layout,
    );
    let store = rt
        .block_on(PgStore::connect(db.url(), 4))
        .expect("connects");
    let request = launch_request_with("native-mem", input(a.memory_input_kib));
    let most = levels.last().copied().unwrap_or(0);
    let cacert = mock.ca_pem();
    let mut w = worker_trusting(dispatch, db.url(), &state, most, cacert.as_deref());
    std::thread::sleep(Duration::from_secs(1));
    let idle = settled(w.id());
    let mut samples = vec![(0usize, idle)];
    let mut submitted = 0;
    for &level in levels {
        rt.block_on(async {
            for _ in submitted..level {
                launch::create(&store, &layout, &request)
                    .await
                    .expect("created");
            }
        });
        submitted = level;
        // Each run's third request is the one held.
        let deadline = Instant::now() + Duration::from_secs(a.timeout);
        while mock.requests().len() < 3 * level && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        let waiting = mock.requests().len().saturating_sub(2 * level).min(level);
        if waiting < level {
            eprintln!(
                "dispatch-bench native: only {waiting} of {level} runs were waiting after {} s (raise --timeout)",
                a.timeout
            );
        }
        samples.push((level, settled(w.id())));
    }
    let _ = w.kill();
    let _ = w.wait();
    let floor = http_floor(&mock, levels);
    let m = t.key();
    out.set(m, "input_kib", a.memory_input_kib as u64);
    out.set(m, "idle_rss_kb", idle.rss);
    out.set(m, "idle_anon_kb", idle.anon);
    out.set(m, "idle_threads", idle.threads);
    let mut levels_json = Vec::new();
    for pair in samples.windows(2) {
        let ((n0, s0), (n1, s1)) = (pair[0], pair[1]);
        let [rss, anon] = per_run(s0, s1, n1 - n0);
        out.row(
            &format!(
                "worker with {n1} native runs waiting on their third model call ({}{})",
                t.says(),
                match a.memory_input_kib {
                    0 => String::new(),
                    k => format!(", an input of {k} KiB"),
                }
            ),
            &format!(
                "RSS {:.1} MB, anonymous {:.1} MB, {} threads; {n0} → {n1} runs: {rss:.1} KB RSS, {anon:.1} KB anonymous per run",
                s1.rss as f64 / 1024.0,
                s1.anon as f64 / 1024.0,
                s1.threads
            ),
            "",
        );
        levels_json.push(json!({
            "runs": n1, "rss_kb": s1.rss, "anon_kb": s1.anon,
            "threads": s1.threads,
            "rss_kb_per_run_since_previous": rss, "anon_kb_per_run_since_previous": anon,
        }));
    }
    out.set(m, "levels", levels_json);
    // The headline: between the first and the last level (the worker's own
    // warm-up, its pools and caches, is in the first).
    if let (Some(&(n1, s1)), Some(&(n2, s2))) = (samples.get(1), samples.last())
        && n2 > n1
    {
        let [rss, anon] = per_run(s1, s2, n2 - n1);
        out.row(
            &format!(
                "memory per waiting native run ({n1} → {n2} runs waiting; {})",
                t.says()
            ),
            &format!("{rss:.1} KB RSS ({anon:.1} KB anonymous)"),
            "≤ 40 KB",
        );
        out.set(m, "rss_kb_per_run", rss);
        out.set(m, "anon_kb_per_run", anon);
    }
    // Beside it, in the same minutes: what the HTTP client alone holds per
    // call waiting on the same mock (its connection, buffers and tasks).
    if let Some(kb) = floor {
        out.row(
            &format!(
                "beside: the worker's HTTP client alone (dispatch_http, {}), {} → {} calls waiting, in a process of its own",
                t.says(),
                levels[0],
                most
            ),
            &format!("{kb:.1} KB RSS per waiting call (a floor of the runs' figure above)"),
            "",
        );
        out.set(m, "http_client_rss_kb_per_call", kb);
    }
}

/// The body of a third model call (two tool rounds done): the mock holds it.
fn third_call_body() -> String {
    let call = |n: u64| {
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": format!("call_{n}"),
               "type": "function", "function": {"name": "lookup", "arguments": format!("{{\"round\":{n}}}")}}]})
    };
    let result = |n: u64| json!({"role": "tool", "tool_call_id": format!("call_{n}"), "content": "order: shipped"});
    json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": "go"}, call(1), result(1), call(2), result(2)],
           "tools": [{"type": "function", "function": {"name": "lookup", "description": "Find an order",
                      "parameters": {"type": "object"}}}]})
    .to_string()
}

/// `dispatch-bench native __hold-calls URL` (started by [`http_floor`]):
/// the worker's HTTP client alone; each line `N` read from stdin brings the
/// calls in flight to N (each a third call the mock holds), then `ok`.
pub(super) fn hold_calls(url: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = dispatch_runtime::native::client();
    let body = bytes::Bytes::from(third_call_body());
    let endpoint: std::sync::Arc<str> =
        format!("{}/chat/completions", url.trim_end_matches('/')).into();
    let _guard = rt.enter();
    let mut started = 0usize;
    println!("ready");
    let stdin = std::io::stdin();
    for line in stdin.lock().lines().map_while(Result::ok) {
        let Ok(n) = line.trim().parse::<usize>() else {
            break;
        };
        for _ in started..n {
            let (endpoint, body) = (endpoint.clone(), body.clone());
            // As a model call goes: over the origin's direct HTTP/2
            // connection when it has one, else through reqwest.
            rt.spawn(async move {
                if let Ok(r) =
                    dispatch_agent::send_model_request(client, &endpoint, &[], body).await
                {
                    let _ = r.bytes().await;
                }
            });
        }
        started = started.max(n);
        // Let the runtime send them (it runs while this thread waits).
        rt.block_on(tokio::time::sleep(Duration::from_millis(500)));
        println!("ok");
    }
}

/// KiB of RSS per call waiting, of the HTTP client alone (see [`hold_calls`]),
/// between the first and last of `levels`.
fn http_floor(mock: &dispatch_test_support::mock::MockServer, levels: &[usize]) -> Option<f64> {
    let (first, last) = (*levels.first()?, *levels.last()?);
    if last <= first {
        return None;
    }
    let me = std::env::current_exe().ok()?;
    let mut cmd = Command::new(me);
    cmd.args(["native", "__hold-calls", &mock.base_url()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(ca) = mock.ca_pem() {
        cmd.env("DISPATCH_CACERT", ca);
    }
    let mut child = cmd.spawn().ok()?;
    let mut stdin = child.stdin.take()?;
    let mut lines = std::io::BufReader::new(child.stdout.take()?).lines();
    let mut samples = Vec::new();
    let before = mock.requests().len();
    if lines.next().and_then(Result::ok).as_deref() == Some("ready") {
        for n in [first, last] {
            let _ = writeln!(stdin, "{n}");
            let _ = lines.next();
            let deadline = Instant::now() + Duration::from_secs(60);
            while mock.requests().len() < before + n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            samples.push(settled(child.id()));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    match samples.as_slice() {
        [a, b] => Some(per_run(*a, *b, last - first)[0]),
        _ => None,
    }
}
