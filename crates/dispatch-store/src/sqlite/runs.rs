//! The `runs` table: create, read, list, compare-and-set transitions, stop
//! requests and deletion.

use dispatch_core::EventKind;
use dispatch_core::event::Usage;
use dispatch_core::id::SHORT_LEN;
use dispatch_core::{NewEvent, Operation, RunId, RunState, Status, Ts};
use rusqlite::types::Value as SqlValue;
use rusqlite::{OptionalExtension, Row, Transaction, params, params_from_iter};
use serde_json::{Value, json};

use super::events::insert_event;
use super::{Fail, to_json};
use crate::attempt_end::{AttemptEnd, requeue_close};
use crate::{NewRun, Run, RunFilter, StateWrite, StoreError};

/// The columns [`run_from_row`] reads, in its order.
macro_rules! run_columns {
    () => {
        "id, version, parcel_digest, parcel_name, operation, state, attempt, parent_id, \
         origin_id, payload, brief_sha256, created_at, updated_at, stop_requested_at, \
         input_tokens, output_tokens, cost_usd, output, labels, trigger_kind, fence, project"
    };
}

/// [`run_columns`] without the payload, output and labels (see
/// [`RunFilter::summary`]).
const SUMMARY_COLUMNS: &str = "id, version, parcel_digest, parcel_name, operation, state, attempt, \
     parent_id, origin_id, NULL, brief_sha256, created_at, updated_at, stop_requested_at, \
     input_tokens, output_tokens, cost_usd, NULL, NULL, trigger_kind, fence, project";

/// Decodes a row selected with [`run_columns`] (or [`SUMMARY_COLUMNS`]).
fn run_from_row(row: &Row<'_>) -> Result<Run, Fail> {
    let id: RunId = parse_id(row.get_ref(0)?.as_str()?)?;
    let json = |i: usize, what: &str| -> Result<Option<Value>, Fail> {
        match row.get_ref(i)?.as_str_or_null()? {
            None => Ok(None),
            Some(text) => serde_json::from_str(text)
                .map(Some)
                .map_err(|e| Fail::Corrupt(format!("run {id}: {what} is not valid JSON: {e}"))),
        }
    };
    let state_text = row.get_ref(5)?.as_str()?;
    let state: RunState = serde_json::from_str(state_text).map_err(|e| {
        let shown = dispatch_core::event::shorten(state_text, 200);
        Fail::Corrupt(format!("run {id}: unreadable state `{shown}`: {e}"))
    })?;
    let operation: Operation = row
        .get_ref(4)?
        .as_str()?
        .parse()
        .map_err(|e| Fail::Corrupt(format!("run {id}: {e}")))?;
    let optional_id = |i: usize| -> Result<Option<RunId>, Fail> {
        row.get_ref(i)?.as_str_or_null()?.map(parse_id).transpose()
    };
    Ok(Run {
        version: row.get(1)?,
        parcel_digest: row.get(2)?,
        parcel_name: row.get(3)?,
        operation,
        state,
        attempt: row.get(6)?,
        parent_id: optional_id(7)?,
        origin_id: optional_id(8)?,
        payload: json(9, "payload")?.unwrap_or(Value::Null),
        brief_sha256: row.get(10)?,
        created_at: row.get(11)?,
        updated_at: row.get(12)?,
        stop_requested_at: row.get(13)?,
        usage: Usage {
            input_tokens: row.get(14)?,
            output_tokens: row.get(15)?,
            cost_usd: row.get(16)?,
        },
        output: json(17, "output")?,
        labels: match json(18, "labels")? {
            None => Vec::new(),
            Some(v) => serde_json::from_value(v)
                .map_err(|e| Fail::Corrupt(format!("run {id}: labels are not a list: {e}")))?,
        },
        trigger: row
            .get_ref(19)?
            .as_str()?
            .parse()
            .map_err(|e| Fail::Corrupt(format!("run {id}: {e}")))?,
        fence: row.get(20)?,
        project: row.get(21)?,
        id,
    })
}

pub(super) fn parse_id(text: &str) -> Result<RunId, Fail> {
    text.parse()
        .map_err(|_| Fail::Corrupt(format!("`{text}` is not a run id")))
}

fn parse_status(id: &RunId, text: &str) -> Result<Status, Fail> {
    text.parse()
        .map_err(|e| Fail::Corrupt(format!("run {id}: {e}")))
}

fn not_found(id: &RunId) -> Fail {
    Fail::Store(StoreError::NotFound(id.to_string()))
}

pub(super) fn exists(tx: &Transaction<'_>, id: &RunId) -> Result<bool, Fail> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM runs WHERE id = ?1")?
        .query_row([id.as_str()], |_| Ok(()))
        .optional()?
        .is_some())
}

pub(super) fn create(tx: &Transaction<'_>, new: &NewRun) -> Result<Run, Fail> {
    create_as(tx, new, None, &[])
}

/// [`create`], in `state` when given (a run created in review) rather than
/// `created` or `queued`, with `events` (no usage) logged right after its
/// `created` event.
pub(super) fn create_as(
    tx: &Transaction<'_>,
    new: &NewRun,
    state: Option<RunState>,
    events: &[&NewEvent],
) -> Result<Run, Fail> {
    let state = match (state, new.created) {
        (Some(state), _) => state,
        (None, true) => RunState::Created {},
        (None, false) => RunState::queued(),
    };
    let inserted = tx
        .prepare_cached(
            "INSERT INTO runs (id, version, parcel_digest, parcel_name, operation, status, state, \
             attempt, parent_id, origin_id, payload, brief_sha256, created_at, updated_at, \
             trigger_kind, handoff_key, project) \
             VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13, ?14)",
        )?
        .execute(params![
            new.id.as_str(),
            new.parcel_digest,
            new.parcel_name,
            new.operation.as_str(),
            state.status().as_str(),
            to_json("state", &state)?,
            new.parent_id.as_ref().map(RunId::as_str),
            new.origin_id.as_ref().map(RunId::as_str),
            to_json("payload", &new.payload)?,
            new.brief_sha256,
            new.created_at,
            new.trigger.as_str(),
            new.handoff_key,
            new.project,
        ]);
    match inserted {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            // Version 0: we expected no run with this id.
            return Err(Fail::Store(StoreError::Conflict {
                id: new.id.clone(),
                expected: 0,
            }));
        }
        other => other?,
    };
    let created = NewEvent::new(
        EventKind::Created,
        1,
        new.created_at,
        json!({
            "operation": new.operation,
            "parcel": new.parcel_name,
            "parcel_digest": new.parcel_digest,
            "parent_id": new.parent_id,
            "origin_id": new.origin_id,
            "trigger": new.trigger,
        }),
    );
    insert_event(tx, &new.id, &created)?;
    for event in events {
        insert_event(tx, &new.id, event)?;
    }
    if let Some(helper) = new.claimed_by {
        let claim = crate::created_claimed::claim_write(new, helper);
        return transition(tx, &new.id, 1, std::slice::from_ref(&claim));
    }
    get(tx, &new.id)
}

pub(super) fn get(tx: &Transaction<'_>, id: &RunId) -> Result<Run, Fail> {
    let mut stmt = tx.prepare_cached(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs WHERE id = ?1"
    ))?;
    let mut rows = stmt.query([id.as_str()])?;
    match rows.next()? {
        Some(row) => run_from_row(row),
        None => Err(not_found(id)),
    }
}

/// The smallest string greater than every string that starts with `prefix`,
/// for an ASCII `prefix` whose last byte is below 0x7f.
fn upper_bound(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    if let Some(last) = bytes.last_mut() {
        *last += 1;
    }
    String::from_utf8(bytes).expect("an ASCII byte below 0x7f plus one is still ASCII")
}

pub(super) fn resolve_prefix(tx: &Transaction<'_>, prefix: &str) -> Result<RunId, Fail> {
    let unknown = || Fail::Store(StoreError::NotFound(prefix.to_string()));
    // Ids are lowercase hex; anything else can match nothing.
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unknown());
    }
    let low = prefix.to_ascii_lowercase();
    let high = upper_bound(&low);
    let ids: Vec<String> = tx
        .prepare_cached("SELECT id FROM runs WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT 3")?
        .query_map([&low, &high], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    match ids.as_slice() {
        [] => Err(unknown()),
        [one] => parse_id(one),
        several => {
            let count: i64 = tx
                .prepare_cached("SELECT COUNT(*) FROM runs WHERE id >= ?1 AND id < ?2")?
                .query_row([&low, &high], |row| row.get(0))?;
            Err(Fail::Store(StoreError::Ambiguous {
                prefix: prefix.to_string(),
                count: usize::try_from(count).unwrap_or(usize::MAX),
                examples: distinct_prefixes(several).join(", "),
            }))
        }
    }
}

/// The ids cut to a length that tells them apart (at least the usual short
/// length; ids created in the same millisecond share their first 12 digits).
fn distinct_prefixes(ids: &[String]) -> Vec<&str> {
    let common = ids
        .windows(2)
        .map(|w| {
            w[0].bytes()
                .zip(w[1].bytes())
                .take_while(|(a, b)| a == b)
                .count()
        })
        .max()
        .unwrap_or(0);
    let len = SHORT_LEN.max(common + 1);
    ids.iter().map(|id| &id[..len.min(id.len())]).collect()
}

pub(super) fn list(tx: &Transaction<'_>, filter: &RunFilter) -> Result<Vec<Run>, Fail> {
    let columns = if filter.summary {
        SUMMARY_COLUMNS
    } else {
        run_columns!()
    };
    let mut sql = format!("SELECT {columns} FROM runs");
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<SqlValue> = Vec::new();
    if !filter.statuses.is_empty() {
        let marks = vec!["?"; filter.statuses.len()].join(", ");
        clauses.push(format!("status IN ({marks})"));
        args.extend(
            filter
                .statuses
                .iter()
                .map(|s| SqlValue::Text(s.as_str().to_string())),
        );
    }
    if let Some(parcel) = filter.parcel.as_deref() {
        if parcel.is_empty() {
            clauses.push("parcel_name = ?".into());
            args.push(SqlValue::Text(String::new()));
        } else {
            clauses.push("(parcel_name = ? OR substr(parcel_digest, 1, ?) = ?)".into());
            args.push(SqlValue::Text(parcel.to_string()));
            args.push(SqlValue::Integer(parcel.chars().count() as i64));
            args.push(SqlValue::Text(parcel.to_string()));
        }
    }
    if let Some(operation) = filter.operation {
        clauses.push("operation = ?".into());
        args.push(SqlValue::Text(operation.as_str().to_string()));
    }
    if let Some(parent) = &filter.parent_id {
        clauses.push("parent_id = ?".into());
        args.push(SqlValue::Text(parent.to_string()));
    }
    if !filter.labels.is_empty() {
        // Every wanted label is among the run's.
        clauses.push(
            "NOT EXISTS (SELECT 1 FROM json_each(?) AS w \
             WHERE w.value NOT IN (SELECT value FROM json_each(runs.labels)))"
                .into(),
        );
        args.push(SqlValue::Text(to_json("labels", &filter.labels)?));
    }
    if let Some(trigger) = filter.trigger {
        clauses.push("trigger_kind = ?".into());
        args.push(SqlValue::Text(trigger.as_str().to_string()));
    }
    if !filter.projects.is_empty() {
        let marks = vec!["?"; filter.projects.len()].join(", ");
        clauses.push(format!("project IN ({marks})"));
        args.extend(filter.projects.iter().cloned().map(SqlValue::Text));
    }
    if let Some(after) = filter.created_after {
        clauses.push("created_at >= ?".into());
        args.push(SqlValue::Integer(after));
    }
    if let Some(before) = filter.created_before {
        clauses.push("created_at < ?".into());
        args.push(SqlValue::Integer(before));
    }
    if let Some(before) = &filter.before {
        clauses.push("id < ?".into());
        args.push(SqlValue::Text(before.to_string()));
    }
    if !clauses.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&clauses.join(" AND "));
    }
    // Ids are time-ordered: the largest is the newest.
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    let limit = filter
        .limit
        .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    args.push(SqlValue::Integer(limit));

    let mut stmt = tx.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(args))?;
    let mut runs = Vec::new();
    while let Some(row) = rows.next()? {
        runs.push(run_from_row(row)?);
    }
    Ok(runs)
}

/// Applies `writes` in a row, each at the version the one before left (see
/// [`crate::RunStore::transitions`]); the caller's transaction makes them one.
pub(super) fn transition(
    tx: &Transaction<'_>,
    id: &RunId,
    expected: i64,
    writes: &[StateWrite],
) -> Result<Run, Fail> {
    for (n, write) in writes.iter().enumerate() {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        transition_one(tx, id, expected.saturating_add(n), write)?;
    }
    if writes.is_empty() {
        // Nothing to change: still a compare-and-set on the version.
        let run = get(tx, id)?;
        if run.version != expected {
            return Err(Fail::Store(StoreError::Conflict {
                id: id.clone(),
                expected,
            }));
        }
        return Ok(run);
    }
    get(tx, id)
}

fn transition_one(
    tx: &Transaction<'_>,
    id: &RunId,
    expected: i64,
    write: &StateWrite,
) -> Result<(), Fail> {
    let (version, old_status, old_attempt, owner): (i64, String, u32, Option<String>) = tx
        .prepare_cached("SELECT version, status, attempt, lease_owner FROM runs WHERE id = ?1")?
        .query_row([id.as_str()], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()?
        .ok_or_else(|| not_found(id))?;
    if version != expected {
        return Err(Fail::Store(StoreError::Conflict {
            id: id.clone(),
            expected,
        }));
    }
    let old_status = parse_status(id, &old_status)?;
    if old_status.is_terminal() {
        return Err(Fail::Store(StoreError::InvalidState {
            id: id.clone(),
            status: old_status,
            hint: "a finished run never changes state (hint: `dispatch restart` runs it again)",
        }));
    }
    let new_status = write.state.status();
    let claim = old_status == Status::Queued && new_status == Status::Starting;
    if claim {
        // A claim: only when the run's concurrency key has a slot for it.
        super::limits::check_admitted(tx, id, write.event.at)?;
    }
    let at = write.event.at;
    // Back to the queue from anywhere else: a retry, so a new attempt.
    // (A created run's start, a reviewed run's approval, is its first
    // time in the queue.)
    let requeued = new_status == Status::Queued
        && !matches!(
            old_status,
            Status::Queued | Status::Created | Status::Review
        );
    let attempt = if requeued {
        old_attempt + 1
    } else {
        old_attempt
    };
    let output = write
        .output
        .as_ref()
        .map(|o| to_json("output", o))
        .transpose()?;

    let changed = tx
        .prepare_cached(
            "UPDATE runs SET state = ?1, status = ?2, version = version + 1, attempt = ?3, \
             updated_at = ?4, output = COALESCE(?5, output), \
             lease_owner = CASE WHEN ?8 THEN NULL ELSE lease_owner END, \
             lease_expires_at = CASE WHEN ?8 THEN NULL ELSE lease_expires_at END, \
             fence = fence + ?9 \
             WHERE id = ?6 AND version = ?7",
        )?
        .execute(params![
            to_json("state", &write.state)?,
            new_status.as_str(),
            attempt,
            at,
            output,
            id.as_str(),
            expected,
            // Queued, suspended or finished, the run is nobody's: a worker's lease ends.
            new_status == Status::Queued
                || new_status.is_terminal()
                || matches!(write.state, RunState::Suspended { .. }),
            // A local helper's claim is a new holder: a new fencing token.
            i64::from(claim),
        ])?;
    if changed != 1 {
        // Unreachable under the write lock we hold, but never write past a lost CAS.
        return Err(Fail::Store(StoreError::Conflict {
            id: id.clone(),
            expected,
        }));
    }
    insert_event(tx, id, &write.event)?;
    for event in &write.then {
        insert_event(tx, id, event)?;
    }

    if requeued {
        close_attempt(tx, id, old_attempt, &requeue_close(&write.event))?;
    }
    if write.state.agent().is_some() {
        // Running (or paused, which only follows running): the attempt is open.
        let started_at = write.state.started_at().unwrap_or(at);
        let worker = crate::attempt_end::worker_name(owner.as_deref(), &write.state);
        tx.prepare_cached(
            "INSERT OR IGNORE INTO attempts (run_id, number, started_at, worker) \
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![id.as_str(), attempt, started_at, worker])?;
    }
    if let Some(close) = crate::attempt_end::suspend_close(&write.state, at) {
        close_attempt(tx, id, attempt, &close)?;
    }
    if new_status.is_terminal() {
        let close = AttemptEnd {
            ended_at: write.state.ended_at().unwrap_or(at),
            status: new_status,
            exit_code: write.state.exit_code(),
            error: write.state.reason().map(str::to_string),
        };
        close_attempt(tx, id, attempt, &close)?;
        close_approvals(tx, id, at)?;
        if let Some(n) = crate::notifications::run_failed(id, attempt, &write.state, at) {
            super::notifications::enqueue(tx, &n)?;
        }
    }
    Ok(())
}

/// Decides every approval of run `id` still pending as
/// [`crate::reliability::ENDED_DECISION`]: the run ended, so nobody can.
fn close_approvals(tx: &Transaction<'_>, id: &RunId, at: Ts) -> Result<(), Fail> {
    use crate::reliability::{ENDED_BY, ENDED_DECISION, ENDED_RATIONALE};
    let mut stmt = tx.prepare_cached(
        "UPDATE approvals SET decision = ?2, decided_by = ?3, rationale = ?4, decided_at = ?5 \
         WHERE run_id = ?1 AND decision IS NULL RETURNING id, attempt",
    )?;
    let closed = stmt
        .query_map(
            params![id.as_str(), ENDED_DECISION, ENDED_BY, ENDED_RATIONALE, at],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, u32>(1)?)),
        )?
        .collect::<Result<Vec<_>, _>>()?;
    for (approval, attempt) in closed {
        let data = json!({"id": approval, "decision": ENDED_DECISION, "by": ENDED_BY,
            "rationale": ENDED_RATIONALE});
        insert_event(
            tx,
            id,
            &NewEvent::new(EventKind::ApprovalDecided, attempt, at, data),
        )?;
    }
    Ok(())
}

/// Closes attempt `number` if it is open; an attempt that never opened (the
/// run never reached `running`) has no row and stays without one.
fn close_attempt(
    tx: &Transaction<'_>,
    id: &RunId,
    number: u32,
    end: &AttemptEnd,
) -> Result<(), Fail> {
    tx.prepare_cached(
        "UPDATE attempts SET ended_at = ?3, status = ?4, exit_code = ?5, error = ?6 \
         WHERE run_id = ?1 AND number = ?2 AND ended_at IS NULL",
    )?
    .execute(params![
        id.as_str(),
        number,
        end.ended_at,
        end.status.as_str(),
        end.exit_code,
        end.error,
    ])?;
    Ok(())
}

pub(super) fn request_stop(tx: &Transaction<'_>, id: &RunId, at: Ts) -> Result<Run, Fail> {
    let first: Option<u32> = tx
        .prepare_cached(
            "UPDATE runs SET stop_requested_at = ?2 \
             WHERE id = ?1 AND stop_requested_at IS NULL RETURNING attempt",
        )?
        .query_row(params![id.as_str(), at], |row| row.get(0))
        .optional()?;
    if let Some(attempt) = first {
        let event = NewEvent::new(EventKind::StopRequested, attempt, at, json!({}));
        insert_event(tx, id, &event)?;
    }
    // Not the first request, or no such run: `get` tells which.
    get(tx, id)
}

pub(super) fn delete(tx: &Transaction<'_>, id: &RunId) -> Result<(), Fail> {
    let status: String = tx
        .prepare_cached("SELECT status FROM runs WHERE id = ?1")?
        .query_row([id.as_str()], |row| row.get(0))
        .optional()?
        .ok_or_else(|| not_found(id))?;
    let status = parse_status(id, &status)?;
    if !status.is_terminal() {
        return Err(Fail::Store(StoreError::InvalidState {
            id: id.clone(),
            status,
            hint: "stop it first, or use -f",
        }));
    }
    for sql in [
        "DELETE FROM approvals WHERE run_id = ?1",
        "DELETE FROM dead_letters WHERE run_id = ?1",
        "DELETE FROM events WHERE run_id = ?1",
        "DELETE FROM attempts WHERE run_id = ?1",
        "DELETE FROM artifacts WHERE run_id = ?1",
        "DELETE FROM run_logs WHERE run_id = ?1",
        "DELETE FROM run_log_archives WHERE run_id = ?1",
        "DELETE FROM service_state WHERE run_id = ?1",
        "DELETE FROM runs WHERE id = ?1",
    ] {
        tx.prepare_cached(sql)?.execute([id.as_str()])?;
    }
    Ok(())
}
