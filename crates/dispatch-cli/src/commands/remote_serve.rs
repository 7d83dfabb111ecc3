//! `dispatch serve` and `dispatch wake` against a `dispatch server`: the
//! service is owned by the cluster (no process of this machine keeps it):
//! its timers fire on whichever server gets there first, its webhook is
//! `POST /hooks/<name>[/<path>]` on every server, and each wake is a
//! heartbeat run that the workers execute. `serve` prints the service's id
//! and returns (`dispatch stop <id>` ends it); `wake` prints the heartbeat's.

use dispatch_runtime::service::config::{SHARED_SECRET_ENV, secret_sha256};
use serde_json::{Value, json};

use super::remote::Remote;
use crate::cli::{OverlapArg, ServeArgs, WakeArgs};
use crate::error::{CliError, CliResult};

impl Remote {
    pub(super) fn serve(&self, args: &ServeArgs) -> CliResult {
        let session_ttl_ms = super::serve::session_ttl_ms(args)?;
        let payload = parse_json(args.payload.as_deref(), "--payload")?;
        let parcel = self.parcel_of(&args.source)?;
        let secret = args
            .listen_shared_secret
            .clone()
            .or_else(|| std::env::var(SHARED_SECRET_ENV).ok());
        if secret.as_deref() == Some("") {
            return Err(CliError::input(
                "--listen-shared-secret is empty (hint: pass a long random value, e.g. from `openssl rand -hex 32`)",
            ));
        }
        let request = dispatch_api::CreateService {
            parcel,
            payload: Some(payload),
            schedules: args.schedule.clone(),
            listen_methods: args.listen_method.clone(),
            overlap: Some(
                match args.overlap {
                    OverlapArg::Queue => "queue",
                    OverlapArg::Skip => "skip",
                    OverlapArg::Concurrent => "concurrent",
                }
                .to_string(),
            ),
            max_concurrent: Some(args.max_concurrent),
            max_pending: Some(args.max_pending),
            public: args.public,
            a2a: args.a2a,
            name: args.name.clone(),
            project: args.project.clone(),
            interval_ms: args.interval_ms,
            listen: args.listen.clone(),
            listen_path: args.listen_path.clone(),
            a2a_url: args.a2a_url.clone(),
            session_ttl_ms,
            listen_secret_sha256: secret.as_deref().map(secret_sha256),
            listen_max_body_bytes: args.listen_max_body_bytes,
            listen_max_header_bytes: args.listen_max_header_bytes,
            restart_of: None,
        };
        let answer: dispatch_api::ServiceCreated =
            self.typed_body("POST", "/v1/services", &request)?;
        let id = answer.run.id.as_str();
        let mut parts: Vec<String> = answer
            .schedules
            .iter()
            .map(|t| format!("timer `{t}`"))
            .collect();
        if let Some(hook) = answer.hook.as_deref() {
            parts.push(match args.a2a {
                true => format!(
                    "an A2A agent on every server (card at {base}{}/.well-known/agent-card.json, JSON-RPC POST {base}{hook})",
                    hook_root(hook),
                    base = self.base()
                ),
                false => format!("webhook POST {}{hook} on every server", self.base()),
            });
        }
        if parts.is_empty() {
            parts.push("manual wakes only".into());
        }
        eprintln!(
            "service {} ({}) up in the cluster: {}",
            answer.name,
            id,
            parts.join(", ")
        );
        println!("{id}");
        Ok(0)
    }

    pub(super) fn wake(&self, args: &WakeArgs) -> CliResult {
        let payload = parse_json(args.payload.as_deref(), "the payload")?;
        let service = self.get_run(&args.id)?;
        let request = dispatch_api::WakeRequest {
            payload: Some(payload),
        };
        let path = format!("/v1/runs/{}/wake", service.id);
        let heartbeat: dispatch_api::Run = self.typed_body("POST", &path, &request)?;
        println!("{}", heartbeat.id);
        Ok(0)
    }
}

fn parse_json(text: Option<&str>, what: &str) -> CliResult<Value> {
    match text {
        Some(text) => serde_json::from_str(text).map_err(|e| {
            CliError::input(format!(
                "{what} is not valid JSON ({e}) (hint: '{{\"check\":\"disk\"}}')"
            ))
        }),
        None => Ok(json!({})),
    }
}

/// `/hooks/<name>` of a hook `/hooks/<name>[/<path>]`.
fn hook_root(hook: &str) -> &str {
    let rest = hook.strip_prefix("/hooks/").unwrap_or(hook);
    match rest.find('/') {
        Some(i) => &hook[..hook.len() - rest.len() + i],
        None => hook,
    }
}
