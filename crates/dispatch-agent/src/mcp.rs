//! The MCP (Model Context Protocol) client for native-agent tools: one
//! [`McpServer`] per `TOOL MCP <name> COMMAND "…" | URL <url> [HEADER N=SECRET]
//! [ALLOW a,b]` line, speaking the protocol through the official Rust SDK
//! (`rmcp`) over stdio or streamable HTTP.
//!
//! A stdio server runs as `/bin/sh -c <command>` in a process group of its
//! own, with exactly the environment it is given. Stopping it closes its
//! stdin, waits briefly, then sends SIGTERM to the group, waits up to a
//! second for the server to exit, and sends SIGKILL to the group so no
//! descendant survives; dropping an [`McpServer`] without
//! [`McpServer::shutdown`] sends SIGKILL to the group at once. Its stderr is
//! kept in a small ring buffer, and its tail goes into every start error.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::ServiceExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ContentBlock,
    Implementation, Tool,
};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};

/// How much of a stdio server's stderr is kept (its most recent bytes).
pub const STDERR_TAIL_BYTES: usize = 2048;
/// How long a stdio server gets to exit by itself once its stdin is closed.
const EOF_GRACE: Duration = Duration::from_millis(500);
/// How long a stdio server gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(1);
/// How long a failed start waits for the server's exit status and stderr.
const REPORT_WAIT: Duration = Duration::from_secs(1);

/// Where and how to reach one server: from a `TOOL MCP <name> COMMAND "…" |
/// URL <url> [HEADER N=SECRET] [ALLOW a,b]` line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct McpConfig {
    pub name: String,
    pub command: Option<String>,
    pub url: Option<String>,
    /// Header name, value (already resolved from secrets); HTTP only.
    pub headers: Vec<(String, String)>,
    /// The tools the agent may use; empty means all the server has.
    pub allow: Vec<String>,
    /// The working directory of a stdio server.
    pub cwd: PathBuf,
    /// The environment a stdio server gets, exactly (nothing is inherited).
    pub env: Vec<(String, String)>,
    /// Called on a stdio server's command before it is spawned (the run's
    /// limits and sandbox).
    pub spawn_hook: HookSlot,
}

/// An optional [`crate::tools::SpawnHook`] in a comparable config (hooks
/// compare equal: they are not part of what a server is).
#[derive(Clone, Default)]
pub struct HookSlot(pub Option<crate::tools::SpawnHook>);

impl std::fmt::Debug for HookSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "HookSlot(set)"
        } else {
            "HookSlot(none)"
        })
    }
}

impl PartialEq for HookSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for HookSlot {}

/// One tool as the server describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct McpTool {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
}

type Session = RunningService<RoleClient, ClientConfig>;

/// A started, initialized MCP server and the tools the agent may call on it.
pub struct McpServer {
    name: String,
    info: (String, String),
    tools: Vec<McpTool>,
    digest: String,
    session: Session,
    process: Option<ServerProcess>,
}

impl McpServer {
    /// Starts (stdio: `sh -c <command>` in `cwd`, in a process group of its
    /// own, killed with the group when the server is dropped or shut down;
    /// HTTP: a streamable-HTTP client with the headers), runs `initialize`
    /// and `tools/list` (all pages), both within `timeout`. Errors are one
    /// line naming the server; for a stdio server they end with the tail of
    /// its stderr.
    pub async fn start(config: &McpConfig, timeout: Duration) -> Result<McpServer, String> {
        let deadline = Instant::now() + timeout;
        let name = &config.name;
        let (session, listed, process) = match (&config.command, &config.url) {
            (Some(command), None) => {
                let (process, stdout, stdin) = ServerProcess::spawn(config, command)?;
                match handshake((stdout, stdin), deadline).await {
                    Ok((session, listed)) => (session, listed, Some(process)),
                    Err(failure) => return Err(process.report(name, failure, timeout).await),
                }
            }
            (None, Some(url)) => {
                let transport = http_transport(config, url)?;
                match handshake(transport, deadline).await {
                    Ok((session, listed)) => (session, listed, None),
                    Err(failure) => {
                        return Err(format!("MCP server `{name}` {}", failure.what(timeout)));
                    }
                }
            }
            _ => {
                return Err(format!(
                    "MCP server `{name}` needs exactly one of COMMAND or URL"
                ));
            }
        };
        let info = session
            .peer_info()
            .and_then(|peer| peer.server_info.clone())
            .map(|server| (server.name, server.version))
            .unwrap_or_default();
        let all: Vec<McpTool> = listed.into_iter().map(McpTool::from).collect();
        let mut server = McpServer {
            name: name.clone(),
            info,
            digest: tools_digest(&all),
            tools: Vec::new(),
            session,
            process,
        };
        match allowed(name, &all, &config.allow) {
            Ok(tools) => {
                server.tools = tools;
                Ok(server)
            }
            Err(message) => {
                server.shutdown().await;
                Err(message)
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// serverInfo name and version from initialize.
    pub fn server_info(&self) -> (String, String) {
        self.info.clone()
    }

    /// The tools the model may call: tools/list filtered by ALLOW.
    pub fn tools(&self) -> &[McpTool] {
        &self.tools
    }

    /// sha256 hex of the canonical JSON of the full, unfiltered tools/list
    /// (`[{name, description, inputSchema}]` sorted by name, object keys
    /// sorted): the bill of materials records it so a changed server is noticed.
    pub fn tools_digest(&self) -> &str {
        &self.digest
    }

    /// The process group of a stdio server (its pid), `None` over HTTP.
    pub fn process_group(&self) -> Option<i32> {
        self.process.as_ref().map(|p| p.pgid.as_raw())
    }

    /// The most recent bytes (up to [`STDERR_TAIL_BYTES`]) a stdio server
    /// wrote to stderr, lossily decoded; empty over HTTP.
    pub fn stderr_tail(&self) -> String {
        self.process
            .as_ref()
            .map(|p| p.tail.text())
            .unwrap_or_default()
    }

    /// Calls one tool; `Ok((text, is_error))` where text joins the result's
    /// text contents (other contents described briefly, e.g. `[image/png,
    /// 1234 bytes]`) and is_error is the result's `isError`; `Err(message)`
    /// for a tool the agent may not call, protocol or transport failures, or
    /// the timeout.
    pub async fn call(
        &self,
        tool: &str,
        arguments: Value,
        timeout: Duration,
    ) -> Result<(String, bool), String> {
        let server = &self.name;
        if !self.tools.iter().any(|t| t.name == tool) {
            return Err(format!(
                "MCP server `{server}` has no tool `{tool}` for this agent; it may call: {}",
                names(&self.tools)
            ));
        }
        let mut params = CallToolRequestParams::new(tool.to_string());
        match arguments {
            Value::Object(map) => params = params.with_arguments(map),
            Value::Null => {}
            other => {
                return Err(format!(
                    "MCP tool `{tool}` on server `{server}` takes a JSON object of arguments, not `{other}`"
                ));
            }
        }
        match tokio::time::timeout(timeout, self.session.call_tool(params)).await {
            Err(_) => Err(format!(
                "MCP tool `{tool}` on server `{server}` did not answer within its timeout of {timeout:?}"
            )),
            Ok(Err(e)) => {
                let mut message = format!(
                    "MCP tool `{tool}` on server `{server}` failed: {}",
                    one_line(&service_error(&e))
                );
                if let Some(process) = &self.process
                    && !matches!(e, rmcp::ServiceError::McpError(_))
                {
                    message.push_str("; ");
                    message.push_str(&tail_clause(&process.tail.text()));
                }
                Err(message)
            }
            Ok(Ok(result)) => Ok((render(&result), result.is_error == Some(true))),
        }
    }

    /// Ends the session and stops the server (for stdio: stdin closed, then
    /// SIGTERM and SIGKILL to its process group).
    pub async fn shutdown(mut self) {
        // Cancelling the session drops the transport, which closes the
        // server's stdin (stdio) or ends the HTTP session.
        let _ = tokio::time::timeout(TERM_GRACE, self.session.close()).await;
        if let Some(mut process) = self.process.take() {
            process.stop().await;
        }
    }
}

impl From<Tool> for McpTool {
    fn from(tool: Tool) -> McpTool {
        McpTool {
            name: tool.name.into_owned(),
            description: tool.description.map(|d| d.into_owned()).unwrap_or_default(),
            input_schema: Value::Object((*tool.input_schema).clone()),
        }
    }
}

/// Why `initialize` or `tools/list` did not complete.
enum Failure {
    TimedOut(&'static str),
    Failed(&'static str, String),
}

impl Failure {
    fn what(&self, limit: Duration) -> String {
        match self {
            Failure::TimedOut(step) => format!("did not answer {step} within {limit:?}"),
            Failure::Failed(step, e) => format!("failed during {step}: {}", one_line(e)),
        }
    }
}

/// Runs `initialize` and `tools/list` (all pages) over `transport` by `deadline`.
async fn handshake<T, E, A>(
    transport: T,
    deadline: Instant,
) -> Result<(Session, Vec<Tool>), Failure>
where
    T: rmcp::transport::IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let client = ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("dispatch", env!("CARGO_PKG_VERSION")),
    );
    let session = match timeout_at(deadline, client.serve(transport)).await {
        Err(_) => return Err(Failure::TimedOut("initialize")),
        Ok(Err(e)) => return Err(Failure::Failed("initialize", init_error(&e))),
        Ok(Ok(session)) => session,
    };
    match timeout_at(deadline, session.list_all_tools()).await {
        Err(_) => Err(Failure::TimedOut("tools/list")),
        Ok(Err(e)) => Err(Failure::Failed("tools/list", service_error(&e))),
        Ok(Ok(tools)) => Ok((session, tools)),
    }
}

/// An initialize error without the SDK's transport type names: for a
/// transport failure, the chain of causes and what the client was doing.
fn init_error(e: &rmcp::service::ClientInitializeError) -> String {
    match e {
        rmcp::service::ClientInitializeError::TransportError { error, context, .. } => {
            format!(
                "{} (while trying to {context})",
                causes(error.error.as_ref())
            )
        }
        other => other.to_string(),
    }
}

/// A request error, a transport failure as its chain of causes.
fn service_error(e: &rmcp::ServiceError) -> String {
    match e {
        rmcp::ServiceError::TransportSend(error) => causes(error.error.as_ref()),
        other => other.to_string(),
    }
}

/// An error and its sources, joined by ": " (a source already quoted by
/// the message before it is left out).
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    use rmcp::transport::streamable_http_client::StreamableHttpError;
    // The HTTP client's own error is not linked as a source; it says more.
    if let Some(StreamableHttpError::Client(client)) =
        e.downcast_ref::<StreamableHttpError<reqwest::Error>>()
    {
        return causes(client);
    }
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// A streamable-HTTP transport sending `config.headers` with every request.
/// Its client is the workspace's (`dispatch_http`: rustls with ring, the
/// webpki roots and `DISPATCH_CACERT`), and follows no redirects (so the headers never travel to another origin).
fn http_transport(
    config: &McpConfig,
    url: &str,
) -> Result<StreamableHttpClientTransport<reqwest::Client>, String> {
    let name = &config.name;
    let mut headers = HashMap::new();
    for (header, value) in &config.headers {
        let header_name = HeaderName::try_from(header.as_str())
            .map_err(|_| format!("MCP server `{name}`: `{header}` is not a valid header name"))?;
        let mut header_value = HeaderValue::try_from(value.as_str()).map_err(|_| {
            format!(
                "MCP server `{name}`: the value of header `{header}` is not a valid header value"
            )
        })?;
        header_value.set_sensitive(true);
        headers.insert(header_name, header_value);
    }
    let client = dispatch_http::builder("mcp")
        .map_err(|e| format!("MCP server `{name}`: {e}"))?
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| format!("MCP server `{name}`: HTTP client setup failed: {e}"))?;
    let transport_config =
        StreamableHttpClientTransportConfig::with_uri(url.to_string()).custom_headers(headers);
    Ok(StreamableHttpClientTransport::with_client(
        client,
        transport_config,
    ))
}

/// The tools named by ALLOW (all when it is empty), in the server's order.
fn allowed(server: &str, all: &[McpTool], allow: &[String]) -> Result<Vec<McpTool>, String> {
    if let Some(missing) = allow.iter().find(|a| !all.iter().any(|t| &t.name == *a)) {
        return Err(format!(
            "MCP server `{server}` has no tool `{missing}` (named in ALLOW); it has: {}",
            names(all)
        ));
    }
    Ok(all
        .iter()
        .filter(|t| allow.is_empty() || allow.contains(&t.name))
        .cloned()
        .collect())
}

fn names(tools: &[McpTool]) -> String {
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    if names.is_empty() {
        "no tools".to_string()
    } else {
        names.join(", ")
    }
}

/// sha256 hex of `serde_json::to_vec` of `[{name, description, inputSchema}]`
/// sorted by name, with every object's keys in sorted order.
fn tools_digest(tools: &[McpTool]) -> String {
    let mut sorted: Vec<&McpTool> = tools.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let list: Vec<Value> = sorted
        .into_iter()
        .map(|t| {
            canonical(&json!({
                "name": t.name,
                "description": t.description,
                "inputSchema": t.input_schema,
            }))
        })
        .collect();
    let bytes = serde_json::to_vec(&list).expect("a JSON value always serializes");
    hex::encode(Sha256::digest(bytes))
}

/// The value with every object's keys inserted in sorted order, so the
/// bytes do not depend on the order the server sent them in.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// The text of a tool result: text contents joined by newlines, other
/// contents described briefly; the structured content when there is no other.
fn render(result: &CallToolResult) -> String {
    if result.content.is_empty()
        && let Some(structured) = &result.structured_content
    {
        return structured.to_string();
    }
    result
        .content
        .iter()
        .map(describe)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One content block as text: text as it is (also an embedded text
/// resource), anything else as `[kind, mime type, N bytes, uri]` with the
/// parts it has, e.g. `[image/png, 1234 bytes]`.
fn describe(block: &ContentBlock) -> String {
    if let ContentBlock::Text(text) = block {
        return text.text.clone();
    }
    let value = serde_json::to_value(block).unwrap_or_default();
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("content");
    // An embedded resource keeps its fields under "resource".
    let inner = value.get("resource").unwrap_or(&value);
    let field = |key: &str| inner.get(key).and_then(Value::as_str);
    if let Some(text) = field("text") {
        return text.to_string();
    }
    let mut parts = Vec::new();
    if !matches!(kind, "image" | "audio") {
        parts.push(kind.replace('_', " "));
    }
    parts.extend(field("mimeType").map(str::to_string));
    if let Some(data) = field("data").or(field("blob")) {
        parts.push(format!("{} bytes", base64_len(data)));
    }
    parts.extend(field("uri").map(str::to_string));
    format!("[{}]", parts.join(", "))
}

/// The number of bytes a base64 string decodes to.
fn base64_len(data: &str) -> usize {
    let data = data.trim_end();
    let padding = data.bytes().rev().take_while(|&b| b == b'=').count();
    (data.len() / 4 * 3 + (data.len() % 4).saturating_sub(1)).saturating_sub(padding)
}

/// A stdio server's process: the group it leads, its stderr tail, and
/// whether it has been stopped (Drop kills the group otherwise).
struct ServerProcess {
    child: Child,
    pgid: Pid,
    tail: Arc<Tail>,
    reader: Option<JoinHandle<()>>,
    stopped: bool,
}

impl ServerProcess {
    fn spawn(
        config: &McpConfig,
        command: &str,
    ) -> Result<(ServerProcess, ChildStdout, ChildStdin), String> {
        let name = &config.name;
        let mut spawn = Command::new("/bin/sh");
        spawn
            .arg("-c")
            .arg(command)
            .current_dir(&config.cwd)
            .env_clear()
            .envs(config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        crate::tools::die_with_parent(&mut spawn);
        if let Some(hook) = &config.spawn_hook.0 {
            hook(&mut spawn);
        }
        let mut child = spawn.spawn().map_err(|e| {
            format!(
                "MCP server `{name}` could not be started in {}: {e}",
                config.cwd.display()
            )
        })?;
        let pid = child.id().expect("a just-spawned child has a pid");
        let pgid = Pid::from_raw(i32::try_from(pid).expect("pids fit in i32"));
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let tail = Arc::new(Tail::default());
        let reader = tokio::spawn({
            let tail = Arc::clone(&tail);
            async move {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = stderr.read(&mut chunk).await {
                    tail.push(&chunk[..n]);
                }
            }
        });
        let process = ServerProcess {
            child,
            pgid,
            tail,
            reader: Some(reader),
            stopped: false,
        };
        Ok((process, stdout, stdin))
    }

    /// Stops the group (the caller has closed the server's stdin): a short
    /// wait for the server to exit by itself, SIGTERM to the group, up to
    /// [`TERM_GRACE`] for the server to exit, then SIGKILL to the group for
    /// anything left, and the server reaped.
    async fn stop(&mut self) {
        if timeout(EOF_GRACE, self.child.wait()).await.is_err() {
            let _ = killpg(self.pgid, Signal::SIGTERM);
            let _ = timeout(TERM_GRACE, self.child.wait()).await;
        } else {
            // The server is gone; its descendants get the same warning.
            let _ = killpg(self.pgid, Signal::SIGTERM);
        }
        let _ = killpg(self.pgid, Signal::SIGKILL);
        let _ = timeout(TERM_GRACE, self.child.wait()).await;
        self.stopped = true;
    }

    /// The one-line start error: what went wrong, the exit status when the
    /// server exited by itself, and the tail of its stderr. Stops the group.
    async fn report(mut self, name: &str, failure: Failure, limit: Duration) -> String {
        let exited: Option<ExitStatus> = match failure {
            Failure::TimedOut(_) => None,
            Failure::Failed(..) => timeout(REPORT_WAIT, self.child.wait())
                .await
                .ok()
                .and_then(Result::ok),
        };
        self.stop().await;
        if let Some(reader) = self.reader.take() {
            let _ = timeout(REPORT_WAIT, reader).await;
        }
        let what = match (&failure, exited) {
            (Failure::Failed(step, _), Some(status)) => {
                format!("exited before answering {step} ({status})")
            }
            _ => failure.what(limit),
        };
        format!(
            "MCP server `{name}` {what}; {}",
            tail_clause(&self.tail.text())
        )
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if !self.stopped {
            // Only the synchronous kill is possible here; tokio reaps the
            // dropped child in the background.
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
    }
}

/// The last [`STDERR_TAIL_BYTES`] bytes written to a server's stderr.
#[derive(Default)]
struct Tail {
    inner: Mutex<(VecDeque<u8>, bool)>,
}

impl Tail {
    fn push(&self, chunk: &[u8]) {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (bytes, cut) = &mut *guard;
        bytes.extend(chunk);
        let excess = bytes.len().saturating_sub(STDERR_TAIL_BYTES);
        if excess > 0 {
            bytes.drain(..excess);
            *cut = true;
        }
    }

    fn text(&self) -> String {
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (bytes, cut) = &*guard;
        let (front, back) = bytes.as_slices();
        let text = String::from_utf8_lossy(&[front, back].concat()).into_owned();
        if *cut { format!("…{text}") } else { text }
    }
}

fn tail_clause(tail: &str) -> String {
    let line = one_line(tail);
    if line.is_empty() {
        "its stderr was empty".to_string()
    } else {
        format!("its stderr ended with: {line}")
    }
}

/// The text on one line: its non-blank lines, trimmed, joined by " | ".
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_contents_are_described_briefly() {
        let block =
            |v: Value| -> ContentBlock { serde_json::from_value(v).expect("a content block") };
        let image = block(json!({"type": "image", "data": "YWJj", "mimeType": "image/png"}));
        assert_eq!(describe(&image), "[image/png, 3 bytes]");
        let text =
            block(json!({"type": "resource", "resource": {"uri": "file:///a", "text": "hi"}}));
        assert_eq!(describe(&text), "hi");
        let blob = json!({"uri": "file:///a.pdf", "mimeType": "application/pdf", "blob": "YQ=="});
        let blob = block(json!({"type": "resource", "resource": blob}));
        assert_eq!(
            describe(&blob),
            "[resource, application/pdf, 1 bytes, file:///a.pdf]"
        );
    }

    #[test]
    fn base64_lengths_account_for_padding() {
        assert_eq!(base64_len(""), 0);
        assert_eq!(base64_len("YQ=="), 1);
        assert_eq!(base64_len("YWI="), 2);
        assert_eq!(base64_len("YWJj"), 3);
        assert_eq!(base64_len("YWJjZA"), 4);
    }

    #[test]
    fn the_tail_keeps_the_most_recent_bytes() {
        let tail = Tail::default();
        tail.push(&[b'a'; STDERR_TAIL_BYTES]);
        tail.push(b"the end\n");
        let text = tail.text();
        assert!(text.starts_with('…'), "{text}");
        assert!(text.ends_with("the end\n"), "{text}");
        assert_eq!(text.len(), '…'.len_utf8() + STDERR_TAIL_BYTES);
    }

    #[test]
    fn the_digest_ignores_order_of_tools_and_keys() {
        let tool = |name: &str, schema: Value| McpTool {
            name: name.into(),
            description: format!("{name} tool"),
            input_schema: schema,
        };
        let a = [
            tool(
                "b",
                json!({"type": "object", "properties": {"x": {}, "y": {}}}),
            ),
            tool("a", json!({})),
        ];
        let b = [
            tool("a", json!({})),
            tool(
                "b",
                json!({"properties": {"y": {}, "x": {}}, "type": "object"}),
            ),
        ];
        assert_eq!(tools_digest(&a), tools_digest(&b));
        assert_ne!(tools_digest(&a), tools_digest(&a[..1]));
    }

    #[test]
    fn durations_read_as_people_write_them() {
        // Messages print durations with `{:?}`.
        assert_eq!(format!("{:?}", Duration::from_millis(250)), "250ms");
        assert_eq!(format!("{:?}", Duration::from_secs(10)), "10s");
        assert_eq!(format!("{:?}", Duration::from_millis(1500)), "1.5s");
    }
}
