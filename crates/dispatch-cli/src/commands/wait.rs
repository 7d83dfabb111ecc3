//! `dispatch wait`: block until runs end.

use std::time::{Duration, Instant};

use dispatch_runtime::reconcile::reconcile;
use dispatch_runtime::run_exit_code;
use dispatch_store::RunStore;

use crate::cli::WaitArgs;
use crate::ctx::{Ctx, resolve_id};
use crate::error::{CliError, CliResult, EXIT_WAIT_TIMEOUT};

const POLL: Duration = Duration::from_millis(10);

pub async fn wait(ctx: &Ctx, args: &WaitArgs) -> CliResult {
    let store = ctx.store()?;
    let deadline = args
        .timeout_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut ids = Vec::new();
    for arg in &args.ids.ids {
        ids.push(resolve_id(&store, arg).await?);
    }
    let mut code = 0;
    for id in ids {
        loop {
            let run = reconcile(&store, &ctx.layout, store.get_run(&id).await?).await?;
            if run.state.is_terminal() {
                code = run_exit_code(&run.state);
                println!("{code}");
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(CliError::new(
                    EXIT_WAIT_TIMEOUT,
                    format!(
                        "timed out after {} ms waiting for run {} (still {})",
                        args.timeout_ms.unwrap_or_default(),
                        run.id,
                        run.status()
                    ),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(code)
}
