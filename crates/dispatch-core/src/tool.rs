//! The tools a native agent may call (`TOOL` lines), as stored in the
//! parcel's manifest. Pure data: the code that runs them lives in the
//! `dispatch-agent` crate.
//!
//! ```text
//! TOOL LOCAL tools/lookup.sh AS lookup_order SCHEMA schemas/order.json DESCRIPTION "Find an order" TIMEOUT 10s
//! TOOL HTTP refund POST https://billing.internal/refunds HEADER Authorization=BILLING_TOKEN SCHEMA schemas/refund.json APPROVAL confirm RISK high
//! TOOL MCP files COMMAND "mcp-server-files /data" ALLOW read_file,list_directory
//! TOOL MCP github URL https://mcp.example.com/mcp HEADER Authorization=GITHUB_TOKEN
//! TOOL BUILTIN read_file write_file list_files memory_get memory_put memory_list
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a tool call needs before it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalPolicy {
    /// Runs at once.
    #[default]
    Never,
    /// Every call waits for a decision.
    Always,
    /// Every call waits for a decision; a terminal may ask inline.
    Confirm,
    /// Runs at once, and the call's event says it was let through by the
    /// audit policy (upstream Dispatch's `APPROVAL audit`).
    Audit,
}

impl ApprovalPolicy {
    pub fn parse(s: &str) -> Option<ApprovalPolicy> {
        match s.to_ascii_lowercase().as_str() {
            "never" => Some(ApprovalPolicy::Never),
            "always" => Some(ApprovalPolicy::Always),
            "confirm" => Some(ApprovalPolicy::Confirm),
            "audit" => Some(ApprovalPolicy::Audit),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalPolicy::Never => "never",
            ApprovalPolicy::Always => "always",
            ApprovalPolicy::Confirm => "confirm",
            ApprovalPolicy::Audit => "audit",
        }
    }
}

/// How much harm a call can do (shown with its approval).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    #[default]
    Low,
    Medium,
    High,
}

impl Risk {
    pub fn parse(s: &str) -> Option<Risk> {
        match s.to_ascii_lowercase().as_str() {
            "low" => Some(Risk::Low),
            "medium" => Some(Risk::Medium),
            "high" => Some(Risk::High),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
        }
    }
}

/// A header whose value is a declared SECRET's, read where the tool runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretHeader {
    pub name: String,
    pub secret: String,
}

/// The built-in tools.
pub const BUILTINS: [&str; 19] = [
    "read_file",
    "write_file",
    "list_files",
    "memory_get",
    "memory_put",
    "memory_list",
    "memory_delete",
    "memory_list_range",
    "memory_delete_range",
    "memory_put_many",
    "checkpoint_put",
    "checkpoint_get",
    "checkpoint_list",
    "checkpoint_delete",
    "system_time",
    "human_approval",
    "read_skill_file",
    "send_message",
    "handoff",
];

/// Built-ins the model's provider runs inside its calls (hosted tools):
/// `web_search` is OpenAI's `web_search`, Anthropic's `web_search_20250305`
/// and Gemini's `google_search`. Nothing runs in Dispatch; each search is
/// recorded from the answer. Only models whose provider hosts them may
/// declare them (checked at build).
pub const HOSTED_BUILTINS: [&str; 1] = ["web_search"];

/// What kind of tool, with what it needs to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ToolKind {
    /// A program in the parcel: the arguments as JSON on stdin and in
    /// `TOOL_INPUT`; stdout is the result; a non-zero exit is an error the
    /// model sees.
    Local {
        program: String,
        /// `USING <command> [args…]`: the interpreter the program is run
        /// with (`USING python3 -u` runs `python3 -u <program>`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        using: Vec<String>,
    },
    /// An HTTP request: the arguments as its JSON body.
    Http {
        method: String,
        url: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        headers: Vec<SecretHeader>,
    },
    /// A Model Context Protocol server, over stdio (`command`) or
    /// streamable HTTP (`url`); each of its tools becomes one the model may
    /// call (only those in `allow`, when given).
    Mcp {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        headers: Vec<SecretHeader>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        allow: Vec<String>,
    },
    /// A remote agent over the A2A protocol (`TOOL A2A <name> URL <url>`):
    /// each call is one `message/send` (or `message/stream`) to it.
    A2a {
        url: String,
        #[serde(default)]
        discovery: A2aDiscovery,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<A2aAuth>,
        /// `EXPECT_AGENT_NAME`: the discovered card's `name` must be this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect_agent_name: Option<String>,
        /// `EXPECT_CARD_SHA256`: the discovered card's raw body must hash to this.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect_card_sha256: Option<String>,
    },
    /// One of [`BUILTINS`].
    Builtin,
}

/// How an A2A tool finds the remote agent's JSON-RPC endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum A2aDiscovery {
    /// The agent card if there is one, else the URL itself.
    #[default]
    Auto,
    /// The agent card must be found.
    Card,
    /// No discovery: the URL is the JSON-RPC endpoint.
    Direct,
}

impl A2aDiscovery {
    pub fn parse(s: &str) -> Option<A2aDiscovery> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Some(A2aDiscovery::Auto),
            "card" => Some(A2aDiscovery::Card),
            "direct" => Some(A2aDiscovery::Direct),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            A2aDiscovery::Auto => "auto",
            A2aDiscovery::Card => "card",
            A2aDiscovery::Direct => "direct",
        }
    }
}

/// How an A2A tool authenticates; every value is a declared SECRET's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case")]
pub enum A2aAuth {
    /// `Authorization: Bearer <secret>`.
    Bearer { secret: String },
    /// `<header>: <secret>`.
    Header { header: String, secret: String },
    /// `Authorization: Basic base64(<user>:<password>)`.
    Basic { user: String, password: String },
}

impl A2aAuth {
    /// The SECRET names it reads.
    pub fn secrets(&self) -> Vec<&str> {
        match self {
            A2aAuth::Bearer { secret } | A2aAuth::Header { secret, .. } => vec![secret],
            A2aAuth::Basic { user, password } => vec![user, password],
        }
    }
}

/// Why `url` may not be an A2A endpoint, if it may not: it must be
/// `https://`, or `http://` to a loopback host (development), and carry no
/// credentials (they come from `AUTH` and declared secrets).
pub fn a2a_url_problem(url: &str) -> Option<String> {
    let parsed = match url::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return Some(format!("`{url}` is not a URL ({e})")),
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Some(format!(
            "`{url}` carries credentials (hint: use AUTH bearer|header|basic with a declared SECRET)"
        ));
    }
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" => None,
        "http" if loopback => None,
        "http" => Some(format!(
            "`{url}` is plain http to a host that is not loopback (hint: use https://; http:// is only for localhost or 127.0.0.1)"
        )),
        other => Some(format!("`{url}` has scheme `{other}` (hint: https://)")),
    }
}

impl ToolKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ToolKind::Local { .. } => "local",
            ToolKind::Http { .. } => "http",
            ToolKind::Mcp { .. } => "mcp",
            ToolKind::A2a { .. } => "a2a",
            ToolKind::Builtin => "builtin",
        }
    }
}

/// One `TOOL` line (a BUILTIN line gives one per tool it names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolDecl {
    /// The name the model calls it by (an MCP server's name: its tools keep
    /// their own names).
    pub name: String,
    #[serde(flatten)]
    pub kind: ToolKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `SCHEMA <file>`: the path in the build context, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_file: Option<String>,
    /// The JSON Schema of its arguments (read from `schema_file` at build
    /// time, so the parcel's digest covers it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// `TIMEOUT <duration>`: the longest one call may take (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<Risk>,
    /// `APPROVAL_TIMEOUT <duration>`: a call waiting for a decision longer
    /// than this is denied (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_timeout_ms: Option<u64>,
    /// The Agentfile line it came from.
    #[serde(default)]
    pub line: usize,
}

/// How long a tool call may take when its TOOL line sets no TIMEOUT.
pub const DEFAULT_TOOL_TIMEOUT_MS: u64 = 60_000;
/// How much of a tool's output the model sees when no LIMIT TOOL_OUTPUT is set.
pub const DEFAULT_TOOL_OUTPUT_BYTES: u64 = 64 * 1024;
/// How many tool calls a run may make when no LIMIT TOOL_CALLS is set.
pub const DEFAULT_TOOL_CALLS: u64 = 200;
/// How long a call waits for a decision when no APPROVAL_TIMEOUT is set.
pub const DEFAULT_APPROVAL_TIMEOUT_MS: u64 = 3_600_000;

impl ToolDecl {
    /// A built-in the model's provider runs inside its calls
    /// ([`HOSTED_BUILTINS`]): offered with each request, never run here.
    pub fn is_hosted(&self) -> bool {
        self.kind == ToolKind::Builtin && HOSTED_BUILTINS.contains(&self.name.as_str())
    }

    /// The approval a call needs: the TOOL line's, else `never` for the
    /// read-only built-ins and for every other tool (documented default).
    pub fn approval(&self) -> ApprovalPolicy {
        let policy = self.approval.unwrap_or_default();
        // `human_approval` is itself a request for a decision: it always waits for one.
        if self.kind == ToolKind::Builtin
            && self.name == "human_approval"
            && matches!(policy, ApprovalPolicy::Never | ApprovalPolicy::Audit)
        {
            return ApprovalPolicy::Always;
        }
        policy
    }

    pub fn risk(&self) -> Risk {
        self.risk.unwrap_or_default()
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(DEFAULT_TOOL_TIMEOUT_MS)
    }

    /// The timeout of one call: the TOOL line's, else the agent's `TIMEOUT
    /// TOOL` (`default_ms`), else [`DEFAULT_TOOL_TIMEOUT_MS`].
    pub fn timeout_ms_or(&self, default_ms: Option<u64>) -> u64 {
        self.timeout_ms
            .or(default_ms)
            .unwrap_or(DEFAULT_TOOL_TIMEOUT_MS)
    }

    pub fn approval_timeout_ms(&self) -> u64 {
        self.approval_timeout_ms
            .unwrap_or(DEFAULT_APPROVAL_TIMEOUT_MS)
    }
}
