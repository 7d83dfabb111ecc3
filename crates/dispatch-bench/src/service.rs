//! `dispatch-bench service [--dispatch PATH] [--idle-secs N]`: the service
//! helper idle (resident memory, CPU and context switches over N seconds,
//! default 60) and its HTTP ingress on loopback (rejected requests/s;
//! accepted requests → heartbeat runs/s; request → agent start latency).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{median, pct};

pub fn run(dispatch: &Path, idle_secs: u64) {
    let b = ServiceBench {
        dispatch: dispatch.to_path_buf(),
    };
    println!("| measurement | result | target |\n|---|---|---|");
    b.idle(idle_secs);
    b.rejected(Duration::from_secs(5), 4);
    b.accepted(300, 4);
    b.latency(100);
}

struct ServiceBench {
    dispatch: PathBuf,
}

struct Served {
    _dir: tempfile::TempDir,
    root: PathBuf,
    id: String,
    helper: u32,
    addr: String,
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i128
}

impl ServiceBench {
    fn cmd(&self, root: &Path) -> Command {
        let mut c = Command::new(&self.dispatch);
        c.env("DISPATCH_ROOT", root).stdin(Stdio::null());
        c
    }

    fn ok(&self, root: &Path, args: &[&str]) -> String {
        let out = self.cmd(root).args(args).output().expect("run dispatch");
        assert!(
            out.status.success(),
            "dispatch {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Serves an agent whose COMMAND is `command`, with `args`.
    fn serve(&self, command: &str, args: &[&str]) -> Served {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join(".dispatch");
        let a = dir.path().join("svc");
        std::fs::create_dir_all(&a).expect("mkdir");
        std::fs::write(
            a.join("Agentfile"),
            format!("NAME svc\nCOMMAND {command}\n"),
        )
        .expect("write Agentfile");
        let mut all = vec!["serve", a.to_str().expect("utf-8"), "--detach"];
        all.extend_from_slice(args);
        let id = self.ok(&root, &all);
        let doc: serde_json::Value =
            serde_json::from_str(&self.ok(&root, &["inspect-run", &id, "--format", "json"]))
                .expect("json");
        let helper = doc[0]["state"]["helper"]["pid"].as_u64().expect("pid") as u32;
        let addr = doc[0]["service"]["listeners"][0]["bound_addr"]
            .as_str()
            .unwrap_or("")
            .to_string();
        Served {
            _dir: dir,
            root,
            id,
            helper,
            addr,
        }
    }

    fn stop(&self, s: &Served) {
        self.ok(&s.root, &["stop", &s.id, "-t", "0"]);
    }

    fn idle(&self, secs: u64) {
        let s = self.serve(
            r#"["true"]"#,
            &[
                "--schedule",
                "0 0 1 1 *",
                "--listen",
                "127.0.0.1:0",
                "--listen-shared-secret",
                "bench",
            ],
        );
        std::thread::sleep(Duration::from_millis(500));
        let (cpu0, sw0) = cpu_and_switches(s.helper);
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        let (cpu1, sw1) = cpu_and_switches(s.helper);
        let rss = rss_kb(s.helper);
        let tick = 100.0; // USER_HZ
        println!(
            "| idle service helper (listener + cron), resident memory | {:.1} MB | ≤ 8 MB |",
            rss as f64 / 1024.0
        );
        println!(
            "| idle service helper over {secs} s | CPU {:.0} ms, {} context switches ({:.2}/s) | no periodic wakeups |",
            (cpu1 - cpu0) as f64 * 1000.0 / tick,
            sw1 - sw0,
            (sw1 - sw0) as f64 / t.elapsed().as_secs_f64()
        );
        self.stop(&s);
    }

    /// Requests without the shared secret (401), keep-alive, `clients` at once.
    fn rejected(&self, dur: Duration, clients: usize) {
        let s = self.serve(
            r#"["true"]"#,
            &[
                "--listen",
                "127.0.0.1:0",
                "--listen-path",
                "/hook",
                "--listen-shared-secret",
                "bench-secret",
            ],
        );
        let req = format!(
            "POST /hook HTTP/1.1\r\nHost: {}\r\nContent-Length: 2\r\n\r\n{{}}",
            s.addr
        );
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let t = Instant::now();
        std::thread::scope(|sc| {
            for _ in 0..clients {
                let (count, stop, req, addr) = (count.clone(), stop.clone(), &req, &s.addr);
                sc.spawn(move || {
                    let mut conn = Conn::open(addr);
                    while !stop.load(Ordering::Relaxed) {
                        let status = conn.request(req.as_bytes());
                        assert_eq!(status, 401);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            std::thread::sleep(dur);
            stop.store(true, Ordering::Relaxed);
        });
        let n = count.load(Ordering::Relaxed);
        println!(
            "| ingress rejected (401) requests, {clients} keep-alive clients, loopback | {:.0} req/s | ≥ 20,000 req/s |",
            n as f64 / t.elapsed().as_secs_f64()
        );
        self.stop(&s);
    }

    /// `n` accepted requests from `clients` keep-alive clients, until every
    /// heartbeat run has finished.
    fn accepted(&self, n: usize, clients: usize) {
        let s = self.serve(
            r#"["true"]"#,
            &[
                "--listen",
                "127.0.0.1:0",
                "--overlap",
                "concurrent",
                "--max-concurrent",
                "4",
                "--max-pending",
                "100000",
                "--public",
            ],
        );
        let req = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Length: 2\r\n\r\n{{}}",
            s.addr
        );
        let t = Instant::now();
        let mut answered = Vec::new();
        std::thread::scope(|sc| {
            let workers: Vec<_> = (0..clients)
                .map(|w| {
                    let (req, addr) = (&req, &s.addr);
                    sc.spawn(move || {
                        let mut conn = Conn::open(addr);
                        let mut lat = Vec::new();
                        for _ in (w..n).step_by(clients) {
                            let t0 = Instant::now();
                            assert_eq!(conn.request(req.as_bytes()), 202);
                            lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                        }
                        lat
                    })
                })
                .collect();
            for w in workers {
                answered.extend(w.join().expect("client"));
            }
        });
        let replies = t.elapsed();
        self.wait_children(&s);
        let total = t.elapsed();
        println!(
            "| {n} accepted requests → heartbeat runs, {clients} clients, concurrent 4 | {:.0} runs/s ({:.2} s until all finished; 202s: {:.0} req/s, median {:.2} ms, p99 {:.2} ms) | — |",
            n as f64 / total.as_secs_f64(),
            total.as_secs_f64(),
            n as f64 / replies.as_secs_f64(),
            median(answered.clone()),
            pct(answered, 0.99)
        );
        self.stop(&s);
    }

    /// One request at a time: from sending it to the agent process executing.
    fn latency(&self, n: usize) {
        let s = self.serve(
            r#"["date", "+%s%N"]"#,
            &["--listen", "127.0.0.1:0", "--public"],
        );
        let req = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Length: 2\r\n\r\n{{}}",
            s.addr
        );
        let mut conn = Conn::open(&s.addr);
        let mut lat = Vec::with_capacity(n);
        for _ in 0..n {
            let t0 = now_ns();
            let (status, body) = conn.request_body(req.as_bytes());
            assert_eq!(status, 202);
            let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
            let id = v["run_id"].as_str().expect("run id").to_string();
            let log = s.root.join("runs").join(format!("{id}.log"));
            let deadline = Instant::now() + Duration::from_secs(10);
            let started: i128 = loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if let Some(ns) = text
                    .lines()
                    .filter(|l| !l.starts_with("[dispatch]"))
                    .find_map(|l| l.trim().parse().ok())
                {
                    break ns;
                }
                assert!(Instant::now() < deadline, "agent of {id} never started");
                std::thread::sleep(Duration::from_micros(200));
            };
            lat.push((started - t0) as f64 / 1e6);
            self.wait_children(&s);
        }
        println!(
            "| request → agent process executing, one at a time (n={n}) | p50 {:.2} ms, p99 {:.2} ms | — |",
            median(lat.clone()),
            pct(lat, 0.99)
        );
        self.stop(&s);
    }

    fn wait_children(&self, s: &Served) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let live = self.ok(&s.root, &["ps", "-q", "--parent", &s.id]);
            if live.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "heartbeats did not finish");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// A keep-alive HTTP/1.1 connection that reads whole responses.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: &str) -> Conn {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        Conn {
            s,
            buf: Vec::with_capacity(4096),
        }
    }

    fn request(&mut self, req: &[u8]) -> u16 {
        self.request_body(req).0
    }

    fn request_body(&mut self, req: &[u8]) -> (u16, Vec<u8>) {
        self.s.write_all(req).expect("write");
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    let status = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .expect("status");
                    let body = self.buf[end + 4..end + 4 + len].to_vec();
                    self.buf.drain(..end + 4 + len);
                    return (status, body);
                }
            }
            let n = self.s.read(&mut chunk).expect("read");
            assert!(n > 0, "the server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// CPU ticks (user + system) and context switches of every thread of `pid`.
fn cpu_and_switches(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
    let mut switches = 0;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            for line in status.lines() {
                if line.starts_with("voluntary_ctxt_switches")
                    || line.starts_with("nonvoluntary_ctxt_switches")
                {
                    switches += line
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
    }
    (ticks, switches)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
