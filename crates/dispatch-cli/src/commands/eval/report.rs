//! The eval's report: a table for people, JSON, or JUnit XML for CI. Data
//! goes to stdout; progress went to stderr.

use std::collections::BTreeMap;

use dispatch_core::time::human_duration;
use serde::{Deserialize, Serialize};

use super::execute::Outcome;
use crate::output::{cost_text, print_columns};

/// The whole eval, as printed with `--format json` and kept under
/// `.dispatch/evals/<id>.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub eval: String,
    pub parcel: String,
    pub parcel_name: String,
    pub created_at: i64,
    pub results: Vec<Outcome>,
    pub summary: Summary,
    /// Why the eval stopped before every case ran (`dispatch stop` of its
    /// run, Ctrl-C); its cases not run are `not_run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// `--baseline`: how this eval compares with an earlier one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<super::baseline::Comparison>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Summary {
    /// Runs (cases × repeats).
    pub runs: usize,
    pub passed: usize,
    pub failed: usize,
    /// passed / runs.
    pub pass_rate: f64,
    /// Each case must pass at least this share of its repeats.
    pub min_pass_rate: f64,
    /// Cases under `min_pass_rate`.
    pub failing_cases: Vec<String>,
    pub tokens: u64,
    pub cost_usd: f64,
    pub duration_ms: u64,
    /// Every case met `min_pass_rate` (and, with `--baseline`, none regressed).
    pub ok: bool,
}

impl Summary {
    pub fn of(results: &[Outcome], min_pass_rate: f64) -> Summary {
        let passed = results.iter().filter(|o| o.passed).count();
        let mut per_case: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for o in results {
            let e = per_case.entry(&o.case).or_default();
            e.0 += usize::from(o.passed);
            e.1 += 1;
        }
        let failing_cases: Vec<String> = per_case
            .iter()
            .filter(|(_, (p, n))| (*p as f64) < min_pass_rate * (*n as f64) - 1e-9)
            .map(|(c, _)| c.to_string())
            .collect();
        Summary {
            runs: results.len(),
            passed,
            failed: results.len() - passed,
            pass_rate: if results.is_empty() {
                1.0
            } else {
                passed as f64 / results.len() as f64
            },
            min_pass_rate,
            ok: failing_cases.is_empty(),
            failing_cases,
            tokens: results.iter().map(|o| o.tokens).sum(),
            cost_usd: results.iter().map(|o| o.cost_usd).sum(),
            duration_ms: results.iter().map(|o| o.duration_ms).sum(),
        }
    }
}

/// The table: one row per run, then the totals.
pub fn print_table(r: &Report) {
    let rows: Vec<Vec<String>> = r
        .results
        .iter()
        .map(|o| {
            let name = if o.repeat > 1 || r.results.iter().any(|x| x.repeat > 1) {
                format!("{} #{}", o.case, o.repeat)
            } else {
                o.case.clone()
            };
            let result = if o.passed {
                "pass".to_string()
            } else {
                format!("FAIL: {}", o.failures.first().map_or("", String::as_str))
            };
            vec![
                name,
                result,
                o.tokens.to_string(),
                cost_text(o.cost_usd),
                human_duration(o.duration_ms as i64),
                o.run_id.clone(),
            ]
        })
        .collect();
    print_columns(&["CASE", "RESULT", "TOKENS", "COST", "TIME", "RUN"], &rows);
    let s = &r.summary;
    super::say::out(&format!(
        "eval {} {} · tokens {} · cost {} · time {}\n",
        r.eval,
        verdict(r),
        s.tokens,
        cost_text(s.cost_usd),
        human_duration(s.duration_ms as i64)
    ));
}

/// `ok: 3/3 passed (100%)`, or `FAILED: …` with every reason it failed:
/// `FAILED: 2/2 passed (100%), 1 regression against the baseline (refund)`.
pub fn verdict(r: &Report) -> String {
    let s = &r.summary;
    let counts = format!(
        "{}/{} passed ({:.0}%)",
        s.passed,
        s.runs,
        s.pass_rate * 100.0
    );
    if s.ok {
        return format!("ok: {counts}");
    }
    let mut why = Vec::new();
    if let Some(stopped) = &r.stopped {
        why.push(format!("stopped: {stopped}"));
    }
    if !s.failing_cases.is_empty() {
        let n = s.failing_cases.len();
        let what = if s.min_pass_rate >= 1.0 {
            format!("{} failed", cases(n))
        } else {
            format!("{} under the pass rate {}", cases(n), s.min_pass_rate)
        };
        why.push(format!("{what} ({})", s.failing_cases.join(", ")));
    }
    if let Some(c) = &r.baseline
        && !c.regressed.is_empty()
    {
        let n = c.regressed.len();
        let plural = if n == 1 { "" } else { "s" };
        why.push(format!(
            "{n} regression{plural} against the baseline ({})",
            c.regressed.join(", ")
        ));
    }
    format!("FAILED: {counts}, {}", why.join(", "))
}

fn cases(n: usize) -> String {
    if n == 1 {
        "1 case".to_string()
    } else {
        format!("{n} cases")
    }
}

/// JUnit XML (see [`super::junit`]): a testcase per run, failed by its
/// expectations or by its case's regression against the baseline.
pub fn junit(r: &Report) -> String {
    super::junit::write(r)
}

#[cfg(test)]
mod tests {
    use super::{Report, Summary, verdict};
    use crate::commands::eval::baseline::Comparison;

    fn report(passed: usize, runs: usize, failing: &[&str]) -> Report {
        Report {
            eval: "e".into(),
            parcel: "p".into(),
            parcel_name: "n".into(),
            created_at: 0,
            results: Vec::new(),
            summary: Summary {
                runs,
                passed,
                failed: runs - passed,
                pass_rate: passed as f64 / runs as f64,
                min_pass_rate: 1.0,
                failing_cases: failing.iter().map(|c| c.to_string()).collect(),
                tokens: 0,
                cost_usd: 0.0,
                duration_ms: 0,
                ok: failing.is_empty(),
            },
            stopped: None,
            baseline: None,
        }
    }

    #[test]
    fn a_failed_verdict_says_every_reason() {
        assert_eq!(verdict(&report(2, 2, &[])), "ok: 2/2 passed (100%)");
        assert_eq!(
            verdict(&report(1, 3, &["a", "b"])),
            "FAILED: 1/3 passed (33%), 2 cases failed (a, b)"
        );
        let mut r = report(2, 2, &[]);
        r.summary.ok = false;
        r.baseline = Some(Comparison {
            baseline: "old".into(),
            threshold: 0.1,
            cases: Vec::new(),
            new_cases: Vec::new(),
            regressed: vec!["dear".into()],
        });
        assert_eq!(
            verdict(&r),
            "FAILED: 2/2 passed (100%), 1 regression against the baseline (dear)"
        );
        let mut r = report(3, 5, &["flaky"]);
        r.summary.min_pass_rate = 0.8;
        r.stopped = Some("interrupted (Ctrl-C)".into());
        assert_eq!(
            verdict(&r),
            "FAILED: 3/5 passed (60%), stopped: interrupted (Ctrl-C), 1 case under the pass rate 0.8 (flaky)"
        );
    }
}
