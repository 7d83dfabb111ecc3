//! Command-line arguments of the reliability features: the dispatch flags
//! shared by `run` and `create`, and the approval, dead-letter and replay commands.

use clap::{Args, Subcommand};
use dispatch_core::policy::{PolicyInput, Spelling};
use dispatch_runtime::submit::SubmitOptions;

use crate::cli::Format;
use crate::error::{CliError, CliResult};

#[derive(Debug, Args, Default)]
pub struct DispatchArgs {
    /// The project the run belongs to (default: `default`); with a server, the token needs role runner there.
    #[arg(long, env = "DISPATCH_PROJECT", value_name = "PROJECT")]
    pub project: Option<String>,
    /// Retry a failed attempt up to N more times (overrides the Agentfile's RETRY).
    #[arg(long, value_name = "N", help_heading = "Reliability")]
    pub retries: Option<u32>,
    /// Backoff between attempts: <initial>..<max>, doubled each retry, with jitter.
    #[arg(long, value_name = "MIN..MAX", help_heading = "Reliability")]
    pub backoff: Option<String>,
    /// Time limit of each attempt, not counting time paused (overrides TIMEOUT RUN).
    #[arg(long, value_name = "DURATION", help_heading = "Reliability")]
    pub timeout: Option<String>,
    /// Time limit of each step, measured between the agent's `step` events (overrides TIMEOUT STEP).
    #[arg(long, value_name = "DURATION", help_heading = "Reliability")]
    pub step_timeout: Option<String>,
    /// Stop the run once it has used more tokens than this (overrides LIMIT TOKENS).
    #[arg(long, value_name = "N", help_heading = "Reliability")]
    pub max_tokens: Option<u64>,
    /// Stop the run once it has cost more than this many US dollars (overrides LIMIT COST).
    #[arg(long, value_name = "USD", help_heading = "Reliability")]
    pub max_cost: Option<f64>,
    /// Do not dispatch again while a run with this key is live or succeeded.
    #[arg(long, value_name = "KEY", help_heading = "Reliability")]
    pub idempotency_key: Option<String>,
    /// Deduplicate by a key derived from parcel digest + operation + payload.
    #[arg(long, help_heading = "Reliability")]
    pub dedup: bool,
    /// Dispatch even when a run with the same key is live or succeeded.
    #[arg(long, help_heading = "Reliability")]
    pub force: bool,
    /// Bind a named session of the parcel (state in $DISPATCH_SESSION_FILE); one live run per session.
    #[arg(long, value_name = "NAME", help_heading = "Reliability")]
    pub session: Option<String>,
    /// End the run `timed_out` when no worker claims it within DURATION, each time it is queued.
    #[arg(long, value_name = "DURATION", help_heading = "Queue (with a server)")]
    pub queue_timeout: Option<String>,
    /// Only a worker with this label may run it (repeatable: every one is needed).
    #[arg(
        long = "label",
        value_name = "LABEL",
        help_heading = "Queue (with a server)"
    )]
    pub labels: Vec<String>,
    /// Higher is claimed first (default 0).
    #[arg(long, value_name = "N", help_heading = "Queue (with a server)")]
    pub priority: Option<i64>,
    /// The run's concurrency key (instead of the Agentfile's CONCURRENCY KEY path): at most MAX live runs per key.
    #[arg(long, value_name = "VALUE", help_heading = "Concurrency")]
    pub concurrency_key: Option<String>,
    /// At most N live runs of the key at once (default: the Agentfile's MAX, else 1).
    #[arg(long, value_name = "N", help_heading = "Concurrency")]
    pub concurrency_max: Option<u32>,
    /// When the key is full: queue (wait in order), cancel-in-progress (cancel the oldest), drop (cancel this one).
    #[arg(long, value_name = "STRATEGY", help_heading = "Concurrency")]
    pub concurrency_strategy: Option<String>,
    /// Keep the run's workspace (runs/<id>/work/) after it ends, until `dispatch rm` or prune.
    #[arg(long, help_heading = "Isolation")]
    pub keep_workspace: bool,
    /// A native agent's primary model, instead of its MODEL's (over LLM_MODEL).
    #[arg(long, value_name = "NAME", help_heading = "Model (native agents)")]
    pub model: Option<String>,
    /// Call the primary model, alone, at this OpenAI-compatible base URL (over LLM_BASE_URL).
    #[arg(long, value_name = "URL", help_heading = "Model (native agents)")]
    pub base_url: Option<String>,
    /// The primary model's provider: openai (Responses API), openai_chat, anthropic, gemini, openai_compatible, claude, codex (the local CLIs).
    #[arg(long, value_name = "NAME", help_heading = "Model (native agents)")]
    pub provider: Option<String>,
    /// How hard reasoning models think: low, medium, high (over the Agentfile's REASONING).
    #[arg(long, value_name = "LEVEL", help_heading = "Model (native agents)")]
    pub reasoning_effort: Option<String>,
}

impl DispatchArgs {
    /// `--concurrency-strategy`, read (`queue`, `cancel-in-progress`, `drop`).
    pub(crate) fn strategy(&self) -> CliResult<Option<dispatch_core::concurrency::Strategy>> {
        self.concurrency_strategy
            .as_deref()
            .map(|s| {
                s.parse()
                    .map_err(|e| CliError::input(format!("--concurrency-strategy: {e}")))
            })
            .transpose()
    }

    /// `--project`, checked; `default` when not given.
    pub fn project(&self) -> CliResult<String> {
        match &self.project {
            Some(p) => {
                dispatch_core::project::check_project(p)
                    .map_err(|e| CliError::input(format!("--project: {e}")))?;
                Ok(p.clone())
            }
            None => Ok(dispatch_core::project::DEFAULT_PROJECT.to_string()),
        }
    }

    /// `--model`, `--base-url`, `--provider`, `--reasoning-effort` as given.
    pub fn model_choice(&self) -> dispatch_runtime::submit::ModelChoice {
        dispatch_runtime::submit::ModelChoice {
            model: self.model.clone(),
            base_url: self.base_url.clone(),
            provider: self.provider.clone(),
            reasoning_effort: self.reasoning_effort.clone(),
        }
    }

    /// The policy flags as given, before any check.
    pub fn policy_input(&self) -> PolicyInput {
        PolicyInput {
            retries: self.retries,
            backoff: self.backoff.clone(),
            timeout: self.timeout.clone(),
            step_timeout: self.step_timeout.clone(),
            max_tokens: self.max_tokens,
            max_cost: self.max_cost,
        }
    }

    /// [`options`](Self::options) for a local run, which has no queue: its
    /// own helper starts it at once, so the queue flags are refused.
    pub fn local_options(&self) -> CliResult<SubmitOptions> {
        let given = [
            ("--queue-timeout", self.queue_timeout.is_some()),
            ("--label", !self.labels.is_empty()),
            ("--priority", self.priority.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, on)| *on) {
            return Err(CliError::input(format!(
                "{flag} needs a server: a local run is started by its own helper at once (hint: set DISPATCH_HOST=http://127.0.0.1:8077 to queue it on `dispatch server`)"
            )));
        }
        self.options()
    }

    /// Checks every flag (one line naming the flag when one is wrong).
    pub fn options(&self) -> CliResult<SubmitOptions> {
        self.project()?;
        let overrides = self
            .policy_input()
            .overrides(Spelling::Flag)
            .map_err(CliError::input)?;
        if self.idempotency_key.as_deref() == Some("") {
            return Err(CliError::input("--idempotency-key must not be empty"));
        }
        if let Some(text) = &self.queue_timeout {
            match dispatch_core::units::parse_duration_ms_or_seconds(text) {
                Ok(ms) if ms > 0 => {}
                _ => {
                    return Err(CliError::input(format!(
                        "--queue-timeout {text}: not a positive duration (hint: 30s, 5m, 1h)"
                    )));
                }
            }
        }
        if let Some(label) = self.labels.iter().find(|l| l.trim().is_empty()) {
            return Err(CliError::input(format!(
                "--label `{label}` is empty (hint: --label gpu)"
            )));
        }
        if self.concurrency_max == Some(0) {
            return Err(CliError::input(
                "--concurrency-max must be at least 1 (hint: --concurrency-max 2)",
            ));
        }
        if self.concurrency_key.as_deref() == Some("") {
            return Err(CliError::input(
                "--concurrency-key must not be empty (hint: --concurrency-key customer-42)",
            ));
        }
        let strategy = self.strategy()?;
        Ok(SubmitOptions {
            overrides,
            idempotency_key: self.idempotency_key.clone(),
            dedup: self.dedup,
            force: self.force,
            session: self.session.clone(),
            brief_sha256: None,
            policy: None,
            created: false,
            helper: None,
            keep_workspace: self.keep_workspace,
            trigger: None,
            concurrency: dispatch_runtime::concurrency::ConcurrencyOverrides {
                key: self.concurrency_key.clone(),
                max: self.concurrency_max,
                strategy,
            },
            model: self.model_choice(),
        })
    }
}

#[derive(Debug, Args)]
pub struct DecideArgs {
    /// Run id or unique prefix.
    #[arg(value_name = "RUN")]
    pub run: String,
    /// The approval's id, as the agent asked for it (`policy-review` for a
    /// run in review). Optional when the run waits for one approval only.
    #[arg(value_name = "APPROVAL")]
    pub approval: Option<String>,
    /// Who decides (default: $USER).
    #[arg(long, value_name = "NAME")]
    pub by: Option<String>,
    /// Why.
    #[arg(long, value_name = "TEXT")]
    pub rationale: Option<String>,
    /// `approve` of a tool call: run it with these arguments instead
    /// (JSON, checked against the tool's schema).
    #[arg(long, value_name = "JSON")]
    pub input: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// List pending approvals (`-a`: decided ones too).
    #[command(visible_alias = "list")]
    Ls(ApprovalsLsArgs),
}

#[derive(Debug, Args)]
pub struct ApprovalsLsArgs {
    /// Show decided approvals too.
    #[arg(short, long)]
    pub all: bool,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Only this project's (default: every project; with a server, every one the token may see).
    #[arg(long, env = "DISPATCH_PROJECT", value_name = "PROJECT")]
    pub project: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered runs: input, last checkpoint, error history.
    #[command(visible_alias = "list")]
    Ls(ApprovalsFormat),
    /// Run a dead-lettered run again as a new run linked to it (origin_id).
    Replay(DlqReplayArgs),
}

#[derive(Debug, Args)]
pub struct ApprovalsFormat {
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Only this project's (default: every project; with a server, every one the token may see).
    #[arg(long, env = "DISPATCH_PROJECT", value_name = "PROJECT")]
    pub project: Option<String>,
}

/// `--project` of a listing, checked.
pub fn listed_project(project: &Option<String>) -> CliResult<Option<&str>> {
    if let Some(p) = project {
        dispatch_core::project::check_project(p)
            .map_err(|e| CliError::input(format!("--project: {e}")))?;
    }
    Ok(project.as_deref())
}

#[derive(Debug, Args)]
pub struct DlqReplayArgs {
    /// Run id or unique prefix of the dead-lettered run.
    #[arg(value_name = "RUN")]
    pub run: String,
    /// Use this JSON payload instead of the original one.
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Run id or unique prefix.
    #[arg(value_name = "RUN")]
    pub run: String,
    /// Confirm that running the agent again may repeat its side effects.
    #[arg(long)]
    pub allow_side_effects: bool,
    /// Refuse (instead of warning) when an MCP server's tools changed since the run.
    #[arg(long)]
    pub strict: bool,
    /// A native run: answer its model calls from its own recordings (no network, no key).
    #[arg(long)]
    pub offline: bool,
}
