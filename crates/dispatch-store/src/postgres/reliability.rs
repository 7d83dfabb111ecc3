//! Deduplicated creation, sessions, run policy, approvals and dead letters on
//! PostgreSQL: the SQLite backend's statements, with a transaction-scoped
//! advisory lock per session and per idempotency key so that racing creators
//! serialize on what they share.

use deadpool_postgres::Transaction;
use dispatch_core::EventKind;
use dispatch_core::{NewEvent, RunId};
use serde_json::{Value, json};
use tokio_postgres::Row;

use super::events::insert_event;
use super::runs::{create_as, get, parse_id};
use super::{Fail, to_json};
use crate::{Approval, Created, DeadLetter, Decision, NewRun, RunExtras, StoreError};

/// Statuses of a run that still holds its session or dedup key.
const LIVE: &str = "('review', 'queued', 'starting', 'running', 'paused')";

pub(super) fn json_col(row: &Row, i: usize, what: &str) -> Result<Option<Value>, Fail> {
    match row.try_get::<_, Option<&str>>(i)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(text)
            .map(Some)
            .map_err(|e| Fail::Corrupt(format!("{what} is not valid JSON: {e}"))),
    }
}

fn u32_of(n: i64, what: &str) -> Result<u32, Fail> {
    u32::try_from(n).map_err(|_| Fail::Corrupt(format!("{what} {n} is out of range")))
}

/// Serializes the transactions that share `what` (until they end).
pub(super) async fn lock(tx: &Transaction<'_>, kind: &str, what: &str) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .await?;
    tx.execute(&stmt, &[&format!("{kind}:{what}")]).await?;
    Ok(())
}

/// Creates `new` with its extras, or answers the run a handoff key or an
/// idempotency key already started. The new run as saved comes from its
/// insert (and its claim or cancel): the extras are not among its columns,
/// so it is not read back.
pub(super) async fn create_with(
    tx: &Transaction<'_>,
    new: &NewRun,
    extras: &RunExtras,
    dedupe: bool,
) -> Result<Created, Fail> {
    // One run per handoff of its origin, whatever became of it.
    if let (Some(origin), Some(key)) = (&new.origin_id, &new.handoff_key) {
        lock(tx, "handoff", &format!("{origin}/{key}")).await?;
        let stmt = tx
            .prepare_cached("SELECT id FROM runs WHERE origin_id = $1 AND handoff_key = $2")
            .await?;
        if let Some(row) = tx.query_opt(&stmt, &[&origin.as_str(), key]).await? {
            let existing = parse_id(row.try_get(0)?)?;
            return Ok(Created::Existing(get(tx, &existing).await?));
        }
    }
    // The same key answers the same run, even one holding the session.
    if let (true, Some(key)) = (dedupe, &extras.idempotency_key) {
        lock(tx, "key", key).await?;
        let stmt = tx
            .prepare_cached(&format!(
                "SELECT id FROM runs WHERE idempotency_key = $1 \
                 AND (status IN {LIVE} OR status = 'succeeded') ORDER BY id DESC LIMIT 1"
            ))
            .await?;
        if let Some(row) = tx.query_opt(&stmt, &[key]).await? {
            let existing = parse_id(row.try_get(0)?)?;
            return Ok(Created::Existing(get(tx, &existing).await?));
        }
    }
    if let Some(session) = &extras.session {
        lock(tx, "session", session).await?;
        let stmt = tx
            .prepare_cached(&format!(
                "SELECT id FROM runs WHERE session = $1 AND status IN {LIVE} ORDER BY id LIMIT 1"
            ))
            .await?;
        if let Some(row) = tx.query_opt(&stmt, &[session]).await? {
            return Err(Fail::Store(StoreError::SessionBusy {
                session: session.clone(),
                run: parse_id(row.try_get(0)?)?,
            }));
        }
    }
    // A project over a hard limit whose action is `refuse` takes no new run.
    super::quotas::refuse_new(tx, &new.project, new.created_at).await?;
    // A run with a concurrency key is claimed only when the key has a
    // slot for it (its helper waits otherwise); `drop` cancels it at once.
    // A run in review is neither: it waits for a person first.
    let review = extras
        .review
        .as_ref()
        .map(|r| crate::reliability::review_of(new, r));
    let keyed = extras.concurrency.as_ref();
    let dropped = match keyed {
        Some(c) if review.is_none() => super::limits::make_room(tx, new, c).await?,
        _ => None,
    };
    // So is a run made held whose project has a quota.
    let capped = new.claimed_by.is_some() && super::quotas::has_quota(tx, &new.project).await?;
    let mut plain = new.clone();
    if keyed.is_some() || review.is_some() || capped {
        plain.claimed_by = None;
    }
    // What was decided before the run existed (a policy's decision) is
    // logged with its `created` event, in the same statement; events with
    // usage go through the usage totals below.
    let (at_creation, later): (Vec<&NewEvent>, Vec<&NewEvent>) =
        extras.events.iter().partition(|e| e.usage().is_none());
    let state = review.as_ref().map(|(state, _)| state.clone());
    let mut run = create_as(tx, &plain, state, &at_creation, extras).await?;
    if let Some(c) = keyed {
        // The key's columns are not the run's: `run` stays as created.
        super::limits::set_key(tx, &new.id, c).await?;
    }
    if keyed.is_some() || capped {
        if let Some(reason) = dropped {
            if let Some(write) = crate::limits::cancel_write(&run, &reason, new.created_at) {
                run = super::limits::save(tx, &new.id, run.version, &write).await?;
            }
        } else if let Some(helper) = new.claimed_by.filter(|_| review.is_none())
            && admitted_now(tx, &new.id, new.created_at).await?
        {
            let claim = crate::created_claimed::claim_write(new, helper);
            run = super::limits::save(tx, &new.id, run.version, &claim).await?;
        }
    }
    // The run was inserted by this transaction: no one else sees it yet,
    // so its lock need not be taken again for events with usage (none
    // today at creation).
    if !later.is_empty() {
        let later: Vec<NewEvent> = later.into_iter().cloned().collect();
        super::events::append_locked(tx, &new.id, &later).await?;
    }
    if let Some((_, approval)) = &review {
        request_approval(tx, approval).await?;
    }
    Ok(Created::New(run))
}

pub(super) async fn extras(tx: &Transaction<'_>, id: &RunId) -> Result<RunExtras, Fail> {
    let stmt = tx
        .prepare_cached(
            "SELECT idempotency_key, session, policy, keep_workspace, concurrency_key, \
             concurrency_max, concurrency_strategy, traceparent FROM runs WHERE id = $1",
        )
        .await?;
    let Some(row) = tx.query_opt(&stmt, &[&id.as_str()]).await? else {
        return Err(Fail::Store(StoreError::NotFound(id.to_string())));
    };
    Ok(RunExtras {
        idempotency_key: row.try_get(0)?,
        session: row.try_get(1)?,
        policy: json_col(&row, 2, "policy")?,
        keep_workspace: row.try_get(3)?,
        concurrency: concurrency_of(&row, 4)?,
        traceparent: row.try_get(7)?,
        events: Vec::new(),
        review: None,
    })
}

/// Whether queued run `id` (created by this transaction) may be claimed
/// now: a refusal by its key or its project's cap is a `false`.
async fn admitted_now(
    tx: &Transaction<'_>,
    id: &dispatch_core::RunId,
    at: dispatch_core::Ts,
) -> Result<bool, Fail> {
    match super::limits::check_admitted(tx, id, at).await {
        Ok(()) => Ok(true),
        Err(Fail::Store(
            StoreError::ConcurrencyLimited { .. } | StoreError::QuotaLimited { .. },
        )) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The concurrency columns from `first` on (key, max, strategy) as
/// [`RunExtras::concurrency`].
pub(super) fn concurrency_of(
    row: &Row,
    first: usize,
) -> Result<Option<dispatch_core::concurrency::RunConcurrency>, Fail> {
    let key: Option<String> = row.try_get(first)?;
    let max: Option<i64> = row.try_get(first + 1)?;
    let strategy: Option<String> = row.try_get(first + 2)?;
    Ok(match (key, max) {
        (Some(key), Some(max)) => Some(dispatch_core::concurrency::RunConcurrency {
            key,
            max: u32::try_from(max).unwrap_or(u32::MAX),
            strategy: strategy.and_then(|s| s.parse().ok()).unwrap_or_default(),
        }),
        _ => None,
    })
}

const APPROVAL_COLUMNS: &str = "run_id, id, attempt, summary, requested_at, deadline, decision, \
     decided_by, rationale, decided_at, details, input";

fn approval_from_row(row: &Row) -> Result<Approval, Fail> {
    Ok(Approval {
        run_id: parse_id(row.try_get(0)?)?,
        id: row.try_get(1)?,
        attempt: u32_of(row.try_get(2)?, "approval attempt")?,
        summary: row.try_get(3)?,
        requested_at: row.try_get(4)?,
        deadline: row.try_get(5)?,
        decision: row.try_get(6)?,
        decided_by: row.try_get(7)?,
        rationale: row.try_get(8)?,
        decided_at: row.try_get(9)?,
        details: opt_json(row, 10, "approval details")?,
        input: opt_json(row, 11, "approval input")?,
    })
}

async fn get_approval(
    tx: &Transaction<'_>,
    run: &RunId,
    id: &str,
) -> Result<Option<Approval>, Fail> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE run_id = $1 AND id = $2"
        ))
        .await?;
    tx.query_opt(&stmt, &[&run.as_str(), &id])
        .await?
        .as_ref()
        .map(approval_from_row)
        .transpose()
}

pub(super) async fn request_approval(tx: &Transaction<'_>, a: &Approval) -> Result<Approval, Fail> {
    get(tx, &a.run_id).await?; // NotFound for an unknown run
    // The run's row lock orders concurrent requests for the same approval.
    let stmt = tx
        .prepare_cached("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE")
        .await?;
    tx.execute(&stmt, &[&a.run_id.as_str()]).await?;
    if let Some(existing) = get_approval(tx, &a.run_id, &a.id).await? {
        return Ok(existing);
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO approvals (run_id, id, attempt, summary, requested_at, deadline, details) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &a.run_id.as_str(),
            &a.id,
            &i64::from(a.attempt),
            &a.summary,
            &a.requested_at,
            &a.deadline,
            &a.details.as_ref().map(|d| d.to_string()),
        ],
    )
    .await?;
    let event = NewEvent::new(
        EventKind::ApprovalRequested,
        a.attempt,
        a.requested_at,
        json!({"id": a.id, "summary": a.summary, "deadline": a.deadline, "details": a.details}),
    );
    insert_event(tx, &a.run_id, &event).await?;
    let asked = crate::notifications::approval_requested(a);
    super::notifications::enqueue(tx, std::slice::from_ref(&asked)).await?;
    get_approval(tx, &a.run_id, &a.id)
        .await?
        .ok_or_else(|| Fail::Corrupt("an inserted approval is missing".into()))
}

/// [`decide`], and the run moved on with `write` from the state saved at
/// `expected`, in the caller's transaction.
pub(super) async fn decide_moving(
    tx: &Transaction<'_>,
    run: &RunId,
    id: &str,
    d: &Decision,
    (expected, write): (i64, &crate::StateWrite),
) -> Result<(Approval, crate::Run), Fail> {
    let decided = decide(tx, run, id, d).await?;
    let item = super::transitions::Item {
        id: run,
        fence: None,
        expected,
        writes: std::slice::from_ref(write),
    };
    let moved = super::transitions::save(tx, &[item])
        .await?
        .pop()
        .unwrap_or_else(|| Err(StoreError::NotFound(run.to_string())))
        .map_err(Fail::Store)?;
    if let Some(n) = crate::reliability::moving_notification(&decided, &moved) {
        super::notifications::enqueue(tx, &[n]).await?;
    }
    Ok((decided, moved))
}

pub(super) async fn decide(
    tx: &Transaction<'_>,
    run: &RunId,
    id: &str,
    d: &Decision,
) -> Result<Approval, Fail> {
    let stmt = tx
        .prepare_cached("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE")
        .await?;
    tx.execute(&stmt, &[&run.as_str()]).await?;
    let Some(found) = get_approval(tx, run, id).await? else {
        get(tx, run).await?;
        return Err(Fail::Store(StoreError::ApprovalNotFound {
            run: run.clone(),
            id: id.to_string(),
        }));
    };
    if let Some(decision) = found.decision {
        return Err(Fail::Store(StoreError::AlreadyDecided {
            run: run.clone(),
            id: id.to_string(),
            decision: format!(
                "{decision} by {}",
                found.decided_by.as_deref().unwrap_or("?")
            ),
        }));
    }
    let stmt = tx
        .prepare_cached(
            "UPDATE approvals SET decision = $3, decided_by = $4, rationale = $5, decided_at = $6, \
             input = $7 WHERE run_id = $1 AND id = $2 AND decision IS NULL",
        )
        .await?;
    let input = d.input.as_ref().map(|i| i.to_string());
    tx.execute(
        &stmt,
        &[
            &run.as_str(),
            &id,
            &d.decision,
            &d.by,
            &d.rationale,
            &d.at,
            &input,
        ],
    )
    .await?;
    let event = NewEvent::new(
        EventKind::ApprovalDecided,
        found.attempt,
        d.at,
        json!({"id": id, "decision": d.decision, "by": d.by, "rationale": d.rationale, "input": d.input}),
    );
    insert_event(tx, run, &event).await?;
    get_approval(tx, run, id)
        .await?
        .ok_or_else(|| Fail::Corrupt("a decided approval is missing".into()))
}

pub(super) async fn list_approvals(
    tx: &Transaction<'_>,
    run: Option<&RunId>,
    pending_only: bool,
) -> Result<Vec<Approval>, Fail> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {APPROVAL_COLUMNS} FROM approvals \
             WHERE ($1::text IS NULL OR run_id = $1) AND (NOT $2 OR decision IS NULL) \
             ORDER BY requested_at, run_id, id"
        ))
        .await?;
    tx.query(&stmt, &[&run.map(RunId::as_str), &pending_only])
        .await?
        .iter()
        .map(approval_from_row)
        .collect()
}

pub(super) async fn add_dead_letter(tx: &Transaction<'_>, d: &DeadLetter) -> Result<(), Fail> {
    let run = get(tx, &d.run_id).await?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO dead_letters (run_id, at, reason, attempts, checkpoint, errors) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (run_id) DO NOTHING",
        )
        .await?;
    let checkpoint = d
        .checkpoint
        .as_ref()
        .map(|c| to_json("checkpoint", c))
        .transpose()?;
    let inserted = tx
        .execute(
            &stmt,
            &[
                &d.run_id.as_str(),
                &d.at,
                &d.reason,
                &i64::from(d.attempts),
                &checkpoint,
                &to_json("errors", &d.errors)?,
            ],
        )
        .await?;
    if inserted == 1 {
        let event = NewEvent::new(
            EventKind::DeadLettered,
            run.attempt,
            d.at,
            json!({"reason": d.reason, "attempts": d.attempts}),
        );
        insert_event(tx, &d.run_id, &event).await?;
    }
    Ok(())
}

pub(super) async fn dead_letters(
    tx: &Transaction<'_>,
    run: Option<&RunId>,
) -> Result<Vec<DeadLetter>, Fail> {
    let stmt = tx
        .prepare_cached(
            "SELECT run_id, at, reason, attempts, checkpoint, errors, replayed_by \
             FROM dead_letters WHERE ($1::text IS NULL OR run_id = $1) \
             ORDER BY at DESC, run_id DESC",
        )
        .await?;
    let mut out = Vec::new();
    for row in tx.query(&stmt, &[&run.map(RunId::as_str)]).await? {
        let replayed_by = row
            .try_get::<_, Option<&str>>(6)?
            .map(parse_id)
            .transpose()?;
        out.push(DeadLetter {
            run_id: parse_id(row.try_get(0)?)?,
            at: row.try_get(1)?,
            reason: row.try_get(2)?,
            attempts: u32_of(row.try_get(3)?, "dead letter attempts")?,
            checkpoint: json_col(&row, 4, "checkpoint")?,
            errors: json_col(&row, 5, "errors")?.unwrap_or(Value::Null),
            replayed_by,
        });
    }
    Ok(out)
}

pub(super) async fn mark_replayed(
    tx: &Transaction<'_>,
    run: &RunId,
    by: &RunId,
) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached("UPDATE dead_letters SET replayed_by = $2 WHERE run_id = $1")
        .await?;
    let changed = tx.execute(&stmt, &[&run.as_str(), &by.as_str()]).await?;
    if changed == 0 {
        return Err(Fail::Store(StoreError::NotFound(run.to_string())));
    }
    Ok(())
}

/// A nullable JSON text column.
fn opt_json(row: &Row, i: usize, what: &str) -> Result<Option<serde_json::Value>, Fail> {
    let text: Option<String> = row.try_get(i)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| Fail::Corrupt(format!("{what}: {e}"))))
        .transpose()
}
