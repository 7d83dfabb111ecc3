//! Retention: how long finished runs and their events are kept, and the
//! pass that deletes what is older, a bounded batch at a time.
//!
//! A spec is a comma-separated list of `KEY=AGE` (`succeeded=7d,failed=30d,
//! events=90d`): a terminal status (`succeeded`, `failed`, `timed_out`,
//! `cancelled`, `stopped`) keeps runs that ended in it for AGE, `finished`
//! does so for every terminal status not named on its own, and `events`
//! deletes the events of any run that finished AGE ago while keeping the run
//! (its status, attempts, output and usage). Nothing is deleted that the spec
//! does not name. Runs with a dead letter not replayed yet, an undecided
//! approval or an undelivered callback are always kept.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use dispatch_core::time::{human_duration, parse_age};
use dispatch_core::{Status, Ts};
use dispatch_store::{RetentionCursor, RetentionStore};

use crate::error::RuntimeResult;
use crate::layout::Layout;
use crate::objects::{Objects, chain};
use crate::prune::remove_run_files;

/// How fast a pass deletes: runs per transaction and the pause after each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pace {
    /// Runs deleted per transaction: short transactions, so a claim that
    /// meets one waits little.
    pub batch: usize,
    /// The shortest pause between two batches, so that the queue's own
    /// writes get the database in between.
    pub pause: Duration,
    /// A batch that took `t` is followed by a pause of at least `t` times
    /// this: the pass takes at most `1 / (1 + yield_factor)` of the
    /// database's time, however slow the database is.
    pub yield_factor: u32,
}

impl Default for Pace {
    /// 100 runs a transaction, then at least 250 ms and at least nine
    /// times as long as the batch took: about 380 runs a second (1.4
    /// million an hour) while 1,000 runs a second flow through the queue,
    /// which then keeps its p99 within 20 % (BENCHMARKS.md, "Tracing and
    /// retention"; at 880 runs a second it rose by 40 %).
    fn default() -> Self {
        Pace {
            batch: 100,
            pause: Duration::from_millis(250),
            yield_factor: 9,
        }
    }
}

impl Pace {
    /// The pause after a batch that took `took`.
    fn after(&self, took: Duration) -> Duration {
        self.pause.max(took * self.yield_factor)
    }
}

/// How long finished runs and their events are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionSpec {
    /// Per terminal status, how old (ms since its end) a run may get.
    pub runs: Vec<(Status, i64)>,
    /// How old a finished run's events may get.
    pub events: Option<i64>,
}

/// The keys a spec takes, for error messages.
const KEYS: &str = "succeeded, failed, timed_out, cancelled, stopped, finished or events";

impl FromStr for RetentionSpec {
    type Err = String;

    /// One line on error, naming the part that is wrong and the fix.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut spec = RetentionSpec::default();
        let mut finished = None;
        if text.trim().is_empty() {
            return Err(format!(
                "retention spec is empty (hint: succeeded=7d,failed=30d,events=90d; keys: {KEYS})"
            ));
        }
        for part in text.split(',') {
            let Some((key, age)) = part.split_once('=') else {
                return Err(format!(
                    "retention `{part}` is not KEY=AGE (hint: succeeded=7d,failed=30d,events=90d)"
                ));
            };
            let key = key.trim();
            let age = parse_age(age).map_err(|e| format!("retention {key}: {e}"))?;
            let twice = || format!("retention `{key}` is given twice (hint: one age per key)");
            match key {
                "events" if spec.events.is_some() => return Err(twice()),
                "events" => spec.events = Some(age),
                "finished" if finished.is_some() => return Err(twice()),
                "finished" => finished = Some(age),
                _ => {
                    let status: Status = key
                        .parse()
                        .map_err(|_| format!("retention `{key}` is not a key (hint: {KEYS})"))?;
                    if !status.is_terminal() {
                        return Err(format!(
                            "retention `{key}`: only finished runs are deleted (hint: {KEYS})"
                        ));
                    }
                    if spec.runs.iter().any(|(s, _)| *s == status) {
                        return Err(twice());
                    }
                    spec.runs.push((status, age));
                }
            }
        }
        if let Some(age) = finished {
            for status in Status::ALL.into_iter().filter(|s| s.is_terminal()) {
                if !spec.runs.iter().any(|(s, _)| *s == status) {
                    spec.runs.push((status, age));
                }
            }
        }
        Ok(spec)
    }
}

impl fmt::Display for RetentionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .runs
            .iter()
            .map(|(s, age)| format!("{s} after {}", human_duration(*age)))
            .collect();
        if let Some(age) = self.events {
            parts.push(format!("events after {}", human_duration(age)));
        }
        f.write_str(&parts.join(", "))
    }
}

/// What a pass deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Runs deleted with everything stored of them.
    pub runs: usize,
    /// Runs whose events were deleted.
    pub events: usize,
    /// Bytes of files removed.
    pub bytes: u64,
}

/// One pass of `spec` at `now` at the default [`Pace`]: for each rule,
/// batches of runs with a pause between them, until a batch comes back
/// short. Files of the deleted runs under `layout` go with them: their log,
/// snapshot, run directory and workspace, and the artifacts, log archives
/// and briefs no other run has.
///
/// With the cluster's artifact store (`shared`), the artifacts and log
/// archives no remaining run has are deleted there too (a failure is a
/// warning: an object left behind costs space, never a wrong answer).
pub async fn retention_pass<S: RetentionStore + ?Sized>(
    store: &S,
    layout: &Layout,
    shared: Option<&Objects>,
    spec: &RetentionSpec,
    now: Ts,
) -> RuntimeResult<RetentionReport> {
    retention_pass_at(store, layout, shared, spec, now, Pace::default()).await
}

/// [`retention_pass`] at `pace`.
pub async fn retention_pass_at<S: RetentionStore + ?Sized>(
    store: &S,
    layout: &Layout,
    shared: Option<&Objects>,
    spec: &RetentionSpec,
    now: Ts,
    pace: Pace,
) -> RuntimeResult<RetentionReport> {
    let mut report = RetentionReport::default();
    for &(status, age) in &spec.runs {
        let before = now.saturating_sub(age);
        let mut cursor: Option<RetentionCursor> = None;
        loop {
            let began = std::time::Instant::now();
            let expired = store
                .expire_runs(status, before, cursor.as_ref(), pace.batch)
                .await?;
            let took = began.elapsed();
            for id in &expired.runs {
                report.bytes += remove_run_files(layout, id);
            }
            for sha in &expired.artifacts {
                report.bytes += remove_file(&layout.artifacts().join(sha));
            }
            for sha in &expired.logs {
                report.bytes += remove_file(&layout.log_archives().join(sha));
            }
            if let Some(objects) = shared {
                delete_objects(objects, &expired).await;
            }
            for sha in &expired.briefs {
                report.bytes += remove_file(&layout.briefs().join(format!("{sha}.json")));
            }
            report.runs += expired.runs.len();
            if expired.runs.len() < pace.batch {
                break;
            }
            cursor = expired.cursor;
            tokio::time::sleep(pace.after(took)).await;
        }
    }
    if let Some(age) = spec.events {
        let before = now.saturating_sub(age);
        let mut cursor: Option<RetentionCursor> = None;
        loop {
            let began = std::time::Instant::now();
            let (n, next) = store
                .expire_events(before, cursor.as_ref(), pace.batch)
                .await?;
            let took = began.elapsed();
            report.events += n;
            if n < pace.batch {
                break;
            }
            cursor = next;
            tokio::time::sleep(pace.after(took)).await;
        }
    }
    Ok(report)
}

/// Deletes the expired batch's artifacts, log archives and model-call
/// records from the cluster's artifact store.
async fn delete_objects(objects: &Objects, expired: &dispatch_store::Expired) {
    for sha in &expired.artifacts {
        if let Err(e) = objects.delete_artifact(sha).await {
            tracing::warn!(
                "retention: artifact {sha} stays in {}: {}",
                objects.url(),
                chain(&e)
            );
        }
    }
    for sha in &expired.logs {
        if let Err(e) = objects.delete_log(sha).await {
            tracing::warn!(
                "retention: log archive {sha} stays in {}: {}",
                objects.url(),
                chain(&e)
            );
        }
    }
    for run in &expired.runs {
        if let Err(e) = objects.delete_calls(run).await {
            tracing::warn!(
                "retention: model-call records of run {run} stay in {}: {}",
                objects.url(),
                chain(&e)
            );
        }
    }
}

/// Removes `path`; returns its size, 0 when there was nothing to remove.
fn remove_file(path: &std::path::Path) -> u64 {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    match std::fs::remove_file(path) {
        Ok(()) => size,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    #[test]
    fn a_pass_pauses_at_least_its_floor_and_nine_times_what_a_batch_took() {
        let pace = Pace::default();
        let ms = Duration::from_millis;
        assert_eq!(pace.after(ms(5)), ms(250), "a quick batch: the floor");
        assert_eq!(
            pace.after(ms(100)),
            ms(900),
            "a slow database: a tenth of its time"
        );
    }

    #[test]
    fn a_spec_names_ages_per_status_and_for_events() {
        let spec: RetentionSpec = "succeeded=7d, failed=30d,events=90d".parse().expect("spec");
        assert_eq!(
            spec.runs,
            [(Status::Succeeded, 7 * DAY), (Status::Failed, 30 * DAY)]
        );
        assert_eq!(spec.events, Some(90 * DAY));
    }

    #[test]
    fn finished_covers_the_statuses_not_named() {
        let spec: RetentionSpec = "failed=30d,finished=1h".parse().expect("spec");
        assert_eq!(spec.runs.len(), 5);
        assert_eq!(spec.runs[0], (Status::Failed, 30 * DAY));
        assert!(spec.runs[1..].iter().all(|(_, age)| *age == 3_600_000));
        assert_eq!(spec.events, None);
    }

    #[test]
    fn bad_specs_say_what_is_wrong_in_one_line() {
        for (text, says) in [
            ("", "empty"),
            ("succeeded", "not KEY=AGE"),
            ("succeeded=7", "not a duration"),
            ("succeeded=seven", "not a duration"),
            ("succeeded=-1d", "not a duration"),
            ("done=7d", "not a key"),
            ("running=7d", "only finished runs"),
            ("succeeded=7d,succeeded=1d", "given twice"),
            ("events=1d,events=2d", "given twice"),
            ("succeeded=7d,", "not KEY=AGE"),
        ] {
            let err = text.parse::<RetentionSpec>().expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
            assert!(!err.contains('\n'), "{text}: one line: {err}");
        }
    }
}
