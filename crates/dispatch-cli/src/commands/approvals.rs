//! `dispatch approve`, `dispatch deny` and `dispatch approvals ls`.

use dispatch_core::now_ms;
use dispatch_core::time::human_ago;
use dispatch_store::{Approval, Decision, ReliabilityStore};

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
        return Err(finished(&run, decision));
    }
    let d = Decision {
        decision: decision.to_string(),
        by: decider(args),
        rationale: args.rationale.clone(),
        at: now_ms(),
        input: input_of(args)?,
    };
    let approval = match &args.approval {
        Some(a) => a.clone(),
        None => only_pending(
            &run,
            &store.list_approvals(Some(&run.id), true).await?,
            decision,
        )?,
    };
    let a =
        dispatch_runtime::approvals::decide(&store, &ctx.layout, &run.id, &approval, &d).await?;
    say_decided(&a);
    // Daemonless: a run the decision woke from a durable wait, or approved
    // in review, needs a helper.
    let waiting = matches!(
        run.state,
        dispatch_core::RunState::Suspended { .. } | dispatch_core::RunState::Review { .. }
    );
    if waiting && let Ok(run) = dispatch_store::RunStore::get_run(&store, &run.id).await {
        dispatch_runtime::suspend::start_woken(&ctx.layout, &run);
    }
    Ok(0)
}

/// The approval to decide when none is named: the run's one pending
/// approval; more than one, or none, is one line saying so.
pub(crate) fn only_pending(
    run: &dispatch_store::Run,
    pending: &[Approval],
    decision: &str,
) -> CliResult<String> {
    match pending {
        [one] => Ok(one.id.clone()),
        [] => Err(CliError::input(format!(
            "run {} is {} and waits for no approval; there is nothing to {decision} (hint: `dispatch approvals ls` lists pending approvals)",
            run.id,
            run.status()
        ))),
        several => Err(CliError::input(format!(
            "run {} waits for {} approvals ({}); name the one to {decision}: `dispatch {decision} {} APPROVAL`",
            run.id,
            several.len(),
            several
                .iter()
                .map(|a| a.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            run.id.short()
        ))),
    }
}

/// `--input` as JSON.
pub(crate) fn input_of(args: &DecideArgs) -> CliResult<Option<serde_json::Value>> {
    args.input
        .as_deref()
        .map(|text| {
            serde_json::from_str(text).map_err(|e| {
                CliError::input(format!(
                    "--input is not JSON: {e} (hint: --input '{{\"order\":\"12345\"}}')"
                ))
            })
        })
        .transpose()
}

/// Who decides when `--by` is not given: `$USER`.
pub(crate) fn decider(args: &DecideArgs) -> String {
    args.by
        .clone()
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// The refusal to decide for a finished run.
pub(crate) fn finished(run: &dispatch_store::Run, decision: &str) -> CliError {
    CliError::input(format!(
        "run {} is already {}; there is nothing to {decision}",
        run.id,
        run.status()
    ))
}

/// Says on stderr what was decided.
pub(crate) fn say_decided(a: &Approval) {
    let verb = if a.decision.as_deref() == Some("approve") {
        "approved"
    } else {
        "denied"
    };
    eprintln!(
        "{verb} `{}` of run {} (by {})",
        a.id,
        a.run_id.short(),
        a.decided_by.as_deref().unwrap_or("?")
    );
}

pub async fn approvals(ctx: &Ctx, cmd: &ApprovalsCommand) -> CliResult {
    let ApprovalsCommand::Ls(args) = cmd;
    let project = crate::reliability_args::listed_project(&args.project)?;
    let Some(store) = ctx.existing_store()? else {
        return print_approvals(args.format, &[]);
    };
    let mut list = store.list_approvals(None, !args.all).await?;
    if let Some(project) = project {
        // An approval belongs to its run's project.
        let mut keep = Vec::with_capacity(list.len());
        for a in list {
            if dispatch_store::RunStore::get_run(&store, &a.run_id)
                .await?
                .project
                == project
            {
                keep.push(a);
            }
        }
        list = keep;
    }
    print_approvals(args.format, &list)
}

/// Prints approvals as `dispatch approvals ls` does.
pub(crate) fn print_approvals(format: Format, list: &[Approval]) -> CliResult {
    if format == Format::Json {
        print_json(list);
        return Ok(0);
    }
    let now = now_ms();
    let ids: Vec<&str> = list.iter().map(|a| a.run_id.as_str()).collect();
    let shown = dispatch_core::id::abbreviate(&ids);
    let rows: Vec<Vec<String>> = list
        .iter()
        .zip(shown)
        .map(|(a, short)| {
            vec![
                short.to_string(),
                a.id.clone(),
                a.summary.clone(),
                human_ago(a.requested_at, now),
                match &a.decision {
                    Some(d) => format!("{d} by {}", a.decided_by.as_deref().unwrap_or("?")),
                    None => match a.deadline {
                        Some(d) => format!(
                            "pending (auto-deny in {})",
                            dispatch_core::time::human_duration(d - now)
                        ),
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
