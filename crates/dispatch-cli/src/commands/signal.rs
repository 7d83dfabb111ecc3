//! `dispatch signal RUN NAME [--value JSON]`: sends a signal to a run. A run
//! suspended waiting for it (a `wait` event `"for": "signal"`) starts its
//! next attempt with the value in `$DISPATCH_RESUME`; a run not waiting for
//! it yet keeps it for its first wait on that name.

use dispatch_runtime::suspend::{self, Delivery};
use serde_json::Value;

use crate::cli::SignalArgs;
use crate::ctx::{Ctx, find_run};
use crate::error::{CliError, CliResult};

pub async fn signal(ctx: &Ctx, args: &SignalArgs) -> CliResult {
    let value = value_of(args)?;
    let store = ctx.store()?;
    let run = find_run(&store, &ctx.layout, &args.run).await?;
    match suspend::signal(&store, &run.id, &args.name, value).await? {
        Delivery::Woke(run) => {
            // Daemonless: the woken run's next attempt needs a helper.
            suspend::start_woken(&ctx.layout, &run);
            say(&run.id.to_string(), &args.name, "woke");
        }
        Delivery::Kept => say(&run.id.to_string(), &args.name, "kept"),
    }
    Ok(0)
}

/// `--value` as JSON (`null` when not given).
pub(crate) fn value_of(args: &SignalArgs) -> CliResult<Value> {
    match args.value.as_deref() {
        None => Ok(Value::Null),
        Some(text) => serde_json::from_str(text).map_err(|e| {
            CliError::input(format!(
                "--value is not JSON: {e} (hint: --value '{{\"amount\": 12}}', or --value '\"text\"')"
            ))
        }),
    }
}

/// Prints the run id on stdout and what happened on stderr.
pub(crate) fn say(id: &str, name: &str, delivered: &str) {
    println!("{id}");
    match delivered {
        "woke" => eprintln!("signal `{name}` woke run {id}; its next attempt starts"),
        _ => eprintln!(
            "run {id} is not waiting for signal `{name}`; it is kept for the run's first wait on it"
        ),
    }
}
