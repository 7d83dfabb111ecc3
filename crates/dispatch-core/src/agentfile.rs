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

use crate::agent::AgentConfig;
use crate::parcel::{Courier, Instructions, Limits, ListenPolicy, Manifest, Requirement, Timeouts};
use crate::state::Operation;

mod checks;
mod directives;
mod env_passthrough;
mod eval;
mod hosted;
mod isolation;
mod lex;
mod limits;
mod listen;
mod model;
mod secret;
mod timeouts;
mod tool;
mod upstream;
mod workflow;

pub use directives::{DIRECTIVES, reference_markdown};
pub use upstream::REFUSED;

pub use eval::EVAL_DIR;
pub use model::check_base_url;

use lex::{
    check_name, check_url, env_name, expected, logical_lines, nearest_directive, norm_rel,
    parse_command, parse_copy, parse_retry, positive, split_args, unquote, usage,
};

/// An Agentfile that could not be parsed (or built: a SKILL file that is missing, …).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct AgentfileError {
    /// 1-based line number (of the first line of a continued line).
    pub line: usize,
    pub message: String,
}

/// The longest error message; a longer one (it quotes a huge input) is cut, saying so.
const MAX_MESSAGE: usize = 400;

impl AgentfileError {
    pub fn new(line: usize, message: impl Into<String>) -> Self {
        let mut message: String = message.into();
        if message.len() > MAX_MESSAGE {
            let size = message.len();
            message = format!(
                "{} (message cut: {size} bytes in all)",
                crate::event::shorten(&message, MAX_MESSAGE)
            );
        }
        AgentfileError { line, message }
    }
}

/// The methods LISTEN_METHOD takes (what a service's ingress can answer).
pub const HTTP_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

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

/// A parsed Agentfile: the manifest it describes, without the parts that
/// need the build context (instructions and files), plus the references to
/// those files, which are resolved when the parcel is built.
#[derive(Clone, Debug, PartialEq)]
pub struct Agentfile {
    /// Every field but `instructions` and `files` (left empty). Secrets are
    /// in declaration order, without duplicates.
    pub manifest: Manifest,
    pub copies: Vec<CopySpec>,
    pub identity: Option<TextSource>,
    pub soul: Option<TextSource>,
    pub skills: Vec<SkillSpec>,
    pub prompts: Vec<TextSource>,
    /// The line of each workflow member's `AGENT` (`FROM workflow`).
    pub member_lines: BTreeMap<String, usize>,
    /// `AGENTS`, `USER`, `TOOLS`, `MEMORY POLICY`, `HEARTBEAT FILE` files, in order.
    pub documents: Vec<(crate::parcel::DocumentKind, TextSource)>,
    /// The line of `ENTRYPOINT`, when there is one.
    pub entrypoint_line: Option<usize>,
}

/// Directives that may appear only once.
#[rustfmt::skip]
const SINGLE: &[&str] = &[
    "FROM", "NAME", "VERSION", "ENTRYPOINT", "COMMAND", "IDENTITY", "SOUL", "RETRY", "LISTEN",
    "LISTEN_PATH", "LISTEN_SECRET", "LISTEN_SIGNATURE", "LISTEN_MAX_BODY_BYTES", "LISTEN_MAX_HEADER_BYTES", "MODEL",
    "NETWORK", "TOOL_SANDBOX", "COORDINATOR", "AGENTS", "AGGREGATE", "CONCURRENCY", "REASONING",
    "USER", "TOOLS", "MEMORY", "HEARTBEAT", "VISIBILITY", "ROUTING", "FRAMEWORK", "COMPACTION",
];

/// Dockerfile words that mean something else here.
const ALIASES: &[(&str, &str)] = &[
    ("CMD", "COMMAND"),
    ("RUN", "COMMAND"),
    ("ARG", "ENV"),
    ("EXPOSE", "LISTEN"),
];

const COURIERS: &str = "process, agent (alias native, dispatch/native[:tag]), dispatch/wasm[:tag], noop, image <ref>, workflow";
const MAX_NAME_LEN: usize = 128;

/// Parses an Agentfile. Never panics; the first problem is returned with its line.
///
/// A leading UTF-8 byte-order mark is skipped; a NUL byte anywhere is refused
/// (no directive can hold one, and no process argument can carry one).
pub fn parse(text: &str) -> Result<Agentfile, AgentfileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some(pos) = text.find('\0') {
        let line = text[..pos].matches('\n').count() + 1;
        return Err(AgentfileError::new(
            line,
            "the Agentfile holds a NUL byte (hint: remove it; the file must be text)",
        ));
    }
    let mut p = Parser::new();
    let mut last_line = 0;
    for (line, body) in logical_lines(text) {
        last_line = line;
        p.directive(line, &body)?;
    }
    p.finish(text.lines().count().max(last_line).max(1))
}

/// An Agentfile duration, in ms: [`crate::units`]' grammar, a bare number
/// being seconds as it always was here.
pub(crate) fn duration_ms(text: &str) -> Result<u64, String> {
    crate::units::parse_duration_ms_or_seconds(text).map_err(|e| e.to_string())
}

struct Parser {
    af: Agentfile,
    seen: HashMap<&'static str, usize>,
    env_lines: BTreeMap<String, usize>,
    secret_lines: BTreeMap<String, usize>,
    /// The line of each `SECRET … TO tool` scoping, by tool name.
    secret_to_lines: Vec<(String, usize)>,
    requires_lines: BTreeMap<String, usize>,
    listen_secret_line: usize,
    listen_signature_line: usize,
    /// Lines of MODEL / FALLBACK / agent-only limits, for errors found at the end.
    agent_lines: Vec<(usize, &'static str)>,
    from_line: usize,
    network_line: usize,
    workflow: workflow::Decl,
    /// `AGENTS` (a workflow's member order, or else an instruction file):
    /// its line and arguments, read once the courier is known.
    agents: Option<(usize, String)>,
    /// Lines of `TOOL BUILTIN memory_*` (refused with `MOUNT MEMORY none`).
    memory_tool_line: Option<usize>,
}

impl Parser {
    fn new() -> Self {
        let manifest = Manifest {
            schema: 1,
            courier: Courier::Process,
            name: String::new(),
            version: None,
            labels: BTreeMap::new(),
            entrypoint: Operation::Job,
            command: Vec::new(),
            env: BTreeMap::new(),
            secrets: Vec::new(),
            secret_tools: BTreeMap::new(),
            env_passthrough: Vec::new(),
            instructions: Instructions::default(),
            timeouts: Timeouts::default(),
            retry: None,
            limits: Limits::default(),
            requires: Vec::new(),
            schedules: Vec::new(),
            listen: None,
            files: Vec::new(),
            agent: None,
            image: None,
            resources: Default::default(),
            network: None,
            tool_sandbox: None,
            evals: Vec::new(),
            workflow: None,
            concurrency: None,
            mounts: Default::default(),
            advisory: Default::default(),
            component: None,
        };
        let (copies, skills, prompts) = (Vec::new(), Vec::new(), Vec::new());
        let (identity, soul) = (None, None);
        Parser {
            af: Agentfile {
                manifest,
                copies,
                identity,
                soul,
                skills,
                prompts,
                member_lines: BTreeMap::new(),
                documents: Vec::new(),
                entrypoint_line: None,
            },
            seen: HashMap::new(),
            env_lines: BTreeMap::new(),
            secret_lines: BTreeMap::new(),
            secret_to_lines: Vec::new(),
            requires_lines: BTreeMap::new(),
            listen_secret_line: 0,
            listen_signature_line: 0,
            agent_lines: Vec::new(),
            from_line: 0,
            network_line: 0,
            workflow: workflow::Decl::default(),
            agents: None,
            memory_tool_line: None,
        }
    }

    /// Records a single-valued directive, refusing a second one.
    fn once(&mut self, key: &'static str, line: usize) -> Result<(), String> {
        match self.seen.insert(key, line) {
            Some(prev) => Err(format!(
                "duplicate {key}: it is already set on line {prev} (hint: keep only one {key} line)"
            )),
            None => Ok(()),
        }
    }

    fn agent(&mut self) -> &mut AgentConfig {
        self.af
            .manifest
            .agent
            .get_or_insert_with(AgentConfig::default)
    }

    fn listen(&mut self) -> &mut ListenPolicy {
        self.af
            .manifest
            .listen
            .get_or_insert_with(ListenPolicy::default)
    }

    fn directive(&mut self, line: usize, body: &str) -> Result<(), AgentfileError> {
        let (word, rest) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
        let rest = rest.trim();
        let upper = word.to_ascii_uppercase();
        if let Some((_, why)) = REFUSED.iter().find(|(d, _)| *d == upper) {
            return Err(AgentfileError::new(line, *why));
        }
        let Some(&(key, what, example)) = DIRECTIVES.iter().find(|(d, _, _)| *d == upper) else {
            let message = match nearest_directive(word) {
                Some(d) => format!("unknown directive `{word}` (did you mean `{d}`?)"),
                None => {
                    let all: Vec<&str> = DIRECTIVES.iter().map(|(d, _, _)| *d).collect();
                    let all = all.join(", ");
                    format!("unknown directive `{word}` (hint: known directives are {all})")
                }
            };
            return Err(AgentfileError::new(line, message));
        };
        let result = if rest.is_empty() {
            Err(format!("{key} expects {what} (hint: `{example}`)"))
        } else {
            self.apply(key, line, rest)
        };
        result.map_err(|m| AgentfileError::new(line, m))
    }

    /// `SECRET NAME…` and `SECRET NAME… TO tool1,tool2`.
    fn secret(&mut self, line: usize, args: &[String]) -> Result<(), String> {
        let (names, tools) = secret::parse(args)?;
        for n in names {
            if !self.secret_lines.contains_key(&n) {
                self.secret_lines.insert(n.clone(), line);
                self.af.manifest.secrets.push(n.clone());
            }
            for t in &tools {
                let scoped = self.af.manifest.secret_tools.entry(n.clone()).or_default();
                if !scoped.contains(t) {
                    scoped.push(t.clone());
                }
                self.secret_to_lines.push((t.clone(), line));
            }
        }
        Ok(())
    }

    fn apply(&mut self, key: &'static str, line: usize, rest: &str) -> Result<(), String> {
        if SINGLE.contains(&key) {
            self.once(key, line)?;
        }
        match key {
            "COMMAND" => return parse_command(rest).map(|c| self.af.manifest.command = c),
            "VERSION" | "IDENTITY" | "SOUL" | "PROMPT" | "SCHEDULE" => {
                return self.free_text(key, line, rest);
            }
            "AGENTS" => {
                self.agents = Some((line, rest.to_string()));
                return Ok(());
            }
            _ => {}
        }
        if let Some(doc) = upstream::document(key, line, rest) {
            self.af.documents.push(doc?);
            return Ok(());
        }
        let args = split_args(rest)?;
        let one = || match args.as_slice() {
            [a] => Ok(a.clone()),
            _ => Err(expected(key, rest)),
        };
        match key {
            "FROM" if args.len() == 2 && args[0].eq_ignore_ascii_case("image") => {
                let image = isolation::parse_image_ref(key, rest, &args)?;
                self.af.manifest.courier = Courier::Image;
                self.af.manifest.image = Some(image);
            }
            "FROM" => match one()?.to_ascii_lowercase().as_str() {
                "process" => self.af.manifest.courier = Courier::Process,
                "noop" => self.af.manifest.courier = Courier::Noop,
                "workflow" => self.af.manifest.courier = Courier::Workflow,
                c if is_native_courier(c) => {
                    self.from_line = line;
                    self.af.manifest.courier = Courier::Agent;
                }
                // A native agent whose loop is a WebAssembly component.
                c if crate::component::is_wasm_courier(c) => {
                    self.from_line = line;
                    self.af.manifest.courier = Courier::Agent;
                    self.af.manifest.component = Some(Default::default());
                }
                c => {
                    return Err(format!(
                        "unknown courier `{c}` (hint: known couriers: {COURIERS})"
                    ));
                }
            },
            "NAME" => self.af.manifest.name = check_name(one()?)?,
            "ENTRYPOINT" => {
                self.af.entrypoint_line = Some(line);
                self.af.manifest.entrypoint = match rest.to_ascii_lowercase().as_str() {
                    "job" => Operation::Job,
                    "heartbeat" => Operation::Heartbeat,
                    "chat" => Operation::Chat,
                    _ => {
                        return Err(format!(
                            "ENTRYPOINT expects `job`, `heartbeat` or `chat`, got `{rest}` (hint: the program to run goes in COMMAND)"
                        ));
                    }
                }
            }
            "LABEL" => {
                for a in &args {
                    let kv = a.split_once('=').filter(|(k, _)| !k.is_empty());
                    let (k, v) = kv.ok_or_else(|| expected(key, a))?;
                    self.af.manifest.labels.insert(k.to_string(), v.to_string());
                }
            }
            "ENV" => self.env(line, rest, &args)?,
            "SECRET" => self.secret(line, &args)?,
            "ENV_PASSTHROUGH" => {
                env_passthrough::parse(&args, &mut self.af.manifest.env_passthrough)?
            }
            "COPY" => self.af.copies.push(parse_copy(&args, line, rest)?),
            "ADD" => {
                if let Some(src) = args.iter().find(|a| a.contains("://")) {
                    return Err(format!(
                        "ADD `{src}`: fetching remote sources at build is not supported (hint: download it into the build context and `COPY` it, so the parcel's digest covers it)"
                    ));
                }
                self.af.copies.push(parse_copy(&args, line, rest)?);
            }
            "COMPONENT" => {
                let [file] = args.as_slice() else {
                    return Err(expected(key, rest));
                };
                let src = lex::norm_rel(file).map_err(|p| {
                    format!("COMPONENT `{file}` {p} (hint: the component must be inside the directory that holds the Agentfile)")
                })?;
                let copy = crate::component::parse(self.af.manifest.component.as_mut(), src, line)?;
                self.af.copies.push(copy);
            }
            "MOUNT" => {
                let key = upstream::mount(&mut self.af.manifest.mounts, rest, &args)?;
                self.once(key, line)?;
            }
            "VISIBILITY" | "ROUTING" | "FRAMEWORK" | "COMPACTION" => {
                upstream::advisory(&mut self.af.manifest.advisory, key, rest, &args)?;
            }
            "SKILL" => {
                for a in &args {
                    self.skill(a, line)?;
                }
            }
            "TIMEOUT" => self.timeout(line, rest, &args)?,
            "RETRY" => self.af.manifest.retry = Some(parse_retry(&args, rest)?),
            "LIMIT" => self.limit(line, rest, &args)?,
            "REQUIRES" => {
                let [name, url] = args.as_slice() else {
                    return Err(expected(key, rest));
                };
                let name = env_name(name, "REQUIRES")?;
                if let Some(prev) = self.requires_lines.insert(name.clone(), line) {
                    return Err(format!(
                        "REQUIRES {name} is already declared on line {prev} (hint: keep only one)"
                    ));
                }
                check_url(url)?;
                let url = url.clone();
                self.af.manifest.requires.push(Requirement { name, url });
            }
            "LISTEN" => {
                let addr = one()?;
                let port = addr.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
                if !matches!(port, Some(Ok(_))) {
                    return Err(expected(key, &addr));
                }
                self.listen().addr = Some(addr);
            }
            "LISTEN_PATH" => {
                let path = one()?;
                if !path.starts_with('/') {
                    return Err(format!(
                        "LISTEN_PATH must start with `/`, got `{path}` (hint: `LISTEN_PATH /{path}`)"
                    ));
                }
                self.listen().path = Some(path);
            }
            "LISTEN_METHOD" => {
                for m in args
                    .iter()
                    .flat_map(|a| a.split(','))
                    .filter(|m| !m.is_empty())
                {
                    if !m.chars().all(|c| c.is_ascii_alphabetic()) {
                        return Err(expected(key, m));
                    }
                    let m = m.to_ascii_uppercase();
                    if !HTTP_METHODS.contains(&m.as_str()) {
                        return Err(format!(
                            "LISTEN_METHOD: unknown HTTP method `{m}` (hint: one of {})",
                            HTTP_METHODS.join(", ")
                        ));
                    }
                    let l = self.listen();
                    if !l.methods.contains(&m) {
                        l.methods.push(m);
                    }
                }
            }
            "LISTEN_SECRET" => {
                let s = env_name(&one()?, "secret")?;
                self.listen_secret_line = line;
                self.listen().secret = Some(s);
            }
            "LISTEN_SIGNATURE" => {
                self.listen_signature_line = line;
                self.listen().signature = Some(listen::parse_signature(&args)?);
            }
            "LISTEN_MAX_BODY_BYTES" => self.listen().max_body_bytes = Some(positive(&one()?, key)?),
            "MODEL" | "FALLBACK" => {
                let m = model::parse_model(key, rest, &args)?;
                self.agent_lines.push((line, key));
                let agent = self.agent();
                match key {
                    "MODEL" => agent.models.insert(0, m),
                    _ => agent.models.push(m),
                }
            }
            "TOOL" => {
                let decls = tool::parse_tool(line, &args)?;
                self.agent_lines.push((line, "TOOL"));
                if decls.iter().any(|d| {
                    d.kind == crate::tool::ToolKind::Builtin && d.name.starts_with("memory_")
                }) {
                    self.memory_tool_line.get_or_insert(line);
                }
                for d in &decls {
                    // A LOCAL tool's program goes into the parcel with it.
                    if let crate::tool::ToolKind::Local { program, .. } = &d.kind
                        && !self.af.copies.iter().any(|c| c.src == *program)
                    {
                        self.af.copies.push(CopySpec {
                            src: program.clone(),
                            dest: program.clone(),
                            dest_is_dir: false,
                            line,
                        });
                    }
                }
                self.agent().tools.extend(decls);
            }
            "REASONING" => {
                self.agent_lines.push((line, "REASONING"));
                self.agent().reasoning = Some(model::parse_reasoning(rest, &args)?);
            }
            "PRICE" => {
                let p = model::parse_price(rest, &args)?;
                let prices = &mut self.agent().prices;
                prices.retain(|q| q.model != p.model);
                prices.push(p);
            }
            "LISTEN_MAX_HEADER_BYTES" => {
                self.listen().max_header_bytes = Some(positive(&one()?, key)?);
            }
            "RESOURCES" => {
                isolation::parse_resources(&mut self.af.manifest.resources, rest, &args)?;
            }
            "NETWORK" => {
                upstream::refuse_network(&args)?;
                self.network_line = line;
                self.af.manifest.network = Some(isolation::parse_network(rest, &args)?);
            }
            "TOOL_SANDBOX" => {
                self.agent_lines.push((line, "TOOL_SANDBOX"));
                self.af.manifest.tool_sandbox = Some(isolation::parse_image_ref(key, rest, &args)?);
            }
            "EVAL" => {
                for (copy, path) in eval::parse_eval(&args, line)? {
                    self.af.copies.push(copy);
                    self.af.manifest.evals.push(path);
                }
            }
            k if workflow::NAMES.contains(&k) => self.workflow.directive(k, line, rest, &args)?,
            "CONCURRENCY" => self.af.manifest.concurrency = Some(limits::parse_concurrency(&args)?),
            "RATE_LIMIT" => {
                self.agent_lines.push((line, "RATE_LIMIT"));
                let limit = limits::parse_rate_limit(&args)?;
                let limits = &mut self.agent().rate_limits;
                if limits.iter().any(|l| l.bucket() == limit.bucket()) {
                    return Err(format!(
                        "a RATE_LIMIT for {} {} is already set (hint: keep one line per model or provider)",
                        limit.scope.as_str(),
                        limit.name
                    ));
                }
                limits.push(limit);
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
            "VERSION" => self.af.manifest.version = Some(src.text),
            "IDENTITY" => self.af.identity = Some(src),
            "SOUL" => self.af.soul = Some(src),
            "PROMPT" => self.af.prompts.push(src),
            _ => {
                crate::cron::parse_cron(&src.text)?;
                self.af.manifest.schedules.push(src.text)
            }
        }
        Ok(())
    }

    fn env(&mut self, line: usize, rest: &str, args: &[String]) -> Result<(), String> {
        let first_raw = rest.split_whitespace().next().unwrap_or_default();
        let pairs: Vec<(String, String)> = if first_raw.contains('=') {
            let pair = |a: &String| {
                let (k, v) = a.split_once('=').ok_or_else(|| {
                    format!(
                        "ENV expects KEY=value pairs, got `{a}` (hint: `ENV A=1 B=2`, or one `ENV KEY value` per line)"
                    )
                })?;
                Ok::<_, String>((k.to_string(), v.to_string()))
            };
            args.iter().map(pair).collect::<Result<_, _>>()?
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
            self.env_lines.insert(k.clone(), line);
            self.af.manifest.env.insert(k, v);
        }
        Ok(())
    }

    fn skill(&mut self, arg: &str, line: usize) -> Result<(), String> {
        let path = norm_rel(arg).map_err(|p| {
            format!("SKILL file `{arg}` {p} (hint: name a file inside the directory that holds the Agentfile)")
        })?;
        let stem = Path::new(&path).file_stem().and_then(|s| s.to_str());
        let name = stem.unwrap_or_default().to_string();
        if name.is_empty() {
            return Err(expected("SKILL", arg));
        }
        if let Some(prev) = self.af.skills.iter().find(|s| s.name == name) {
            return Err(format!(
                "SKILL `{name}` is already defined on line {} (hint: skills are named after their file; rename one of the files)",
                prev.line
            ));
        }
        self.af.skills.push(SkillSpec { path, name, line });
        Ok(())
    }

    fn finish(mut self, last_line: usize) -> Result<Agentfile, AgentfileError> {
        if let Some((line, rest)) = self.agents.take() {
            if self.af.manifest.courier == Courier::Workflow {
                let args = split_args(&rest).map_err(|m| AgentfileError::new(line, m))?;
                self.workflow
                    .directive("AGENTS", line, &rest, &args)
                    .map_err(|m| AgentfileError::new(line, m))?;
            } else {
                // Upstream Dispatch's meaning: a file of operating procedures.
                let (text, quoted) = unquote(&rest);
                let kind = crate::parcel::DocumentKind::Agents;
                self.af
                    .documents
                    .push((kind, TextSource { text, quoted, line }));
            }
        }
        self.af.documents.sort_by_key(|(_, src)| src.line);
        let mut af = self.af;
        if af.manifest.courier == Courier::Workflow {
            let (wf, lines) = self.workflow.finish(&af.manifest, last_line)?;
            af.manifest.workflow = Some(wf);
            af.member_lines = lines;
        } else if let Some((line, what)) = self.workflow.first_line {
            let hint = "(hint: `FROM workflow` makes a parcel that coordinates other agents)";
            return Err(AgentfileError::new(
                line,
                format!("{what} is for workflows {hint}"),
            ));
        }
        let m = &af.manifest;
        let missing = |example: &str| {
            let d = example.split(' ').next().unwrap_or_default();
            let message = format!("missing {d} (hint: add a line such as `{example}`)");
            Err(AgentfileError::new(last_line, message))
        };
        if m.name.is_empty() {
            return missing("NAME my-agent");
        }
        if m.courier == Courier::Agent {
            checks::check_agent(m, self.from_line, &self.agent_lines)?;
        } else if let Some((line, what)) = self.agent_lines.first() {
            return Err(AgentfileError::new(
                *line,
                format!(
                    "{what} is for native agents (hint: add `FROM agent`, which runs the model loop inside Dispatch)"
                ),
            ));
        }
        // The noop and agent couriers start no program, so they need no COMMAND.
        if m.command.is_empty() && matches!(m.courier, Courier::Process | Courier::Image) {
            return missing("COMMAND sh agent.sh");
        }
        if m.network.is_some() && m.courier != Courier::Image && m.tool_sandbox.is_none() {
            return Err(AgentfileError::new(
                self.network_line,
                "NETWORK applies to containers (hint: use it with `FROM image <ref>`, or with `TOOL_SANDBOX image <ref>` for a native agent's tools)",
            ));
        }
        upstream::check(&af, self.memory_tool_line)?;
        if let Some(agent) = &af.manifest.agent {
            hosted::check(agent)?;
        }
        if af
            .manifest
            .component
            .as_ref()
            .is_some_and(|c| c.path.is_empty())
        {
            return Err(AgentfileError::new(
                self.from_line,
                "FROM dispatch/wasm needs a COMPONENT (hint: `COMPONENT components/agent.wasm`, a WebAssembly component built against dispatch:courier@0.0.1)",
            ));
        }
        let m = &af.manifest;
        listen::check_secrets(m, self.listen_secret_line, self.listen_signature_line)?;
        secret::check_scopes(m, &self.secret_to_lines)?;
        for (secret, secret_line) in &self.secret_lines {
            if let Some(env_line) = self.env_lines.get(secret) {
                return Err(AgentfileError::new(
                    (*env_line).max(*secret_line),
                    format!(
                        "`{secret}` is set by ENV on line {env_line} and declared as SECRET on line {secret_line} (hint: never write a secret's value in the Agentfile; remove the ENV)"
                    ),
                ));
            }
        }
        Ok(af)
    }
}

/// `agent`, `native`, and upstream Dispatch's `dispatch/native[:tag]`.
fn is_native_courier(c: &str) -> bool {
    let image = c.split_once(':').map_or(c, |(name, _tag)| name);
    matches!(c, "agent" | "native") || image == "dispatch/native"
}

#[cfg(test)]
#[path = "agentfile_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "agentfile_upstream_tests.rs"]
mod upstream_tests;

#[cfg(test)]
#[path = "agentfile_fuzz_tests.rs"]
mod fuzz_tests;
