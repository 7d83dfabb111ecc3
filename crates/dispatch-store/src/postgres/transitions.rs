//! Compare-and-set state changes on PostgreSQL, for one run or for many at
//! once (a worker saving the ends of many runs in one transaction): the rows
//! are locked in id order, each run's writes checked against its version
//! (and fencing token), then every run that passed is saved with one
//! `UPDATE … FROM unnest(…)`, one insert of all the events and one statement
//! per kind of change to the attempts table.

use std::collections::HashMap;

use deadpool_postgres::Transaction;
use dispatch_core::{NewEvent, RunId, RunState, Status, Ts};

use super::events::insert_events;
use super::runs::{
    notify_callbacks, notify_queue, parse_id, parse_status, run_columns, run_from_row, u32_of,
};
use super::{Fail, to_json};
use crate::attempt_end::{AttemptEnd, requeue_close};
use crate::{Run, StateWrite, StoreError};

/// The writes of one run: as [`crate::RunStore::transitions`] with `fence`
/// `None`, as [`crate::QueueStore::fenced_transitions`] with a token.
pub(super) struct Item<'a> {
    pub id: &'a RunId,
    pub fence: Option<i64>,
    pub expected: i64,
    pub writes: &'a [StateWrite],
}

/// Saves each item's writes, or answers why not (see
/// [`crate::QueueStore::fenced_transitions_many`]). `Err` when the statements
/// themselves failed: the caller's transaction is then lost as a whole.
pub(super) async fn save(
    tx: &Transaction<'_>,
    items: &[Item<'_>],
) -> Result<Vec<Result<Run, StoreError>>, Fail> {
    let saved = lock(tx, items).await?;
    let mut answers: Vec<Result<Run, StoreError>> = Vec::with_capacity(items.len());
    let mut planned: Vec<(usize, Plan)> = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let first = items[..n].iter().all(|other| other.id != item.id);
        let checked = match saved.get(item.id) {
            None => Err(StoreError::NotFound(item.id.to_string())),
            // The same run twice: only its first writes are saved.
            Some(_) if !first => Err(conflict(item)),
            Some(row) => check(item, row),
        };
        match checked {
            Ok(plan) => {
                planned.push((n, plan));
                answers.push(Err(conflict(item))); // until the update says otherwise
            }
            Err(e) => answers.push(Err(e)),
        }
    }
    if planned.is_empty() {
        return Ok(answers);
    }
    let updated = update(tx, items, &planned).await?;
    let mut events: Vec<(RunId, NewEvent)> = Vec::new();
    let mut attempts = AttemptChanges::default();
    let (mut queued, mut finished, mut finished_at) = (false, Vec::new(), Vec::new());
    let mut failed = Vec::new();
    for (n, plan) in planned {
        let item = &items[n];
        let Some(run) = updated.get(item.id) else {
            continue; // moved on under us: unreachable under the row lock
        };
        for w in item.writes {
            events.push((item.id.clone(), w.event.clone()));
            events.extend(w.then.iter().map(|e| (item.id.clone(), e.clone())));
        }
        attempts.add(item.id, plan.attempts);
        queued |= plan.queued;
        if run.state.is_terminal() {
            finished.push(item.id.as_str());
            let at = item.writes.last().map_or(0, |w| w.event.at);
            finished_at.push(at);
            failed.extend(crate::notifications::run_failed(
                item.id,
                run.attempt,
                &run.state,
                at,
            ));
        }
        answers[n] = Ok(run.clone());
    }
    // Independent of each other's answers: sent at once (pipelined on the
    // connection), one round trip instead of one each.
    let notify = async {
        if queued {
            notify_queue(tx).await?;
        }
        Ok(())
    };
    let finish = async {
        if !finished.is_empty() {
            tokio::try_join!(
                notify_callbacks(tx, &finished),
                async {
                    match queued {
                        true => Ok(()),
                        false => super::runs::notify_keyed(tx, &finished).await,
                    }
                },
                close_approvals(tx, &finished, &finished_at),
                super::notifications::enqueue(tx, &failed)
            )?;
        }
        Ok::<(), Fail>(())
    };
    tokio::try_join!(
        insert_events(tx, &events),
        attempts.save(tx),
        notify,
        finish
    )?;
    Ok(answers)
}

/// Decides every approval still pending of the runs that just ended as
/// [`crate::reliability::ENDED_DECISION`] (nobody can decide them any more),
/// with their `approval_decided` events: one statement, nothing returned.
async fn close_approvals(tx: &Transaction<'_>, runs: &[&str], ats: &[Ts]) -> Result<(), Fail> {
    use crate::reliability::{ENDED_BY, ENDED_DECISION, ENDED_RATIONALE};
    let stmt = tx
        .prepare_cached(
            "WITH ended AS (SELECT * FROM unnest($1::text[], $2::bigint[]) AS e(run, at)), \
             closed AS (UPDATE approvals a SET decision = $3, decided_by = $4, rationale = $5, \
             decided_at = ended.at FROM ended \
             WHERE a.run_id = ended.run COLLATE \"C\" AND a.decision IS NULL \
             RETURNING a.run_id, a.id, a.attempt, ended.at) \
             INSERT INTO events (run_id, attempt, at, type, data) \
             SELECT run_id, attempt, at, 'approval_decided', \
             json_build_object('id', id, 'decision', $3::text, 'by', $4::text, \
             'rationale', $5::text)::text FROM closed ORDER BY run_id, id",
        )
        .await?;
    tx.execute(
        &stmt,
        &[&runs, &ats, &ENDED_DECISION, &ENDED_BY, &ENDED_RATIONALE],
    )
    .await?;
    Ok(())
}

fn conflict(item: &Item<'_>) -> StoreError {
    StoreError::Conflict {
        id: item.id.clone(),
        expected: item.expected,
    }
}

/// A run's row as locked.
struct Saved {
    version: i64,
    status: Status,
    attempt: u32,
    fence: i64,
    /// The lease owner, when a worker holds the run.
    owner: Option<String>,
}

/// Locks the items' rows, in id order (two workers saving at once never
/// wait on each other in a circle).
async fn lock(tx: &Transaction<'_>, items: &[Item<'_>]) -> Result<HashMap<RunId, Saved>, Fail> {
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    let stmt = tx
        .prepare_cached(
            "SELECT id, version, status, attempt, fence, lease_owner \
             FROM runs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
        )
        .await?;
    let mut saved = HashMap::new();
    for row in tx.query(&stmt, &[&ids]).await? {
        let id = parse_id(row.try_get(0)?)?;
        let found = Saved {
            version: row.try_get(1)?,
            status: parse_status(&id, row.try_get(2)?)?,
            attempt: u32_of(&id, "attempt", row.try_get(3)?)?,
            fence: row.try_get(4)?,
            owner: row.try_get(5)?,
        };
        saved.insert(id, found);
    }
    Ok(saved)
}

/// Whether `item` may be saved over `saved`, and what it changes.
fn check(item: &Item<'_>, saved: &Saved) -> Result<Plan, StoreError> {
    if let Some(fence) = item.fence
        && (saved.fence != fence || saved.owner.is_none())
    {
        return Err(StoreError::Fenced {
            id: item.id.clone(),
            fence,
        });
    }
    if saved.version != item.expected {
        return Err(conflict(item));
    }
    plan(
        item.id,
        saved.status,
        saved.attempt,
        saved.owner.as_deref(),
        item.writes,
    )
}

/// One `UPDATE` for every planned run; the runs as saved, by id.
async fn update(
    tx: &Transaction<'_>,
    items: &[Item<'_>],
    planned: &[(usize, Plan)],
) -> Result<HashMap<RunId, Run>, Fail> {
    let mut cols = UpdateColumns::default();
    for (n, plan) in planned {
        let item = &items[*n];
        let Some(last) = item.writes.last() else {
            continue;
        };
        cols.ids.push(item.id.as_str());
        cols.expected.push(item.expected);
        cols.states.push(to_json("state", &last.state)?);
        cols.statuses.push(last.state.status().as_str());
        cols.counts
            .push(i64::try_from(item.writes.len()).unwrap_or(i64::MAX));
        cols.attempts.push(i64::from(plan.attempt));
        cols.ats.push(last.event.at);
        let output = item.writes.iter().rev().find_map(|w| w.output.as_ref());
        cols.outputs
            .push(output.map(|o| to_json("output", o)).transpose()?);
        cols.ready_ats.push(plan.ready_at);
        cols.releases.push(plan.release);
        cols.claims.push(i64::from(plan.claim));
    }
    let mut updated = HashMap::new();
    if cols.ids.is_empty() {
        // Only empty rows of writes: the runs as they are.
        for (n, _) in planned {
            let run = super::runs::get(tx, items[*n].id).await?;
            updated.insert(run.id.clone(), run);
        }
        return Ok(updated);
    }
    let stmt = tx
        .prepare_cached(concat!(
            "UPDATE runs SET state = u.new_state, status = u.new_status, \
             version = runs.version + u.n, attempt = u.new_attempt, updated_at = u.at, \
             output = COALESCE(u.new_output, runs.output), \
             ready_at = COALESCE(u.new_ready_at, runs.ready_at), \
             lease_owner = CASE WHEN u.release THEN NULL ELSE runs.lease_owner END, \
             lease_expires_at = CASE WHEN u.release THEN NULL ELSE runs.lease_expires_at END, \
             fence = runs.fence + u.claims \
             FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], \
             $6::bigint[], $7::bigint[], $8::text[], $9::bigint[], $10::bool[], $11::bigint[]) \
             AS u(uid, expected, new_state, new_status, n, new_attempt, at, new_output, \
             new_ready_at, release, claims) \
             WHERE runs.id = u.uid COLLATE \"C\" AND runs.version = u.expected RETURNING ",
            run_columns!()
        ))
        .await?;
    let rows = tx
        .query(
            &stmt,
            &[
                &cols.ids,
                &cols.expected,
                &cols.states,
                &cols.statuses,
                &cols.counts,
                &cols.attempts,
                &cols.ats,
                &cols.outputs,
                &cols.ready_ats,
                &cols.releases,
                &cols.claims,
            ],
        )
        .await?;
    for row in &rows {
        let run = run_from_row(row)?;
        updated.insert(run.id.clone(), run);
    }
    // Empty rows of writes among the others (a caller with nothing to say).
    for (n, _) in planned {
        let id = items[*n].id;
        if items[*n].writes.is_empty() {
            updated.insert(id.clone(), super::runs::get(tx, id).await?);
        }
    }
    Ok(updated)
}

/// The `UPDATE`'s arrays, one element per run.
#[derive(Default)]
struct UpdateColumns<'a> {
    ids: Vec<&'a str>,
    expected: Vec<i64>,
    states: Vec<String>,
    statuses: Vec<&'static str>,
    counts: Vec<i64>,
    attempts: Vec<i64>,
    ats: Vec<Ts>,
    outputs: Vec<Option<String>>,
    ready_ats: Vec<Option<Ts>>,
    releases: Vec<bool>,
    claims: Vec<i64>,
}

/// What a row of writes does besides the run's own row.
struct Plan {
    /// The run's attempt number after them.
    attempt: u32,
    /// The last queued state's `ready_at`, if any went back to the queue.
    ready_at: Option<Ts>,
    /// Some write went back to the queue (workers are told).
    queued: bool,
    /// Queued or finished, the run is nobody's: a worker's lease ends.
    release: bool,
    /// Some write claimed it (a local helper's claim): a new fencing token.
    claim: bool,
    attempts: Vec<AttemptOp>,
}

/// Walks `writes` from the saved status and attempt: which attempts open and
/// close (an attempt opens when the run enters `running`, closes when it
/// leaves it for the queue or an end), and the attempt number after them.
fn plan(
    id: &RunId,
    mut status: Status,
    mut attempt: u32,
    owner: Option<&str>,
    writes: &[StateWrite],
) -> Result<Plan, StoreError> {
    let mut plan = Plan {
        attempt,
        ready_at: None,
        queued: false,
        release: false,
        claim: false,
        attempts: Vec::new(),
    };
    for write in writes {
        if status.is_terminal() {
            return Err(StoreError::InvalidState {
                id: id.clone(),
                status,
                hint: "a finished run never changes state (hint: `dispatch restart` runs it again)",
            });
        }
        let next = write.state.status();
        let at = write.event.at;
        plan.claim |= status == Status::Queued && next == Status::Starting;
        if let RunState::Queued { not_before } = &write.state {
            plan.queued = true;
            plan.ready_at = Some(not_before.unwrap_or(at));
            // (A created run's start, a reviewed run's approval, is its
            // first time in the queue.)
            if !matches!(status, Status::Queued | Status::Created | Status::Review) {
                // Back to the queue from anywhere else: a retry, so a new attempt.
                plan.attempts.push(AttemptOp::Close {
                    number: attempt,
                    end: requeue_close(&write.event),
                });
                attempt += 1;
            }
        }
        // Queued, suspended or finished, the run is nobody's: a worker's lease ends.
        plan.release |= next == Status::Queued
            || next.is_terminal()
            || matches!(write.state, RunState::Suspended { .. });
        if write.state.agent().is_some() {
            let started_at = write.state.started_at().unwrap_or(at);
            plan.attempts.push(AttemptOp::Open {
                number: attempt,
                started_at,
                worker: crate::attempt_end::worker_name(owner, &write.state),
            });
        }
        let suspended = crate::attempt_end::suspend_close(&write.state, at);
        if next.is_terminal() || suspended.is_some() {
            let end = suspended.unwrap_or_else(|| AttemptEnd {
                ended_at: write.state.ended_at().unwrap_or(at),
                status: next,
                exit_code: write.state.exit_code(),
                error: write.state.reason().map(str::to_string),
            });
            // Opened by an earlier write of this row: one change for both.
            match plan.attempts.pop() {
                Some(AttemptOp::Open {
                    number,
                    started_at,
                    worker,
                }) if number == attempt => {
                    plan.attempts.push(AttemptOp::Both {
                        number,
                        started_at,
                        worker,
                        end,
                    });
                }
                other => {
                    plan.attempts.extend(other);
                    plan.attempts.push(AttemptOp::Close {
                        number: attempt,
                        end,
                    });
                }
            }
        }
        status = next;
    }
    plan.attempt = attempt;
    Ok(plan)
}

/// One change to the attempts table.
enum AttemptOp {
    /// The attempt started (kept as it is if a lost worker's attempt already
    /// opened it).
    Open {
        number: u32,
        started_at: Ts,
        worker: String,
    },
    /// The attempt ended (unless it already had).
    Close { number: u32, end: AttemptEnd },
    /// Both.
    Both {
        number: u32,
        started_at: Ts,
        worker: String,
        end: AttemptEnd,
    },
}

/// The attempts' changes of every run saved, as arrays: one statement per
/// kind. A run's attempt appears in one kind only, except an attempt opened
/// and then requeued by the same row of writes (opened first, as written).
#[derive(Default)]
struct AttemptChanges {
    open: (Vec<String>, Vec<i64>, Vec<Ts>, Vec<String>),
    close: Ends,
    both: (Vec<Ts>, Vec<String>, Ends),
}

/// Ends of attempts, as arrays.
#[derive(Default)]
struct Ends {
    runs: Vec<String>,
    numbers: Vec<i64>,
    ended_at: Vec<Ts>,
    statuses: Vec<&'static str>,
    exit_codes: Vec<Option<i32>>,
    errors: Vec<Option<String>>,
}

impl Ends {
    fn push(&mut self, run: &RunId, number: u32, end: AttemptEnd) {
        self.runs.push(run.as_str().to_string());
        self.numbers.push(i64::from(number));
        self.ended_at.push(end.ended_at);
        self.statuses.push(end.status.as_str());
        self.exit_codes.push(end.exit_code);
        self.errors.push(end.error);
    }
}

impl AttemptChanges {
    fn add(&mut self, run: &RunId, ops: Vec<AttemptOp>) {
        for op in ops {
            match op {
                AttemptOp::Open {
                    number,
                    started_at,
                    worker,
                } => {
                    self.open.0.push(run.as_str().to_string());
                    self.open.1.push(i64::from(number));
                    self.open.2.push(started_at);
                    self.open.3.push(worker);
                }
                AttemptOp::Close { number, end } => self.close.push(run, number, end),
                AttemptOp::Both {
                    number,
                    started_at,
                    worker,
                    end,
                } => {
                    self.both.0.push(started_at);
                    self.both.1.push(worker);
                    self.both.2.push(run, number, end);
                }
            }
        }
    }

    async fn save(&self, tx: &Transaction<'_>) -> Result<(), Fail> {
        if !self.open.0.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO attempts (run_id, number, started_at, worker) \
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[]) \
                     ON CONFLICT DO NOTHING",
                )
                .await?;
            let o = &self.open;
            tx.execute(&stmt, &[&o.0, &o.1, &o.2, &o.3]).await?;
        }
        let c = &self.close;
        if !c.runs.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "UPDATE attempts SET ended_at = c.ended_at, status = c.status, \
                     exit_code = c.exit_code, error = c.error \
                     FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], \
                     $5::int[], $6::text[]) AS c(r, n, ended_at, status, exit_code, error) \
                     WHERE attempts.run_id = c.r COLLATE \"C\" AND attempts.number = c.n \
                     AND attempts.ended_at IS NULL",
                )
                .await?;
            tx.execute(
                &stmt,
                &[
                    &c.runs,
                    &c.numbers,
                    &c.ended_at,
                    &c.statuses,
                    &c.exit_codes,
                    &c.errors,
                ],
            )
            .await?;
        }
        let (started_at, workers, b) = &self.both;
        if !b.runs.is_empty() {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO attempts \
                     (run_id, number, started_at, ended_at, status, exit_code, error, worker) \
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], \
                     $4::bigint[], $5::text[], $6::int[], $7::text[], $8::text[]) \
                     ON CONFLICT (run_id, number) DO UPDATE SET ended_at = excluded.ended_at, \
                     status = excluded.status, exit_code = excluded.exit_code, \
                     error = excluded.error WHERE attempts.ended_at IS NULL",
                )
                .await?;
            tx.execute(
                &stmt,
                &[
                    &b.runs,
                    &b.numbers,
                    started_at,
                    &b.ended_at,
                    &b.statuses,
                    &b.exit_codes,
                    &b.errors,
                    workers,
                ],
            )
            .await?;
        }
        Ok(())
    }
}
