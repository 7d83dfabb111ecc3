//! OpenAI's Responses API (`POST {base}/responses`), what `PROVIDER openai`
//! speaks: the conversation as `input` items (messages, `function_call`
//! and `function_call_output`), the system prompt as `instructions`, tools
//! as `{type: function, name, parameters}`, and a stream of typed events —
//! `response.output_text.delta`, `response.function_call_arguments.delta`,
//! `response.output_item.done`, then `response.completed` (or
//! `response.incomplete`, `response.failed`) carrying `usage`. With `TOOL
//! BUILTIN web_search` the hosted `{type: web_search}` tool is offered and
//! each `web_search_call` item the answer holds is a [`WebSearch`].

use serde_json::{Value, json};

use crate::provider::{
    Delta, Exchange, FinishReason, Flow, ModelRequest, ModelResponse, Provider, ProviderError,
    ProviderKind, Role, Source, TokenUsage, ToolCall, WebSearch,
};
use crate::sse::{StreamParser, call, json};

pub struct OpenAiResponses {
    client: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
}

impl std::fmt::Debug for OpenAiResponses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiResponses")
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl OpenAiResponses {
    pub fn new(
        client: reqwest::Client,
        base_url: Option<String>,
        api_key: Option<String>,
    ) -> OpenAiResponses {
        let base_url =
            base_url.unwrap_or_else(|| ProviderKind::Openai.default_base_url().to_string());
        OpenAiResponses {
            client,
            base_url: crate::wire::normalize_base_url(&base_url, "/responses"),
            api_key,
        }
    }

    pub fn url(&self) -> String {
        format!("{}/responses", self.base_url)
    }

    /// The exact JSON body a call sends (the key travels in a header only).
    pub fn body(&self, req: &ModelRequest<'_>) -> Value {
        let mut input = Vec::new();
        for m in req.messages.iter() {
            match m.role {
                Role::User => input.push(json!({"role": "user", "content": m.content})),
                Role::Tool => input.push(json!({
                    "type": "function_call_output",
                    "call_id": m.tool_call_id,
                    "output": m.content,
                })),
                Role::Assistant => {
                    if !m.content.is_empty() {
                        input.push(json!({"role": "assistant", "content": m.content}));
                    }
                    for c in &m.tool_calls {
                        input.push(json!({
                            "type": "function_call",
                            "call_id": c.id,
                            "name": c.name,
                            "arguments": c.arguments,
                        }));
                    }
                }
            }
        }
        let mut body = json!({"model": req.model, "input": input, "stream": true});
        if !req.system.is_empty() {
            body["instructions"] = json!(req.system);
        }
        let mut tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| json!({"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters}))
            .collect();
        if req.web_search {
            tools.push(json!({"type": "web_search"}));
            // The pages each search found, not only the ones the text cites.
            body["include"] = json!(["web_search_call.action.sources"]);
        }
        if !tools.is_empty() {
            body["tools"] = json!(tools);
        }
        if let Some(max) = req.max_output_tokens {
            body["max_output_tokens"] = json!(max);
        }
        if let Some(effort) = req.reasoning.and_then(|r| r.effort_level()) {
            body["reasoning"] = json!({"effort": effort.as_str()});
        }
        body
    }
}

#[async_trait::async_trait]
impl Provider for OpenAiResponses {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Openai
    }

    async fn stream(
        &self,
        req: &ModelRequest,
        on_delta: &mut (dyn for<'d> FnMut(Delta<'d>) -> Flow + Send),
        exchange: &mut Exchange,
    ) -> Result<ModelResponse, ProviderError> {
        let bearer = self.api_key.as_ref().map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = bearer
            .iter()
            .map(|b| ("authorization", b.as_str()))
            .collect();
        // Serialized at once: the `Value` is gone before the call goes out.
        let body = crate::sse::encode(&self.body(req));
        let parser = Events::new(&req.model);
        call(
            &self.client,
            &self.url(),
            &headers,
            body,
            exchange,
            on_delta,
            parser,
        )
        .await
    }
}

/// How the response ended: its terminal event.
enum End {
    Completed,
    /// `response.incomplete`, with `incomplete_details.reason`.
    Incomplete(String),
}

/// Assembles a streamed response from its events (pure: fed one `data` at a time).
pub(crate) struct Events {
    model: String,
    text: String,
    /// Function calls by output index: their arguments grow with each delta.
    calls: Vec<(u64, ToolCall)>,
    usage: Option<TokenUsage>,
    end: Option<End>,
    searches: Vec<WebSearch>,
    /// Pages the text cites (`url_citation` annotations).
    cited: Vec<Source>,
}

impl Events {
    pub(crate) fn new(model: &str) -> Self {
        Events {
            model: model.to_string(),
            text: String::new(),
            calls: Vec::new(),
            usage: None,
            end: None,
            searches: Vec::new(),
            cited: Vec::new(),
        }
    }

    /// A finished `web_search_call` item, or the citations of a message.
    fn hosted(&mut self, item: &Value) {
        match item["type"].as_str() {
            Some("web_search_call") => {
                let action = &item["action"];
                let sources = action["sources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(source)
                    .collect();
                self.searches.push(WebSearch {
                    query: action["query"].as_str().unwrap_or_default().to_string(),
                    sources,
                });
            }
            Some("message") => {
                let parts = item["content"].as_array().into_iter().flatten();
                let notes = parts.flat_map(|p| p["annotations"].as_array().into_iter().flatten());
                for n in notes.filter(|n| n["type"] == "url_citation") {
                    if let Some(s) = source(n)
                        && !self.cited.contains(&s)
                    {
                        self.cited.push(s);
                    }
                }
            }
            _ => {}
        }
    }

    fn call_at(&mut self, index: u64) -> Option<&mut ToolCall> {
        self.calls
            .iter_mut()
            .find(|(i, _)| *i == index)
            .map(|(_, c)| c)
    }

    /// What the terminal event's `response` says: model and usage.
    fn response(&mut self, r: &Value) {
        if let Some(m) = r["model"].as_str() {
            self.model = m.to_string();
        }
        let u = &r["usage"];
        if u.is_object() {
            self.usage = Some(TokenUsage {
                input_tokens: u["input_tokens"].as_u64().unwrap_or(0),
                output_tokens: u["output_tokens"].as_u64().unwrap_or(0),
            });
        }
    }
}

fn error_of(v: &Value) -> ProviderError {
    let message = v["message"]
        .as_str()
        .or(v["error"]["message"].as_str())
        .or(v["response"]["error"]["message"].as_str())
        .unwrap_or("an error in the stream")
        .to_string();
    ProviderError::Server {
        status: 500,
        message,
    }
}

impl StreamParser for Events {
    fn feed(
        &mut self,
        data: &str,
        on_delta: &mut dyn FnMut(Delta<'_>) -> Flow,
    ) -> Result<Flow, ProviderError> {
        let v = json(data)?;
        let index = v["output_index"].as_u64().unwrap_or(0);
        match v["type"].as_str().unwrap_or_default() {
            "response.created" | "response.in_progress" => {
                if let Some(m) = v["response"]["model"].as_str() {
                    self.model = m.to_string();
                }
            }
            "response.output_item.added" => {
                let item = &v["item"];
                if item["type"] == "function_call" {
                    let call = ToolCall::new(
                        item["call_id"].as_str().unwrap_or_default(),
                        item["name"].as_str().unwrap_or_default(),
                        item["arguments"].as_str().unwrap_or_default(),
                    );
                    self.calls.push((index, call));
                }
            }
            "response.output_text.delta" => {
                let t = v["delta"].as_str().unwrap_or_default();
                if !t.is_empty() {
                    self.text.push_str(t);
                    return Ok(on_delta(Delta::Text(t)));
                }
            }
            "response.function_call_arguments.delta" => {
                let piece = v["delta"].as_str().unwrap_or_default();
                let Some(call) = self.call_at(index) else {
                    return Err(ProviderError::Protocol(format!(
                        "function_call_arguments.delta for output {index}, which is not a function_call"
                    )));
                };
                call.arguments.push_str(piece);
                if !piece.is_empty() {
                    return Ok(on_delta(Delta::ToolArguments(piece)));
                }
            }
            "response.output_item.done" => {
                // The whole item: it wins over what the deltas built.
                let item = &v["item"];
                self.hosted(item);
                if item["type"] == "function_call" {
                    let whole = ToolCall::new(
                        item["call_id"].as_str().unwrap_or_default(),
                        item["name"].as_str().unwrap_or_default(),
                        item["arguments"].as_str().unwrap_or_default(),
                    );
                    match self.call_at(index) {
                        Some(c) => *c = whole,
                        None => self.calls.push((index, whole)),
                    }
                }
            }
            "response.completed" => {
                self.response(&v["response"]);
                self.end = Some(End::Completed);
            }
            "response.incomplete" => {
                self.response(&v["response"]);
                let reason = v["response"]["incomplete_details"]["reason"]
                    .as_str()
                    .unwrap_or("incomplete");
                self.end = Some(End::Incomplete(reason.to_string()));
            }
            "response.failed" | "error" => return Err(error_of(&v)),
            _ => {} // content parts, reasoning summaries, and any event added later
        }
        Ok(Flow::Continue)
    }

    fn finish(self) -> Result<ModelResponse, ProviderError> {
        let Some(end) = self.end else {
            return Err(ProviderError::Protocol(
                "the stream was cut: it ended without response.completed".into(),
            ));
        };
        let mut tool_calls: Vec<ToolCall> = self.calls.into_iter().map(|(_, c)| c).collect();
        for (i, c) in tool_calls.iter_mut().enumerate() {
            if c.id.is_empty() {
                c.id = format!("call_{i}");
            }
        }
        let finish_reason = match end {
            End::Completed if tool_calls.is_empty() => FinishReason::Stop,
            End::Completed => FinishReason::ToolCalls,
            End::Incomplete(r) if r == "max_output_tokens" => FinishReason::Length,
            End::Incomplete(r) => FinishReason::Other(r),
        };
        let mut searches = self.searches;
        // Searches that listed no pages: the pages the text cites are theirs.
        if let Some(last) = searches.iter_mut().rev().find(|s| s.sources.is_empty()) {
            last.sources = self.cited;
        }
        Ok(ModelResponse {
            model: self.model,
            text: self.text,
            tool_calls,
            usage: self.usage,
            finish_reason,
            thinking: Vec::new(),
            searches,
        })
    }
}

/// A page named by a search's `sources` or a `url_citation`.
fn source(v: &Value) -> Option<Source> {
    Some(Source {
        url: v["url"].as_str()?.to_string(),
        title: v["title"].as_str().unwrap_or_default().to_string(),
    })
}

#[cfg(test)]
#[path = "openai_responses_tests.rs"]
mod tests;
