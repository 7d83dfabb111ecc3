//! `dispatch token create|ls|revoke`: API tokens for `dispatch server`, in the
//! server's database (the local one, or `--database-url`).

use clap::{Args, Subcommand};
use dispatch_core::now_ms;
use dispatch_core::time::human_ago;
use dispatch_server::auth;
use dispatch_server::serve::Backend;

use crate::ctx::Ctx;
use crate::error::{CliError, CliResult, chain};
use crate::output::print_columns;

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
    },
    /// List tokens (never their secrets).
    Ls,
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
        TokenCommand::Create { name } => {
            let (record, token) = auth::create(&store, name).await.map_err(fail)?;
            eprintln!(
                "token {} ({}) created; it is shown only now:",
                record.id, record.name
            );
            println!("{token}");
        }
        TokenCommand::Ls => {
            let now = now_ms();
            let rows: Vec<Vec<String>> = store
                .list_tokens()
                .await
                .map_err(fail)?
                .into_iter()
                .map(|t| {
                    vec![
                        t.id,
                        t.name,
                        human_ago(t.created_at, now),
                        t.revoked_at.map_or_else(
                            || "active".to_string(),
                            |at| format!("revoked {}", human_ago(at, now)),
                        ),
                    ]
                })
                .collect();
            print_columns(&["ID", "NAME", "CREATED", "STATUS"], &rows);
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
