//! A fixture MCP server for tests, written with the official SDK's server
//! side (`rmcp`), so the client in `dispatch_agent::mcp` is tested against the real
//! wire format over real stdio pipes and real loopback HTTP.
//!
//! Its tools: `echo` ({"text"} → the text), `add` ({"a", "b"} → the sum),
//! `fail` (a result with `isError: true`), `slow` ({"ms"} → sleeps, then
//! "done"; a cancelled call stops sleeping) and `whoami` (the
//! `authorization` header of the HTTP request that carried the call, or
//! "stdio" over stdio).
//!
//! Environment, read when serving starts:
//! - `MCP_FIXTURE_EXTRA_TOOL=<name>` adds a tool of that name (returns
//!   "extra"), so a test can change the server's tools/list.
//! - `MCP_FIXTURE_FAIL_START=1` makes it refuse to start before it reads
//!   anything (the program then exits 1 with the message on stderr).
//!
//! It prints `mcp fixture: ready` to stderr once it is serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::request::Parts;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};

/// The text the `fail` tool returns, with `isError: true`.
pub const FAIL_TEXT: &str = "it failed on purpose";

/// The fixture's tool handler. Build it with [`Fixture::from_env`].
#[derive(Clone, Debug, Default)]
pub struct Fixture {
    extra_tool: Option<String>,
}

impl Fixture {
    /// The fixture as the environment configures it (`MCP_FIXTURE_EXTRA_TOOL`).
    pub fn from_env() -> Fixture {
        Fixture {
            extra_tool: std::env::var("MCP_FIXTURE_EXTRA_TOOL")
                .ok()
                .filter(|name| !name.is_empty()),
        }
    }

    /// Every tool the fixture offers, in the order tools/list gives them.
    pub fn tools(&self) -> Vec<Tool> {
        let mut tools = vec![
            tool(
                "echo",
                "Returns the text it is given.",
                json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
            ),
            tool(
                "add",
                "Adds two numbers.",
                json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}),
            ),
            tool(
                "fail",
                "Always fails, as a tool error.",
                json!({"type": "object", "properties": {}}),
            ),
            tool(
                "slow",
                "Sleeps for `ms` milliseconds, then returns \"done\".",
                json!({"type": "object", "properties": {"ms": {"type": "integer", "minimum": 0}}, "required": ["ms"]}),
            ),
            tool(
                "whoami",
                "Returns the authorization header the call came with.",
                json!({"type": "object", "properties": {}}),
            ),
        ];
        if let Some(name) = &self.extra_tool {
            tools.push(tool(
                name.clone(),
                "An extra tool added by MCP_FIXTURE_EXTRA_TOOL.",
                json!({"type": "object", "properties": {}}),
            ));
        }
        tools
    }

    async fn run(
        &self,
        name: &str,
        args: &JsonObject,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let text = match name {
            "echo" => str_arg(args, "text")?.to_string(),
            "add" => (num_arg(args, "a")? + num_arg(args, "b")?).to_string(),
            "fail" => return Ok(CallToolResult::error(vec![ContentBlock::text(FAIL_TEXT)])),
            "slow" => {
                let ms = args.get("ms").and_then(Value::as_u64).ok_or_else(|| {
                    ErrorData::invalid_params("`ms` must be a non-negative integer", None)
                })?;
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(ms)) => "done".to_string(),
                    () = ctx.ct.cancelled() => "cancelled".to_string(),
                }
            }
            "whoami" => match ctx.extensions.get::<Parts>() {
                Some(parts) => parts
                    .headers
                    .get("authorization")
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default(),
                None => "stdio".to_string(),
            },
            other if self.extra_tool.as_deref() == Some(other) => "extra".to_string(),
            other => {
                return Err(ErrorData::invalid_params(
                    format!("no tool named `{other}`"),
                    None,
                ));
            }
        };
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
    }
}

fn tool(name: impl Into<String>, description: &'static str, schema: Value) -> Tool {
    let Value::Object(schema) = schema else {
        unreachable!("every fixture schema is written as a JSON object")
    };
    Tool::new(name.into(), description, Arc::new(schema))
}

fn str_arg<'a>(args: &'a JsonObject, key: &str) -> Result<&'a str, ErrorData> {
    args.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| ErrorData::invalid_params(format!("`{key}` must be a string"), None))
}

fn num_arg(args: &JsonObject, key: &str) -> Result<f64, ErrorData> {
    args.get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| ErrorData::invalid_params(format!("`{key}` must be a number"), None))
}

impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new("dispatch-mcp-fixture", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        self.run(&request.name, &args, &ctx).await.map(Into::into)
    }
}

/// Refuses to start when `MCP_FIXTURE_FAIL_START=1` (the program prints the
/// message on stderr and exits 1).
fn check_start() -> Result<(), String> {
    if std::env::var("MCP_FIXTURE_FAIL_START").as_deref() == Ok("1") {
        return Err("mcp fixture: refusing to start because MCP_FIXTURE_FAIL_START=1".into());
    }
    Ok(())
}

/// Serves the fixture over stdin/stdout until stdin ends.
pub async fn serve_stdio() -> Result<(), String> {
    check_start()?;
    eprintln!("mcp fixture: ready");
    let running = Fixture::from_env()
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("mcp fixture: initialize failed: {e}"))?;
    running
        .waiting()
        .await
        .map_err(|e| format!("mcp fixture: stopped abnormally: {e}"))?;
    Ok(())
}

/// Serves the fixture as streamable HTTP at `/mcp` on `listener` until the
/// task is dropped or the listener fails.
pub async fn serve_http(listener: tokio::net::TcpListener) -> Result<(), String> {
    check_start()?;
    let service = StreamableHttpService::new(
        || Ok(Fixture::from_env()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let app = axum::Router::new().route_service("/mcp", service);
    eprintln!("mcp fixture: ready");
    axum::serve(listener, app)
        .await
        .map_err(|e| format!("mcp fixture: http server failed: {e}"))
}

/// The `dispatch-mcp-fixture` program of this crate, found in the target
/// directory of the running test or benchmark (beside it, or above its
/// `deps/`). Cargo puts it there for this crate's own integration test
/// (`tests/fixture_program.rs`), so `cargo test --workspace` and
/// `cargo build --workspace` build it; another package's tests alone do not,
/// so its absence fails with the command that builds it.
pub fn fixture_program() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join("dispatch-mcp-fixture");
    assert!(
        path.is_file(),
        "{} is missing (hint: `cargo build -p dispatch-test-support --bins`, or run the tests with --workspace)",
        path.display()
    );
    path
}
