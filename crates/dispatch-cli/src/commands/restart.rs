use dispatch_core::Operation;
use dispatch_runtime::launch::LaunchRequest;
use dispatch_runtime::service::launch::{recreate_service, wait_up};
use dispatch_runtime::submit::SubmitOptions;
use dispatch_store::ReliabilityStore;

use crate::cli::StopArgs;
use crate::commands::run::{start_run, submit_run};
use crate::commands::serve::UP_TIMEOUT;
use crate::ctx::{Ctx, find_run};
use crate::error::CliResult;

/// `dispatch restart`: stops the run if it is live, then starts the same
/// parcel, operation and payload as a new run linked to the old one
/// (`origin_id`). A finished run never changes, so the new run has a new id,
/// which is printed.
pub async fn restart(ctx: &Ctx, args: &StopArgs) -> CliResult {
    let store = ctx.store()?;
    for arg in &args.ids.ids {
        let old = find_run(&store, &ctx.layout, arg).await?;
        crate::commands::eval::refuse_rerun(&old, "restart")?;
        if !old.state.is_terminal() {
            let grace = args.grace();
            dispatch_runtime::stop::stop(&store, &ctx.layout, &old.id, grace, args.force).await?;
        }
        if old.operation == Operation::Service {
            let run = recreate_service(&store, &ctx.layout, &old).await?;
            crate::commands::serve::start_service(ctx, &store, &run).await?;
            let up = wait_up(&store, &ctx.layout, &run.id, UP_TIMEOUT).await?;
            crate::commands::serve::check_up(&up)?;
            println!("{}", run.id);
            continue;
        }
        let req = LaunchRequest {
            source: old.parcel_digest.clone(),
            operation: Some(old.operation),
            payload: old.payload.clone(),
            parent_id: old.parent_id.clone(),
            origin_id: Some(old.id.clone()),
            project: old.project.clone(),
        };
        // The same reliability policy (retries, timeouts, budgets) as the original.
        let opts = SubmitOptions {
            policy: store.run_extras(&old.id).await?.policy,
            force: true,
            ..SubmitOptions::default()
        };
        let (run, _) = submit_run(ctx, &store, &req, &opts).await?;
        start_run(ctx, &store, &run).await?;
        println!("{}", run.id);
    }
    Ok(0)
}
