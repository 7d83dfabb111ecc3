//! What `chaos` counts once the runs are over: from the execution files,
//! the store, the mock model's record and `/proc`.

use dispatch_core::EventKind;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use dispatch_core::Status;
use dispatch_store::{Attempt, AttemptStore, EventStore, RunStore};
use serde_json::{Value, json};

use super::{Chaos, Fault};

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

/// The executions beaten into `<parcel>/exec-*` under `state`.
fn executions(state: &Path) -> Vec<Execution> {
    let mut found = Vec::new();
    let Ok(dirs) = std::fs::read_dir(state) else {
        return found;
    };
    for dir in dirs.flatten() {
        let Ok(entries) = std::fs::read_dir(dir.path()) else {
            continue;
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
            let (Some(run), Some(attempt)) =
                (parts.first(), parts.get(1).and_then(|a| a.parse().ok()))
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
    }
    found
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

impl Chaos<'_> {
    /// Counts, then prints a table or (`--format json`) one JSON object.
    pub(super) fn report(&self, orphans: &[(i32, String)]) {
        let elapsed = self.started.elapsed();
        let execs = executions(&self.layout().root().join("state"));
        let mut by_run: HashMap<String, Vec<&Execution>> = HashMap::new();
        for e in &execs {
            by_run.entry(e.run.clone()).or_default().push(e);
        }
        let mut attempts: HashMap<(String, u32), Attempt> = HashMap::new();
        let (mut succeeded, mut failed, mut stuck, mut lost) = (0, 0, 0, 0);
        let mut lost_attempts = 0;
        let mut requeued_at: HashMap<(String, u32), i64> = HashMap::new();
        let mut recorded: HashMap<String, (usize, usize)> = HashMap::new();
        for (n, id) in self.ids.iter().enumerate() {
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
                        eprintln!(
                            "chaos: run {id} finished its work but ended {:?}",
                            run.state
                        );
                        self.explain(id);
                    }
                }
                _ => stuck += 1,
            }
            let events = self
                .rt
                .block_on(self.store.list_events(id, 0, 100_000))
                .unwrap_or_default();
            let calls: Vec<_> = events
                .iter()
                .filter(|e| e.event.is(EventKind::ModelCall))
                .collect();
            let estimated = calls
                .iter()
                .filter(|e| e.event.data["estimated"] == true)
                .count();
            recorded.insert(super::model::marker(n), (calls.len(), estimated));
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
        let model = super::model::tally(&self.mock.requests(), &recorded);
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
                let cause = self.cause(worker, done, row);
                if cause == "none of these" {
                    eprintln!(
                        "chaos: run {run} attempt {} re-executed after its work: {row:?}",
                        a.attempt
                    );
                }
                *causes.entry(cause).or_default() += 1;
            }
        }
        let reexecuted: usize = causes.values().sum();
        let unexplained = causes.get("none of these").copied().unwrap_or(0);
        let (mut takeovers, mut requeues) = (Vec::new(), Vec::new());
        for hit in self.hits.iter().filter(|h| h.fault != Fault::Freeze) {
            for (id, attempt) in &hit.runs {
                if let Some(at) = requeued_at.get(&(id.to_string(), *attempt)) {
                    requeues.push(at - hit.at);
                }
                let next = by_run.get(id.as_str()).and_then(|l| {
                    l.iter()
                        .filter(|e| e.attempt > *attempt && e.first >= hit.at)
                        .map(|e| e.first)
                        .min()
                });
                if let Some(first) = next {
                    takeovers.push(first - hit.at);
                }
            }
        }
        let count = |f: Fault| self.hits.iter().filter(|h| h.fault == f).count();
        let mut listed: Vec<_> = causes.iter().map(|(c, n)| format!("{n}: {c}")).collect();
        listed.sort();
        let summary = json!({
            "runs": self.ids.len(),
            "succeeded": succeeded,
            "failed": failed,
            "executions": execs.len(),
            "worker_kills": count(Fault::WorkerKill),
            "machine_kills": count(Fault::MachineKill),
            "freezes": count(Fault::Freeze),
            "agent_kills": self.agent_kills,
            "partitions": usize::from(self.partition.is_some()),
            "database_restarts": usize::from(self.restarted.is_some()),
            "lost_worker_attempts": lost_attempts,
            "overlaps": overlaps,
            "reexecutions": reexecuted,
            "reexecution_causes": listed,
            "reexecutions_unexplained": unexplained,
            "model_requests": model.requests,
            "repeated_model_calls": model.repeated,
            "unbilled_model_calls": model.unbilled,
            "orphans": orphans.len(),
            "lost": lost,
            "stuck": stuck,
        });
        for (pid, cmd) in orphans {
            eprintln!("chaos: orphan {pid}: {cmd}");
        }
        if self.o.json {
            println!("{summary}");
            return;
        }
        self.print_table(&summary, elapsed, &mut requeues, &mut takeovers);
    }

    /// Prints what the store says of a run that did not end as its work
    /// did: each attempt, the state changes and the faults that hit it.
    fn explain(&self, id: &dispatch_core::RunId) {
        let rows = self
            .rt
            .block_on(AttemptStore::list_attempts(&self.store, id))
            .unwrap_or_default();
        for a in rows {
            eprintln!(
                "chaos:   attempt {} on {:?}: {:?} exit {:?} {:?} ({}..{:?})",
                a.number, a.worker, a.status, a.exit_code, a.error, a.started_at, a.ended_at
            );
        }
        let events = self
            .rt
            .block_on(self.store.list_events(id, 0, 100_000))
            .unwrap_or_default();
        for e in events.iter().filter(|e| e.event.is(EventKind::State)) {
            eprintln!(
                "chaos:   event {} attempt {} at {}: {}",
                e.seq, e.event.attempt, e.event.at, e.event.data
            );
        }
        for hit in &self.hits {
            if hit.runs.iter().any(|(r, _)| r == id) {
                eprintln!(
                    "chaos:   fault {:?} on {} at {} (until {})",
                    hit.fault, hit.worker, hit.at, hit.until
                );
            }
        }
    }

    /// Why completed work ran again: what had happened to its worker.
    fn cause(&self, worker: &str, done: i64, row: Option<&Attempt>) -> &'static str {
        let hit = self.hits.iter().find(|h| {
            // Work done just before the fault (its result not saved yet) counts.
            h.worker == worker
                && (h.fault != Fault::Freeze || (done >= h.at - 1000 && done <= h.until))
        });
        let partitioned = self
            .partition
            .as_ref()
            // Work done while cut off, or before the worker, back, could
            // save it: its lease was lost meanwhile.
            .is_some_and(|(name, from, to)| {
                name == worker
                    && done >= from - 1000
                    && done <= to.saturating_add(self.o.lease_ms as i64)
            });
        // Work done while every connection was cut: its end could not be
        // saved before the lease ran out.
        let db_down = self.restarted.is_some_and(|(from, to)| {
            done >= from - 1000 && done <= to.saturating_add(self.o.lease_ms as i64)
        });
        match hit.map(|h| h.fault) {
            Some(Fault::WorkerKill) => "its worker was killed",
            Some(Fault::MachineKill) => "its worker and agents were killed",
            Some(Fault::Freeze) => "its worker was frozen",
            None if partitioned => "its worker was partitioned off",
            None if db_down => "the database was down",
            None if row.is_some_and(|r| {
                r.exit_code.is_some_and(|c| c != 0)
                    || r.error.as_deref().is_some_and(|e| e.contains("signal"))
            }) =>
            {
                "its agent was killed before it exited"
            }
            None => "none of these",
        }
    }

    fn print_table(
        &self,
        s: &Value,
        elapsed: std::time::Duration,
        requeues: &mut [i64],
        takeovers: &mut [i64],
    ) {
        let o = self.o;
        println!(
            "| chaos ({} runs at {}/s, {} % native, {} % longer than the lease; {} workers × {} slots, lease {} ms, {:.0} s) | result |\n|---|---|",
            s["runs"],
            o.rate,
            o.native_pct,
            o.long_pct,
            o.workers,
            o.slots,
            o.lease_ms,
            elapsed.as_secs_f64()
        );
        println!(
            "| runs | {} ({} succeeded, {} failed) |",
            s["runs"], s["succeeded"], s["failed"]
        );
        println!("| executions | {} |", s["executions"]);
        println!(
            "| worker kills alone / with their agents / freezes (2 × lease) / agent kills / partitions (2 × lease) / database restarts (1.5 s) | {} / {} / {} / {} / {} / {} |",
            s["worker_kills"],
            s["machine_kills"],
            s["freezes"],
            s["agent_kills"],
            s["partitions"],
            s["database_restarts"]
        );
        println!(
            "| lost-worker attempts recorded (not counted against retries) | {} |",
            s["lost_worker_attempts"]
        );
        println!("| concurrent double executions | {} |", s["overlaps"]);
        let causes: Vec<&str> = s["reexecution_causes"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
            "| re-executions of completed work | {} ({}) |",
            s["reexecutions"],
            if causes.is_empty() {
                "none".into()
            } else {
                causes.join("; ")
            }
        );
        println!(
            "| … of work whose worker and agent were alive and connected | {} |",
            s["reexecutions_unexplained"]
        );
        println!(
            "| model calls: requests / repeated (a completed call sent again) / unbilled (sent, not recorded) | {} / {} / {} |",
            s["model_requests"], s["repeated_model_calls"], s["unbilled_model_calls"]
        );
        println!(
            "| orphans (processes of the runs alive after the end) | {} |",
            s["orphans"]
        );
        println!("| lost | {} |", s["lost"]);
        println!("| stuck | {} |", s["stuck"]);
        let lease_s = o.lease_ms as f64 / 1000.0;
        println!(
            "| worker death → its runs back in the queue ({} runs): p50 / max | {} (lease {lease_s:.1} s) |",
            requeues.len(),
            p50_max(requeues)
        );
        println!(
            "| worker death → its runs executing elsewhere ({} runs): p50 / max | {} (target: lease + 1 s = {:.1} s) |",
            takeovers.len(),
            p50_max(takeovers),
            lease_s + 1.0
        );
    }
}

/// The ids of `runs`, as text.
pub(super) fn id_set(runs: &[dispatch_core::RunId]) -> HashSet<String> {
    runs.iter().map(ToString::to_string).collect()
}
