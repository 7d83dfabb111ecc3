//! The two writes every native round makes several times, in one statement
//! each instead of a transaction: no `BEGIN` and `COMMIT` round trips.
//!
//! A run's events without usage and the chunks of its log were each a
//! transaction of four or five round trips (`BEGIN`, the fence's check
//! under the row lock, the write, `COMMIT`): at 1,000 concurrent native
//! runs, ~100 round trips a run, and a third of them `BEGIN` or `COMMIT`.
//! One statement is atomic on its own and keeps the order: its CTE locks
//! the run's row (`FOR UPDATE`, held to the statement's commit), so appends
//! to one run still commit one after another, and a lock waited for is
//! read again at its newest version (PostgreSQL re-checks a locked row
//! that changed), so a fence moved on meanwhile is seen.
//!
//! Events with usage (a model call's tokens and cost) are one statement
//! too when nothing but the run's totals is to be updated with them: the
//! run's policy sets no budget to notify at (`max_tokens`, `max_cost_usd`)
//! and its project has no quota counted by period. The statement checks
//! both under the run's lock, and writes nothing when either holds.
//!
//! What the statement cannot decide alone falls back to the transaction it
//! replaces: events with usage that budgets or quotas count (their
//! notifications, the project's usage in its periods), and a log chunk
//! that does not start where the stored log ends (a retry whose first try
//! committed, or a gap), which the transaction answers exactly as before.

use deadpool_postgres::GenericClient;
use dispatch_core::{NewEvent, RunId};

use super::Fail;
use super::events::{Columns, tokens_column, usage_of};
use super::runs::not_found;
use crate::StoreError;

/// Appends `events` (none with usage, see [`usage_of`]) under the run's `fence` and a live
/// lease.
pub(super) async fn fenced_append<C: GenericClient>(
    client: &C,
    run: &RunId,
    fence: i64,
    events: &[NewEvent],
) -> Result<(), Fail> {
    let Columns(attempts, ats, kinds, datas) = Columns::of(events)?;
    let stmt = client
        .prepare_cached(
            "WITH f AS (SELECT fence, lease_owner IS NOT NULL AS leased FROM runs \
                        WHERE id = $1 FOR UPDATE), \
             ins AS (INSERT INTO events (run_id, attempt, at, type, data) \
                     SELECT $1, a, t, k, d \
                     FROM unnest($3::bigint[], $4::bigint[], $5::text[], $6::text[]) \
                     WITH ORDINALITY AS e(a, t, k, d, n) \
                     WHERE EXISTS (SELECT 1 FROM f WHERE f.fence = $2 AND f.leased) \
                     ORDER BY n RETURNING 1) \
             SELECT fence, leased FROM f",
        )
        .await?;
    let row = client
        .query_opt(
            &stmt,
            &[&run.as_str(), &fence, &attempts, &ats, &kinds, &datas],
        )
        .await?
        .ok_or_else(|| not_found(run))?;
    let (current, leased): (i64, bool) = (row.try_get(0)?, row.try_get(1)?);
    if current != fence || !leased {
        return Err(fenced(run, fence));
    }
    Ok(())
}

/// Appends `events`, some with usage, under the run's `fence` and a live
/// lease, and adds their usage to the run's totals, when neither a budget
/// of the run's policy nor a quota of its project counts it. `Ok(false)`:
/// nothing written, the transaction's to do (see the module).
pub(super) async fn fenced_append_usage<C: GenericClient>(
    client: &C,
    run: &RunId,
    fence: i64,
    events: &[NewEvent],
) -> Result<bool, Fail> {
    let total = usage_of(events).unwrap_or_default();
    let Columns(attempts, ats, kinds, datas) = Columns::of(events)?;
    // A policy naming a budget (serialized only when set) or a project
    // quota other than its live-run cap: the transaction's. Conservative:
    // `"max_tokens": null` falls back too.
    let stmt = client
        .prepare_cached(
            "WITH f AS (SELECT fence, lease_owner IS NOT NULL AS leased, policy, project \
                        FROM runs WHERE id = $1 FOR UPDATE), \
             ok AS (SELECT 1 FROM f WHERE f.fence = $2 AND f.leased \
                    AND (f.policy IS NULL OR (strpos(f.policy, '\"max_tokens\"') = 0 \
                         AND strpos(f.policy, '\"max_cost_usd\"') = 0)) \
                    AND NOT EXISTS (SELECT 1 FROM project_quotas q \
                                    WHERE q.project = f.project AND q.name <> 'max_live_runs')), \
             ins AS (INSERT INTO events (run_id, attempt, at, type, data) \
                     SELECT $1, a, t, k, d \
                     FROM unnest($3::bigint[], $4::bigint[], $5::text[], $6::text[]) \
                     WITH ORDINALITY AS e(a, t, k, d, n) \
                     WHERE EXISTS (SELECT 1 FROM ok) ORDER BY n RETURNING 1), \
             upd AS (UPDATE runs SET input_tokens = input_tokens + $7, \
                     output_tokens = output_tokens + $8, cost_usd = cost_usd + $9 \
                     WHERE id = $1 AND EXISTS (SELECT 1 FROM ok) RETURNING 1) \
             SELECT fence, leased, (SELECT count(*) FROM upd) FROM f",
        )
        .await?;
    let row = client
        .query_opt(
            &stmt,
            &[
                &run.as_str(),
                &fence,
                &attempts,
                &ats,
                &kinds,
                &datas,
                &tokens_column(total.input_tokens),
                &tokens_column(total.output_tokens),
                &total.cost_usd,
            ],
        )
        .await?
        .ok_or_else(|| not_found(run))?;
    let (current, leased): (i64, bool) = (row.try_get(0)?, row.try_get(1)?);
    if current != fence || !leased {
        return Err(fenced(run, fence));
    }
    Ok(row.try_get::<_, i64>(2)? == 1)
}

/// Appends a chunk of the run's log at `pos` under its `fence`, when the
/// stored log ends there. `Ok(false)`: not decided here (see the module).
pub(super) async fn append_log<C: GenericClient>(
    client: &C,
    run: &RunId,
    fence: i64,
    pos: i64,
    bytes: &[u8],
) -> Result<bool, Fail> {
    let stmt = client
        .prepare_cached(
            "WITH f AS (SELECT fence FROM runs WHERE id = $1 FOR UPDATE), \
             len AS (SELECT COALESCE( \
                 (SELECT pos + octet_length(data)::bigint FROM run_logs WHERE run_id = $1 \
                  ORDER BY pos DESC LIMIT 1), \
                 (SELECT size FROM run_log_archives WHERE run_id = $1), 0) AS n), \
             ins AS (INSERT INTO run_logs (run_id, pos, data) \
                     SELECT $1, $3::bigint, $4::bytea FROM f, len \
                     WHERE f.fence = $2 AND len.n = $3::bigint AND octet_length($4::bytea) > 0 \
                     ON CONFLICT DO NOTHING RETURNING 1) \
             SELECT f.fence, len.n, (SELECT count(*) FROM ins) FROM f, len",
        )
        .await?;
    let row = client
        .query_opt(&stmt, &[&run.as_str(), &fence, &pos, &bytes])
        .await?
        .ok_or_else(|| not_found(run))?;
    let (current, length, inserted): (i64, i64, i64) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    if current != fence {
        return Err(fenced(run, fence));
    }
    // Written; or nothing to write where the log ends. Anything else (the
    // chunk already there, a gap, or a length read before a concurrent
    // append committed) is the transaction's to answer.
    Ok(inserted == 1 || (bytes.is_empty() && length == pos))
}

fn fenced(run: &RunId, fence: i64) -> Fail {
    Fail::Store(StoreError::Fenced {
        id: run.clone(),
        fence,
    })
}
