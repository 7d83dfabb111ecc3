//! Promise 9: REQUIRES dependencies are probed before the run is created.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpListener;

use common::Dispatch;

/// A loopback HTTP server answering every request with `status`, for `n` requests.
fn serve(status: &'static str, n: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(n) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
        }
    });
    port
}

fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}

#[test]
fn a_healthy_dependency_is_injected_as_an_env_var() {
    let d = Dispatch::new();
    let port = serve("200 OK", 1);
    let agent = d.agent_with(
        "needy",
        "printf '%s %s' \"$REDIS_URL\" \"$API\" > \"$DISPATCH_OUTPUT\"\n",
        &format!(
            "REQUIRES REDIS_URL redis://127.0.0.1:6379\nREQUIRES API http://127.0.0.1:{port}/healthz\n"
        ),
    );
    let id = d.detach(&agent, "{}");
    let doc = d.wait_terminal(&id);
    assert_eq!(doc["status"], "succeeded", "{doc:#}");
    assert_eq!(
        doc["output"],
        format!("redis://127.0.0.1:6379 http://127.0.0.1:{port}/healthz")
    );
}

#[test]
fn a_missing_dependency_rejects_the_dispatch_at_once_naming_it() {
    let d = Dispatch::new();
    let port = closed_port();
    let agent = d.agent_with(
        "lonely",
        "exit 0\n",
        &format!("REQUIRES QUEUE_URL redis://127.0.0.1:{port}\n"),
    );
    let err = d.fails(&["run", agent.to_str().expect("utf-8"), "--detach"], 125);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with(&format!(
            "error: dependency QUEUE_URL (redis://127.0.0.1:{port}) is unreachable"
        )),
        "{err}"
    );
    assert_eq!(d.ok(&["ps", "-a", "-q"]), "", "no run was created");
}

#[test]
fn an_unhealthy_http_dependency_rejects_the_dispatch() {
    let d = Dispatch::new();
    let port = serve("503 Service Unavailable", 1);
    let agent = d.agent_with(
        "sickly",
        "exit 0\n",
        &format!("REQUIRES API http://127.0.0.1:{port}/healthz\n"),
    );
    let err = d.fails(&["run", agent.to_str().expect("utf-8"), "--detach"], 125);
    assert!(
        err.contains("dependency API") && err.contains("unhealthy (HTTP 503"),
        "{err}"
    );
}
