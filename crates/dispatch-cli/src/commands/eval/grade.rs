//! `expect.judge`: a model-graded check. After a case's run ends, one model
//! call is asked whether the run met the case's criteria, given the payload,
//! the output and the end status, and must answer `{"pass": …, "reason": …}`
//! (a bare `PASS` or `FAIL` first word is accepted too).
//!
//! The judge's model is the case's `model`, else the agent's primary MODEL;
//! a model the Agentfile declares keeps its PROVIDER, BASE_URL and KEY, any
//! other is called as an OpenAI-compatible model, and `LLM_BASE_URL`,
//! `LLM_MODEL` and `LLM_API_KEY` redirect it as they redirect runs. Its call
//! goes through the same provider interface as an agent's, so `--record`
//! keeps it in the cassette and `--replay` answers it from there; a judge
//! call that is not in the cassette is skipped (said, not failed): judging
//! is off in replay unless it was recorded.

use std::time::Duration;

use dispatch_agent::cassette::{self, Mode};
use dispatch_agent::provider::{Exchange, Flow, Message, ModelRequest};
use dispatch_agent::resolve::{Override, provider_for, resolve};
use dispatch_core::agent::{AgentConfig, ModelRef, ProviderKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The case's judge, as written.
#[derive(Clone, Debug)]
pub struct JudgeSpec {
    /// What the run must do to pass, in the case author's words.
    pub criteria: String,
    /// The model to ask (default: the agent's primary MODEL).
    pub model: Option<String>,
}

/// What the judge said of one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Verdict {
    /// `None`: not judged (a replay without the judge's call recorded).
    pub passed: Option<bool>,
    pub reason: String,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// `None` when the model's price is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

/// The judge's instructions (part of the cassette key: changing them
/// changes every recorded judge call).
const SYSTEM: &str = "You grade one run of an AI agent against the criteria you are given. \
Read the agent's input, its output and how the run ended, then answer with one JSON object \
and nothing else: {\"pass\": true or false, \"reason\": \"one sentence\"}.";

/// The longest a judge call may take.
const TIMEOUT: Duration = Duration::from_secs(120);

/// The model a judge calls, resolved now so a case without one fails
/// before any run starts.
pub fn model_for(spec: &JudgeSpec, agent: Option<&AgentConfig>) -> Result<ModelRef, String> {
    let declared = agent.map(|a| a.models.as_slice()).unwrap_or_default();
    let name = match (&spec.model, declared.first()) {
        (Some(n), _) => n.clone(),
        (None, Some(m)) => m.name.clone(),
        (None, None) => {
            return Err(
                "expect.judge needs a model: the agent has no MODEL (hint: judge = { criteria = \"…\", model = \"gpt-4o-mini\" })"
                    .into(),
            );
        }
    };
    Ok(declared
        .iter()
        .find(|m| m.name == name)
        .cloned()
        .unwrap_or(ModelRef {
            name,
            provider: ProviderKind::OpenaiCompatible,
            base_url: None,
            key: None,
            options: Default::default(),
        }))
}

/// Asks the judge about one finished run.
pub async fn grade(
    spec: &JudgeSpec,
    model: &ModelRef,
    agent: Option<&AgentConfig>,
    payload: &Value,
    output: Option<&Value>,
    status: &str,
) -> Verdict {
    let config = AgentConfig {
        models: vec![model.clone()],
        prices: agent.map(|a| a.prices.clone()).unwrap_or_default(),
        ..AgentConfig::default()
    };
    let env = |k: &str| std::env::var(k).ok();
    let failed = |reason: String| Verdict {
        passed: Some(false),
        reason,
        model: model.name.clone(),
        input_tokens: 0,
        output_tokens: 0,
        cost_usd: None,
    };
    let over = match Override::from_env(env) {
        Ok(o) => o,
        Err(e) => return failed(format!("judge: {e}")),
    };
    let resolved = match resolve(&config, over.as_ref(), env) {
        Ok(mut r) => r.remove(0),
        Err(e) => return failed(format!("judge: {e}")),
    };
    let req = ModelRequest {
        model: resolved.model.name.clone(),
        system: SYSTEM.into(),
        messages: std::borrow::Cow::Owned(vec![Message::user(question(
            &spec.criteria,
            payload,
            output,
            status,
        ))]),
        tools: Vec::new().into(),
        max_output_tokens: Some(512),
        reasoning: None,
        web_search: false,
    };
    if let Some(Mode::Replay(dir)) = Mode::from_env() {
        let key = cassette::request_key(&req);
        if !dir.join(format!("{key}.json")).is_file() {
            return Verdict {
                passed: None,
                reason:
                    "not judged: the judge's call is not in the cassette (record it with --record)"
                        .into(),
                model: resolved.model.name.clone(),
                input_tokens: 0,
                output_tokens: 0,
                cost_usd: None,
            };
        }
    }
    let provider = provider_for(&resolved, dispatch_runtime::native::client());
    let mut exchange = Exchange::default();
    let mut go_on = |_: dispatch_agent::provider::Delta<'_>| Flow::Continue;
    let call = provider.stream(&req, &mut go_on, &mut exchange);
    let response = match tokio::time::timeout(TIMEOUT, call).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return failed(format!("judge: the call to {} failed: {e}", model.name)),
        Err(_) => {
            return failed(format!(
                "judge: {} did not answer within {}s",
                model.name,
                TIMEOUT.as_secs()
            ));
        }
    };
    let usage = response.usage.unwrap_or_default();
    let cost_usd = resolved
        .price
        .as_ref()
        .map(|p| p.cost(usage.input_tokens, usage.output_tokens));
    let (passed, reason) = match read_answer(&response.text) {
        Some((p, r)) => (Some(p), r),
        None => (
            Some(false),
            format!(
                "judge: the answer is neither {{\"pass\": …}} nor PASS/FAIL: {}",
                shorten(&response.text, 200)
            ),
        ),
    };
    Verdict {
        passed,
        reason,
        model: resolved.model.name,
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        cost_usd,
    }
}

/// The user message: criteria, input, output, end status.
fn question(criteria: &str, payload: &Value, output: Option<&Value>, status: &str) -> String {
    let output = output.map_or_else(|| "(no output)".to_string(), Value::to_string);
    format!(
        "Criteria:\n{criteria}\n\nThe agent's input:\n{payload}\n\nThe agent's output:\n{output}\n\nThe run ended: {status}"
    )
}

/// `{"pass": bool, "reason": "…"}` anywhere in the text (models like to
/// wrap JSON in prose or fences), else a first word PASS or FAIL.
fn read_answer(text: &str) -> Option<(bool, String)> {
    if let (Some(start), Some(end)) = (text.find('{'), text.rfind('}'))
        && start < end
        && let Ok(v) = serde_json::from_str::<Value>(&text[start..=end])
        && let Some(pass) = v.get("pass").and_then(Value::as_bool)
    {
        let reason = v
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        return Some((pass, reason));
    }
    let trimmed = text.trim_start();
    let first: String = trimmed
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect();
    let rest = trimmed[first.len()..]
        .trim_start_matches([':', '-', ' ', '.'])
        .trim();
    match first.to_ascii_uppercase().as_str() {
        "PASS" => Some((true, rest.to_string())),
        "FAIL" => Some((false, rest.to_string())),
        _ => None,
    }
}

fn shorten(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ");
    match one_line.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_json_or_a_first_word() {
        assert_eq!(
            read_answer("```json\n{\"pass\": true, \"reason\": \"apologizes\"}\n```"),
            Some((true, "apologizes".into()))
        );
        assert_eq!(
            read_answer("FAIL: no order number"),
            Some((false, "no order number".into()))
        );
        assert_eq!(read_answer("pass"), Some((true, String::new())));
        assert_eq!(read_answer("I think it is fine"), None);
        assert_eq!(read_answer("{\"verdict\": 1}"), None);
    }

    #[test]
    fn the_model_is_the_cases_or_the_agents() {
        let spec = |m: Option<&str>| JudgeSpec {
            criteria: "x".into(),
            model: m.map(str::to_string),
        };
        assert!(model_for(&spec(None), None).is_err());
        let agent = AgentConfig {
            models: vec![ModelRef {
                name: "claude-x".into(),
                provider: ProviderKind::Anthropic,
                base_url: None,
                key: Some("ANTHROPIC_API_KEY".into()),
                options: Default::default(),
            }],
            ..AgentConfig::default()
        };
        let m = model_for(&spec(None), Some(&agent)).expect("the agent's");
        assert_eq!(m.provider, ProviderKind::Anthropic);
        let m = model_for(&spec(Some("gpt-4o-mini")), Some(&agent)).expect("the case's");
        assert_eq!(m.provider, ProviderKind::OpenaiCompatible);
        assert_eq!(m.name, "gpt-4o-mini");
    }
}
