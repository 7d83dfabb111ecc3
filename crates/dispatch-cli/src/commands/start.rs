use dispatch_core::Status;

use crate::cli::IdsArgs;
use crate::commands::run::start_run;
use crate::ctx::{Ctx, find_run};
use crate::error::{CliError, CliResult};

/// `dispatch start`: starts created runs (a queued one nobody holds too).
pub async fn start(ctx: &Ctx, args: &IdsArgs) -> CliResult {
    let store = ctx.store()?;
    for arg in &args.ids {
        let run = find_run(&store, &ctx.layout, arg).await?;
        if let dispatch_core::RunState::Review { reason, .. } = &run.state {
            return Err(CliError::input(format!(
                "run {} waits in review ({reason}); a person starts it with `dispatch approve {}`",
                run.id,
                run.id.short()
            )));
        }
        let startable = matches!(run.status(), Status::Created | Status::Queued);
        if !startable || run.stop_requested_at.is_some() {
            return Err(CliError::input(format!(
                "run {} is {}; only a created run can be started (hint: `dispatch restart {}` runs it again)",
                run.id,
                run.status(),
                run.id.short()
            )));
        }
        let run = dispatch_runtime::launch::start_created(&store, &run).await?;
        start_run(ctx, &store, &run).await?;
        println!("{}", run.id);
    }
    Ok(0)
}
