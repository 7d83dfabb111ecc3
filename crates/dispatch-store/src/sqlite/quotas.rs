//! Quotas per project on SQLite (see [`crate::QuotaStore`]): every claim is
//! one `BEGIN IMMEDIATE` transaction, so the database's single writer lock
//! serializes the counts of a project's live runs.

use async_trait::async_trait;
use dispatch_core::quota::{OnHard, Period, Quota, QuotaLimit, period_of};
use dispatch_core::{RunId, Ts};
use rusqlite::{OptionalExtension, Row, Transaction, params};

use super::{Fail, SqliteStore};
use crate::StoreResult;
use crate::limits::SLOT_HOLDING;
use crate::quotas::LIVE_RUNS;
use crate::quotas::{
    QuotaStore, QuotaUse, crossed, fit, limit_of, limited, on_hard_of, periods_at, sort,
};

fn quota(row: &Row<'_>) -> rusqlite::Result<(String, String, f64, i64, String, i64)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

/// Whether any project has a quota: a claim without asks nothing of them.
pub(super) fn any(tx: &Transaction<'_>) -> Result<bool, Fail> {
    Ok(tx
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM project_quotas)")?
        .query_row([], |row| row.get(0))?)
}

/// Of `ids` (queued runs, in claim order), those that fit their project's
/// live-run cap.
pub(super) fn admitted(tx: &Transaction<'_>, ids: &[String]) -> Result<Vec<String>, Fail> {
    // Without any live-run cap (the common case) every run fits: one
    // statement for the claim, not one per run claimed.
    let any_cap: bool = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM project_quotas WHERE name = 'max_live_runs')",
        )?
        .query_row([], |row| row.get(0))?;
    if !any_cap {
        return Ok(ids.to_vec());
    }
    let mut candidates = Vec::with_capacity(ids.len());
    let mut caps: Vec<(String, f64, i64)> = Vec::new();
    let mut project_of = tx.prepare_cached("SELECT project FROM runs WHERE id = ?1")?;
    let mut cap_of = tx.prepare_cached(&format!(
        "SELECT q.value, (SELECT count(*) FROM {LIVE_RUNS} WHERE o.project = q.project \
         AND o.status IN {SLOT_HOLDING}) FROM project_quotas q \
         WHERE q.project = ?1 AND q.name = 'max_live_runs'"
    ))?;
    for id in ids {
        let project: String = project_of.query_row([id], |row| row.get(0))?;
        if !caps.iter().any(|(p, _, _)| *p == project) {
            let cap: Option<(f64, i64)> = cap_of
                .query_row([&project], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            if let Some((cap, live)) = cap {
                caps.push((project.clone(), cap, live));
            }
        }
        candidates.push((id.clone(), project));
    }
    Ok(fit(&candidates, &caps))
}

/// `Ok` when queued run `id` fits its project's live-run cap now and no
/// budget of the project is at its hard limit at `at`.
pub(super) fn check_admitted(tx: &Transaction<'_>, id: &RunId, at: Ts) -> Result<(), Fail> {
    // Most projects have no quota: one statement says so, and nothing
    // below is compiled (each helper's connection is new).
    let (project, quotas): (String, bool) = tx
        .prepare_cached(
            "SELECT r.project, EXISTS (SELECT 1 FROM project_quotas q \
             WHERE q.project = r.project) FROM runs r WHERE r.id = ?1",
        )?
        .query_row([id.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))?;
    if !quotas {
        return Ok(());
    }
    let found: Option<(f64, i64)> = tx
        .prepare_cached(&format!(
            "SELECT q.value, (SELECT count(*) FROM {LIVE_RUNS} \
             WHERE o.project = ?1 AND o.status IN {SLOT_HOLDING}) \
             FROM project_quotas q WHERE q.project = ?1 AND q.name = 'max_live_runs'"
        ))?
        .query_row([&project], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    if let Some((cap, live)) = found
        && live as f64 >= cap
    {
        return Err(Fail::Store(limited(id, &project, cap, live)));
    }
    let over = use_of(tx, &[project], at)?
        .into_iter()
        .find(|u| u.quota.limit.period().is_some() && u.hard_reached());
    match over {
        Some(u) => Err(Fail::Store(u.waiting(id))),
        None => Ok(()),
    }
}

/// `Ok` unless `project` is over a hard limit whose action is `refuse`
/// (then the refusal naming it): what a new run of the project checks.
pub(super) fn refuse_new(tx: &Transaction<'_>, project: &str, at: Ts) -> Result<(), Fail> {
    let over = use_of(tx, &[project.to_string()], at)?
        .into_iter()
        .find(|u| u.quota.on_hard == OnHard::Refuse && u.hard_reached());
    match over {
        Some(u) => Err(Fail::Store(u.refusal())),
        None => Ok(()),
    }
}

/// Whether `project` has any quota (a run made held is then made queued,
/// and claimed at once if the quota allows).
pub(super) fn has_quota(tx: &Transaction<'_>, project: &str) -> Result<bool, Fail> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM project_quotas WHERE project = ?1 LIMIT 1")?
        .query_row([project], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Creates a run without extras: as any when its project has no quota;
/// otherwise as [`super::reliability::create_with`] does (refused by a
/// `refuse` limit reached; made queued, not held, unless the quota lets it
/// start now).
pub(super) fn create(tx: &Transaction<'_>, new: &crate::NewRun) -> Result<crate::Run, Fail> {
    match has_quota(tx, &new.project)? {
        false => super::runs::create(tx, new),
        true => super::reliability::create_with(tx, new, &crate::RunExtras::default(), false)
            .map(|c| c.run().clone()),
    }
}

/// Adds a usage record of run `run` (`tokens`, `usd`, billed at `at`) to
/// its project's budget periods when the project has budgets; a mark
/// crossed is a notification and an event of the run.
pub(super) fn account(
    tx: &Transaction<'_>,
    run: &RunId,
    (tokens, usd): (u64, f64),
    attempt: u32,
    at: Ts,
) -> Result<(), Fail> {
    let project: String = tx
        .prepare_cached("SELECT project FROM runs WHERE id = ?1")?
        .query_row([run.as_str()], |row| row.get(0))?;
    let budgets: Vec<Quota> = list(tx, std::slice::from_ref(&project))?
        .into_iter()
        .filter(|q| q.limit.period().is_some())
        .collect();
    if budgets.is_empty() {
        return Ok(());
    }
    let (day, month) = periods_at(at);
    let mut add = tx.prepare_cached(
        "INSERT INTO quota_usage (project, period, tokens, usd) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (project, period) DO UPDATE SET tokens = tokens + excluded.tokens, \
         usd = usd + excluded.usd RETURNING tokens, usd",
    )?;
    let mut after = Vec::new();
    for period in [&day, &month] {
        let sums: (i64, f64) = add.query_row(
            params![
                project,
                period,
                i64::try_from(tokens).unwrap_or(i64::MAX),
                usd
            ],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        after.push(sums);
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
        super::notifications::enqueue(tx, &c.notification(run, at))?;
        super::events::insert_event(tx, run, &c.event(attempt, at))?;
    }
    Ok(())
}

/// Sets `project`'s usage in the periods holding `now` from its `usage`
/// events (what `dispatch usage` sums): the start of its accounting.
fn seed(tx: &Transaction<'_>, project: &str, now: Ts) -> Result<(), Fail> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO quota_usage (project, period, tokens, usd) \
         SELECT ?1, ?2, COALESCE(SUM(COALESCE(json_extract(e.data, '$.input_tokens'), 0) \
         + COALESCE(json_extract(e.data, '$.output_tokens'), 0)), 0), \
         COALESCE(SUM(COALESCE(json_extract(e.data, '$.cost_usd'), 0.0)), 0.0) \
         FROM events e JOIN runs r ON r.id = e.run_id \
         WHERE e.type = 'usage' AND e.at >= ?3 AND e.at < ?4 AND r.project = ?1 AND true \
         ON CONFLICT (project, period) DO UPDATE SET tokens = excluded.tokens, usd = excluded.usd",
    )?;
    for period in [Period::Day, Period::Month] {
        let (start, end, name) = period_of(period, now);
        stmt.execute(params![project, name, start, end])?;
    }
    Ok(())
}

/// The limits of `projects` with what is used of each at `now`.
fn use_of(tx: &Transaction<'_>, projects: &[String], now: Ts) -> Result<Vec<QuotaUse>, Fail> {
    let (day, month) = periods_at(now);
    let mut out = Vec::new();
    for quota in list(tx, projects)? {
        let (used, period) = match quota.limit.period() {
            None => (f64::from(live(tx, &quota.project)?), None),
            Some(p) => {
                let name = match p {
                    Period::Day => &day,
                    Period::Month => &month,
                };
                // Compiled only for a budget (each helper's connection is new).
                let (t, u): (i64, f64) = tx
                    .prepare_cached(
                        "SELECT tokens, usd FROM quota_usage WHERE project = ?1 AND period = ?2",
                    )?
                    .query_row(params![quota.project, name], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })
                    .optional()?
                    .unwrap_or((0, 0.0));
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

fn set(tx: &Transaction<'_>, quotas: &[Quota]) -> Result<(), Fail> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO project_quotas (project, name, value, soft_pct, on_hard, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (project, name) DO UPDATE SET \
         value = excluded.value, soft_pct = excluded.soft_pct, \
         on_hard = excluded.on_hard, updated_at = excluded.updated_at",
    )?;
    for q in quotas {
        stmt.execute(params![
            q.project,
            q.limit.as_str(),
            q.value,
            q.soft_pct,
            q.on_hard.as_str(),
            q.updated_at
        ])?;
    }
    drop(stmt);
    for q in quotas.iter().filter(|q| q.limit.period().is_some()) {
        seed(tx, &q.project, q.updated_at)?;
    }
    Ok(())
}

fn remove(tx: &Transaction<'_>, project: &str, limit: Option<QuotaLimit>) -> Result<u64, Fail> {
    let n = tx
        .prepare_cached(
            "DELETE FROM project_quotas WHERE project = ?1 AND (?2 IS NULL OR name = ?2)",
        )?
        .execute(params![project, limit.map(QuotaLimit::as_str)])?;
    Ok(n as u64)
}

fn list(tx: &Transaction<'_>, projects: &[String]) -> Result<Vec<Quota>, Fail> {
    let rows = tx
        .prepare_cached(
            "SELECT project, name, value, soft_pct, on_hard, updated_at FROM project_quotas \
             WHERE ?1 = '[]' OR project IN (SELECT value FROM json_each(?1))",
        )?
        .query_map([super::to_json("projects", &projects)?], quota)?
        .collect::<Result<Vec<_>, _>>()?;
    let mut found = rows
        .into_iter()
        .map(|(project, name, value, soft, on_hard, updated_at)| {
            Ok(Quota {
                project,
                limit: limit_of(&name).map_err(Fail::Corrupt)?,
                value,
                soft_pct: u32::try_from(soft).unwrap_or(100),
                on_hard: on_hard_of(&on_hard).map_err(Fail::Corrupt)?,
                updated_at,
            })
        })
        .collect::<Result<Vec<_>, Fail>>()?;
    sort(&mut found);
    Ok(found)
}

fn live(tx: &Transaction<'_>, project: &str) -> Result<u32, Fail> {
    let n: i64 = tx
        .prepare_cached(&format!(
            "SELECT count(*) FROM {LIVE_RUNS} WHERE o.project = ?1 AND o.status IN {SLOT_HOLDING}"
        ))?
        .query_row([project], |row| row.get(0))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

#[async_trait]
impl QuotaStore for SqliteStore {
    async fn set_quotas(&self, quotas: &[Quota]) -> StoreResult<()> {
        self.write(|tx| set(tx, quotas))
    }

    async fn remove_quotas(&self, project: &str, limit: Option<QuotaLimit>) -> StoreResult<u64> {
        self.write(|tx| remove(tx, project, limit))
    }

    async fn list_quotas(&self, projects: &[String]) -> StoreResult<Vec<Quota>> {
        self.read(|tx| list(tx, projects))
    }

    async fn live_runs(&self, project: &str) -> StoreResult<u32> {
        self.read(|tx| live(tx, project))
    }

    async fn quota_use(&self, projects: &[String], now: Ts) -> StoreResult<Vec<QuotaUse>> {
        self.read(|tx| use_of(tx, projects, now))
    }
}
