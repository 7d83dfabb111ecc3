//! A run's concurrency key, computed when it is dispatched: from the
//! parcel's `CONCURRENCY KEY` (a path into the payload, or a label) and the
//! dispatcher's overrides (`--concurrency-key`, `--concurrency-max`,
//! `--concurrency-strategy`, or the same fields of `POST /v1/runs`).
//!
//! Keys are per parcel: the stored key is `<parcel name>/<value>`.

use std::collections::BTreeMap;

use dispatch_core::concurrency::{RunConcurrency, Strategy, key_value};
use dispatch_core::parcel::Manifest;
use serde_json::Value;

use crate::error::{RuntimeError, RuntimeResult};

/// What the dispatcher said about the run's concurrency key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConcurrencyOverrides {
    /// The key's value, instead of the one the Agentfile's path gives.
    pub key: Option<String>,
    /// MAX, instead of the Agentfile's (1 when it has none).
    pub max: Option<u32>,
    pub strategy: Option<Strategy>,
}

impl ConcurrencyOverrides {
    pub fn is_empty(&self) -> bool {
        self.key.is_none() && self.max.is_none() && self.strategy.is_none()
    }
}

/// The run's key, or `None` when neither the parcel nor the dispatcher asks
/// for one. `labels` are the run's own (`NAME=value`), looked up before the
/// parcel's `LABEL`s for a `label.NAME` key.
pub fn resolve(
    manifest: &Manifest,
    payload: &Value,
    labels: &[String],
    over: &ConcurrencyOverrides,
) -> RuntimeResult<Option<RunConcurrency>> {
    let bad = |m: String| Err(RuntimeError::Concurrency(m));
    if over.max == Some(0) {
        return bad("--concurrency-max must be at least 1".into());
    }
    let spec = manifest.concurrency.as_ref();
    let value = match (&over.key, spec) {
        (Some(v), _) if v.is_empty() || v.len() > 512 => {
            return bad("a concurrency key is 1 to 512 characters".into());
        }
        (Some(v), _) => v.clone(),
        (None, Some(spec)) => {
            let mut all: BTreeMap<String, String> = manifest.labels.clone();
            for l in labels {
                if let Some((k, v)) = l.split_once('=') {
                    all.insert(k.to_string(), v.to_string());
                }
            }
            key_value(&spec.key, payload, &all).map_err(RuntimeError::Concurrency)?
        }
        (None, None) if over.is_empty() => return Ok(None),
        (None, None) => {
            return bad(format!(
                "parcel {} declares no CONCURRENCY KEY, so --concurrency-max/--concurrency-strategy need --concurrency-key VALUE",
                manifest.name
            ));
        }
    };
    Ok(Some(RunConcurrency {
        key: format!("{}/{value}", manifest.name),
        max: over.max.or(spec.map(|s| s.max)).unwrap_or(1),
        strategy: over
            .strategy
            .or(spec.map(|s| s.strategy))
            .unwrap_or_default(),
    }))
}
