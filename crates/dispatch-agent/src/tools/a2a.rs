//! `TOOL A2A`: a remote agent as a tool (the protocol is in [`crate::a2a`]).

use std::sync::Arc;
use std::time::Duration;

use dispatch_core::tool::{ToolDecl, ToolKind};
use serde_json::{Value, json};

use super::{Runner, ToolContext};
use crate::agent_loop::ToolOutcome;
use crate::provider::ToolSpec;

/// The spec and runner of a `TOOL A2A`: without a SCHEMA the model sends
/// one `message` string (a text part), with one its arguments (a data part).
pub(super) fn prepare(
    decl: &ToolDecl,
    ctx: &ToolContext<'_>,
    policy: Arc<crate::a2a::trust::Policy>,
) -> Result<(ToolSpec, Runner), String> {
    let ToolKind::A2a {
        url,
        discovery,
        auth,
        expect_agent_name,
        expect_card_sha256,
    } = &decl.kind
    else {
        unreachable!("called for A2A tools only")
    };
    let secret = |name: &str| {
        ctx.secrets.get(name).cloned().ok_or_else(|| {
            format!(
                "tool `{}`: AUTH needs secret {name}, which is not set where the run executes (hint: export it, or store it with the secret store)",
                decl.name
            )
        })
    };
    let headers = match auth {
        None => Vec::new(),
        Some(dispatch_core::tool::A2aAuth::Bearer { secret: s }) => {
            vec![(
                "authorization".to_string(),
                format!("Bearer {}", secret(s)?),
            )]
        }
        Some(dispatch_core::tool::A2aAuth::Header { header, secret: s }) => {
            vec![(header.clone(), secret(s)?)]
        }
        Some(dispatch_core::tool::A2aAuth::Basic { user, password }) => {
            use base64::Engine as _;
            let pair = format!("{}:{}", secret(user)?, secret(password)?);
            let token = base64::engine::general_purpose::STANDARD.encode(pair);
            vec![("authorization".to_string(), format!("Basic {token}"))]
        }
    };
    let data = decl.schema.is_some();
    let spec = ToolSpec {
        name: decl.name.clone(),
        description: decl.description.clone().unwrap_or_else(|| {
            format!("Asks the remote agent at {url} (A2A) and returns its answer")
        }),
        parameters: std::sync::Arc::new(decl.schema.clone().unwrap_or_else(|| {
            json!({
                "type": "object",
                "properties": {"message": {"type": "string", "description": "What to ask the remote agent"}},
                "required": ["message"],
            })
        })),
    };
    let remote = crate::a2a::client::Remote {
        tool: decl.name.clone(),
        url: url.clone(),
        discovery: *discovery,
        headers,
        expect_agent_name: expect_agent_name.clone(),
        expect_card_sha256: expect_card_sha256.clone(),
        policy,
    };
    Ok((
        spec,
        Runner::A2a {
            remote: Box::new(remote),
            data,
        },
    ))
}

pub(super) async fn run(
    http: &reqwest::Client,
    remote: &crate::a2a::client::Remote,
    data: bool,
    args: Value,
    timeout: Duration,
) -> ToolOutcome {
    use crate::a2a::wire::Part;
    let part = match (data, args.get("message").and_then(Value::as_str)) {
        (false, Some(text)) => Part::Text {
            text: text.to_string(),
        },
        _ => Part::Data { data: args },
    };
    let answer = crate::a2a::client::call(http, remote, vec![part], timeout).await;
    ToolOutcome {
        text: answer.text,
        is_error: answer.is_error,
        meta: answer.meta,
        ..ToolOutcome::default()
    }
}
