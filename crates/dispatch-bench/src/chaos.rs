//! `dispatch-bench chaos [--dispatch PATH] [--database-url URL] [--runs N]
//! [--rate N] [--workers N] [--slots N] [--lease-ms N] [--deadline-secs N]`:
//! the fault tolerance promises under fire, with real processes and a real
//! PostgreSQL.
//!
//! `--runs` (500) runs of a process agent that beats (a line with the time
//! every 50 ms, 0.2–1 s in all, into a file of its own per execution) are
//! submitted at `--rate` (15) a second, below the capacity of `--workers`
//! (4) `dispatch worker` processes with `--slots` (4) slots each, so that a
//! run taken from a dead worker finds a free slot. Each worker talks to the
//! database through a fault-injecting TCP proxy of its own
//! ([`crate::proxy`]). Meanwhile:
//!
//! - every 2 s a random worker is killed with SIGKILL (and its agents with
//!   it, as when its machine dies); a new one takes its place;
//! - every 0.7 s a random running agent is killed with SIGKILL (a retryable
//!   failure: the parcel allows 10 attempts);
//! - once, one worker is cut off from the database for twice the lease
//!   (its proxy stops forwarding), then healed;
//! - once, every worker's connections are cut and refused for 1.5 s (the
//!   database restarting, as the workers see it).
//!
//! Then it counts, from the execution files and the store: executions,
//! concurrent overlaps (two executions of one run alive at once), re-
//! executions of completed work (an execution that started after another
//! one of the same run had finished its work), each with its cause (its
//! worker was killed or partitioned off before it could save the result,
//! its agent was killed after its work but before it exited 0, or none of
//! these: the ones that must not happen), lost (work finished but the run
//! not succeeded), stuck (not ended by the deadline), and the time from a
//! worker's death to each of its runs back in the queue and executing
//! elsewhere.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dispatch_core::{RunId, Status, now_ms};
use dispatch_runtime::Layout;
use dispatch_runtime::launch::{self, LaunchRequest};
use dispatch_store::postgres::testdb::TestDatabase;
use dispatch_store::{Attempt, AttemptStore, PgStore, QueueStore, Run, RunFilter, RunStore};
use serde_json::json;

use crate::proxy::Proxy;

struct Options {
    dispatch: PathBuf,
    runs: usize,
    rate: f64,
    workers: usize,
    slots: usize,
    lease_ms: u64,
    deadline: Duration,
}

pub fn main(dispatch: &Path, args: &[String]) {
    let value = |flag: &str| crate::flag_value(args, flag);
    crate::use_database_url(args);
    let number =
        |flag: &str, default: u64| value(flag).and_then(|v| v.parse().ok()).unwrap_or(default);
    let options = Options {
        dispatch: dispatch.to_path_buf(),
        runs: number("--runs", 500) as usize,
        rate: number("--rate", 15).max(1) as f64,
        workers: number("--workers", 4).max(2) as usize,
        slots: number("--slots", 4).max(1) as usize,
        lease_ms: number("--lease-ms", 3000).max(600),
        deadline: Duration::from_secs(number("--deadline-secs", 600)),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let Some(db) = rt.block_on(TestDatabase::create()) else {
        eprintln!("chaos needs PostgreSQL");
        std::process::exit(1);
    };
    let store = rt
        .block_on(PgStore::connect(db.url(), 4))
        .expect("the database connects");
    let mut chaos = Chaos::new(&options, &db, store, rt);
    chaos.build_parcel();
    chaos.start_workers();
    chaos.inject_until_done();
    chaos.report();
}

/// A worker process and the proxy it talks through.
struct WorkerProc {
    name: String,
    child: Child,
}

/// Worker `worker` killed at `at` (ms) while it held `runs` (id, attempt).
struct Death {
    worker: String,
    at: i64,
    runs: Vec<(RunId, u32)>,
}

struct Chaos<'a> {
    o: &'a Options,
    db: &'a TestDatabase,
    store: PgStore,
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    proxies: Vec<Proxy>,
    workers: Vec<WorkerProc>,
    generation: usize,
    ids: Vec<RunId>,
    deaths: Vec<Death>,
    agent_kills: usize,
    started: Instant,
    started_ms: i64,
    /// The partitioned worker's name, and the partition's start and end (ms).
    partition: Option<(String, i64, i64)>,
}

impl<'a> Chaos<'a> {
    fn new(
        o: &'a Options,
        db: &'a TestDatabase,
        store: PgStore,
        rt: tokio::runtime::Runtime,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let upstream = pg_addr(db.url());
        let proxies = (0..o.workers)
            .map(|_| Proxy::start(upstream).expect("a proxy"))
            .collect();
        Chaos {
            o,
            db,
            store,
            rt,
            dir,
            proxies,
            workers: Vec::new(),
            generation: 0,
            ids: Vec::new(),
            deaths: Vec::new(),
            agent_kills: 0,
            started: Instant::now(),
            started_ms: now_ms(),
            partition: None,
        }
    }

    fn layout(&self) -> Layout {
        Layout::new(self.dir.path().join(".dispatch"))
    }

    fn beats(&self) -> PathBuf {
        self.dir.path().join("beats")
    }

    fn build_parcel(&mut self) {
        let src = self.dir.path().join("agent");
        std::fs::create_dir_all(&src).expect("agent dir");
        std::fs::create_dir_all(self.beats()).expect("beats dir");
        std::fs::write(
            src.join("Agentfile"),
            "FROM process\nNAME chaos\nCOPY agent.sh\nCOMMAND sh agent.sh\n\
             RETRY 10 BACKOFF 100ms..1s\n",
        )
        .expect("Agentfile");
        let script = format!(
            "f='{}/exec-'\"$DISPATCH_RUN_ID-$DISPATCH_ATTEMPT-$$\"\n\
             n=$(( $(od -An -N1 -tu1 /dev/urandom) % 17 + 4 ))\n\
             i=0\n\
             while [ $i -lt $n ]; do date +%s%3N >> \"$f\"; sleep 0.05; i=$((i+1)); done\n\
             date +%s%3N > \"$f.done\"\n",
            self.beats().display()
        );
        std::fs::write(src.join("agent.sh"), script).expect("agent.sh");
        dispatch_core::parcel::build(&src, &self.layout().parcels()).expect("the parcel builds");
    }

    /// Submits runs up to what `--rate` allows by now.
    fn submit_due(&mut self) {
        let due = (self.started.elapsed().as_secs_f64() * self.o.rate) as usize;
        let request = LaunchRequest {
            source: "chaos".into(),
            operation: None,
            payload: json!({}),
            parent_id: None,
            origin_id: None,
        };
        while self.ids.len() < due.min(self.o.runs) {
            match self
                .rt
                .block_on(launch::create(&self.store, &self.layout(), &request))
            {
                Ok((run, _)) => self.ids.push(run.id),
                Err(e) => {
                    eprintln!("chaos: cannot submit a run: {e}");
                    break;
                }
            }
        }
    }

    fn start_workers(&mut self) {
        self.started = Instant::now();
        self.started_ms = now_ms();
        for slot in 0..self.o.workers {
            self.spawn_worker(slot);
        }
    }

    /// A new worker in `slot`, talking through that slot's proxy.
    fn spawn_worker(&mut self, slot: usize) {
        self.generation += 1;
        let name = format!("w{slot}-{}", self.generation);
        let url = self.proxies[slot].url_for(self.db.url());
        let err = std::fs::File::create(self.dir.path().join(format!("{name}.err")))
            .expect("stderr file");
        let child = Command::new(&self.o.dispatch)
            .args(["worker", "--database-url", &url, "--name", &name])
            .args(["--slots", &self.o.slots.to_string()])
            .args(["--lease-ms", &self.o.lease_ms.to_string()])
            .args(["--grace-period-ms", "1000"])
            .env("DISPATCH_ROOT", self.layout().root())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("a worker starts");
        let proc = WorkerProc { name, child };
        if slot < self.workers.len() {
            self.workers[slot] = proc;
        } else {
            self.workers.push(proc);
        }
    }

    fn live_runs(&self) -> Vec<Run> {
        let filter = RunFilter {
            statuses: vec![Status::Starting, Status::Running, Status::Paused],
            ..Default::default()
        };
        self.rt
            .block_on(self.store.list_runs(&filter))
            .unwrap_or_default()
    }

    fn unfinished(&self) -> usize {
        let filter = RunFilter {
            statuses: vec![
                Status::Queued,
                Status::Starting,
                Status::Running,
                Status::Paused,
            ],
            summary: true,
            ..Default::default()
        };
        self.rt
            .block_on(self.store.list_runs(&filter))
            .map_or(usize::MAX, |r| r.len())
    }

    /// Kills worker `slot` with SIGKILL, and its agents (its machine is
    /// gone), then starts another in its place.
    fn kill_worker(&mut self, slot: usize) {
        let name = self.workers[slot].name.clone();
        let mut held = Vec::new();
        let mut agents = Vec::new();
        for run in self.live_runs() {
            let lease = self.rt.block_on(self.store.lease(&run.id)).ok().flatten();
            if lease.is_some_and(|l| l.owner == name) {
                held.push((run.id.clone(), run.attempt));
                agents.extend(run.state.agent());
            }
        }
        let child = &mut self.workers[slot].child;
        let _ = child.kill();
        let _ = child.wait();
        for agent in agents {
            dispatch_runtime::os::signal_group(agent.pid, nix::sys::signal::Signal::SIGKILL);
        }
        self.deaths.push(Death {
            worker: name,
            at: now_ms(),
            runs: held,
        });
        self.spawn_worker(slot);
    }

    fn kill_an_agent(&mut self, pick: usize) {
        let live: Vec<Run> = self
            .live_runs()
            .into_iter()
            .filter(|r| r.state.agent().is_some_and(|a| a.pid > 1))
            .collect();
        if let Some(run) = live.get(pick % live.len().max(1))
            && let Some(agent) = run.state.agent()
            && dispatch_runtime::os::signal_group(agent.pid, nix::sys::signal::Signal::SIGKILL)
        {
            self.agent_kills += 1;
        }
    }

    fn inject_until_done(&mut self) {
        let lease = Duration::from_millis(self.o.lease_ms);
        let partition_at = Duration::from_secs(3);
        let restart_at = partition_at + lease * 2 + Duration::from_secs(3);
        let (mut partitioned, mut restarted) = (None::<Instant>, None::<Instant>);
        let mut next_worker_kill = Duration::from_secs(2);
        let mut next_agent_kill = Duration::from_millis(700);
        let mut rng = fastrand::Rng::with_seed(7);
        let deadline = self.started + self.o.deadline;
        loop {
            let t = self.started.elapsed();
            self.submit_due();
            let all_in = self.ids.len() >= self.o.runs;
            if (all_in && self.unfinished() == 0) || Instant::now() > deadline {
                break;
            }
            // The partition: the last worker, for twice the lease.
            if partitioned.is_none() && t >= partition_at {
                eprintln!(
                    "chaos: {:?}: partition of {}",
                    t,
                    self.workers[self.o.workers - 1].name
                );
                self.proxies[self.o.workers - 1].partition();
                partitioned = Some(Instant::now());
                let name = self.workers[self.o.workers - 1].name.clone();
                self.partition = Some((name, now_ms(), i64::MAX));
            }
            if let Some(at) = partitioned
                && at.elapsed() >= lease * 2
            {
                self.proxies[self.o.workers - 1].heal();
                if let Some(p) = &mut self.partition {
                    p.2 = now_ms();
                }
                partitioned = Some(Instant::now() + Duration::from_secs(86_400 * 365));
            }
            if restarted.is_none() && t >= restart_at {
                eprintln!("chaos: {t:?}: database restart (1.5 s)");
                for p in &self.proxies {
                    p.down();
                }
                restarted = Some(Instant::now());
            }
            if let Some(at) = restarted
                && at.elapsed() >= Duration::from_millis(1500)
                && at.elapsed() < Duration::from_secs(86_400)
            {
                for p in &self.proxies {
                    p.heal();
                }
                restarted = Some(Instant::now() - Duration::from_secs(86_400 * 2));
            }
            if t >= next_worker_kill {
                // Never the partitioned one: its story is the partition's.
                let slot = rng.usize(0..self.o.workers - 1);
                self.kill_worker(slot);
                next_worker_kill = t + Duration::from_secs(2);
            }
            if t >= next_agent_kill {
                self.kill_an_agent(rng.usize(..));
                next_agent_kill = t + Duration::from_millis(700);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for p in &self.proxies {
            p.heal();
        }
        for w in &mut self.workers {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(w.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for w in &mut self.workers {
            let _ = w.child.wait();
        }
    }

    fn report(&self) {
        let elapsed = self.started.elapsed();
        let execs = executions(&self.beats());
        let mut by_run: HashMap<String, Vec<&Execution>> = HashMap::new();
        for e in &execs {
            by_run.entry(e.run.clone()).or_default().push(e);
        }
        let mut attempts: HashMap<(String, u32), Attempt> = HashMap::new();
        let (mut succeeded, mut failed, mut stuck, mut lost) = (0, 0, 0, 0);
        let mut lost_attempts = 0;
        let mut requeued_at: HashMap<(String, u32), i64> = HashMap::new();
        for id in &self.ids {
            let Ok(run) = self.rt.block_on(self.store.get_run(id)) else {
                lost += 1;
                continue;
            };
            match run.status() {
                Status::Succeeded => succeeded += 1,
                s if s.is_terminal() => {
                    failed += 1;
                    let finished = by_run
                        .get(id.as_str())
                        .is_some_and(|l| l.iter().any(|e| e.done.is_some()));
                    if finished {
                        lost += 1;
                    }
                }
                _ => stuck += 1,
            }
            let rows = self
                .rt
                .block_on(AttemptStore::list_attempts(&self.store, id))
                .unwrap_or_default();
            for a in rows {
                if a.error
                    .as_deref()
                    .is_some_and(|e| e.contains("does not count"))
                {
                    lost_attempts += 1;
                    if let Some(end) = a.ended_at {
                        requeued_at.insert((id.to_string(), a.number), end);
                    }
                }
                attempts.insert((id.to_string(), a.number), a);
            }
        }
        let killed: Vec<&str> = self.deaths.iter().map(|d| d.worker.as_str()).collect();
        let mut overlaps = 0;
        let mut causes: HashMap<&str, usize> = HashMap::new();
        for (run, list) in &mut by_run {
            list.sort_by_key(|e| e.first);
            for (i, a) in list.iter().enumerate() {
                let later = &list[i + 1..];
                overlaps += later.iter().filter(|b| b.first <= a.last).count();
                let Some(done) = a.done else { continue };
                if !later.iter().any(|b| b.first > done) {
                    continue;
                }
                let row = attempts.get(&(run.clone(), a.attempt));
                let worker = row.and_then(|r| r.worker.as_deref()).unwrap_or_default();
                let partitioned = self
                    .partition
                    .as_ref()
                    .is_some_and(|(name, from, to)| name == worker && done >= *from && done <= *to);
                let cause = if killed.contains(&worker) {
                    "its worker was killed"
                } else if partitioned {
                    "its worker was partitioned off"
                } else if row.is_some_and(|r| {
                    r.exit_code.is_some_and(|c| c != 0)
                        || r.error.as_deref().is_some_and(|e| e.contains("signal"))
                }) {
                    "its agent was killed before it exited"
                } else {
                    "none of these"
                };
                *causes.entry(cause).or_default() += 1;
            }
        }
        let reexecuted: usize = causes.values().sum();
        let unexplained = causes.get("none of these").copied().unwrap_or(0);
        let (mut takeovers, mut requeues) = (Vec::new(), Vec::new());
        for death in &self.deaths {
            for (id, attempt) in &death.runs {
                if let Some(at) = requeued_at.get(&(id.to_string(), *attempt)) {
                    requeues.push(at - death.at);
                    if at - death.at > self.o.lease_ms as i64 + 1000 {
                        eprintln!(
                            "chaos: run {id} of {} (killed {:.1} s in) back in the queue {} ms after",
                            death.worker,
                            (death.at - self.started_ms) as f64 / 1000.0,
                            at - death.at
                        );
                    }
                }
                let next = by_run.get(id.as_str()).and_then(|l| {
                    l.iter()
                        .filter(|e| e.attempt > *attempt && e.first >= death.at)
                        .map(|e| e.first)
                        .min()
                });
                if let Some(first) = next {
                    takeovers.push(first - death.at);
                }
            }
        }
        println!(
            "| chaos ({} runs at {}/s, {} workers × {} slots, lease {} ms, {:.0} s) | result |\n|---|---|",
            self.ids.len(),
            self.o.rate,
            self.o.workers,
            self.o.slots,
            self.o.lease_ms,
            elapsed.as_secs_f64()
        );
        println!(
            "| runs | {} ({succeeded} succeeded, {failed} failed) |",
            self.ids.len()
        );
        println!("| executions | {} |", execs.len());
        println!(
            "| worker kills (SIGKILL) / agent kills / partitions (2 × lease) / database restarts (1.5 s) | {} / {} / 1 / 1 |",
            self.deaths.len(),
            self.agent_kills
        );
        println!(
            "| lost-worker attempts recorded (not counted against retries) | {lost_attempts} |"
        );
        println!("| concurrent double executions | {overlaps} |");
        let mut listed: Vec<_> = causes.iter().map(|(c, n)| format!("{n}: {c}")).collect();
        listed.sort();
        println!(
            "| re-executions of completed work | {reexecuted} ({}) |",
            if listed.is_empty() {
                "none".into()
            } else {
                listed.join("; ")
            }
        );
        println!("| … of work whose worker and agent were alive and connected | {unexplained} |");
        println!("| lost | {lost} |");
        println!("| stuck | {stuck} |");
        let lease_s = self.o.lease_ms as f64 / 1000.0;
        println!(
            "| worker death → its runs back in the queue ({} runs): p50 / max | {} (lease {lease_s:.1} s) |",
            requeues.len(),
            p50_max(&mut requeues)
        );
        println!(
            "| worker death → its runs executing elsewhere ({} runs): p50 / max | {} (target: lease + 1 s = {:.1} s) |",
            takeovers.len(),
            p50_max(&mut takeovers),
            lease_s + 1.0
        );
    }
}

/// `p50 / max` of millisecond values, in seconds.
fn p50_max(values: &mut [i64]) -> String {
    values.sort_unstable();
    match (values.get(values.len() / 2), values.last()) {
        (Some(p50), Some(max)) => format!(
            "{:.2} s / {:.2} s",
            *p50 as f64 / 1000.0,
            *max as f64 / 1000.0
        ),
        _ => "–".into(),
    }
}

/// One execution: its run, attempt, first and last beat, and when it
/// finished its work (if it did).
#[derive(Debug)]
struct Execution {
    run: String,
    attempt: u32,
    first: i64,
    last: i64,
    done: Option<i64>,
}

fn executions(dir: &Path) -> Vec<Execution> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix("exec-") else {
            continue;
        };
        if rest.ends_with(".done") {
            continue;
        }
        let parts: Vec<&str> = rest.split('-').collect();
        let (Some(run), Some(attempt)) = (parts.first(), parts.get(1).and_then(|a| a.parse().ok()))
        else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let times: Vec<i64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        let done = std::fs::read_to_string(entry.path().with_extension("done"))
            .ok()
            .and_then(|t| t.trim().parse().ok());
        if let (Some(first), Some(last)) = (times.first(), times.last()) {
            found.push(Execution {
                run: (*run).to_string(),
                attempt,
                first: *first,
                last: done.unwrap_or(*last),
                done,
            });
        }
    }
    found
}

/// The host and port of a `postgres://…@host:port/db` URL.
fn pg_addr(url: &str) -> std::net::SocketAddr {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host_port = rest.split('/').next().unwrap_or("127.0.0.1:5432");
    let host_port = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    };
    let host_port = host_port.replace("localhost", "127.0.0.1");
    host_port.parse().expect("the database's address")
}
