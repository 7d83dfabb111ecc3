//! A graceful shutdown does not wait for streaming clients: with an open
//! SSE stream of a run's events, a followed log and the dashboard's live
//! streams, SIGTERM still ends `dispatch server` (each stream ends, the
//! clients see the end of their stream).

use crate::remote_common;

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use dispatch_test_support::http;
use remote_common::{Client, Server};

/// Opens `path` on the server and reads its first bytes: the stream is live.
fn open(server: &Server, path: &str) -> Box<dyn Read + Send> {
    let response = http::get(&format!("http://{}{path}", server.host))
        .timeout(Duration::from_secs(120))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    Box::new(response.into_reader())
}

#[test]
fn sigterm_ends_open_sse_streams_and_the_server_exits() {
    // No workers: the run stays queued, so its streams would never end by themselves.
    let mut server = Server::start(&["--workers", "0"]);
    let client = Client::new(&server);
    let agent = client.agent("idle", "echo never\n");
    let id = client.ok(&["run", "-d", &agent]);
    let mut events = BufReader::new(open(&server, &format!("/v1/runs/{id}/events")));
    let mut first = String::new();
    events.read_line(&mut first).expect("the first event");
    assert!(
        first.starts_with("id:") || first.starts_with("event:") || first.starts_with("data:"),
        "{first}"
    );
    let log = open(&server, &format!("/v1/runs/{id}/logs?follow=true"));
    let live_runs = open(&server, "/ui/live/runs");
    let live_run = open(&server, &format!("/ui/live/runs/{id}?seq=0&v=0"));
    let live_log = open(&server, &format!("/ui/live/runs/{id}/log"));

    // Each stream ends once the server stops; read them to their end meanwhile.
    let readers: Vec<_> = [
        Box::new(events) as Box<dyn Read + Send>,
        log,
        live_runs,
        live_run,
        live_log,
    ]
    .into_iter()
    .map(|mut r| {
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            r.read_to_end(&mut sink).is_ok()
        })
    })
    .collect();
    assert!(
        server.terminate_within(Duration::from_secs(60)),
        "the server still runs a minute after SIGTERM with streams open"
    );
    for r in readers {
        r.join().expect("a reader");
    }
}
