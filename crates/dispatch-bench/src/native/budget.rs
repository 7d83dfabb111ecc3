//! Watching the concurrency measurement end, and where the machine's CPU
//! went while it ran (issue #38 item 3).
//!
//! The bench shares the machine with what it measures, so it watches
//! cheaply: one count of finished runs a tick on a connection of its own
//! (the list of every run, read ten times a second, cost PostgreSQL and
//! the bench more than a core at 10,000 runs), and the whole list once at
//! the end. Beside it, the CPU of each part in the same interval: the
//! worker, its tools' processes, PostgreSQL (its live processes and those
//! it reaped), the bench itself (the mock model, the watch, and the
//! submission when it overlaps) and the whole machine (`/proc/stat`), so
//! the table says what 2 cores × the execution were spent on.

use dispatch_core::Status;

/// A connection that counts finished runs.
pub(super) struct Watch {
    client: tokio_postgres::Client,
    terminal: Vec<String>,
}

impl Watch {
    pub(super) fn connect(rt: &tokio::runtime::Runtime, url: &str) -> Watch {
        let client = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("the bench's watch connects to PostgreSQL");
            tokio::spawn(conn);
            client
        });
        let terminal = Status::ALL
            .iter()
            .filter(|s| s.is_terminal())
            .map(|s| s.as_str().to_string())
            .collect();
        Watch { client, terminal }
    }

    /// How many runs have finished (0 when the database did not answer).
    pub(super) fn finished(&self, rt: &tokio::runtime::Runtime) -> usize {
        rt.block_on(self.client.query_one(
            "SELECT count(*) FROM runs WHERE status = ANY($1)",
            &[&self.terminal],
        ))
        .map_or(0, |row| row.get::<_, i64>(0).max(0) as usize)
    }
}

/// CPU milliseconds of each part, at one instant.
#[derive(Clone, Copy, Default)]
pub(super) struct Sample {
    pub postgres_ms: u64,
    pub bench_ms: u64,
    /// Every core's non-idle time (`/proc/stat`'s first line).
    pub machine_ms: u64,
}

impl Sample {
    pub(super) fn now() -> Sample {
        Sample {
            postgres_ms: postgres_ms(),
            bench_ms: self_ms(),
            machine_ms: machine_ms(),
        }
    }

    pub(super) fn since(self, before: Sample) -> Sample {
        Sample {
            postgres_ms: self.postgres_ms.saturating_sub(before.postgres_ms),
            bench_ms: self.bench_ms.saturating_sub(before.bench_ms),
            machine_ms: self.machine_ms.saturating_sub(before.machine_ms),
        }
    }
}

/// This process's user and system CPU (the mock model runs in it).
fn self_ms() -> u64 {
    crate::floors::rusage_ms(nix::sys::resource::UsageWho::RUSAGE_SELF) as u64
}

/// Every `postgres` process's own CPU, and what the oldest (the
/// postmaster) reaped of its ended backends.
fn postgres_ms() -> u64 {
    let mut total = 0;
    let mut oldest: Option<(u64, u64)> = None; // (start time, reaped CPU)
    for pid in pids() {
        let Some(f) = stat(pid) else { continue };
        if f.comm != "postgres" {
            continue;
        }
        total += f.own_ms;
        if oldest.is_none_or(|(start, _)| f.start < start) {
            oldest = Some((f.start, f.reaped_ms));
        }
    }
    total + oldest.map_or(0, |(_, reaped)| reaped)
}

/// Every process's pid.
pub(super) fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
}

/// What `/proc/<pid>/stat` says of a process's CPU.
pub(super) struct Stat {
    pub comm: String,
    /// Its own user and system time.
    pub own_ms: u64,
    /// Its waited-for children's (all the way down).
    pub reaped_ms: u64,
    /// Its parent's pid.
    pub ppid: u32,
    start: u64,
}

pub(super) fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = text.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // Fields 4 (ppid), 14–17 (utime, stime, cutime, cstime, in clock
    // ticks of 10 ms) and 22 (starttime); `rest` starts at field 3.
    let at = |i: usize| f.get(i - 3).copied().unwrap_or(0);
    Some(Stat {
        comm,
        own_ms: (at(14) + at(15)) * 10,
        reaped_ms: (at(16) + at(17)) * 10,
        ppid: u32::try_from(at(4)).unwrap_or(0),
        start: at(22),
    })
}

/// The machine's non-idle CPU time (user, nice, system, irq, softirq; not
/// the time the hypervisor stole), in milliseconds.
pub(crate) fn machine_ms() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = text.lines().next() else {
        return 0;
    };
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    (at(0) + at(1) + at(2) + at(5) + at(6)) * 10
}
