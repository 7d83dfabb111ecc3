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
    let verdict = if s.ok { "ok" } else { "FAILED" };
    let under = if s.failing_cases.is_empty() {
        String::new()
    } else {
        format!(
            " · under the pass rate {}: {}",
            s.min_pass_rate,
            s.failing_cases.join(", ")
        )
    };
    println!(
        "eval {} {verdict}: {}/{} passed ({:.0}%) · tokens {} · cost {} · time {}{under}",
        r.eval,
        s.passed,
        s.runs,
        s.pass_rate * 100.0,
        s.tokens,
        cost_text(s.cost_usd),
        human_duration(s.duration_ms as i64)
    );
}

/// JUnit XML: one testsuite for the eval, one testcase per run. It follows
/// the JUnit schema CI servers read (Jenkins' `junit-10.xsd`; the tests
/// validate it): each case's run id, tokens and cost are in its
/// `system-out`, the eval's id and parcel in the suite's properties.
pub fn junit(r: &Report) -> String {
    super::junit::write(r)
}
