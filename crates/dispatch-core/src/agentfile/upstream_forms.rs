//! What upstream Dispatch means by each of its directives, form by form, and
//! how Dispatch honours it: the rows of `docs/agentfile-compat.md`'s table,
//! referenced by the registry ([`super::directive_table`]).

use super::directives::Form;

/// `FROM`.
pub(super) const FROM_FORMS: &[Form] = &[
    Form {
        form: "`FROM dispatch/native[:tag]`",
        upstream: "the native courier",
        here: "supported (= `FROM agent`)",
    },
    Form {
        form: "`FROM dispatch/wasm`",
        upstream: "a WebAssembly guest component against the `dispatch:courier@0.0.1` WIT ABI, run by the WASM courier",
        here: "supported: the component runs under wasmtime with upstream's host functions (`model-complete`, `invoke-tool`, `memory-*`) and exports (`open-session`, `handle-operation`); the MODEL, TOOL, LIMIT and TIMEOUT lines mean what they mean for `FROM agent`; WASI grants only the ENV lines and the run's workspace. A core module or a missing file is refused at build. See [wasm.md](wasm.md)",
    },
];

/// `ENTRYPOINT`.
pub(super) const ENTRYPOINT_FORMS: &[Form] = &[Form {
    form: "`ENTRYPOINT chat|job|heartbeat`",
    upstream: "as ours",
    here: "supported",
}];

/// `COPY`.
pub(super) const COPY_FORMS: &[Form] = &[Form {
    form: "`COPY`",
    upstream: "files into the parcel",
    here: "supported",
}];

/// `ADD`.
pub(super) const ADD_FORMS: &[Form] = &[Form {
    form: "`ADD <src> [dest]`",
    upstream: "reserved for remote/archive expansion; behaves as COPY",
    here: "supported as COPY for local paths; a URL is refused (download it and COPY it, so the digest covers it)",
}];

/// `IDENTITY`.
pub(super) const IDENTITY_FORMS: &[Form] = &[Form {
    form: "`IDENTITY <file or text>`",
    upstream: "instruction files / inline text",
    here: "supported",
}];

/// `SOUL`.
pub(super) const SOUL_FORMS: &[Form] = &[Form {
    form: "`SOUL <file or text>`",
    upstream: "instruction files / inline text",
    here: "supported",
}];

/// `SKILL`.
pub(super) const SKILL_FORMS: &[Form] = &[
    Form {
        form: "`SKILL <file>`",
        upstream: "a skill's instructions",
        here: "supported",
    },
    Form {
        form: "`SKILL <dir>`",
        upstream: "an [Agent Skills](https://agentskills.io/specification) bundle: `SKILL.md` with YAML frontmatter (`name`, `description`), the rest packaged",
        here: "supported: the directory is copied into the parcel at the same path, the frontmatter is stripped, the body (after the description) goes into the prompt with the bundle's path; the agent reads the bundle's other files with the `read_skill_file` built-in, added to a native agent's tools with the first bundle. A bundle without `SKILL.md`, or whose frontmatter lacks `name`/`description`, is refused naming the SKILL line",
    },
    Form {
        form: "`dispatch skill ls|inspect <parcel> [name]`",
        upstream: "— (upstream has `skill validate|run`)",
        here: "lists a parcel's skills (name, files, sidecar tools, description) or shows one with its instructions; `--format json`. The parcel is an Agentfile directory (built first) or a built parcel's name or digest",
    },
    Form {
        form: "`skill.toml` sidecar (or `metadata.dispatch-manifest`)",
        upstream: "`[[tools]]` become local tools; `entrypoint` is the default",
        here: "supported: `name`, `script`, `schema`, `description`, `risk`, `approval`, `timeout`; a TOOL line of the same name wins; two skills declaring one name are refused. `entrypoint` applies when the Agentfile has no ENTRYPOINT",
    },
];

/// `PROMPT`.
pub(super) const PROMPT_FORMS: &[Form] = &[Form {
    form: "`PROMPT <file or text>`",
    upstream: "instruction files / inline text",
    here: "supported",
}];

/// `USER`.
pub(super) const USER_FORMS: &[Form] = &[Form {
    form: "`USER <file>`",
    upstream: "operator context (instruction file)",
    here: "supported: prompt section `# User`",
}];

/// `TOOLS`.
pub(super) const TOOLS_FORMS: &[Form] = &[Form {
    form: "`TOOLS <file>`",
    upstream: "tool guidance (instruction file)",
    here: "supported: prompt section `# Tools`",
}];

/// `MEMORY`.
pub(super) const MEMORY_FORMS: &[Form] = &[Form {
    form: "`MEMORY POLICY <file>`",
    upstream: "memory policy (instruction file)",
    here: "supported: `# Memory policy`. Any other `MEMORY` form is refused",
}];

/// `HEARTBEAT`.
pub(super) const HEARTBEAT_FORMS: &[Form] = &[Form {
    form: "`HEARTBEAT FILE <file>`",
    upstream: "heartbeat instructions; needs `ENTRYPOINT heartbeat`",
    here: "supported; refused without `ENTRYPOINT heartbeat`",
}];

/// `MOUNT`.
pub(super) const MOUNT_FORMS: &[Form] = &[
    Form {
        form: "`MOUNT SESSION sqlite`",
        upstream: "a durable session",
        here: "supported: sessions and checkpoints are in the run database (SQLite locally, PostgreSQL in a cluster)",
    },
    Form {
        form: "`MOUNT SESSION memory|postgres`, other drivers",
        upstream: "non-durable / remote session stores",
        here: "refused",
    },
    Form {
        form: "`MOUNT MEMORY sqlite`",
        upstream: "durable memory for the memory built-ins",
        here: "supported",
    },
    Form {
        form: "`MOUNT MEMORY none`",
        upstream: "no memory",
        here: "supported: a `memory_*` built-in is then refused at build",
    },
    Form {
        form: "`MOUNT MEMORY pgvector`",
        upstream: "vector memory",
        here: "refused",
    },
    Form {
        form: "`MOUNT ARTIFACTS local`",
        upstream: "a local artifacts directory",
        here: "supported: `DISPATCH_ARTIFACTS`, collected with their sha256",
    },
    Form {
        form: "`MOUNT ARTIFACTS s3`",
        upstream: "remote artifacts",
        here: "refused",
    },
];

/// `VISIBILITY`.
pub(super) const VISIBILITY_FORMS: &[Form] = &[Form {
    form: "`VISIBILITY open|opaque`",
    upstream: "stored in the manifest; no behaviour in upstream's reference courier",
    here: "supported as advisory metadata",
}];

/// `ROUTING`.
pub(super) const ROUTING_FORMS: &[Form] = &[Form {
    form: "`ROUTING balanced|deep|fast`",
    upstream: "stored metadata, not enforced upstream",
    here: "supported as advisory metadata",
}];

/// `FRAMEWORK`.
pub(super) const FRAMEWORK_FORMS: &[Form] = &[Form {
    form: "`FRAMEWORK <name> [VERSION v] [TARGET t]`",
    upstream: "authoring provenance, informational",
    here: "supported as advisory metadata",
}];

/// `COMPONENT`.
pub(super) const COMPONENT_FORMS: &[Form] = &[Form {
    form: "`COMPONENT <file>`",
    upstream: "the WebAssembly guest component of `FROM dispatch/wasm`",
    here: "supported (see `FROM dispatch/wasm`); a core module or a missing file is refused at build",
}];

/// `COMPACTION`.
pub(super) const COMPACTION_FORMS: &[Form] = &[Form {
    form: "`COMPACTION <n> [OVERLAP m]`",
    upstream: "framework-neutral compaction hint, not imposed upstream",
    here: "supported as advisory metadata (our own compaction is `LIMIT CONTEXT_TOKENS`)",
}];

/// `TIMEOUT`.
pub(super) const TIMEOUT_FORMS: &[Form] = &[
    Form {
        form: "`TIMEOUT RUN`, `TIMEOUT LLM`",
        upstream: "as ours",
        here: "supported (RUN ends a running attempt here, which upstream does not)",
    },
    Form {
        form: "`TIMEOUT TOOL <d>`",
        upstream: "the timeout of host-executed tools",
        here: "supported: every tool whose TOOL line sets no TIMEOUT",
    },
];

/// `LIMIT`.
pub(super) const LIMIT_FORMS: &[Form] = &[
    Form {
        form: "`LIMIT ITERATIONS <n>`",
        upstream: "parsed, not enforced upstream",
        here: "supported: at most n model calls per run; a model that asks for tools on the n-th call fails the run (`iterations_exceeded … (LIMIT ITERATIONS n)`)",
    },
    Form {
        form: "`LIMIT TOOL_CALLS`, `TOOL_ROUNDS`, `TOOL_OUTPUT`, `CONTEXT_TOKENS`",
        upstream: "as ours",
        here: "supported",
    },
    Form {
        form: "`LIMIT FUEL <n>`",
        upstream: "— (ours; upstream's WASM courier bounds a guest by time only)",
        here: "a WASM guest's instructions, metered by wasmtime fuel; out of fuel the run fails `budget_exceeded`. `FROM dispatch/wasm` only",
    },
];

/// `TOOL`.
pub(super) const TOOL_FORMS: &[Form] = &[
    Form {
        form: "`TOOL LOCAL … AS, DESCRIPTION, SCHEMA, RISK`",
        upstream: "a local program",
        here: "supported",
    },
    Form {
        form: "`TOOL LOCAL … USING <cmd> [args]`",
        upstream: "the interpreter that runs the program",
        here: "supported (`USING python3 -u` runs `python3 -u <program>`); refused with `TOOL_SANDBOX`",
    },
    Form {
        form: "`APPROVAL never|confirm`",
        upstream: "as ours",
        here: "supported",
    },
    Form {
        form: "`APPROVAL always`",
        upstream: "upstream's reference courier runs it without asking",
        here: "**supported differently**: here every call waits for a decision",
    },
    Form {
        form: "`APPROVAL audit`",
        upstream: "runs without asking, for the audit trail",
        here: "supported: runs at once; its `tool_call` event carries `approval: {policy: \"audit\", decision: \"approve\", by: \"audit policy\"}`",
    },
    Form {
        form: "`TOOL BUILTIN system_time`",
        upstream: "the current time",
        here: "supported: `{\"utc\": RFC 3339, \"unix_ms\": …}`",
    },
    Form {
        form: "`TOOL BUILTIN memory_get/put/list/delete`, `memory_list_range`, `memory_delete_range`, `memory_put_many`",
        upstream: "key/value memory with an optional `namespace`",
        here: "supported; the memory is in the run database, scoped to the session (else the parcel); `namespace` keys are `namespace/key`",
    },
    Form {
        form: "`TOOL BUILTIN checkpoint_put/get/list/delete`",
        upstream: "named session checkpoints",
        here: "supported: durable, in the run database, scoped to the session (else the parcel)",
    },
    Form {
        form: "`TOOL BUILTIN human_approval`",
        upstream: "a request for a human decision",
        here: "supported: every call waits for a decision through the run's approvals (`dispatch approve|deny`), whatever its APPROVAL says; a denial is what the model is told",
    },
    Form {
        form: "`TOOL BUILTIN web_search`",
        upstream: "live web search (declarative upstream: no courier implements it)",
        here: "supported through the provider's hosted search (OpenAI Responses `web_search`, Anthropic `web_search_20250305`, Gemini `google_search`), each search recorded as a `tool_call` by the provider; refused at build when a MODEL or FALLBACK's provider has none, or with `APPROVAL always|confirm` or `TIMEOUT` ([tools guide](guide/tools.md))",
    },
    Form {
        form: "any other unknown built-in (`topic_lookup`, …)",
        upstream: "—",
        here: "refused, listing the built-ins",
    },
    Form {
        form: "`TOOL MCP <name>` without `COMMAND`/`URL`",
        upstream: "a named server",
        here: "refused: say how to reach it (`COMMAND \"…\"` or `URL …`)",
    },
    Form {
        form: "`TOOL A2A <name> URL <url>` with `DISCOVERY auto|card|direct`, `AUTH bearer|header|basic`, `EXPECT_AGENT_NAME`, `EXPECT_CARD_SHA256`, `SCHEMA`, `APPROVAL`, `RISK`, `DESCRIPTION`, `TIMEOUT`",
        upstream: "a remote agent over A2A, with its trust policy",
        here: "supported, with upstream's trust rules; streams when the card says so, and cancels a task that outlives `TIMEOUT` ([below](#tool-a2a))",
    },
];

/// `MODEL`.
pub(super) const MODEL_FORMS: &[Form] = &[
    Form {
        form: "`MODEL`, `FALLBACK` with `PROVIDER openai|anthropic|gemini|openai_compatible`",
        upstream: "hosted models",
        here: "supported ([providers.md](providers.md)); `openai` is the Responses API, as upstream",
    },
    Form {
        form: "`PROVIDER claude` / `PROVIDER codex`",
        upstream: "the local `claude` CLI / `codex app-server` as the model backend, ambient tools denied",
        here: "**supported differently**: the CLI runs headless (`claude -p --output-format stream-json`, `codex exec --json`) as the whole loop with its own tools in the run's workspace and sandbox; its calls, tool calls and usage are the run's events ([providers.md](providers.md#local-coding-agent-clis-provider-claude-and-provider-codex)). FALLBACK, TOOL lines and per-call limits with them are refused by line",
    },
    Form {
        form: "`--reasoning-effort=`, `--persist-thread=` model options",
        upstream: "effort forwarded to the CLI; thread persistence",
        here: "supported for `claude`/`codex` (plus `--permission-mode=`, `--sandbox=`); the session's history is given to the CLI each turn, whichever `--persist-thread`. On other providers refused (write `REASONING effort …`)",
    },
];

/// `FALLBACK`.
pub(super) const FALLBACK_FORMS: &[Form] = &[Form {
    form: "`FALLBACK <model> [PROVIDER p]`",
    upstream: "fallback models, tried in declaration order when the primary hosted-model request fails before producing a reply",
    here: "supported, with the providers of MODEL",
}];

/// `NETWORK`.
pub(super) const NETWORK_FORMS: &[Form] = &[
    Form {
        form: "`NETWORK none`",
        upstream: "no network",
        here: "supported for containers (`FROM image`, `TOOL_SANDBOX`), as before",
    },
    Form {
        form: "`NETWORK allow <host>`",
        upstream: "per-host egress policy",
        here: "supported for process agents and a native agent's LOCAL tools and MCP servers: they run in a network namespace of their own whose only way out is an egress proxy that lets through the listed hosts (one a line; `*.example.com` for subdomains; every port) and records each decision as a `network` event ([isolation.md](guide/isolation.md#network-allow-a-per-host-egress-allowlist)). Needs root and the sandbox: a run that cannot have it fails at start. Refused at build for containers and qualifiers after the host",
    },
    Form {
        form: "`NETWORK publishers-only`",
        upstream: "egress to upstream's publishers only",
        here: "refused: Dispatch has no list of publishers (list the hosts with `NETWORK allow`)",
    },
];

/// `EVAL`.
pub(super) const EVAL_FORMS: &[Form] = &[
    Form {
        form: "`EVAL <file>`",
        upstream: "packaged eval cases (`name`, `input`, `expects_*`; one case or `[[cases]]`)",
        here: "supported: `dispatch eval` reads upstream's files as well as ours ([evals.md](evals.md#upstream-dispatchs-eval-files)): `input` is the payload; `expects_tool(s)` → tools called; `expects_no_tool`, `expects_tool_count` → the number of tool calls; `expects_text_contains|exact|not_contains` → the answer's text; `expects_error_contains` → the run failed, its reason holding the text. `expects_tool_stdout_*`, `expects_tool_stderr_contains`, `expects_tool_exit_code`, `expects_a2a_endpoint` and `entrypoint` are refused naming the key: a tool call's record here is what the model was told, not its process's streams, and each case runs the parcel's ENTRYPOINT",
    },
    Form {
        form: "`EVAL <file> REQUIRED`",
        upstream: "a required eval",
        here: "supported: every EVAL file is required here (`dispatch eval` exits 1 when any case fails)",
    },
];

/// `AGENTS`.
pub(super) const AGENTS_FORMS: &[Form] = &[Form {
    form: "`AGENTS <file>`",
    upstream: "operating procedures (instruction file)",
    here: "supported outside `FROM workflow` (in a workflow, `AGENTS` still lists the members)",
}];

/// `TEST`.
pub(super) const TEST_FORMS: &[Form] = &[Form {
    form: "`TEST tool:<alias>`",
    upstream: "a tool smoke test: the tool invoked directly with no input, expected to exit 0",
    here: "refused: `dispatch eval` runs each case as a run of the agent, where only the model calls tools (through their schema, approvals and budgets); invoking one with no input and no model has no run to be, and would bypass the schema most tools require. Write an EVAL case whose run calls the tool (`expects_tool = \"…\"`, or `expect.tools.called` with `expect.tools.args`)",
}];
