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
    backoff(text, Spelling::Flag)
}

fn backoff(text: &str, sp: Spelling) -> Result<(u64, u64), String> {
    let name = sp.name("backoff");
    let parse = |t: &str| {
        crate::units::parse_duration_ms_or_seconds(t).map_err(|e| format!("{name} {text}: {e}"))
    };
    match text.split_once("..") {
        Some((i, m)) => {
            let (i, m) = (parse(i)?, parse(m)?);
            if i > m {
                return Err(format!(
                    "{name} {text}: the initial wait is longer than the max (hint: `{}`)",
                    sp.example("backoff", "1s..30s")
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

/// How the user spelled the reliability options, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spelling {
    /// Command-line flags: `--step-timeout 30s`.
    Flag,
    /// Fields of the `policy` object of `POST /v1/runs`: `"step_timeout": "30s"`.
    Field,
}

impl Spelling {
    /// The option `field` (snake case) as the user wrote it.
    pub fn name(self, field: &str) -> String {
        match self {
            Spelling::Flag => format!("--{}", field.replace('_', "-")),
            Spelling::Field => format!("policy.{field}"),
        }
    }

    /// The option with an example value, for a hint (a number stays
    /// unquoted in JSON).
    pub fn example(self, field: &str, value: &str) -> String {
        match self {
            Spelling::Flag => format!("{} {value}", self.name(field)),
            Spelling::Field if value.parse::<f64>().is_ok() => format!("\"{field}\": {value}"),
            Spelling::Field => format!("\"{field}\": \"{value}\""),
        }
    }
}

/// The policy overrides of one dispatch as a user writes them: the
/// `--retries`, `--backoff`, `--timeout`, `--step-timeout`, `--max-tokens` and
/// `--max-cost` flags, or the `policy` object of `POST /v1/runs` (same names
/// in snake case, durations as the same strings: `500ms`, `30s`, `5m`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    /// Retries after the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// `<initial>..<max>`, or one duration (the initial wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
    /// The time limit of each attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// The time limit of each step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<f64>,
}

impl PolicyInput {
    /// Checks every value and turns them into overrides. An error is one line
    /// naming the option as `sp` spells it, with a hint.
    pub fn overrides(&self, sp: Spelling) -> Result<PolicyOverrides, String> {
        let duration = |field: &str, v: &Option<String>| -> Result<Option<u64>, String> {
            let Some(text) = v.as_deref() else {
                return Ok(None);
            };
            let name = sp.name(field);
            let ms = crate::units::parse_duration_ms_or_seconds(text)
                .map_err(|e| format!("{name}: {e}"))?;
            if ms == 0 {
                return Err(format!(
                    "{name} must be longer than zero (hint: {})",
                    sp.example(field, "30s")
                ));
            }
            Ok(Some(ms))
        };
        if let Some(c) = self.max_cost.filter(|c| !c.is_finite() || *c <= 0.0) {
            return Err(format!(
                "{} {c}: expected an amount of US dollars greater than zero (hint: {})",
                sp.name("max_cost"),
                sp.example("max_cost", "0.50")
            ));
        }
        if self.max_tokens == Some(0) {
            return Err(format!(
                "{} must be greater than zero (hint: {})",
                sp.name("max_tokens"),
                sp.example("max_tokens", "100000")
            ));
        }
        Ok(PolicyOverrides {
            retries: self.retries,
            backoff: self
                .backoff
                .as_deref()
                .map(|b| backoff(b, sp))
                .transpose()?,
            run_timeout_ms: duration("timeout", &self.timeout)?,
            step_timeout_ms: duration("step_timeout", &self.step_timeout)?,
            max_tokens: self.max_tokens,
            max_cost_usd: self.max_cost,
        })
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
    fn policy_input_checks_each_value_and_names_it_as_spelled() {
        let input = |json: serde_json::Value| -> PolicyInput {
            serde_json::from_value(json).expect("a policy object")
        };
        let o = input(serde_json::json!({
            "retries": 2, "backoff": "1s..5s", "timeout": "2m", "step_timeout": "500ms",
            "max_tokens": 10, "max_cost": 0.5,
        }))
        .overrides(Spelling::Field)
        .expect("valid");
        assert_eq!(
            o,
            PolicyOverrides {
                retries: Some(2),
                backoff: Some((1_000, 5_000)),
                run_timeout_ms: Some(120_000),
                step_timeout_ms: Some(500),
                max_tokens: Some(10),
                max_cost_usd: Some(0.5),
            }
        );
        let err =
            |json: serde_json::Value, sp: Spelling| input(json).overrides(sp).expect_err("invalid");
        let e = err(serde_json::json!({"timeout": "0s"}), Spelling::Flag);
        assert_eq!(
            e,
            "--timeout must be longer than zero (hint: --timeout 30s)"
        );
        let e = err(serde_json::json!({"step_timeout": "soon"}), Spelling::Field);
        assert!(
            e.starts_with("policy.step_timeout: invalid duration"),
            "{e}"
        );
        let e = err(serde_json::json!({"backoff": "5s..1s"}), Spelling::Field);
        assert!(e.contains("\"backoff\": \"1s..30s\""), "{e}");
        let e = err(serde_json::json!({"max_cost": 0.0}), Spelling::Field);
        assert!(e.starts_with("policy.max_cost 0:"), "{e}");
        assert!(e.contains("\"max_cost\": 0.50"), "{e}");
        let e = err(serde_json::json!({"max_tokens": 0}), Spelling::Flag);
        assert!(e.contains("(hint: --max-tokens 100000)"), "{e}");
        assert!(
            serde_json::from_value::<PolicyInput>(serde_json::json!({"retry": 1})).is_err(),
            "unknown fields are refused"
        );
    }

    #[test]
    fn backoff_flag_parses() {
        assert_eq!(parse_backoff("1s..30s"), Ok((1_000, 30_000)));
        assert_eq!(parse_backoff("100ms"), Ok((100, 30_000)));
        assert!(parse_backoff("5s..1s").is_err());
        assert!(parse_backoff("soon").is_err());
    }
}
