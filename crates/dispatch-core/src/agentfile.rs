//! Agentfile parsing. An Agentfile describes an agent the way a Dockerfile
//! describes an image: one `DIRECTIVE args` per line.
//!
//! Grammar:
//! - Blank lines and lines whose first non-blank character is `#` are ignored.
//! - Directive names are case-insensitive; leading indentation is allowed.
//! - A line ending in `\` continues on the next line: the pieces are trimmed
//!   and joined with one space. Comment lines inside a continuation are
//!   skipped; a blank line ends it. Errors name the first line.
//! - Arguments are split on whitespace; `"…"` (with `\"` and `\\` escapes) and
//!   `'…'` group words. Free-text directives (VERSION, IDENTITY, SOUL, PROMPT,
//!   SCHEDULE, the value of `ENV KEY value`) take the rest of the line, with
//!   one pair of surrounding quotes removed.
//!
//! This module is pure: reading files named by COPY, SKILL, IDENTITY, SOUL and
//! PROMPT happens when the parcel is built (see `parcel::build`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::parcel::{Courier, Limits, ListenPolicy, Requirement, RetryPolicy, Timeouts};
use crate::state::Operation;

/// An Agentfile that could not be parsed (or built: a SKILL file that is missing, …).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct AgentfileError {
    /// 1-based line number (of the first line of a continued line).
    pub line: usize,
    pub message: String,
}

impl AgentfileError {
    pub fn new(line: usize, message: impl Into<String>) -> Self {
        AgentfileError {
            line,
            message: message.into(),
        }
    }
}

/// An argument that is either a file in the build context or literal text
/// (IDENTITY, SOUL, PROMPT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TextSource {
    /// The argument, with surrounding quotes removed.
    pub text: String,
    /// Whether the argument was quoted (quoted text that names no file is never an error).
    pub quoted: bool,
    pub line: usize,
}

/// One `COPY <src> [<dest>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopySpec {
    /// Normalized path relative to the build context, `/`-separated; `""` is the context itself.
    pub src: String,
    /// Normalized destination relative to `files/`; `""` is `files/` itself.
    pub dest: String,
    /// The destination is a directory to put a copied file into (it ended
    /// with `/` or was `.`). A copied directory's contents always go to `dest`.
    pub dest_is_dir: bool,
    pub line: usize,
}

/// One file named by `SKILL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkillSpec {
    /// Normalized path relative to the build context.
    pub path: String,
    /// The file stem: the skill's name.
    pub name: String,
    pub line: usize,
}

/// A parsed Agentfile: the manifest fields, plus the references to files that
/// are resolved against the build context when the parcel is built.
#[derive(Clone, Debug, PartialEq)]
pub struct Agentfile {
    pub courier: Courier,
    pub name: String,
    pub version: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub entrypoint: Operation,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Declared secret names, in order, without duplicates.
    pub secrets: Vec<String>,
    pub copies: Vec<CopySpec>,
    pub identity: Option<TextSource>,
    pub soul: Option<TextSource>,
    pub skills: Vec<SkillSpec>,
    pub prompts: Vec<TextSource>,
    pub timeouts: Timeouts,
    pub retry: Option<RetryPolicy>,
    pub limits: Limits,
    pub requires: Vec<Requirement>,
    pub schedules: Vec<String>,
    pub listen: Option<ListenPolicy>,
}

/// Every directive with what it expects and an example line.
pub const DIRECTIVES: &[(&str, &str, &str)] = &[
    ("FROM", "a courier", "FROM process"),
    ("NAME", "a name", "NAME my-agent"),
    ("VERSION", "a version", "VERSION 1.0.0"),
    ("LABEL", "key=value pairs", "LABEL team=research"),
    ("ENTRYPOINT", "`job` or `heartbeat`", "ENTRYPOINT job"),
    ("COMMAND", "the program to run", "COMMAND sh agent.sh"),
    (
        "ENV",
        "KEY=value pairs or `KEY value`",
        "ENV LOG_LEVEL=info",
    ),
    ("SECRET", "a secret name", "SECRET OPENAI_API_KEY"),
    (
        "COPY",
        "a source and an optional destination",
        "COPY agent.sh",
    ),
    ("IDENTITY", "a file or text", "IDENTITY identity.md"),
    ("SOUL", "a file or text", "SOUL soul.md"),
    ("SKILL", "one or more files", "SKILL skills/review.md"),
    ("PROMPT", "a file or text", "PROMPT prompts/task.md"),
    ("TIMEOUT", "[RUN|STEP] and a duration", "TIMEOUT RUN 30m"),
    ("RETRY", "a number of attempts", "RETRY 3 BACKOFF 1s..30s"),
    ("LIMIT", "TOKENS <n> or COST <usd>", "LIMIT TOKENS 100000"),
    (
        "REQUIRES",
        "a name and a URL",
        "REQUIRES REDIS_URL redis://localhost:6379",
    ),
    (
        "SCHEDULE",
        "a cron expression",
        "SCHEDULE \"0 */5 * * * *\"",
    ),
    ("LISTEN", "an address", "LISTEN 127.0.0.1:8080"),
    (
        "LISTEN_PATH",
        "a path starting with `/`",
        "LISTEN_PATH /hook",
    ),
    ("LISTEN_METHOD", "HTTP methods", "LISTEN_METHOD POST"),
    (
        "LISTEN_SECRET",
        "the name of a SECRET",
        "LISTEN_SECRET HOOK_SECRET",
    ),
    (
        "LISTEN_MAX_BODY_BYTES",
        "a number of bytes",
        "LISTEN_MAX_BODY_BYTES 1048576",
    ),
    (
        "LISTEN_MAX_HEADER_BYTES",
        "a number of bytes",
        "LISTEN_MAX_HEADER_BYTES 16384",
    ),
];

/// Dockerfile words that mean something else here.
const ALIASES: &[(&str, &str)] = &[
    ("CMD", "COMMAND"),
    ("RUN", "COMMAND"),
    ("ADD", "COPY"),
    ("ARG", "ENV"),
    ("EXPOSE", "LISTEN"),
];

const KNOWN_COURIERS: &str = "process";
const MAX_NAME_LEN: usize = 128;

/// Parses an Agentfile. Never panics; the first problem is returned with its line.
pub fn parse(text: &str) -> Result<Agentfile, AgentfileError> {
    let mut p = Parser::default();
    let mut last_line = 0;
    for (line, body) in logical_lines(text) {
        last_line = line;
        p.directive(line, &body)?;
    }
    p.finish(text.lines().count().max(last_line).max(1))
}

/// Parses a duration: `500ms`, `30s`, `5m`, `2h`, `1d`, or plain seconds. Returns ms.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid duration `{text}` (hint: use a number with a unit, e.g. `500ms`, `30s`, `5m`, `2h`)"
        )
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n = parse_u64(digits).ok_or_else(bad)?;
    let factor = match unit.to_ascii_lowercase().as_str() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("duration `{text}` is too large"))
}

/// Joins continued lines and drops blanks and comments: `(first line number, text)`.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
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
fn split_args(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_token = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                in_token = true;
                let mut closed = false;
                while let Some(q) = chars.next() {
                    if q == c {
                        closed = true;
                        break;
                    }
                    if c == '"' && q == '\\' {
                        match chars.next() {
                            Some(e @ ('"' | '\\')) => cur.push(e),
                            Some(e) => {
                                cur.push('\\');
                                cur.push(e);
                            }
                            None => cur.push('\\'),
                        }
                    } else {
                        cur.push(q);
                    }
                }
                if !closed {
                    return Err(format!("unterminated {c} quote (hint: close it with {c})"));
                }
            }
            c if c.is_whitespace() => {
                if in_token {
                    out.push(std::mem::take(&mut cur));
                    in_token = false;
                }
            }
            c => {
                in_token = true;
                cur.push(c);
            }
        }
    }
    if in_token {
        out.push(cur);
    }
    Ok(out)
}

/// Removes one pair of surrounding quotes from free text: `(text, was_quoted)`.
fn unquote(s: &str) -> (String, bool) {
    let s = s.trim();
    let quoted = s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')));
    match split_args(s) {
        Ok(mut parts) if quoted && parts.len() == 1 => (parts.remove(0), true),
        _ => (s.to_string(), false),
    }
}

/// Normalizes a relative `/`-separated path that must stay inside its root.
fn norm_rel(p: &str) -> Result<String, &'static str> {
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

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn env_name(s: &str, what: &str) -> Result<String, String> {
    if is_env_name(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` is not a valid {what} name (hint: use letters, digits and `_`, not starting with a digit, e.g. `API_KEY`)"
        ))
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    let clean: String = s.chars().filter(|c| *c != '_').collect();
    if clean.is_empty() || !clean.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    clean.parse().ok()
}

fn positive(s: &str, what: &str) -> Result<u64, String> {
    match parse_u64(s) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{what} must be a whole number greater than zero, got `{s}`"
        )),
    }
}

fn check_name(s: &str) -> Result<(), String> {
    let mut chars = s.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        && s.len() <= MAX_NAME_LEN;
    if ok {
        return Ok(());
    }
    let mut fixed: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .take(MAX_NAME_LEN)
        .collect();
    if fixed.is_empty() {
        fixed = "my-agent".to_string();
    }
    Err(format!(
        "invalid NAME `{s}`: use at most {MAX_NAME_LEN} lowercase letters, digits, `.`, `_` and `-`, starting with a letter or digit (hint: `NAME {fixed}`)"
    ))
}

fn nearest_directive(word: &str) -> Option<&'static str> {
    let up = word.to_ascii_uppercase();
    if let Some((_, to)) = ALIASES.iter().find(|(from, _)| *from == up) {
        return Some(to);
    }
    DIRECTIVES
        .iter()
        .map(|(d, _, _)| (*d, strsim::jaro_winkler(&up, d)))
        .filter(|(_, score)| *score >= 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(d, _)| d)
}

fn usage(directive: &str) -> (&'static str, &'static str) {
    DIRECTIVES
        .iter()
        .find(|(d, _, _)| *d == directive)
        .map(|(_, what, example)| (*what, *example))
        .unwrap_or(("an argument", ""))
}

#[derive(Default)]
struct Parser {
    courier: Option<Courier>,
    name: Option<String>,
    version: Option<String>,
    labels: BTreeMap<String, String>,
    entrypoint: Option<Operation>,
    command: Vec<String>,
    env: BTreeMap<String, usize>,
    env_values: BTreeMap<String, String>,
    secrets: Vec<(String, usize)>,
    copies: Vec<CopySpec>,
    identity: Option<TextSource>,
    soul: Option<TextSource>,
    skills: Vec<SkillSpec>,
    prompts: Vec<TextSource>,
    timeouts: Timeouts,
    retry: Option<RetryPolicy>,
    limits: Limits,
    requires: Vec<(Requirement, usize)>,
    schedules: Vec<String>,
    listen: Option<ListenPolicy>,
    listen_secret_line: usize,
    seen: HashMap<&'static str, usize>,
}

impl Parser {
    /// Records a single-valued directive, refusing a second one.
    fn once(&mut self, key: &'static str, line: usize) -> Result<(), String> {
        match self.seen.insert(key, line) {
            Some(prev) => Err(format!(
                "duplicate {key}: it is already set on line {prev} (hint: keep only one {key} line)"
            )),
            None => Ok(()),
        }
    }

    fn listen(&mut self) -> &mut ListenPolicy {
        self.listen.get_or_insert_with(ListenPolicy::default)
    }

    fn directive(&mut self, line: usize, body: &str) -> Result<(), AgentfileError> {
        let (word, rest) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
        let rest = rest.trim();
        let upper = word.to_ascii_uppercase();
        let Some(&(key, what, example)) = DIRECTIVES.iter().find(|(d, _, _)| *d == upper) else {
            let message = match nearest_directive(word) {
                Some(d) => format!("unknown directive `{word}` (did you mean `{d}`?)"),
                None => {
                    let all: Vec<&str> = DIRECTIVES.iter().map(|(d, _, _)| *d).collect();
                    format!(
                        "unknown directive `{word}` (hint: known directives are {})",
                        all.join(", ")
                    )
                }
            };
            return Err(AgentfileError::new(line, message));
        };
        if rest.is_empty() {
            return Err(AgentfileError::new(
                line,
                format!("{key} expects {what} (hint: `{example}`)"),
            ));
        }
        self.apply(key, line, rest)
            .map_err(|m| AgentfileError::new(line, m))
    }

    fn apply(&mut self, key: &'static str, line: usize, rest: &str) -> Result<(), String> {
        match key {
            "COMMAND" => {
                self.once(key, line)?;
                self.command = parse_command(rest)?;
                return Ok(());
            }
            "VERSION" | "IDENTITY" | "SOUL" | "PROMPT" | "SCHEDULE" => {
                return self.free_text(key, line, rest);
            }
            _ => {}
        }
        let args = split_args(rest)?;
        let single = |args: &[String]| -> Result<String, String> {
            match args {
                [one] => Ok(one.clone()),
                _ => {
                    let (what, example) = usage(key);
                    Err(format!(
                        "{key} expects {what}, got {} values (hint: `{example}`)",
                        args.len()
                    ))
                }
            }
        };
        match key {
            "FROM" => {
                self.once(key, line)?;
                let c = single(&args)?;
                match c.to_ascii_lowercase().as_str() {
                    "process" => self.courier = Some(Courier::Process),
                    _ => {
                        return Err(format!(
                            "unknown courier `{c}` (hint: known couriers: {KNOWN_COURIERS})"
                        ));
                    }
                }
            }
            "NAME" => {
                self.once(key, line)?;
                let n = single(&args)?;
                check_name(&n)?;
                self.name = Some(n);
            }
            "ENTRYPOINT" => {
                self.once(key, line)?;
                let op = single(&args).unwrap_or_else(|_| rest.to_string());
                self.entrypoint = Some(match op.to_ascii_lowercase().as_str() {
                    "job" => Operation::Job,
                    "heartbeat" => Operation::Heartbeat,
                    _ => {
                        return Err(format!(
                            "ENTRYPOINT expects `job` or `heartbeat`, got `{op}` (hint: the program to run goes in COMMAND)"
                        ));
                    }
                });
            }
            "LABEL" => {
                for a in &args {
                    match a.split_once('=') {
                        Some((k, v)) if !k.is_empty() => {
                            self.labels.insert(k.to_string(), v.to_string());
                        }
                        _ => {
                            return Err(format!(
                                "LABEL expects key=value pairs, got `{a}` (hint: `LABEL team=research`)"
                            ));
                        }
                    }
                }
            }
            "ENV" => self.env_directive(line, rest, &args)?,
            "SECRET" => {
                for a in &args {
                    if a.contains('=') {
                        return Err(format!(
                            "SECRET takes only a name, got `{a}` (hint: the value comes from the environment or the secret store when the agent runs)"
                        ));
                    }
                    let n = env_name(a, "secret")?;
                    if !self.secrets.iter().any(|(s, _)| *s == n) {
                        self.secrets.push((n, line));
                    }
                }
            }
            "COPY" => self.copies.push(parse_copy(&args, line)?),
            "SKILL" => {
                for a in &args {
                    let path = norm_rel(a).map_err(|p| {
                        format!("SKILL file `{a}` {p} (hint: name a file inside the directory that holds the Agentfile)")
                    })?;
                    let name = Path::new(&path)
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or_default()
                        .to_string();
                    if name.is_empty() {
                        return Err(format!(
                            "SKILL expects a file, got `{a}` (hint: `SKILL skills/review.md`)"
                        ));
                    }
                    if let Some(prev) = self.skills.iter().find(|s| s.name == name) {
                        return Err(format!(
                            "SKILL `{name}` is already defined on line {} (hint: skills are named after their file; rename one of the files)",
                            prev.line
                        ));
                    }
                    self.skills.push(SkillSpec { path, name, line });
                }
            }
            "TIMEOUT" => {
                let (which, d) = match args.as_slice() {
                    [d] => ("RUN", d),
                    [w, d] if w.eq_ignore_ascii_case("run") => ("RUN", d),
                    [w, d] if w.eq_ignore_ascii_case("step") => ("STEP", d),
                    _ => {
                        return Err(format!(
                            "TIMEOUT expects [RUN|STEP] and a duration, got `{rest}` (hint: `TIMEOUT RUN 30m` or `TIMEOUT STEP 5m`)"
                        ));
                    }
                };
                self.once(
                    if which == "RUN" {
                        "TIMEOUT RUN"
                    } else {
                        "TIMEOUT STEP"
                    },
                    line,
                )?;
                let ms = parse_duration_ms(d)?;
                if ms == 0 {
                    return Err(format!("TIMEOUT {which} must be greater than zero"));
                }
                let slot = if which == "RUN" {
                    &mut self.timeouts.run_ms
                } else {
                    &mut self.timeouts.step_ms
                };
                *slot = Some(ms);
            }
            "RETRY" => {
                self.once(key, line)?;
                self.retry = Some(parse_retry(&args)?);
            }
            "LIMIT" => self.limit(line, &args)?,
            "REQUIRES" => {
                let [name, url] = args.as_slice() else {
                    return Err(format!(
                        "REQUIRES expects a name and a URL, got `{rest}` (hint: `REQUIRES REDIS_URL redis://localhost:6379`)"
                    ));
                };
                let name = env_name(name, "REQUIRES")?;
                if let Some((_, prev)) = self.requires.iter().find(|(r, _)| r.name == name) {
                    return Err(format!(
                        "REQUIRES {name} is already declared on line {prev} (hint: keep only one)"
                    ));
                }
                check_url(url)?;
                self.requires.push((
                    Requirement {
                        name,
                        url: url.clone(),
                    },
                    line,
                ));
            }
            "LISTEN" => {
                self.once(key, line)?;
                let addr = single(&args)?;
                let port = addr.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
                if !matches!(port, Some(Ok(_))) {
                    return Err(format!(
                        "LISTEN expects an address with a port, got `{addr}` (hint: `LISTEN 127.0.0.1:8080` or `LISTEN :8080`)"
                    ));
                }
                self.listen().addr = Some(addr);
            }
            "LISTEN_PATH" => {
                self.once(key, line)?;
                let path = single(&args)?;
                if !path.starts_with('/') {
                    return Err(format!(
                        "LISTEN_PATH must start with `/`, got `{path}` (hint: `LISTEN_PATH /{path}`)"
                    ));
                }
                self.listen().path = Some(path);
            }
            "LISTEN_METHOD" => {
                for a in args
                    .iter()
                    .flat_map(|a| a.split(','))
                    .filter(|m| !m.is_empty())
                {
                    if !a.chars().all(|c| c.is_ascii_alphabetic()) {
                        return Err(format!(
                            "LISTEN_METHOD expects HTTP methods, got `{a}` (hint: `LISTEN_METHOD POST PUT`)"
                        ));
                    }
                    let m = a.to_ascii_uppercase();
                    let l = self.listen();
                    if !l.methods.contains(&m) {
                        l.methods.push(m);
                    }
                }
            }
            "LISTEN_SECRET" => {
                self.once(key, line)?;
                let s = env_name(&single(&args)?, "secret")?;
                self.listen_secret_line = line;
                self.listen().secret = Some(s);
            }
            "LISTEN_MAX_BODY_BYTES" | "LISTEN_MAX_HEADER_BYTES" => {
                self.once(key, line)?;
                let n = positive(&single(&args)?, key)?;
                let l = self.listen();
                if key == "LISTEN_MAX_BODY_BYTES" {
                    l.max_body_bytes = Some(n);
                } else {
                    l.max_header_bytes = Some(n);
                }
            }
            _ => return Err(format!("{key} is not supported here")),
        }
        Ok(())
    }

    fn free_text(&mut self, key: &'static str, line: usize, rest: &str) -> Result<(), String> {
        let (text, quoted) = unquote(rest);
        if text.trim().is_empty() {
            let (what, example) = usage(key);
            return Err(format!("{key} expects {what} (hint: `{example}`)"));
        }
        let src = TextSource { text, quoted, line };
        match key {
            "VERSION" => {
                self.once(key, line)?;
                self.version = Some(src.text);
            }
            "IDENTITY" => {
                self.once(key, line)?;
                self.identity = Some(src);
            }
            "SOUL" => {
                self.once(key, line)?;
                self.soul = Some(src);
            }
            "PROMPT" => self.prompts.push(src),
            _ => self.schedules.push(src.text),
        }
        Ok(())
    }

    fn env_directive(&mut self, line: usize, rest: &str, args: &[String]) -> Result<(), String> {
        let first_raw = rest.split_whitespace().next().unwrap_or_default();
        let pairs: Vec<(String, String)> = if first_raw.contains('=') {
            args.iter()
                .map(|a| match a.split_once('=') {
                    Some((k, v)) => Ok((k.to_string(), v.to_string())),
                    None => Err(format!(
                        "ENV expects KEY=value pairs, got `{a}` (hint: `ENV A=1 B=2`, or one `ENV KEY value` per line)"
                    )),
                })
                .collect::<Result<_, _>>()?
        } else {
            let (key, value) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let (value, _) = unquote(value);
            if value.is_empty() {
                return Err(format!(
                    "ENV {key} needs a value (hint: `ENV {key}=value` or `ENV {key} value`)"
                ));
            }
            vec![(key.to_string(), value)]
        };
        for (k, v) in pairs {
            let k = env_name(&k, "environment variable")?;
            self.env.insert(k.clone(), line);
            self.env_values.insert(k, v);
        }
        Ok(())
    }

    fn limit(&mut self, line: usize, args: &[String]) -> Result<(), String> {
        let bad = || {
            "LIMIT expects TOKENS <n> or COST <usd>, optionally followed by SOFT (hint: `LIMIT TOKENS 100000` or `LIMIT COST 2.50 SOFT`)".to_string()
        };
        let (kind, value, soft) = match args {
            [k, v] => (k, v, false),
            [k, v, s] if s.eq_ignore_ascii_case("soft") => (k, v, true),
            _ => return Err(bad()),
        };
        match kind.to_ascii_uppercase().as_str() {
            "TOKENS" => {
                self.once(
                    if soft {
                        "LIMIT TOKENS SOFT"
                    } else {
                        "LIMIT TOKENS"
                    },
                    line,
                )?;
                let n = positive(value, "LIMIT TOKENS")?;
                let slot = if soft {
                    &mut self.limits.soft_max_tokens
                } else {
                    &mut self.limits.max_tokens
                };
                *slot = Some(n);
            }
            "COST" => {
                self.once(
                    if soft {
                        "LIMIT COST SOFT"
                    } else {
                        "LIMIT COST"
                    },
                    line,
                )?;
                let usd = value
                    .strip_prefix('$')
                    .unwrap_or(value)
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v > 0.0)
                    .ok_or_else(|| format!("LIMIT COST must be an amount of US dollars greater than zero, got `{value}` (hint: `LIMIT COST 2.50`)"))?;
                let slot = if soft {
                    &mut self.limits.soft_max_cost_usd
                } else {
                    &mut self.limits.max_cost_usd
                };
                *slot = Some(usd);
            }
            _ => return Err(bad()),
        }
        Ok(())
    }

    fn finish(self, last_line: usize) -> Result<Agentfile, AgentfileError> {
        let Some(name) = self.name else {
            return Err(AgentfileError::new(
                last_line,
                "missing NAME (hint: add a line such as `NAME my-agent`)",
            ));
        };
        if self.command.is_empty() {
            return Err(AgentfileError::new(
                last_line,
                "missing COMMAND (hint: add a line such as `COMMAND sh agent.sh`)",
            ));
        }
        let listen_secret = self.listen.as_ref().and_then(|l| l.secret.as_ref());
        if let Some(secret) = listen_secret.filter(|s| !self.secrets.iter().any(|(d, _)| d == *s)) {
            return Err(AgentfileError::new(
                self.listen_secret_line,
                format!(
                    "LISTEN_SECRET names `{secret}`, which is not a declared SECRET (hint: add `SECRET {secret}`)"
                ),
            ));
        }
        for (secret, secret_line) in &self.secrets {
            if let Some(env_line) = self.env.get(secret) {
                return Err(AgentfileError::new(
                    (*env_line).max(*secret_line),
                    format!(
                        "`{secret}` is set by ENV on line {env_line} and declared as SECRET on line {secret_line} (hint: never write a secret's value in the Agentfile; remove the ENV)"
                    ),
                ));
            }
        }
        Ok(Agentfile {
            courier: self.courier.unwrap_or(Courier::Process),
            name,
            version: self.version,
            labels: self.labels,
            entrypoint: self.entrypoint.unwrap_or(Operation::Job),
            command: self.command,
            env: self.env_values,
            secrets: self.secrets.into_iter().map(|(s, _)| s).collect(),
            copies: self.copies,
            identity: self.identity,
            soul: self.soul,
            skills: self.skills,
            prompts: self.prompts,
            timeouts: self.timeouts,
            retry: self.retry,
            limits: self.limits,
            requires: self.requires.into_iter().map(|(r, _)| r).collect(),
            schedules: self.schedules,
            listen: self.listen,
        })
    }
}

fn parse_command(rest: &str) -> Result<Vec<String>, String> {
    if !rest.starts_with('[') {
        return Ok(vec!["/bin/sh".into(), "-c".into(), rest.to_string()]);
    }
    let argv: Vec<String> = serde_json::from_str(rest).map_err(|e| {
        format!(
            "COMMAND starts with `[` but is not a JSON array of strings ({e}) (hint: `COMMAND [\"sh\", \"agent.sh\"]`, or drop the brackets for the shell form)"
        )
    })?;
    match argv.first() {
        None => Err(
            "COMMAND [] is empty (hint: name the program, e.g. `COMMAND [\"sh\", \"agent.sh\"]`)"
                .into(),
        ),
        Some(p) if p.trim().is_empty() => {
            Err("COMMAND's program (the first element) is empty".into())
        }
        Some(_) => Ok(argv),
    }
}

fn parse_copy(args: &[String], line: usize) -> Result<CopySpec, String> {
    let (src_raw, dest_raw) = match args {
        [s] => (s, None),
        [s, d] => (s, Some(d)),
        _ => {
            return Err(format!(
                "COPY expects a source and an optional destination, got {} values (hint: use one COPY line per source, e.g. `COPY agent.sh bin/`)",
                args.len()
            ));
        }
    };
    let src = norm_rel(src_raw).map_err(|p| {
        format!("COPY source `{src_raw}` {p} (hint: COPY reads only files inside the directory that holds the Agentfile; move the file there)")
    })?;
    let (dest, dest_is_dir) = match dest_raw {
        None => (src.clone(), false),
        Some(d) => {
            let n = norm_rel(d).map_err(|p| {
                format!("COPY destination `{d}` {p} (hint: destinations are relative to the parcel's files directory, e.g. `COPY {src_raw} lib/`)")
            })?;
            let is_dir = d.ends_with('/') || n.is_empty();
            (n, is_dir)
        }
    };
    Ok(CopySpec {
        src,
        dest,
        dest_is_dir,
        line,
    })
}

fn parse_retry(args: &[String]) -> Result<RetryPolicy, String> {
    let usage = "(hint: `RETRY 3` or `RETRY 3 BACKOFF 1s..30s`)";
    let (n, backoff) = match args {
        [n] => (n, None),
        [n, kw, b] if kw.eq_ignore_ascii_case("backoff") => (n, Some(b)),
        _ => {
            return Err(format!(
                "RETRY expects a number of attempts and an optional BACKOFF <initial>..<max> {usage}"
            ));
        }
    };
    let max_attempts = parse_u64(n)
        .filter(|n| *n >= 1)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            format!("RETRY expects a number of attempts of at least 1, got `{n}` {usage}")
        })?;
    let (mut initial, mut max) = (1_000, 30_000);
    if let Some(b) = backoff {
        match b.split_once("..") {
            Some((i, m)) => {
                initial = parse_duration_ms(i)?;
                max = parse_duration_ms(m)?;
                if initial > max {
                    return Err(format!(
                        "RETRY BACKOFF initial `{i}` is longer than max `{m}` {usage}"
                    ));
                }
            }
            None => {
                initial = parse_duration_ms(b)?;
                max = max.max(initial);
            }
        }
    }
    Ok(RetryPolicy {
        max_attempts,
        backoff_initial_ms: initial,
        backoff_max_ms: max,
    })
}

fn check_url(url: &str) -> Result<(), String> {
    let ok = url.split_once("://").is_some_and(|(scheme, rest)| {
        let mut c = scheme.chars();
        matches!(c.next(), Some(f) if f.is_ascii_alphabetic())
            && c.all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
            && !rest.is_empty()
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "REQUIRES expects a URL with a scheme, got `{url}` (hint: e.g. `redis://localhost:6379`, `http://localhost:8080/health`, `tcp://db:5432`)"
        ))
    }
}

#[cfg(test)]
#[path = "agentfile_tests.rs"]
mod tests;
