//! Queue and leases on PostgreSQL (see [`crate::QueueStore`]): claims with
//! `FOR UPDATE SKIP LOCKED`, so concurrent claimers pass over each other's
//! rows instead of waiting on them.

use deadpool_postgres::Transaction;
use dispatch_core::EventKind;
use dispatch_core::{NewEvent, RunId, RunState, Status, Ts};
use serde_json::json;

use super::events::{append_locked, insert_events};
use super::expire::{DEADLINE, TIMED};
use super::reliability::json_col;
use super::runs::{
    not_found, notify_callbacks, notify_queue, parse_id, parse_status, run_columns, run_from_row,
};
use super::{Fail, to_json};
use crate::attempt_end::lost_close;
use crate::{Capacity, ClaimRequest, Claimed, Lease, QueueTimes, StoreError};

/// The statuses in which a worker holds a run.
const HELD: &str = "('starting', 'running', 'paused')";

/// What a claim returns of each run: its columns (the last one its fencing
/// token), then its extras (see [`claimed_from_row`]).
macro_rules! claimed_columns {
    () => {
        concat!(
            run_columns!(),
            ", idempotency_key, session, policy, keep_workspace, concurrency_key, \
             concurrency_max, concurrency_strategy, traceparent"
        )
    };
}

/// A run as [`claimed_columns`] returned it.
fn claimed_from_row(row: &tokio_postgres::Row) -> Result<Claimed, Fail> {
    let run = run_from_row(row)?;
    Ok(Claimed {
        fence: run.fence,
        run,
        extras: crate::RunExtras {
            idempotency_key: row.try_get(22)?,
            session: row.try_get(23)?,
            policy: json_col(row, 24, "policy")?,
            keep_workspace: row.try_get(25)?,
            concurrency: super::reliability::concurrency_of(row, 26)?,
            traceparent: row.try_get(29)?,
            events: Vec::new(),
            review: None,
        },
    })
}

/// See [`crate::QueueStore::create_claimed`]: each run created held by the
/// worker's process (no notification: nobody else may take it), then leased.
pub(super) async fn create_claimed(
    tx: &Transaction<'_>,
    batch: &[(crate::NewRun, crate::RunExtras)],
    briefs: &[(String, Vec<u8>)],
    req: &ClaimRequest,
) -> Result<Vec<Claimed>, Fail> {
    for (sha256, bytes) in briefs {
        super::parcels::put_brief(tx, sha256, bytes).await?;
    }
    let mut ids = Vec::with_capacity(batch.len());
    for (new, extras) in batch {
        let mut held = new.clone();
        held.claimed_by = Some(req.helper);
        super::reliability::create_with(tx, &held, extras, false).await?;
        ids.push(new.id.as_str().to_string());
    }
    let stmt = tx
        .prepare_cached(concat!(
            "UPDATE runs SET lease_owner = $1, lease_expires_at = $2, fence = fence + 1 \
             WHERE id = ANY($3::text[]) AND status = 'starting' RETURNING ",
            claimed_columns!()
        ))
        .await?;
    let rows = tx
        .query(&stmt, &[&req.worker, &(req.now + req.lease_ms), &ids])
        .await?;
    let mut claimed = rows
        .iter()
        .map(claimed_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    claimed.sort_by_key(|c| ids.iter().position(|id| id == c.run.id.as_str()));
    Ok(claimed)
}

pub(super) async fn claim(tx: &Transaction<'_>, req: &ClaimRequest) -> Result<Vec<Claimed>, Fail> {
    let limit = i64::try_from(req.limit).unwrap_or(i64::MAX);
    // Walk `runs_claimable` in its order and stop at the limit. The planner
    // otherwise sorts every queued run whenever it expects few (a queue that
    // was empty at the last ANALYZE, then filled up): each claim then reads
    // the whole queue, and draining it costs its length squared.
    tx.batch_execute("SET LOCAL enable_sort = off").await?;
    // Without any quota (the common case) the claim asks nothing of them.
    let quotas = super::quotas::any(tx).await?;
    let conditions = match quotas {
        true => format!(
            "AND {} AND {}",
            crate::quotas::under_cap("runs", "runs o"),
            crate::quotas::under_budget("runs", "$6::text", "$7::text")
        ),
        false => String::new(),
    };
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT id, req_cpus_milli, req_memory_bytes FROM runs \
             WHERE status = 'queued' AND ready_at <= $1 \
             AND labels <@ $3::text[] \
             AND (queue_timeout_ms IS NULL OR ready_at + queue_timeout_ms >= $1) \
             AND ($4::bigint IS NULL OR (req_cpus_milli <= $4 AND req_memory_bytes <= $5::bigint)) \
             AND {admits} {conditions} \
             ORDER BY priority DESC, created_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
            admits = crate::limits::admits("runs"),
        ))
        .await?;
    let free = req.free.map(|f| {
        (
            i64::try_from(f.cpus_milli).unwrap_or(i64::MAX),
            i64::try_from(f.memory_bytes).unwrap_or(i64::MAX),
        )
    });
    let (free_cpus, free_memory) = (free.map(|f| f.0), free.map(|f| f.1));
    let (day, month) = crate::quotas::periods_at(req.now);
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        vec![&req.now, &limit, &req.labels, &free_cpus, &free_memory];
    if quotas {
        params.extend([&day as &(dyn tokio_postgres::types::ToSql + Sync), &month]);
    }
    let candidates: Vec<(String, Capacity)> = tx
        .query(&stmt, &params)
        .await?
        .iter()
        .map(|row| {
            let want = Capacity {
                cpus_milli: row.try_get::<_, i64>(1)?.max(0) as u64,
                memory_bytes: row.try_get::<_, i64>(2)?.max(0) as u64,
            };
            Ok((row.try_get(0)?, want))
        })
        .collect::<Result<_, tokio_postgres::Error>>()?;
    // Together, the runs claimed fit in the worker's free capacity (the
    // ones left out stay locked only until this transaction ends).
    let mut ids: Vec<String> = Capacity::pick(req.free, candidates, req.limit);
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // Runs with a concurrency key: counted again under the keys' locks (the
    // first count's snapshot may miss a claim another worker committed).
    let keys = super::limits::keys_of(tx, &ids).await?;
    if !keys.is_empty() {
        super::limits::lock_keys(tx, &keys).await?;
        let admitted = super::limits::admitted(tx, &ids).await?;
        ids.retain(|id| admitted.contains(id));
        if ids.is_empty() {
            return Ok(Vec::new());
        }
    }
    // Runs of a project with a live-run cap: as many as it has free slots,
    // counted under the caps' locks (after the keys': one order for all).
    let ids = match quotas {
        true => super::quotas::admitted(tx, &ids).await?,
        false => ids,
    };
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let state = RunState::Starting {
        helper: req.helper,
        since: req.now,
    };
    let stmt = tx
        .prepare_cached(concat!(
            "UPDATE runs SET state = $1, status = 'starting', version = version + 1, \
             updated_at = $2, lease_owner = $3, lease_expires_at = $4, fence = fence + 1 \
             WHERE id = ANY($5::text[]) RETURNING ",
            claimed_columns!()
        ))
        .await?;
    let rows = tx
        .query(
            &stmt,
            &[
                &to_json("state", &state)?,
                &req.now,
                &req.worker,
                &(req.now + req.lease_ms),
                &ids,
            ],
        )
        .await?;
    let mut claimed = rows
        .iter()
        .map(claimed_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    // In the order chosen: priority, then age.
    claimed.sort_by_key(|c| ids.iter().position(|id| id == c.run.id.as_str()));
    let events: Vec<(RunId, NewEvent)> = claimed
        .iter()
        .map(|c| {
            let data = json!({
                "from": Status::Queued,
                "to": Status::Starting,
                "worker": req.worker,
                "fence": c.fence,
            });
            (
                c.run.id.clone(),
                NewEvent::new(EventKind::State, c.run.attempt, req.now, data),
            )
        })
        .collect();
    insert_events(tx, &events).await?;
    Ok(claimed)
}

/// Extends the leases of `held` that are still this worker's. With `wait`
/// false, rows another transaction has locked (a run's events being
/// appended) are skipped rather than waited for: the caller renews those
/// in a transaction of their own (see `PgStore::renew_leases`).
pub(super) async fn renew(
    tx: &Transaction<'_>,
    worker: &str,
    held: &[(RunId, i64)],
    expires_at: Ts,
    wait: bool,
) -> Result<Vec<RunId>, Fail> {
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = held.iter().map(|(id, _)| id.as_str()).collect();
    let fences: Vec<i64> = held.iter().map(|(_, f)| *f).collect();
    // The rows are locked in the order of their ids, as every statement
    // over many runs locks them (the worker's batched writes): a renewal
    // waiting for a busy run never holds one that the busy batch waits for.
    let skip = if wait { "" } else { " SKIP LOCKED" };
    let sql = format!(
        "UPDATE runs SET lease_expires_at = $1 FROM ( \
           SELECT r.id FROM runs r \
           JOIN unnest($3::text[], $4::bigint[]) AS h(id, fence) \
             ON r.id = h.id COLLATE \"C\" AND r.fence = h.fence \
           WHERE r.lease_owner = $2 AND r.status IN {HELD} \
           ORDER BY r.id FOR UPDATE OF r{skip}) AS c \
         WHERE runs.id = c.id RETURNING runs.id"
    );
    // Planned anew at each renewal (an unnamed statement, with the actual
    // list), never from a cached plan: one made while the table held a
    // few runs joined every held run against every listed one, and at
    // 10,000 runs a renewal took 4–6 s, past its bound, until every lease
    // ran out (issue #38). A renewal is every few seconds; its planning is
    // a millisecond.
    tx.query(sql.as_str(), &[&expires_at, &worker, &ids, &fences])
        .await?
        .iter()
        .map(|row| parse_id(row.try_get(0)?))
        .collect()
}

/// Locks the run and checks that `fence` is its current token under a live
/// lease; returns its status.
pub(super) async fn check_fence(
    tx: &Transaction<'_>,
    id: &RunId,
    fence: i64,
) -> Result<Status, Fail> {
    let stmt = tx
        .prepare_cached(
            "SELECT fence, lease_owner IS NOT NULL, status FROM runs WHERE id = $1 FOR UPDATE",
        )
        .await?;
    let row = tx
        .query_opt(&stmt, &[&id.as_str()])
        .await?
        .ok_or_else(|| not_found(id))?;
    let (current, leased): (i64, bool) = (row.try_get(0)?, row.try_get(1)?);
    if current != fence || !leased {
        return Err(Fail::Store(StoreError::Fenced {
            id: id.clone(),
            fence,
        }));
    }
    parse_status(id, row.try_get(2)?)
}

pub(super) async fn fenced_append(
    tx: &Transaction<'_>,
    id: &RunId,
    fence: i64,
    events: &[NewEvent],
) -> Result<(), Fail> {
    // The fence's check locks the run's row: its events commit in order.
    check_fence(tx, id, fence).await?;
    append_locked(tx, id, events).await
}

/// A held run as the requeue needs it.
struct Held {
    id: RunId,
    status: Status,
    attempt: u32,
    owner: Option<String>,
    /// When it entered its held status (the claim, or the agent's start).
    since: Ts,
}

pub(super) async fn release(
    tx: &Transaction<'_>,
    id: &RunId,
    fence: i64,
    at: Ts,
    reason: &str,
) -> Result<(), Fail> {
    let status = check_fence(tx, id, fence).await?;
    if !matches!(status, Status::Starting | Status::Running | Status::Paused) {
        return Err(Fail::Store(StoreError::InvalidState {
            id: id.clone(),
            status,
            hint: "only a run a worker holds can be released",
        }));
    }
    let held = load_held(tx, &[id.as_str().to_string()]).await?;
    requeue(tx, &held, at, reason).await
}

async fn load_held(tx: &Transaction<'_>, ids: &[String]) -> Result<Vec<Held>, Fail> {
    let stmt = tx
        .prepare_cached(
            "SELECT id, status, attempt, lease_owner, updated_at FROM runs \
             WHERE id = ANY($1::text[])",
        )
        .await?;
    let mut held = Vec::new();
    for row in tx.query(&stmt, &[&ids]).await? {
        let id = parse_id(row.try_get(0)?)?;
        let status = parse_status(&id, row.try_get(1)?)?;
        let attempt: i64 = row.try_get(2)?;
        held.push(Held {
            attempt: u32::try_from(attempt)
                .map_err(|_| Fail::Corrupt(format!("run {id}: attempt {attempt}")))?,
            owner: row.try_get(3)?,
            since: row.try_get(4)?,
            status,
            id,
        });
    }
    Ok(held)
}

/// Back to the queue with a new attempt number: the execution each holder
/// may have started is an attempt of its own, closed with `reason` and the
/// worker, that does not count against the retry budget (its event says
/// `lost`). The token moves on so the old holder is fenced off.
async fn requeue(tx: &Transaction<'_>, held: &[Held], at: Ts, reason: &str) -> Result<(), Fail> {
    if held.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = held.iter().map(|h| h.id.as_str()).collect();
    let stmt = tx
        .prepare_cached(
            "UPDATE runs SET state = $1, status = 'queued', version = version + 1, \
             updated_at = $2, ready_at = $2, attempt = attempt + 1, lease_owner = NULL, \
             lease_expires_at = NULL, fence = fence + 1 WHERE id = ANY($3::text[])",
        )
        .await?;
    tx.execute(&stmt, &[&to_json("state", &RunState::queued())?, &at, &ids])
        .await?;
    // An attempt that never reached `running` has no row yet: it gets one,
    // from the claim.
    let (mut numbers, mut starts, mut errors, mut workers) = (vec![], vec![], vec![], vec![]);
    for h in held {
        numbers.push(i64::from(h.attempt));
        starts.push(h.since.min(at));
        errors.push(lost_close(at, reason, h.owner.as_deref()).error);
        workers.push(h.owner.clone());
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO attempts (run_id, number, started_at, ended_at, status, error, worker) \
             SELECT a.r, a.n, a.s, $5, 'failed', a.e, a.w FROM unnest($1::text[], \
             $2::bigint[], $3::bigint[], $4::text[], $6::text[]) AS a(r, n, s, e, w) \
             ON CONFLICT (run_id, number) DO UPDATE SET ended_at = excluded.ended_at, \
             status = excluded.status, error = excluded.error WHERE attempts.ended_at IS NULL",
        )
        .await?;
    tx.execute(&stmt, &[&ids, &numbers, &starts, &errors, &at, &workers])
        .await?;
    let events: Vec<(RunId, NewEvent)> = held
        .iter()
        .map(|h| {
            let data = json!({
                "from": h.status,
                "to": Status::Queued,
                "reason": reason,
                "worker": h.owner,
                "attempt_consumed": false,
                "lost": true,
                "next_attempt": h.attempt + 1,
            });
            (
                h.id.clone(),
                NewEvent::new(EventKind::State, h.attempt, at, data),
            )
        })
        .collect();
    insert_events(tx, &events).await?;
    notify_queue(tx).await
}

pub(super) async fn sweep(tx: &Transaction<'_>, now: Ts) -> Result<Vec<RunId>, Fail> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT id FROM runs WHERE lease_owner IS NOT NULL AND lease_expires_at < $1 \
             AND status IN {HELD} FOR UPDATE SKIP LOCKED"
        ))
        .await?;
    let ids: Vec<String> = tx
        .query(&stmt, &[&now])
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    let held = load_held(tx, &ids).await?;
    requeue(tx, &held, now, "lease expired").await?;
    Ok(held.into_iter().map(|h| h.id).collect())
}

pub(super) async fn stops_requested<C: deadpool_postgres::GenericClient>(
    tx: &C,
    ids: &[RunId],
) -> Result<Vec<RunId>, Fail> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = ids.iter().map(RunId::as_str).collect();
    let stmt = tx
        .prepare_cached(
            "SELECT id FROM runs WHERE id = ANY($1::text[]) AND stop_requested_at IS NOT NULL",
        )
        .await?;
    tx.query(&stmt, &[&ids])
        .await?
        .iter()
        .map(|row| parse_id(row.try_get(0)?))
        .collect()
}

pub(super) async fn set_priority(
    tx: &Transaction<'_>,
    id: &RunId,
    priority: i64,
) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached("UPDATE runs SET priority = $2 WHERE id = $1")
        .await?;
    match tx.execute(&stmt, &[&id.as_str(), &priority]).await? {
        1 => Ok(()),
        _ => Err(not_found(id)),
    }
}

pub(super) async fn queue_times(tx: &Transaction<'_>, now: Ts) -> Result<QueueTimes, Fail> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT (SELECT min(ready_at) FROM runs WHERE status = 'queued' AND ready_at > $1), \
                    (SELECT min(lease_expires_at) FROM runs \
                     WHERE lease_owner IS NOT NULL AND status IN {HELD}), \
                    (SELECT min{DEADLINE} FROM runs WHERE {TIMED})"
        ))
        .await?;
    let row = tx.query_one(&stmt, &[&now]).await?;
    Ok(QueueTimes {
        next_ready_at: row.try_get(0)?,
        next_lease_expiry: row.try_get(1)?,
        next_queue_deadline: row.try_get(2)?,
    })
}

pub(super) async fn lease(tx: &Transaction<'_>, id: &RunId) -> Result<Option<Lease>, Fail> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT lease_owner, lease_expires_at, fence, status IN {HELD} FROM runs WHERE id = $1"
        ))
        .await?;
    let row = tx
        .query_opt(&stmt, &[&id.as_str()])
        .await?
        .ok_or_else(|| not_found(id))?;
    let (owner, expires_at, held): (Option<String>, Option<i64>, bool) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(3)?);
    Ok(match (owner, expires_at, held) {
        (Some(owner), Some(expires_at), true) => Some(Lease {
            owner,
            expires_at,
            fence: row.try_get(2)?,
        }),
        _ => None,
    })
}

pub(super) async fn succeed_at_once(
    tx: &Transaction<'_>,
    held: &[(RunId, i64)],
    at: Ts,
) -> Result<Vec<RunId>, Fail> {
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = held.iter().map(|(id, _)| id.as_str()).collect();
    let fences: Vec<i64> = held.iter().map(|(_, f)| *f).collect();
    let state = RunState::Succeeded {
        started_at: Some(at),
        ended_at: at,
        exit_code: 0,
    };
    let stmt = tx
        .prepare_cached(
            "UPDATE runs SET state = $1, status = 'succeeded', version = version + 2, \
             updated_at = $2, lease_owner = NULL, lease_expires_at = NULL \
             FROM unnest($3::text[], $4::bigint[]) AS h(id, fence) \
             WHERE runs.id = h.id COLLATE \"C\" AND runs.fence = h.fence \
             AND runs.lease_owner IS NOT NULL AND runs.status = 'starting' \
             AND runs.stop_requested_at IS NULL RETURNING runs.id, runs.attempt",
        )
        .await?;
    let rows = tx
        .query(&stmt, &[&to_json("state", &state)?, &at, &ids, &fences])
        .await?;
    let mut done = Vec::with_capacity(rows.len());
    let mut events = Vec::with_capacity(rows.len() * 2);
    let (mut attempt_ids, mut numbers) = (Vec::new(), Vec::new());
    for row in &rows {
        let id = parse_id(row.try_get(0)?)?;
        let attempt: i64 = row.try_get(1)?;
        let number = u32::try_from(attempt)
            .map_err(|_| Fail::Corrupt(format!("run {id}: attempt {attempt}")))?;
        let up = json!({"from": Status::Starting, "to": Status::Running});
        let end = json!({"from": Status::Running, "to": Status::Succeeded, "exit_code": 0});
        events.push((id.clone(), NewEvent::new(EventKind::State, number, at, up)));
        events.push((id.clone(), NewEvent::new(EventKind::State, number, at, end)));
        attempt_ids.push(id.as_str().to_string());
        numbers.push(attempt);
        done.push(id);
    }
    insert_events(tx, &events).await?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO attempts (run_id, number, started_at, ended_at, status, exit_code) \
             SELECT r, n, $3, $3, 'succeeded', 0 FROM unnest($1::text[], $2::bigint[]) AS a(r, n) \
             ON CONFLICT (run_id, number) DO UPDATE SET ended_at = excluded.ended_at, \
             status = excluded.status, exit_code = excluded.exit_code",
        )
        .await?;
    tx.execute(&stmt, &[&attempt_ids, &numbers, &at]).await?;
    let finished: Vec<&str> = attempt_ids.iter().map(String::as_str).collect();
    notify_callbacks(tx, &finished).await?;
    super::runs::notify_keyed(tx, &finished).await?;
    Ok(done)
}

pub(super) async fn enqueue(
    tx: &Transaction<'_>,
    new: &crate::NewRun,
    options: &crate::QueueOptions,
) -> Result<crate::Run, Fail> {
    let mut run = super::quotas::create(tx, new).await?;
    set_options(tx, &new.id, options).await?;
    run.labels.clone_from(&options.labels);
    Ok(run)
}

/// Creates the run with its extras (see [`super::reliability::create_with`])
/// and, when it is new, its queue options, all in the caller's transaction.
pub(super) async fn enqueue_with(
    tx: &Transaction<'_>,
    new: &crate::NewRun,
    extras: &crate::RunExtras,
    options: &crate::QueueOptions,
    dedupe: bool,
) -> Result<crate::Created, Fail> {
    let mut created = super::reliability::create_with(tx, new, extras, dedupe).await?;
    if let crate::Created::New(run) = &mut created {
        set_options(tx, &new.id, options).await?;
        run.labels.clone_from(&options.labels);
    }
    Ok(created)
}

/// Stores how a freshly created run waits in the queue.
async fn set_options(
    tx: &Transaction<'_>,
    id: &RunId,
    options: &crate::QueueOptions,
) -> Result<(), Fail> {
    if options.requests != Capacity::default() {
        let stmt = tx
            .prepare_cached(
                "UPDATE runs SET req_cpus_milli = $2, req_memory_bytes = $3 WHERE id = $1",
            )
            .await?;
        let cpus = i64::try_from(options.requests.cpus_milli).unwrap_or(i64::MAX);
        let memory = i64::try_from(options.requests.memory_bytes).unwrap_or(i64::MAX);
        tx.execute(&stmt, &[&id.as_str(), &cpus, &memory]).await?;
    }
    if options.priority != 0 || !options.labels.is_empty() || options.queue_timeout_ms.is_some() {
        let stmt = tx
            .prepare_cached(
                "UPDATE runs SET priority = $2, labels = $3, queue_timeout_ms = $4 WHERE id = $1",
            )
            .await?;
        tx.execute(
            &stmt,
            &[
                &id.as_str(),
                &options.priority,
                &options.labels,
                &options.queue_timeout_ms,
            ],
        )
        .await?;
    }
    if let Some(url) = &options.callback_url {
        let stmt = tx
            .prepare_cached("INSERT INTO callbacks (run_id, url) VALUES ($1, $2)")
            .await?;
        tx.execute(&stmt, &[&id.as_str(), url]).await?;
    }
    Ok(())
}

/// Statuses of a finished run, for SQL.
const FINISHED: &str = "('succeeded', 'failed', 'timed_out', 'cancelled', 'stopped')";

pub(super) async fn claim_callbacks(
    tx: &Transaction<'_>,
    now: Ts,
    hold_ms: i64,
    limit: usize,
) -> Result<Vec<crate::DueCallback>, Fail> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let stmt = tx
        .prepare_cached(&format!(
            "WITH due AS (SELECT c.run_id FROM callbacks c JOIN runs r ON r.id = c.run_id \
             WHERE c.done_at IS NULL AND c.due_at <= $1 AND r.status IN {FINISHED} \
             ORDER BY c.due_at LIMIT $2 FOR UPDATE OF c SKIP LOCKED) \
             UPDATE callbacks SET due_at = $3 FROM due WHERE callbacks.run_id = due.run_id \
             RETURNING callbacks.run_id, callbacks.url"
        ))
        .await?;
    let mut out = Vec::new();
    for row in tx.query(&stmt, &[&now, &limit, &(now + hold_ms)]).await? {
        out.push(crate::DueCallback {
            run_id: parse_id(row.try_get(0)?)?,
            url: row.try_get(1)?,
        });
    }
    Ok(out)
}

pub(super) async fn finish_callback(tx: &Transaction<'_>, run: &RunId, at: Ts) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached("UPDATE callbacks SET done_at = $2 WHERE run_id = $1")
        .await?;
    tx.execute(&stmt, &[&run.as_str(), &at]).await?;
    Ok(())
}
