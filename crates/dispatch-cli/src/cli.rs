//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::reliability_args::{ApprovalsCommand, DecideArgs, DispatchArgs, DlqCommand, ReplayArgs};

/// Run AI agents the way CI runs jobs: every execution is a durable, audited run.
#[derive(Debug, Parser)]
#[command(name = "dispatch", version, about, max_term_width = 100)]
pub struct Cli {
    /// The state directory (default: the nearest `.dispatch/` upwards, else `./.dispatch`).
    #[arg(long, global = true, env = "DISPATCH_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// A `dispatch server` to talk to (run, ps, logs, wait, stop, inspect-run, approve, deny, approvals, dlq), e.g. 127.0.0.1:8077 or https://dispatch.example.com:8077.
    #[arg(long, global = true, env = "DISPATCH_HOST", value_name = "URL")]
    pub host: Option<String>,

    /// With an https:// --host: trust the CA certificates in this PEM file too (beside the built-in roots).
    #[arg(long, global = true, env = "DISPATCH_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an Agentfile into an immutable parcel; prints its digest.
    Build(BuildArgs),
    /// Run an agent: build its parcel if needed, create a run, start it.
    Run(RunArgs),
    /// Talk to a native agent (`FROM agent`): each line is a turn, a run in the session.
    Chat(ChatArgs),
    /// Run an agent as a long-lived service woken by timers, HTTP requests and `dispatch wake`.
    Serve(ServeArgs),
    /// Wake a running service now; prints the heartbeat run's id.
    Wake(WakeArgs),
    /// Create a run without starting it (prints its id; `dispatch start` starts it).
    Create(CreateArgs),
    /// Start created runs.
    Start(IdsArgs),
    /// List runs (live ones; `-a` for all).
    #[command(visible_alias = "ls")]
    Ps(PsArgs),
    /// Print a run's log.
    Logs(LogsArgs),
    /// Wait for runs to finish; prints each exit code and exits with the last.
    Wait(WaitArgs),
    /// Stop runs: SIGTERM to the agent's process group, then SIGKILL after the grace period.
    Stop(StopArgs),
    /// Stop a run if it is live and start it again as a new run.
    Restart(StopArgs),
    /// Remove runs and their files.
    Rm(RmArgs),
    /// Remove every finished run and its files.
    Prune(PruneArgs),
    /// Show everything about runs.
    #[command(name = "inspect-run")]
    InspectRun(InspectArgs),
    /// List a run's artifacts, or copy one out (checked against its sha256).
    Artifacts(crate::commands::artifacts::ArtifactsArgs),
    /// List built parcels (`--verify`: re-hash every file of each).
    Images(crate::commands::images::ImagesArgs),
    /// Remove parcels (kept while a run that has not ended uses one).
    Rmi(crate::commands::rmi::RmiArgs),
    /// Send a signal to a run; a run suspended waiting for it resumes.
    Signal(SignalArgs),
    /// Approve what a paused run asks for (the run resumes), or a run in review (it starts).
    Approve(DecideArgs),
    /// Deny what a paused run asks for (the run resumes and the agent sees the denial), or a run in review (it is cancelled).
    Deny(DecideArgs),
    /// Approvals runs asked for.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// The dead-letter queue: runs whose attempts are exhausted.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Run again with the exact parcel digest, brief and payload of a run.
    Replay(ReplayArgs),
    /// Test an agent: run its eval cases as real runs and report pass/fail, tokens, cost, time.
    Eval(crate::commands::eval::EvalArgs),
    /// Docker-style aliases: ls, ps, logs, wait, inspect, stop, restart, prune, rm.
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Serve the HTTP API with in-process workers (PostgreSQL, or the local database).
    Server(crate::commands::server::ServerArgs),
    /// Serve the web dashboard for the local .dispatch/ and print its URL.
    Ui(crate::commands::ui::UiArgs),
    /// Claim and run queued runs from a shared database until SIGTERM, then drain.
    Worker(crate::commands::server::WorkerArgs),
    /// API tokens for `dispatch server`: create, ls, revoke.
    Token(crate::commands::token::TokenArgs),
    /// The skills a parcel bundles: ls, inspect.
    Skill(crate::commands::skill::SkillArgs),
    /// Policies on runs and tool calls: test one against an input.
    Policy(crate::commands::policy::PolicyArgs),
    /// What runs spent (calls, tokens, USD) by parcel, model, label or day: the cost report.
    Usage(crate::commands::usage::UsageArgs),
    /// Quotas per project: max live runs, tokens and USD per day and month, soft and hard.
    Quota(crate::commands::quota::QuotaArgs),
    /// Sessions runs keep between them (`run --session`, `chat`, A2A contexts): ls, inspect, rm, prune.
    Session(crate::commands::session::SessionArgs),
    /// Notifications (webhooks, Slack, e-mail): the outbox (a server's under --host); the configuration checked or tried.
    Notify(crate::commands::notifications::NotificationsArgs),
    /// Reference: the Agentfile directives (`dispatch reference agentfile TIMEOUT`).
    Reference(crate::commands::reference_agentfile::ReferenceArgs),
    /// Print a shell completion script: `source <(dispatch completion bash)`.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Used by the runtime itself.
    #[command(subcommand, hide = true)]
    Internal(InternalCommand),
}

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    #[command(visible_alias = "list")]
    Ls(PsArgs),
    Ps(PsArgs),
    Logs(LogsArgs),
    Wait(WaitArgs),
    Inspect(InspectArgs),
    Stop(StopArgs),
    Restart(StopArgs),
    Prune(PruneArgs),
    Rm(RmArgs),
}

#[derive(Debug, Subcommand)]
pub enum InternalCommand {
    /// Supervise one run to its end (the detached helper; for a service, until it is stopped).
    RunRecord { id: String },
    /// A helper started ahead of its run: it reads the run's id from stdin.
    RunStandby,
    /// Deliver the local notification outbox until nothing is left (one at a time).
    NotifyDrain,
    /// Print a reference page of the book, generated from the code.
    Reference {
        #[arg(value_enum)]
        page: crate::commands::reference::Page,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct FormatArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// A directory holding an Agentfile, or the Agentfile itself.
    pub path: PathBuf,
    /// Print only the digest (no progress on stderr).
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct PayloadArgs {
    /// Run the `job` operation with this JSON payload.
    #[arg(long, value_name = "JSON", conflicts_with_all = ["heartbeat", "payload"])]
    pub job: Option<String>,
    /// Run the `heartbeat` operation with this JSON payload.
    #[arg(long, value_name = "JSON", conflicts_with = "payload")]
    pub heartbeat: Option<String>,
    /// Run the parcel's default operation (its ENTRYPOINT) with this JSON payload.
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A directory with an Agentfile, or a built parcel's name or digest.
    pub source: String,
    #[command(flatten)]
    pub payload: PayloadArgs,
    /// Print the run id and return at once; the run goes on in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// With a server (--host): one run per line of FILE (JSON Lines, each
    /// line a job payload; `-`: stdin), sent 1,000 per request; prints each id.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["job", "heartbeat", "payload", "print_prompt", "list_tools"])]
    pub batch: Option<String>,
    /// A native agent: print the request its first model call would send, and call nothing.
    #[arg(long)]
    pub print_prompt: bool,
    /// A native agent: list the tools the model would see (MCP servers'
    /// included: they are started and stopped), and run nothing.
    #[arg(long, conflicts_with = "print_prompt")]
    pub list_tools: bool,
    /// A foreground native run's tool calls that need an approval: `ask`
    /// inline on this terminal, or `never` (leave them to `dispatch approve`
    /// and the API). Default: ask when stdin and stderr are a terminal.
    #[arg(long, value_name = "ask|never", value_parser = ["ask", "never"])]
    pub tool_approval: Option<String>,
    /// With --list-tools: `table` (default) or `json` (the specs the model gets).
    #[arg(long, value_name = "FORMAT", requires = "list_tools")]
    pub format: Option<Format>,
    #[command(flatten)]
    pub reliability: DispatchArgs,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// A directory with an Agentfile (`FROM agent`), or a built parcel's name or digest.
    pub source: String,
    /// The conversation to continue or start (default: a new one, named on stderr).
    #[arg(long, value_name = "NAME")]
    pub session: Option<String>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A directory with an Agentfile, or a built parcel's name or digest.
    pub source: String,
    #[command(flatten)]
    pub payload: PayloadArgs,
    #[command(flatten)]
    pub reliability: DispatchArgs,
}

#[derive(Debug, Args)]
pub struct IdsArgs {
    /// Run ids or unique prefixes.
    #[arg(required = true, value_name = "RUN")]
    pub ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all runs, not only live ones.
    #[arg(short, long)]
    pub all: bool,
    /// Filter: status=<s>, parcel=<name|digest>, operation=<op>, parent=<run>, label=<l>,
    /// trigger=<manual|restart|replay|upstream|eval|workflow>,
    /// since=<time>, until=<time> (repeatable; statuses combine with OR, labels with AND;
    /// a time is RFC 3339, 2026-11-21T10:00:00Z, or an age before now: 30s, 10m, 2h, 7d).
    #[arg(long, value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Only the runs this run started (a service's heartbeats); same as --filter parent=<run>.
    #[arg(long, value_name = "RUN")]
    pub parent: Option<String>,
    /// Print only run ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show full ids.
    #[arg(long)]
    pub no_trunc: bool,
    /// Show at most this many runs (newest first).
    #[arg(short = 'n', long, value_name = "N")]
    pub last: Option<usize>,
    /// Only this project's runs (default: every project; with a server, every one the token may see).
    #[arg(long, env = "DISPATCH_PROJECT", value_name = "PROJECT")]
    pub project: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Run id or unique prefix.
    #[arg(value_name = "RUN")]
    pub id: String,
    /// Follow the log until the run ends.
    #[arg(short, long)]
    pub follow: bool,
    /// Show only the last N lines.
    #[arg(short = 'n', long, value_name = "N")]
    pub tail: Option<usize>,
    /// Show only the section of attempt N, numbered as `inspect-run` numbers
    /// attempts (a woken or recovered attempt is one too): from its
    /// `[dispatch] attempt N …` line to the next attempt's.
    #[arg(long, value_name = "N", conflicts_with = "follow")]
    pub attempt: Option<u32>,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub ids: IdsArgs,
    /// Give up after this many milliseconds (exit code 124).
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub ids: IdsArgs,
    /// Time between SIGTERM and SIGKILL, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub grace_period_ms: u64,
    /// Time between SIGTERM and SIGKILL, in seconds (as podman's `-t`).
    #[arg(
        short = 't',
        long = "time",
        value_name = "SECONDS",
        conflicts_with = "grace_period_ms"
    )]
    pub time: Option<u64>,
    /// SIGKILL at once, without a grace period.
    #[arg(short, long)]
    pub force: bool,
}

impl StopArgs {
    /// The grace period between SIGTERM and SIGKILL.
    pub fn grace(&self) -> std::time::Duration {
        match self.time {
            Some(secs) => std::time::Duration::from_secs(secs),
            None => std::time::Duration::from_millis(self.grace_period_ms),
        }
    }
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[command(flatten)]
    pub ids: IdsArgs,
    /// Kill live runs first instead of refusing.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(short, long)]
    pub force: bool,
    /// Only some runs: status=<terminal status>, until=<RFC 3339 time or age
    /// like 24h>, parcel=<name>. Repeatable; the same key twice means either.
    #[arg(long, value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// Only runs that ended at least this long ago, like 7d (as --filter until=7d).
    #[arg(long, value_name = "AGE")]
    pub older_than: Option<String>,
    /// Only runs that ended in one of these statuses, comma-separated (as --filter status=…).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub status: Vec<String>,
    /// Also remove runs with a dead letter or a pending approval (kept by default).
    #[arg(long)]
    pub dead_letters: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct SignalArgs {
    /// Run id or unique prefix.
    #[arg(value_name = "RUN")]
    pub run: String,
    /// The signal's name, as the agent waits for it.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// A JSON value handed to the woken attempt (in `$DISPATCH_RESUME`).
    #[arg(long, value_name = "JSON")]
    pub value: Option<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub ids: IdsArgs,
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Print a workflow run's communication graph instead (Graphviz DOT or Mermaid).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub graph: Option<GraphFormat>,
}

/// How `inspect-run --graph` draws a workflow's graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

/// What to do with a wake that arrives while earlier ones still run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum OverlapArg {
    /// One at a time; later wakes wait their turn (bounded by --max-pending).
    #[default]
    Queue,
    /// One at a time; a wake arriving meanwhile is dropped (HTTP: 503).
    Skip,
    /// Up to --max-concurrent at once, then queue.
    Concurrent,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A directory with an Agentfile, or a built parcel's name or digest.
    pub source: String,
    /// A cron schedule, 5 fields or 6 with seconds first, in UTC (repeatable; added to the Agentfile's SCHEDULE).
    #[arg(long, value_name = "CRON")]
    pub schedule: Vec<String>,
    /// Plain heartbeat interval; 0 turns it off. Default: 30000 when there is no schedule and no listener, else off.
    #[arg(long, value_name = "MS")]
    pub interval_ms: Option<u64>,
    /// What to do with a wake that arrives while earlier ones still run.
    #[arg(long, value_enum, default_value_t)]
    pub overlap: OverlapArg,
    /// How many wakes run at once with --overlap concurrent.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_concurrent: u32,
    /// How many wakes may wait for their turn; more are dropped (HTTP: 503).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_pending: u32,
    /// JSON payload that timer and recovery wakes carry.
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,
    /// Listen for HTTP requests on this address (port 0: any free port). Overrides LISTEN.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Serve only this path (404 otherwise). Overrides LISTEN_PATH.
    #[arg(long, value_name = "PATH")]
    pub listen_path: Option<String>,
    /// Accept only this method (repeatable; merged with LISTEN_METHOD; 405 otherwise).
    #[arg(long, value_name = "METHOD")]
    pub listen_method: Vec<String>,
    /// Require this shared secret in `x-dispatch-secret` or `Authorization: Bearer` (401 otherwise). Only its SHA-256 is stored. Overrides LISTEN_SECRET.
    #[arg(
        long,
        value_name = "SECRET",
        env = "DISPATCH_LISTEN_SHARED_SECRET",
        hide_env_values = true
    )]
    pub listen_shared_secret: Option<String>,
    /// Larger request bodies get 413 (default 1048576). Overrides LISTEN_MAX_BODY_BYTES.
    #[arg(long, value_name = "BYTES")]
    pub listen_max_body_bytes: Option<u64>,
    /// Larger header sections get 431 (default 16384). Overrides LISTEN_MAX_HEADER_BYTES.
    #[arg(long, value_name = "BYTES")]
    pub listen_max_header_bytes: Option<u64>,
    /// Serve a listener with no secret nor LISTEN_SIGNATURE: anyone who reaches it can wake the service (refused without this flag).
    #[arg(long)]
    pub public: bool,
    /// Serve the parcel as an A2A agent on the listener: its agent card at /.well-known/agent-card.json, JSON-RPC (message/send, message/stream, tasks/get, tasks/cancel) at the listen path; each message is a run, its id the task id.
    #[arg(long)]
    pub a2a: bool,
    /// With --a2a: the endpoint URL the agent card announces (default: http://<bound address><listen path>).
    #[arg(long, value_name = "URL")]
    pub a2a_url: Option<String>,
    /// With --a2a: remove the session of a context unused this long (`24h`, `30m`; a live task's is kept). Default: contexts are kept until `dispatch session rm` or `prune`.
    #[arg(long, value_name = "DURATION")]
    pub session_ttl: Option<String>,
    /// With --host / DISPATCH_HOST: the name the cluster serves it under (`/hooks/<name>/…`), unique among running services. Default: the parcel's NAME.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Print the service id once it is up (listeners bound) and return; otherwise follow its log until it stops (Ctrl-C stops it).
    #[arg(short, long)]
    pub detach: bool,
    /// The project the service and its turns belong to (default: `default`).
    #[arg(long, env = "DISPATCH_PROJECT", value_name = "PROJECT")]
    pub project: Option<String>,
}

#[derive(Debug, Args)]
pub struct WakeArgs {
    /// The service's run id or unique prefix.
    #[arg(value_name = "RUN")]
    pub id: String,
    /// JSON payload for this wake.
    #[arg(value_name = "PAYLOAD")]
    pub payload: Option<String>,
    /// How long to wait for the service to answer.
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    pub timeout_ms: u64,
}
