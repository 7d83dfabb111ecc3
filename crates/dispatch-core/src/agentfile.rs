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
//! Every directive is an entry of the registry ([`directives`]): its shape,
//! help, example, parser function (in `handlers`) and upstream meaning. The
//! parser looks each line's directive up there and calls its function.
//!
//! This module is pure: reading files named by COPY, SKILL, IDENTITY, SOUL and
//! PROMPT happens when the parcel is built (see `parcel::build`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::agent::AgentConfig;
use crate::parcel::{Courier, Instructions, Limits, ListenPolicy, Manifest, Timeouts};
use crate::state::Operation;

mod checks;
mod directive_table;
pub mod directives;
mod env_passthrough;
mod eval;
mod handlers;
mod hosted;
mod isolation;
mod lex;
mod limits;
mod listen;
mod model;
mod reference;
mod secret;
mod timeouts;
mod tool;
mod upstream;
mod upstream_forms;
mod workflow;

pub use directives::DIRECTIVES;
pub use reference::{compat_markdown, reference_markdown, splice_compat};

pub use eval::EVAL_DIR;
pub use model::check_base_url;

use directives::{Args, Parse};
use lex::{env_name, expected, logical_lines, nearest_directive, norm_rel, split_args, unquote};

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
    /// The first `NETWORK allow` line.
    egress_line: usize,
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
            egress: Vec::new(),
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
            egress_line: 0,
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

    /// One directive line: looked up in the registry, checked against its
    /// shape, and given to its parser function.
    fn directive(&mut self, line: usize, body: &str) -> Result<(), AgentfileError> {
        let (word, rest) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
        let rest = rest.trim();
        let Some(d) = directives::find(word) else {
            let message = match nearest_directive(word) {
                Some(d) => format!("unknown directive `{word}` (did you mean `{d}`?)"),
                None => {
                    let known = DIRECTIVES.iter().filter(|d| d.refused().is_none());
                    let all: Vec<&str> = known.map(|d| d.name).collect();
                    let all = all.join(", ");
                    format!("unknown directive `{word}` (hint: known directives are {all})")
                }
            };
            return Err(AgentfileError::new(line, message));
        };
        let handler = match d.parse {
            Parse::Refused(why) => return Err(AgentfileError::new(line, why)),
            Parse::With(_) if rest.is_empty() => {
                return Err(AgentfileError::new(line, d.usage()));
            }
            Parse::With(handler) => handler,
        };
        let apply = |p: &mut Self| {
            if d.once {
                p.once(d.name, line)?;
            }
            let args = match d.args {
                Args::Text => Vec::new(),
                Args::Words { .. } => split_args(rest)?,
            };
            if !d.args.fits(args.len()) {
                return Err(expected(d.name, rest));
            }
            let call = handlers::Call {
                key: d.name,
                line,
                rest,
                args: &args,
            };
            handler(p, &call)
        };
        apply(self).map_err(|m| AgentfileError::new(line, m))
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

    /// The text of a free-text directive (`VERSION`, `IDENTITY`, …): the rest
    /// of the line, one pair of surrounding quotes removed.
    fn free_text(key: &'static str, line: usize, rest: &str) -> Result<TextSource, String> {
        let (text, quoted) = unquote(rest);
        if text.trim().is_empty() {
            return Err(lex::usage(key));
        }
        Ok(TextSource { text, quoted, line })
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
                    .agents("AGENTS", line, &args)
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
        if let Some(why) = isolation::egress_refused(m) {
            return Err(AgentfileError::new(self.egress_line, why));
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
