//! Every environment variable Dispatch reads or sets: one table, from which
//! the book's reference page is generated (`docs/reference/environment.md`).
//! A test in the CLI crate finds every `"DISPATCH_…"` name in the sources
//! and fails when one is missing here.

/// Who sets a variable and who reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// You set it for `dispatch` (the CLI, a server, a worker).
    Setting,
    /// The runtime sets it for an agent (and its tools).
    Agent,
    /// Only the test suite and the benchmarks read it.
    Test,
}

impl Scope {
    pub fn title(self) -> &'static str {
        match self {
            Scope::Setting => "Settings: what you set for `dispatch`",
            Scope::Agent => "Given to agents: what the runtime sets for an agent and its tools",
            Scope::Test => "Tests and benchmarks",
        }
    }
}

/// One variable.
#[derive(Clone, Copy, Debug)]
pub struct Var {
    pub name: &'static str,
    pub scope: Scope,
    pub meaning: &'static str,
}

const fn setting(name: &'static str, meaning: &'static str) -> Var {
    Var {
        name,
        scope: Scope::Setting,
        meaning,
    }
}

const fn agent(name: &'static str, meaning: &'static str) -> Var {
    Var {
        name,
        scope: Scope::Agent,
        meaning,
    }
}

const fn test(name: &'static str, meaning: &'static str) -> Var {
    Var {
        name,
        scope: Scope::Test,
        meaning,
    }
}

/// Every variable, by scope and then by name.
#[rustfmt::skip]
pub const ENVIRONMENT: &[Var] = &[
    setting("DISPATCH_A2A_ALLOWED_ORIGINS", "comma-separated origins that `TOOL A2A` may call; others are refused (default: any, under the trust policy)"),
    setting("DISPATCH_A2A_TRUST_POLICY", "a TOML file of trust rules for `TOOL A2A` (origins, agent names, card digests)"),
    setting("DISPATCH_ALLOWED_HOSTS", "`--allowed-host` of `server` and `ui`: Host names (beyond loopback) the API answers, against DNS rebinding"),
    setting("DISPATCH_ALLOW_PRIVATE_CALLBACKS", "`server --allow-private-callbacks`: completion callbacks may go to private and loopback addresses"),
    setting("DISPATCH_APPROVAL_WAIT", "`process` keeps a native agent's process waiting for an approval instead of suspending the run"),
    setting("DISPATCH_ARTIFACTS_URL", "`--artifacts` of `server` and `worker`: the cluster's object store (`s3://`, `gs://`, `az://`, `file://`)"),
    setting("DISPATCH_BUSY_TIMEOUT_MS", "how long a command waits for a SQLite database another process holds locked (default 5000)"),
    setting("DISPATCH_BUS_URL", "`--bus` of `server` and `worker`: Redis Streams as the dispatch channel"),
    setting("DISPATCH_CACERT", "`--cacert`: a PEM file of CA certificates trusted beside the built-in roots for an https `--host`"),
    setting("DISPATCH_CALLBACK_SECRET", "`server --callback-secret`: the HMAC key that signs completion callbacks"),
    setting("DISPATCH_CASSETTE", "the cassette mode of a native agent (`record:DIR` or `replay:DIR`); set by `dispatch eval --record/--replay`"),
    setting("DISPATCH_CASSETTE_TOOLS", "`replay`: with a replayed cassette, answer tool calls from it too (`dispatch eval --replay-tools`)"),
    setting("DISPATCH_CLAUDE_BIN", "the Claude Code program for `PROVIDER claude` (default `claude` on PATH; upstream's `CLAUDE_BINARY` too)"),
    setting("DISPATCH_CODEX_BIN", "the Codex program for `PROVIDER codex` (default `codex` on PATH)"),
    setting("DISPATCH_CONTAINER_RUNTIME", "`podman`, `docker` or a path to either, for `FROM image` and `TOOL_SANDBOX image`"),
    setting("DISPATCH_CONTAINER_ULIMITS", "the ulimits given to containers (default `nofile=1024:1024,nproc=1000:1000`)"),
    setting("DISPATCH_DATABASE_URL", "`--database-url` of `server` and `worker`: a PostgreSQL URL (without it, the local SQLite database)"),
    setting("DISPATCH_HOST", "`--host`: the `dispatch server` the CLI talks to (`127.0.0.1:8077`, `https://…`)"),
    setting("DISPATCH_HTTP2_DIRECT", "`off`: model calls to an HTTPS provider go through the pooled HTTP client, not over a direct HTTP/2 connection of the process (off too when `HTTPS_PROXY` or `ALL_PROXY` is set)"),
    setting("DISPATCH_LISTEN_SHARED_SECRET", "`serve --listen-shared-secret`: the shared secret of a service's listener"),
    setting("DISPATCH_LOG", "the log filter of `server` and `worker` (as `RUST_LOG`, which is read when this is unset)"),
    setting("DISPATCH_LOG_FORMAT", "`--log-format` of `server` and `worker`: `text` or `json`"),
    setting("DISPATCH_NOTIFICATIONS", "the notifications file (webhooks, Slack, e-mail; see the notifications guide), read by local runs' helpers and `dispatch server` (default: `notifications.toml` in the state directory, when it exists)"),
    setting("DISPATCH_NO_CGROUPS", "`1`: use no cgroups (rlimits only; no containment group)"),
    setting("DISPATCH_POLICY", "a Rego policy file deciding run creation and tool calls (default: `policy.rego` in the state directory, when it exists)"),
    setting("DISPATCH_PROJECT", "`--project`: the project runs are created in and `ps`, `approvals` and `dlq` list (default: `default` to create; every project the caller may see to list)"),
    setting("DISPATCH_RATE_LIMIT_STORE", "`--rate-limit-store`: Redis for `RATE_LIMIT` buckets shared across workers"),
    setting("DISPATCH_RETENTION", "`server --retention`: delete old finished runs in the background"),
    setting("DISPATCH_REVIEW_TIMEOUT", "how long a run the policy sends to review waits for a person before it is cancelled, like `24h`: read where a local run is created, and `server --review-timeout` (default: until someone decides)"),
    setting("DISPATCH_ROOT", "`--root`: the state directory (default: the nearest `.dispatch/` upwards, else `./.dispatch`)"),
    setting("DISPATCH_SANDBOX", "`off` (or `0`, `false`, `no`) runs agents, tools and MCP servers without the sandbox"),
    setting("DISPATCH_SANDBOX_GID", "the group id sandboxed processes run as (default 65534)"),
    setting("DISPATCH_SANDBOX_UID", "the user id sandboxed processes run as when root (default 65534, `nobody`)"),
    setting("DISPATCH_SANDBOX_USERNS", "`off`: no user namespace when not root (Landlock only)"),
    setting("DISPATCH_SPAWN", "how a native agent's LOCAL tools start: unset, from a stage made by the helper's or worker's spawner (`dispatch __spawner`); `stage`: from a stage executed per call (`dispatch __stage`); `fork`: forked from the helper or worker"),
    setting("DISPATCH_TLS_CERT", "`server --tls-cert`: serve HTTPS with this PEM certificate chain"),
    setting("DISPATCH_TLS_KEY", "`server --tls-key`: the PEM private key of `--tls-cert`"),
    setting("DISPATCH_TOKEN", "the API token the CLI presents to a server that requires one"),
    setting("DISPATCH_WORKSPACE", "`overlay`, `copy` or `auto` (default): how run workspaces are made. Agents get the workspace's path under the same name"),
    agent("DISPATCH_APPROVALS", "a directory where approval decisions appear as `<id>.json`"),
    agent("DISPATCH_ARTIFACTS", "a directory: files left there are collected as artifacts"),
    agent("DISPATCH_ATTEMPT", "the attempt number, from 1"),
    agent("DISPATCH_BRIEF", "the path of the brief (instructions, skills, configuration)"),
    agent("DISPATCH_BRIEF_SHA256", "the brief's digest, verified before the start"),
    agent("DISPATCH_CHECKPOINT", "the path of the last checkpoint, when an attempt resumes"),
    agent("DISPATCH_EVENTS", "an append-only JSON-lines file the runtime follows live (the agent protocol's events)"),
    agent("DISPATCH_FENCE", "the attempt's fencing token, to guard the agent's own side effects"),
    agent("DISPATCH_OPERATION", "`job`, `heartbeat` or `service`"),
    agent("DISPATCH_OUTPUT", "where the agent writes its final result"),
    agent("DISPATCH_PARCEL_DIR", "the parcel's files, read-only"),
    agent("DISPATCH_PAYLOAD", "the path of the payload (also on stdin)"),
    agent("DISPATCH_RESUME", "the path of what a durable wait resumes with"),
    agent("DISPATCH_RUN_ID", "the run's id"),
    agent("DISPATCH_SESSION_FILE", "the bound session's file, kept across the session's runs"),
    agent("DISPATCH_STATE_DIR", "persistent data of the parcel, kept across runs"),
    agent("DISPATCH_TOOL_INPUT", "a LOCAL tool's arguments as text, as in `TOOL_INPUT` (upstream Dispatch's name for it)"),
    test("DISPATCH_TEST_PG", "the PostgreSQL admin URL the tests create their databases with (default `postgres://postgres@127.0.0.1:5432/test`)"),
    test("DISPATCH_TEST_STALL", "fault injection: stalls a worker's runtime (`N` or `NxK`), to test lease renewal"),
];

/// Variables without the `DISPATCH_` prefix that Dispatch reads.
#[rustfmt::skip]
pub const OTHER_ENVIRONMENT: &[(&str, &str)] = &[
    ("NO_COLOR", "any value: no color in the CLI's output"),
    ("LLM_BASE_URL", "send every model call of native agents to this OpenAI-compatible server (e.g. the mock model)"),
    ("LLM_MODEL", "with `LLM_BASE_URL`: the model to ask for"),
    ("LLM_API_KEY", "with `LLM_BASE_URL`: the key to present"),
    ("OPENAI_API_KEY", "OpenAI's key when `MODEL` names no `KEY`"),
    ("ANTHROPIC_API_KEY", "Anthropic's key when `MODEL` names no `KEY`"),
    ("GEMINI_API_KEY", "Gemini's key when `MODEL` names no `KEY` (`GOOGLE_API_KEY` too)"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "export traces of runs over OTLP/HTTP to this collector"),
    ("RUST_LOG", "the log filter of `server` and `worker` when `DISPATCH_LOG` is unset"),
    ("AWS_ENDPOINT_URL", "an S3-compatible endpoint for `--artifacts s3://…` (`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT` too)"),
    ("CI", "`true`: tests that need a service (PostgreSQL, Redis, podman, chromium) fail instead of skipping"),
];

/// The variable of that name.
pub fn find(name: &str) -> Option<&'static Var> {
    ENVIRONMENT.iter().find(|v| v.name == name)
}

/// The reference page, as Markdown.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Environment variables\n\n<!-- Generated from crates/dispatch-core/src/environment.rs by `dispatch internal reference environment`; do not edit. -->\n",
    );
    for scope in [Scope::Setting, Scope::Agent, Scope::Test] {
        out.push_str(&format!(
            "\n## {}\n\n| variable | meaning |\n|---|---|\n",
            scope.title()
        ));
        for v in ENVIRONMENT.iter().filter(|v| v.scope == scope) {
            out.push_str(&format!("| `{}` | {} |\n", v.name, v.meaning));
        }
    }
    out.push_str("\n## Other variables Dispatch reads\n\n| variable | meaning |\n|---|---|\n");
    for (name, meaning) in OTHER_ENVIRONMENT {
        out.push_str(&format!("| `{name}` | {meaning} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_sorted_within_their_scope() {
        for scope in [Scope::Setting, Scope::Agent, Scope::Test] {
            let names: Vec<&str> = ENVIRONMENT
                .iter()
                .filter(|v| v.scope == scope)
                .map(|v| v.name)
                .collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(names, sorted, "{scope:?}: keep names sorted and unique");
        }
        assert!(find("DISPATCH_ROOT").is_some());
        assert!(find(concat!("DISPATCH", "_NOPE")).is_none());
    }
}
