//! Queue and leases on SQLite (see [`crate::QueueStore`]). Every operation is
//! one `BEGIN IMMEDIATE` transaction: the database's single writer lock makes a
//! claim atomic, so no two claimers can take the same run.

use dispatch_core::EventKind;
use dispatch_core::{NewEvent, RunId, RunState, Status, Ts};
use rusqlite::types::Value as SqlValue;
use rusqlite::{OptionalExtension, Transaction, params, params_from_iter};
use serde_json::json;

use super::events::{append, insert_event};
use super::expire::{DEADLINE, TIMED};
use super::runs::{get, transition};
use super::{Fail, to_json};
use crate::attempt_end::lost_close;
use crate::{
    Capacity, ClaimRequest, Claimed, HeldWrites, Lease, QueueTimes, StateWrite, StoreError,
    StoreResult,
};

/// The statuses in which a worker holds a run.
const HELD: &str = "('starting', 'running', 'paused')";

/// Pairs per renewal statement (two variables each, under SQLite's limit).
const RENEW_CHUNK: usize = 10_000;

pub(super) fn claim(tx: &Transaction<'_>, req: &ClaimRequest) -> Result<Vec<Claimed>, Fail> {
    let limit = i64::try_from(req.limit).unwrap_or(i64::MAX);
    let free = req.free.map(|f| {
        (
            i64::try_from(f.cpus_milli).unwrap_or(i64::MAX),
            i64::try_from(f.memory_bytes).unwrap_or(i64::MAX),
        )
    });
    // Without any quota (the common case) the claim asks nothing of them.
    let quotas = super::quotas::any(tx)?;
    let conditions = match quotas {
        true => format!(
            "AND {} AND {}",
            crate::quotas::under_cap("runs", crate::quotas::LIVE_RUNS),
            crate::quotas::under_budget("runs", "?6", "?7")
        ),
        false => String::new(),
    };
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT id, req_cpus_milli, req_memory_bytes FROM runs WHERE status = 'queued' \
         AND COALESCE(json_extract(state, '$.not_before'), 0) <= ?1 \
         AND (queue_timeout_ms IS NULL OR {DEADLINE} >= ?1) \
         AND (labels = '[]' OR NOT EXISTS (SELECT 1 FROM json_each(runs.labels) AS l \
              WHERE l.value NOT IN (SELECT value FROM json_each(?3)))) \
         AND (?4 IS NULL OR (req_cpus_milli <= ?4 AND req_memory_bytes <= ?5)) \
         AND {admits} {conditions} \
         ORDER BY priority DESC, created_at, id LIMIT ?2",
        admits = crate::limits::admits("runs"),
    ))?;
    let labels = to_json("labels", &req.labels)?;
    let (cpus, memory) = (free.map(|f| f.0), free.map(|f| f.1));
    let row = |row: &rusqlite::Row<'_>| {
        let want = Capacity {
            cpus_milli: row.get::<_, i64>(1)?.max(0) as u64,
            memory_bytes: row.get::<_, i64>(2)?.max(0) as u64,
        };
        Ok((row.get(0)?, want))
    };
    let candidates: Vec<(String, Capacity)> = match quotas {
        true => {
            let (day, month) = crate::quotas::periods_at(req.now);
            stmt.query_map(
                params![req.now, limit, labels, cpus, memory, day, month],
                row,
            )?
            .collect::<Result<_, _>>()?
        }
        false => stmt
            .query_map(params![req.now, limit, labels, cpus, memory], row)?
            .collect::<Result<_, _>>()?,
    };
    drop(stmt);
    // Together, the runs claimed fit in the worker's free capacity.
    let ids = Capacity::pick(req.free, candidates, req.limit);
    // No more runs of a project than its live-run cap has free slots.
    let ids = match quotas {
        true => super::quotas::admitted(tx, &ids)?,
        false => ids,
    };
    let state = to_json(
        "state",
        &RunState::Starting {
            helper: req.helper,
            since: req.now,
        },
    )?;
    let mut update = tx.prepare_cached(
        "UPDATE runs SET state = ?1, status = 'starting', version = version + 1, \
         updated_at = ?2, lease_owner = ?3, lease_expires_at = ?4, fence = fence + 1 \
         WHERE id = ?5 RETURNING fence, attempt",
    )?;
    let mut claimed = Vec::with_capacity(ids.len());
    for id in &ids {
        let (fence, attempt): (i64, u32) = update.query_row(
            params![state, req.now, req.worker, req.now + req.lease_ms, id],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let run_id: RunId = id
            .parse()
            .map_err(|_| Fail::Corrupt(format!("`{id}` is not a run id")))?;
        let data = json!({
            "from": Status::Queued,
            "to": Status::Starting,
            "worker": req.worker,
            "fence": fence,
        });
        insert_event(
            tx,
            &run_id,
            &NewEvent::new(EventKind::State, attempt, req.now, data),
        )?;
        claimed.push(Claimed {
            extras: super::reliability::extras(tx, &run_id)?,
            run: get(tx, &run_id)?,
            fence,
        });
    }
    Ok(claimed)
}

/// See [`crate::QueueStore::create_claimed`]: each run created held by the
/// worker's process, then leased.
pub(super) fn create_claimed(
    tx: &Transaction<'_>,
    batch: &[(crate::NewRun, crate::RunExtras)],
    briefs: &[(String, Vec<u8>)],
    req: &ClaimRequest,
) -> Result<Vec<Claimed>, Fail> {
    for (sha256, bytes) in briefs {
        super::parcels::put_brief(tx, sha256, bytes)?;
    }
    let mut claimed = Vec::with_capacity(batch.len());
    for (new, extras) in batch {
        let mut held = new.clone();
        held.claimed_by = Some(req.helper);
        super::reliability::create_with(tx, &held, extras, false)?;
        let fence: Option<i64> = tx
            .prepare_cached(
                "UPDATE runs SET lease_owner = ?1, lease_expires_at = ?2, fence = fence + 1 \
                 WHERE id = ?3 AND status = 'starting' RETURNING fence",
            )?
            .query_row(
                params![req.worker, req.now + req.lease_ms, new.id.as_str()],
                |row| row.get(0),
            )
            .optional()?;
        if let Some(fence) = fence {
            claimed.push(Claimed {
                extras: super::reliability::extras(tx, &new.id)?,
                run: get(tx, &new.id)?,
                fence,
            });
        }
    }
    Ok(claimed)
}

pub(super) fn renew(
    tx: &Transaction<'_>,
    worker: &str,
    held: &[(RunId, i64)],
    expires_at: Ts,
) -> Result<Vec<RunId>, Fail> {
    let mut renewed = Vec::new();
    for chunk in held.chunks(RENEW_CHUNK) {
        let pairs = vec!["(?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "UPDATE runs SET lease_expires_at = ? WHERE lease_owner = ? AND status IN {HELD} \
             AND (id, fence) IN (VALUES {pairs}) RETURNING id"
        );
        let mut args = vec![
            SqlValue::Integer(expires_at),
            SqlValue::Text(worker.to_string()),
        ];
        for (id, fence) in chunk {
            args.push(SqlValue::Text(id.as_str().to_string()));
            args.push(SqlValue::Integer(*fence));
        }
        let ids: Vec<String> = tx
            .prepare(&sql)?
            .query_map(params_from_iter(args), |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        for id in ids {
            renewed.push(
                id.parse()
                    .map_err(|_| Fail::Corrupt(format!("`{id}` is not a run id")))?,
            );
        }
    }
    Ok(renewed)
}

/// Checks that `fence` is the run's current token under a live lease;
/// returns its status.
fn check_fence(tx: &Transaction<'_>, id: &RunId, fence: i64) -> Result<Status, Fail> {
    let (current, leased, status): (i64, bool, String) = tx
        .prepare_cached("SELECT fence, lease_owner IS NOT NULL, status FROM runs WHERE id = ?1")?
        .query_row([id.as_str()], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?
        .ok_or_else(|| Fail::Store(StoreError::NotFound(id.to_string())))?;
    if current != fence || !leased {
        return Err(Fail::Store(StoreError::Fenced {
            id: id.clone(),
            fence,
        }));
    }
    status
        .parse()
        .map_err(|e| Fail::Corrupt(format!("run {id}: {e}")))
}

pub(super) fn fenced_transitions(
    tx: &Transaction<'_>,
    id: &RunId,
    fence: i64,
    expected: i64,
    writes: &[StateWrite],
) -> Result<crate::Run, Fail> {
    check_fence(tx, id, fence)?;
    // A queued or finished state ends the lease (in `transition`).
    transition(tx, id, expected, writes)
}

/// Saves each run's writes, checked first so that a refused run leaves
/// nothing behind; its answer says why.
pub(super) fn fenced_transitions_many(
    tx: &Transaction<'_>,
    batch: &[HeldWrites],
) -> Result<Vec<StoreResult<crate::Run>>, Fail> {
    let mut answers = Vec::with_capacity(batch.len());
    for held in batch {
        match check_writes(tx, held) {
            Ok(()) => {}
            Err(Fail::Store(e)) => {
                answers.push(Err(e));
                continue;
            }
            Err(e) => return Err(e),
        }
        let run = fenced_transitions(
            tx,
            &held.id,
            held.fence,
            held.expected_version,
            &held.writes,
        )?;
        answers.push(Ok(run));
    }
    Ok(answers)
}

/// Whether `held` can be saved as it stands: its holder's token, its
/// version, and no write after an end.
fn check_writes(tx: &Transaction<'_>, held: &HeldWrites) -> Result<(), Fail> {
    let status = check_fence(tx, &held.id, held.fence)?;
    let version: i64 = tx
        .prepare_cached("SELECT version FROM runs WHERE id = ?1")?
        .query_row([held.id.as_str()], |row| row.get(0))?;
    if version != held.expected_version {
        return Err(Fail::Store(StoreError::Conflict {
            id: held.id.clone(),
            expected: held.expected_version,
        }));
    }
    let mut status = status;
    for write in &held.writes {
        if status.is_terminal() {
            return Err(Fail::Store(StoreError::InvalidState {
                id: held.id.clone(),
                status,
                hint: "a finished run never changes state (hint: `dispatch restart` runs it again)",
            }));
        }
        status = write.state.status();
    }
    Ok(())
}

pub(super) fn fenced_append(
    tx: &Transaction<'_>,
    id: &RunId,
    fence: i64,
    events: &[NewEvent],
) -> Result<(), Fail> {
    check_fence(tx, id, fence)?;
    append(tx, id, events)
}

pub(super) fn release(
    tx: &Transaction<'_>,
    id: &RunId,
    fence: i64,
    at: Ts,
    reason: &str,
) -> Result<crate::Run, Fail> {
    let status = check_fence(tx, id, fence)?;
    if !matches!(status, Status::Starting | Status::Running | Status::Paused) {
        return Err(Fail::Store(StoreError::InvalidState {
            id: id.clone(),
            status,
            hint: "only a run a worker holds can be released",
        }));
    }
    requeue(tx, id, at, reason)?;
    get(tx, id)
}

/// Back to the queue with a new attempt number: the execution the holder
/// may have started is an attempt of its own, closed with `reason` and the
/// worker, that does not count against the retry budget (its event says
/// `lost`). The token moves on so the old holder is fenced off.
fn requeue(tx: &Transaction<'_>, id: &RunId, at: Ts, reason: &str) -> Result<(), Fail> {
    let (status, attempt, owner, since): (String, u32, Option<String>, Ts) = tx
        .prepare_cached("SELECT status, attempt, lease_owner, updated_at FROM runs WHERE id = ?1")?
        .query_row([id.as_str()], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?;
    tx.prepare_cached(
        "UPDATE runs SET state = ?2, status = 'queued', version = version + 1, updated_at = ?3, \
         attempt = attempt + 1, lease_owner = NULL, lease_expires_at = NULL, fence = fence + 1 \
         WHERE id = ?1",
    )?
    .execute(params![
        id.as_str(),
        to_json("state", &RunState::queued())?,
        at
    ])?;
    let end = lost_close(at, reason, owner.as_deref());
    // An attempt that never reached `running` has no row yet: it gets one,
    // from the claim.
    tx.prepare_cached(
        "INSERT INTO attempts (run_id, number, started_at, ended_at, status, error, worker) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (run_id, number) DO UPDATE SET \
         ended_at = excluded.ended_at, status = excluded.status, error = excluded.error \
         WHERE attempts.ended_at IS NULL",
    )?
    .execute(params![
        id.as_str(),
        attempt,
        since.min(at),
        end.ended_at,
        end.status.as_str(),
        end.error,
        owner,
    ])?;
    let data = json!({
        "from": status,
        "to": Status::Queued,
        "reason": reason,
        "worker": owner,
        "attempt_consumed": false,
        "lost": true,
        "next_attempt": attempt + 1,
    });
    insert_event(tx, id, &NewEvent::new(EventKind::State, attempt, at, data))
}

pub(super) fn sweep(tx: &Transaction<'_>, now: Ts) -> Result<Vec<RunId>, Fail> {
    let ids: Vec<String> = tx
        .prepare_cached(&format!(
            "SELECT id FROM runs WHERE lease_owner IS NOT NULL AND lease_expires_at < ?1 \
             AND status IN {HELD}"
        ))?
        .query_map([now], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let mut swept = Vec::with_capacity(ids.len());
    for id in ids {
        let id: RunId = id
            .parse()
            .map_err(|_| Fail::Corrupt(format!("`{id}` is not a run id")))?;
        requeue(tx, &id, now, "lease expired")?;
        swept.push(id);
    }
    Ok(swept)
}

pub(super) fn stops_requested(tx: &Transaction<'_>, ids: &[RunId]) -> Result<Vec<RunId>, Fail> {
    let mut stopped = Vec::new();
    for chunk in ids.chunks(RENEW_CHUNK) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let sql =
            format!("SELECT id FROM runs WHERE stop_requested_at IS NOT NULL AND id IN ({marks})");
        let found: Vec<String> = tx
            .prepare(&sql)?
            .query_map(params_from_iter(chunk.iter().map(RunId::as_str)), |row| {
                row.get(0)
            })?
            .collect::<Result<_, _>>()?;
        for id in found {
            stopped.push(
                id.parse()
                    .map_err(|_| Fail::Corrupt(format!("`{id}` is not a run id")))?,
            );
        }
    }
    Ok(stopped)
}

pub(super) fn set_priority(tx: &Transaction<'_>, id: &RunId, priority: i64) -> Result<(), Fail> {
    let changed = tx
        .prepare_cached("UPDATE runs SET priority = ?2 WHERE id = ?1")?
        .execute(params![id.as_str(), priority])?;
    if changed == 1 {
        Ok(())
    } else {
        Err(Fail::Store(StoreError::NotFound(id.to_string())))
    }
}

pub(super) fn queue_times(tx: &Transaction<'_>, now: Ts) -> Result<QueueTimes, Fail> {
    let (next_ready_at, next_lease_expiry, next_queue_deadline) = tx
        .prepare_cached(&format!(
            "SELECT (SELECT min(json_extract(state, '$.not_before')) FROM runs \
                     WHERE status = 'queued' AND json_extract(state, '$.not_before') > ?1), \
                    (SELECT min(lease_expires_at) FROM runs \
                     WHERE lease_owner IS NOT NULL AND status IN {HELD}), \
                    (SELECT min({DEADLINE}) FROM runs WHERE {TIMED})"
        ))?
        .query_row([now], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    Ok(QueueTimes {
        next_ready_at,
        next_lease_expiry,
        next_queue_deadline,
    })
}

pub(super) fn lease(tx: &Transaction<'_>, id: &RunId) -> Result<Option<Lease>, Fail> {
    let row: (Option<String>, Option<i64>, i64, bool) = tx
        .prepare_cached(&format!(
            "SELECT lease_owner, lease_expires_at, fence, status IN {HELD} FROM runs WHERE id = ?1"
        ))?
        .query_row([id.as_str()], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()?
        .ok_or_else(|| Fail::Store(StoreError::NotFound(id.to_string())))?;
    Ok(match row {
        (Some(owner), Some(expires_at), fence, true) => Some(Lease {
            owner,
            expires_at,
            fence,
        }),
        _ => None,
    })
}

pub(super) fn succeed_at_once(
    tx: &Transaction<'_>,
    held: &[(RunId, i64)],
    at: Ts,
) -> Result<Vec<RunId>, Fail> {
    let state = to_json(
        "state",
        &RunState::Succeeded {
            started_at: Some(at),
            ended_at: at,
            exit_code: 0,
        },
    )?;
    let mut finish = tx.prepare_cached(
        "UPDATE runs SET state = ?1, status = 'succeeded', version = version + 2, \
         updated_at = ?2, lease_owner = NULL, lease_expires_at = NULL \
         WHERE id = ?3 AND fence = ?4 AND lease_owner IS NOT NULL \
         AND status = 'starting' AND stop_requested_at IS NULL RETURNING attempt",
    )?;
    let mut attempt_row = tx.prepare_cached(
        "INSERT INTO attempts (run_id, number, started_at, ended_at, status, exit_code) \
         VALUES (?1, ?2, ?3, ?3, 'succeeded', 0) ON CONFLICT (run_id, number) DO UPDATE SET \
         ended_at = excluded.ended_at, status = excluded.status, exit_code = excluded.exit_code",
    )?;
    let mut done = Vec::new();
    for (id, fence) in held {
        let Some(attempt) = finish
            .query_row(params![state, at, id.as_str(), fence], |row| {
                row.get::<_, u32>(0)
            })
            .optional()?
        else {
            continue;
        };
        let up = json!({"from": Status::Starting, "to": Status::Running});
        let end = json!({"from": Status::Running, "to": Status::Succeeded, "exit_code": 0});
        insert_event(tx, id, &NewEvent::new(EventKind::State, attempt, at, up))?;
        insert_event(tx, id, &NewEvent::new(EventKind::State, attempt, at, end))?;
        attempt_row.execute(params![id.as_str(), attempt, at])?;
        done.push(id.clone());
    }
    Ok(done)
}

pub(super) fn enqueue(
    tx: &Transaction<'_>,
    new: &crate::NewRun,
    options: &crate::QueueOptions,
) -> Result<crate::Run, Fail> {
    let mut run = super::quotas::create(tx, new)?;
    set_options(tx, &new.id, options)?;
    run.labels.clone_from(&options.labels);
    Ok(run)
}

/// Creates the run with its extras (see [`super::reliability::create_with`])
/// and, when it is new, its queue options, all in the caller's transaction.
pub(super) fn enqueue_with(
    tx: &Transaction<'_>,
    new: &crate::NewRun,
    extras: &crate::RunExtras,
    options: &crate::QueueOptions,
    dedupe: bool,
) -> Result<crate::Created, Fail> {
    let mut created = super::reliability::create_with(tx, new, extras, dedupe)?;
    if let crate::Created::New(run) = &mut created {
        set_options(tx, &new.id, options)?;
        run.labels.clone_from(&options.labels);
    }
    Ok(created)
}

/// Stores how a freshly created run waits in the queue.
fn set_options(
    tx: &Transaction<'_>,
    id: &RunId,
    options: &crate::QueueOptions,
) -> Result<(), Fail> {
    if options.requests != Capacity::default() {
        tx.prepare_cached(
            "UPDATE runs SET req_cpus_milli = ?2, req_memory_bytes = ?3 WHERE id = ?1",
        )?
        .execute(params![
            id.as_str(),
            i64::try_from(options.requests.cpus_milli).unwrap_or(i64::MAX),
            i64::try_from(options.requests.memory_bytes).unwrap_or(i64::MAX),
        ])?;
    }
    if options.priority != 0 || !options.labels.is_empty() || options.queue_timeout_ms.is_some() {
        tx.prepare_cached(
            "UPDATE runs SET priority = ?2, labels = ?3, queue_timeout_ms = ?4 WHERE id = ?1",
        )?
        .execute(params![
            id.as_str(),
            options.priority,
            to_json("labels", &options.labels)?,
            options.queue_timeout_ms,
        ])?;
    }
    if let Some(url) = &options.callback_url {
        tx.prepare_cached("INSERT INTO callbacks (run_id, url) VALUES (?1, ?2)")?
            .execute(params![id.as_str(), url])?;
    }
    Ok(())
}

/// Statuses of a finished run, for SQL.
const FINISHED: &str = "('succeeded', 'failed', 'timed_out', 'cancelled', 'stopped')";

pub(super) fn claim_callbacks(
    tx: &Transaction<'_>,
    now: Ts,
    hold_ms: i64,
    limit: usize,
) -> Result<Vec<crate::DueCallback>, Fail> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let due: Vec<(String, String)> = tx
        .prepare_cached(&format!(
            "SELECT c.run_id, c.url FROM callbacks c JOIN runs r ON r.id = c.run_id \
             WHERE c.done_at IS NULL AND c.due_at <= ?1 AND r.status IN {FINISHED} \
             ORDER BY c.due_at LIMIT ?2"
        ))?
        .query_map(params![now, limit], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut hold = tx.prepare_cached("UPDATE callbacks SET due_at = ?2 WHERE run_id = ?1")?;
    let mut out = Vec::with_capacity(due.len());
    for (id, url) in due {
        hold.execute(params![id, now + hold_ms])?;
        let run_id = id
            .parse()
            .map_err(|_| Fail::Corrupt(format!("`{id}` is not a run id")))?;
        out.push(crate::DueCallback { run_id, url });
    }
    Ok(out)
}

pub(super) fn finish_callback(tx: &Transaction<'_>, run: &RunId, at: Ts) -> Result<(), Fail> {
    tx.prepare_cached("UPDATE callbacks SET done_at = ?2 WHERE run_id = ?1")?
        .execute(params![run.as_str(), at])?;
    Ok(())
}
