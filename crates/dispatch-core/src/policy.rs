//! The reliability policy of one run: retries with backoff, timeouts and
//! budgets. The parcel's Agentfile gives the defaults (`RETRY`, `TIMEOUT`,
//! `LIMIT`); a dispatch may override each (`--retries`, `--timeout`, …). The
//! effective policy is stored with the run, so every attempt (and a helper
//! started after a crash) applies the same one.

use serde::{Deserialize, Serialize};

use crate::parcel::{Limits, Manifest, RetryPolicy, Timeouts};

/// Backoff when a dispatch asks for retries without saying how long to wait.
pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 1_000;
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 30_000;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub limits: Limits,
}

/// What a dispatch overrides; `None` keeps the parcel's value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyOverrides {
    /// Retries after the first attempt (`--retries N` = N + 1 attempts).
    pub retries: Option<u32>,
    /// `(initial, max)` in ms.
    pub backoff: Option<(u64, u64)>,
    pub run_timeout_ms: Option<u64>,
    pub step_timeout_ms: Option<u64>,
    pub max_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
}

impl RunPolicy {
    /// The parcel's policy with the dispatch's overrides applied.
    pub fn resolve(manifest: &Manifest, o: &PolicyOverrides) -> RunPolicy {
        let mut p = RunPolicy {
            retry: manifest.retry.clone(),
            timeouts: manifest.timeouts.clone(),
            limits: manifest.limits.clone(),
        };
        if o.retries.is_some() || o.backoff.is_some() {
            let base = p.retry.clone().unwrap_or(RetryPolicy {
                max_attempts: 1,
                backoff_initial_ms: DEFAULT_BACKOFF_INITIAL_MS,
                backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
            });
            let (initial, max) = o
                .backoff
                .unwrap_or((base.backoff_initial_ms, base.backoff_max_ms));
            p.retry = Some(RetryPolicy {
                max_attempts: o.retries.map_or(base.max_attempts, |r| r.saturating_add(1)),
                backoff_initial_ms: initial,
                backoff_max_ms: max.max(initial),
            });
        }
        if let Some(ms) = o.run_timeout_ms {
            p.timeouts.run_ms = Some(ms);
        }
        if let Some(ms) = o.step_timeout_ms {
            p.timeouts.step_ms = Some(ms);
        }
        if let Some(n) = o.max_tokens {
            p.limits.max_tokens = Some(n);
        }
        if let Some(c) = o.max_cost_usd {
            p.limits.max_cost_usd = Some(c);
        }
        p
    }

    /// How many attempts the run may make in all (at least 1).
    pub fn max_attempts(&self) -> u32 {
        self.retry.as_ref().map_or(1, |r| r.max_attempts.max(1))
    }

    /// How long to wait before the attempt after `failed_attempt` (from 1):
    /// `initial × 2^(failed_attempt − 1)`, capped at the max, then "equal
    /// jitter": half of it fixed, the other half scaled by `jitter` (0..=1).
    pub fn backoff_ms(&self, failed_attempt: u32, jitter: f64) -> u64 {
        let Some(r) = &self.retry else { return 0 };
        let exp = failed_attempt.saturating_sub(1).min(30);
        let full = r
            .backoff_initial_ms
            .saturating_mul(1u64 << exp)
            .min(r.backoff_max_ms);
        let half = full / 2;
        half + ((full - half) as f64 * jitter.clamp(0.0, 1.0)) as u64
    }
}

/// Parses `--backoff`: `<initial>..<max>` or one duration (used as initial).
pub fn parse_backoff(text: &str) -> Result<(u64, u64), String> {
    let parse = |t: &str| {
        crate::agentfile::parse_duration_ms(t).map_err(|e| format!("--backoff {text}: {e}"))
    };
    match text.split_once("..") {
        Some((i, m)) => {
            let (i, m) = (parse(i)?, parse(m)?);
            if i > m {
                return Err(format!(
                    "--backoff {text}: the initial wait is longer than the max (hint: `--backoff 1s..30s`)"
                ));
            }
            Ok((i, m))
        }
        None => {
            let i = parse(text)?;
            Ok((i, i.max(DEFAULT_BACKOFF_MAX_MS)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32, initial: u64, max: u64) -> RunPolicy {
        RunPolicy {
            retry: Some(RetryPolicy {
                max_attempts: attempts,
                backoff_initial_ms: initial,
                backoff_max_ms: max,
            }),
            ..RunPolicy::default()
        }
    }

    #[test]
    fn backoff_doubles_caps_and_jitters_within_half() {
        let p = policy(5, 1_000, 5_000);
        assert_eq!(p.backoff_ms(1, 1.0), 1_000);
        assert_eq!(p.backoff_ms(2, 1.0), 2_000);
        assert_eq!(p.backoff_ms(3, 1.0), 4_000);
        assert_eq!(p.backoff_ms(4, 1.0), 5_000, "capped");
        assert_eq!(p.backoff_ms(2, 0.0), 1_000, "jitter takes at most half");
        assert_eq!(p.backoff_ms(60, 1.0), 5_000, "no overflow");
        assert_eq!(RunPolicy::default().backoff_ms(1, 1.0), 0);
    }

    #[test]
    fn retries_count_after_the_first_attempt() {
        let m: Manifest = serde_json::from_value(serde_json::json!({
            "schema": 1, "courier": "process", "name": "x", "entrypoint": "job",
            "command": ["true"], "files": [],
        }))
        .expect("a minimal manifest");
        assert_eq!(
            RunPolicy::resolve(&m, &PolicyOverrides::default()).max_attempts(),
            1
        );
        let o = PolicyOverrides {
            retries: Some(2),
            backoff: Some((100, 200)),
            ..PolicyOverrides::default()
        };
        let p = RunPolicy::resolve(&m, &o);
        assert_eq!(p.max_attempts(), 3);
        assert_eq!(p.retry.as_ref().map(|r| r.backoff_max_ms), Some(200));
    }

    #[test]
    fn backoff_flag_parses() {
        assert_eq!(parse_backoff("1s..30s"), Ok((1_000, 30_000)));
        assert_eq!(parse_backoff("100ms"), Ok((100, 30_000)));
        assert!(parse_backoff("5s..1s").is_err());
        assert!(parse_backoff("soon").is_err());
    }
}
