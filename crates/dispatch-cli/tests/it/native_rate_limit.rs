//! `RATE_LIMIT` of native agents, from the binary, against the scripted
//! mock model server on loopback: concurrent runs never send more requests
//! in any window than the limit allows, a call that waited records a
//! `rate_limit_wait` event, and a provider's 429 makes the other runs wait
//! out its `retry-after` too.
//!
//! Scaled down to keep the test short: `REQUESTS 5/5s` (the same sliding
//! window as `500/min`, with a shorter window). The mock counts requests by
//! arrival, a few milliseconds after the store admitted them: windows are
//! checked 300 ms shorter than the limit's to absorb that delivery jitter.

use crate::common;
use crate::native_common;

use common::{Dispatch, eventually};
use native_common::{Mock, events_of, native_agent};
use serde_json::json;

fn model_line(mock: &Mock) -> String {
    format!(
        "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}",
        mock.url()
    )
}

#[test]
fn ten_concurrent_runs_never_exceed_the_models_request_limit() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([]));
    let dir = native_agent(
        d.dir.path(),
        "limited",
        &format!(
            "{}\nRATE_LIMIT MODEL gpt-4o-mini REQUESTS 5/5s",
            model_line(&mock)
        ),
    );
    let path = dir.to_str().expect("utf-8");
    let ids: Vec<String> = (0..10)
        .map(|i| d.ok(&["run", path, "--detach", "--job", &format!(r#"{{"n":{i}}}"#)]))
        .collect();
    let mut waits = Vec::new();
    for id in &ids {
        let doc = d.wait_terminal(id);
        assert_eq!(doc["status"], "succeeded", "{doc:#}");
        waits.extend(events_of(&doc, "rate_limit_wait"));
    }
    let mut at: Vec<u64> = mock.requests().iter().map(|r| r.received_at_us).collect();
    assert_eq!(at.len(), 10, "one call per run");
    at.sort();
    const WINDOW_US: u64 = 5_000_000 - 300_000;
    for (i, t) in at.iter().enumerate() {
        let inside = at[..=i].iter().filter(|s| **s + WINDOW_US > *t).count();
        assert!(
            inside <= 5,
            "{inside} requests within 5 s up to request {i}: {at:?}"
        );
    }
    assert!(
        at[9] - at[0] >= 5_000_000 - 300_000,
        "the second five waited for the window: {at:?}"
    );
    assert!(waits.len() >= 5, "the calls that waited say so: {waits:?}");
    let w = &waits[0];
    assert_eq!(w["model"], "gpt-4o-mini");
    assert!(w["waited_ms"].as_i64().unwrap_or(0) > 0, "{w}");
}

#[test]
fn a_429_makes_every_run_of_the_model_wait_its_retry_after() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([
        {"kind": "error", "status": 429, "retry_after": 2, "message": "slow down"}
    ]));
    let dir = native_agent(
        d.dir.path(),
        "limited",
        &format!(
            "{}\nRATE_LIMIT MODEL gpt-4o-mini REQUESTS 100/min",
            model_line(&mock)
        ),
    );
    let path = dir.to_str().expect("utf-8");
    let first = d.ok(&["run", path, "--detach"]);
    eventually(20, "the first call to be answered 429", || {
        !mock.requests().is_empty()
    });
    let second = d.ok(&["run", path, "--detach"]);
    let second_doc = d.wait_terminal(&second);
    assert_eq!(d.wait_terminal(&first)["status"], "succeeded");
    assert_eq!(second_doc["status"], "succeeded", "{second_doc:#}");
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 3, "the 429, its retry, the second run's call");
    let refused = reqs[0].received_at_us;
    assert!(
        reqs[1..]
            .iter()
            .all(|r| r.received_at_us >= refused + 1_900_000),
        "no call went out during the retry-after: {:?}",
        reqs.iter()
            .map(|r| r.received_at_us - refused)
            .collect::<Vec<_>>()
    );
    let waits = events_of(&second_doc, "rate_limit_wait");
    assert_eq!(waits.len(), 1, "{second_doc:#}");
    assert!(
        waits[0]["waited_ms"].as_i64().unwrap_or(0) >= 1000,
        "{:?}",
        waits[0]
    );
}

#[test]
fn bad_rate_limit_and_concurrency_lines_name_their_line() {
    let d = Dispatch::new();
    for (line, want) in [
        (
            "RATE_LIMIT MODEL gpt-4o-mini REQUESTS lots",
            "invalid rate `lots`",
        ),
        (
            "RATE_LIMIT gpt-4o-mini REQUESTS 5/min",
            "MODEL or PROVIDER first",
        ),
        (
            "CONCURRENCY KEY customer MAX 2",
            "must start with `payload.`",
        ),
        ("CONCURRENCY KEY payload.customer MAX 0", "at least 1"),
    ] {
        let dir = native_agent(d.dir.path(), "bad", &format!("MODEL gpt-4o-mini\n{line}"));
        let out = d.run(&["build", dir.to_str().expect("utf-8")]);
        assert_ne!(out.status.code(), Some(0), "{line}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("line 4") && stderr.contains(want),
            "{line}: {stderr}"
        );
    }
}
