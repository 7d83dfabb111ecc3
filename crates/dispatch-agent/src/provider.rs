//! The narrow trait every model provider implements, and the provider-neutral
//! types that cross it. Nothing provider-specific crosses this boundary: a
//! provider turns a [`ModelRequest`] into its own wire format, streams the
//! answer, hands each text fragment to the caller as it arrives, and returns
//! the whole [`ModelResponse`] (text, tool calls, usage, finish reason).

use std::borrow::Cow;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which wire format a model speaks (defined with the Agentfile's MODEL directive).
pub use dispatch_core::agent::ProviderKind;
/// What a model is asked to spend on thinking (the Agentfile's REASONING).
pub use dispatch_core::agent::{Effort, Reasoning};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
    /// The result of a tool call (`tool_call_id` says which).
    Tool,
}

/// One message of the conversation (the system prompt is separate).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    /// Text content ("" when an assistant message only calls tools).
    #[serde(default)]
    pub content: String,
    /// Tool calls an assistant message made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For `Role::Tool`: the id of the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For `Role::Tool`: whether the tool failed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
    /// For `Role::Assistant`: the thinking the model did before answering,
    /// sent back with the message (Anthropic refuses a tool round with
    /// thinking on unless its signed thinking comes back).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thinking: Vec<Thinking>,
}

/// One block of a model's thinking, as the provider returned it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thinking {
    /// The thinking text (for a redacted block: its opaque data).
    #[serde(default)]
    pub text: String,
    /// The provider's signature over it (opaque; sent back as it came).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The block was redacted: `text` is encrypted data.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
}

impl Message {
    pub fn user(text: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: text.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            is_error: false,
            thinking: Vec::new(),
        }
    }

    pub fn assistant(text: impl Into<String>, tool_calls: Vec<ToolCall>) -> Self {
        Message {
            role: Role::Assistant,
            content: text.into(),
            tool_calls,
            tool_call_id: None,
            is_error: false,
            thinking: Vec::new(),
        }
    }

    pub fn tool_result(
        call_id: impl Into<String>,
        content: impl Into<String>,
        is_error: bool,
    ) -> Self {
        Message {
            role: Role::Tool,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id.into()),
            is_error,
            thinking: Vec::new(),
        }
    }
}

/// A tool call the model made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the JSON text the model produced (may be invalid JSON).
    pub arguments: String,
    /// An opaque signature the provider attached to the call, sent back
    /// with it (Gemini's `thoughtSignature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl ToolCall {
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
            signature: None,
        }
    }
}

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments (an object schema), shared: every run
    /// of a process offering a tool without a schema of its own holds the
    /// same one (see `tools::schema`).
    pub parameters: std::sync::Arc<serde_json::Value>,
}

/// Whether a request offers no tools (`tools` is then left out).
fn no_tools(tools: &[ToolSpec]) -> bool {
    tools.is_empty()
}

/// What to ask the model, provider-neutral. The loop lends it the
/// conversation (`system` and `messages` borrowed, not copied): a run
/// waiting on its model holds its conversation once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRequest<'a> {
    pub model: String,
    /// The system prompt ("" for none).
    pub system: Cow<'a, str>,
    pub messages: Cow<'a, [Message]>,
    #[serde(default, skip_serializing_if = "no_tools")]
    pub tools: Cow<'a, [ToolSpec]>,
    /// Most output tokens for this call (`LIMIT OUTPUT_TOKENS`). Anthropic
    /// requires one: its provider uses 4096 when this is `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    /// `REASONING` (or `--reasoning-effort`): each provider sends it in its
    /// own fields, or not at all when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Reasoning>,
    /// `TOOL BUILTIN web_search`: offer the provider's own web search (a
    /// hosted tool it runs inside the call; see [`WebSearch`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub web_search: bool,
}

/// One web search the provider ran inside a call (`TOOL BUILTIN
/// web_search`): what it searched for and the pages it found or cited.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WebSearch {
    /// The query, when the provider says it ("" when it does not).
    pub query: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<Source>,
}

/// A page a web search found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub url: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model finished its answer (`stop` / `end_turn` / `stop_sequence`).
    Stop,
    /// The model wants tools run (`tool_calls` / `tool_use`).
    ToolCalls,
    /// The output token limit cut the answer (`length` / `max_tokens`).
    Length,
    /// Anything else, as the provider said it (`content_filter`, …).
    Other(String),
}

impl FinishReason {
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::Length => "length",
            FinishReason::Other(s) => s,
        }
    }
}

/// The whole answer of one call, once the stream ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelResponse {
    /// The model as the provider named it in its answer (may differ from the request's).
    pub model: String,
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    /// From the provider's usage fields; `None` when it sent none.
    pub usage: Option<TokenUsage>,
    pub finish_reason: FinishReason,
    /// The model's thinking blocks, to send back with its message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thinking: Vec<Thinking>,
    /// The web searches the provider ran for this answer (hosted; nothing
    /// of them goes back in the conversation but the answer's text).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub searches: Vec<WebSearch>,
}

/// What the caller's delta callback says: go on, or abort the stream now
/// (a budget was crossed, the run was stopped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Abort,
}

/// One piece of a streamed answer handed to the caller as it arrives.
#[derive(Clone, Debug, PartialEq)]
pub enum Delta<'a> {
    /// Generated text.
    Text(&'a str),
    /// A fragment of a tool call's arguments (counted against budgets).
    ToolArguments(&'a str),
}

/// Why a call failed. Classified so the loop knows what to do next.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// 429: retry after the given time (from `Retry-After`), then fall back.
    #[error("rate limited (429): {message}")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// 5xx (and 529 overloaded): retry with backoff, then fall back.
    #[error("server error ({status}): {message}")]
    Server { status: u16, message: String },
    /// Could not connect, or the connection broke before any answer: retry, then fall back.
    #[error("connection error: {0}")]
    Connect(String),
    /// 400/401/403/404/422 and other 4xx: not retryable; `message` quotes the provider.
    #[error("request refused ({status}): {message}")]
    Refused { status: u16, message: String },
    /// The answer was not what the wire format says (non-JSON, a stream cut
    /// before its end, a missing field): not retryable on this model.
    #[error("bad answer from the provider: {0}")]
    Protocol(String),
    /// The caller aborted the stream ([`Flow::Abort`]).
    #[error("stream aborted")]
    Aborted,
}

impl ProviderError {
    /// Whether trying the same call again (after a backoff) may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. }
                | ProviderError::Server { .. }
                | ProviderError::Connect(_)
        )
    }
}

/// What one call produced on the wire, for the audit trail and offline
/// replay: the exact JSON body sent (no key: keys travel in headers only)
/// and the raw body received (the SSE text, or the error body).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exchange {
    pub url: String,
    /// The JSON text sent, as sent (shared with the HTTP client, not a
    /// copy). Empty when [`Exchange::record`] recorded it as it went out:
    /// [`Exchange::request_sha256`] then names it.
    pub request_body: bytes::Bytes,
    /// The sha256 that [`Exchange::record`] gave the body it recorded.
    pub request_sha256: Option<String>,
    /// Records the request body as it goes out (the runtime's call
    /// records), so that a call waiting on its answer does not also hold
    /// its conversation as the text it sent (issue #38 item 2).
    pub record: Option<RecordRequest>,
    pub status: u16,
    pub response_body: String,
    /// Milliseconds from sending the request to the first text or tool-call
    /// fragment (`None` when none arrived).
    pub first_token_ms: Option<u64>,
}

impl Exchange {
    /// The request body as JSON (`Null` when none was sent or it is not JSON).
    pub fn request_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.request_body).unwrap_or(serde_json::Value::Null)
    }

    /// Keeps `body`, the request as it goes out: recorded now when the
    /// exchange has a recorder (its digest kept), else held as it is.
    pub fn sending(&mut self, body: &bytes::Bytes) {
        match &self.record {
            Some(record) => {
                self.request_sha256 = (record.0)(body);
                self.request_body = bytes::Bytes::new();
            }
            None => self.request_body = body.clone(),
        }
    }
}

/// Records a body and gives its sha256 (`None` for an empty one).
pub type RecordFn = dyn Fn(&[u8]) -> Option<String> + Send + Sync;

/// What records a request body (content-addressed, see
/// [`crate::Sink::blob`]) and gives its sha256.
#[derive(Clone)]
pub struct RecordRequest(pub std::sync::Arc<RecordFn>);

impl std::fmt::Debug for RecordRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordRequest")
    }
}

impl PartialEq for RecordRequest {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A model provider: one per wire format.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    fn kind(&self) -> ProviderKind;

    /// Streams `req`, calling `on_delta` with each fragment as it arrives.
    /// Fills `exchange` with what went over the wire, whether the call
    /// succeeds or not. Never panics on anything the server sends.
    async fn stream(
        &self,
        req: &ModelRequest,
        on_delta: &mut (dyn for<'d> FnMut(Delta<'d>) -> Flow + Send),
        exchange: &mut Exchange,
    ) -> Result<ModelResponse, ProviderError>;
}
