//! `TOOL <kind> …` lines (see [`crate::tool`]), and the tool limits
//! `LIMIT TOOL_CALLS <n>`, `LIMIT TOOL_OUTPUT <size>`.

use super::lex::{env_name, parse_u64};
use super::model::check_base_url;
use crate::tool::{
    A2aAuth, A2aDiscovery, ApprovalPolicy, BUILTINS, HOSTED_BUILTINS, Risk, SecretHeader, ToolDecl,
    ToolKind,
};

const USAGE: &str = "TOOL LOCAL <program> [AS name] [USING <command> [args…]] | TOOL HTTP <name> <METHOD> <url> | TOOL MCP <name> COMMAND \"…\" | URL <url> | TOOL A2A <name> URL <url> [DISCOVERY auto|card|direct] [AUTH bearer|header|basic …] [EXPECT_AGENT_NAME n] [EXPECT_CARD_SHA256 d] | TOOL BUILTIN <name>…, each optionally with SCHEMA <file> DESCRIPTION \"…\" TIMEOUT <duration> APPROVAL never|always|confirm|audit APPROVAL_TIMEOUT <duration> RISK low|medium|high";

/// The methods an HTTP tool may use.
const TOOL_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// The TOOL line's declarations (a BUILTIN line names several).
pub(super) fn parse_tool(line: usize, args: &[String]) -> Result<Vec<ToolDecl>, String> {
    let Some(kind) = args.first() else {
        return Err(format!("TOOL needs a kind (hint: {USAGE})"));
    };
    let rest = &args[1..];
    match kind.to_ascii_uppercase().as_str() {
        "BUILTIN" => builtins(line, rest),
        "LOCAL" => {
            let [program, options @ ..] = rest else {
                return Err(
                    "TOOL LOCAL needs the program's path in the parcel (hint: `TOOL LOCAL tools/lookup.sh AS lookup`)"
                        .into(),
                );
            };
            let program = program.trim_start_matches("./").to_string();
            let stem = program
                .rsplit('/')
                .next()
                .unwrap_or(&program)
                .split('.')
                .next()
                .unwrap_or_default()
                .to_string();
            let (using, options) = split_using(options)?;
            let mut decl = decl(line, stem, ToolKind::Local { program, using });
            options_into(&mut decl, &options, &["AS"])?;
            check_name(&decl.name)?;
            Ok(vec![decl])
        }
        "HTTP" => {
            let [name, method, url, options @ ..] = rest else {
                return Err(
                    "TOOL HTTP needs a name, a method and a URL (hint: `TOOL HTTP refund POST https://billing.internal/refunds`)".into(),
                );
            };
            check_name(name)?;
            let method = method.to_ascii_uppercase();
            if !TOOL_METHODS.contains(&method.as_str()) {
                return Err(format!(
                    "TOOL HTTP {name}: unknown method `{method}` (hint: one of {})",
                    TOOL_METHODS.join(", ")
                ));
            }
            let url = check_url(url)?;
            let kind = ToolKind::Http {
                method,
                url,
                headers: Vec::new(),
            };
            let mut decl = decl(line, name.clone(), kind);
            options_into(&mut decl, options, &["HEADER"])?;
            Ok(vec![decl])
        }
        "MCP" => {
            let [name, options @ ..] = rest else {
                return Err(
                    "TOOL MCP needs a server name (hint: `TOOL MCP files COMMAND \"mcp-server-files /data\"`)"
                        .into(),
                );
            };
            check_name(name)?;
            let kind = ToolKind::Mcp {
                command: None,
                url: None,
                headers: Vec::new(),
                allow: Vec::new(),
            };
            let mut decl = decl(line, name.clone(), kind);
            options_into(&mut decl, options, &["COMMAND", "URL", "HEADER", "ALLOW"])?;
            if let ToolKind::Mcp { command, url, .. } = &decl.kind {
                match (command, url) {
                    (Some(_), Some(_)) => {
                        return Err(format!("TOOL MCP {name}: give COMMAND or URL, not both"));
                    }
                    (None, None) => {
                        return Err(format!(
                            "TOOL MCP {name} needs COMMAND \"…\" (a server over stdio) or URL <url> (streamable HTTP)"
                        ));
                    }
                    _ => {}
                }
            }
            if decl.schema_file.is_some() {
                return Err(format!(
                    "TOOL MCP {name}: an MCP server describes its own tools' schemas; SCHEMA is not taken"
                ));
            }
            Ok(vec![decl])
        }
        "A2A" => a2a(line, rest),
        other => Err(format!(
            "TOOL: unknown kind `{other}` (hint: LOCAL, HTTP, MCP, A2A or BUILTIN)"
        )),
    }
}

/// `TOOL A2A <name> URL <url> …` (upstream Dispatch's clauses).
fn a2a(line: usize, rest: &[String]) -> Result<Vec<ToolDecl>, String> {
    let [name, options @ ..] = rest else {
        return Err(
            "TOOL A2A needs a name and URL <endpoint> (hint: `TOOL A2A planner URL https://planner.example.com`)"
                .into(),
        );
    };
    check_name(name)?;
    let (auth, options) = split_auth(name, options)?;
    let kind = ToolKind::A2a {
        url: String::new(),
        discovery: A2aDiscovery::Auto,
        auth,
        expect_agent_name: None,
        expect_card_sha256: None,
    };
    let mut decl = decl(line, name.clone(), kind);
    options_into(
        &mut decl,
        &options,
        &[
            "URL",
            "DISCOVERY",
            "EXPECT_AGENT_NAME",
            "EXPECT_CARD_SHA256",
        ],
    )?;
    if let ToolKind::A2a { url, discovery, .. } = &decl.kind {
        if url.is_empty() {
            return Err(format!(
                "TOOL A2A {name} needs URL <endpoint> (hint: `TOOL A2A {name} URL https://agent.example.com`)"
            ));
        }
        if let Some(why) = crate::tool::a2a_url_problem(url) {
            return Err(format!("TOOL A2A {name}: URL {why}"));
        }
        if let (
            A2aDiscovery::Direct,
            ToolKind::A2a {
                expect_agent_name,
                expect_card_sha256,
                ..
            },
        ) = (discovery, &decl.kind)
            && (expect_agent_name.is_some() || expect_card_sha256.is_some())
        {
            return Err(format!(
                "TOOL A2A {name}: DISCOVERY direct reads no agent card, so EXPECT_AGENT_NAME / EXPECT_CARD_SHA256 cannot be checked (hint: DISCOVERY card)"
            ));
        }
    }
    Ok(vec![decl])
}

/// Takes `AUTH bearer <SECRET>`, `AUTH header <Header> <SECRET>` or `AUTH
/// basic <USER_SECRET> <PASSWORD_SECRET>` out of an A2A tool's options.
fn split_auth(name: &str, options: &[String]) -> Result<(Option<A2aAuth>, Vec<String>), String> {
    let Some(at) = options.iter().position(|o| o.eq_ignore_ascii_case("AUTH")) else {
        return Ok((None, options.to_vec()));
    };
    let hint = "(hint: AUTH bearer <SECRET> | AUTH header <Header-Name> <SECRET> | AUTH basic <USER_SECRET> <PASSWORD_SECRET>)";
    let word = |i: usize| options.get(at + i).cloned();
    let scheme = word(1).unwrap_or_default().to_ascii_lowercase();
    let (auth, used) = match (scheme.as_str(), word(2), word(3)) {
        ("bearer", Some(secret), _) => (
            A2aAuth::Bearer {
                secret: env_name(&secret, "secret")?,
            },
            3,
        ),
        ("header", Some(header), Some(secret)) => (
            A2aAuth::Header {
                header,
                secret: env_name(&secret, "secret")?,
            },
            4,
        ),
        ("basic", Some(user), Some(password)) => (
            A2aAuth::Basic {
                user: env_name(&user, "secret")?,
                password: env_name(&password, "secret")?,
            },
            4,
        ),
        _ => {
            return Err(format!(
                "TOOL A2A {name}: AUTH {scheme} is incomplete or unknown {hint}"
            ));
        }
    };
    let mut rest = options[..at].to_vec();
    rest.extend_from_slice(&options[(at + used).min(options.len())..]);
    if rest.iter().any(|o| o.eq_ignore_ascii_case("AUTH")) {
        return Err(format!("TOOL A2A {name}: AUTH is given twice"));
    }
    Ok((Some(auth), rest))
}

/// The words that start a TOOL option (they end a `USING` command).
const OPTION_WORDS: [&str; 7] = [
    "AS",
    "SCHEMA",
    "DESCRIPTION",
    "TIMEOUT",
    "APPROVAL",
    "APPROVAL_TIMEOUT",
    "RISK",
];

/// Takes `USING <command> [args…]` out of a LOCAL tool's options: the
/// command runs the program (`USING python3 -u`), up to the next option word.
fn split_using(options: &[String]) -> Result<(Vec<String>, Vec<String>), String> {
    let Some(at) = options.iter().position(|o| o.eq_ignore_ascii_case("USING")) else {
        return Ok((Vec::new(), options.to_vec()));
    };
    let end = options[at + 1..]
        .iter()
        .position(|o| OPTION_WORDS.contains(&o.to_ascii_uppercase().as_str()))
        .map_or(options.len(), |i| at + 1 + i);
    let using = options[at + 1..end].to_vec();
    if using.is_empty() {
        return Err(
            "TOOL LOCAL: USING needs the command that runs the program (hint: `TOOL LOCAL tools/report.py AS report USING python3 -u`)"
                .into(),
        );
    }
    let mut rest = options[..at].to_vec();
    rest.extend_from_slice(&options[end..]);
    Ok((using, rest))
}

fn decl(line: usize, name: String, kind: ToolKind) -> ToolDecl {
    ToolDecl {
        name,
        kind,
        description: None,
        schema_file: None,
        schema: None,
        timeout_ms: None,
        approval: None,
        risk: None,
        approval_timeout_ms: None,
        line,
    }
}

fn builtins(line: usize, args: &[String]) -> Result<Vec<ToolDecl>, String> {
    let mut decls: Vec<ToolDecl> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let word = &args[i];
        let upper = word.to_ascii_uppercase();
        if matches!(
            upper.as_str(),
            "APPROVAL" | "RISK" | "TIMEOUT" | "APPROVAL_TIMEOUT" | "DESCRIPTION"
        ) {
            // Options after the names apply to every one of them.
            let mut shared = decl(line, String::new(), ToolKind::Builtin);
            options_into(&mut shared, &args[i..], &[])?;
            for d in &mut decls {
                d.approval = shared.approval.or(d.approval);
                d.risk = shared.risk.or(d.risk);
                d.timeout_ms = shared.timeout_ms.or(d.timeout_ms);
                d.approval_timeout_ms = shared.approval_timeout_ms.or(d.approval_timeout_ms);
                d.description = shared.description.clone().or(d.description.take());
            }
            break;
        }
        let name = word.to_ascii_lowercase();
        if !BUILTINS.contains(&name.as_str()) && !HOSTED_BUILTINS.contains(&name.as_str()) {
            return Err(format!(
                "TOOL BUILTIN: unknown built-in `{word}` (hint: {}, {})",
                BUILTINS.join(", "),
                HOSTED_BUILTINS.join(", ")
            ));
        }
        decls.push(decl(line, name, ToolKind::Builtin));
        i += 1;
    }
    if decls.is_empty() {
        return Err(format!(
            "TOOL BUILTIN needs the built-ins it enables (hint: {})",
            BUILTINS.join(" ")
        ));
    }
    Ok(decls)
}

/// Reads `KEY value` pairs into `decl`: the common ones and the kind's own
/// (`extra`).
fn options_into(decl: &mut ToolDecl, options: &[String], extra: &[&str]) -> Result<(), String> {
    let what = format!("TOOL {} {}", decl.kind.as_str().to_uppercase(), decl.name);
    let mut seen: Vec<String> = Vec::new();
    let mut i = 0;
    while i < options.len() {
        let key = options[i].to_ascii_uppercase();
        let Some(value) = options.get(i + 1) else {
            return Err(format!("{what}: {key} needs a value (hint: {USAGE})"));
        };
        let common = [
            "SCHEMA",
            "DESCRIPTION",
            "TIMEOUT",
            "APPROVAL",
            "APPROVAL_TIMEOUT",
            "RISK",
        ];
        if !common.contains(&key.as_str()) && !extra.contains(&key.as_str()) {
            return Err(format!(
                "{what}: unknown option `{}` (hint: {USAGE})",
                options[i]
            ));
        }
        if key != "HEADER" && seen.contains(&key) {
            return Err(format!("{what}: {key} is given twice"));
        }
        seen.push(key.clone());
        match key.as_str() {
            "AS" => {
                check_name(value)?;
                decl.name = value.clone();
            }
            "SCHEMA" => decl.schema_file = Some(value.trim_start_matches("./").to_string()),
            "DESCRIPTION" => decl.description = Some(value.clone()),
            "TIMEOUT" => {
                let ms = super::duration_ms(value).map_err(|e| format!("{what}: TIMEOUT {e}"))?;
                decl.timeout_ms = Some(ms);
            }
            "APPROVAL_TIMEOUT" => {
                let ms = super::duration_ms(value)
                    .map_err(|e| format!("{what}: APPROVAL_TIMEOUT {e}"))?;
                decl.approval_timeout_ms = Some(ms);
            }
            "APPROVAL" => {
                decl.approval = Some(ApprovalPolicy::parse(value).ok_or_else(|| {
                    format!("{what}: APPROVAL `{value}` (hint: never, always, confirm or audit)")
                })?);
            }
            "RISK" => {
                decl.risk = Some(Risk::parse(value).ok_or_else(|| {
                    format!("{what}: RISK `{value}` (hint: low, medium or high)")
                })?);
            }
            "HEADER" => {
                let Some((name, secret)) = value.split_once('=') else {
                    return Err(format!(
                        "{what}: HEADER `{value}` is not Name=SECRET (hint: `HEADER Authorization=API_TOKEN`; the value is read from that declared SECRET)"
                    ));
                };
                let header = SecretHeader {
                    name: name.to_string(),
                    secret: env_name(secret, "secret")?,
                };
                match &mut decl.kind {
                    ToolKind::Http { headers, .. } | ToolKind::Mcp { headers, .. } => {
                        headers.push(header);
                    }
                    _ => return Err(format!("{what}: HEADER is for HTTP and MCP tools")),
                }
            }
            "URL" | "DISCOVERY" | "EXPECT_AGENT_NAME" | "EXPECT_CARD_SHA256"
                if matches!(decl.kind, ToolKind::A2a { .. }) =>
            {
                let ToolKind::A2a {
                    url,
                    discovery,
                    expect_agent_name,
                    expect_card_sha256,
                    ..
                } = &mut decl.kind
                else {
                    unreachable!("matched above")
                };
                match key.as_str() {
                    "URL" => *url = value.clone(),
                    "DISCOVERY" => {
                        *discovery = A2aDiscovery::parse(value).ok_or_else(|| {
                            format!("{what}: DISCOVERY `{value}` (hint: auto, card or direct)")
                        })?;
                    }
                    "EXPECT_AGENT_NAME" => *expect_agent_name = Some(value.clone()),
                    _ => {
                        let d = value.to_ascii_lowercase();
                        if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                            return Err(format!(
                                "{what}: EXPECT_CARD_SHA256 `{value}` is not a SHA-256 (hint: 64 hex digits, e.g. from `curl -s <url>/.well-known/agent-card.json | sha256sum`)"
                            ));
                        }
                        *expect_card_sha256 = Some(d);
                    }
                }
            }
            "COMMAND" | "URL" | "ALLOW" => {
                let ToolKind::Mcp {
                    command,
                    url,
                    allow,
                    ..
                } = &mut decl.kind
                else {
                    return Err(format!("{what}: {key} is for MCP servers"));
                };
                match key.as_str() {
                    "COMMAND" if value.trim().is_empty() => {
                        return Err(format!("{what}: COMMAND is empty"));
                    }
                    "COMMAND" => *command = Some(value.clone()),
                    "URL" => *url = Some(check_url(value)?),
                    _ => {
                        *allow = value
                            .split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect();
                    }
                }
            }
            _ => unreachable!("every key accepted above is handled"),
        }
        i += 2;
    }
    Ok(())
}

/// A tool name as model APIs take it: 1–64 letters, digits, `_` or `-`.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid tool name (hint: 1 to 64 letters, digits, `_` or `-`, e.g. `lookup_order`)",
            crate::event::shorten(name, 80)
        ))
    }
}

fn check_url(value: &str) -> Result<String, String> {
    check_base_url(value).map_err(|e| e.replacen("BASE_URL", "URL", 1))
}

/// `LIMIT TOOL_CALLS <n>` / `LIMIT TOOL_OUTPUT <size>`: the key and the
/// number (calls, or bytes), or `None` when `kind` is neither.
pub(super) fn tool_limit(kind: &str, value: &str) -> Option<Result<(&'static str, u64), String>> {
    match kind {
        "TOOL_CALLS" => Some(
            parse_u64(value)
                .filter(|n| *n > 0)
                .map(|n| ("LIMIT TOOL_CALLS", n))
                .ok_or_else(|| {
                    format!("LIMIT TOOL_CALLS must be a whole number above zero, got `{value}`")
                }),
        ),
        "TOOL_OUTPUT" => Some(crate::units::parse_size(value).map(|n| ("LIMIT TOOL_OUTPUT", n)).map_err(
            |_| {
                format!(
                    "LIMIT TOOL_OUTPUT must be a size above zero like `64KB` or `1MB`, got `{value}`"
                )
            },
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn tool_output_sizes_read_as_every_other_size() {
        // One size parser: `1G` means the same here as in RESOURCES.
        let parse = |v| crate::units::parse_size(v).ok();
        assert_eq!(parse("64KB"), Some(65_536));
        assert_eq!(parse("1mb"), Some(1_048_576));
        assert_eq!(parse("1G"), Some(1 << 30));
        assert_eq!(parse("4096"), Some(4096));
        assert_eq!(parse("0"), None);
        assert_eq!(parse("lots"), None);
    }

    #[test]
    fn a_local_tool_is_named_after_its_program_unless_as_says() {
        let d = parse_tool(3, &args("LOCAL ./tools/lookup_order.sh SCHEMA s.json")).expect("ok");
        assert_eq!(d[0].name, "lookup_order");
        assert_eq!(d[0].schema_file.as_deref(), Some("s.json"));
        assert_eq!(
            d[0].kind,
            ToolKind::Local {
                program: "tools/lookup_order.sh".into(),
                using: Vec::new(),
            }
        );
        let d = parse_tool(3, &args("LOCAL tools/x.py AS find TIMEOUT 10s")).expect("ok");
        assert_eq!(
            (d[0].name.as_str(), d[0].timeout_ms),
            ("find", Some(10_000))
        );
    }

    #[test]
    fn bad_tool_lines_say_what_is_wrong() {
        for (line, needle) in [
            ("SHELL x", "unknown kind"),
            ("HTTP r FETCH http://x", "unknown method"),
            ("HTTP r POST notaurl", "not a URL"),
            ("HTTP r POST http://x HEADER Authorization", "Name=SECRET"),
            ("MCP files", "COMMAND"),
            ("MCP files URL http://x COMMAND y", "not both"),
            ("BUILTIN rm_rf", "unknown built-in"),
            ("LOCAL a.sh APPROVAL maybe", "APPROVAL"),
            ("LOCAL a.sh RISK extreme", "RISK"),
            ("LOCAL a.sh AS bad/name", "not a valid tool name"),
            ("LOCAL a.sh COLOR red", "unknown option"),
            ("A2A p", "needs URL"),
            ("A2A p URL http://planner.example.com", "not loopback"),
            ("A2A p URL https://u:p@planner.example.com", "credentials"),
            ("A2A p URL https://x DISCOVERY maybe", "DISCOVERY"),
            ("A2A p URL https://x AUTH bearer", "AUTH"),
            ("A2A p URL https://x AUTH oauth T", "AUTH"),
            ("A2A p URL https://x EXPECT_CARD_SHA256 abc", "SHA-256"),
            (
                "A2A p URL https://x DISCOVERY direct EXPECT_AGENT_NAME p",
                "DISCOVERY direct",
            ),
        ] {
            let e = parse_tool(1, &args(line)).expect_err(line);
            assert!(e.contains(needle), "{line}: {e}");
        }
    }

    #[test]
    fn an_a2a_line_takes_upstreams_clauses() {
        let d = parse_tool(
            4,
            &args(
                "A2A planner URL https://planner.example.com DISCOVERY card AUTH header X-Api-Key PLANNER_KEY EXPECT_AGENT_NAME planner-agent APPROVAL confirm",
            ),
        )
        .expect("ok");
        assert_eq!(d[0].name, "planner");
        assert_eq!(d[0].approval, Some(ApprovalPolicy::Confirm));
        assert_eq!(
            d[0].kind,
            ToolKind::A2a {
                url: "https://planner.example.com".into(),
                discovery: A2aDiscovery::Card,
                auth: Some(A2aAuth::Header {
                    header: "X-Api-Key".into(),
                    secret: "PLANNER_KEY".into(),
                }),
                expect_agent_name: Some("planner-agent".into()),
                expect_card_sha256: None,
            }
        );
        let d = parse_tool(1, &args("A2A dev URL http://127.0.0.1:9000 AUTH basic U P"))
            .expect("loopback http is fine");
        assert!(matches!(
            &d[0].kind,
            ToolKind::A2a {
                auth: Some(A2aAuth::Basic { .. }),
                discovery: A2aDiscovery::Auto,
                ..
            }
        ));
    }

    #[test]
    fn builtin_options_apply_to_every_name() {
        let d = parse_tool(1, &args("BUILTIN read_file write_file APPROVAL confirm")).expect("ok");
        assert_eq!(d.len(), 2);
        assert!(
            d.iter()
                .all(|t| t.approval == Some(ApprovalPolicy::Confirm))
        );
    }
}
