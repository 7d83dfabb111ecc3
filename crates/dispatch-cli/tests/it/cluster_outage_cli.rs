//! A database outage longer than the server's `--enqueue-retry` is still
//! invisible to `dispatch run --host`: the server answers 503 with
//! `Retry-After` (nothing created), the CLI says once that it tries again,
//! and the run is created exactly once when the database is back. A real
//! server reaching PostgreSQL through a fault-injecting TCP proxy.

use crate::remote_common;
use dispatch_test_support::proxy;

use std::time::Duration;

use proxy::Proxy;
use remote_common::{Client, Server, postgres};

#[test]
fn run_through_a_server_rides_out_an_outage_longer_than_its_patience() {
    let Some(db) = postgres() else { return };
    let upstream = "127.0.0.1:5432".parse().expect("an address");
    let proxy = Proxy::start(upstream).expect("the proxy starts");
    let server = Server::start_on(
        Some(&proxy.url_for(db.url())),
        &["--workers", "0", "--enqueue-retry", "0s"],
    );
    let client = Client::new(&server);
    let agent = client.agent("patient", "true");
    client.ok(&["run", &agent, "--detach"]);
    let count = || {
        let (_, body) = server.call("GET", "/v1/runs", None);
        body["runs"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(count(), 1);

    proxy.down();
    let healer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(2500));
        proxy.heal();
        proxy
    });
    let out = client
        .command()
        .args(["run", &agent, "--detach"])
        .output()
        .expect("dispatch runs");
    let _proxy = healer.join().expect("healed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("trying again").count(), 1, "said once: {err}");
    assert_eq!(count(), 2, "created exactly once");
}
