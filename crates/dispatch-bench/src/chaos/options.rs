//! The command line of `dispatch-bench chaos`.

use std::path::PathBuf;
use std::time::Duration;

pub(super) const HELP: &str = "\
dispatch-bench chaos: the fault-tolerance promises under fire, with real
processes, a real PostgreSQL and a fault-injecting TCP proxy per worker.

Runs of two agents are submitted to `dispatch worker` processes while faults
are injected; then it counts what users fear. Agents: a process agent that
beats (a timestamp every 50 ms into a file of its own per execution), and a
native agent whose model (a scripted mock on loopback) calls a LOCAL tool
that beats the same way. Some runs last longer than the lease.

usage: dispatch-bench chaos [OPTIONS]

options:
  --dispatch PATH        the dispatch binary (target/release/dispatch)
  --database-url URL     where throwaway databases are made (DISPATCH_TEST_PG,
                         else postgres://postgres@127.0.0.1:5432/test)
  --runs N               runs to submit (500)
  --rate N               submissions per second (15)
  --workers N            worker processes, at least 2 (4)
  --slots N              slots per worker (4)
  --lease-ms N           the workers' lease, at least 600 (3000)
  --deadline-secs N      give up waiting for runs to end after this (600)
  --native-pct N         share of runs that are native agents, 0-100 (50)
  --long-pct N           share of runs that last 1.2-1.8 x the lease (20)
  --fault-every-ms N     one worker fault this often (2000)
  --faults LIST          comma-separated, all by default:
                           worker-kill   SIGKILL a worker alone (its agents
                                         are left to the runtime)
                           machine-kill  SIGKILL a worker and its agents
                           freeze        SIGSTOP a worker for 2 x the lease
                           agent-kill    SIGKILL a process agent every 0.7 s
                           partition     cut one worker off the database
                                         for 2 x the lease, once
                           db-restart    cut and refuse every worker's
                                         connections for 1.5 s, once
  --format table|json    a Markdown table (default) or one JSON object
  -h, --help             this text

It prints: runs, executions, faults injected, concurrent double executions
(overlaps), re-executions of completed work by cause, repeated model calls
(a completed call sent again), unbilled model calls (sent, not recorded),
orphans (processes of the runs alive after the end), lost (work finished,
run not succeeded), stuck (not ended by the deadline), and the time from a
worker's death to its runs executing elsewhere.

Exit codes: 0 done (whatever it counted), 1 could not run, 2 bad arguments.";

/// Which faults to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Faults {
    pub worker_kill: bool,
    pub machine_kill: bool,
    pub freeze: bool,
    pub agent_kill: bool,
    pub partition: bool,
    pub db_restart: bool,
}

impl Faults {
    const ALL: Faults = Faults {
        worker_kill: true,
        machine_kill: true,
        freeze: true,
        agent_kill: true,
        partition: true,
        db_restart: true,
    };

    fn parse(list: &str) -> Result<Faults, String> {
        let mut f = Faults {
            worker_kill: false,
            machine_kill: false,
            freeze: false,
            agent_kill: false,
            partition: false,
            db_restart: false,
        };
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "worker-kill" => f.worker_kill = true,
                "machine-kill" => f.machine_kill = true,
                "freeze" => f.freeze = true,
                "agent-kill" => f.agent_kill = true,
                "partition" => f.partition = true,
                "db-restart" => f.db_restart = true,
                "all" => f = Faults::ALL,
                other => {
                    return Err(format!(
                        "--faults: unknown fault `{other}` (worker-kill, machine-kill, freeze, agent-kill, partition, db-restart, all)"
                    ));
                }
            }
        }
        Ok(f)
    }
}

#[derive(Debug)]
pub(super) struct Options {
    pub dispatch: PathBuf,
    pub runs: usize,
    pub rate: f64,
    pub workers: usize,
    pub slots: usize,
    pub lease_ms: u64,
    pub deadline: Duration,
    pub native_pct: u64,
    pub long_pct: u64,
    pub fault_every: Duration,
    pub faults: Faults,
    pub json: bool,
}

/// `Ok(None)`: help was asked for.
pub(super) fn parse(dispatch: PathBuf, args: &[String]) -> Result<Option<Options>, String> {
    let mut o = Options {
        dispatch,
        runs: 500,
        rate: 15.0,
        workers: 4,
        slots: 4,
        lease_ms: 3000,
        deadline: Duration::from_secs(600),
        native_pct: 50,
        long_pct: 20,
        fault_every: Duration::from_millis(2000),
        faults: Faults::ALL,
        json: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value (see --help)"))?;
        let number = || -> Result<u64, String> {
            value
                .parse()
                .map_err(|_| format!("{flag} expects a whole number, got `{value}`"))
        };
        match flag.as_str() {
            "--dispatch" | "--database-url" => {}
            "--runs" => o.runs = number()? as usize,
            "--rate" => o.rate = number()?.max(1) as f64,
            "--workers" => o.workers = number()?.max(2) as usize,
            "--slots" => o.slots = number()?.max(1) as usize,
            "--lease-ms" => o.lease_ms = number()?.max(600),
            "--deadline-secs" => o.deadline = Duration::from_secs(number()?),
            "--native-pct" => o.native_pct = number()?.min(100),
            "--long-pct" => o.long_pct = number()?.min(100),
            "--fault-every-ms" => o.fault_every = Duration::from_millis(number()?.max(100)),
            "--faults" => o.faults = Faults::parse(value)?,
            "--format" => {
                o.json = match value.as_str() {
                    "json" => true,
                    "table" => false,
                    other => return Err(format!("--format: `{other}` is not table or json")),
                }
            }
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    Ok(Some(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_parse_and_bad_ones_say_what_is_wrong() {
        let o = parse(
            PathBuf::from("d"),
            &args(&[
                "--runs",
                "40",
                "--faults",
                "freeze,worker-kill",
                "--format",
                "json",
            ]),
        )
        .expect("parses")
        .expect("not help");
        assert_eq!(o.runs, 40);
        assert!(o.json);
        assert!(o.faults.freeze && o.faults.worker_kill && !o.faults.machine_kill);
        assert!(
            parse(PathBuf::from("d"), &args(&["--help"]))
                .expect("ok")
                .is_none()
        );
        let e = parse(PathBuf::from("d"), &args(&["--faults", "meteor"])).expect_err("refused");
        assert!(e.contains("unknown fault `meteor`"), "{e}");
        let e = parse(PathBuf::from("d"), &args(&["--runs", "many"])).expect_err("refused");
        assert!(e.contains("--runs expects a whole number"), "{e}");
        let e = parse(PathBuf::from("d"), &args(&["--runs"])).expect_err("refused");
        assert!(e.contains("--runs needs a value"), "{e}");
        let e = parse(PathBuf::from("d"), &args(&["--speed", "1"])).expect_err("refused");
        assert!(e.contains("unknown argument `--speed`"), "{e}");
    }
}
