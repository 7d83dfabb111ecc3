//! OpenAI Chat Completions (`POST {base}/chat/completions`), streamed with
//! `stream_options.include_usage`; also any OpenAI-compatible server (Ollama,
//! vLLM, llama.cpp, LM Studio), where the key is optional.

use serde_json::{Value, json};
use std::collections::BTreeMap;

use crate::provider::{
    Delta, Exchange, FinishReason, Flow, ModelRequest, ModelResponse, Provider, ProviderError,
    ProviderKind, Role, TokenUsage, ToolCall,
};
use crate::sse::{StreamParser, call, json};

pub struct OpenAi {
    kind: ProviderKind,
    client: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAi")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl OpenAi {
    pub fn new(
        kind: ProviderKind,
        client: reqwest::Client,
        base_url: Option<String>,
        api_key: Option<String>,
    ) -> OpenAi {
        let base_url = base_url.unwrap_or_else(|| kind.default_base_url().to_string());
        OpenAi {
            kind,
            client,
            base_url: crate::wire::normalize_base_url(&base_url, "/chat/completions"),
            api_key,
        }
    }

    pub fn url(&self) -> String {
        format!("{}/chat/completions", self.base_url)
    }

    /// The exact JSON body a call sends (the key travels in a header only).
    pub fn body(&self, req: &ModelRequest<'_>) -> Value {
        let mut messages = Vec::new();
        if !req.system.is_empty() {
            messages.push(json!({"role": "system", "content": req.system}));
        }
        for m in req.messages.iter() {
            messages.push(match m.role {
                Role::User => json!({"role": "user", "content": m.content}),
                Role::Tool => json!({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}),
                Role::Assistant if m.tool_calls.is_empty() => json!({"role": "assistant", "content": m.content}),
                Role::Assistant => {
                    let calls: Vec<Value> = m.tool_calls.iter().map(|c| {
                        json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}})
                    }).collect();
                    let content = if m.content.is_empty() { Value::Null } else { json!(m.content) };
                    json!({"role": "assistant", "content": content, "tool_calls": calls})
                }
            });
        }
        let mut body = json!({
            "model": req.model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if !req.tools.is_empty() {
            body["tools"] = req.tools.iter().map(|t| {
                json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}})
            }).collect();
        }
        if let Some(max) = req.max_output_tokens {
            body[crate::wire::openai_token_field(&req.model)] = json!(max);
        }
        if let Some(effort) = req.reasoning.and_then(|r| r.effort_level()) {
            body["reasoning_effort"] = json!(effort.as_str());
        }
        body
    }
}

#[async_trait::async_trait]
impl Provider for OpenAi {
    fn kind(&self) -> ProviderKind {
        self.kind
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
        let parser = Chunks::new(&req.model);
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

/// Assembles a streamed answer from its chunks (pure: fed one `data` at a time).
pub(crate) struct Chunks {
    model: String,
    text: String,
    calls: BTreeMap<u64, ToolCall>,
    finish: Option<String>,
    usage: Option<TokenUsage>,
    done: bool,
}

impl Chunks {
    pub(crate) fn new(model: &str) -> Self {
        Chunks {
            model: model.to_string(),
            text: String::new(),
            calls: BTreeMap::new(),
            finish: None,
            usage: None,
            done: false,
        }
    }
}

impl StreamParser for Chunks {
    fn feed(
        &mut self,
        data: &str,
        on_delta: &mut dyn FnMut(Delta<'_>) -> Flow,
    ) -> Result<Flow, ProviderError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(Flow::Continue);
        }
        let v = json(data)?;
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let message = err["message"]
                .as_str()
                .unwrap_or("an error in the stream")
                .to_string();
            return Err(ProviderError::Server {
                status: 500,
                message,
            });
        }
        if let Some(m) = v["model"].as_str() {
            self.model = m.to_string();
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(TokenUsage {
                input_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
                output_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
            });
        }
        let mut flow = Flow::Continue;
        let Some(choice) = v["choices"].as_array().and_then(|c| c.first()) else {
            return Ok(flow);
        };
        let delta = &choice["delta"];
        if let Some(t) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            self.text.push_str(t);
            flow = on_delta(Delta::Text(t));
        }
        for tc in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = tc["index"].as_u64().unwrap_or(self.calls.len() as u64);
            let call = self
                .calls
                .entry(index)
                .or_insert_with(|| ToolCall::new("", "", ""));
            if let Some(id) = tc["id"].as_str() {
                call.id = id.to_string();
            }
            if let Some(name) = tc["function"]["name"].as_str() {
                call.name.push_str(name);
            }
            if let Some(args) = tc["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                call.arguments.push_str(args);
                if on_delta(Delta::ToolArguments(args)) == Flow::Abort {
                    flow = Flow::Abort;
                }
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            self.finish = Some(f.to_string());
        }
        Ok(flow)
    }

    fn finish(self) -> Result<ModelResponse, ProviderError> {
        let Some(finish) = self.finish else {
            let why = if self.done {
                "it said [DONE] without a finish_reason"
            } else {
                "it ended without a finish_reason or [DONE]"
            };
            return Err(ProviderError::Protocol(format!(
                "the stream was cut: {why}"
            )));
        };
        let finish_reason = match finish.as_str() {
            "stop" => FinishReason::Stop,
            "tool_calls" | "function_call" => FinishReason::ToolCalls,
            "length" => FinishReason::Length,
            other => FinishReason::Other(other.to_string()),
        };
        let mut tool_calls: Vec<ToolCall> = self.calls.into_values().collect();
        for (i, c) in tool_calls.iter_mut().enumerate() {
            if c.id.is_empty() {
                c.id = format!("call_{i}");
            }
        }
        Ok(ModelResponse {
            model: self.model,
            text: self.text,
            tool_calls,
            usage: self.usage,
            finish_reason,
            thinking: Vec::new(),
            searches: Vec::new(),
        })
    }
}

#[cfg(test)]
#[path = "openai_tests.rs"]
pub(crate) mod tests;
