//! `dispatch usage`: what runs spent — calls, tokens and USD — by parcel,
//! model, label, day or project over a period, as a table, JSON or CSV: the cost
//! report a team lead asks for. Read from the local state, or from the
//! server's `GET /v1/usage` under `--host`.

use clap::{Args, ValueEnum};
use dispatch_core::now_ms;
use dispatch_core::time::{format_rfc3339, parse_time};
use dispatch_store::{UsageBy, UsageQuery, UsageReport, UsageRow};
use serde_json::json;

use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::output::{print_columns, print_json};

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// What the rows are: one per parcel, model, label (a run counts under each of its labels), UTC day or project.
    #[arg(long, value_enum, default_value_t)]
    pub by: By,
    /// The period's start: an age (`30d`, `12h`), a date (`2026-11-01`, midnight UTC) or an RFC 3339 time.
    #[arg(long, default_value = "30d", value_name = "TIME")]
    pub since: String,
    /// The period's end (not included), in the same forms; default: now.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only the runs of this project (repeatable); default: every project (a server: every one the token may see).
    #[arg(long, value_name = "PROJECT")]
    pub project: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: UsageFormat,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum By {
    #[default]
    Parcel,
    Model,
    Label,
    Day,
    Project,
}

impl From<By> for UsageBy {
    fn from(b: By) -> UsageBy {
        match b {
            By::Parcel => UsageBy::Parcel,
            By::Model => UsageBy::Model,
            By::Label => UsageBy::Label,
            By::Day => UsageBy::Day,
            By::Project => UsageBy::Project,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum UsageFormat {
    #[default]
    Table,
    Json,
    Csv,
}

/// The report's query: the times resolved against now, once.
pub fn query(args: &UsageArgs) -> CliResult<UsageQuery> {
    let now = now_ms();
    let time = |flag: &str, s: &str| {
        day_start(s).map(Ok).unwrap_or_else(|| parse_time(s, now)).map_err(|e| {
            CliError::input(format!(
                "{flag} {s}: {e} (hint: an age such as 30d or 12h, or a time such as 2026-11-01)"
            ))
        })
    };
    let since = time("--since", &args.since)?;
    let until = match &args.until {
        Some(u) => time("--until", u)?,
        None => now,
    };
    if until <= since {
        return Err(CliError::input(format!(
            "--since {} is not before --until {}: the period is empty (hint: --since 30d, or an --until later than --since)",
            args.since,
            args.until.as_deref().unwrap_or("now")
        )));
    }
    for p in &args.project {
        dispatch_core::project::check_project(p)
            .map_err(|e| CliError::input(format!("--project {p}: {e}")))?;
    }
    Ok(UsageQuery {
        by: args.by.into(),
        since: Some(since),
        until: Some(until),
        projects: args.project.clone(),
    })
}

/// A bare date (`2026-11-01`) as the start of that day, UTC: how a month
/// or a day is asked for.
fn day_start(s: &str) -> Option<i64> {
    let day = chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

pub async fn usage(ctx: &Ctx, args: &UsageArgs) -> CliResult {
    let q = query(args)?;
    let store = ctx.store()?;
    let report = dispatch_store::usage_report(&store, &q).await?;
    print_report(args, &q, &report)
}

/// Prints `report` in the chosen format; the notes on estimated and
/// unpriced calls go to stderr.
pub fn print_report(args: &UsageArgs, q: &UsageQuery, report: &UsageReport) -> CliResult {
    match args.format {
        UsageFormat::Json => print_json(&json!({
            "by": q.by,
            "since": q.since.and_then(format_rfc3339),
            "until": q.until.and_then(format_rfc3339),
            "rows": report.rows,
            "total": report.total,
        })),
        UsageFormat::Csv => print_csv(q.by, &report.rows)?,
        UsageFormat::Table => {
            let mut rows: Vec<Vec<String>> = report.rows.iter().map(cells).collect();
            if report.rows.len() > 1 {
                rows.push(cells(&report.total));
            }
            let key = q.by.as_str().to_uppercase();
            print_columns(
                &[
                    &key,
                    "RUNS",
                    "CALLS",
                    "INPUT TOKENS",
                    "OUTPUT TOKENS",
                    "COST (USD)",
                ],
                &rows,
            );
            if report.rows.is_empty() {
                eprintln!("no model call was billed in this period");
            }
        }
    }
    notes(&report.total);
    Ok(0)
}

fn cells(r: &UsageRow) -> Vec<String> {
    vec![
        r.key.clone(),
        r.runs.to_string(),
        r.calls.to_string(),
        r.input_tokens.to_string(),
        r.output_tokens.to_string(),
        format!("{:.4}", r.cost_usd),
    ]
}

fn print_csv(by: UsageBy, rows: &[UsageRow]) -> CliResult<()> {
    let fail = |e: csv::Error| CliError::input(format!("cannot write CSV to stdout: {e}"));
    let mut out = csv::Writer::from_writer(std::io::stdout().lock());
    out.write_record([
        by.as_str(),
        "runs",
        "calls",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "estimated_calls",
        "unpriced_calls",
    ])
    .map_err(fail)?;
    for r in rows {
        out.write_record([
            r.key.clone(),
            r.runs.to_string(),
            r.calls.to_string(),
            r.input_tokens.to_string(),
            r.output_tokens.to_string(),
            r.cost_usd.to_string(),
            r.estimated_calls.to_string(),
            r.unpriced_calls.to_string(),
        ])
        .map_err(fail)?;
    }
    out.flush()
        .map_err(|e| CliError::input(format!("cannot write CSV to stdout: {e}")))
}

/// What the sums do not say by themselves.
fn notes(total: &UsageRow) {
    if total.estimated_calls > 0 {
        eprintln!(
            "note: {} call(s) were billed on an estimate (a stream cut or stopped, or lost with its attempt)",
            total.estimated_calls
        );
    }
    if total.unpriced_calls > 0 {
        eprintln!(
            "note: {} call(s) have no price, so their cost is not counted (hint: a PRICE line in the Agentfile prices a model)",
            total.unpriced_calls
        );
    }
}

impl super::remote::Remote {
    /// `dispatch usage --host`: the server's `GET /v1/usage`, with the
    /// period resolved here (so `--since 2026-11-01` means the same as
    /// locally).
    pub(super) fn usage(&self, args: &UsageArgs) -> CliResult {
        let q = query(args)?;
        let project = match q.projects.as_slice() {
            [] => String::new(),
            [one] => format!("&project={}", super::remote::encode(one)),
            _ => {
                return Err(CliError::input(
                    "a server's cost report takes one --project at a time (hint: run it once per project, or leave --project out for every project your token may see)",
                ));
            }
        };
        let at =
            |t: Option<i64>| super::remote::encode(&t.and_then(format_rfc3339).unwrap_or_default());
        let answer: dispatch_api::UsageReport = self.typed(
            "GET",
            &format!(
                "/v1/usage?by={}&since={}&until={}{project}",
                q.by.as_str(),
                at(q.since),
                at(q.until)
            ),
            None,
        )?;
        let report = UsageReport {
            rows: answer.rows.into_iter().map(row).collect(),
            total: row(answer.total),
        };
        print_report(args, &q, &report)
    }
}

/// A row of the server's report as the store's, which the report prints.
fn row(r: dispatch_api::UsageRow) -> UsageRow {
    UsageRow {
        key: r.key,
        runs: r.runs,
        calls: r.calls,
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        cost_usd: r.cost_usd,
        estimated_calls: r.estimated_calls,
        unpriced_calls: r.unpriced_calls,
    }
}
