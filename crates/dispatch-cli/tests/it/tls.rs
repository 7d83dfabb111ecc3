//! `dispatch server --tls-cert/--tls-key` serves HTTPS, and `dispatch --host
//! https://… --cacert ca.pem` talks to it; without the CA the CLI refuses
//! with one line about the certificate. The CA and the server's certificate
//! are made here (rcgen), for 127.0.0.1.

use crate::remote_common;

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use remote_common::{Client, Server};

/// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir`: a CA, and a
/// certificate for 127.0.0.1 it signed.
fn make_certificates(dir: &Path) {
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("the CA signs itself");
    let key = KeyPair::generate().expect("a server key");
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().expect("an address")));
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .expect("the CA signs it");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("ca.pem");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("cert.pem");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("key.pem");
}

#[test]
fn the_cli_runs_and_lists_over_https_with_the_servers_ca() {
    let certs = tempfile::tempdir().expect("tempdir");
    make_certificates(certs.path());
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let server = Server::start(&[
        "--tls-cert",
        cert.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ]);
    assert!(
        server.host.starts_with("https://127.0.0.1:"),
        "{}",
        server.host
    );
    let client = Client::new(&server);
    let ca = certs.path().join("ca.pem");
    let ca = ca.to_str().expect("utf-8");

    let agent = client.agent("hello", "echo hello over tls");
    let out = client.run(&["--cacert", ca, "run", &agent]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "run over https: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("hello over tls"), "{stdout}");
    let listed = client.ok(&["--cacert", ca, "ps", "--all"]);
    assert!(listed.contains("succeeded"), "{listed}");

    // The CA from the environment works the same.
    let out = client
        .command()
        .env("DISPATCH_CACERT", ca)
        .args(["ps", "--all"])
        .output()
        .expect("dispatch runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn without_the_ca_the_cli_refuses_the_certificate_in_one_line() {
    let certs = tempfile::tempdir().expect("tempdir");
    make_certificates(certs.path());
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let server = Server::start(&[
        "--tls-cert",
        cert.to_str().expect("utf-8"),
        "--tls-key",
        key.to_str().expect("utf-8"),
    ]);
    let client = Client::new(&server);
    let out = client.run(&["ps"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    assert!(stderr.contains("--cacert"), "{stderr}");

    // A plain-HTTP client gets no answer from the TLS port.
    let plain = server.host.replace("https://", "http://");
    let out = client
        .command()
        .env("DISPATCH_HOST", &plain)
        .args(["ps"])
        .output()
        .expect("dispatch runs");
    assert!(!out.status.success(), "plain HTTP is not served");
}

#[test]
fn a_bad_certificate_file_stops_the_server_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dispatch"))
        .args(["server", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&junk)
        .arg("--tls-key")
        .arg(&junk)
        .env("DISPATCH_ROOT", dir.path().join(".dispatch"))
        .env_remove("DISPATCH_DATABASE_URL")
        .output()
        .expect("dispatch runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--tls-cert takes a PEM"), "{stderr}");
}
