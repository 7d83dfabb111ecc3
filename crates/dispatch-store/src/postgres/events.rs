//! The event log (and the usage totals it feeds), attempts and artifacts on
//! PostgreSQL.

use deadpool_postgres::{GenericClient, Transaction};
use dispatch_core::{NewEvent, RunId, Status};
use tokio_postgres::Row;

use super::runs::not_found;
use super::{Fail, to_json};
use crate::{Artifact, Attempt, Event};

pub(super) async fn insert_event(
    tx: &Transaction<'_>,
    run: &RunId,
    event: &NewEvent,
) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO events (run_id, attempt, at, type, data) VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &run.as_str(),
            &i64::from(event.attempt),
            &event.at,
            &event.kind,
            &to_json("event data", &event.data)?,
        ],
    )
    .await?;
    Ok(())
}

/// Inserts a few events of one run in one `VALUES` statement, in the order
/// given (a run's `created` event and what was decided before it: one
/// statement, so a policy's decision costs the creation no extra one).
/// The events carry no usage: [`append_locked`] is for those.
pub(super) async fn insert_run_events(
    tx: &Transaction<'_>,
    run: &RunId,
    events: &[&NewEvent],
) -> Result<(), Fail> {
    if let [one] = events {
        return insert_event(tx, run, one).await;
    }
    let attempts: Vec<i64> = events.iter().map(|e| i64::from(e.attempt)).collect();
    let datas = events
        .iter()
        .map(|e| to_json("event data", &e.data))
        .collect::<Result<Vec<_>, _>>()?;
    let run_id = run.as_str();
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&run_id];
    let mut rows = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let at = params.len() + 1;
        rows.push(format!(
            "($1, ${at}, ${}, ${}, ${})",
            at + 1,
            at + 2,
            at + 3
        ));
        params.extend([
            &attempts[i] as &(dyn tokio_postgres::types::ToSql + Sync),
            &event.at,
            &event.kind,
            &datas[i],
        ]);
    }
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO events (run_id, attempt, at, type, data) VALUES {}",
            rows.join(", ")
        ))
        .await?;
    tx.execute(&stmt, &params).await?;
    Ok(())
}

/// Inserts events of several runs in one statement.
pub(super) async fn insert_events(
    tx: &Transaction<'_>,
    events: &[(RunId, NewEvent)],
) -> Result<(), Fail> {
    if events.is_empty() {
        return Ok(());
    }
    let (mut runs, mut attempts, mut ats, mut kinds, mut datas) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (run, event) in events {
        runs.push(run.as_str());
        attempts.push(i64::from(event.attempt));
        ats.push(event.at);
        kinds.push(event.kind.as_str());
        datas.push(to_json("event data", &event.data)?);
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO events (run_id, attempt, at, type, data) SELECT r, a, t, k, d \
             FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[]) \
             WITH ORDINALITY AS e(r, a, t, k, d, n) ORDER BY n",
        )
        .await?;
    tx.execute(&stmt, &[&runs, &attempts, &ats, &kinds, &datas])
        .await?;
    Ok(())
}

/// `NotFound` unless the run exists; otherwise holds its row lock until the
/// transaction ends, so the run's events commit in `seq` order.
pub(super) async fn lock_run(tx: &Transaction<'_>, run: &RunId) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE")
        .await?;
    match tx.query_opt(&stmt, &[&run.as_str()]).await? {
        Some(_) => Ok(()),
        None => Err(not_found(run)),
    }
}

async fn require_run<C: GenericClient>(tx: &C, run: &RunId) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached("SELECT 1 FROM runs WHERE id = $1")
        .await?;
    match tx.query_opt(&stmt, &[&run.as_str()]).await? {
        Some(_) => Ok(()),
        None => Err(not_found(run)),
    }
}

/// An empty list for a run that exists; `NotFound` for one that does not.
async fn empty_or_missing<T, C: GenericClient>(
    tx: &C,
    run: &RunId,
    found: Vec<T>,
) -> Result<Vec<T>, Fail> {
    if found.is_empty() {
        require_run(tx, run).await?;
    }
    Ok(found)
}

pub(super) async fn append(
    tx: &Transaction<'_>,
    run: &RunId,
    events: &[NewEvent],
) -> Result<(), Fail> {
    lock_run(tx, run).await?;
    append_locked(tx, run, events).await
}

/// One run's events as the columns of an `unnest`: attempts, times,
/// kinds and data.
pub(super) struct Columns<'a>(
    pub Vec<i64>,
    pub Vec<i64>,
    pub Vec<&'a str>,
    pub Vec<String>,
);

impl<'a> Columns<'a> {
    pub(super) fn of(events: &'a [NewEvent]) -> Result<Columns<'a>, Fail> {
        let mut columns = Columns(vec![], vec![], vec![], vec![]);
        for event in events {
            columns.0.push(i64::from(event.attempt));
            columns.1.push(event.at);
            columns.2.push(event.kind.as_str());
            columns.3.push(to_json("event data", &event.data)?);
        }
        Ok(columns)
    }
}

/// The usage `events` carry, summed; `None` when none carries any.
pub(super) fn usage_of(events: &[NewEvent]) -> Option<dispatch_core::event::Usage> {
    let mut usages = events.iter().filter_map(NewEvent::usage).peekable();
    usages.peek()?;
    let mut total = dispatch_core::event::Usage::default();
    usages.for_each(|u| total.add(u));
    Some(total)
}

/// Token counts as the `BIGINT` columns hold them.
pub(super) fn tokens_column(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// [`append`] for a caller that holds the run's lock ([`lock_run`]) already.
pub(super) async fn append_locked(
    tx: &Transaction<'_>,
    run: &RunId,
    events: &[NewEvent],
) -> Result<(), Fail> {
    let usage = usage_of(events);
    let Columns(attempts, ats, kinds, datas) = Columns::of(events)?;
    if !events.is_empty() {
        // One statement for the batch, numbered in the order given.
        let stmt = tx
            .prepare_cached(
                "INSERT INTO events (run_id, attempt, at, type, data) \
                 SELECT $1, a, t, k, d FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[]) \
                 WITH ORDINALITY AS e(a, t, k, d, n) ORDER BY n",
            )
            .await?;
        tx.execute(&stmt, &[&run.as_str(), &attempts, &ats, &kinds, &datas])
            .await?;
    }
    if let Some(total) = usage {
        let stmt = tx
            .prepare_cached(
                "UPDATE runs SET input_tokens = input_tokens + $2, \
                 output_tokens = output_tokens + $3, cost_usd = cost_usd + $4 WHERE id = $1 \
                 RETURNING input_tokens + output_tokens, cost_usd, policy, project",
            )
            .await?;
        let row = tx
            .query_one(
                &stmt,
                &[
                    &run.as_str(),
                    &tokens_column(total.input_tokens),
                    &tokens_column(total.output_tokens),
                    &total.cost_usd,
                ],
            )
            .await?;
        // A mark of the run's budget crossed: a notification, with the usage.
        let (tokens, cost): (i64, f64) = (row.try_get(0)?, row.try_get(1)?);
        let tokens = u64::try_from(tokens).unwrap_or(0);
        let policy: Option<String> = row.try_get(2)?;
        let before = (
            tokens.saturating_sub(total.total_tokens()),
            cost - total.cost_usd,
        );
        let at = events.last().map_or(0, |e| e.at);
        let attempt = events.last().map_or(0, |e| e.attempt);
        let project: String = row.try_get(3)?;
        let run_of = (run, project.as_str());
        super::quotas::account(
            tx,
            run_of,
            (total.total_tokens(), total.cost_usd),
            attempt,
            at,
        )
        .await?;
        super::notifications::enqueue_budget(
            tx,
            run,
            before,
            (tokens, cost),
            policy.as_deref(),
            at,
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn list<C: GenericClient>(
    tx: &C,
    run: &RunId,
    after: i64,
    limit: usize,
) -> Result<Vec<Event>, Fail> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let stmt = tx
        .prepare_cached(
            "SELECT seq, attempt, at, type, data FROM events \
             WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .await?;
    let events = tx
        .query(&stmt, &[&run.as_str(), &after, &limit])
        .await?
        .iter()
        .map(|row| event_from_row(run, row))
        .collect::<Result<Vec<_>, _>>()?;
    empty_or_missing(tx, run, events).await
}

pub(super) async fn latest<C: GenericClient>(
    tx: &C,
    run: &RunId,
    kinds: &[&str],
) -> Result<Option<Event>, Fail> {
    let stmt = tx
        .prepare_cached(
            "SELECT seq, attempt, at, type, data FROM events \
             WHERE run_id = $1 AND type = ANY($2) ORDER BY seq DESC LIMIT 1",
        )
        .await?;
    tx.query_opt(&stmt, &[&run.as_str(), &kinds])
        .await?
        .map(|row| event_from_row(run, &row))
        .transpose()
}

pub(super) fn event_from_row(run: &RunId, row: &Row) -> Result<Event, Fail> {
    let seq: i64 = row.try_get(0)?;
    let data = serde_json::from_str(row.try_get(4)?)
        .map_err(|e| Fail::Corrupt(format!("run {run}: event {seq} has unreadable data: {e}")))?;
    let attempt: i64 = row.try_get(1)?;
    Ok(Event {
        seq,
        run_id: run.clone(),
        event: NewEvent {
            kind: row.try_get(3)?,
            attempt: u32::try_from(attempt)
                .map_err(|_| Fail::Corrupt(format!("run {run}: event {seq} attempt {attempt}")))?,
            at: row.try_get(2)?,
            data,
        },
    })
}

pub(super) async fn list_attempts(tx: &Transaction<'_>, run: &RunId) -> Result<Vec<Attempt>, Fail> {
    let stmt = tx
        .prepare_cached(
            "SELECT number, started_at, ended_at, status, exit_code, error, worker FROM attempts \
             WHERE run_id = $1 ORDER BY number",
        )
        .await?;
    let mut attempts = Vec::new();
    for row in tx.query(&stmt, &[&run.as_str()]).await? {
        attempts.push(attempt_from_row(run, &row)?);
    }
    empty_or_missing(tx, run, attempts).await
}

/// Decodes `number, started_at, ended_at, status, exit_code, error, worker`.
pub(super) fn attempt_from_row(run: &RunId, row: &Row) -> Result<Attempt, Fail> {
    let status = match row.try_get::<_, Option<&str>>(3)? {
        None => None,
        Some(text) => Some(
            text.parse::<Status>()
                .map_err(|e| Fail::Corrupt(format!("run {run}: attempt status: {e}")))?,
        ),
    };
    let number: i64 = row.try_get(0)?;
    Ok(Attempt {
        number: u32::try_from(number)
            .map_err(|_| Fail::Corrupt(format!("run {run}: attempt number {number}")))?,
        started_at: row.try_get(1)?,
        ended_at: row.try_get(2)?,
        status,
        exit_code: row.try_get(4)?,
        error: row.try_get(5)?,
        worker: row.try_get(6)?,
    })
}

pub(super) async fn add_artifacts(
    tx: &Transaction<'_>,
    run: &RunId,
    artifacts: &[Artifact],
) -> Result<(), Fail> {
    require_run(tx, run).await?;
    let stmt = tx
        .prepare_cached(
            "INSERT INTO artifacts (run_id, name, sha256, size) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (run_id, name) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size",
        )
        .await?;
    for artifact in artifacts {
        let size = i64::try_from(artifact.size).unwrap_or(i64::MAX);
        tx.execute(
            &stmt,
            &[&run.as_str(), &artifact.name, &artifact.sha256, &size],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn list_artifacts(
    tx: &Transaction<'_>,
    run: &RunId,
) -> Result<Vec<Artifact>, Fail> {
    let stmt = tx
        .prepare_cached("SELECT name, sha256, size FROM artifacts WHERE run_id = $1 ORDER BY name")
        .await?;
    let mut artifacts = Vec::new();
    for row in tx.query(&stmt, &[&run.as_str()]).await? {
        let size: i64 = row.try_get(2)?;
        artifacts.push(Artifact {
            name: row.try_get(0)?,
            sha256: row.try_get(1)?,
            size: u64::try_from(size)
                .map_err(|_| Fail::Corrupt(format!("run {run}: artifact size {size}")))?,
        });
    }
    empty_or_missing(tx, run, artifacts).await
}

pub(super) async fn artifact_in_use<C: deadpool_postgres::GenericClient>(
    client: &C,
    sha256: &str,
) -> Result<bool, Fail> {
    let stmt = client
        .prepare_cached("SELECT 1 FROM artifacts WHERE sha256 = $1 LIMIT 1")
        .await?;
    Ok(client.query_opt(&stmt, &[&sha256]).await?.is_some())
}
