//! Concurrency keys and rate limits on SQLite (see [`crate::LimitStore`]):
//! every write is one `BEGIN IMMEDIATE` transaction, so the database's
//! single writer lock serializes them.

use dispatch_core::concurrency::{RunConcurrency, Strategy};
use dispatch_core::{RunId, Ts};
use rusqlite::{OptionalExtension, Transaction, params};

use async_trait::async_trait;

use super::runs::{get, request_stop, transition};
use super::{Fail, SqliteStore};
use crate::StoreResult;
use crate::limits::{
    BucketLimits, RateGrant, SLOT_HOLDING, admits, cancel_write, displaced_reason, dropped_reason,
};
use crate::{NewRun, StoreError};

/// Applies the key's strategy before `new` is inserted: `drop` answers the
/// reason the new run is cancelled with; `cancel-in-progress` cancels (or
/// asks to stop) the oldest runs of the key so that the new one fits.
pub(super) fn make_room(
    tx: &Transaction<'_>,
    new: &NewRun,
    c: &RunConcurrency,
) -> Result<Option<String>, Fail> {
    if c.strategy == Strategy::Queue {
        return Ok(None);
    }
    let ahead: Vec<(String, String)> = tx
        .prepare_cached(&format!(
            "SELECT id, status FROM runs WHERE concurrency_key = ?1 \
             AND (status = 'queued' OR status IN {SLOT_HOLDING}) ORDER BY created_at, id"
        ))?
        .query_map([&c.key], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let max = usize::try_from(c.max).unwrap_or(usize::MAX);
    if ahead.len() < max {
        return Ok(None);
    }
    if c.strategy == Strategy::Drop {
        return Ok(Some(dropped_reason(&c.key, c.max, ahead.len() as i64)));
    }
    let reason = displaced_reason(&c.key, &new.id);
    for (id, status) in &ahead[..=ahead.len() - max] {
        let id: RunId = id
            .parse()
            .map_err(|_| Fail::Corrupt(format!("`{id}` is not a run id")))?;
        if status == "queued" {
            let run = get(tx, &id)?;
            if let Some(write) = cancel_write(&run, &reason, new.created_at) {
                transition(tx, &id, run.version, std::slice::from_ref(&write))?;
            }
        } else {
            request_stop(tx, &id, new.created_at)?;
        }
    }
    Ok(None)
}

/// Stores the run's key, MAX and strategy.
pub(super) fn set_key(tx: &Transaction<'_>, id: &RunId, c: &RunConcurrency) -> Result<(), Fail> {
    tx.prepare_cached(
        "UPDATE runs SET concurrency_key = ?2, concurrency_max = ?3, concurrency_strategy = ?4 \
         WHERE id = ?1",
    )?
    .execute(params![id.as_str(), c.key, c.max, c.strategy.as_str()])?;
    Ok(())
}

/// `Ok` when run `id` may take a slot of its key now (or has no key) and
/// its project's quota lets it start at `at`.
pub(super) fn check_admitted(tx: &Transaction<'_>, id: &RunId, at: Ts) -> Result<(), Fail> {
    check_key(tx, id)?;
    super::quotas::check_admitted(tx, id, at)
}

/// `Ok` when run `id` may take a slot of its key now (or has no key).
fn check_key(tx: &Transaction<'_>, id: &RunId) -> Result<(), Fail> {
    let (ok, key, max): (bool, Option<String>, Option<u32>) = tx
        .prepare_cached(&format!(
            "SELECT {}, r.concurrency_key, r.concurrency_max FROM runs r WHERE r.id = ?1",
            admits("r")
        ))?
        .query_row([id.as_str()], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
    match (ok, key) {
        (true, _) | (false, None) => Ok(()),
        (false, Some(key)) => Err(Fail::Store(StoreError::ConcurrencyLimited {
            id: id.clone(),
            key,
            max: max.unwrap_or(0),
        })),
    }
}

pub(super) fn stopping(tx: &Transaction<'_>, key: &str) -> Result<Vec<RunId>, Fail> {
    let ids: Vec<String> = tx
        .prepare_cached(&format!(
            "SELECT id FROM runs WHERE concurrency_key = ?1 AND status IN {SLOT_HOLDING} \
             AND stop_requested_at IS NOT NULL ORDER BY created_at, id"
        ))?
        .query_map([key], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    ids.iter()
        .map(|id| {
            id.parse()
                .map_err(|_| Fail::Corrupt(format!("`{id}` is not a run id")))
        })
        .collect()
}

pub(super) fn rate_acquire(
    tx: &Transaction<'_>,
    bucket: &str,
    limits: &BucketLimits,
    est: u64,
    now: Ts,
) -> Result<RateGrant, Fail> {
    let horizon = now - limits.horizon_ms();
    tx.prepare_cached("DELETE FROM rate_grants WHERE bucket = ?1 AND at <= ?2")?
        .execute(params![bucket, horizon])?;
    let blocked: Option<Ts> = tx
        .prepare_cached("SELECT blocked_until FROM rate_buckets WHERE bucket = ?1")?
        .query_row([bucket], |row| row.get(0))
        .optional()?;
    if let Some(until) = blocked.filter(|u| *u > now) {
        return Ok(RateGrant::WaitUntil(until));
    }
    let grants: Vec<(Ts, u64)> = tx
        .prepare_cached("SELECT at, tokens FROM rate_grants WHERE bucket = ?1 ORDER BY at, id")?
        .query_map([bucket], |row| {
            Ok((row.get(0)?, row.get::<_, i64>(1)?.max(0) as u64))
        })?
        .collect::<Result<_, _>>()?;
    if let Err(until) = limits.decide(&grants, est, now) {
        return Ok(RateGrant::WaitUntil(until));
    }
    let grant: i64 = tx
        .prepare_cached(
            "INSERT INTO rate_grants (bucket, at, tokens) VALUES (?1, ?2, ?3) RETURNING id",
        )?
        .query_row(
            params![bucket, now, i64::try_from(est).unwrap_or(i64::MAX)],
            |row| row.get(0),
        )?;
    Ok(RateGrant::Granted { grant })
}

pub(super) fn rate_settle(tx: &Transaction<'_>, grant: i64, tokens: u64) -> Result<(), Fail> {
    tx.prepare_cached("UPDATE rate_grants SET tokens = ?2 WHERE id = ?1")?
        .execute(params![grant, i64::try_from(tokens).unwrap_or(i64::MAX)])?;
    Ok(())
}

pub(super) fn rate_block(tx: &Transaction<'_>, bucket: &str, until: Ts) -> Result<(), Fail> {
    tx.prepare_cached(
        "INSERT INTO rate_buckets (bucket, blocked_until) VALUES (?1, ?2) \
         ON CONFLICT (bucket) DO UPDATE SET blocked_until = max(blocked_until, excluded.blocked_until)",
    )?
    .execute(params![bucket, until])?;
    Ok(())
}

pub(super) fn holding(tx: &Transaction<'_>, key: &str) -> Result<u32, Fail> {
    let n: i64 = tx
        .prepare_cached(&format!(
            "SELECT count(*) FROM runs WHERE concurrency_key = ?1 AND status IN {SLOT_HOLDING}"
        ))?
        .query_row([key], |row| row.get(0))?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

#[async_trait]
impl crate::LimitStore for SqliteStore {
    async fn concurrency_stopping(&self, key: &str) -> StoreResult<Vec<RunId>> {
        self.read(|tx| stopping(tx, key))
    }

    async fn concurrency_holding(&self, key: &str) -> StoreResult<u32> {
        self.read(|tx| holding(tx, key))
    }

    async fn rate_acquire(
        &self,
        bucket: &str,
        limits: &crate::BucketLimits,
        est_tokens: u64,
        now: Ts,
    ) -> StoreResult<crate::RateGrant> {
        self.write(|tx| rate_acquire(tx, bucket, limits, est_tokens, now))
    }

    async fn rate_settle(&self, grant: i64, tokens: u64) -> StoreResult<()> {
        self.write(|tx| rate_settle(tx, grant, tokens))
    }

    async fn rate_block(&self, bucket: &str, until: Ts) -> StoreResult<()> {
        self.write(|tx| rate_block(tx, bucket, until))
    }
}
