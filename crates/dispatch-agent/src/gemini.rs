//! Google Gemini's own API (`POST {base}/models/{model}:streamGenerateContent?alt=sse`),
//! what `PROVIDER gemini` speaks: the conversation as `contents` of `user`
//! and `model` turns made of parts (`text`, `functionCall`,
//! `functionResponse`), the system prompt as `systemInstruction`, tools as
//! `functionDeclarations`, the key in the `x-goog-api-key` header, and a
//! stream of whole `GenerateContentResponse` objects whose last carries the
//! `finishReason`; usage from `usageMetadata` (thinking tokens are output).
//! With `TOOL BUILTIN web_search`, the `google_search` tool (grounding):
//! each of `groundingMetadata.webSearchQueries` is a [`WebSearch`], with the
//! pages of its `groundingChunks`.

use serde_json::{Value, json};

use crate::provider::{
    Delta, Exchange, FinishReason, Flow, Message, ModelRequest, ModelResponse, Provider,
    ProviderError, ProviderKind, Role, Source, TokenUsage, ToolCall, WebSearch,
};
use crate::sse::{StreamParser, call, json};

pub struct Gemini {
    client: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
}

impl std::fmt::Debug for Gemini {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gemini")
            .field("base_url", &self.base_url)
            .finish()
    }
}

/// The model's name as the URL takes it (`models/gemini-2.5-flash` → `gemini-2.5-flash`).
fn model_id(model: &str) -> &str {
    model.strip_prefix("models/").unwrap_or(model)
}

impl Gemini {
    pub fn new(
        client: reqwest::Client,
        base_url: Option<String>,
        api_key: Option<String>,
    ) -> Gemini {
        let base_url =
            base_url.unwrap_or_else(|| ProviderKind::Gemini.default_base_url().to_string());
        // A pasted endpoint (`…/v1beta/models/gemini-2.5-flash:generateContent`) is cut back to its base.
        let base = match base_url.find("/models/") {
            Some(at) => &base_url[..at],
            None => base_url.as_str(),
        };
        Gemini {
            client,
            base_url: crate::wire::normalize_base_url_with(base, "/models", "v1beta"),
            api_key,
        }
    }

    pub fn url(&self, model: &str) -> String {
        format!(
            "{}/models/{}:streamGenerateContent?alt=sse",
            self.base_url,
            model_id(model)
        )
    }

    /// The exact JSON body a call sends (the key travels in a header only).
    /// Consecutive turns of one role merge (the results of one round's
    /// calls are one `user` turn, as Gemini expects).
    pub fn body(&self, req: &ModelRequest<'_>) -> Value {
        let mut contents: Vec<Value> = Vec::new();
        for (i, m) in req.messages.iter().enumerate() {
            let role = if m.role == Role::Assistant {
                "model"
            } else {
                "user"
            };
            let parts = parts(m, &req.messages[..i]);
            if parts.is_empty() {
                continue;
            }
            match contents.last_mut() {
                Some(last) if last["role"] == role => {
                    if let Some(p) = last["parts"].as_array_mut() {
                        p.extend(parts);
                    }
                }
                _ => contents.push(json!({"role": role, "parts": parts})),
            }
        }
        let mut body = json!({"contents": contents});
        if !req.system.is_empty() {
            body["systemInstruction"] = json!({"parts": [{"text": req.system}]});
        }
        let mut tools = Vec::new();
        if !req.tools.is_empty() {
            let declarations: Vec<Value> = req
                .tools
                .iter()
                .map(|t| json!({"name": t.name, "description": t.description, "parametersJsonSchema": t.parameters}))
                .collect();
            tools.push(json!({"functionDeclarations": declarations}));
        }
        if req.web_search {
            tools.push(json!({"google_search": {}}));
        }
        if !tools.is_empty() {
            body["tools"] = json!(tools);
        }
        let mut config = serde_json::Map::new();
        if let Some(max) = req.max_output_tokens {
            config.insert("maxOutputTokens".into(), json!(max));
        }
        if let Some(budget) = req.reasoning.and_then(|r| r.budget()) {
            config.insert("thinkingConfig".into(), json!({"thinkingBudget": budget}));
        }
        if !config.is_empty() {
            body["generationConfig"] = Value::Object(config);
        }
        body
    }
}

/// A message's parts; a tool result names its function, found among the
/// calls of the messages `before` it.
fn parts(m: &Message, before: &[Message]) -> Vec<Value> {
    let mut parts = Vec::new();
    match m.role {
        Role::Tool => {
            let name = before
                .iter()
                .rev()
                .flat_map(|b| &b.tool_calls)
                .find(|c| Some(&c.id) == m.tool_call_id.as_ref())
                .map_or("", |c| c.name.as_str());
            let key = if m.is_error { "error" } else { "result" };
            parts.push(json!({"functionResponse": {"name": name, "response": {key: m.content}}}));
        }
        Role::User | Role::Assistant => {
            if !m.content.is_empty() {
                parts.push(json!({"text": m.content}));
            }
            for c in &m.tool_calls {
                let args: Value = serde_json::from_str(&c.arguments)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or(json!({}));
                let mut part = json!({"functionCall": {"name": c.name, "args": args}});
                if let Some(sig) = &c.signature {
                    part["thoughtSignature"] = json!(sig);
                }
                parts.push(part);
            }
        }
    }
    parts
}

#[async_trait::async_trait]
impl Provider for Gemini {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Gemini
    }

    async fn stream(
        &self,
        req: &ModelRequest,
        on_delta: &mut (dyn for<'d> FnMut(Delta<'d>) -> Flow + Send),
        exchange: &mut Exchange,
    ) -> Result<ModelResponse, ProviderError> {
        let headers: Vec<(&str, &str)> = self
            .api_key
            .iter()
            .map(|k| ("x-goog-api-key", k.as_str()))
            .collect();
        // Serialized at once: the `Value` is gone before the call goes out.
        let body = crate::sse::encode(&self.body(req));
        let parser = Chunks::new(&req.model);
        call(
            &self.client,
            &self.url(&req.model),
            &headers,
            body,
            exchange,
            on_delta,
            parser,
        )
        .await
    }
}

/// Assembles a streamed answer from its chunks (pure: fed one `data` at a time).
pub(crate) struct Chunks {
    model: String,
    text: String,
    calls: Vec<ToolCall>,
    usage: Option<TokenUsage>,
    finish: Option<String>,
    /// `responseId`: makes the ids given to calls that came without one
    /// unique in the run.
    response_id: Option<String>,
    /// `groundingMetadata`'s queries and pages, as the last chunk says.
    queries: Vec<String>,
    pages: Vec<Source>,
}

impl Chunks {
    pub(crate) fn new(model: &str) -> Self {
        Chunks {
            model: model_id(model).to_string(),
            text: String::new(),
            calls: Vec::new(),
            usage: None,
            finish: None,
            response_id: None,
            queries: Vec::new(),
            pages: Vec::new(),
        }
    }
}

impl StreamParser for Chunks {
    fn feed(
        &mut self,
        data: &str,
        on_delta: &mut dyn FnMut(Delta<'_>) -> Flow,
    ) -> Result<Flow, ProviderError> {
        let v = json(data)?;
        if let Some(err) = v.get("error").filter(|e| e.is_object()) {
            let message = err["message"]
                .as_str()
                .unwrap_or("an error in the stream")
                .to_string();
            let status = err["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| *c >= 500)
                .unwrap_or(500);
            return Err(ProviderError::Server { status, message });
        }
        if let Some(m) = v["modelVersion"].as_str() {
            self.model = m.to_string();
        }
        if let Some(id) = v["responseId"].as_str() {
            self.response_id.get_or_insert_with(|| id.to_string());
        }
        let u = &v["usageMetadata"];
        if u.is_object() {
            let out = u["candidatesTokenCount"].as_u64().unwrap_or(0)
                + u["thoughtsTokenCount"].as_u64().unwrap_or(0);
            self.usage = Some(TokenUsage {
                input_tokens: u["promptTokenCount"].as_u64().unwrap_or(0),
                output_tokens: out,
            });
        }
        if let Some(reason) = v["promptFeedback"]["blockReason"].as_str() {
            self.finish = Some(format!("blocked: {reason}"));
        }
        let Some(candidate) = v["candidates"].as_array().and_then(|c| c.first()) else {
            return Ok(Flow::Continue);
        };
        let mut flow = Flow::Continue;
        for part in candidate["content"]["parts"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let step = if let Some(call) = part.get("functionCall") {
                let args = match &call["args"] {
                    Value::Null => "{}".to_string(),
                    a => a.to_string(),
                };
                let mut c = ToolCall::new(
                    call["id"].as_str().unwrap_or_default(),
                    call["name"].as_str().unwrap_or_default(),
                    args,
                );
                c.signature = part["thoughtSignature"].as_str().map(str::to_string);
                self.calls.push(c);
                let args = self.calls.last().map_or("", |c| c.arguments.as_str());
                on_delta(Delta::ToolArguments(args))
            } else if part["thought"] == true {
                Flow::Continue // thinking summaries are not the answer
            } else if let Some(t) = part["text"].as_str().filter(|t| !t.is_empty()) {
                self.text.push_str(t);
                on_delta(Delta::Text(t))
            } else {
                Flow::Continue
            };
            if step == Flow::Abort {
                flow = Flow::Abort;
            }
        }
        if let Some(f) = candidate["finishReason"].as_str() {
            self.finish = Some(f.to_string());
        }
        let grounding = &candidate["groundingMetadata"];
        if let Some(q) = grounding["webSearchQueries"].as_array() {
            self.queries = q
                .iter()
                .filter_map(|q| q.as_str().map(str::to_string))
                .collect();
        }
        if let Some(chunks) = grounding["groundingChunks"].as_array() {
            self.pages = chunks
                .iter()
                .filter_map(|c| {
                    Some(Source {
                        url: c["web"]["uri"].as_str()?.to_string(),
                        title: c["web"]["title"].as_str().unwrap_or_default().to_string(),
                    })
                })
                .collect();
        }
        Ok(flow)
    }

    fn finish(self) -> Result<ModelResponse, ProviderError> {
        let Some(finish) = self.finish else {
            return Err(ProviderError::Protocol(
                "the stream was cut: it ended without a finishReason".into(),
            ));
        };
        let mut tool_calls = self.calls;
        let prefix = self
            .response_id
            .map_or("call".to_string(), |r| format!("call_{r}"));
        for (i, c) in tool_calls.iter_mut().enumerate() {
            if c.id.is_empty() {
                c.id = format!("{prefix}_{i}");
            }
        }
        let finish_reason = match finish.as_str() {
            "STOP" if !tool_calls.is_empty() => FinishReason::ToolCalls,
            "STOP" => FinishReason::Stop,
            "MAX_TOKENS" => FinishReason::Length,
            other => FinishReason::Other(other.to_ascii_lowercase()),
        };
        Ok(ModelResponse {
            model: self.model,
            text: self.text,
            tool_calls,
            usage: self.usage,
            finish_reason,
            thinking: Vec::new(),
            searches: searches(self.queries, self.pages),
        })
    }
}

/// The searches of a grounded answer: one per query; the pages the answer
/// was grounded on go with the last (Gemini does not say which query found
/// which page).
fn searches(queries: Vec<String>, pages: Vec<Source>) -> Vec<WebSearch> {
    let mut out: Vec<WebSearch> = queries
        .into_iter()
        .map(|query| WebSearch {
            query,
            sources: Vec::new(),
        })
        .collect();
    match out.last_mut() {
        Some(last) => last.sources = pages,
        None if !pages.is_empty() => out.push(WebSearch {
            query: String::new(),
            sources: pages,
        }),
        None => {}
    }
    out
}

#[cfg(test)]
#[path = "gemini_tests.rs"]
mod tests;
