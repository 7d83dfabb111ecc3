//! `dispatch-bench --help`, and `--help` after a measurement that has no
//! help of its own: the list of measurements and their flags, instead of
//! running the measurement (which is what `dispatch-bench cluster --help`
//! did: minutes of load for a question).

/// The measurements and their flags (each is described in its module and
/// in BENCHMARKS.md).
const USAGE: &str = "\
usage: dispatch-bench MEASUREMENT [FLAGS]

Measures Dispatch's targets against a built `dispatch` binary (--dispatch
PATH, default target/release/dispatch; build it first: cargo build --release)
and prints a Markdown table. Network load goes to loopback only; PostgreSQL
measurements make their own throwaway database on 127.0.0.1:5432 (or
--database-url URL).

Measurements:
  local [--only latency|floors|throughput]   time to agent, its floors, 1,000 detached runs
  cluster [--runs N] [--latency N] [--batch N] [--process-runs N] [--slots N]
          [--only noop|process|latency]     workers' throughput on PostgreSQL and SQLite
  native [--help]                            native agents: start, concurrency, SSE, memory
  chaos [--help]                             workers killed, frozen, partitioned under load
  service [--idle-secs N]                    a service run's requests and idle cost
  service-cluster                            services in the cluster
  idle [--secs N]                            an idle cluster's database load
  batch, parcel, policy                      batch submission, parcels, policy decisions
  tools                                      LOCAL and MCP tool calls, approval latency
  waits [--suspended N] [--latency K] [--waiters W]   durable waits on PostgreSQL
  isolation [--baseline OLD] [--n N]         workspaces and the scrubbed environment
  resources [--n N]                          time to agent with and without RESOURCES
  container [--runs N] [--image REF]         the container courier against podman run -d
  eval [--cases N] [--calls N]               dispatch eval recorded and replayed
  workflow [--hops N] [--fanout N] [--rounds R], workflow-cluster [--hops N] [--rounds R]
  artifacts [--mb N] [--rounds N], artifacts-server [--mb N] [--rounds N]
  ui [--runs N] [--events N] [--log-mb N]    the dashboard over 100,000 runs
  rates [--calls N] [--tasks N]              model rate buckets, PostgreSQL against Redis
  concurrency                                concurrency keys on and off
  telemetry [--runs N] [--rounds R], retention [...]   OTLP export, retention under load
  wasm [--n N]                               a WASM agent's start
  mock-llm [--help]                          the scripted mock model server
";

/// Prints the usage and exits 0 when it was asked for (`help`, or
/// `-h`/`--help` after a measurement without a help of its own); with no
/// measurement named, prints it to stderr and exits 2.
pub fn help_if_asked(args: &[String]) {
    let own_help = ["native", "chaos", "mock-llm"];
    let asked = match args.get(1).map(String::as_str) {
        None => {
            eprint!("{USAGE}");
            std::process::exit(2);
        }
        Some("help" | "-h" | "--help") => true,
        Some(m) if own_help.contains(&m) => false,
        Some(_) => args[2..].iter().any(|a| a == "-h" || a == "--help"),
    };
    if asked {
        print!("{USAGE}");
        std::process::exit(0);
    }
}

/// Whether `name` is a measurement the usage lists.
fn listed(name: &str) -> bool {
    [
        format!("  {name} "),
        format!(" {name},"),
        format!(", {name} "),
    ]
    .iter()
    .any(|form| USAGE.contains(form.as_str()))
}

/// One line on what is wrong with the command line, and exit 2: a
/// measurement not listed, or one whose `dispatch` binary is missing.
pub fn refuse(measurement: &str, dispatch: &std::path::Path) -> ! {
    if listed(measurement) {
        eprintln!(
            "dispatch-bench {measurement}: no `dispatch` binary at {} (build it: cargo build --release, or pass --dispatch PATH)",
            dispatch.display()
        );
    } else {
        eprintln!(
            "dispatch-bench: `{measurement}` is not a measurement (dispatch-bench --help lists them)"
        );
    }
    std::process::exit(2);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_measurement_main_knows_is_listed() {
        let main = include_str!("main.rs");
        for line in main.lines() {
            let Some(rest) = line.split("Some(\"").nth(1) else {
                continue;
            };
            let Some(name) = rest.split('"').next() else {
                continue;
            };
            if line.contains("args.get(1)") && name != "seed" {
                assert!(
                    listed(name),
                    "dispatch-bench {name} is missing from the usage"
                );
            }
        }
    }
}
