//! TLS from the clients' side, end to end: the CLI's remote mode and a
//! native agent's model calls go through `https://` on loopback (a
//! TLS-terminating proxy of `dispatch-test-support` with a CA made for the
//! test, in front of a plain `dispatch server` and of the mock model).
//! `DISPATCH_CACERT` names that CA: with it both work, without it both
//! refuse the certificate and say so.

use crate::common;
use crate::native_common;
use crate::remote_common;

use std::net::SocketAddr;

use common::Dispatch;
use dispatch_test_support::tls_proxy::TlsProxy;
use native_common::{Mock, native_agent, text};
use remote_common::{Client, Server};
use serde_json::json;

#[test]
fn the_cli_reaches_a_server_behind_https_with_dispatch_cacert() {
    let server = Server::start(&[]);
    let upstream: SocketAddr = server.host.parse().expect("host:port");
    let proxy = TlsProxy::start(upstream).expect("the proxy starts");
    let client = Client::to(&proxy.url());
    let agent = client.agent("hello", "echo hello through the proxy");

    // The run's log streams back through TLS as it is written.
    let out = client
        .command()
        .env("DISPATCH_CACERT", proxy.ca_pem())
        .args(["run", &agent])
        .output()
        .expect("dispatch runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("hello through the proxy"), "{stdout}");

    // Without the CA: one line about the certificate, and how to fix it.
    let out = client
        .command()
        .env_remove("DISPATCH_CACERT")
        .args(["ps", "-a"])
        .output()
        .expect("dispatch runs");
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("certificate") && stderr.contains("DISPATCH_CACERT"),
        "{stderr}"
    );
}

#[test]
fn a_native_agent_calls_its_model_over_https_with_dispatch_cacert() {
    let d = Dispatch::new();
    let mock = Mock::start(json!([text("answered over tls", 5, 2)]));
    let upstream = mock.server.addr();
    let proxy = TlsProxy::start(upstream).expect("the proxy starts");
    let line = format!(
        "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {}/v1",
        proxy.url()
    );
    let agent = native_agent(d.dir.path(), "secure", &line);
    let agent = agent.to_str().expect("utf-8");

    let out = d
        .command()
        .env("DISPATCH_CACERT", proxy.ca_pem())
        .env_remove("LLM_BASE_URL")
        .args(["run", agent, "--job", "{}"])
        .output()
        .expect("dispatch runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("answered over tls"), "{stdout}");
    assert_eq!(mock.requests().len(), 1, "the call went through the proxy");

    // Without the CA the call fails on the certificate, and the run says so.
    let out = d
        .command()
        .env_remove("DISPATCH_CACERT")
        .env_remove("LLM_BASE_URL")
        .args(["run", agent, "--job", "{}"])
        .output()
        .expect("dispatch runs");
    assert!(!out.status.success());
    let id = d.ok(&["ps", "-a", "-q"]);
    let id = id.lines().next().expect("the second run");
    let doc = d.inspect(id);
    assert_eq!(doc["status"], "failed", "{doc}");
    assert!(
        doc.to_string().to_lowercase().contains("certificate"),
        "the failure names the certificate: {doc}"
    );
    assert_eq!(mock.requests().len(), 1, "nothing reached the model");
}

#[test]
fn a_bad_dispatch_cacert_refuses_a_native_run_in_one_line() {
    let d = Dispatch::new();
    let junk = d.dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    let agent = native_agent(
        d.dir.path(),
        "secure",
        "MODEL gpt-4o-mini PROVIDER openai_chat BASE_URL http://127.0.0.1:9/v1",
    );
    let out = d
        .command()
        .env("DISPATCH_CACERT", &junk)
        .env_remove("LLM_BASE_URL")
        .args(["run", agent.to_str().expect("utf-8"), "--job", "{}"])
        .output()
        .expect("dispatch runs");
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&junk.display().to_string()) && stderr.contains("DISPATCH_CACERT"),
        "{stderr}"
    );
}
