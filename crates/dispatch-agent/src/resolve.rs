//! Which models a run calls, with which keys: the Agentfile's MODEL and
//! FALLBACKs, overridden at dispatch by the environment.
//!
//! Precedence, highest first:
//! 1. `LLM_BASE_URL` (at dispatch): the run calls only its primary model, as
//!    an OpenAI-compatible server at that URL (FALLBACKs, which name other
//!    providers, are dropped), with `LLM_API_KEY` as its key when set.
//! 2. `LLM_MODEL` (at dispatch): the primary model's name.
//! 3. `LLM_API_KEY` (where the run executes): the primary model's key when
//!    its KEY secret is not set.
//! 4. The Agentfile: MODEL / FALLBACK with PROVIDER, BASE_URL, KEY.
//! 5. A model with no KEY: its provider's conventional variable
//!    ([`conventional_key`]: `OPENAI_API_KEY`, `ANTHROPIC_API_KEY`,
//!    `GEMINI_API_KEY` then `GOOGLE_API_KEY` for Gemini, native or through
//!    Google's OpenAI-compatible endpoint).
//! 6. The provider's default base URL.
//!
//! The overrides are read by `dispatch run` (or `dispatch chat`) and written
//! into the brief's `context.llm`, so the brief says what ran and a worker on
//! another machine calls the same model. Keys are never in the brief: each
//! is read from the environment of the process that calls the model, and
//! given to its model client only (never to a tool process).

use dispatch_core::agent::{AgentConfig, Effort, ModelRef, Price, ProviderKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::anthropic::Anthropic;
use crate::gemini::Gemini;
use crate::openai::OpenAi;
use crate::openai_responses::OpenAiResponses;
use crate::provider::Provider;

/// The environment's overrides, as recorded in the brief (`context.llm`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The primary model's wire format (`--provider`): with a base URL,
    /// instead of `openai_compatible`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderKind>,
    /// `--reasoning-effort`: over the Agentfile's `REASONING effort`, for
    /// every model of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<Effort>,
}

impl Override {
    /// `LLM_BASE_URL` and `LLM_MODEL` from `env`; `None` when neither is set.
    /// A BASE_URL that is not a URL is an error.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Option<Override>, String> {
        let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        let base_url = match get("LLM_BASE_URL") {
            Some(u) => Some(
                dispatch_core::agentfile::check_base_url(u.trim())
                    .map_err(|e| format!("LLM_BASE_URL: {e}"))?,
            ),
            None => None,
        };
        let model = get("LLM_MODEL").map(|m| m.trim().to_string());
        Ok((base_url.is_some() || model.is_some()).then_some(Override {
            base_url,
            model,
            ..Override::default()
        }))
    }

    /// `--model`, `--base-url`, `--provider` and `--reasoning-effort` (each
    /// given wins) over the environment's `LLM_MODEL` and `LLM_BASE_URL`
    /// (read through `env`); `None` when nothing is set. A bad URL, provider
    /// or effort is an error naming the flag.
    pub fn layered(
        env: impl Fn(&str) -> Option<String>,
        model: Option<&str>,
        base_url: Option<&str>,
        provider: Option<&str>,
        reasoning_effort: Option<&str>,
    ) -> Result<Option<Override>, String> {
        let mut over = Override::from_env(env)?.unwrap_or_default();
        if let Some(m) = model.map(str::trim) {
            if m.is_empty() {
                return Err("--model: a model name is needed (e.g. gpt-4o-mini)".into());
            }
            over.model = Some(m.to_string());
        }
        if let Some(u) = base_url {
            over.base_url = Some(
                dispatch_core::agentfile::check_base_url(u.trim())
                    .map_err(|e| format!("--base-url: {e}"))?,
            );
        }
        if let Some(p) = provider {
            over.provider = Some(ProviderKind::parse(p.trim()).ok_or_else(|| {
                format!(
                    "--provider: `{p}` is not a provider ({})",
                    ProviderKind::NAMES
                )
            })?);
        }
        if let Some(e) = reasoning_effort {
            over.reasoning_effort = Some(Effort::parse(e.trim()).ok_or_else(|| {
                format!(
                    "--reasoning-effort: `{e}` is not an effort (hint: one of {})",
                    Effort::NAMES
                )
            })?);
        }
        Ok((over != Override::default()).then_some(over))
    }

    /// The run's reasoning: `--reasoning-effort` replaces the Agentfile's
    /// REASONING (its effort and its budget); else the Agentfile's.
    pub fn reasoning(
        over: Option<&Override>,
        config: &AgentConfig,
    ) -> Option<dispatch_core::agent::Reasoning> {
        let mut r = config.reasoning;
        if let Some(effort) = over.and_then(|o| o.reasoning_effort) {
            let r = r.get_or_insert_with(Default::default);
            r.effort = Some(effort);
            r.budget_tokens = None;
        }
        r
    }

    /// The override a brief's `context` records.
    pub fn from_context(context: &Value) -> Option<Override> {
        serde_json::from_value(context.get("llm")?.clone()).ok()
    }
}

/// A model ready to call: where, with which key (never printed) and price.
#[derive(Clone)]
pub struct ResolvedModel {
    pub model: ModelRef,
    pub key: Option<String>,
    /// `None`: the cost of its calls is unknown (null, never 0).
    pub price: Option<Price>,
}

impl std::fmt::Debug for ResolvedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedModel")
            .field("model", &self.model)
            .field("key", &self.key.as_ref().map(|_| "****"))
            .field("price", &self.price)
            .finish()
    }
}

/// The models a run calls, in order, with their keys read through `env`.
/// An error names what is missing and how to fix it.
pub fn resolve(
    config: &AgentConfig,
    over: Option<&Override>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<ResolvedModel>, String> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    let mut models = config.models.clone();
    if models.is_empty() {
        return Err(
            "the agent has no MODEL (hint: add `MODEL gpt-4o-mini` to the Agentfile)".into(),
        );
    }
    if let Some(o) = over {
        if let Some(name) = &o.model {
            models[0].name = name.clone();
        }
        if let Some(url) = &o.base_url {
            models.truncate(1);
            models[0].provider = ProviderKind::OpenaiCompatible;
            models[0].base_url = Some(url.clone());
        }
        if let Some(kind) = o.provider {
            models[0].provider = kind;
        }
    }
    let redirected = over.is_some_and(|o| o.base_url.is_some());
    let mut out = Vec::with_capacity(models.len());
    for (i, m) in models.into_iter().enumerate() {
        let mut key = m.key.as_deref().and_then(&get);
        if i == 0 && (key.is_none() || redirected) {
            key = get("LLM_API_KEY").or(if redirected { None } else { key });
        }
        if key.is_none() && !redirected && m.key.is_none() {
            key = conventional_keys(&m).iter().find_map(|k| get(k));
        }
        if key.is_none() && !redirected {
            if let Some(secret) = &m.key {
                return Err(format!(
                    "model {} needs its key in the secret `{secret}`, which is not set (hint: `export {secret}=…`, or point LLM_BASE_URL at an OpenAI-compatible server)",
                    m.name
                ));
            }
            if let Some(var) = conventional_key(&m).filter(|_| needs_key(&m)) {
                return Err(format!(
                    "model {} has no KEY, and {} at {} needs one: {var} is not set (hint: export {var}, or `MODEL {} KEY <NAME>` with `SECRET <NAME>`, or set LLM_API_KEY)",
                    m.name,
                    m.provider,
                    m.endpoint(),
                    m.name
                ));
            }
        }
        let price = config.price_of(&m.name);
        out.push(ResolvedModel {
            model: m,
            key,
            price,
        });
    }
    Ok(out)
}

/// The variable a model with no KEY takes its key from, by convention:
/// `OPENAI_API_KEY` (OpenAI), `ANTHROPIC_API_KEY` (Anthropic),
/// `GEMINI_API_KEY` (Gemini, or an OpenAI-compatible BASE_URL on
/// `generativelanguage.googleapis.com`); none for other servers.
pub fn conventional_key(m: &ModelRef) -> Option<&'static str> {
    conventional_keys(m).first().copied()
}

/// Every variable a model with no KEY may take its key from, in order:
/// Google's endpoint takes `GEMINI_API_KEY`, else `GOOGLE_API_KEY` (as
/// Google's SDK does).
pub fn conventional_keys(m: &ModelRef) -> &'static [&'static str] {
    match m.provider {
        ProviderKind::Openai | ProviderKind::OpenaiChat => &["OPENAI_API_KEY"],
        ProviderKind::Anthropic => &["ANTHROPIC_API_KEY"],
        ProviderKind::Gemini => &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        // The CLI authenticates itself (its login, or its own variables).
        ProviderKind::Claude | ProviderKind::Codex => &[],
        ProviderKind::OpenaiCompatible => {
            let host = m
                .base_url
                .as_deref()
                .and_then(|u| url::Url::parse(u).ok())
                .and_then(|u| u.host_str().map(str::to_string));
            if host.as_deref() == Some("generativelanguage.googleapis.com") {
                &["GEMINI_API_KEY", "GOOGLE_API_KEY"]
            } else {
                &[]
            }
        }
    }
}

/// Whether `m` is served by a provider's own API, which refuses a call
/// without a key (a BASE_URL elsewhere, a local server or a test's mock,
/// may need none).
fn needs_key(m: &ModelRef) -> bool {
    let Some(base) = &m.base_url else {
        return !matches!(
            m.provider,
            ProviderKind::OpenaiCompatible | ProviderKind::Claude | ProviderKind::Codex
        );
    };
    let host = url::Url::parse(base)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string));
    matches!(
        host.as_deref(),
        Some("api.openai.com" | "api.anthropic.com" | "generativelanguage.googleapis.com")
    )
}

/// Why a run may not set `LIMIT COST`: a model whose price is unknown.
pub fn unpriced_for_cost_limit(models: &[ResolvedModel]) -> Option<String> {
    // Claude Code reports what it cost (`total_cost_usd`).
    let m = models
        .iter()
        .find(|m| m.price.is_none() && m.model.provider != ProviderKind::Claude)?;
    Some(format!(
        "LIMIT COST cannot be enforced: model {} has no known price (hint: add `PRICE {} INPUT <usd per 1M tokens> OUTPUT <usd per 1M tokens>` to the Agentfile)",
        m.model.name, m.model.name
    ))
}

/// The provider that speaks `m`'s wire format (recorded into, or replaced
/// by, a cassette when this process's [`crate::cassette::CASSETTE_ENV`] says so).
pub fn provider_for(m: &ResolvedModel, client: &reqwest::Client) -> Box<dyn Provider> {
    let base = m.model.base_url.clone();
    let (client, key) = (client.clone(), m.key.clone());
    let live: Box<dyn Provider> = match m.model.provider {
        ProviderKind::Anthropic => Box::new(Anthropic::new(client, base, key)),
        ProviderKind::Gemini => Box::new(Gemini::new(client, base, key)),
        ProviderKind::Openai => Box::new(OpenAiResponses::new(client, base, key)),
        kind @ (ProviderKind::OpenaiChat | ProviderKind::OpenaiCompatible) => {
            Box::new(OpenAi::new(kind, client, base, key))
        }
        kind @ (ProviderKind::Claude | ProviderKind::Codex) => {
            return Box::new(crate::cli::NotPerCall(kind));
        }
    };
    crate::cassette::wrap(live, crate::cassette::Mode::from_env())
}

/// The URL and exact JSON body `m`'s provider would send for `req` (no key: keys travel in headers).
pub fn wire_request(m: &ResolvedModel, req: &crate::provider::ModelRequest) -> (String, Value) {
    let client = dispatch_http::fallback();
    let base = m.model.base_url.clone();
    match m.model.provider {
        ProviderKind::Anthropic => {
            let p = Anthropic::new(client, base, None);
            (p.url(), p.body(req))
        }
        ProviderKind::Gemini => {
            let p = Gemini::new(client, base, None);
            (p.url(&req.model), p.body(req))
        }
        ProviderKind::Openai => {
            let p = OpenAiResponses::new(client, base, None);
            (p.url(), p.body(req))
        }
        kind @ (ProviderKind::OpenaiChat | ProviderKind::OpenaiCompatible) => {
            let p = OpenAi::new(kind, client, base, None);
            (p.url(), p.body(req))
        }
        kind @ (ProviderKind::Claude | ProviderKind::Codex) => (
            kind.default_base_url().to_string(),
            serde_json::json!({"model": req.model, "system": req.system, "messages": req.messages}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AgentConfig {
        let m = |name: &str, provider, key: &str| ModelRef {
            name: name.into(),
            provider,
            base_url: None,
            key: Some(key.into()),
            options: Default::default(),
        };
        AgentConfig {
            models: vec![
                m("gpt-4o-mini", ProviderKind::Openai, "OPENAI_API_KEY"),
                m(
                    "claude-haiku-4-5",
                    ProviderKind::Anthropic,
                    "ANTHROPIC_API_KEY",
                ),
            ],
            ..AgentConfig::default()
        }
    }

    #[test]
    fn keys_come_from_their_secrets_and_a_missing_one_is_named() {
        let env = |k: &str| (k == "OPENAI_API_KEY").then(|| "sk-1".to_string());
        let err = resolve(&config(), None, env).expect_err("anthropic key missing");
        assert!(err.contains("`ANTHROPIC_API_KEY`"), "{err}");
        let env = |k: &str| k.ends_with("_API_KEY").then(|| format!("v-{k}"));
        let r = resolve(&config(), None, env).expect("both keys");
        assert_eq!(r[1].key.as_deref(), Some("v-ANTHROPIC_API_KEY"));
        assert!(!format!("{r:?}").contains("v-OPENAI"), "keys never print");
    }

    #[test]
    fn a_model_without_key_takes_its_providers_conventional_variable() {
        let mut c = config();
        for m in &mut c.models {
            m.key = None;
        }
        c.models.push(ModelRef {
            name: "gemini-2.5-flash".into(),
            provider: ProviderKind::OpenaiCompatible,
            base_url: Some("https://generativelanguage.googleapis.com/v1beta/openai".into()),
            key: None,
            options: Default::default(),
        });
        let env = |k: &str| match k {
            "OPENAI_API_KEY" | "ANTHROPIC_API_KEY" | "GEMINI_API_KEY" => Some(format!("v-{k}")),
            _ => None,
        };
        let r = resolve(&c, None, env).expect("conventional keys");
        let keys: Vec<_> = r.iter().map(|m| m.key.as_deref()).collect();
        assert_eq!(
            keys,
            [
                Some("v-OPENAI_API_KEY"),
                Some("v-ANTHROPIC_API_KEY"),
                Some("v-GEMINI_API_KEY")
            ]
        );
        let google = |k: &str| match k {
            "OPENAI_API_KEY" | "ANTHROPIC_API_KEY" | "GOOGLE_API_KEY" => Some(format!("v-{k}")),
            _ => None,
        };
        let r = resolve(&c, None, google).expect("GOOGLE_API_KEY for Gemini");
        assert_eq!(r[2].key.as_deref(), Some("v-GOOGLE_API_KEY"));
        let err = resolve(&c, None, |_| None).expect_err("no key anywhere");
        assert!(err.contains("export OPENAI_API_KEY"), "{err}");
        // A KEY that names an unset secret is not replaced by the convention.
        let mut c = config();
        c.models[1].key = Some("TEAM_ANTHROPIC_KEY".into());
        let named = resolve(&c, None, env).expect_err("its KEY is unset");
        assert!(named.contains("`TEAM_ANTHROPIC_KEY`"), "{named}");
    }

    #[test]
    fn llm_base_url_redirects_the_primary_and_drops_fallbacks() {
        let env = |k: &str| match k {
            "LLM_BASE_URL" => Some("http://127.0.0.1:9/v1/".to_string()),
            "LLM_MODEL" => Some("llama3.2".to_string()),
            _ => None,
        };
        let o = Override::from_env(env).expect("valid").expect("set");
        let r = resolve(&config(), Some(&o), env).expect("no key needed");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].model.name, "llama3.2");
        assert_eq!(r[0].model.provider, ProviderKind::OpenaiCompatible);
        assert_eq!(
            r[0].model.base_url.as_deref(),
            Some("http://127.0.0.1:9/v1")
        );
        assert!(r[0].price.is_none());
        assert!(unpriced_for_cost_limit(&r).is_some());
        let bad = |k: &str| (k == "LLM_BASE_URL").then(|| "nope".to_string());
        assert!(Override::from_env(bad).is_err());
    }
}
