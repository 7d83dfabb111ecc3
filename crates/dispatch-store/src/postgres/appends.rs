//! The event appends of many runs a worker holds, in one statement (and one
//! commit) instead of one each (issue #38).
//!
//! A native round appends its events several times (the model call, its
//! usage, the tool call); at 1,000 concurrent runs those single-run
//! statements were a third of PostgreSQL's statements and most of its
//! time: each one planned, started, run and committed (a WAL flush) for a
//! few rows. A worker hands whatever appends piled up while its previous
//! batch was in flight to [`fenced_append_many`], which decides each run's
//! append exactly as [`super::one_statement`] does for one:
//!
//! - its CTE locks every run of the batch (`FOR UPDATE`, in the order of
//!   their ids, as the batched state writes do), so each run's appends
//!   still commit one after another, and a fence moved on meanwhile is seen;
//! - a run's events are written only under its holder's token and a live
//!   lease, in the order given, and its usage (summed per run) is added to
//!   its totals in the same statement when neither a budget of its policy
//!   nor a quota of its project counts it;
//! - what the statement cannot decide (usage that a budget or a quota
//!   counts) is answered [`Answer::Undecided`] with nothing written, for
//!   the transaction of [`super::queue::fenced_append`].

use deadpool_postgres::GenericClient;
use dispatch_core::RunId;

use super::Fail;
use super::events::{tokens_column, usage_of};
use super::runs::not_found;
use super::to_json;
use crate::{HeldEvents, HeldLog, QueueStore, RunLogStore, StoreError, StoreResult};

/// What the batch's statement did with one run's append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Answer {
    Saved,
    /// Not the run's current token, or its lease is gone: nothing written.
    Fenced,
    /// No such run.
    NotFound,
    /// Usage that a budget or a quota counts: nothing written here.
    Undecided,
}

/// Appends each held run's events under its fence (see the module); one
/// answer per run of `batch`, in order.
pub(super) async fn fenced_append_many<C: GenericClient>(
    client: &C,
    batch: &[HeldEvents],
) -> Result<Vec<Answer>, Fail> {
    let (mut runs, mut fences, mut usage) = (vec![], vec![], vec![]);
    let (mut tin, mut tout, mut cost) = (vec![], vec![], vec![]);
    let (mut jobs, mut attempts, mut ats) = (vec![], vec![], vec![]);
    let (mut kinds, mut datas) = (vec![], vec![]);
    for (job, held) in (1i64..).zip(batch) {
        runs.push(held.id.as_str());
        fences.push(held.fence);
        let total = usage_of(&held.events);
        usage.push(total.is_some());
        let total = total.unwrap_or_default();
        tin.push(tokens_column(total.input_tokens));
        tout.push(tokens_column(total.output_tokens));
        cost.push(total.cost_usd);
        for event in &held.events {
            jobs.push(job);
            attempts.push(i64::from(event.attempt));
            ats.push(event.at);
            kinds.push(event.kind.as_str());
            datas.push(to_json("event data", &event.data)?);
        }
    }
    // A policy naming a budget (serialized only when set) or a project
    // quota other than its live-run cap leaves a run's usage undecided, as
    // in `one_statement::fenced_append_usage`.
    let stmt = client
        .prepare_cached(
            "WITH j AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bool[], \
                          $4::bigint[], $5::bigint[], $6::float8[]) \
                        WITH ORDINALITY AS j(run, fence, usage, tin, tout, cost, job)), \
             f AS (SELECT r.id, r.fence, r.lease_owner IS NOT NULL AS leased, r.policy, r.project \
                   FROM runs r WHERE r.id = ANY($1::text[]) ORDER BY r.id FOR UPDATE OF r), \
             ok AS (SELECT j.job, j.run, j.usage, j.tin, j.tout, j.cost FROM j JOIN f ON f.id = j.run \
                    WHERE f.fence = j.fence AND f.leased \
                    AND (NOT j.usage OR ( \
                         (f.policy IS NULL OR (strpos(f.policy, '\"max_tokens\"') = 0 \
                          AND strpos(f.policy, '\"max_cost_usd\"') = 0)) \
                         AND NOT EXISTS (SELECT 1 FROM project_quotas q \
                                         WHERE q.project = f.project \
                                         AND q.name <> 'max_live_runs')))), \
             ins AS (INSERT INTO events (run_id, attempt, at, type, data) \
                     SELECT ok.run, e.a, e.t, e.k, e.d \
                     FROM unnest($7::bigint[], $8::bigint[], $9::bigint[], $10::text[], $11::text[]) \
                     WITH ORDINALITY AS e(job, a, t, k, d, n) \
                     JOIN ok ON ok.job = e.job ORDER BY e.n RETURNING 1), \
             upd AS (UPDATE runs SET input_tokens = runs.input_tokens + s.tin, \
                     output_tokens = runs.output_tokens + s.tout, cost_usd = runs.cost_usd + s.cost \
                     FROM (SELECT run, sum(tin)::bigint AS tin, sum(tout)::bigint AS tout, \
                           sum(cost) AS cost FROM ok WHERE usage GROUP BY run) s \
                     WHERE runs.id = s.run RETURNING 1) \
             SELECT j.job, f.fence, f.leased, ok.job IS NOT NULL \
             FROM j LEFT JOIN f ON f.id = j.run LEFT JOIN ok ON ok.job = j.job ORDER BY j.job",
        )
        .await?;
    let rows = client
        .query(
            &stmt,
            &[
                &runs, &fences, &usage, &tin, &tout, &cost, &jobs, &attempts, &ats, &kinds, &datas,
            ],
        )
        .await?;
    let mut answers = vec![Answer::NotFound; batch.len()];
    for row in rows {
        let job: i64 = row.try_get(0)?;
        let fence: Option<i64> = row.try_get(1)?;
        let leased: Option<bool> = row.try_get(2)?;
        let saved: bool = row.try_get(3)?;
        let Some(i) = usize::try_from(job - 1).ok().filter(|i| *i < batch.len()) else {
            return Err(Fail::Corrupt(format!(
                "a batched append answered for job {job}"
            )));
        };
        answers[i] = match (fence, leased) {
            (None, _) => Answer::NotFound,
            _ if saved => Answer::Saved,
            (Some(f), Some(true)) if f == batch[i].fence => Answer::Undecided,
            _ => Answer::Fenced,
        };
    }
    Ok(answers)
}

impl super::PgStore {
    /// A batch's answer for one run's append, as the store answers it;
    /// `None` when undecided.
    fn decided(&self, answer: Answer, id: &RunId, fence: i64) -> Option<StoreResult<()>> {
        match answer {
            Answer::Saved => Some(Ok(())),
            Answer::Fenced => Some(Err(StoreError::Fenced {
                id: id.clone(),
                fence,
            })),
            Answer::NotFound => Some(Err(self.error(not_found(id)))),
            Answer::Undecided => None,
        }
    }

    /// [`crate::QueueStore::fenced_append_events_many`]: the batch in one
    /// statement, then each undecided append in its own transaction.
    pub(super) async fn append_events_many(
        &self,
        batch: &[HeldEvents],
    ) -> StoreResult<Vec<StoreResult<()>>> {
        let answers = read!(self, |client| fenced_append_many(&client, batch))?;
        let mut out = Vec::with_capacity(batch.len());
        for (held, answer) in batch.iter().zip(answers) {
            out.push(match self.decided(answer, &held.id, held.fence) {
                Some(answer) => answer,
                None => {
                    self.fenced_append_events(&held.id, held.fence, &held.events)
                        .await
                }
            });
        }
        Ok(out)
    }

    /// [`RunLogStore::append_logs_many`]: the batch in one statement, then
    /// each undecided chunk in its own transaction.
    pub(super) async fn append_logs_many_here(
        &self,
        batch: &[HeldLog],
    ) -> StoreResult<Vec<StoreResult<()>>> {
        let answers = read!(self, |client| append_logs_many(&client, batch))?;
        let mut out = Vec::with_capacity(batch.len());
        for (held, answer) in batch.iter().zip(answers) {
            out.push(match self.decided(answer, &held.id, held.fence) {
                Some(answer) => answer,
                None => {
                    self.append_log(&held.id, held.fence, held.offset, &held.bytes)
                        .await
                }
            });
        }
        Ok(out)
    }
}

/// Appends each held run's chunk at its offset under its fence, when the
/// stored log ends there (as [`super::one_statement::append_log`] does for
/// one); one answer per chunk of `batch`, in order. What it cannot decide
/// (the log does not end at the chunk's offset: a retry whose first try
/// committed, a wrong guess, a gap) is [`Answer::Undecided`], with nothing
/// written, for the transaction of [`crate::RunLogStore::append_log`].
pub(super) async fn append_logs_many<C: GenericClient>(
    client: &C,
    batch: &[HeldLog],
) -> Result<Vec<Answer>, Fail> {
    let mut runs = Vec::with_capacity(batch.len());
    let (mut fences, mut offsets, mut chunks) = (vec![], vec![], vec![]);
    for held in batch {
        runs.push(held.id.as_str());
        fences.push(held.fence);
        offsets.push(i64::try_from(held.offset).map_err(|_| {
            Fail::Encode(format!(
                "log offset {} of run {} is out of range",
                held.offset, held.id
            ))
        })?);
        chunks.push(held.bytes.as_slice());
    }
    let stmt = client
        .prepare_cached(
            "WITH j AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[]) \
                        WITH ORDINALITY AS j(run, fence, pos, data, job)), \
             f AS (SELECT r.id, r.fence FROM runs r WHERE r.id = ANY($1::text[]) \
                   ORDER BY r.id FOR UPDATE OF r), \
             len AS (SELECT f.id, COALESCE( \
                 (SELECT l.pos + octet_length(l.data)::bigint FROM run_logs l \
                  WHERE l.run_id = f.id ORDER BY l.pos DESC LIMIT 1), \
                 (SELECT a.size FROM run_log_archives a WHERE a.run_id = f.id), 0) AS n FROM f), \
             ins AS (INSERT INTO run_logs (run_id, pos, data) \
                     SELECT j.run, j.pos, j.data FROM j JOIN f ON f.id = j.run \
                     JOIN len ON len.id = j.run \
                     WHERE f.fence = j.fence AND len.n = j.pos AND octet_length(j.data) > 0 \
                     ON CONFLICT DO NOTHING RETURNING run_id, pos) \
             SELECT j.job, f.fence, len.n, octet_length(j.data), \
                    EXISTS (SELECT 1 FROM ins WHERE ins.run_id = j.run AND ins.pos = j.pos) \
             FROM j LEFT JOIN f ON f.id = j.run LEFT JOIN len ON len.id = j.run ORDER BY j.job",
        )
        .await?;
    let rows = client
        .query(&stmt, &[&runs, &fences, &offsets, &chunks])
        .await?;
    let mut answers = vec![Answer::NotFound; batch.len()];
    for row in rows {
        let job: i64 = row.try_get(0)?;
        let fence: Option<i64> = row.try_get(1)?;
        let length: Option<i64> = row.try_get(2)?;
        let size: i32 = row.try_get(3)?;
        let inserted: bool = row.try_get(4)?;
        let i = job_index(job, batch.len())?;
        answers[i] = match fence {
            None => Answer::NotFound,
            Some(f) if f != batch[i].fence => Answer::Fenced,
            // Written; or nothing to write where the log ends.
            _ if inserted || (size == 0 && length == Some(offsets[i])) => Answer::Saved,
            _ => Answer::Undecided,
        };
    }
    Ok(answers)
}

/// The index in its batch of the 1-based `job` a statement answered for.
fn job_index(job: i64, len: usize) -> Result<usize, Fail> {
    usize::try_from(job - 1)
        .ok()
        .filter(|i| *i < len)
        .ok_or_else(|| Fail::Corrupt(format!("a batched append answered for job {job}")))
}
