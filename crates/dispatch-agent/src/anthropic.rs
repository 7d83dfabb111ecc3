//! Anthropic Messages (`POST {base}/messages`), streamed: `tool_use` blocks
//! with their input in `input_json_delta` pieces, usage from `message_start`
//! and `message_delta`. With `REASONING`, extended thinking
//! (`thinking: {type: enabled, budget_tokens}`); its signed `thinking`
//! blocks come back with the assistant's message on the next call. With
//! `TOOL BUILTIN web_search`, the hosted `web_search_20250305` tool: each
//! `server_tool_use` block and its `web_search_tool_result` is a
//! [`WebSearch`].

use serde_json::{Value, json};

use crate::provider::{
    Delta, Exchange, FinishReason, Flow, Message, ModelRequest, ModelResponse, Provider,
    ProviderError, ProviderKind, Role, Source, Thinking, TokenUsage, ToolCall, WebSearch,
};
use crate::sse::{StreamParser, json, post_stream};

/// Output tokens asked for when the Agentfile sets no LIMIT OUTPUT_TOKENS (the API requires a number).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
const VERSION: &str = "2023-06-01";
/// Anthropic's hosted web search tool, as its API names the version.
pub const WEB_SEARCH_TOOL: &str = "web_search_20250305";
/// The stop reason of a turn the API paused (hosted tools ran long): the
/// turn is continued by sending its content back.
const PAUSE_TURN: &str = "pause_turn";
/// How many times one call continues a paused turn before it gives the
/// answer as it stands (finish reason `pause_turn`).
const MAX_CONTINUATIONS: usize = 8;

pub struct Anthropic {
    client: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
}

impl std::fmt::Debug for Anthropic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anthropic")
            .field("base_url", &self.base_url)
            .finish()
    }
}

fn content_blocks(m: &Message, thinking: bool) -> Vec<Value> {
    let mut blocks = Vec::new();
    match m.role {
        Role::Tool => blocks.push(json!({"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content, "is_error": m.is_error})),
        _ => {
            for t in m.thinking.iter().filter(|_| thinking) {
                blocks.push(if t.redacted {
                    json!({"type": "redacted_thinking", "data": t.text})
                } else {
                    json!({"type": "thinking", "thinking": t.text, "signature": t.signature.as_deref().unwrap_or_default()})
                });
            }
            if !m.content.is_empty() {
                blocks.push(json!({"type": "text", "text": m.content}));
            }
            for c in &m.tool_calls {
                let input: Value = serde_json::from_str(&c.arguments).ok().filter(Value::is_object).unwrap_or(json!({}));
                blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
            }
        }
    }
    blocks
}

impl Anthropic {
    pub fn new(
        client: reqwest::Client,
        base_url: Option<String>,
        api_key: Option<String>,
    ) -> Anthropic {
        let base_url =
            base_url.unwrap_or_else(|| ProviderKind::Anthropic.default_base_url().to_string());
        Anthropic {
            client,
            base_url: crate::wire::normalize_base_url(&base_url, "/messages"),
            api_key,
        }
    }

    pub fn url(&self) -> String {
        format!("{}/messages", self.base_url)
    }

    /// The exact JSON body a call sends (the key travels in a header only).
    /// Tool results are user messages; consecutive messages of one role merge.
    pub fn body(&self, req: &ModelRequest<'_>) -> Value {
        let budget = thinking_budget(req);
        let mut messages: Vec<Value> = Vec::new();
        for m in req.messages.iter() {
            let role = if m.role == Role::Assistant {
                "assistant"
            } else {
                "user"
            };
            let blocks = content_blocks(m, budget.is_some());
            if blocks.is_empty() {
                continue;
            }
            match messages.last_mut() {
                Some(last) if last["role"] == role => {
                    if let Some(content) = last["content"].as_array_mut() {
                        content.extend(blocks);
                    }
                }
                _ => messages.push(json!({"role": role, "content": blocks})),
            }
        }
        let answer = req.max_output_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        let mut body = json!({
            "model": req.model,
            "max_tokens": answer + budget.unwrap_or(0),
            "messages": messages,
            "stream": true,
        });
        if let Some(budget) = budget {
            body["thinking"] = json!({"type": "enabled", "budget_tokens": budget});
        }
        if !req.system.is_empty() {
            body["system"] = json!(req.system);
        }
        let mut tools: Vec<Value> = req.tools.iter().map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters})).collect();
        if req.web_search {
            tools.push(json!({"type": WEB_SEARCH_TOOL, "name": "web_search"}));
        }
        if !tools.is_empty() {
            body["tools"] = json!(tools);
        }
        body
    }
}

/// The thinking budget to ask for: REASONING's (an effort stands for a
/// budget), unless the conversation's last tool round was answered by a
/// model that left no signed thinking (a fallback from another provider),
/// which Anthropic refuses with thinking on. `max_tokens` is then the
/// budget plus the answer's own limit, so that it stays above the budget.
fn thinking_budget(req: &ModelRequest<'_>) -> Option<u64> {
    let budget = req.reasoning?.budget()?;
    let last = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::Assistant);
    let unsigned_round = last.is_some_and(|m| !m.tool_calls.is_empty() && m.thinking.is_empty());
    (!unsigned_round).then_some(budget)
}

#[async_trait::async_trait]
impl Provider for Anthropic {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Anthropic
    }

    async fn stream(
        &self,
        req: &ModelRequest,
        on_delta: &mut (dyn for<'d> FnMut(Delta<'d>) -> Flow + Send),
        exchange: &mut Exchange,
    ) -> Result<ModelResponse, ProviderError> {
        let mut headers = vec![("anthropic-version", VERSION)];
        if let Some(k) = &self.api_key {
            headers.push(("x-api-key", k.as_str()));
        }
        // Serialized at once (the `Value` is gone before the call goes
        // out); a continued turn's body is built again with what the
        // paused parts said.
        let url = self.url();
        let mut body = crate::sse::encode(&self.body(req));
        // The exchange names the first request: kept as it is when nothing
        // records it as it goes out, else by the digest it was recorded as.
        let first_body = exchange.record.is_none().then(|| body.clone());
        let mut first_sha = None;
        let mut paused_blocks: Vec<Value> = Vec::new();
        let mut so_far: Option<ModelResponse> = None;
        let mut continued = 0;
        loop {
            let mut parser = Events::new(&req.model);
            let before = std::mem::take(&mut exchange.response_body);
            let (result, first_token) = {
                let started = std::time::Instant::now();
                let mut first = None;
                let r = post_stream(
                    &self.client,
                    &url,
                    &headers,
                    std::mem::take(&mut body),
                    exchange,
                    |_, data| {
                        parser.feed(data, &mut |d: Delta<'_>| {
                            first.get_or_insert_with(|| started.elapsed().as_millis() as u64);
                            on_delta(d)
                        })
                    },
                )
                .await;
                (r, first)
            };
            // What went over the wire: the first request, every answer.
            exchange.response_body.insert_str(0, &before);
            match &first_body {
                Some(first) => exchange.request_body.clone_from(first),
                None if continued == 0 => first_sha.clone_from(&exchange.request_sha256),
                None => exchange.request_sha256.clone_from(&first_sha),
            }
            if continued == 0 || exchange.first_token_ms.is_none() {
                exchange.first_token_ms = first_token;
            }
            result?;
            let paused = parser.paused();
            let part = parser.finish()?;
            let answer = match so_far.take() {
                Some(before) => join(before, part),
                None => part,
            };
            match paused {
                Some(blocks) if continued < MAX_CONTINUATIONS => {
                    paused_blocks.extend(blocks);
                    let mut next = self.body(req);
                    continue_turn(&mut next, paused_blocks.clone());
                    body = crate::sse::encode(&next);
                    so_far = Some(answer);
                    continued += 1;
                }
                _ => return Ok(answer),
            }
        }
    }
}

enum Block {
    /// A text block and its text.
    Text(String),
    Tool(ToolCall),
    Thinking(Thinking),
    /// A hosted web search (`server_tool_use`): its id and input JSON.
    Search(String, String),
    /// What a search found (`web_search_tool_result`): the search's id and
    /// the block's `content` as it came (sent back as it is when a paused
    /// turn is continued).
    Found(String, Value),
    Other,
}

/// Assembles a streamed message from its events (pure: fed one `data` at a time).
pub(crate) struct Events {
    model: String,
    text: String,
    blocks: Vec<(u64, Block)>,
    stop: Option<String>,
    input: Option<u64>,
    output: Option<u64>,
    done: bool,
}

impl Events {
    pub(crate) fn new(model: &str) -> Self {
        Events {
            model: model.to_string(),
            text: String::new(),
            blocks: Vec::new(),
            stop: None,
            input: None,
            output: None,
            done: false,
        }
    }

    fn block(&mut self, index: u64) -> Option<&mut Block> {
        self.blocks
            .iter_mut()
            .find(|(i, _)| *i == index)
            .map(|(_, b)| b)
    }

    /// The message's content blocks, as the API wants them back, when the
    /// API paused the turn (`stop_reason: pause_turn`: a long turn of
    /// hosted tools, to be continued by sending them back as they are).
    fn paused(&self) -> Option<Vec<Value>> {
        if self.stop.as_deref() != Some(PAUSE_TURN) {
            return None;
        }
        let blocks = self.blocks.iter().filter_map(|(_, b)| match b {
            Block::Text(t) => Some(json!({"type": "text", "text": t})),
            Block::Tool(c) => {
                let input: Value = serde_json::from_str(&c.arguments).unwrap_or(json!({}));
                Some(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}))
            }
            Block::Thinking(t) if t.redacted => {
                Some(json!({"type": "redacted_thinking", "data": t.text}))
            }
            Block::Thinking(t) => Some(
                json!({"type": "thinking", "thinking": t.text, "signature": t.signature.as_deref().unwrap_or_default()}),
            ),
            Block::Search(id, input) => {
                let input: Value = serde_json::from_str(input).unwrap_or(json!({}));
                Some(json!({"type": "server_tool_use", "id": id, "name": "web_search", "input": input}))
            }
            Block::Found(id, content) => Some(
                json!({"type": "web_search_tool_result", "tool_use_id": id, "content": content}),
            ),
            Block::Other => None,
        });
        Some(blocks.collect())
    }
}

fn cat<T>(mut a: Vec<T>, b: Vec<T>) -> Vec<T> {
    a.extend(b);
    a
}

/// Sends `blocks` (a paused turn's content) back as the conversation's last
/// assistant message, so that the API continues the turn.
fn continue_turn(body: &mut Value, blocks: Vec<Value>) {
    let Some(messages) = body["messages"].as_array_mut() else {
        return;
    };
    match messages.last_mut() {
        Some(last) if last["role"] == "assistant" => {
            if let Some(content) = last["content"].as_array_mut() {
                content.extend(blocks);
            }
        }
        _ => messages.push(json!({"role": "assistant", "content": blocks})),
    }
}

/// One answer made of the parts of a turn the API paused and continued:
/// its text, calls, thinking and searches in order, the tokens of every
/// call, and the last part's model and finish.
fn join(first: ModelResponse, next: ModelResponse) -> ModelResponse {
    let usage = match (first.usage, next.usage) {
        (Some(a), Some(b)) => Some(TokenUsage {
            input_tokens: a.input_tokens + b.input_tokens,
            output_tokens: a.output_tokens + b.output_tokens,
        }),
        (a, b) => a.or(b),
    };
    ModelResponse {
        model: next.model,
        text: first.text + &next.text,
        tool_calls: cat(first.tool_calls, next.tool_calls),
        usage,
        finish_reason: next.finish_reason,
        thinking: cat(first.thinking, next.thinking),
        searches: cat(first.searches, next.searches),
    }
}

impl StreamParser for Events {
    fn feed(
        &mut self,
        data: &str,
        on_delta: &mut dyn FnMut(Delta<'_>) -> Flow,
    ) -> Result<Flow, ProviderError> {
        let v = json(data)?;
        let index = v["index"].as_u64().unwrap_or(0);
        match v["type"].as_str().unwrap_or_default() {
            "message_start" => {
                let m = &v["message"];
                if let Some(model) = m["model"].as_str() {
                    self.model = model.to_string();
                }
                self.input = m["usage"]["input_tokens"].as_u64();
                self.output = m["usage"]["output_tokens"].as_u64();
            }
            "content_block_start" => {
                let b = &v["content_block"];
                let block = match b["type"].as_str() {
                    Some("text") => Block::Text(String::new()),
                    Some("tool_use") => Block::Tool(ToolCall::new(
                        b["id"].as_str().unwrap_or_default(),
                        b["name"].as_str().unwrap_or_default(),
                        "",
                    )),
                    Some("thinking") => Block::Thinking(Thinking {
                        text: b["thinking"].as_str().unwrap_or_default().to_string(),
                        signature: b["signature"].as_str().map(str::to_string),
                        redacted: false,
                    }),
                    Some("redacted_thinking") => Block::Thinking(Thinking {
                        text: b["data"].as_str().unwrap_or_default().to_string(),
                        signature: None,
                        redacted: true,
                    }),
                    Some("server_tool_use") => {
                        // The input comes whole here, or in pieces after.
                        let whole = b["input"].as_object().filter(|o| !o.is_empty());
                        Block::Search(
                            b["id"].as_str().unwrap_or_default().to_string(),
                            whole
                                .map(|o| Value::Object(o.clone()).to_string())
                                .unwrap_or_default(),
                        )
                    }
                    Some("web_search_tool_result") => Block::Found(
                        b["tool_use_id"].as_str().unwrap_or_default().to_string(),
                        b["content"].clone(),
                    ),
                    _ => Block::Other,
                };
                self.blocks.push((index, block));
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => {
                        let t = d["text"].as_str().unwrap_or_default();
                        self.text.push_str(t);
                        if let Some(Block::Text(block)) = self.block(index) {
                            block.push_str(t);
                        }
                        if !t.is_empty() {
                            return Ok(on_delta(Delta::Text(t)));
                        }
                    }
                    Some("input_json_delta") => {
                        let piece = d["partial_json"].as_str().unwrap_or_default();
                        if let Some(Block::Search(_, input)) = self.block(index) {
                            input.push_str(piece);
                            return Ok(Flow::Continue);
                        }
                        let Some(Block::Tool(call)) = self.block(index) else {
                            return Err(ProviderError::Protocol(format!(
                                "input_json_delta for block {index}, which is not a tool_use"
                            )));
                        };
                        call.arguments.push_str(piece);
                        if !piece.is_empty() {
                            return Ok(on_delta(Delta::ToolArguments(piece)));
                        }
                    }
                    Some(kind @ ("thinking_delta" | "signature_delta")) => {
                        if let Some(Block::Thinking(t)) = self.block(index) {
                            if kind == "thinking_delta" {
                                t.text.push_str(d["thinking"].as_str().unwrap_or_default());
                            } else {
                                let piece = d["signature"].as_str().unwrap_or_default();
                                t.signature.get_or_insert_with(String::new).push_str(piece);
                            }
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(s) = v["delta"]["stop_reason"].as_str() {
                    self.stop = Some(s.to_string());
                }
                if let Some(o) = v["usage"]["output_tokens"].as_u64() {
                    self.output = Some(o);
                }
                if let Some(i) = v["usage"]["input_tokens"].as_u64() {
                    self.input = Some(i);
                }
            }
            "message_stop" => self.done = true,
            "error" => {
                let e = &v["error"];
                let message = e["message"]
                    .as_str()
                    .unwrap_or("an error in the stream")
                    .to_string();
                let status = if e["type"] == "overloaded_error" {
                    529
                } else {
                    500
                };
                return Err(ProviderError::Server { status, message });
            }
            _ => {} // ping, content_block_stop, and any event added later
        }
        Ok(Flow::Continue)
    }

    fn finish(self) -> Result<ModelResponse, ProviderError> {
        if !self.done {
            return Err(ProviderError::Protocol(
                "the stream was cut: it ended without message_stop".into(),
            ));
        }
        let finish_reason = match self.stop.as_deref() {
            Some("end_turn") | Some("stop_sequence") | None => FinishReason::Stop,
            Some("tool_use") => FinishReason::ToolCalls,
            Some("max_tokens") => FinishReason::Length,
            Some(other) => FinishReason::Other(other.to_string()),
        };
        let usage = match (self.input, self.output) {
            (None, None) => None,
            (i, o) => Some(TokenUsage {
                input_tokens: i.unwrap_or(0),
                output_tokens: o.unwrap_or(0),
            }),
        };
        let (mut tool_calls, mut thinking) = (Vec::new(), Vec::new());
        let mut searches: Vec<(String, WebSearch)> = Vec::new();
        for (_, b) in self.blocks {
            match b {
                Block::Tool(c) => tool_calls.push(c),
                Block::Thinking(t) => thinking.push(t),
                Block::Search(id, input) => {
                    let input: Value = serde_json::from_str(&input).unwrap_or_default();
                    let query = input["query"].as_str().unwrap_or_default().to_string();
                    searches.push((
                        id,
                        WebSearch {
                            query,
                            sources: Vec::new(),
                        },
                    ));
                }
                Block::Found(id, content) => {
                    if let Some((_, s)) = searches.iter_mut().find(|(i, _)| *i == id) {
                        s.sources = found(&content);
                    }
                }
                Block::Text(_) | Block::Other => {}
            }
        }
        Ok(ModelResponse {
            model: self.model,
            text: self.text,
            tool_calls,
            usage,
            finish_reason,
            thinking,
            searches: searches.into_iter().map(|(_, s)| s).collect(),
        })
    }
}

/// The pages of a `web_search_tool_result`'s content (none when it is an
/// error: `web_search_tool_result_error`).
fn found(content: &Value) -> Vec<Source> {
    content
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["type"] == "web_search_result")
        .filter_map(|r| {
            Some(Source {
                url: r["url"].as_str()?.to_string(),
                title: r["title"].as_str().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "anthropic_tests.rs"]
mod tests;
