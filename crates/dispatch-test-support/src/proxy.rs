//! A fault-injecting TCP proxy on loopback, between a worker and its
//! database, for the chaos benchmark and the partition and outage tests.
//!
//! - [`Proxy::partition`]: bytes stop flowing both ways and new connections
//!   hang, as when a network drops every packet; [`Proxy::heal`] lets the
//!   held bytes through again (TCP's buffers keep the streams whole).
//! - [`Proxy::down`]: every connection is cut and new ones are closed at
//!   once, as when the database restarts; [`Proxy::heal`] accepts again.
//!
//! Plain threads, so it keeps working while the code under test blocks.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

const FORWARD: u8 = 0;
const PARTITION: u8 = 1;
const DOWN: u8 = 2;

/// How often a paused pump looks at the proxy's mode again.
const POLL: Duration = Duration::from_millis(10);

pub struct Proxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    closed: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let proxy = Proxy {
            addr,
            mode: Arc::new(AtomicU8::new(FORWARD)),
            open: Arc::default(),
            closed: Arc::new(AtomicBool::new(false)),
        };
        let (mode, open, closed) = (proxy.mode.clone(), proxy.open.clone(), proxy.closed.clone());
        std::thread::Builder::new()
            .name("proxy-accept".into())
            .spawn(move || accept_loop(listener, upstream, mode, open, closed))?;
        Ok(proxy)
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` (`postgres://user@host:port/db`) with its host and port
    /// replaced by the proxy's.
    pub fn url_for(&self, url: &str) -> String {
        let Some((scheme, rest)) = url.split_once("://") else {
            return url.to_string();
        };
        let (auth, tail) = match rest.split_once('@') {
            Some((auth, tail)) => (format!("{auth}@"), tail),
            None => (String::new(), rest),
        };
        let path = tail.find('/').map_or("", |i| &tail[i..]);
        format!("{scheme}://{auth}{}{path}", self.addr)
    }

    /// Nothing flows, nothing is refused: a network partition.
    pub fn partition(&self) {
        self.mode.store(PARTITION, Ordering::SeqCst);
    }

    /// Every connection cut, new ones closed: the database restarting.
    pub fn down(&self) {
        self.mode.store(DOWN, Ordering::SeqCst);
        let open = std::mem::take(&mut *self.open.lock().unwrap_or_else(PoisonError::into_inner));
        for stream in open {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Back to forwarding.
    pub fn heal(&self) {
        self.mode.store(FORWARD, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        self.down();
    }
}

fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: Arc<AtomicU8>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    closed: Arc<AtomicBool>,
) {
    while !closed.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(_) => continue,
        };
        if mode.load(Ordering::SeqCst) == DOWN {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let _ = client.set_nonblocking(false);
        let Ok(server) = TcpStream::connect(upstream) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let pair = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        );
        let (Ok(c1), Ok(s1), Ok(c2), Ok(s2)) = pair else {
            continue;
        };
        {
            let mut list = open.lock().unwrap_or_else(PoisonError::into_inner);
            list.push(client);
            list.push(server);
        }
        let m = mode.clone();
        let _ = std::thread::Builder::new()
            .name("proxy-up".into())
            .spawn(move || pump(c1, s1, &m));
        let m = mode.clone();
        let _ = std::thread::Builder::new()
            .name("proxy-down".into())
            .spawn(move || pump(s2, c2, &m));
    }
}

/// Copies `from` to `to`; holds the bytes while partitioned; ends when
/// either side closes or the proxy goes down.
fn pump(mut from: TcpStream, mut to: TcpStream, mode: &AtomicU8) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match mode.load(Ordering::SeqCst) {
            DOWN => break,
            PARTITION => {
                std::thread::sleep(POLL);
                continue;
            }
            _ => {}
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        // Read just as a partition began: held until it heals.
        while mode.load(Ordering::SeqCst) == PARTITION {
            std::thread::sleep(POLL);
        }
        if mode.load(Ordering::SeqCst) == DOWN || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_pointed_at_the_proxy() {
        let proxy = Proxy::start("127.0.0.1:9".parse().expect("addr")).expect("proxy");
        let port = proxy.addr().port();
        assert_eq!(
            proxy.url_for("postgres://postgres@127.0.0.1:5432/db_1"),
            format!("postgres://postgres@127.0.0.1:{port}/db_1")
        );
        assert_eq!(
            proxy.url_for("postgres://localhost/x"),
            format!("postgres://127.0.0.1:{port}/x")
        );
    }

    #[test]
    fn bytes_wait_out_a_partition_and_a_downed_proxy_cuts_connections() {
        let echo = TcpListener::bind("127.0.0.1:0").expect("bind");
        let upstream = echo.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in echo.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = stream;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = Proxy::start(upstream).expect("proxy");
        let mut c = TcpStream::connect(proxy.addr()).expect("connect");
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut buf = [0u8; 5];
        c.write_all(b"hello").expect("write");
        c.read_exact(&mut buf).expect("echoed");
        assert_eq!(&buf, b"hello");

        proxy.partition();
        std::thread::sleep(POLL * 3);
        c.write_all(b"again").expect("write");
        assert!(
            c.read_exact(&mut buf).is_err(),
            "nothing passes a partition"
        );
        proxy.heal();
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c.read_exact(&mut buf)
            .expect("held bytes arrive after it heals");
        assert_eq!(&buf, b"again");

        proxy.down();
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        let mut fresh = TcpStream::connect(proxy.addr()).expect("accepted, then closed");
        fresh
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        assert_eq!(fresh.read(&mut buf).unwrap_or(0), 0, "closed at once");
    }
}
