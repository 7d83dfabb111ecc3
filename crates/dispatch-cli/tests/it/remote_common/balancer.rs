//! A round-robin TCP load balancer on loopback: each new connection goes to
//! the next of its upstreams (two `dispatch server`s, say), as a load
//! balancer in front of a cluster's servers would send them. Plain threads
//! copying bytes both ways; dropped, it stops accepting.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

pub struct Balancer {
    pub host: String,
    /// Connections sent to each upstream, in order.
    pub sent: Arc<Vec<AtomicUsize>>,
    closed: Arc<AtomicBool>,
}

impl Balancer {
    /// Listens on an ephemeral loopback port in front of `upstreams`
    /// (`host:port` each).
    pub fn start(upstreams: &[String]) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let host = listener.local_addr().expect("addr").to_string();
        listener.set_nonblocking(true).expect("nonblocking");
        let sent: Arc<Vec<AtomicUsize>> =
            Arc::new(upstreams.iter().map(|_| AtomicUsize::new(0)).collect());
        let closed = Arc::new(AtomicBool::new(false));
        let (ups, counts, stop) = (upstreams.to_vec(), sent.clone(), closed.clone());
        std::thread::spawn(move || {
            let mut next = 0;
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((down, _)) => {
                        let i = next % ups.len();
                        next += 1;
                        counts[i].fetch_add(1, Ordering::SeqCst);
                        let _ = down.set_nonblocking(false);
                        let up = ups[i].clone();
                        std::thread::spawn(move || {
                            if let Ok(up) = TcpStream::connect(&up) {
                                splice(down, up);
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Balancer { host, sent, closed }
    }

    /// How many connections went to upstream `i`.
    pub fn sent_to(&self, i: usize) -> usize {
        self.sent[i].load(Ordering::SeqCst)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

/// Copies bytes both ways until either side ends.
fn splice(down: TcpStream, up: TcpStream) {
    let (Ok(down2), Ok(up2)) = (down.try_clone(), up.try_clone()) else {
        return;
    };
    let t = std::thread::spawn(move || pump(down2, up2));
    pump(up, down);
    let _ = t.join();
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
