//! `dispatch run <dir> --print-prompt`: the request a native agent's first
//! model call would send (system prompt, payload as the first user message,
//! model and endpoint, after the environment's overrides, the tools), as
//! JSON on stdout. No model is called and no run is created; no key is
//! printed (MCP servers are started to list their tools, then stopped).

use dispatch_agent::{Message, ModelRequest, Override};
use dispatch_core::parcel::Courier;
use dispatch_runtime::launch::resolve_parcel;
use serde_json::json;

use crate::cli::RunArgs;
use crate::commands::run::parse_payload;
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};

pub async fn print_prompt(ctx: &Ctx, args: &RunArgs) -> CliResult {
    let (_, payload) = parse_payload(&args.payload)?;
    let parcel = resolve_parcel(&ctx.layout, &args.source)?;
    let m = &parcel.manifest;
    let Some(agent) = m.agent.as_ref().filter(|_| m.courier == Courier::Agent) else {
        return Err(CliError::input(format!(
            "--print-prompt is for native agents, and {} is FROM {} (hint: add `FROM agent` and a MODEL)",
            args.source,
            serde_json::to_value(m.courier)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        )));
    };
    let env = |k: &str| std::env::var(k).ok();
    let over = Override::from_env(env).map_err(CliError::input)?;
    // Keys are not needed to print: resolve as if every secret were set.
    let models = dispatch_agent::resolve(agent, over.as_ref(), |k| {
        env(k).or_else(|| Some("****".into()))
    })
    .map_err(CliError::input)?;
    let primary = &models[0];
    let req = ModelRequest {
        model: primary.model.name.clone(),
        system: dispatch_agent::prompt::system_prompt(&m.instructions).into(),
        messages: std::borrow::Cow::Owned(vec![Message::user(dispatch_agent::prompt::user_text(
            &payload,
        ))]),
        tools: crate::commands::list_tools::specs(&parcel).await?.into(),
        max_output_tokens: agent.max_output_tokens,
        reasoning: Override::reasoning(over.as_ref(), agent),
        web_search: agent.tools.iter().any(|t| t.is_hosted()),
    };
    let (url, body) = dispatch_agent::resolve::wire_request(primary, &req);
    let fallbacks: Vec<_> = models[1..]
        .iter()
        .map(|f| json!({"model": f.model.name, "provider": f.model.provider.as_str(), "base_url": f.model.endpoint()}))
        .collect();
    let out = json!({
        "model": primary.model.name,
        "provider": primary.model.provider.as_str(),
        "url": url,
        "fallbacks": fallbacks,
        "body": body,
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&out).expect("plain JSON")
    );
    Ok(0)
}
