//! The `runs` table on PostgreSQL: the same statements as the SQLite backend,
//! with row locks where SQLite relies on its single writer.

use deadpool_postgres::{GenericClient, Transaction};
use dispatch_core::EventKind;
use dispatch_core::event::Usage;
use dispatch_core::id::SHORT_LEN;
use dispatch_core::project::DEFAULT_PROJECT;
use dispatch_core::{NewEvent, Operation, RunId, RunState, Status, Ts};
use serde_json::{Value, json};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::events::{insert_event, insert_run_events};
use super::{CALLBACK_CHANNEL, Fail, QUEUE_CHANNEL, to_json};
use crate::{NewRun, Run, RunExtras, RunFilter, StoreError};

/// The columns [`run_from_row`] reads by position, in its order.
macro_rules! run_columns {
    () => {
        "id, version, parcel_digest, parcel_name, operation, state, attempt, parent_id, \
         origin_id, payload, brief_sha256, created_at, updated_at, stop_requested_at, \
         input_tokens, output_tokens, cost_usd, output, labels, trigger_kind, fence, project"
    };
}
pub(super) use run_columns;

pub(super) fn u32_of(id: &RunId, what: &str, n: i64) -> Result<u32, Fail> {
    u32::try_from(n).map_err(|_| Fail::Corrupt(format!("run {id}: {what} {n} is out of range")))
}

fn u64_of(id: &RunId, what: &str, n: i64) -> Result<u64, Fail> {
    u64::try_from(n).map_err(|_| Fail::Corrupt(format!("run {id}: {what} {n} is out of range")))
}

/// Decodes a row selected with [`run_columns`].
pub(super) fn run_from_row(row: &Row) -> Result<Run, Fail> {
    let id = parse_id(row.try_get(0)?)?;
    let json = |i: usize, what: &str| -> Result<Option<Value>, Fail> {
        match row.try_get::<_, Option<&str>>(i)? {
            None => Ok(None),
            Some(text) => serde_json::from_str(text)
                .map(Some)
                .map_err(|e| Fail::Corrupt(format!("run {id}: {what} is not valid JSON: {e}"))),
        }
    };
    let state_text: &str = row.try_get(5)?;
    let state: RunState = serde_json::from_str(state_text).map_err(|e| {
        let shown = dispatch_core::event::shorten(state_text, 200);
        Fail::Corrupt(format!("run {id}: unreadable state `{shown}`: {e}"))
    })?;
    let operation: Operation = row
        .try_get::<_, &str>(4)?
        .parse()
        .map_err(|e| Fail::Corrupt(format!("run {id}: {e}")))?;
    let optional_id = |i: usize| -> Result<Option<RunId>, Fail> {
        row.try_get::<_, Option<&str>>(i)?.map(parse_id).transpose()
    };
    Ok(Run {
        version: row.try_get(1)?,
        parcel_digest: row.try_get(2)?,
        parcel_name: row.try_get(3)?,
        operation,
        state,
        attempt: u32_of(&id, "attempt", row.try_get(6)?)?,
        parent_id: optional_id(7)?,
        origin_id: optional_id(8)?,
        payload: json(9, "payload")?.unwrap_or(Value::Null),
        brief_sha256: row.try_get(10)?,
        created_at: row.try_get(11)?,
        updated_at: row.try_get(12)?,
        stop_requested_at: row.try_get(13)?,
        usage: Usage {
            input_tokens: u64_of(&id, "input tokens", row.try_get(14)?)?,
            output_tokens: u64_of(&id, "output tokens", row.try_get(15)?)?,
            cost_usd: row.try_get(16)?,
        },
        output: json(17, "output")?,
        labels: row.try_get(18)?,
        trigger: row
            .try_get::<_, &str>(19)?
            .parse()
            .map_err(|e| Fail::Corrupt(format!("run {id}: {e}")))?,
        fence: row.try_get(20)?,
        project: row.try_get(21)?,
        id,
    })
}

pub(super) fn parse_id(text: &str) -> Result<RunId, Fail> {
    text.parse()
        .map_err(|_| Fail::Corrupt(format!("`{text}` is not a run id")))
}

pub(super) fn parse_status(id: &RunId, text: &str) -> Result<Status, Fail> {
    text.parse()
        .map_err(|e| Fail::Corrupt(format!("run {id}: {e}")))
}

pub(super) fn not_found(id: &RunId) -> Fail {
    Fail::Store(StoreError::NotFound(id.to_string()))
}

/// Tells waiting workers that a run became claimable (sent on commit).
pub(super) async fn notify_queue(tx: &Transaction<'_>) -> Result<(), Fail> {
    let stmt = tx.prepare_cached("SELECT pg_notify($1, '')").await?;
    tx.execute(&stmt, &[&QUEUE_CHANNEL]).await?;
    Ok(())
}

/// Tells workers that a slot of a concurrency key freed when one of `ids`,
/// just finished, had a key (sent on commit; nothing when none had).
pub(super) async fn notify_keyed(tx: &Transaction<'_>, ids: &[&str]) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached(
            "SELECT pg_notify($1, '') FROM runs \
             WHERE id = ANY($2) AND concurrency_key IS NOT NULL LIMIT 1",
        )
        .await?;
    tx.execute(&stmt, &[&QUEUE_CHANNEL, &ids]).await?;
    Ok(())
}

/// Tells callback dispatchers that one of `ids`, just finished, has a
/// callback to deliver (sent on commit; nothing when none has).
pub(super) async fn notify_callbacks(tx: &Transaction<'_>, ids: &[&str]) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached(
            "SELECT pg_notify($1, '') FROM callbacks \
             WHERE run_id = ANY($2) AND done_at IS NULL LIMIT 1",
        )
        .await?;
    tx.query(&stmt, &[&CALLBACK_CHANNEL, &ids]).await?;
    Ok(())
}

pub(super) async fn create(tx: &Transaction<'_>, new: &NewRun) -> Result<Run, Fail> {
    create_as(tx, new, None, &[], &RunExtras::default()).await
}

/// [`create`], in `state` when given (a run created in review) rather than
/// `created` or `queued`, with `events` (no usage) logged right after its
/// `created` event in the same statement, and the columns of `extras`
/// (key, session, policy, kept workspace, `traceparent`) in its insert.
pub(super) async fn create_as(
    tx: &Transaction<'_>,
    new: &NewRun,
    state: Option<RunState>,
    events: &[&NewEvent],
    extras: &RunExtras,
) -> Result<Run, Fail> {
    let state = match (state, new.created) {
        (Some(state), _) => state,
        (None, true) => RunState::Created {},
        (None, false) => RunState::queued(),
    };
    let stmt = tx
        .prepare_cached(concat!(
            "INSERT INTO runs (id, version, parcel_digest, parcel_name, operation, status, \
                 state, attempt, parent_id, origin_id, payload, brief_sha256, created_at, \
                 updated_at, ready_at, trigger_kind, handoff_key, project, idempotency_key, \
                 session, policy, keep_workspace, traceparent) \
                 VALUES ($1, 1, $2, $3, $4, $5, $6, 1, $7, $8, $9, $10, $11, $11, $11, $12, $13, \
                 $14, $15, $16, $17, $18, $19) \
                 ON CONFLICT (id) DO NOTHING RETURNING ",
            run_columns!()
        ))
        .await?;
    let (state_json, payload) = (to_json("state", &state)?, to_json("payload", &new.payload)?);
    let policy = extras
        .policy
        .as_ref()
        .map(|p| to_json("policy", p))
        .transpose()?;
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
    // Sent together (pipelined): on a clash the event went to another
    // run, and the error below rolls the transaction back.
    let (inserted, ()) = tokio::try_join!(
        async {
            Ok::<Option<Row>, Fail>(
                tx.query_opt(
                    &stmt,
                    &[
                        &new.id.as_str(),
                        &new.parcel_digest,
                        &new.parcel_name,
                        &new.operation.as_str(),
                        &state.status().as_str(),
                        &state_json,
                        &new.parent_id.as_ref().map(RunId::as_str),
                        &new.origin_id.as_ref().map(RunId::as_str),
                        &payload,
                        &new.brief_sha256,
                        &new.created_at,
                        &new.trigger.as_str(),
                        &new.handoff_key,
                        &new.project,
                        &extras.idempotency_key,
                        &extras.session,
                        &policy,
                        &extras.keep_workspace,
                        &extras.traceparent,
                    ],
                )
                .await?,
            )
        },
        async {
            let all: Vec<&NewEvent> = std::iter::once(&created)
                .chain(events.iter().copied())
                .collect();
            insert_run_events(tx, &new.id, &all).await
        }
    )?;
    let Some(inserted) = inserted else {
        // Version 0: we expected no run with this id.
        return Err(Fail::Store(StoreError::Conflict {
            id: new.id.clone(),
            expected: 0,
        }));
    };
    if let Some(helper) = new.claimed_by {
        let claim = crate::created_claimed::claim_write(new, helper);
        let item = super::transitions::Item {
            id: &new.id,
            fence: None,
            expected: 1,
            writes: std::slice::from_ref(&claim),
        };
        let saved = super::transitions::save(tx, &[item]).await?.pop();
        return saved
            .unwrap_or_else(|| Err(StoreError::NotFound(new.id.to_string())))
            .map_err(Fail::Store);
    }
    notify_queue(tx).await?;
    // As inserted: nothing else of this transaction wrote the run since.
    run_from_row(&inserted)
}

pub(super) async fn get<C: GenericClient>(tx: &C, id: &RunId) -> Result<Run, Fail> {
    let stmt = tx
        .prepare_cached(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE id = $1"
        ))
        .await?;
    match tx.query_opt(&stmt, &[&id.as_str()]).await? {
        Some(row) => run_from_row(&row),
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

pub(super) async fn resolve_prefix(tx: &Transaction<'_>, prefix: &str) -> Result<RunId, Fail> {
    let unknown = || Fail::Store(StoreError::NotFound(prefix.to_string()));
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unknown());
    }
    let low = prefix.to_ascii_lowercase();
    let high = upper_bound(&low);
    let stmt = tx
        .prepare_cached("SELECT id FROM runs WHERE id >= $1 AND id < $2 ORDER BY id LIMIT 3")
        .await?;
    let ids: Vec<String> = tx
        .query(&stmt, &[&low, &high])
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
    match ids.as_slice() {
        [] => Err(unknown()),
        [one] => parse_id(one),
        several => {
            let stmt = tx
                .prepare_cached("SELECT COUNT(*) FROM runs WHERE id >= $1 AND id < $2")
                .await?;
            let count: i64 = tx.query_one(&stmt, &[&low, &high]).await?.try_get(0)?;
            Err(Fail::Store(StoreError::Ambiguous {
                prefix: prefix.to_string(),
                count: usize::try_from(count).unwrap_or(usize::MAX),
                examples: distinct_prefixes(several).join(", "),
            }))
        }
    }
}

/// The ids cut to a length that tells them apart.
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

pub(super) async fn list<C: GenericClient>(tx: &C, filter: &RunFilter) -> Result<Vec<Run>, Fail> {
    let mut sql = String::from(concat!("SELECT ", run_columns!(), " FROM runs"));
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let next = |args: &mut Vec<Box<dyn ToSql + Sync + Send>>, v: Box<dyn ToSql + Sync + Send>| {
        args.push(v);
        format!("${}", args.len())
    };
    if !filter.statuses.is_empty() {
        let names: Vec<String> = filter.statuses.iter().map(|s| s.as_str().into()).collect();
        let p = next(&mut args, Box::new(names));
        clauses.push(format!("status = ANY({p})"));
    }
    if let Some(parcel) = filter.parcel.as_deref() {
        let p = next(&mut args, Box::new(parcel.to_string()));
        if parcel.is_empty() {
            clauses.push(format!("parcel_name = {p}"));
        } else {
            clauses.push(format!(
                "(parcel_name = {p} OR starts_with(parcel_digest, {p}))"
            ));
        }
    }
    if let Some(operation) = filter.operation {
        let p = next(&mut args, Box::new(operation.as_str().to_string()));
        clauses.push(format!("operation = {p}"));
    }
    if let Some(parent) = &filter.parent_id {
        let p = next(&mut args, Box::new(parent.to_string()));
        clauses.push(format!("parent_id = {p}"));
    }
    if !filter.labels.is_empty() {
        let p = next(&mut args, Box::new(filter.labels.clone()));
        clauses.push(format!("labels @> {p}::text[]"));
    }
    if let Some(trigger) = filter.trigger {
        let p = next(&mut args, Box::new(trigger.as_str().to_string()));
        clauses.push(format!("trigger_kind = {p}"));
    }
    if !filter.projects.is_empty() {
        let p = next(&mut args, Box::new(filter.projects.clone()));
        clauses.push(format!("project = ANY({p})"));
        // `runs_by_project` holds the runs of named projects only: said
        // here, the planner can use it for a list of named projects.
        if !filter.projects.iter().any(|p| p == DEFAULT_PROJECT) {
            clauses.push(format!("project <> '{DEFAULT_PROJECT}'"));
        }
    }
    if let Some(after) = filter.created_after {
        let p = next(&mut args, Box::new(after));
        clauses.push(format!("created_at >= {p}"));
    }
    if let Some(before) = filter.created_before {
        let p = next(&mut args, Box::new(before));
        clauses.push(format!("created_at < {p}"));
    }
    if let Some(before) = &filter.before {
        let p = next(&mut args, Box::new(before.to_string()));
        clauses.push(format!("id < {p}"));
    }
    if !clauses.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&clauses.join(" AND "));
    }
    let limit: Option<i64> = filter.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    let p = next(&mut args, Box::new(limit));
    // Ids are time-ordered: the largest is the newest.
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {p}"));
    let params: Vec<&(dyn ToSql + Sync)> = args
        .iter()
        .map(|a| a.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let stmt = tx.prepare_cached(&sql).await?;
    tx.query(&stmt, &params)
        .await?
        .iter()
        .map(run_from_row)
        .collect()
}

pub(super) async fn request_stop(tx: &Transaction<'_>, id: &RunId, at: Ts) -> Result<Run, Fail> {
    let stmt = tx
        .prepare_cached(
            "UPDATE runs SET stop_requested_at = $2 \
             WHERE id = $1 AND stop_requested_at IS NULL RETURNING attempt",
        )
        .await?;
    if let Some(row) = tx.query_opt(&stmt, &[&id.as_str(), &at]).await? {
        let attempt = u32_of(id, "attempt", row.try_get(0)?)?;
        let event = NewEvent::new(EventKind::StopRequested, attempt, at, json!({}));
        insert_event(tx, id, &event).await?;
    }
    get(tx, id).await
}

pub(super) async fn delete(tx: &Transaction<'_>, id: &RunId) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached("SELECT status FROM runs WHERE id = $1 FOR UPDATE")
        .await?;
    let row = tx
        .query_opt(&stmt, &[&id.as_str()])
        .await?
        .ok_or_else(|| not_found(id))?;
    let status = parse_status(id, row.try_get(0)?)?;
    if !status.is_terminal() {
        return Err(Fail::Store(StoreError::InvalidState {
            id: id.clone(),
            status,
            hint: "stop it first, or use -f",
        }));
    }
    for sql in [
        "DELETE FROM approvals WHERE run_id = $1",
        "DELETE FROM dead_letters WHERE run_id = $1",
        "DELETE FROM events WHERE run_id = $1",
        "DELETE FROM attempts WHERE run_id = $1",
        "DELETE FROM artifacts WHERE run_id = $1",
        "DELETE FROM run_logs WHERE run_id = $1",
        "DELETE FROM run_log_archives WHERE run_id = $1",
        "DELETE FROM service_state WHERE run_id = $1",
        "DELETE FROM runs WHERE id = $1",
    ] {
        let stmt = tx.prepare_cached(sql).await?;
        tx.execute(&stmt, &[&id.as_str()]).await?;
    }
    Ok(())
}
