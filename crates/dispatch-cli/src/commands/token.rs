//! `dispatch token create|ls|revoke`: API tokens for `dispatch server`, in the
//! server's database (the local one, or `--database-url`).

use clap::{Args, Subcommand};
use dispatch_core::now_ms;
use dispatch_core::time::human_ago;
use dispatch_server::auth;
use dispatch_server::serve::Backend;

use dispatch_store::{ProjectRole, TokenRecord, TokenScope};
use serde_json::json;

use crate::cli::Format;
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult, chain};
use crate::output::{print_columns, print_json, time_text};

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// A PostgreSQL URL; default: the local database.
    #[arg(long, global = true, env = "DISPATCH_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints it once (it is stored hashed).
    Create {
        /// What the token is for.
        #[arg(long, default_value = "default")]
        name: String,
        /// What it may do in every project: read (GET), run (also create, stop, restart, wake and signal runs), approve (also decide approvals), admin (everything, prune included); or the same as roles: viewer, runner, approver, admin. Default: admin. Not with --project.
        #[arg(long, value_name = "SCOPE", conflicts_with = "project")]
        scope: Option<String>,
        /// Bind the token to this project (repeatable): it may do there what its --role allows, and nothing in other projects.
        #[arg(long, value_name = "PROJECT", requires = "role")]
        project: Vec<String>,
        /// Its role in each --project, in the same order (or one role for all): viewer, runner, approver or admin.
        #[arg(long, value_name = "ROLE", requires = "project")]
        role: Vec<String>,
        /// When it stops working, from now: 30d, 12h, 90m (default: never).
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// List tokens with their scope and expiry (never their secrets).
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Revoke a token by its id.
    Revoke {
        #[arg(value_name = "ID")]
        id: String,
    },
}

fn fail(e: impl std::error::Error) -> CliError {
    CliError::input(chain(&e))
}

pub async fn token(ctx: &Ctx, args: &TokenArgs) -> CliResult {
    let backend = Backend::open(&ctx.layout, args.database_url.as_deref(), 1)
        .await
        .map_err(fail)?;
    let store = backend.store;
    match &args.command {
        TokenCommand::Create {
            name,
            scope,
            expires,
            project,
            role,
        } => {
            let projects = bindings(project, role)?;
            // A bound token's scope is its highest role: what it may do
            // beyond any one project (GET /v1/workers, uploading a parcel).
            let scope = match scope {
                Some(s) => parse_scope(s)?,
                None => projects
                    .iter()
                    .map(|p| p.role)
                    .max()
                    .unwrap_or(TokenScope::Admin),
            };
            let expires_at = expires.as_deref().map(parse_expiry).transpose()?;
            let (record, token) = auth::create(&store, name, scope, expires_at, projects)
                .await
                .map_err(fail)?;
            let until = record.expires_at.map_or_else(
                || "never expires".to_string(),
                |at| format!("expires {}", time_text(at, now_ms())),
            );
            let may = match record.projects.is_empty() {
                true => format!("scope {}", record.scope),
                false => projects_text(&record),
            };
            eprintln!(
                "token {} ({}, {may}, {until}) created; it is shown only now:",
                record.id, record.name
            );
            println!("{token}");
        }
        TokenCommand::Ls { format } => {
            let now = now_ms();
            let tokens = store.list_tokens().await.map_err(fail)?;
            if *format == Format::Json {
                let docs: Vec<_> = tokens.iter().map(|t| token_json(t, now)).collect();
                print_json(&docs);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = tokens
                .into_iter()
                .map(|t| {
                    let status = status(&t, now);
                    let projects = match t.projects.is_empty() {
                        true => "*".to_string(),
                        false => projects_text(&t),
                    };
                    vec![
                        t.id,
                        t.name,
                        t.scope.to_string(),
                        projects,
                        human_ago(t.created_at, now),
                        t.expires_at
                            .map_or_else(|| "never".to_string(), |at| time_text(at, now)),
                        status,
                    ]
                })
                .collect();
            print_columns(
                &[
                    "ID", "NAME", "SCOPE", "PROJECTS", "CREATED", "EXPIRES", "STATUS",
                ],
                &rows,
            );
        }
        TokenCommand::Revoke { id } => {
            let record = match store.revoke_token(id, now_ms()).await {
                Ok(record) => record,
                Err(dispatch_store::StoreError::NotFound(_)) => {
                    return Err(CliError::input(format!(
                        "no token `{id}` (hint: `dispatch token ls` lists tokens by id)"
                    )));
                }
                Err(e) => return Err(fail(e)),
            };
            println!("{}", record.id);
        }
    }
    Ok(0)
}

fn parse_scope(s: &str) -> Result<TokenScope, CliError> {
    TokenScope::parse(&s.to_ascii_lowercase()).ok_or_else(|| {
        CliError::input(format!(
            "unknown token scope `{s}` (hint: --scope read, run, approve or admin)"
        ))
    })
}

/// `--project` and `--role`, paired in order (one role: for every project).
fn bindings(projects: &[String], roles: &[String]) -> Result<Vec<ProjectRole>, CliError> {
    if roles.len() != 1 && roles.len() != projects.len() {
        return Err(CliError::input(format!(
            "{} --project and {} --role: give one --role per --project, in the same order, or one --role for all (hint: --project payments --role runner --project search --role viewer)",
            projects.len(),
            roles.len()
        )));
    }
    let mut out: Vec<ProjectRole> = Vec::with_capacity(projects.len());
    for (i, project) in projects.iter().enumerate() {
        dispatch_core::project::check_project(project).map_err(CliError::input)?;
        let role = &roles[if roles.len() == 1 { 0 } else { i }];
        let role = TokenScope::parse(&role.to_ascii_lowercase()).ok_or_else(|| {
            CliError::input(format!(
                "unknown role `{role}` (hint: --role viewer, runner, approver or admin)"
            ))
        })?;
        if out.iter().any(|p| &p.project == project) {
            return Err(CliError::input(format!(
                "--project {project} is given twice (hint: one role per project)"
            )));
        }
        out.push(ProjectRole {
            project: project.clone(),
            role,
        });
    }
    Ok(out)
}

/// `payments:runner,search:viewer`.
fn projects_text(t: &TokenRecord) -> String {
    let parts: Vec<String> = t
        .projects
        .iter()
        .map(|p| format!("{}:{}", p.project, p.role.role()))
        .collect();
    parts.join(",")
}

/// `30d` from now, as a time.
fn parse_expiry(s: &str) -> Result<i64, CliError> {
    let ms = dispatch_core::units::parse_duration_ms_or_seconds(s)
        .ok()
        .filter(|ms| *ms > 0 && *ms < 100 * 365 * 86_400_000)
        .ok_or_else(|| {
            CliError::input(format!(
                "--expires `{s}` is not a duration from now (hint: --expires 30d, 12h or 90m)"
            ))
        })?;
    Ok(now_ms() + ms as i64)
}

fn status(t: &TokenRecord, now: i64) -> String {
    match (t.revoked_at, t.expired(now)) {
        (Some(at), _) => format!("revoked {}", human_ago(at, now)),
        (None, true) => "expired".to_string(),
        (None, false) => "active".to_string(),
    }
}

fn token_json(t: &TokenRecord, now: i64) -> serde_json::Value {
    json!({
        "id": t.id,
        "name": t.name,
        "scope": t.scope,
        "projects": t.projects.iter().map(|p| json!({"project": p.project, "role": p.role.role()})).collect::<Vec<_>>(),
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "revoked_at": t.revoked_at,
        "status": status(t, now).split(' ').next(),
    })
}
