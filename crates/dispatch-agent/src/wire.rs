//! Small pure facts about the providers' wire formats that depend on the
//! model or on how a user wrote a base URL: which field caps the output on
//! the OpenAI wire, and where a base URL's version segment goes.

/// The OpenAI Chat Completions field that caps a call's output tokens.
///
/// OpenAI's reasoning models (`o1`, `o3`, `o4-mini`, … and `gpt-5*`) refuse
/// `max_tokens` and need `max_completion_tokens`; every other model, and
/// OpenAI-compatible servers (Ollama, vLLM, llama.cpp), take `max_tokens`.
pub fn openai_token_field(model: &str) -> &'static str {
    if is_openai_reasoning(model) {
        "max_completion_tokens"
    } else {
        "max_tokens"
    }
}

/// `o` followed by a digit (`o1`, `o3-mini`, `o4-mini-2025-04-16`), or `gpt-5…`.
/// A name is matched after its last `/` (`openai/o3` on a router).
fn is_openai_reasoning(model: &str) -> bool {
    let name = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    let o_series = name
        .strip_prefix('o')
        .and_then(|rest| rest.chars().next())
        .is_some_and(|c| c.is_ascii_digit());
    o_series || name.starts_with("gpt-5")
}

/// A base URL as the provider's client needs it: no trailing `/`, the full
/// endpoint a user pasted cut back to its base (`…/v1/chat/completions`,
/// `…/v1/messages`), and `/v1` added when the URL has no path at all — the
/// SDKs' convention (`https://api.anthropic.com`, `http://localhost:11434`).
/// A URL with a path (`/v1`, `/v1beta/openai`, `/openai/v1`) is kept as given.
pub fn normalize_base_url(base: &str, endpoint: &str) -> String {
    normalize_base_url_with(base, endpoint, "v1")
}

/// [`normalize_base_url`] with the version segment a path-less URL takes
/// (`v1beta` for Gemini's API).
pub fn normalize_base_url_with(base: &str, endpoint: &str, version: &str) -> String {
    let mut base = base.trim().trim_end_matches('/');
    if let Some(cut) = base.strip_suffix(endpoint) {
        base = cut.trim_end_matches('/');
    }
    let has_path = url::Url::parse(base)
        .ok()
        .is_some_and(|u| !matches!(u.path(), "" | "/"));
    if has_path {
        base.to_string()
    } else {
        format!("{base}/{version}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_models_get_max_completion_tokens_and_others_max_tokens() {
        for m in [
            "o1",
            "o1-mini",
            "o3",
            "o3-mini",
            "o4-mini",
            "o4-mini-2025-04-16",
            "gpt-5",
            "gpt-5-mini",
            "gpt-5.1",
            "openai/o3",
            "O3",
        ] {
            assert_eq!(openai_token_field(m), "max_completion_tokens", "{m}");
        }
        for m in [
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-3.5-turbo",
            "chatgpt-4o-latest",
            "llama3.2",
            "olmo2",
            "openchat",
            "orca-mini",
        ] {
            assert_eq!(openai_token_field(m), "max_tokens", "{m}");
        }
    }

    #[test]
    fn base_urls_take_the_version_segment_when_they_have_no_path() {
        let cases = [
            (
                "https://api.anthropic.com",
                "/messages",
                "https://api.anthropic.com/v1",
            ),
            (
                "https://api.anthropic.com/",
                "/messages",
                "https://api.anthropic.com/v1",
            ),
            (
                "https://api.anthropic.com/v1",
                "/messages",
                "https://api.anthropic.com/v1",
            ),
            (
                "https://api.anthropic.com/v1/messages",
                "/messages",
                "https://api.anthropic.com/v1",
            ),
            (
                "http://localhost:11434",
                "/chat/completions",
                "http://localhost:11434/v1",
            ),
            (
                "http://127.0.0.1:9/v1/",
                "/chat/completions",
                "http://127.0.0.1:9/v1",
            ),
            (
                "http://127.0.0.1:9/v1/chat/completions",
                "/chat/completions",
                "http://127.0.0.1:9/v1",
            ),
            (
                "https://generativelanguage.googleapis.com/v1beta/openai",
                "/chat/completions",
                "https://generativelanguage.googleapis.com/v1beta/openai",
            ),
            (
                "https://api.groq.com/openai/v1",
                "/chat/completions",
                "https://api.groq.com/openai/v1",
            ),
        ];
        for (given, endpoint, want) in cases {
            assert_eq!(normalize_base_url(given, endpoint), want, "{given}");
        }
    }
}
