//! Quotas and budgets per project: at most so many live runs, tokens and
//! USD per UTC day and per calendar month (UTC). Each limit has a soft mark
//! (a percentage of it: crossing it warns and notifies, once per period)
//! and a hard action: new runs `wait` (stay queued) or are `refuse`d.
//!
//! A project without a quota has no limit. The tokens and USD of a period
//! are what `dispatch usage` sums for the project over it (every `usage`
//! event billed in it).

use serde::{Deserialize, Serialize};

use crate::Ts;

/// One limit of a project's quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaLimit {
    /// Runs starting, running or paused at once, across the cluster.
    MaxLiveRuns,
    TokensPerDay,
    TokensPerMonth,
    UsdPerDay,
    UsdPerMonth,
}

/// The period a budget counts over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// A UTC day.
    Day,
    /// A calendar month, UTC.
    Month,
}

impl QuotaLimit {
    pub const ALL: [QuotaLimit; 5] = [
        QuotaLimit::MaxLiveRuns,
        QuotaLimit::TokensPerDay,
        QuotaLimit::TokensPerMonth,
        QuotaLimit::UsdPerDay,
        QuotaLimit::UsdPerMonth,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QuotaLimit::MaxLiveRuns => "max_live_runs",
            QuotaLimit::TokensPerDay => "tokens_per_day",
            QuotaLimit::TokensPerMonth => "tokens_per_month",
            QuotaLimit::UsdPerDay => "usd_per_day",
            QuotaLimit::UsdPerMonth => "usd_per_month",
        }
    }

    /// A limit by its name, `max_live_runs` or `max-live-runs`.
    pub fn parse(s: &str) -> Result<QuotaLimit, String> {
        let name = s.trim().replace('-', "_");
        QuotaLimit::ALL
            .into_iter()
            .find(|l| l.as_str() == name)
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a quota limit (hint: one of max-live-runs, tokens-per-day, tokens-per-month, usd-per-day, usd-per-month)"
                )
            })
    }

    /// The period a budget counts over; `None` for live runs.
    pub fn period(self) -> Option<Period> {
        match self {
            QuotaLimit::MaxLiveRuns => None,
            QuotaLimit::TokensPerDay | QuotaLimit::UsdPerDay => Some(Period::Day),
            QuotaLimit::TokensPerMonth | QuotaLimit::UsdPerMonth => Some(Period::Month),
        }
    }

    /// Whether the limit counts USD (else runs or tokens).
    pub fn is_usd(self) -> bool {
        matches!(self, QuotaLimit::UsdPerDay | QuotaLimit::UsdPerMonth)
    }

    /// A value of this limit as a user writes it: `10`, `2M`, `$500`.
    pub fn parse_value(self, s: &str) -> Result<f64, String> {
        let flag = format!("--{}", self.as_str().replace('_', "-"));
        match self {
            QuotaLimit::MaxLiveRuns => s
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .map(f64::from)
                .ok_or_else(|| {
                    format!("{flag}: `{s}` is not a number of runs (hint: a whole number from 1, e.g. `{flag} 10`)")
                }),
            QuotaLimit::TokensPerDay | QuotaLimit::TokensPerMonth => parse_tokens(s)
                .filter(|n| *n > 0)
                .map(|n| n as f64)
                .ok_or_else(|| {
                    format!("{flag}: `{s}` is not a number of tokens (hint: a whole number from 1, with k, M or G for thousands, millions, billions, e.g. `{flag} 2M`)")
                }),
            QuotaLimit::UsdPerDay | QuotaLimit::UsdPerMonth => {
                let t = s.trim();
                t.strip_prefix('$')
                    .unwrap_or(t)
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v > 0.0)
                    .ok_or_else(|| {
                        format!("{flag}: `{s}` is not an amount of USD (hint: a positive amount, e.g. `{flag} 500` or `{flag} 12.50`)")
                    })
            }
        }
    }

    /// `value` as a user reads it: `10`, `2000000`, `$500.00`.
    pub fn show(self, value: f64) -> String {
        match self.is_usd() {
            true => format!("${value:.2}"),
            false => format!("{}", value.round() as u64),
        }
    }

    /// What is counted, for messages: `live runs`, `tokens today`.
    pub fn unit(self) -> &'static str {
        match self {
            QuotaLimit::MaxLiveRuns => "live runs",
            QuotaLimit::TokensPerDay => "tokens today (UTC)",
            QuotaLimit::TokensPerMonth => "tokens this month (UTC)",
            QuotaLimit::UsdPerDay => "USD today (UTC)",
            QuotaLimit::UsdPerMonth => "USD this month (UTC)",
        }
    }
}

impl std::fmt::Display for QuotaLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a new run once a limit is reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnHard {
    /// It stays queued until there is room (a live run ends, the period
    /// rolls over, the quota is raised).
    #[default]
    Wait,
    /// It is refused when created, with the reason.
    Refuse,
}

impl OnHard {
    pub fn as_str(self) -> &'static str {
        match self {
            OnHard::Wait => "wait",
            OnHard::Refuse => "refuse",
        }
    }

    pub fn parse(s: &str) -> Result<OnHard, String> {
        match s.trim() {
            "wait" => Ok(OnHard::Wait),
            "refuse" => Ok(OnHard::Refuse),
            _ => Err(format!(
                "--on-hard: `{s}` is not an action (hint: `wait` keeps new runs queued, `refuse` refuses them)"
            )),
        }
    }
}

/// The soft mark when none is given: 80 % of the limit.
pub const DEFAULT_SOFT_PCT: u32 = 80;

/// A soft mark as a user writes it: `80%` or `80`, from 1 to 100.
pub fn parse_pct(s: &str) -> Result<u32, String> {
    let t = s.trim();
    t.strip_suffix('%')
        .unwrap_or(t)
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|p| (1..=100).contains(p))
        .ok_or_else(|| {
            format!("--soft: `{s}` is not a percentage (hint: 1 to 100, e.g. `--soft 80%`)")
        })
}

/// Tokens as a user writes them: `2000000`, `2M`, `500k`, `1.5G`.
pub fn parse_tokens(s: &str) -> Option<u64> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last()? {
        (i, 'k' | 'K') => (&t[..i], 1e3),
        (i, 'm' | 'M') => (&t[..i], 1e6),
        (i, 'g' | 'G') => (&t[..i], 1e9),
        _ => (t, 1.0),
    };
    if mul == 1.0 {
        return num.parse::<u64>().ok();
    }
    let v = num.parse::<f64>().ok()? * mul;
    ((0.0..1e18).contains(&v) && v.fract() == 0.0).then_some(v as u64)
}

/// The limits `dispatch quota set` (or `PUT /v1/quotas/{project}`) gives:
/// each `(limit, value as written)` parsed, with the soft mark (default
/// 80 %) and the hard action (default `wait`) applied to each. The error is
/// one line with a hint.
pub fn parse_quotas(
    project: &str,
    values: &[(QuotaLimit, String)],
    soft: Option<&str>,
    on_hard: Option<&str>,
    now: Ts,
) -> Result<Vec<Quota>, String> {
    crate::project::check_project(project)?;
    if values.is_empty() {
        return Err(
            "no limit given (hint: one or more of --max-live-runs 10, --tokens-per-day 2M, --tokens-per-month 50M, --usd-per-day 20, --usd-per-month 500)"
                .to_string(),
        );
    }
    let soft_pct = soft.map(parse_pct).transpose()?.unwrap_or(DEFAULT_SOFT_PCT);
    let on_hard = on_hard.map(OnHard::parse).transpose()?.unwrap_or_default();
    values
        .iter()
        .map(|(limit, text)| {
            Ok(Quota {
                project: project.to_string(),
                limit: *limit,
                value: limit.parse_value(text)?,
                soft_pct,
                on_hard,
                updated_at: now,
            })
        })
        .collect()
}

/// One limit of one project's quota, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quota {
    pub project: String,
    pub limit: QuotaLimit,
    /// Runs, tokens or USD.
    pub value: f64,
    /// The soft mark, percent of `value`.
    pub soft_pct: u32,
    pub on_hard: OnHard,
    pub updated_at: Ts,
}

impl Quota {
    /// The soft mark in the limit's unit.
    pub fn soft_value(&self) -> f64 {
        self.value * f64::from(self.soft_pct) / 100.0
    }
}

/// The UTC period holding `now`: its start (inclusive), its end
/// (exclusive) and its name (`2026-11-26`, `2026-11`).
pub fn period_of(period: Period, now: Ts) -> (Ts, Ts, String) {
    use chrono::{Datelike, NaiveDate, TimeZone, Utc};
    let t = Utc
        .timestamp_millis_opt(now)
        .single()
        .unwrap_or_else(|| Utc.timestamp_millis_opt(0).single().unwrap_or_default());
    let d = t.date_naive();
    let start_of = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .map_or(0, |dt| dt.and_utc().timestamp_millis())
    };
    match period {
        Period::Day => {
            let next = d.succ_opt().unwrap_or(d);
            (
                start_of(d),
                start_of(next),
                d.format("%Y-%m-%d").to_string(),
            )
        }
        Period::Month => {
            let first = d.with_day(1).unwrap_or(d);
            let next = match d.month() {
                12 => NaiveDate::from_ymd_opt(d.year() + 1, 1, 1),
                m => NaiveDate::from_ymd_opt(d.year(), m + 1, 1),
            }
            .unwrap_or(first);
            (
                start_of(first),
                start_of(next),
                first.format("%Y-%m").to_string(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_users_write_them_and_bad_ones_say_how() {
        assert_eq!(QuotaLimit::TokensPerDay.parse_value("2M"), Ok(2e6));
        assert_eq!(QuotaLimit::TokensPerDay.parse_value("500k"), Ok(5e5));
        assert_eq!(QuotaLimit::TokensPerDay.parse_value("1.5G"), Ok(1.5e9));
        assert_eq!(QuotaLimit::TokensPerDay.parse_value("1200"), Ok(1200.0));
        assert_eq!(QuotaLimit::UsdPerMonth.parse_value("$500"), Ok(500.0));
        assert_eq!(QuotaLimit::UsdPerMonth.parse_value("12.5"), Ok(12.5));
        assert_eq!(QuotaLimit::MaxLiveRuns.parse_value("10"), Ok(10.0));
        for (limit, bad) in [
            (QuotaLimit::MaxLiveRuns, "0"),
            (QuotaLimit::MaxLiveRuns, "2.5"),
            (QuotaLimit::TokensPerDay, "lots"),
            (QuotaLimit::TokensPerDay, "-3"),
            (QuotaLimit::TokensPerDay, "1.5"),
            (QuotaLimit::UsdPerDay, "0"),
            (QuotaLimit::UsdPerDay, "NaN"),
        ] {
            let err = limit.parse_value(bad).expect_err(bad);
            assert!(err.contains("hint:"), "{err}");
        }
        assert_eq!(parse_pct("80%"), Ok(80));
        assert_eq!(parse_pct("100"), Ok(100));
        assert!(parse_pct("0%").is_err());
        assert!(parse_pct("120%").is_err());
        assert_eq!(QuotaLimit::parse("usd-per-day"), Ok(QuotaLimit::UsdPerDay));
        assert!(QuotaLimit::parse("usd").is_err());
        assert_eq!(OnHard::parse("refuse"), Ok(OnHard::Refuse));
        assert!(OnHard::parse("kill").is_err());
    }

    #[test]
    fn periods_are_utc_days_and_calendar_months() {
        // 2026-11-21T10:00:00Z.
        let now = 1_795_255_200_000;
        let (s, e, name) = period_of(Period::Day, now);
        assert_eq!(name, "2026-11-21");
        assert_eq!((s, e), (now - 10 * 3_600_000, now + 14 * 3_600_000));
        let (s, e, name) = period_of(Period::Month, now);
        assert_eq!(name, "2026-11");
        assert_eq!(s, now - (20 * 24 + 10) * 3_600_000);
        assert_eq!(e - s, 30 * 24 * 3_600_000);
        // December rolls into the next year.
        let dec = now + 15 * 24 * 3_600_000;
        let (_, e, name) = period_of(Period::Month, dec);
        assert_eq!(name, "2026-12");
        assert_eq!(period_of(Period::Month, e).2, "2027-01");
    }
}
