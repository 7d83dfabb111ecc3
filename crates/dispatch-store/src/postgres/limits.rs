//! Concurrency keys and rate limits on PostgreSQL (see [`crate::LimitStore`]).
//! Whoever counts a key's slots (a claim, a local claim, a dispatch applying
//! its strategy) first takes a transaction-scoped advisory lock per key, in
//! key order, and counts in a statement after it: claims of one key
//! serialize, so no two claimers can both see the last slot free. A rate
//! bucket's row is locked (`FOR UPDATE`) while its window is read and a
//! grant written.

use deadpool_postgres::Transaction;
use dispatch_core::concurrency::{RunConcurrency, Strategy};
use dispatch_core::{RunId, Ts};

use async_trait::async_trait;

use super::runs::{get, parse_id, request_stop};
use super::{Fail, PgStore};
use crate::StoreResult;
use crate::limits::{
    BucketLimits, RateGrant, SLOT_HOLDING, admits, cancel_write, displaced_reason, dropped_reason,
};
use crate::{NewRun, StoreError};

/// Serializes, until the transaction ends, everyone counting the slots of
/// these keys (sorted and deduplicated here, so lockers never deadlock).
pub(super) async fn lock_keys(tx: &Transaction<'_>, keys: &[String]) -> Result<(), Fail> {
    let mut keys: Vec<&String> = keys.iter().collect();
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(
            "SELECT pg_advisory_xact_lock(hashtextextended('concurrency:' || k, 0)) \
             FROM unnest($1::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
        )
        .await?;
    tx.execute(&stmt, &[&keys]).await?;
    Ok(())
}

/// Of `ids` (queued runs this transaction locked), those that may take a
/// slot of their key now, counted after [`lock_keys`].
pub(super) async fn admitted(tx: &Transaction<'_>, ids: &[String]) -> Result<Vec<String>, Fail> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT r.id FROM runs r WHERE r.id = ANY($1::text[]) AND {}",
            admits("r")
        ))
        .await?;
    tx.query(&stmt, &[&ids])
        .await?
        .iter()
        .map(|row| row.try_get(0).map_err(Fail::from))
        .collect()
}

/// The keys of `ids` that have one.
pub(super) async fn keys_of(tx: &Transaction<'_>, ids: &[String]) -> Result<Vec<String>, Fail> {
    let stmt = tx
        .prepare_cached(
            "SELECT DISTINCT concurrency_key FROM runs WHERE id = ANY($1::text[]) \
             AND concurrency_key IS NOT NULL",
        )
        .await?;
    tx.query(&stmt, &[&ids])
        .await?
        .iter()
        .map(|row| row.try_get(0).map_err(Fail::from))
        .collect()
}

/// `Ok` when queued run `id` may take a slot of its key now (or has no
/// key) and its project's quota lets it start at `at`.
pub(super) async fn check_admitted(tx: &Transaction<'_>, id: &RunId, at: Ts) -> Result<(), Fail> {
    check_key(tx, id).await?;
    super::quotas::check_admitted(tx, id, at).await
}

/// `Ok` when queued run `id` may take a slot of its key now (or has no key).
async fn check_key(tx: &Transaction<'_>, id: &RunId) -> Result<(), Fail> {
    let ids = vec![id.as_str().to_string()];
    let keys = keys_of(tx, &ids).await?;
    let Some(key) = keys.first() else {
        return Ok(());
    };
    lock_keys(tx, &keys).await?;
    if !admitted(tx, &ids).await?.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached("SELECT concurrency_max FROM runs WHERE id = $1")
        .await?;
    let max: Option<i64> = tx.query_one(&stmt, &[&id.as_str()]).await?.try_get(0)?;
    Err(Fail::Store(StoreError::ConcurrencyLimited {
        id: id.clone(),
        key: key.clone(),
        max: max.and_then(|m| u32::try_from(m).ok()).unwrap_or(0),
    }))
}

/// As the SQLite backend's `make_room`, under the key's lock.
pub(super) async fn make_room(
    tx: &Transaction<'_>,
    new: &NewRun,
    c: &RunConcurrency,
) -> Result<Option<String>, Fail> {
    lock_keys(tx, std::slice::from_ref(&c.key)).await?;
    if c.strategy == Strategy::Queue {
        return Ok(None);
    }
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT id, status FROM runs WHERE concurrency_key = $1 \
             AND (status = 'queued' OR status IN {SLOT_HOLDING}) ORDER BY created_at, id"
        ))
        .await?;
    let mut ahead = Vec::new();
    for row in tx.query(&stmt, &[&c.key]).await? {
        ahead.push((parse_id(row.try_get(0)?)?, row.try_get::<_, String>(1)?));
    }
    let max = usize::try_from(c.max).unwrap_or(usize::MAX);
    if ahead.len() < max {
        return Ok(None);
    }
    if c.strategy == Strategy::Drop {
        return Ok(Some(dropped_reason(&c.key, c.max, ahead.len() as i64)));
    }
    let reason = displaced_reason(&c.key, &new.id);
    for (id, status) in &ahead[..=ahead.len() - max] {
        if status == "queued" {
            let run = get(tx, id).await?;
            if let Some(write) = cancel_write(&run, &reason, new.created_at) {
                save(tx, id, run.version, &write).await?;
            }
        } else {
            request_stop(tx, id, new.created_at).await?;
        }
    }
    Ok(None)
}

/// One unfenced state change in the caller's transaction.
pub(super) async fn save(
    tx: &Transaction<'_>,
    id: &RunId,
    version: i64,
    write: &crate::StateWrite,
) -> Result<crate::Run, Fail> {
    let item = super::transitions::Item {
        id,
        fence: None,
        expected: version,
        writes: std::slice::from_ref(write),
    };
    super::transitions::save(tx, &[item])
        .await?
        .pop()
        .unwrap_or_else(|| Err(StoreError::NotFound(id.to_string())))
        .map_err(Fail::Store)
}

pub(super) async fn set_key(
    tx: &Transaction<'_>,
    id: &RunId,
    c: &RunConcurrency,
) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached(
            "UPDATE runs SET concurrency_key = $2, concurrency_max = $3, \
             concurrency_strategy = $4 WHERE id = $1",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &id.as_str(),
            &c.key,
            &i64::from(c.max),
            &c.strategy.as_str(),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn stopping(tx: &Transaction<'_>, key: &str) -> Result<Vec<RunId>, Fail> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT id FROM runs WHERE concurrency_key = $1 AND status IN {SLOT_HOLDING} \
             AND stop_requested_at IS NOT NULL ORDER BY created_at, id"
        ))
        .await?;
    tx.query(&stmt, &[&key])
        .await?
        .iter()
        .map(|row| parse_id(row.try_get(0)?))
        .collect()
}

pub(super) async fn rate_acquire(
    tx: &Transaction<'_>,
    bucket: &str,
    limits: &BucketLimits,
    est: u64,
    now: Ts,
) -> Result<RateGrant, Fail> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO rate_buckets (bucket) VALUES ($1) ON CONFLICT (bucket) DO NOTHING",
        )
        .await?;
    tx.execute(&stmt, &[&bucket]).await?;
    let stmt = tx
        .prepare_cached("SELECT blocked_until FROM rate_buckets WHERE bucket = $1 FOR UPDATE")
        .await?;
    let blocked: i64 = tx.query_one(&stmt, &[&bucket]).await?.try_get(0)?;
    if blocked > now {
        return Ok(RateGrant::WaitUntil(blocked));
    }
    let stmt = tx
        .prepare_cached("DELETE FROM rate_grants WHERE bucket = $1 AND at <= $2")
        .await?;
    tx.execute(&stmt, &[&bucket, &(now - limits.horizon_ms())])
        .await?;
    let stmt = tx
        .prepare_cached("SELECT at, tokens FROM rate_grants WHERE bucket = $1 ORDER BY at, id")
        .await?;
    let mut grants = Vec::new();
    for row in tx.query(&stmt, &[&bucket]).await? {
        grants.push((row.try_get(0)?, row.try_get::<_, i64>(1)?.max(0) as u64));
    }
    if let Err(until) = limits.decide(&grants, est, now) {
        return Ok(RateGrant::WaitUntil(until));
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO rate_grants (bucket, at, tokens) VALUES ($1, $2, $3) RETURNING id",
        )
        .await?;
    let est = i64::try_from(est).unwrap_or(i64::MAX);
    let grant: i64 = tx
        .query_one(&stmt, &[&bucket, &now, &est])
        .await?
        .try_get(0)?;
    Ok(RateGrant::Granted { grant })
}

pub(super) async fn rate_settle(tx: &Transaction<'_>, grant: i64, tokens: u64) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached("UPDATE rate_grants SET tokens = $2 WHERE id = $1")
        .await?;
    let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
    tx.execute(&stmt, &[&grant, &tokens]).await?;
    Ok(())
}

pub(super) async fn rate_block(tx: &Transaction<'_>, bucket: &str, until: Ts) -> Result<(), Fail> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO rate_buckets (bucket, blocked_until) VALUES ($1, $2) \
             ON CONFLICT (bucket) DO UPDATE \
             SET blocked_until = GREATEST(rate_buckets.blocked_until, excluded.blocked_until)",
        )
        .await?;
    tx.execute(&stmt, &[&bucket, &until]).await?;
    Ok(())
}

pub(super) async fn holding(tx: &Transaction<'_>, key: &str) -> Result<u32, Fail> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT count(*) FROM runs WHERE concurrency_key = $1 AND status IN {SLOT_HOLDING}"
        ))
        .await?;
    let n: i64 = tx.query_one(&stmt, &[&key]).await?.try_get(0)?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

#[async_trait]
impl crate::LimitStore for PgStore {
    async fn concurrency_stopping(&self, key: &str) -> StoreResult<Vec<RunId>> {
        in_tx!(self, |tx| stopping(&tx, key))
    }

    async fn concurrency_holding(&self, key: &str) -> StoreResult<u32> {
        in_tx!(self, |tx| holding(&tx, key))
    }

    async fn rate_acquire(
        &self,
        bucket: &str,
        limits: &crate::BucketLimits,
        est_tokens: u64,
        now: Ts,
    ) -> StoreResult<crate::RateGrant> {
        in_tx!(self, |tx| rate_acquire(
            &tx, bucket, limits, est_tokens, now
        ))
    }

    async fn rate_settle(&self, grant: i64, tokens: u64) -> StoreResult<()> {
        in_tx!(self, |tx| rate_settle(&tx, grant, tokens))
    }

    async fn rate_block(&self, bucket: &str, until: Ts) -> StoreResult<()> {
        in_tx!(self, |tx| rate_block(&tx, bucket, until))
    }
}
