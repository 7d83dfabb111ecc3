//! `dispatch wake <service> [payload]`: a manual turn.

use std::time::Duration;

use dispatch_runtime::service::wake::request;
use serde_json::Value;

use crate::cli::WakeArgs;
use crate::ctx::{Ctx, resolve_id};
use crate::error::{CliError, CliResult};

pub async fn wake(ctx: &Ctx, args: &WakeArgs) -> CliResult {
    let payload = match &args.payload {
        Some(text) => serde_json::from_str(text).map_err(|e| {
            CliError::input(format!(
                "the payload is not valid JSON ({e}) (hint: dispatch wake <id> '{{\"check\":\"now\"}}')"
            ))
        })?,
        None => Value::Object(Default::default()),
    };
    let store = ctx.store()?;
    let id = resolve_id(&store, &args.id).await?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let ack = request(&store, &ctx.layout, &id, payload, timeout).await?;
    match (ack.run_id, ack.error) {
        (Some(run), _) => {
            println!("{run}");
            Ok(0)
        }
        (None, why) => Err(CliError::input(format!(
            "service {} did not take the wake: {}",
            id.short(),
            why.unwrap_or_else(|| "no reason given".into())
        ))),
    }
}
