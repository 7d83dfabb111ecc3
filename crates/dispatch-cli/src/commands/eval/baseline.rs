//! `--baseline <eval id | parcel digest>`: compares this eval with an earlier
//! one kept under `.dispatch/evals/` (for a digest: that parcel's newest): per case, the pass rate and the mean tokens, cost and
//! time of its runs. A lower pass rate, or tokens or cost worse than the
//! threshold, is a regression that fails the eval; slower runs are flagged
//! only (time on a shared machine is noisy).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::execute::Outcome;
use super::report::Report;
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};

/// How one case compares.
#[derive(Debug, Serialize, Deserialize)]
pub struct CaseDelta {
    pub case: String,
    /// `[baseline, now]` for each measure.
    pub pass_rate: [f64; 2],
    pub tokens: [f64; 2],
    pub cost_usd: [f64; 2],
    pub duration_ms: [f64; 2],
    /// What got worse, one line each (`cost +35% ($0.0020 → $0.0027)`).
    pub regressions: Vec<String>,
    /// Worse, but not failing the eval (time).
    pub slower: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Comparison {
    pub baseline: String,
    /// The relative change counted as worse (0.1 = 10 %).
    pub threshold: f64,
    pub cases: Vec<CaseDelta>,
    /// Cases of this eval the baseline did not have.
    pub new_cases: Vec<String>,
    /// Cases with a regression.
    pub regressed: Vec<String>,
}

/// Loads the kept report `--baseline` names: an eval id (or a unique prefix
/// of one), else a parcel digest (or a prefix of it, `sha256:` optional),
/// whose newest kept eval is the baseline.
pub async fn load(ctx: &Ctx, id: &str) -> CliResult<Report> {
    if let Some(report) = from_store(ctx, id).await? {
        return Ok(report);
    }
    from_files(ctx, id)
}

/// The eval from the run database: by id (or a unique prefix), else the
/// newest eval of a parcel digest.
async fn from_store(ctx: &Ctx, id: &str) -> CliResult<Option<Report>> {
    use dispatch_store::EvalStore;
    let store = ctx.store()?;
    let found = store.evals_with_prefix(id, 2).await?;
    let record = match found.as_slice() {
        [one] => Some(one.clone()),
        [first, ..] if first.id == id => Some(first.clone()),
        [] => {
            let digest = id.strip_prefix("sha256:").unwrap_or(id);
            if digest.len() >= 4 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                store.latest_eval_of(digest).await?
            } else {
                None
            }
        }
        _ => {
            return Err(CliError::input(format!(
                "--baseline {id}: several evals start with it (hint: give more of the id)"
            )));
        }
    };
    record
        .map(|r| {
            serde_json::from_value(r.report).map_err(|e| {
                CliError::input(format!(
                    "--baseline {id}: the kept report is not one this dispatch reads ({e})"
                ))
            })
        })
        .transpose()
}

/// The eval from `.dispatch/evals/` (reports kept before the run database
/// kept them).
fn from_files(ctx: &Ctx, id: &str) -> CliResult<Report> {
    let dir = ctx.layout.root().join("evals");
    let hint = "(hint: give the eval id `dispatch eval` prints first, or the digest of a parcel evaluated before; evals are kept in the run database)";
    let names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default();
    let by_id: Vec<&String> = names.iter().filter(|n| n.starts_with(id)).collect();
    match by_id.as_slice() {
        [one] => return read(&dir.join(one), id),
        [] => {}
        many => {
            return Err(CliError::input(format!(
                "--baseline {id}: {} evals start with it (hint: give more of the id)",
                many.len()
            )));
        }
    }
    let digest = id.strip_prefix("sha256:").unwrap_or(id);
    if digest.len() >= 4 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut newest: Option<Report> = None;
        for name in &names {
            // A report that cannot be read is not this parcel's.
            let Ok(report) = read(&dir.join(name), id) else {
                continue;
            };
            let theirs = report
                .parcel
                .strip_prefix("sha256:")
                .unwrap_or(&report.parcel);
            if theirs.starts_with(digest)
                && newest
                    .as_ref()
                    .is_none_or(|n| report.created_at > n.created_at)
            {
                newest = Some(report);
            }
        }
        if let Some(report) = newest {
            return Ok(report);
        }
    }
    Err(CliError::input(format!(
        "--baseline {id}: no eval with that id or of a parcel with that digest {hint}"
    )))
}

fn read(path: &std::path::Path, id: &str) -> CliResult<Report> {
    let bytes = std::fs::read(path).map_err(|e| {
        CliError::input(format!(
            "--baseline {id}: cannot read {}: {e}",
            path.display()
        ))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        CliError::input(format!(
            "--baseline {id}: {} is not an eval report ({e})",
            path.display()
        ))
    })
}

#[derive(Default)]
struct Means {
    runs: f64,
    passed: f64,
    tokens: f64,
    cost: f64,
    ms: f64,
}

fn means(results: &[Outcome]) -> BTreeMap<String, Means> {
    let mut by: BTreeMap<String, Means> = BTreeMap::new();
    for o in results {
        let m = by.entry(o.case.clone()).or_default();
        m.runs += 1.0;
        m.passed += f64::from(u8::from(o.passed));
        m.tokens += o.tokens as f64;
        m.cost += o.cost_usd;
        m.ms += o.duration_ms as f64;
    }
    for m in by.values_mut() {
        let n = m.runs.max(1.0);
        m.passed /= n;
        m.tokens /= n;
        m.cost /= n;
        m.ms /= n;
    }
    by
}

/// Compares `now` with `then`.
pub fn compare(then: &Report, now: &[Outcome], threshold: f64) -> Comparison {
    let before = means(&then.results);
    let after = means(now);
    let mut cases = Vec::new();
    let mut new_cases = Vec::new();
    for (case, a) in &after {
        let Some(b) = before.get(case) else {
            new_cases.push(case.clone());
            continue;
        };
        let mut regressions = Vec::new();
        if a.passed + 1e-9 < b.passed {
            regressions.push(format!(
                "pass rate {:.0}% → {:.0}%",
                b.passed * 100.0,
                a.passed * 100.0
            ));
        }
        let worse = |then: f64, now: f64| now > then * (1.0 + threshold) && now > then;
        if worse(b.tokens, a.tokens) {
            regressions.push(format!(
                "tokens {} ({:.0} → {:.0})",
                change(b.tokens, a.tokens),
                b.tokens,
                a.tokens
            ));
        }
        if worse(b.cost, a.cost) {
            regressions.push(format!(
                "cost {} (${:.4} → ${:.4})",
                change(b.cost, a.cost),
                b.cost,
                a.cost
            ));
        }
        let slower = worse(b.ms, a.ms).then(|| {
            format!(
                "time {} ({:.0} ms → {:.0} ms)",
                change(b.ms, a.ms),
                b.ms,
                a.ms
            )
        });
        cases.push(CaseDelta {
            case: case.clone(),
            pass_rate: [b.passed, a.passed],
            tokens: [b.tokens, a.tokens],
            cost_usd: [b.cost, a.cost],
            duration_ms: [b.ms, a.ms],
            regressions,
            slower,
        });
    }
    let regressed = cases
        .iter()
        .filter(|c| !c.regressions.is_empty())
        .map(|c| c.case.clone())
        .collect();
    Comparison {
        baseline: then.eval.clone(),
        threshold,
        cases,
        new_cases,
        regressed,
    }
}

fn change(then: f64, now: f64) -> String {
    if then <= 0.0 {
        return "up from 0".to_string();
    }
    format!("{:+.0}%", (now - then) / then * 100.0)
}

/// The comparison for people, after the table.
pub fn print(c: &Comparison) {
    let mut text = format!(
        "\ncompared with eval {} (worse by more than {:.0}% is a regression):\n",
        c.baseline,
        c.threshold * 100.0
    );
    for d in &c.cases {
        let mut notes: Vec<String> = d
            .regressions
            .iter()
            .map(|r| format!("REGRESSION {r}"))
            .collect();
        notes.extend(d.slower.clone());
        let verdict = if notes.is_empty() {
            "no regression".to_string()
        } else {
            notes.join(" · ")
        };
        text.push_str(&format!("  {}: {verdict}\n", d.case));
    }
    for n in &c.new_cases {
        text.push_str(&format!("  {n}: new (not in the baseline)\n"));
    }
    super::say::out(&text);
}
