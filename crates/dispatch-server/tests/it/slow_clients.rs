//! A server that holds up, over real sockets on loopback: idle
//! connections over the cap do not keep a real client out, idle and
//! slowloris connections are closed after the header-read timeout, and
//! the server answers throughout. The timeout is short here (1 s) so the
//! tests wait on conditions, with deadlines, not on the clock.

use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::TestServer;
use dispatch_server::limits::HttpLimits;

const CAP: usize = 8;

fn server() -> TestServer {
    TestServer::start_configured(|s| {
        s.with_limits(HttpLimits {
            max_connections: Some(CAP),
            header_timeout: Duration::from_secs(1),
            ..HttpLimits::default()
        })
    })
}

/// Whether the server closed `conn` (EOF, or a reset), reading whatever it
/// sent first; `false` when it is still open after `wait`.
fn closed_within(conn: &mut TcpStream, wait: Duration) -> bool {
    conn.set_read_timeout(Some(wait)).expect("a read timeout");
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// `GET /healthz` from a real client, retried until it answers 200 (deadline 30 s).
fn reachable(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = dispatch_server::client::request(
            &format!("http://{addr}"),
            "GET",
            "/healthz",
            &[],
            None,
        );
        if answer.as_ref().is_ok_and(|a| a.status == 200) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the API stayed unreachable: {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn idle_sockets_over_the_cap_do_not_keep_a_real_client_out() {
    let server = server();
    let addr = server.addr;
    let mut idle: Vec<TcpStream> = (0..CAP * 4)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    // Those over the cap are answered (503) or closed at once…
    let mut refused = 0;
    let mut answered_busy = 0;
    for conn in idle.iter_mut().skip(CAP) {
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("a read timeout");
        let mut text = Vec::new();
        let _ = conn.read_to_end(&mut text);
        refused += 1;
        if String::from_utf8_lossy(&text).starts_with("HTTP/1.1 503") {
            answered_busy += 1;
        }
    }
    assert_eq!(refused, CAP * 3);
    assert!(answered_busy > 0, "the cap says why");
    // …and a real client gets in, once the idle ones time out.
    reachable(addr);
    for (i, conn) in idle.iter_mut().take(CAP).enumerate() {
        assert!(
            closed_within(conn, Duration::from_secs(30)),
            "idle socket {i} was never closed"
        );
    }
}

#[test]
fn a_slowloris_socket_is_closed_after_the_header_timeout() {
    let server = server();
    let addr = server.addr;
    let mut slow = TcpStream::connect(addr).expect("connect");
    slow.write_all(format!("GET /v1/runs HTTP/1.1\r\nhost: {addr}\r\n").as_bytes())
        .expect("a partial head");
    // One header byte at a time, never the blank line: the server must
    // close it, however long we keep going (deadline 30 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut closed = false;
    while Instant::now() < deadline {
        if slow.write_all(b"x").is_err() || closed_within(&mut slow, Duration::from_millis(100)) {
            closed = true;
            break;
        }
    }
    assert!(closed, "the slowloris socket was kept open");
    reachable(addr);
    // A keep-alive connection that went idle after an answer is closed too.
    let mut kept = TcpStream::connect(addr).expect("connect");
    kept.write_all(format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
        .expect("a request");
    let mut buf = [0u8; 1024];
    kept.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    let n = kept.read(&mut buf).expect("an answer");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut kept, Duration::from_secs(30)),
        "the idle keep-alive connection stayed open"
    );
}

#[test]
fn a_slow_body_is_cut_off() {
    let server = TestServer::start_configured(|s| {
        s.with_limits(HttpLimits {
            body_timeout: Duration::from_secs(1),
            ..HttpLimits::default()
        })
    });
    let addr = server.addr;
    let mut slow = TcpStream::connect(addr).expect("connect");
    slow.write_all(
        format!("POST /v1/parcels HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{{")
            .as_bytes(),
    )
    .expect("the head");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut answer = Vec::new();
    slow.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("a read timeout");
    while Instant::now() < deadline {
        if slow.write_all(b" ").is_err() {
            break;
        }
        let mut buf = [0u8; 1024];
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    assert!(Instant::now() < deadline, "the slow body was never cut off");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );
}
