//! One parser function per directive, named in the registry
//! ([`super::directives::DIRECTIVES`]), which is the only place that maps a
//! directive's name to its function. Each gets the line already checked
//! against the directive's [`Args`](super::directives::Args) shape, and its
//! once-only rule already applied.

use super::lex::{
    check_name, check_url, env_name, expected, parse_command, parse_copy, parse_retry, positive,
};
use super::{
    COURIERS, CopySpec, HTTP_METHODS, Parser, env_passthrough, eval, is_native_courier, isolation,
    limits, listen, model, tool, upstream,
};
use crate::parcel::{Courier, Requirement};
use crate::state::Operation;

/// One directive line as its parser function gets it.
pub(super) struct Call<'a> {
    /// The directive's name, upper case.
    pub key: &'static str,
    pub line: usize,
    /// Everything after the directive's name, trimmed (never empty).
    pub rest: &'a str,
    /// `rest` split into arguments (empty for [`Args::Text`](super::directives::Args::Text)).
    pub args: &'a [String],
}

impl Call<'_> {
    /// The one argument of a directive whose shape is exactly one.
    fn one(&self) -> &str {
        self.args.first().map(String::as_str).unwrap_or(self.rest)
    }
}

/// The signature of every directive's parser function.
pub(super) type Handler = fn(&mut Parser, &Call) -> Result<(), String>;

pub(super) fn from(p: &mut Parser, c: &Call) -> Result<(), String> {
    let m = &mut p.af.manifest;
    if c.args.len() == 2 && c.args[0].eq_ignore_ascii_case("image") {
        m.image = Some(isolation::parse_image_ref(c.key, c.rest, c.args)?);
        m.courier = Courier::Image;
        return Ok(());
    }
    let [courier] = c.args else {
        return Err(expected(c.key, c.rest));
    };
    match courier.to_ascii_lowercase().as_str() {
        "process" => m.courier = Courier::Process,
        "noop" => m.courier = Courier::Noop,
        "workflow" => m.courier = Courier::Workflow,
        c if is_native_courier(c) => m.courier = Courier::Agent,
        // A native agent whose loop is a WebAssembly component.
        c if crate::component::is_wasm_courier(c) => {
            m.courier = Courier::Agent;
            m.component = Some(Default::default());
        }
        c => {
            return Err(format!(
                "unknown courier `{c}` (hint: known couriers: {COURIERS})"
            ));
        }
    }
    if m.courier == Courier::Agent {
        p.from_line = c.line;
    }
    Ok(())
}

pub(super) fn name(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.af.manifest.name = check_name(c.one().to_string())?;
    Ok(())
}

pub(super) fn version(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.af.manifest.version = Some(Parser::free_text(c.key, c.line, c.rest)?.text);
    Ok(())
}

pub(super) fn identity(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.af.identity = Some(Parser::free_text(c.key, c.line, c.rest)?);
    Ok(())
}

pub(super) fn soul(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.af.soul = Some(Parser::free_text(c.key, c.line, c.rest)?);
    Ok(())
}

pub(super) fn prompt(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.af.prompts.push(Parser::free_text(c.key, c.line, c.rest)?);
    Ok(())
}

pub(super) fn schedule(p: &mut Parser, c: &Call) -> Result<(), String> {
    let src = Parser::free_text(c.key, c.line, c.rest)?;
    crate::cron::parse_cron(&src.text)?;
    p.af.manifest.schedules.push(src.text);
    Ok(())
}

pub(super) fn label(p: &mut Parser, c: &Call) -> Result<(), String> {
    for a in c.args {
        let kv = a.split_once('=').filter(|(k, _)| !k.is_empty());
        let (k, v) = kv.ok_or_else(|| expected(c.key, a))?;
        p.af.manifest.labels.insert(k.to_string(), v.to_string());
    }
    Ok(())
}

pub(super) fn entrypoint(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.af.entrypoint_line = Some(c.line);
    p.af.manifest.entrypoint = match c.rest.to_ascii_lowercase().as_str() {
        "job" => Operation::Job,
        "heartbeat" => Operation::Heartbeat,
        "chat" => Operation::Chat,
        _ => {
            return Err(format!(
                "ENTRYPOINT expects `job`, `heartbeat` or `chat`, got `{}` (hint: the program to run goes in COMMAND)",
                c.rest
            ));
        }
    };
    Ok(())
}

pub(super) fn command(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.af.manifest.command = parse_command(c.rest)?;
    Ok(())
}

pub(super) fn env(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.env(c.line, c.rest, c.args)
}

pub(super) fn secret(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.secret(c.line, c.args)
}

pub(super) fn env_passthrough(p: &mut Parser, c: &Call) -> Result<(), String> {
    env_passthrough::parse(c.args, &mut p.af.manifest.env_passthrough)
}

pub(super) fn copy(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.af.copies.push(parse_copy(c.args, c.line, c.rest)?);
    Ok(())
}

pub(super) fn add(p: &mut Parser, c: &Call) -> Result<(), String> {
    if let Some(src) = c.args.iter().find(|a| a.contains("://")) {
        return Err(format!(
            "ADD `{src}`: fetching remote sources at build is not supported (hint: download it into the build context and `COPY` it, so the parcel's digest covers it)"
        ));
    }
    copy(p, c)
}

pub(super) fn skill(p: &mut Parser, c: &Call) -> Result<(), String> {
    for a in c.args {
        p.skill(a, c.line)?;
    }
    Ok(())
}

pub(super) fn user(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.af.documents.push(upstream::user(c.line, c.rest)?);
    Ok(())
}

pub(super) fn tools(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.af.documents.push(upstream::tools(c.line, c.rest)?);
    Ok(())
}

pub(super) fn memory(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.af.documents.push(upstream::memory(c.line, c.rest)?);
    Ok(())
}

pub(super) fn heartbeat(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.af.documents.push(upstream::heartbeat(c.line, c.rest)?);
    Ok(())
}

/// `AGENTS` is read once the courier is known: a workflow's member order,
/// else upstream's file of operating procedures.
pub(super) fn agents(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.agents = Some((c.line, c.rest.to_string()));
    Ok(())
}

pub(super) fn mount(p: &mut Parser, c: &Call) -> Result<(), String> {
    let key = upstream::mount(&mut p.af.manifest.mounts, c.rest, c.args)?;
    p.once(key, c.line)
}

pub(super) fn visibility(p: &mut Parser, c: &Call) -> Result<(), String> {
    upstream::visibility(&mut p.af.manifest.advisory, c.rest, c.args)
}

pub(super) fn routing(p: &mut Parser, c: &Call) -> Result<(), String> {
    upstream::routing(&mut p.af.manifest.advisory, c.rest, c.args)
}

pub(super) fn framework(p: &mut Parser, c: &Call) -> Result<(), String> {
    upstream::framework(&mut p.af.manifest.advisory, c.rest, c.args)
}

pub(super) fn compaction(p: &mut Parser, c: &Call) -> Result<(), String> {
    upstream::compaction(&mut p.af.manifest.advisory, c.args)
}

pub(super) fn component(p: &mut Parser, c: &Call) -> Result<(), String> {
    let file = c.one();
    let src = super::lex::norm_rel(file).map_err(|why| {
        format!("COMPONENT `{file}` {why} (hint: the component must be inside the directory that holds the Agentfile)")
    })?;
    let copy = crate::component::parse(p.af.manifest.component.as_mut(), src, c.line)?;
    p.af.copies.push(copy);
    Ok(())
}

pub(super) fn timeout(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.timeout(c.line, c.rest, c.args)
}

pub(super) fn retry(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.af.manifest.retry = Some(parse_retry(c.args, c.rest)?);
    Ok(())
}

pub(super) fn limit(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.limit(c.line, c.rest, c.args)
}

/// `ON BUDGET pause|fail`.
pub(super) fn on(p: &mut Parser, c: &Call) -> Result<(), String> {
    let pause = match (c.args[0].to_ascii_uppercase().as_str(), c.args[1].as_str()) {
        ("BUDGET", "pause") => true,
        ("BUDGET", "fail") => false,
        ("BUDGET", other) => {
            return Err(format!(
                "ON BUDGET takes `pause` or `fail`, not `{other}` (hint: ON BUDGET pause)"
            ));
        }
        (other, _) => {
            return Err(format!(
                "ON takes BUDGET, not `{other}` (hint: ON BUDGET pause)"
            ));
        }
    };
    p.agent_lines.push((c.line, "ON BUDGET"));
    p.agent().pause_on_budget = pause;
    Ok(())
}

pub(super) fn tool(p: &mut Parser, c: &Call) -> Result<(), String> {
    let decls = tool::parse_tool(c.line, c.args)?;
    p.agent_lines.push((c.line, "TOOL"));
    if decls
        .iter()
        .any(|d| d.kind == crate::tool::ToolKind::Builtin && d.name.starts_with("memory_"))
    {
        p.memory_tool_line.get_or_insert(c.line);
    }
    for d in &decls {
        // A LOCAL tool's program goes into the parcel with it.
        if let crate::tool::ToolKind::Local { program, .. } = &d.kind
            && !p.af.copies.iter().any(|copy| copy.src == *program)
        {
            p.af.copies.push(CopySpec {
                src: program.clone(),
                dest: program.clone(),
                dest_is_dir: false,
                line: c.line,
            });
        }
    }
    p.agent().tools.extend(decls);
    Ok(())
}

/// `MODEL`: the first model.
pub(super) fn model(p: &mut Parser, c: &Call) -> Result<(), String> {
    let m = model::parse_model(c.key, c.rest, c.args)?;
    p.agent_lines.push((c.line, "MODEL"));
    p.agent().models.insert(0, m);
    Ok(())
}

/// `FALLBACK`: the next models, in order.
pub(super) fn fallback(p: &mut Parser, c: &Call) -> Result<(), String> {
    let m = model::parse_model(c.key, c.rest, c.args)?;
    p.agent_lines.push((c.line, "FALLBACK"));
    p.agent().models.push(m);
    Ok(())
}

pub(super) fn reasoning(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.agent_lines.push((c.line, "REASONING"));
    p.agent().reasoning = Some(model::parse_reasoning(c.rest, c.args)?);
    Ok(())
}

pub(super) fn price(p: &mut Parser, c: &Call) -> Result<(), String> {
    let price = model::parse_price(c.rest, c.args)?;
    let prices = &mut p.agent().prices;
    prices.retain(|q| q.model != price.model);
    prices.push(price);
    Ok(())
}

pub(super) fn requires(p: &mut Parser, c: &Call) -> Result<(), String> {
    let [name, url] = c.args else {
        return Err(expected(c.key, c.rest));
    };
    let name = env_name(name, "REQUIRES")?;
    if let Some(prev) = p.requires_lines.insert(name.clone(), c.line) {
        return Err(format!(
            "REQUIRES {name} is already declared on line {prev} (hint: keep only one)"
        ));
    }
    check_url(url)?;
    let url = url.clone();
    p.af.manifest.requires.push(Requirement { name, url });
    Ok(())
}

pub(super) fn listen(p: &mut Parser, c: &Call) -> Result<(), String> {
    let addr = c.one();
    let port = addr.rsplit_once(':').map(|(_, port)| port.parse::<u16>());
    if !matches!(port, Some(Ok(_))) {
        return Err(expected(c.key, addr));
    }
    p.listen().addr = Some(addr.to_string());
    Ok(())
}

pub(super) fn listen_path(p: &mut Parser, c: &Call) -> Result<(), String> {
    let path = c.one();
    if !path.starts_with('/') {
        return Err(format!(
            "LISTEN_PATH must start with `/`, got `{path}` (hint: `LISTEN_PATH /{path}`)"
        ));
    }
    p.listen().path = Some(path.to_string());
    Ok(())
}

pub(super) fn listen_method(p: &mut Parser, c: &Call) -> Result<(), String> {
    let methods = c.args.iter().flat_map(|a| a.split(','));
    for m in methods.filter(|m| !m.is_empty()) {
        if !m.chars().all(|ch| ch.is_ascii_alphabetic()) {
            return Err(expected(c.key, m));
        }
        let m = m.to_ascii_uppercase();
        if !HTTP_METHODS.contains(&m.as_str()) {
            return Err(format!(
                "LISTEN_METHOD: unknown HTTP method `{m}` (hint: one of {})",
                HTTP_METHODS.join(", ")
            ));
        }
        let l = p.listen();
        if !l.methods.contains(&m) {
            l.methods.push(m);
        }
    }
    Ok(())
}

pub(super) fn listen_secret(p: &mut Parser, c: &Call) -> Result<(), String> {
    let secret = env_name(c.one(), "secret")?;
    p.listen_secret_line = c.line;
    p.listen().secret = Some(secret);
    Ok(())
}

pub(super) fn listen_signature(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.listen_signature_line = c.line;
    p.listen().signature = Some(listen::parse_signature(c.args)?);
    Ok(())
}

pub(super) fn listen_max_body_bytes(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.listen().max_body_bytes = Some(positive(c.one(), c.key)?);
    Ok(())
}

pub(super) fn listen_max_header_bytes(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.listen().max_header_bytes = Some(positive(c.one(), c.key)?);
    Ok(())
}

pub(super) fn resources(p: &mut Parser, c: &Call) -> Result<(), String> {
    isolation::parse_resources(&mut p.af.manifest.resources, c.rest, c.args)
}

pub(super) fn network(p: &mut Parser, c: &Call) -> Result<(), String> {
    upstream::refuse_network(c.args)?;
    match isolation::parse_network(c.rest, c.args)? {
        isolation::NetworkLine::Container(net) => {
            p.once("NETWORK none|bridge|host", c.line)?;
            p.network_line = c.line;
            p.af.manifest.network = Some(net);
        }
        isolation::NetworkLine::Allow(host) => {
            if p.af.manifest.egress.is_empty() {
                p.egress_line = c.line;
            }
            if p.af.manifest.egress.contains(&host) {
                return Err(format!(
                    "NETWORK allow {host} is given twice (hint: keep one)"
                ));
            }
            p.af.manifest.egress.push(host);
        }
    }
    Ok(())
}

pub(super) fn tool_sandbox(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.agent_lines.push((c.line, "TOOL_SANDBOX"));
    p.af.manifest.tool_sandbox = Some(isolation::parse_image_ref(c.key, c.rest, c.args)?);
    Ok(())
}

pub(super) fn eval(p: &mut Parser, c: &Call) -> Result<(), String> {
    for (copy, path) in eval::parse_eval(c.args, c.line)? {
        p.af.copies.push(copy);
        p.af.manifest.evals.push(path);
    }
    Ok(())
}

pub(super) fn agent(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.workflow.agent(c.key, c.line, c.args)
}

pub(super) fn coordinator(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.workflow.coordinator(c.key, c.line, c.one())
}

pub(super) fn route(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.workflow.route(c.key, c.line, c.rest)
}

pub(super) fn aggregate(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.workflow.aggregate(c.key, c.line, c.one())
}

pub(super) fn join(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.workflow.join(c.key, c.line, c.args);
    Ok(())
}

pub(super) fn concurrency(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.af.manifest.concurrency = Some(limits::parse_concurrency(c.args)?);
    Ok(())
}

pub(super) fn rate_limit(p: &mut Parser, c: &Call) -> Result<(), String> {
    p.agent_lines.push((c.line, "RATE_LIMIT"));
    let limit = limits::parse_rate_limit(c.args)?;
    let limits = &mut p.agent().rate_limits;
    if limits.iter().any(|l| l.bucket() == limit.bucket()) {
        return Err(format!(
            "a RATE_LIMIT for {} {} is already set (hint: keep one line per model or provider)",
            limit.scope.as_str(),
            limit.name
        ));
    }
    limits.push(limit);
    Ok(())
}
