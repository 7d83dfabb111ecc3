//! The table of every Agentfile directive (for help and error hints).

/// Every directive: its name, what it expects, and an example line.
#[rustfmt::skip]
pub const DIRECTIVES: &[(&str, &str, &str)] = &[
    ("FROM", "a courier (`process`, `agent`, `dispatch/wasm`, `noop`, `image <ref>`)", "FROM process"),
    ("NAME", "a name", "NAME my-agent"),
    ("VERSION", "a version", "VERSION 1.0.0"),
    ("LABEL", "key=value pairs", "LABEL team=research"),
    ("ENTRYPOINT", "`job`, `heartbeat` or `chat`", "ENTRYPOINT job"),
    ("COMMAND", "the program to run", "COMMAND sh agent.sh"),
    ("ENV", "KEY=value pairs or `KEY value`", "ENV LOG_LEVEL=info"),
    ("SECRET", "secret names, optionally TO the tools whose processes get them",
        "SECRET GITHUB_TOKEN TO github"),
    ("ENV_PASSTHROUGH", "names of variables to pass on from the environment",
        "ENV_PASSTHROUGH HTTPS_PROXY NO_PROXY"),
    ("COPY", "a source and an optional destination", "COPY agent.sh bin/"),
    ("ADD", "a source and an optional destination (as COPY; no URLs)", "ADD refs/ refs/"),
    ("IDENTITY", "a file or text", "IDENTITY identity.md"),
    ("SOUL", "a file or text", "SOUL soul.md"),
    ("SKILL", "one or more files", "SKILL skills/review.md"),
    ("PROMPT", "a file or text", "PROMPT prompts/task.md"),
    ("USER", "a file or text: the operator's context", "USER USER.md"),
    ("TOOLS", "a file or text: guidance on using the tools", "TOOLS TOOLS.md"),
    ("MEMORY", "POLICY and a file or text", "MEMORY POLICY MEMORY.md"),
    ("HEARTBEAT", "FILE and a file or text (with ENTRYPOINT heartbeat)", "HEARTBEAT FILE HEARTBEAT.md"),
    ("MOUNT", "SESSION sqlite, MEMORY sqlite|none or ARTIFACTS local", "MOUNT MEMORY sqlite"),
    ("VISIBILITY", "`open` or `opaque` (advisory)", "VISIBILITY open"),
    ("ROUTING", "`balanced`, `deep` or `fast` (advisory)", "ROUTING balanced"),
    ("FRAMEWORK", "a name and optional VERSION, TARGET (advisory)", "FRAMEWORK adk-rust VERSION 0.5.0"),
    ("COMPONENT", "a WebAssembly component file (with `FROM dispatch/wasm`)", "COMPONENT components/agent.wasm"),
    ("COMPACTION", "a number of events and an optional OVERLAP (advisory)", "COMPACTION 200 OVERLAP 32"),
    ("TIMEOUT", "[RUN|STEP|LLM|TOOL] and a duration", "TIMEOUT RUN 30m"),
    ("RETRY", "a number of attempts (at least 1) and an optional BACKOFF <initial>..<max>",
        "RETRY 3 BACKOFF 1s..30s"),
    ("LIMIT", "TOKENS <n> or COST <usd> (optionally followed by SOFT), or ITERATIONS, TOOL_ROUNDS, TOOL_CALLS, OUTPUT_TOKENS, CONTEXT_TOKENS <n> (OUTPUT_TOKENS optionally followed by ALLOW_TRUNCATION), or TOOL_OUTPUT <size>, or FUEL <n> (FROM dispatch/wasm)",
        "LIMIT COST 2.50 SOFT"),
    ("TOOL", "a kind (LOCAL, HTTP, MCP, BUILTIN) and what it needs",
        "TOOL LOCAL tools/lookup.sh AS lookup SCHEMA schemas/lookup.json"),
    ("MODEL", "a model name and optional PROVIDER (openai, openai_chat, anthropic, gemini, openai_compatible, claude, codex), BASE_URL, KEY",
        "MODEL gpt-4o-mini PROVIDER openai KEY OPENAI_API_KEY"),
    ("FALLBACK", "a model name and optional PROVIDER, BASE_URL, KEY",
        "FALLBACK claude-haiku-4-5 PROVIDER anthropic KEY ANTHROPIC_API_KEY"),
    ("REASONING", "`effort low|medium|high` and/or `budget <thinking tokens>`",
        "REASONING effort medium"),
    ("PRICE", "a model and its INPUT and OUTPUT prices in USD per million tokens",
        "PRICE llama3.2 INPUT 0.10 OUTPUT 0.20"),
    ("REQUIRES", "a name and a URL", "REQUIRES REDIS_URL redis://localhost:6379"),
    ("SCHEDULE", "a cron expression", "SCHEDULE \"0 */5 * * * *\""),
    ("LISTEN", "an address with a port", "LISTEN 127.0.0.1:8080"),
    ("LISTEN_PATH", "a path starting with `/`", "LISTEN_PATH /hook"),
    ("LISTEN_METHOD", "HTTP methods", "LISTEN_METHOD POST"),
    ("LISTEN_SECRET", "the name of a SECRET", "LISTEN_SECRET HOOK_SECRET"),
    ("LISTEN_SIGNATURE", "`github`, `stripe` or `hmac-sha256`, the name of a SECRET, an optional tolerance",
        "LISTEN_SIGNATURE github HOOK_SECRET"),
    ("LISTEN_MAX_BODY_BYTES", "a number of bytes", "LISTEN_MAX_BODY_BYTES 1048576"),
    ("LISTEN_MAX_HEADER_BYTES", "a number of bytes", "LISTEN_MAX_HEADER_BYTES 16384"),
    ("RESOURCES", "CPUS <n>, MEMORY <size>, PIDS <n>, DISK <size> (any of them)",
        "RESOURCES CPUS 1 MEMORY 512M PIDS 256 DISK 1G"),
    ("NETWORK", "`none`, `bridge` or `host` (containers)", "NETWORK none"),
    ("TOOL_SANDBOX", "`image` and an image reference", "TOOL_SANDBOX image localhost/tools:1"),
    ("EVAL", "one or more case files for `dispatch eval`", "EVAL evals/smoke.toml"),
    ("AGENT", "a member's name and a directory or built parcel", "AGENT writer ./writer"),
    ("COORDINATOR", "`workflow`, `chain` or `fan_out`", "COORDINATOR workflow"),
    ("ROUTE", "`from -> to, …` and an optional `ON ERROR`", "ROUTE researcher -> writer"),
    ("AGENTS", "member names in order (workflows), or a file of operating procedures", "AGENTS extractor transformer"),
    ("AGGREGATE", "`merge_all`, `first` or `vote`", "AGGREGATE merge_all"),
    ("JOIN", "member names that wait for all their upstream messages", "JOIN editor"),
    ("CONCURRENCY", "KEY <payload.path or label.NAME> MAX <n> and an optional STRATEGY queue|cancel-in-progress|drop",
        "CONCURRENCY KEY payload.customer_id MAX 2"),
    ("RATE_LIMIT", "MODEL or PROVIDER <name> with REQUESTS <n/window> and/or TOKENS <n/window>",
        "RATE_LIMIT MODEL gpt-4o-mini REQUESTS 500/min TOKENS 200000/min"),
];

/// The book's Agentfile reference page (`docs/reference/agentfile.md`), as
/// Markdown: every directive of [`DIRECTIVES`], the Dockerfile words that
/// mean another directive here, and the directives refused with their reason.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Agentfile directives\n\n<!-- Generated from crates/dispatch-core/src/agentfile/directives.rs by `dispatch internal reference agentfile`; do not edit. -->\n\n\
         One directive per line; a line starting with `#` is a comment; a line ending in `\\` continues on the next. \
         Directive names are case-insensitive. The [Agentfile guide](../guide/agentfile.md) shows them together, \
         and [upstream compatibility](../agentfile-compat.md) maps upstream Dispatch's meaning onto ours.\n\n\
         | directive | expects | at most once | example |\n|---|---|---|---|\n",
    );
    for (name, what, example) in DIRECTIVES {
        let once = if super::SINGLE.contains(name) {
            "yes"
        } else {
            ""
        };
        out.push_str(&format!(
            "| `{name}` | {} | {once} | `{}` |\n",
            cell(what),
            cell(example)
        ));
    }
    out.push_str("\n## Dockerfile words\n\nUnknown here; the error names the directive that means it:\n\n| word | use |\n|---|---|\n");
    for (from, to) in super::ALIASES {
        out.push_str(&format!("| `{from}` | `{to}` |\n"));
    }
    out.push_str("\n## Refused\n\nUpstream directives Dispatch cannot honour are refused at build, naming the line:\n\n| directive | why |\n|---|---|\n");
    for (name, why) in super::REFUSED {
        out.push_str(&format!("| `{name}` | {} |\n", cell(why)));
    }
    out
}

/// A table cell: pipes escaped, and `<`/`>` outside code spans written as
/// entities (Markdown would take `<n>` for an HTML tag).
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut code = false;
    for c in text.chars() {
        match c {
            '`' => {
                code = !code;
                out.push(c);
            }
            '|' => out.push_str("\\|"),
            '<' if !code => out.push_str("&lt;"),
            '>' if !code => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}
