//! `dispatch approve`, `dispatch deny` and `dispatch approvals ls`.

use dispatch_core::now_ms;
use dispatch_core::time::human_ago;
use dispatch_store::{Decision, ReliabilityStore};

use crate::cli::Format;
use crate::ctx::{Ctx, find_run};
use crate::error::{CliError, CliResult};
use crate::output::{print_columns, print_json};
use crate::reliability_args::{ApprovalsCommand, DecideArgs};

/// Records the decision (store + `$DISPATCH_APPROVALS/<id>.json`) and resumes the run.
pub async fn decide(ctx: &Ctx, args: &DecideArgs, decision: &str) -> CliResult {
    let store = ctx.store()?;
    let run = find_run(&store, &ctx.layout, &args.run).await?;
    if run.state.is_terminal() {
        return Err(CliError::input(format!(
            "run {} is already {}; there is nothing to {decision}",
            run.id,
            run.status()
        )));
    }
    let by = args
        .by
        .clone()
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    let d = Decision {
        decision: decision.to_string(),
        by,
        rationale: args.rationale.clone(),
        at: now_ms(),
    };
    let a = dispatch_runtime::approvals::decide(&store, &ctx.layout, &run.id, &args.approval, &d)
        .await?;
    let verb = if decision == "approve" {
        "approved"
    } else {
        "denied"
    };
    eprintln!(
        "{verb} `{}` of run {} (by {})",
        a.id,
        run.id.short(),
        a.decided_by.as_deref().unwrap_or("?")
    );
    Ok(0)
}

pub async fn approvals(ctx: &Ctx, cmd: &ApprovalsCommand) -> CliResult {
    let ApprovalsCommand::Ls(args) = cmd;
    let list = match ctx.existing_store()? {
        Some(store) => store.list_approvals(None, !args.all).await?,
        None => Vec::new(),
    };
    if args.format == Format::Json {
        print_json(&list);
        return Ok(0);
    }
    let now = now_ms();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            vec![
                a.run_id.short().to_string(),
                a.id.clone(),
                a.summary.clone(),
                human_ago(a.requested_at, now),
                match &a.decision {
                    Some(d) => format!("{d} by {}", a.decided_by.as_deref().unwrap_or("?")),
                    None => match a.deadline {
                        Some(d) => format!("pending (auto-deny in {}s)", ((d - now) / 1000).max(0)),
                        None => "pending".into(),
                    },
                },
            ]
        })
        .collect();
    print_columns(
        &["RUN ID", "APPROVAL", "SUMMARY", "REQUESTED", "DECISION"],
        &rows,
    );
    Ok(0)
}
