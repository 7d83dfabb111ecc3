//! Quotas per project on PostgreSQL (see [`crate::QuotaStore`]). A claimer
//! locks the `max_live_runs` rows of the projects it is about to claim runs
//! of (`FOR UPDATE`, in project order, so lockers never deadlock) and counts
//! their live runs after the lock: claims of one capped project serialize.

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Transaction};
use dispatch_core::quota::{OnHard, Period, Quota, QuotaLimit, period_of};
use dispatch_core::{RunId, Ts};
use tokio_postgres::Row;

use super::runs::notify_queue;
use super::{Fail, PgStore};
use crate::StoreResult;
use crate::limits::SLOT_HOLDING;
use crate::quotas::{
    QuotaStore, QuotaUse, crossed, fit, limit_of, limited, on_hard_of, periods_at, sort,
};

fn quota(row: &Row) -> Result<Quota, Fail> {
    let name: String = row.try_get(1)?;
    let on_hard: String = row.try_get(4)?;
    Ok(Quota {
        project: row.try_get(0)?,
        limit: limit_of(&name).map_err(Fail::Corrupt)?,
        value: row.try_get(2)?,
        soft_pct: u32::try_from(row.try_get::<_, i64>(3)?).unwrap_or(100),
        on_hard: on_hard_of(&on_hard).map_err(Fail::Corrupt)?,
        updated_at: row.try_get(5)?,
    })
}

/// Whether any project has a quota: a claim without asks nothing of them.
/// (A quota set while a claim runs is the same as one set just after it.)
pub(super) async fn any(tx: &Transaction<'_>) -> Result<bool, Fail> {
    let stmt = tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM project_quotas)")
        .await?;
    Ok(tx.query_one(&stmt, &[]).await?.try_get(0)?)
}

/// Of `ids` (queued runs this transaction locked, in claim order), those
/// that fit their project's live-run cap, counted under the caps' locks.
pub(super) async fn admitted(tx: &Transaction<'_>, ids: &[String]) -> Result<Vec<String>, Fail> {
    let stmt = tx
        .prepare_cached(
            "SELECT r.id, r.project, EXISTS (SELECT 1 FROM project_quotas q \
             WHERE q.project = r.project AND q.name = 'max_live_runs') \
             FROM runs r WHERE r.id = ANY($1::text[])",
        )
        .await?;
    let mut candidates = Vec::with_capacity(ids.len());
    let mut capped: Vec<String> = Vec::new();
    for row in tx.query(&stmt, &[&ids]).await? {
        let (id, project): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        if row.try_get::<_, bool>(2)? {
            capped.push(project.clone());
        }
        candidates.push((id, project));
    }
    if capped.is_empty() {
        return Ok(ids.to_vec());
    }
    candidates.sort_by_key(|(id, _)| ids.iter().position(|i| i == id));
    capped.sort();
    capped.dedup();
    let caps = lock_caps(tx, &capped).await?;
    Ok(fit(&candidates, &caps))
}

/// Locks the live-run caps of `projects` (sorted, deduplicated) and answers
/// each one's cap and live runs, counted after the lock.
async fn lock_caps(
    tx: &Transaction<'_>,
    projects: &[String],
) -> Result<Vec<(String, f64, i64)>, Fail> {
    let lock = tx
        .prepare_cached(
            "SELECT project FROM project_quotas WHERE name = 'max_live_runs' \
             AND project = ANY($1::text[]) ORDER BY project FOR UPDATE",
        )
        .await?;
    tx.query(&lock, &[&projects]).await?;
    // A new statement: it sees every claim committed before the lock.
    let count = tx
        .prepare_cached(&format!(
            "SELECT q.project, q.value, (SELECT count(*) FROM runs o \
             WHERE o.project = q.project AND o.status IN {SLOT_HOLDING}) \
             FROM project_quotas q WHERE q.name = 'max_live_runs' AND q.project = ANY($1::text[])"
        ))
        .await?;
    tx.query(&count, &[&projects])
        .await?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
        .collect()
}

/// `Ok` when queued run `id` fits its project's live-run cap now and no
/// budget of the project is at its hard limit at `at`.
pub(super) async fn check_admitted(tx: &Transaction<'_>, id: &RunId, at: Ts) -> Result<(), Fail> {
    let ids = vec![id.as_str().to_string()];
    if admitted(tx, &ids).await?.is_empty() {
        let stmt = tx
            .prepare_cached(&format!(
                "SELECT r.project, q.value, (SELECT count(*) FROM runs o \
                 WHERE o.project = r.project AND o.status IN {SLOT_HOLDING}) \
                 FROM runs r JOIN project_quotas q ON q.project = r.project \
                 AND q.name = 'max_live_runs' WHERE r.id = $1"
            ))
            .await?;
        let row = tx.query_one(&stmt, &[&id.as_str()]).await?;
        let project: String = row.try_get(0)?;
        return Err(Fail::Store(limited(
            id,
            &project,
            row.try_get(1)?,
            row.try_get(2)?,
        )));
    }
    let project = project_of(tx, id).await?;
    let over = use_of(tx, &[project], at)
        .await?
        .into_iter()
        .find(|u| u.quota.limit.period().is_some() && u.hard_reached());
    match over {
        Some(u) => Err(Fail::Store(u.waiting(id))),
        None => Ok(()),
    }
}

async fn project_of(tx: &Transaction<'_>, id: &RunId) -> Result<String, Fail> {
    let stmt = tx
        .prepare_cached("SELECT project FROM runs WHERE id = $1")
        .await?;
    Ok(tx.query_one(&stmt, &[&id.as_str()]).await?.try_get(0)?)
}

/// `Ok` unless `project` is over a hard limit whose action is `refuse`
/// (then the refusal naming it): what a new run of the project checks.
pub(super) async fn refuse_new(tx: &Transaction<'_>, project: &str, at: Ts) -> Result<(), Fail> {
    let over = use_of(tx, &[project.to_string()], at)
        .await?
        .into_iter()
        .find(|u| u.quota.on_hard == OnHard::Refuse && u.hard_reached());
    match over {
        Some(u) => Err(Fail::Store(u.refusal())),
        None => Ok(()),
    }
}

/// Whether `project` has any quota (a run made held is then made queued,
/// and claimed at once if the quota allows).
pub(super) async fn has_quota(tx: &Transaction<'_>, project: &str) -> Result<bool, Fail> {
    let stmt = tx
        .prepare_cached("SELECT 1 FROM project_quotas WHERE project = $1 LIMIT 1")
        .await?;
    Ok(tx.query_opt(&stmt, &[&project]).await?.is_some())
}

/// Creates a run without extras: as any when its project has no quota;
/// otherwise as [`super::reliability::create_with`] does (refused by a
/// `refuse` limit reached; made queued, not held, unless the quota lets it
/// start now).
pub(super) async fn create(tx: &Transaction<'_>, new: &crate::NewRun) -> Result<crate::Run, Fail> {
    match has_quota(tx, &new.project).await? {
        false => super::runs::create(tx, new).await,
        true => super::reliability::create_with(tx, new, &crate::RunExtras::default(), false)
            .await
            .map(|c| c.run().clone()),
    }
}

/// Adds a usage record of run `run` (`tokens`, `usd`, billed at `at`) to
/// its project's budget periods when the project has budgets; a mark
/// crossed is a notification and an event of the run. The period rows are
/// updated in place (row locks): concurrent runs of a project add up.
pub(super) async fn account(
    tx: &Transaction<'_>,
    (run, project): (&RunId, &str),
    (tokens, usd): (u64, f64),
    attempt: u32,
    at: Ts,
) -> Result<(), Fail> {
    let project = project.to_string();
    let budgets: Vec<Quota> = list(tx, std::slice::from_ref(&project))
        .await?
        .into_iter()
        .filter(|q| q.limit.period().is_some())
        .collect();
    if budgets.is_empty() {
        return Ok(());
    }
    let (day, month) = periods_at(at);
    let add = tx
        .prepare_cached(
            "INSERT INTO quota_usage (project, period, tokens, usd) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (project, period) DO UPDATE SET \
             tokens = quota_usage.tokens + EXCLUDED.tokens, usd = quota_usage.usd + EXCLUDED.usd \
             RETURNING tokens, usd",
        )
        .await?;
    let n = i64::try_from(tokens).unwrap_or(i64::MAX);
    let mut after = Vec::new();
    for period in [&day, &month] {
        let row = tx.query_one(&add, &[&project, period, &n, &usd]).await?;
        after.push((row.try_get::<_, i64>(0)?, row.try_get::<_, f64>(1)?));
    }
    let crossed = crossed(&budgets, |limit| {
        let (i, name) = match limit.period()? {
            Period::Day => (0, &day),
            Period::Month => (1, &month),
        };
        let (t, u) = after[i];
        Some(match limit.is_usd() {
            true => (u - usd, u, name.clone()),
            false => ((t as f64) - (tokens as f64), t as f64, name.clone()),
        })
    });
    for c in crossed {
        super::notifications::enqueue(tx, &[c.notification(run, at)]).await?;
        super::events::insert_event(tx, run, &c.event(attempt, at)).await?;
    }
    Ok(())
}

/// Sets `project`'s usage in the periods holding `now` from its `usage`
/// events (what `dispatch usage` sums): the start of its accounting.
async fn seed(tx: &Transaction<'_>, project: &str, now: Ts) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO quota_usage (project, period, tokens, usd) \
             SELECT $1, $2, COALESCE(SUM(COALESCE((d->>'input_tokens')::bigint, 0) \
             + COALESCE((d->>'output_tokens')::bigint, 0)), 0)::bigint, \
             COALESCE(SUM(COALESCE((d->>'cost_usd')::float8, 0)), 0)::float8 \
             FROM events e CROSS JOIN LATERAL (SELECT e.data::jsonb AS d) AS j \
             JOIN runs r ON r.id = e.run_id \
             WHERE e.type = 'usage' AND e.at >= $3 AND e.at < $4 AND r.project = $1 \
             ON CONFLICT (project, period) DO UPDATE SET tokens = EXCLUDED.tokens, usd = EXCLUDED.usd",
        )
        .await?;
    for period in [Period::Day, Period::Month] {
        let (start, end, name) = period_of(period, now);
        tx.execute(&stmt, &[&project, &name, &start, &end]).await?;
    }
    Ok(())
}

/// The limits of `projects` with what is used of each at `now`.
async fn use_of<C: GenericClient>(
    client: &C,
    projects: &[String],
    now: Ts,
) -> Result<Vec<QuotaUse>, Fail> {
    let (day, month) = periods_at(now);
    let used = client
        .prepare_cached("SELECT tokens, usd FROM quota_usage WHERE project = $1 AND period = $2")
        .await?;
    let mut out = Vec::new();
    for quota in list(client, projects).await? {
        let (used, period) = match quota.limit.period() {
            None => (f64::from(live(client, &quota.project).await?), None),
            Some(p) => {
                let name = match p {
                    Period::Day => &day,
                    Period::Month => &month,
                };
                let (t, u) = match client.query_opt(&used, &[&quota.project, name]).await? {
                    Some(row) => (row.try_get::<_, i64>(0)?, row.try_get::<_, f64>(1)?),
                    None => (0, 0.0),
                };
                let v = if quota.limit.is_usd() { u } else { t as f64 };
                (v, Some(name.clone()))
            }
        };
        out.push(QuotaUse {
            quota,
            used,
            period,
        });
    }
    Ok(out)
}

async fn set(tx: &Transaction<'_>, quotas: &[Quota]) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO project_quotas (project, name, value, soft_pct, on_hard, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (project, name) DO UPDATE SET \
             value = EXCLUDED.value, soft_pct = EXCLUDED.soft_pct, \
             on_hard = EXCLUDED.on_hard, updated_at = EXCLUDED.updated_at",
        )
        .await?;
    for q in quotas {
        tx.execute(
            &stmt,
            &[
                &q.project,
                &q.limit.as_str(),
                &q.value,
                &i64::from(q.soft_pct),
                &q.on_hard.as_str(),
                &q.updated_at,
            ],
        )
        .await?;
    }
    for q in quotas.iter().filter(|q| q.limit.period().is_some()) {
        seed(tx, &q.project, q.updated_at).await?;
    }
    notify_queue(tx).await
}

async fn remove(
    tx: &Transaction<'_>,
    project: &str,
    limit: Option<QuotaLimit>,
) -> Result<u64, Fail> {
    let name = limit.map(QuotaLimit::as_str);
    let stmt = tx
        .prepare_cached(
            "DELETE FROM project_quotas WHERE project = $1 AND ($2::text IS NULL OR name = $2)",
        )
        .await?;
    let n = tx.execute(&stmt, &[&project, &name]).await?;
    notify_queue(tx).await?;
    Ok(n)
}

async fn list<C: GenericClient>(client: &C, projects: &[String]) -> Result<Vec<Quota>, Fail> {
    let stmt = client
        .prepare_cached(
            "SELECT project, name, value, soft_pct, on_hard, updated_at FROM project_quotas \
             WHERE cardinality($1::text[]) = 0 OR project = ANY($1::text[])",
        )
        .await?;
    let mut found = client
        .query(&stmt, &[&projects])
        .await?
        .iter()
        .map(quota)
        .collect::<Result<Vec<_>, _>>()?;
    sort(&mut found);
    Ok(found)
}

async fn live<C: GenericClient>(client: &C, project: &str) -> Result<u32, Fail> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT count(*) FROM runs WHERE project = $1 AND status IN {SLOT_HOLDING}"
        ))
        .await?;
    let n: i64 = client.query_one(&stmt, &[&project]).await?.try_get(0)?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

#[async_trait]
impl QuotaStore for PgStore {
    async fn set_quotas(&self, quotas: &[Quota]) -> StoreResult<()> {
        in_tx!(self, |tx| set(&tx, quotas))
    }

    async fn remove_quotas(&self, project: &str, limit: Option<QuotaLimit>) -> StoreResult<u64> {
        in_tx!(self, |tx| remove(&tx, project, limit))
    }

    async fn list_quotas(&self, projects: &[String]) -> StoreResult<Vec<Quota>> {
        read!(self, |client| list(&client, projects))
    }

    async fn live_runs(&self, project: &str) -> StoreResult<u32> {
        read!(self, |client| live(&client, project))
    }

    async fn quota_use(&self, projects: &[String], now: Ts) -> StoreResult<Vec<QuotaUse>> {
        read!(self, |client| use_of(&client, projects, now))
    }
}
