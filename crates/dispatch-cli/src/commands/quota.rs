//! `dispatch quota set|ls|rm`: quotas per project — max live runs, tokens
//! and USD per UTC day and calendar month — each with a soft mark (warn and
//! notify) and a hard action (`wait`: new runs stay queued; `refuse`: new
//! runs are refused). In the local state, or on a server under `--host`
//! (`GET /v1/quotas`, `PUT/DELETE /v1/quotas/{project}`).

use clap::{Args, Subcommand};
use dispatch_core::now_ms;
use dispatch_core::quota::{QuotaLimit, parse_quotas};
use dispatch_store::{QuotaStore, QuotaUse};
use serde_json::json;

use crate::cli::Format;
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::output::{print_columns, print_json};

#[derive(Debug, Args)]
pub struct QuotaArgs {
    #[command(subcommand)]
    pub command: QuotaCommand,
}

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Set limits of a project's quota (each one given replaces that limit; the others stay).
    Set(QuotaSetArgs),
    /// List quotas with what is used of each now.
    Ls {
        /// Only this project's (repeatable); default: every project.
        #[arg(long, value_name = "PROJECT")]
        project: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove a project's quota, or one of its limits.
    Rm {
        #[arg(value_name = "PROJECT")]
        project: String,
        /// Only this limit: max-live-runs, tokens-per-day, tokens-per-month, usd-per-day or usd-per-month.
        #[arg(long, value_name = "NAME")]
        limit: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct QuotaSetArgs {
    #[arg(value_name = "PROJECT")]
    pub project: String,
    /// At most this many runs of the project starting, running or paused at once, across the cluster.
    #[arg(long, value_name = "N")]
    pub max_live_runs: Option<String>,
    /// Tokens (input and output) per UTC day: 2000000, 2M, 500k.
    #[arg(long, value_name = "TOKENS")]
    pub tokens_per_day: Option<String>,
    /// Tokens per calendar month (UTC).
    #[arg(long, value_name = "TOKENS")]
    pub tokens_per_month: Option<String>,
    /// USD per UTC day: 20, 12.50.
    #[arg(long, value_name = "USD")]
    pub usd_per_day: Option<String>,
    /// USD per calendar month (UTC).
    #[arg(long, value_name = "USD")]
    pub usd_per_month: Option<String>,
    /// The soft mark of these limits, percent: crossing it warns and notifies (`quota.soft`), once per period. Default 80%.
    #[arg(long, value_name = "PERCENT")]
    pub soft: Option<String>,
    /// At the hard limit of these: `wait` (new runs stay queued until there is room; default) or `refuse` (new runs are refused, with the reason).
    #[arg(long, value_name = "ACTION")]
    pub on_hard: Option<String>,
}

impl QuotaSetArgs {
    /// The limits given, as written.
    fn values(&self) -> Vec<(QuotaLimit, String)> {
        [
            (QuotaLimit::MaxLiveRuns, &self.max_live_runs),
            (QuotaLimit::TokensPerDay, &self.tokens_per_day),
            (QuotaLimit::TokensPerMonth, &self.tokens_per_month),
            (QuotaLimit::UsdPerDay, &self.usd_per_day),
            (QuotaLimit::UsdPerMonth, &self.usd_per_month),
        ]
        .into_iter()
        .filter_map(|(l, v)| v.clone().map(|v| (l, v)))
        .collect()
    }

    /// The quotas to store, checked here (one line with a hint otherwise).
    fn quotas(&self) -> CliResult<Vec<dispatch_core::quota::Quota>> {
        parse_quotas(
            &self.project,
            &self.values(),
            self.soft.as_deref(),
            self.on_hard.as_deref(),
            now_ms(),
        )
        .map_err(CliError::input)
    }
}

fn check_projects(projects: &[String]) -> CliResult {
    for p in projects {
        dispatch_core::project::check_project(p)
            .map_err(|e| CliError::input(format!("--project {p}: {e}")))?;
    }
    Ok(0)
}

fn limit_of(name: Option<&str>) -> CliResult<Option<QuotaLimit>> {
    name.map(QuotaLimit::parse)
        .transpose()
        .map_err(|e| CliError::input(format!("--limit: {e}")))
}

pub async fn quota(ctx: &Ctx, args: &QuotaArgs) -> CliResult {
    let store = ctx.store()?;
    match &args.command {
        QuotaCommand::Set(a) => {
            let quotas = a.quotas()?;
            store.set_quotas(&quotas).await?;
            let now = store
                .quota_use(std::slice::from_ref(&a.project), now_ms())
                .await?;
            said_set(&a.project, &now);
            resume_paused(ctx, &store, &a.project).await?;
            Ok(0)
        }
        QuotaCommand::Ls { project, format } => {
            check_projects(project)?;
            let quotas = store.quota_use(project, now_ms()).await?;
            print_quotas(&quotas, *format);
            Ok(0)
        }
        QuotaCommand::Rm { project, limit } => {
            dispatch_core::project::check_project(project).map_err(CliError::input)?;
            let limit = limit_of(limit.as_deref())?;
            let removed = store.remove_quotas(project, limit).await?;
            let said = said_removed(project, removed)?;
            resume_paused(ctx, &store, project).await?;
            Ok(said)
        }
    }
}

/// Resumes the runs of `project` that paused for its quota (`ON BUDGET
/// pause`), now that it allows them: each one's helper starts here.
async fn resume_paused(ctx: &Ctx, store: &dispatch_store::SqliteStore, project: &str) -> CliResult {
    let woken = dispatch_runtime::suspend::quota_changed(store, project).await?;
    for run in &woken {
        dispatch_runtime::suspend::start_woken(&ctx.layout, run);
    }
    if !woken.is_empty() {
        eprintln!(
            "resumed {} run(s) of project `{project}` paused for its quota",
            woken.len()
        );
    }
    Ok(0)
}

/// What `set` tells on stderr: the project's quota as it is now.
fn said_set(project: &str, quotas: &[QuotaUse]) {
    for u in quotas {
        eprintln!(
            "quota {project} {}: {} (soft at {}%, on hard: {})",
            u.quota.limit,
            u.text(),
            u.quota.soft_pct,
            u.quota.on_hard.as_str()
        );
    }
}

fn said_removed(project: &str, removed: u64) -> CliResult {
    match removed {
        0 => Err(CliError::input(format!(
            "project `{project}` has no such quota (hint: `dispatch quota ls` lists quotas)"
        ))),
        n => {
            eprintln!("removed {n} limit(s) of project `{project}`");
            Ok(0)
        }
    }
}

/// A listing: a table (one line per limit) or JSON.
pub fn print_quotas(quotas: &[QuotaUse], format: Format) {
    if format == Format::Json {
        print_json(&json!(quotas));
        return;
    }
    let rows: Vec<Vec<String>> = quotas
        .iter()
        .map(|u| {
            let l = u.quota.limit;
            let pct = match u.quota.value > 0.0 {
                true => format!("{:.0}%", 100.0 * u.used / u.quota.value),
                false => "-".into(),
            };
            vec![
                u.quota.project.clone(),
                l.as_str().to_string(),
                l.show(u.used),
                l.show(u.quota.value),
                pct,
                format!("{}%", u.quota.soft_pct),
                u.quota.on_hard.as_str().to_string(),
                u.period.clone().unwrap_or_else(|| "now".into()),
            ]
        })
        .collect();
    print_columns(
        &[
            "PROJECT", "LIMIT", "USED", "MAX", "USE", "SOFT", "ON HARD", "PERIOD",
        ],
        &rows,
    );
}

impl super::remote::Remote {
    /// `dispatch quota --host`: the server's quota routes.
    pub(super) fn quota(&self, args: &QuotaArgs) -> CliResult {
        let encode = super::remote::encode;
        match &args.command {
            QuotaCommand::Set(a) => {
                // Checked here first: a bad value never reaches the server.
                a.quotas()?;
                // As written (`2M`, `$500`): the server parses them as this did.
                let text = |v: &Option<String>| v.clone().map(serde_json::Value::from);
                let request = dispatch_api::QuotaBody {
                    max_live_runs: text(&a.max_live_runs),
                    tokens_per_day: text(&a.tokens_per_day),
                    tokens_per_month: text(&a.tokens_per_month),
                    usd_per_day: text(&a.usd_per_day),
                    usd_per_month: text(&a.usd_per_month),
                    soft: text(&a.soft),
                    on_hard: a.on_hard.clone(),
                };
                let path = format!("/v1/quotas/{}", encode(&a.project));
                let answer: dispatch_api::QuotaSet = self.typed_body("PUT", &path, &request)?;
                said_set(&a.project, &parse(answer.quotas)?);
                Ok(0)
            }
            QuotaCommand::Ls { project, format } => {
                check_projects(project)?;
                let mut all = Vec::new();
                let asks: Vec<String> = match project.as_slice() {
                    [] => vec![String::new()],
                    some => some
                        .iter()
                        .map(|p| format!("?project={}", encode(p)))
                        .collect(),
                };
                for q in asks {
                    let answer: dispatch_api::QuotaList =
                        self.typed("GET", &format!("/v1/quotas{q}"), None)?;
                    all.extend(parse(answer.quotas)?);
                }
                print_quotas(&all, *format);
                Ok(0)
            }
            QuotaCommand::Rm { project, limit } => {
                dispatch_core::project::check_project(project).map_err(CliError::input)?;
                let limit = limit_of(limit.as_deref())?;
                let q = limit.map_or(String::new(), |l| format!("?limit={l}"));
                let answer: dispatch_api::QuotaRemoved = self.typed(
                    "DELETE",
                    &format!("/v1/quotas/{}{q}", encode(project)),
                    None,
                )?;
                said_removed(project, answer.removed)
            }
        }
    }
}

/// The server's quota rows as the records the listing prints.
fn parse(quotas: Vec<dispatch_api::QuotaRow>) -> CliResult<Vec<QuotaUse>> {
    super::remote::as_record("quota listing", quotas)
}
