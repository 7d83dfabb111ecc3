//! `dispatch eval`: runs an agent's test cases as real runs and reports
//! pass/fail, tokens, cost and time (see docs/evals.md).
//!
//! Exit codes: 0 when every case passed (with `--min-pass-rate`: every case
//! passed at least that share of its repeats, and with `--baseline` none
//! regressed); 1 when one did not; 125 on
//! bad input (a case file that does not parse, an unknown expectation, …).

mod baseline;
mod cases;
mod cassette;
mod check;
mod execute;
mod grade;
mod junit;
mod pool;
pub(crate) mod remote;
mod report;
mod say;
mod upstream;

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use dispatch_core::now_ms;
use dispatch_runtime::group::EVAL_RUN_LABEL;
use dispatch_runtime::launch::resolve_parcel;

use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};

/// Exit code of an eval with a failing case.
pub const EXIT_EVAL_FAILED: i32 = 1;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The agent: a directory holding an Agentfile, or a built parcel's name or digest.
    pub source: String,
    /// A TOML file of [[case]] tables (repeatable); default: the Agentfile's EVAL files.
    #[arg(long = "cases", value_name = "FILE")]
    pub cases: Vec<PathBuf>,
    /// Only the cases whose name contains this text (repeatable).
    #[arg(long = "case", value_name = "NAME")]
    pub only: Vec<String>,
    /// Run at most N cases at once.
    #[arg(long, short = 'j', value_name = "N", default_value_t = 4)]
    pub jobs: usize,
    /// Run each case N times (for models that do not always answer alike).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub repeat: u32,
    /// Pass when each case passes at least this share (0..1) of its repeats (default 1).
    #[arg(long, value_name = "RATE", allow_hyphen_values = true)]
    pub min_pass_rate: Option<String>,
    /// Record every native model call into cassette DIR (live models).
    #[arg(long, value_name = "DIR", conflicts_with = "replay")]
    pub record: Option<PathBuf>,
    /// Answer every native model call from cassette DIR: no network, no key.
    #[arg(long, value_name = "DIR")]
    pub replay: Option<PathBuf>,
    /// With --replay: answer native tool calls from the cassette too, instead of running the tools.
    #[arg(long, requires = "replay")]
    pub replay_tools: bool,
    /// Compare with an earlier eval (its id or a unique prefix; or a parcel digest: that parcel's newest eval): pass rate, tokens, cost, time per case.
    #[arg(long, value_name = "EVAL_ID|DIGEST")]
    pub baseline: Option<String>,
    /// With --baseline: how much worse tokens, cost or time may get before it counts (0.1 = 10%).
    #[arg(
        long,
        value_name = "RATE",
        default_value = "0.1",
        allow_hyphen_values = true
    )]
    pub regression_threshold: String,
    /// table (default), json, or junit (JUnit XML for CI).
    #[arg(long, value_enum, default_value_t = EvalFormat::Table)]
    pub format: EvalFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EvalFormat {
    Table,
    Json,
    Junit,
}

pub async fn eval(ctx: &Ctx, args: &EvalArgs) -> CliResult {
    let prep = prepare(ctx, args)?;
    let baseline = match &args.baseline {
        Some(id) => Some(baseline::load(ctx, id).await?),
        None => None,
    };
    let judged = prep.cases.iter().any(|c| c.expect.judge.is_some());
    cassette::setup(
        args.record.as_deref(),
        args.replay.as_deref(),
        args.replay_tools,
        &prep.parcel,
        judged,
    )?;
    let store = ctx.store()?;
    let mut group =
        dispatch_runtime::group::open(&store, &ctx.layout, group_opening(&prep, args)).await?;
    let eval_id = group.id.to_string();
    announce(&eval_id, args, &prep, "");
    let plan = execute::Plan {
        eval_id: &eval_id,
        parcel: &prep.parcel,
        jobs: args.jobs,
        repeat: args.repeat,
        options: Default::default(),
        group: Some(group.id.clone()),
    };
    let local = execute::Local { ctx, store: &store };
    let finished = match pool::run_all(&local, &plan, &prep.cases).await {
        Ok(f) => f,
        Err(e) => {
            let end = dispatch_runtime::group::End::Failed(format!("the eval broke off: {e}"));
            let _ =
                dispatch_runtime::group::close(&store, &mut group, end, None, Default::default())
                    .await;
            return Err(e);
        }
    };
    let mut report = conclude(eval_id, &prep, finished.results, baseline);
    report.stopped = finished.stopped;
    let json = serde_json::to_value(&report).expect("a report is plain data");
    let (end, output) = dispatch_runtime::group::eval_end(&json);
    let used = dispatch_runtime::group::eval_usage(&json);
    dispatch_runtime::group::close(&store, &mut group, end, Some(output), used).await?;
    keep(ctx, &report);
    keep_in_store(&store, &json).await;
    Ok(print_report(args, &report))
}

/// The eval's run: a group run of the agent's parcel whose children are
/// the cases' runs; its payload says what the eval runs.
pub(crate) fn group_opening<'a>(
    prep: &'a Prepared,
    args: &EvalArgs,
) -> dispatch_runtime::group::Opening<'a> {
    let names: Vec<&str> = prep.cases.iter().map(|c| c.name.as_str()).collect();
    dispatch_runtime::group::Opening {
        parcel: &prep.parcel,
        payload: serde_json::json!({"eval": {"cases": names, "repeat": args.repeat, "jobs": args.jobs}}),
        trigger: dispatch_core::Trigger::Eval,
        labels: vec!["eval".to_string(), EVAL_RUN_LABEL.to_string()],
    }
}

/// `restart` and `replay` refuse an eval's run: it starts no program, so
/// there is nothing to run again but the eval itself.
pub(crate) fn refuse_rerun(run: &dispatch_store::Run, what: &str) -> CliResult<()> {
    if run.labels.iter().any(|l| l == EVAL_RUN_LABEL) {
        return Err(CliError::input(format!(
            "cannot {what} run {}: it is an eval's run, which runs no program of its own (hint: run `dispatch eval {}` again)",
            run.id.short(),
            run.parcel_name
        )));
    }
    Ok(())
}

/// What an eval checked before any run: its limits, parcel and cases.
pub(crate) struct Prepared {
    pub min_pass_rate: f64,
    pub threshold: f64,
    pub parcel: dispatch_core::parcel::Parcel,
    pub cases: Vec<cases::Case>,
}

/// Checks the flags, builds (or finds) the parcel and loads the cases it
/// will run (`--case` applied, every judge's model known).
fn prepare(ctx: &Ctx, args: &EvalArgs) -> CliResult<Prepared> {
    let min_pass_rate = parse_rate(args.min_pass_rate.as_deref())?;
    if args.repeat == 0 {
        return Err(CliError::input(
            "--repeat 0 runs nothing (hint: --repeat 1 or more)",
        ));
    }
    if args.jobs == 0 {
        return Err(CliError::input(
            "--jobs 0 runs nothing (hint: --jobs 1 or more)",
        ));
    }
    let threshold = parse_threshold(&args.regression_threshold)?;
    let parcel = resolve_parcel(&ctx.layout, &args.source)?;
    let mut cases = load_cases(args, &parcel)?;
    if !args.only.is_empty() {
        cases.retain(|c| args.only.iter().any(|o| c.name.contains(o.as_str())));
        if cases.is_empty() {
            return Err(CliError::input(format!(
                "no case name contains {} (hint: drop --case to run them all)",
                args.only.join(" or ")
            )));
        }
    }
    for c in &cases {
        if let Some(spec) = &c.expect.judge {
            grade::model_for(spec, parcel.manifest.agent.as_ref())
                .map_err(|e| CliError::input(format!("case \"{}\": {e}", c.name)))?;
        }
    }
    Ok(Prepared {
        min_pass_rate: min_pass_rate.unwrap_or(1.0),
        threshold,
        parcel,
        cases,
    })
}

/// The eval's first line on stderr (its id: what `--baseline` takes).
fn announce(eval_id: &str, args: &EvalArgs, prep: &Prepared, where_: &str) {
    say::err(&format!(
        "eval {eval_id}: {} case(s) × {} of {} ({}), {} at a time{where_}",
        prep.cases.len(),
        args.repeat,
        prep.parcel.manifest.name,
        prep.parcel.short_digest(),
        args.jobs
    ));
}

/// The report of finished runs, compared with the baseline when there is one.
fn conclude(
    eval_id: String,
    prep: &Prepared,
    results: Vec<execute::Outcome>,
    baseline: Option<report::Report>,
) -> report::Report {
    let mut summary = report::Summary::of(&results, prep.min_pass_rate);
    let comparison = baseline.map(|b| baseline::compare(&b, &results, prep.threshold));
    if let Some(c) = &comparison
        && !c.regressed.is_empty()
    {
        summary.ok = false;
    }
    report::Report {
        eval: eval_id,
        parcel: prep.parcel.digest.clone(),
        parcel_name: prep.parcel.manifest.name.clone(),
        created_at: now_ms(),
        results,
        summary,
        stopped: None,
        baseline: comparison,
    }
}

/// Prints the report as asked; the exit code.
fn print_report(args: &EvalArgs, report: &report::Report) -> i32 {
    match args.format {
        EvalFormat::Table => {
            report::print_table(report);
            if let Some(c) = &report.baseline {
                baseline::print(c);
            }
        }
        EvalFormat::Json => crate::output::print_json(report),
        EvalFormat::Junit => say::out(&report::junit(report)),
    }
    if report.summary.ok {
        0
    } else {
        EXIT_EVAL_FAILED
    }
}

/// `--min-pass-rate`: a number from 0 to 1.
fn parse_rate(text: Option<&str>) -> CliResult<Option<f64>> {
    let Some(t) = text else { return Ok(None) };
    match t.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(Some(r)),
        _ => Err(CliError::input(format!(
            "--min-pass-rate {t} is not a rate from 0 to 1 (hint: --min-pass-rate 0.8 passes a case that passes 4 of 5 repeats)"
        ))),
    }
}

/// `--regression-threshold`: a non-negative share.
fn parse_threshold(t: &str) -> CliResult<f64> {
    match t.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(CliError::input(format!(
            "--regression-threshold {t} is not a share of 0 or more (hint: 0.1 counts 10% more tokens, cost or time as worse)"
        ))),
    }
}

/// The cases of `--cases` files, else of the parcel's EVAL files.
fn load_cases(
    args: &EvalArgs,
    parcel: &dispatch_core::parcel::Parcel,
) -> CliResult<Vec<cases::Case>> {
    let files: Vec<(PathBuf, String)> = if args.cases.is_empty() {
        let dir = parcel.files_dir();
        parcel
            .manifest
            .evals
            .iter()
            .map(|p| {
                let shown = p
                    .strip_prefix(dispatch_core::agentfile::EVAL_DIR)
                    .map_or(p.as_str(), |s| s.trim_start_matches('/'));
                (dir.join(p), shown.to_string())
            })
            .collect()
    } else {
        args.cases
            .iter()
            .map(|p| (p.clone(), p.display().to_string()))
            .collect()
    };
    if files.is_empty() {
        return Err(CliError::input(format!(
            "{} has no eval cases (hint: add `EVAL evals/smoke.toml` to its Agentfile, or pass --cases FILE)",
            parcel.manifest.name
        )));
    }
    let mut all = Vec::new();
    for (path, shown) in files {
        let loaded = cases::load(&path, &shown)?;
        cases::check_declared_tools(&loaded, &shown, &parcel.manifest)?;
        all.extend(loaded);
    }
    Ok(all)
}

/// Keeps the report in the run database (`--baseline` looks there first);
/// a failure to keep it is said, not fatal.
async fn keep_in_store(store: &dispatch_store::sqlite::SqliteStore, report: &serde_json::Value) {
    use dispatch_store::EvalStore;
    let text = |k: &str| report[k].as_str().unwrap_or_default().to_string();
    let record = dispatch_store::EvalRecord {
        id: text("eval"),
        parcel_digest: text("parcel"),
        parcel_name: text("parcel_name"),
        created_at: report["created_at"].as_i64().unwrap_or_default(),
        report: report.clone(),
    };
    if let Err(e) = store.put_eval(&record).await {
        say::err(&format!(
            "warning: cannot keep the eval report in the run database: {e}"
        ));
    }
}

/// Keeps the report under `.dispatch/evals/<id>.json` (for `--baseline`);
/// a failure to write it is said, not fatal.
fn keep(ctx: &Ctx, report: &report::Report) {
    let dir = ctx.layout.root().join("evals");
    let path = dir.join(format!("{}.json", report.eval));
    let result = std::fs::create_dir_all(&dir).and_then(|()| {
        let bytes = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
        std::fs::write(&path, bytes)
    });
    if let Err(e) = result {
        say::err(&format!(
            "warning: cannot keep the eval report at {}: {e}",
            path.display()
        ));
    }
}
