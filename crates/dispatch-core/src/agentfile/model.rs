//! The native agent's directives: `MODEL` / `FALLBACK` (`<name> [PROVIDER p]
//! [BASE_URL url] [KEY SECRET_NAME]`), `PRICE <model> INPUT <usd> OUTPUT
//! <usd>` (per million tokens), and the agent-only `LIMIT` and `TIMEOUT`
//! forms, and `REASONING effort <low|medium|high> [budget <tokens>]`.

use super::lex::{env_name, expected, positive};
use crate::agent::{CliOptions, Effort, ModelRef, Price, ProviderKind, Reasoning};

/// Parses the arguments of `MODEL` or `FALLBACK` (`key` names which).
pub(super) fn parse_model(key: &str, rest: &str, args: &[String]) -> Result<ModelRef, String> {
    let Some((name, all_opts)) = args.split_first() else {
        return Err(expected(key, rest));
    };
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) || name.is_empty() {
        return Err(format!("{key} expects a model name, got `{name}`"));
    }
    let (mut provider, mut base_url, mut secret) = (None, None, None);
    // `--flag=value` model options (upstream's, for `PROVIDER claude|codex`),
    // anywhere after the name.
    let (flags, words): (Vec<&String>, Vec<&String>) =
        all_opts.iter().partition(|w| w.starts_with("--"));
    let words: Vec<String> = words.into_iter().cloned().collect();
    let mut opts: &[String] = &words;
    while let [word, value, more @ ..] = opts {
        match word.to_ascii_uppercase().as_str() {
            "PROVIDER" => {
                let p = ProviderKind::parse(value).ok_or_else(|| {
                    format!(
                        "unknown PROVIDER `{value}` (hint: known providers: {})",
                        ProviderKind::NAMES
                    )
                })?;
                provider = Some(p);
            }
            "BASE_URL" => base_url = Some(check_base_url(value)?),
            "KEY" => secret = Some(env_name(value, "KEY secret")?),
            _ => {
                return Err(format!(
                    "{key}: unknown option `{word}` (hint: `{key} <model> [PROVIDER {}] [BASE_URL <url>] [KEY <SECRET name>]`)",
                    ProviderKind::NAMES.replace(", ", "|")
                ));
            }
        }
        opts = more;
    }
    if let [dangling] = opts {
        return Err(format!(
            "{key}: `{dangling}` needs a value (hint: `{key} {name} PROVIDER openai KEY OPENAI_API_KEY`)"
        ));
    }
    let provider = match provider {
        Some(p) => p,
        None => ProviderKind::infer(name, base_url.as_deref()).map_err(|e| format!("{key} {e}"))?,
    };
    let options = cli_options(key, name, provider, &flags)?;
    if provider.is_local_cli() && (base_url.is_some() || secret.is_some()) {
        return Err(format!(
            "{key} {name}: PROVIDER {provider} runs the local `{provider}` CLI, which takes no BASE_URL or KEY (hint: the CLI uses its own login; remove BASE_URL and KEY)"
        ));
    }
    Ok(ModelRef {
        name: name.clone(),
        provider,
        base_url,
        key: secret,
        options,
    })
}

/// The `--flag=value` options of a model line: only the local CLIs take any.
fn cli_options(
    key: &str,
    name: &str,
    provider: ProviderKind,
    flags: &[&String],
) -> Result<CliOptions, String> {
    let mut o = CliOptions::default();
    for flag in flags {
        let Some((flag_name, value)) = flag.split_once('=') else {
            return Err(format!(
                "{key} {name}: model option `{flag}` needs a value (hint: `--reasoning-effort=high`, `--persist-thread=false`)"
            ));
        };
        if !provider.is_local_cli() {
            return Err(format!(
                "{key} {name}: model option `{flag_name}` applies to PROVIDER claude|codex only (hint: for {provider}, write `REASONING effort high` on its own line)"
            ));
        }
        let one_of = |allowed: &[&str]| {
            let v = value.to_ascii_lowercase();
            match allowed.contains(&v.as_str()) {
                true => Ok(v),
                false => Err(format!(
                    "{key} {name}: {flag_name} must be one of {} for PROVIDER {provider}, got `{value}`",
                    allowed.join(", ")
                )),
            }
        };
        match (flag_name, provider) {
            ("--reasoning-effort", ProviderKind::Claude) => {
                o.reasoning_effort = Some(one_of(&["low", "medium", "high", "max"])?);
            }
            ("--reasoning-effort", _) => {
                let levels = ["minimal", "low", "medium", "high", "xhigh"];
                o.reasoning_effort = Some(one_of(&levels)?);
            }
            ("--persist-thread", _) => {
                o.persist_thread = Some(one_of(&["true", "false"])? == "true");
            }
            ("--permission-mode", ProviderKind::Claude) => {
                let modes = [
                    "default",
                    "acceptedits",
                    "plan",
                    "bypasspermissions",
                    "dontask",
                ];
                one_of(&modes)?;
                o.permission_mode = Some(value.to_string());
            }
            ("--sandbox", ProviderKind::Codex) => {
                let modes = ["read-only", "workspace-write", "danger-full-access"];
                o.sandbox = Some(one_of(&modes)?);
            }
            _ => {
                let known = match provider {
                    ProviderKind::Claude => {
                        "--reasoning-effort, --persist-thread, --permission-mode"
                    }
                    _ => "--reasoning-effort, --persist-thread, --sandbox",
                };
                return Err(format!(
                    "{key} {name}: unknown model option `{flag_name}` for PROVIDER {provider} (hint: known options are {known})"
                ));
            }
        }
    }
    Ok(o)
}

/// `REASONING effort <low|medium|high>`, `REASONING budget <tokens>`, or
/// both on one line (`REASONING effort high budget 16000`).
pub(super) fn parse_reasoning(rest: &str, args: &[String]) -> Result<Reasoning, String> {
    const HINT: &str = "(hint: `REASONING effort medium`, or `REASONING budget 8000` for a thinking budget in tokens)";
    if args.is_empty() || !args.len().is_multiple_of(2) {
        return Err(format!(
            "REASONING expects `effort <level>` and/or `budget <tokens>`, got `{rest}` {HINT}"
        ));
    }
    let mut r = Reasoning::default();
    for pair in args.chunks_exact(2) {
        let (word, value) = (&pair[0], &pair[1]);
        match word.to_ascii_lowercase().as_str() {
            "effort" => {
                r.effort = Some(Effort::parse(value).ok_or_else(|| {
                    format!(
                        "REASONING effort must be one of {}, got `{value}` {HINT}",
                        Effort::NAMES
                    )
                })?);
            }
            "budget" => {
                let n = positive(value, "REASONING budget")?;
                if n < 1024 {
                    return Err(format!(
                        "REASONING budget must be at least 1024 tokens (Anthropic's minimum), got {n} {HINT}"
                    ));
                }
                r.budget_tokens = Some(n);
            }
            _ => return Err(format!("REASONING: unknown option `{word}` {HINT}")),
        }
    }
    Ok(r)
}

/// A BASE_URL must be an absolute http(s) URL; it is kept without a trailing `/`.
pub fn check_base_url(value: &str) -> Result<String, String> {
    let bad = |why: &str| {
        format!(
            "BASE_URL `{value}` is not a URL ({why}) (hint: e.g. `BASE_URL http://127.0.0.1:11434/v1`)"
        )
    };
    let url = url::Url::parse(value).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    Ok(value.trim_end_matches('/').to_string())
}

/// `PRICE <model> INPUT <usd per 1M tokens> OUTPUT <usd per 1M tokens>`.
pub(super) fn parse_price(rest: &str, args: &[String]) -> Result<Price, String> {
    let [model, i_word, input, o_word, output] = args else {
        return Err(expected("PRICE", rest));
    };
    if !i_word.eq_ignore_ascii_case("input") || !o_word.eq_ignore_ascii_case("output") {
        return Err(expected("PRICE", rest));
    }
    let usd = |v: &String| {
        let n = v.strip_prefix('$').unwrap_or(v).parse::<f64>().ok();
        n.filter(|n| n.is_finite() && *n >= 0.0).ok_or_else(|| {
            format!("PRICE expects US dollars per million tokens, got `{v}` (hint: `PRICE {model} INPUT 0.15 OUTPUT 0.60`)")
        })
    };
    Ok(Price {
        model: model.clone(),
        input_per_mtok: usd(input)?,
        output_per_mtok: usd(output)?,
    })
}

/// Which agent-only LIMIT a word names, and its parsed value.
pub(super) fn agent_limit(kind: &str, value: &str) -> Option<Result<(&'static str, u64), String>> {
    let key = match kind {
        "TOOL_ROUNDS" => "LIMIT TOOL_ROUNDS",
        "ITERATIONS" => "LIMIT ITERATIONS",
        "OUTPUT_TOKENS" => "LIMIT OUTPUT_TOKENS",
        "CONTEXT_TOKENS" => "LIMIT CONTEXT_TOKENS",
        "FUEL" => "LIMIT FUEL",
        _ => return None,
    };
    Some(positive(value, key).map(|n| (key, n)))
}

/// The word after `LIMIT OUTPUT_TOKENS <n>` that accepts answers cut at the limit.
pub(super) fn allow_truncation(flag: &str) -> Result<(), String> {
    if flag.eq_ignore_ascii_case("ALLOW_TRUNCATION") {
        Ok(())
    } else {
        Err(format!(
            "LIMIT OUTPUT_TOKENS: unexpected `{flag}` (hint: `LIMIT OUTPUT_TOKENS 512`, or `LIMIT OUTPUT_TOKENS 512 ALLOW_TRUNCATION` to accept answers cut at the limit)"
        ))
    }
}
