//! Deduplicated creation, sessions, run policy, approvals and dead letters.

use dispatch_core::EventKind;
use dispatch_core::{NewEvent, RunId};
use rusqlite::{OptionalExtension, Row, Transaction, params};
use serde_json::{Value, json};

use super::events::insert_event;
use super::runs::{create_as, get};
use super::{Fail, to_json};
use crate::{Approval, Created, DeadLetter, Decision, NewRun, RunExtras, StoreError};

/// Statuses of a run that still holds its session or dedup key.
const LIVE: &str = "('review', 'queued', 'starting', 'running', 'paused')";

fn parse_id(text: &str) -> Result<RunId, Fail> {
    text.parse()
        .map_err(|_| Fail::Corrupt(format!("`{text}` is not a run id")))
}

fn json_col(row: &Row<'_>, i: usize, what: &str) -> Result<Option<Value>, Fail> {
    match row.get_ref(i)?.as_str_or_null()? {
        None => Ok(None),
        Some(text) => serde_json::from_str(text)
            .map(Some)
            .map_err(|e| Fail::Corrupt(format!("{what} is not valid JSON: {e}"))),
    }
}

pub(super) fn create_with(
    tx: &Transaction<'_>,
    new: &NewRun,
    extras: &RunExtras,
    dedupe: bool,
) -> Result<Created, Fail> {
    // One run per handoff of its origin, whatever became of it.
    if let (Some(origin), Some(key)) = (&new.origin_id, &new.handoff_key) {
        let existing: Option<String> = tx
            .prepare_cached("SELECT id FROM runs WHERE origin_id = ?1 AND handoff_key = ?2")?
            .query_row(params![origin.as_str(), key], |row| row.get(0))
            .optional()?;
        if let Some(existing) = existing {
            return Ok(Created::Existing(get(tx, &parse_id(&existing)?)?));
        }
    }
    // The same key answers the same run, even one holding the session.
    if let (true, Some(key)) = (dedupe, &extras.idempotency_key) {
        let existing: Option<String> = tx
            .prepare_cached(&format!(
                "SELECT id FROM runs WHERE idempotency_key = ?1 \
                 AND (status IN {LIVE} OR status = 'succeeded') ORDER BY id DESC LIMIT 1"
            ))?
            .query_row([key], |row| row.get(0))
            .optional()?;
        if let Some(existing) = existing {
            return Ok(Created::Existing(get(tx, &parse_id(&existing)?)?));
        }
    }
    if let Some(session) = &extras.session {
        let holder: Option<String> = tx
            .prepare_cached(&format!(
                "SELECT id FROM runs WHERE session = ?1 AND status IN {LIVE} ORDER BY id LIMIT 1"
            ))?
            .query_row([session], |row| row.get(0))
            .optional()?;
        if let Some(holder) = holder {
            return Err(Fail::Store(StoreError::SessionBusy {
                session: session.clone(),
                run: parse_id(&holder)?,
            }));
        }
    }
    // A project over a hard limit whose action is `refuse` takes no new run.
    // Most projects have no quota: one short statement says so, and the
    // limits' (a `json_each` over the projects) is not compiled (a local
    // run's helper has a new connection, which compiles each statement).
    let quota = super::quotas::has_quota(tx, &new.project)?;
    if quota {
        super::quotas::refuse_new(tx, &new.project, new.created_at)?;
    }
    // A run with a concurrency key is claimed only when the key has a
    // slot for it (its helper waits otherwise); `drop` cancels it at once.
    // A run in review is neither: it waits for a person first.
    let review = extras
        .review
        .as_ref()
        .map(|r| crate::reliability::review_of(new, r));
    let keyed = extras.concurrency.as_ref();
    let dropped = match keyed {
        Some(c) if review.is_none() => super::limits::make_room(tx, new, c)?,
        _ => None,
    };
    // So is a run made held whose project has a quota.
    let capped = new.claimed_by.is_some() && quota;
    let mut plain = new.clone();
    if keyed.is_some() || review.is_some() || capped {
        plain.claimed_by = None;
    }
    // What was decided before the run existed (a policy's decision) is
    // logged right after its `created` event, as on PostgreSQL; events with
    // usage go through the usage totals below.
    let (at_creation, later): (Vec<&NewEvent>, Vec<&NewEvent>) =
        extras.events.iter().partition(|e| e.usage().is_none());
    let state = review.as_ref().map(|(state, _)| state.clone());
    create_as(tx, &plain, state, &at_creation)?;
    if let Some(c) = keyed {
        super::limits::set_key(tx, &new.id, c)?;
    }
    if keyed.is_some() || capped {
        let run = get(tx, &new.id)?;
        if let Some(reason) = dropped {
            if let Some(write) = crate::limits::cancel_write(&run, &reason, new.created_at) {
                super::runs::transition(tx, &new.id, run.version, std::slice::from_ref(&write))?;
            }
        } else if let Some(helper) = new.claimed_by.filter(|_| review.is_none())
            && super::limits::check_admitted(tx, &new.id, new.created_at).is_ok()
        {
            let claim = crate::created_claimed::claim_write(new, helper);
            super::runs::transition(tx, &new.id, run.version, std::slice::from_ref(&claim))?;
        }
    }
    let policy = extras
        .policy
        .as_ref()
        .map(|p| to_json("policy", p))
        .transpose()?;
    tx.prepare_cached(
        "UPDATE runs SET idempotency_key = ?2, session = ?3, policy = ?4, keep_workspace = ?5, \
         traceparent = ?6 WHERE id = ?1",
    )?
    .execute(params![
        new.id.as_str(),
        extras.idempotency_key,
        extras.session,
        policy,
        extras.keep_workspace,
        extras.traceparent
    ])?;
    if !later.is_empty() {
        let later: Vec<NewEvent> = later.into_iter().cloned().collect();
        super::events::append(tx, &new.id, &later)?;
    }
    if let Some((_, approval)) = &review {
        request_approval(tx, approval)?;
    }
    Ok(Created::New(get(tx, &new.id)?))
}

pub(super) fn extras(tx: &Transaction<'_>, id: &RunId) -> Result<RunExtras, Fail> {
    let mut stmt = tx.prepare_cached(
        "SELECT idempotency_key, session, policy, keep_workspace, concurrency_key, \
         concurrency_max, concurrency_strategy, traceparent FROM runs WHERE id = ?1",
    )?;
    let mut rows = stmt.query([id.as_str()])?;
    let Some(row) = rows.next()? else {
        return Err(Fail::Store(StoreError::NotFound(id.to_string())));
    };
    Ok(RunExtras {
        idempotency_key: row.get(0)?,
        session: row.get(1)?,
        policy: json_col(row, 2, "policy")?,
        keep_workspace: row.get(3)?,
        concurrency: concurrency_of(row.get(4)?, row.get(5)?, row.get(6)?),
        traceparent: row.get(7)?,
        events: Vec::new(),
        review: None,
    })
}

/// The concurrency columns as [`RunExtras::concurrency`].
pub(super) fn concurrency_of(
    key: Option<String>,
    max: Option<u32>,
    strategy: Option<String>,
) -> Option<dispatch_core::concurrency::RunConcurrency> {
    Some(dispatch_core::concurrency::RunConcurrency {
        key: key?,
        max: max?,
        strategy: strategy.and_then(|s| s.parse().ok()).unwrap_or_default(),
    })
}

const APPROVAL_COLUMNS: &str = "run_id, id, attempt, summary, requested_at, deadline, decision, \
     decided_by, rationale, decided_at, details, input";

fn approval_from_row(row: &Row<'_>) -> Result<Approval, Fail> {
    Ok(Approval {
        run_id: parse_id(row.get_ref(0)?.as_str()?)?,
        id: row.get(1)?,
        attempt: row.get(2)?,
        summary: row.get(3)?,
        requested_at: row.get(4)?,
        deadline: row.get(5)?,
        decision: row.get(6)?,
        decided_by: row.get(7)?,
        rationale: row.get(8)?,
        decided_at: row.get(9)?,
        details: opt_json(row, 10, "approval details")?,
        input: opt_json(row, 11, "approval input")?,
    })
}

fn get_approval(tx: &Transaction<'_>, run: &RunId, id: &str) -> Result<Option<Approval>, Fail> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE run_id = ?1 AND id = ?2"
    ))?;
    let mut rows = stmt.query(params![run.as_str(), id])?;
    rows.next()?.map(approval_from_row).transpose()
}

pub(super) fn request_approval(tx: &Transaction<'_>, a: &Approval) -> Result<Approval, Fail> {
    if let Some(existing) = get_approval(tx, &a.run_id, &a.id)? {
        return Ok(existing);
    }
    get(tx, &a.run_id)?; // NotFound for an unknown run
    tx.prepare_cached(
        "INSERT INTO approvals (run_id, id, attempt, summary, requested_at, deadline, details) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        a.run_id.as_str(),
        a.id,
        a.attempt,
        a.summary,
        a.requested_at,
        a.deadline,
        a.details.as_ref().map(|d| d.to_string()),
    ])?;
    let event = NewEvent::new(
        EventKind::ApprovalRequested,
        a.attempt,
        a.requested_at,
        json!({"id": a.id, "summary": a.summary, "deadline": a.deadline, "details": a.details}),
    );
    insert_event(tx, &a.run_id, &event)?;
    super::notifications::enqueue(tx, &crate::notifications::approval_requested(a))?;
    get_approval(tx, &a.run_id, &a.id)?
        .ok_or_else(|| Fail::Corrupt("an inserted approval is missing".into()))
}

/// [`decide`], and the run moved on with `write` from the state saved at
/// `expected`, in the caller's transaction.
pub(super) fn decide_moving(
    tx: &Transaction<'_>,
    run: &RunId,
    id: &str,
    d: &Decision,
    (expected, write): (i64, &crate::StateWrite),
) -> Result<(Approval, crate::Run), Fail> {
    let decided = decide(tx, run, id, d)?;
    let moved = super::runs::transition(tx, run, expected, std::slice::from_ref(write))?;
    if let Some(n) = crate::reliability::moving_notification(&decided, &moved) {
        super::notifications::enqueue(tx, &n)?;
    }
    Ok((decided, moved))
}

pub(super) fn decide(
    tx: &Transaction<'_>,
    run: &RunId,
    id: &str,
    d: &Decision,
) -> Result<Approval, Fail> {
    let Some(found) = get_approval(tx, run, id)? else {
        get(tx, run)?;
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
    tx.prepare_cached(
        "UPDATE approvals SET decision = ?3, decided_by = ?4, rationale = ?5, decided_at = ?6, \
         input = ?7 WHERE run_id = ?1 AND id = ?2 AND decision IS NULL",
    )?
    .execute(params![
        run.as_str(),
        id,
        d.decision,
        d.by,
        d.rationale,
        d.at,
        d.input.as_ref().map(|i| i.to_string()),
    ])?;
    let event = NewEvent::new(
        EventKind::ApprovalDecided,
        found.attempt,
        d.at,
        json!({"id": id, "decision": d.decision, "by": d.by, "rationale": d.rationale, "input": d.input}),
    );
    insert_event(tx, run, &event)?;
    get_approval(tx, run, id)?.ok_or_else(|| Fail::Corrupt("a decided approval is missing".into()))
}

pub(super) fn list_approvals(
    tx: &Transaction<'_>,
    run: Option<&RunId>,
    pending_only: bool,
) -> Result<Vec<Approval>, Fail> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {APPROVAL_COLUMNS} FROM approvals \
         WHERE (?1 IS NULL OR run_id = ?1) AND (?2 = 0 OR decision IS NULL) \
         ORDER BY requested_at, run_id, id"
    ))?;
    let mut rows = stmt.query(params![run.map(RunId::as_str), pending_only])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(approval_from_row(row)?);
    }
    Ok(out)
}

pub(super) fn add_dead_letter(tx: &Transaction<'_>, d: &DeadLetter) -> Result<(), Fail> {
    let run = get(tx, &d.run_id)?;
    let inserted = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO dead_letters (run_id, at, reason, attempts, checkpoint, errors) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            d.run_id.as_str(),
            d.at,
            d.reason,
            d.attempts,
            d.checkpoint
                .as_ref()
                .map(|c| to_json("checkpoint", c))
                .transpose()?,
            to_json("errors", &d.errors)?,
        ])?;
    if inserted == 1 {
        let event = NewEvent::new(
            EventKind::DeadLettered,
            run.attempt,
            d.at,
            json!({"reason": d.reason, "attempts": d.attempts}),
        );
        insert_event(tx, &d.run_id, &event)?;
    }
    Ok(())
}

pub(super) fn list_dead_letters(tx: &Transaction<'_>) -> Result<Vec<DeadLetter>, Fail> {
    dead_letters(tx, None)
}

pub(super) fn dead_letter(tx: &Transaction<'_>, run: &RunId) -> Result<Option<DeadLetter>, Fail> {
    Ok(dead_letters(tx, Some(run))?.pop())
}

fn dead_letters(tx: &Transaction<'_>, run: Option<&RunId>) -> Result<Vec<DeadLetter>, Fail> {
    let mut stmt = tx.prepare_cached(
        "SELECT run_id, at, reason, attempts, checkpoint, errors, replayed_by \
         FROM dead_letters WHERE (?1 IS NULL OR run_id = ?1) ORDER BY at DESC, run_id DESC",
    )?;
    let mut rows = stmt.query([run.map(RunId::as_str)])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let replayed_by = row
            .get_ref(6)?
            .as_str_or_null()?
            .map(parse_id)
            .transpose()?;
        out.push(DeadLetter {
            run_id: parse_id(row.get_ref(0)?.as_str()?)?,
            at: row.get(1)?,
            reason: row.get(2)?,
            attempts: row.get(3)?,
            checkpoint: json_col(row, 4, "checkpoint")?,
            errors: json_col(row, 5, "errors")?.unwrap_or(Value::Null),
            replayed_by,
        });
    }
    Ok(out)
}

pub(super) fn mark_replayed(tx: &Transaction<'_>, run: &RunId, by: &RunId) -> Result<(), Fail> {
    let changed = tx
        .prepare_cached("UPDATE dead_letters SET replayed_by = ?2 WHERE run_id = ?1")?
        .execute(params![run.as_str(), by.as_str()])?;
    if changed == 0 {
        return Err(Fail::Store(StoreError::NotFound(run.to_string())));
    }
    Ok(())
}

/// A nullable JSON text column.
fn opt_json(row: &Row<'_>, i: usize, what: &str) -> Result<Option<serde_json::Value>, Fail> {
    let text: Option<String> = row.get(i)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| Fail::Corrupt(format!("{what}: {e}"))))
        .transpose()
}
