//! `dispatch-bench chaos`: the fault tolerance promises under fire, with
//! real processes and a real PostgreSQL (`--help` says every flag).
//!
//! `--runs` runs are submitted at `--rate` a second, below the capacity of
//! `--workers` `dispatch worker` processes with `--slots` slots each, so
//! that a run taken from a dead worker finds a free slot. Half are process
//! agents, half native agents whose scripted mock model calls a LOCAL tool;
//! both beat into a file per execution (see [`parcels`]), and some last
//! longer than the lease. Each worker talks to the database through a
//! fault-injecting TCP proxy of its own ([`crate::proxy`]). Meanwhile:
//!
//! - every `--fault-every-ms` a random worker takes the next of: SIGKILL
//!   alone (its agents are left to the runtime's containment, as when a
//!   supervisor restarts a crashed worker), SIGKILL with its agents (its
//!   machine died), SIGSTOP for twice the lease then SIGCONT (a VM stall);
//! - every 0.7 s a random running process agent is killed with SIGKILL (a
//!   retryable failure: the parcels allow 10 attempts; a run whose agent
//!   was killed [`AGENT_KILLS_PER_RUN`] times is spared from then on, so
//!   that a long run is not failed by exhausting its retries, which would
//!   be the parcel's policy at work, not a harm);
//! - once, one worker is cut off from the database for twice the lease;
//! - once, every worker's connections are cut and refused for 1.5 s.
//!
//! Then it counts (see [`report`]): overlaps (two executions of one run
//! alive at once), re-executions of completed work by cause, repeated and
//! unbilled model calls, orphans, lost and stuck runs, and the time from a
//! worker's death to its runs executing elsewhere.

mod model;
mod options;
mod parcels;
mod procs;
mod report;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dispatch_core::{RunId, Status, now_ms};
use dispatch_runtime::Layout;
use dispatch_runtime::launch::{self, LaunchRequest};
use dispatch_store::{PgStore, QueueStore, Run, RunFilter, RunStore};
use dispatch_test_support::mock::MockServer;
use dispatch_test_support::testdb::TestDatabase;
use nix::sys::signal::Signal;
use serde_json::Value;

use dispatch_test_support::proxy::Proxy;
use options::Options;

pub fn main(dispatch: &Path, args: &[String]) {
    let o = match options::parse(dispatch.to_path_buf(), args) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{}", options::HELP);
            return;
        }
        Err(e) => {
            eprintln!("dispatch-bench chaos: {e}");
            std::process::exit(2);
        }
    };
    if !o.dispatch.is_file() {
        eprintln!(
            "dispatch-bench chaos: no dispatch binary at {} (build it: cargo build --release, or pass --dispatch PATH)",
            o.dispatch.display()
        );
        std::process::exit(1);
    }
    crate::use_database_url(args);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let Some(db) = rt.block_on(TestDatabase::create()) else {
        eprintln!(
            "dispatch-bench chaos: no PostgreSQL (start one on 127.0.0.1:5432, or pass --database-url)"
        );
        std::process::exit(1);
    };
    let store = match rt.block_on(PgStore::connect(db.url(), 4)) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("dispatch-bench chaos: the database: {e}");
            std::process::exit(1);
        }
    };
    let mock = match model::start() {
        Ok(mock) => mock,
        Err(e) => {
            eprintln!("dispatch-bench chaos: {e}");
            std::process::exit(1);
        }
    };
    let mut chaos = Chaos::new(&o, &db, store, rt, mock);
    if let Err(e) = parcels::build(
        chaos.dir.path(),
        &chaos.layout(),
        &chaos.mock.base_url(),
        o.lease_ms,
        o.long_pct,
    ) {
        eprintln!("dispatch-bench chaos: {e}");
        std::process::exit(1);
    }
    chaos.start_workers();
    chaos.inject_until_done();
    let orphans = chaos.stop_workers();
    chaos.report(&orphans);
}

/// A worker process.
struct WorkerProc {
    name: String,
    child: Child,
}

/// How many times one run's agent may be killed: the parcels allow 10
/// attempts, and a worker's death or stall can cost one more each (a lost
/// lease does not count, but a kill just before one may).
const AGENT_KILLS_PER_RUN: u32 = 5;

/// The faults done to a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    WorkerKill,
    MachineKill,
    Freeze,
}

/// `fault` done to worker `worker` at `at` (ms; a freeze lasts until
/// `until`) while it held `runs` (id, attempt).
struct Hit {
    worker: String,
    fault: Fault,
    at: i64,
    until: i64,
    runs: Vec<(RunId, u32)>,
}

struct Chaos<'a> {
    o: &'a Options,
    db: &'a TestDatabase,
    store: PgStore,
    rt: tokio::runtime::Runtime,
    mock: MockServer,
    dir: tempfile::TempDir,
    proxies: Vec<Proxy>,
    workers: Vec<WorkerProc>,
    generation: usize,
    ids: Vec<RunId>,
    hits: Vec<Hit>,
    /// The slot frozen now, and when to thaw it.
    frozen: Option<(usize, Instant)>,
    agent_kills: usize,
    /// How many times each run's agent was killed.
    killed: std::collections::HashMap<RunId, u32>,
    /// The database restart's start and end (ms), once it happened.
    restarted: Option<(i64, i64)>,
    started: Instant,
    /// The partitioned worker's name, and the partition's start and end (ms).
    partition: Option<(String, i64, i64)>,
}

impl<'a> Chaos<'a> {
    fn new(
        o: &'a Options,
        db: &'a TestDatabase,
        store: PgStore,
        rt: tokio::runtime::Runtime,
        mock: MockServer,
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
            mock,
            dir,
            proxies,
            workers: Vec::new(),
            generation: 0,
            ids: Vec::new(),
            hits: Vec::new(),
            frozen: None,
            agent_kills: 0,
            killed: Default::default(),
            restarted: None,
            started: Instant::now(),
            partition: None,
        }
    }

    fn layout(&self) -> Layout {
        Layout::new(self.dir.path().join(".dispatch"))
    }

    /// Submits runs up to what `--rate` allows by now: every
    /// `100 / --native-pct`-th a native agent; the payload is the run's
    /// marker (see [`model`]).
    fn submit_due(&mut self) {
        let due = (self.started.elapsed().as_secs_f64() * self.o.rate) as usize;
        while self.ids.len() < due.min(self.o.runs) {
            let n = self.ids.len();
            let native =
                (n as u64 * self.o.native_pct) / 100 != ((n as u64 + 1) * self.o.native_pct) / 100;
            let request = LaunchRequest {
                source: if native {
                    parcels::NATIVE
                } else {
                    parcels::PROCESS
                }
                .into(),
                operation: None,
                payload: Value::String(model::marker(n)),
                parent_id: None,
                origin_id: None,
                project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
            };
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

    /// The runs worker `name` holds, and their process agents.
    fn held_by(&self, name: &str) -> (Vec<(RunId, u32)>, Vec<u32>) {
        let (mut held, mut agents) = (Vec::new(), Vec::new());
        for run in self.live_runs() {
            let lease = self.rt.block_on(self.store.lease(&run.id)).ok().flatten();
            if lease.is_some_and(|l| l.owner == name) {
                held.push((run.id.clone(), run.attempt));
                if run.parcel_name == parcels::PROCESS {
                    agents.extend(run.state.agent().map(|a| a.pid));
                }
            }
        }
        (held, agents)
    }

    /// Does `fault` to the worker in `slot`; a killed one is replaced.
    fn hit(&mut self, slot: usize, fault: Fault) {
        let name = self.workers[slot].name.clone();
        let (runs, agents) = self.held_by(&name);
        let at = now_ms();
        let child = &mut self.workers[slot].child;
        let mut until = at;
        match fault {
            Fault::Freeze => {
                signal(child, Signal::SIGSTOP);
                let lasts = Duration::from_millis(self.o.lease_ms * 2);
                self.frozen = Some((slot, Instant::now() + lasts));
                until = at + lasts.as_millis() as i64;
            }
            Fault::WorkerKill | Fault::MachineKill => {
                let _ = child.kill();
                let _ = child.wait();
                if fault == Fault::MachineKill {
                    // The machine is gone: its process agents with it (a
                    // native agent's loop lived in the worker).
                    for pid in agents {
                        dispatch_runtime::os::signal_group(pid, Signal::SIGKILL);
                    }
                }
            }
        }
        eprintln!(
            "chaos: {:?}: {fault:?} of {name} ({} runs)",
            self.started.elapsed(),
            runs.len()
        );
        self.hits.push(Hit {
            worker: name,
            fault,
            at,
            until,
            runs,
        });
        if fault != Fault::Freeze {
            self.spawn_worker(slot);
        }
    }

    fn kill_an_agent(&mut self, pick: usize) {
        let live: Vec<Run> = self
            .live_runs()
            .into_iter()
            .filter(|r| r.parcel_name == parcels::PROCESS)
            .filter(|r| r.state.agent().is_some_and(|a| a.pid > 1))
            .filter(|r| self.killed.get(&r.id).copied().unwrap_or(0) < AGENT_KILLS_PER_RUN)
            .collect();
        if let Some(run) = live.get(pick % live.len().max(1))
            && let Some(agent) = run.state.agent()
            && dispatch_runtime::os::signal_group(agent.pid, Signal::SIGKILL)
        {
            self.agent_kills += 1;
            *self.killed.entry(run.id.clone()).or_default() += 1;
        }
    }

    /// The worker faults asked for, in the order they take turns.
    fn rotation(&self) -> Vec<Fault> {
        let f = self.o.faults;
        [
            (f.worker_kill, Fault::WorkerKill),
            (f.freeze, Fault::Freeze),
            (f.machine_kill, Fault::MachineKill),
        ]
        .into_iter()
        .filter_map(|(on, fault)| on.then_some(fault))
        .collect()
    }

    fn inject_until_done(&mut self) {
        let lease = Duration::from_millis(self.o.lease_ms);
        let partition_at = Duration::from_secs(3);
        let restart_at = partition_at + lease * 2 + Duration::from_secs(3);
        let last = self.o.workers - 1;
        let (mut partitioned, mut restarting) = (None::<Instant>, None::<Instant>);
        let mut next_worker_fault = self.o.fault_every;
        let mut next_agent_kill = Duration::from_millis(700);
        let rotation = self.rotation();
        let mut turn = 0;
        let mut rng = fastrand::Rng::with_seed(7);
        let deadline = self.started + self.o.deadline;
        loop {
            let t = self.started.elapsed();
            self.submit_due();
            let all_in = self.ids.len() >= self.o.runs;
            if (all_in && self.unfinished() == 0) || Instant::now() > deadline {
                break;
            }
            if let Some((slot, thaw)) = self.frozen
                && Instant::now() >= thaw
            {
                signal(&self.workers[slot].child, Signal::SIGCONT);
                self.frozen = None;
            }
            // The partition: the last worker, for twice the lease.
            if self.o.faults.partition && partitioned.is_none() && t >= partition_at {
                eprintln!("chaos: {t:?}: partition of {}", self.workers[last].name);
                self.proxies[last].partition();
                partitioned = Some(Instant::now());
                self.partition = Some((self.workers[last].name.clone(), now_ms(), i64::MAX));
            }
            if let Some(at) = partitioned
                && at.elapsed() >= lease * 2
                && self.partition.as_ref().is_some_and(|p| p.2 == i64::MAX)
            {
                self.proxies[last].heal();
                if let Some(p) = &mut self.partition {
                    p.2 = now_ms();
                }
            }
            if self.o.faults.db_restart && restarting.is_none() && t >= restart_at {
                eprintln!("chaos: {t:?}: database restart (1.5 s)");
                for p in &self.proxies {
                    p.down();
                }
                restarting = Some(Instant::now());
                self.restarted = Some((now_ms(), i64::MAX));
            }
            if let Some(at) = restarting
                && at.elapsed() >= Duration::from_millis(1500)
            {
                for p in &self.proxies {
                    p.heal();
                }
                if let Some(r) = &mut self.restarted {
                    r.1 = now_ms();
                }
                restarting = Some(Instant::now() + Duration::from_secs(86_400 * 365));
            }
            if !rotation.is_empty() && t >= next_worker_fault {
                // Never the partitioned one (its story is the partition's)
                // nor one frozen now.
                let frozen = self.frozen.map(|(s, _)| s);
                let slots: Vec<usize> = (0..self.o.workers)
                    .filter(|s| !(self.o.faults.partition && *s == last))
                    .filter(|s| Some(*s) != frozen)
                    .collect();
                let fault = rotation[turn % rotation.len()];
                let skip = fault == Fault::Freeze && frozen.is_some();
                if !slots.is_empty() && !skip {
                    self.hit(slots[rng.usize(..slots.len())], fault);
                }
                turn += 1;
                next_worker_fault = t + self.o.fault_every;
            }
            if self.o.faults.agent_kill && t >= next_agent_kill {
                self.kill_an_agent(rng.usize(..));
                next_agent_kill = t + Duration::from_millis(700);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Heals, thaws and stops every worker; returns the processes of the
    /// runs still alive a second later (orphans).
    fn stop_workers(&mut self) -> Vec<(i32, String)> {
        for p in &self.proxies {
            p.heal();
        }
        for w in &mut self.workers {
            signal(&w.child, Signal::SIGCONT);
            signal(&w.child, Signal::SIGTERM);
        }
        for w in &mut self.workers {
            let _ = w.child.wait();
        }
        std::thread::sleep(Duration::from_secs(1));
        procs::of_runs(&report::id_set(&self.ids))
    }
}

fn signal(child: &Child, signal: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
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
