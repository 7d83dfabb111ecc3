//! Agentfile lexing and value checks: logical lines, argument splitting,
//! quoting, names, numbers, paths, and the argument forms of COMMAND, COPY,
//! RETRY and REQUIRES.

use super::directives::{ALIASES, DIRECTIVES};
use super::{CopySpec, MAX_NAME_LEN, duration_ms};
use crate::parcel::RetryPolicy;

/// Joins continued lines and drops blanks and comments: `(first line number, text)`.
pub(super) fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let t = raw.trim();
        let (body, more) = match t.strip_suffix('\\') {
            Some(b) => (b.trim_end(), true),
            None => (t, false),
        };
        match pending.take() {
            None if t.is_empty() || t.starts_with('#') => {}
            None if more => pending = Some((i + 1, body.to_string())),
            None => out.push((i + 1, body.to_string())),
            Some(p) if t.starts_with('#') => pending = Some(p),
            Some(p) if t.is_empty() => out.push(p),
            Some((start, mut buf)) => {
                if !buf.is_empty() && !body.is_empty() {
                    buf.push(' ');
                }
                buf.push_str(body);
                if more {
                    pending = Some((start, buf));
                } else {
                    out.push((start, buf));
                }
            }
        }
    }
    out.extend(pending);
    out
}

/// Splits arguments on whitespace, honouring `"…"` (with `\"`, `\\`) and `'…'`.
pub(super) fn split_args(s: &str) -> Result<Vec<String>, String> {
    let (mut out, mut cur, mut in_token) = (Vec::new(), String::new(), false);
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '"' | '\'') => (quote, in_token) = (Some(c), true),
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => match chars.next() {
                Some(e @ ('"' | '\\')) => cur.push(e),
                Some(e) => cur.extend(['\\', e]),
                None => cur.push('\\'),
            },
            (Some(_), c) => cur.push(c),
            (None, c) if c.is_whitespace() => {
                if std::mem::take(&mut in_token) {
                    out.push(std::mem::take(&mut cur));
                }
            }
            (None, c) => {
                in_token = true;
                cur.push(c);
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote (hint: close it with {q})"));
    }
    if in_token {
        out.push(cur);
    }
    Ok(out)
}

/// Removes one pair of surrounding quotes from free text: `(text, was_quoted)`.
pub(super) fn unquote(s: &str) -> (String, bool) {
    let s = s.trim();
    let quoted = s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')));
    match split_args(s) {
        Ok(mut parts) if quoted && parts.len() == 1 => (parts.remove(0), true),
        _ => (s.to_string(), false),
    }
}

/// Normalizes a relative `/`-separated path that must stay inside its root.
pub(super) fn norm_rel(p: &str) -> Result<String, &'static str> {
    let is_drive = p.len() >= 2 && p.as_bytes()[1] == b':' && p.as_bytes()[0].is_ascii_alphabetic();
    if p.starts_with('/') || p.starts_with('\\') || is_drive {
        return Err("is an absolute path");
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err("is outside the build context");
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

pub(super) fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn env_name(s: &str, what: &str) -> Result<String, String> {
    if is_env_name(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a valid {what} name (hint: use letters, digits and `_`, not starting with a digit, e.g. `API_KEY`)"
        ))
    }
}

pub(super) fn parse_u64(s: &str) -> Option<u64> {
    let clean: String = s.chars().filter(|c| *c != '_').collect();
    if clean.is_empty() || !clean.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    clean.parse().ok()
}

pub(super) fn positive(s: &str, what: &str) -> Result<u64, String> {
    match parse_u64(s) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{what} must be a whole number greater than zero, got `{s}`"
        )),
    }
}

pub(super) fn check_name(s: String) -> Result<String, String> {
    let keep = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    let first_ok = s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    if first_ok && s.chars().all(keep) && s.len() <= MAX_NAME_LEN {
        return Ok(s);
    }
    let fixed: String = (s.to_ascii_lowercase().chars())
        .map(|c| if keep(c) { c } else { '-' })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(MAX_NAME_LEN)
        .collect();
    let fixed = if fixed.is_empty() { "my-agent" } else { &fixed };
    Err(format!(
        "invalid NAME `{s}`: use at most {MAX_NAME_LEN} lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit (hint: `NAME {fixed}`)"
    ))
}

pub(super) fn nearest_directive(word: &str) -> Option<&'static str> {
    let up = word.to_ascii_uppercase();
    if let Some((_, to)) = ALIASES.iter().find(|(from, _)| *from == up) {
        return Some(to);
    }
    DIRECTIVES
        .iter()
        .filter(|d| d.refused().is_none())
        .map(|d| (d.name, strsim::jaro_winkler(&up, d.name)))
        .filter(|(_, score)| *score >= 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(d, _)| d)
}

/// `KEY expects WHAT (hint: `EXAMPLE`)`, from the registry.
pub(super) fn usage(key: &str) -> String {
    match super::directives::find(key) {
        Some(d) => d.usage(),
        None => format!("{key} expects an argument"),
    }
}

/// `KEY expects WHAT, got `GOT` (hint: `EXAMPLE`)`, from the registry.
pub(super) fn expected(key: &str, got: &str) -> String {
    match super::directives::find(key) {
        Some(d) => format!(
            "{key} expects {}, got `{got}` (hint: `{}`)",
            d.expects, d.example
        ),
        None => format!("{key} expects an argument, got `{got}`"),
    }
}

pub(super) fn parse_command(rest: &str) -> Result<Vec<String>, String> {
    if !rest.starts_with('[') {
        return Ok(vec!["/bin/sh".into(), "-c".into(), rest.to_string()]);
    }
    let argv: Vec<String> = serde_json::from_str(rest).map_err(|e| {
        format!(
            "COMMAND starts with `[` but is not a JSON array of strings ({e}) (hint: `COMMAND [\"sh\", \"agent.sh\"]`, or drop the brackets for the shell form)"
        )
    })?;
    match argv.first() {
        Some(p) if !p.trim().is_empty() => Ok(argv),
        _ => Err("COMMAND's program is empty (hint: `COMMAND [\"sh\", \"agent.sh\"]`)".into()),
    }
}

pub(super) fn parse_copy(args: &[String], line: usize, rest: &str) -> Result<CopySpec, String> {
    let (src_raw, dest_raw) = match args {
        [s] => (s, None),
        [s, d] => (s, Some(d)),
        _ => return Err(expected("COPY", rest)),
    };
    let src = norm_rel(src_raw).map_err(|p| {
        format!("COPY source `{src_raw}` {p} (hint: COPY reads only files inside the directory that holds the Agentfile; move the file there)")
    })?;
    let Some(d) = dest_raw else {
        let dest = src.clone();
        return Ok(CopySpec {
            src,
            dest,
            dest_is_dir: false,
            line,
        });
    };
    let dest = norm_rel(d).map_err(|p| {
        format!("COPY destination `{d}` {p} (hint: destinations are relative to the parcel's files directory, e.g. `COPY {src_raw} lib/`)")
    })?;
    let dest_is_dir = d.ends_with('/') || dest.is_empty();
    Ok(CopySpec {
        src,
        dest,
        dest_is_dir,
        line,
    })
}

pub(super) fn parse_retry(args: &[String], rest: &str) -> Result<RetryPolicy, String> {
    let (n, backoff) = match args {
        [n] => (n, None),
        [n, kw, b] if kw.eq_ignore_ascii_case("backoff") => (n, Some(b)),
        _ => return Err(expected("RETRY", rest)),
    };
    let n = parse_u64(n)
        .filter(|n| *n >= 1)
        .and_then(|n| u32::try_from(n).ok());
    let max_attempts = n.ok_or_else(|| expected("RETRY", rest))?;
    let (mut initial, mut max) = (1_000, 30_000);
    match backoff.map(|b| (b, b.split_once(".."))) {
        None => {}
        Some((_, Some((i, m)))) => {
            initial = duration_ms(i)?;
            max = duration_ms(m)?;
            if initial > max {
                return Err(format!(
                    "RETRY BACKOFF initial `{i}` is longer than max `{m}` (hint: `RETRY 3 BACKOFF 1s..30s`)"
                ));
            }
        }
        Some((b, None)) => {
            initial = duration_ms(b)?;
            max = max.max(initial);
        }
    }
    let (backoff_initial_ms, backoff_max_ms) = (initial, max);
    Ok(RetryPolicy {
        max_attempts,
        backoff_initial_ms,
        backoff_max_ms,
    })
}

pub(super) fn check_url(url: &str) -> Result<(), String> {
    let ok = url.split_once("://").is_some_and(|(scheme, rest)| {
        let mut c = scheme.chars();
        matches!(c.next(), Some(f) if f.is_ascii_alphabetic())
            && c.all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
            && !rest.is_empty()
    });
    if ok {
        return Ok(());
    }
    Err(format!(
        "REQUIRES expects a URL with a scheme, got `{url}` (hint: e.g. `redis://localhost:6379`, `http://localhost:8080/health`, `tcp://db:5432`)"
    ))
}
