//! `dispatch internal reference PAGE`: the book's reference pages
//! (`docs/reference/*.md`), generated from the code so they cannot drift.
//! A test compares each page with the file and says how to update it.

use std::fmt::Write as _;

use clap::{CommandFactory, ValueEnum};
use serde_json::Value;

use crate::cli::Cli;
use crate::error::{CliResult, EXIT_CODES};

/// A generated page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Page {
    /// Every command and flag (`docs/reference/cli.md`).
    Cli,
    /// Every Agentfile directive (`docs/reference/agentfile.md`).
    Agentfile,
    /// The table of `docs/agentfile-compat.md`: upstream Dispatch's directives here.
    AgentfileCompat,
    /// Every HTTP operation of `dispatch server` (`docs/reference/http-api.md`).
    HttpApi,
    /// Every environment variable (`docs/reference/environment.md`).
    Environment,
    /// Every exit code (`docs/reference/exit-codes.md`).
    ExitCodes,
    /// What a policy is given (`docs/reference/policy-inputs.md`).
    PolicyInputs,
}

impl Page {
    /// The page, as Markdown.
    pub fn markdown(self) -> String {
        match self {
            Page::Cli => cli_page(),
            Page::Agentfile => dispatch_core::agentfile::reference_markdown(),
            Page::AgentfileCompat => dispatch_core::agentfile::compat_markdown(),
            Page::HttpApi => http_api_page(&dispatch_server::api::openapi::spec()),
            Page::Environment => dispatch_core::environment::reference_markdown(),
            Page::ExitCodes => exit_codes_page(),
            Page::PolicyInputs => policy_inputs_page(),
        }
    }
}

/// Prints the page on stdout.
pub fn reference(page: Page) -> CliResult {
    let text = page.markdown();
    // A closed pipe (`| head`) ends it quietly.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    Ok(0)
}

fn generated(source: &str, page: &str) -> String {
    format!(
        "<!-- Generated from {source} by `dispatch internal reference {page}`; do not edit. -->\n"
    )
}

/// Help shows an environment variable's value when it is set: never here.
fn without_env_values(cmd: clap::Command) -> clap::Command {
    let cmd = cmd.mut_args(|a| a.hide_env_values(true));
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    names
        .iter()
        .fold(cmd, |c, name| c.mut_subcommand(name, without_env_values))
}

fn cli_page() -> String {
    let mut cmd = without_env_values(Cli::command().term_width(100));
    cmd.build();
    let mut out = String::from("# CLI reference\n\n");
    out.push_str(&generated(
        "the clap definitions in crates/dispatch-cli",
        "cli",
    ));
    out.push_str(
        "\nEvery command of `dispatch`, with its `--help`. Every command that takes a run \
         accepts any unique prefix of its id; data goes to stdout and everything else to stderr.\n\n",
    );
    let mut index = String::new();
    let mut pages = String::new();
    walk(&mut cmd, "dispatch", 0, &mut index, &mut pages);
    out.push_str(&index);
    out.push('\n');
    out.push_str(&pages);
    out
}

fn walk(cmd: &mut clap::Command, path: &str, depth: usize, index: &mut String, pages: &mut String) {
    let anchor = path.replace(' ', "-");
    let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    let _ = writeln!(
        index,
        "{}- [`{path}`](#{anchor}){}{}",
        "  ".repeat(depth),
        if about.is_empty() { "" } else { ": " },
        about
    );
    let help = cmd.render_long_help().to_string();
    let _ = write!(
        pages,
        "## `{path}`\n\n```text\n{}\n```\n\n",
        help.trim_end()
    );
    for sub in cmd.get_subcommands_mut() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let sub_path = format!("{path} {}", sub.get_name());
        walk(sub, &sub_path, depth + 1, index, pages);
    }
}

fn policy_inputs_page() -> String {
    let mut out = String::from("# Policy inputs\n\n");
    out.push_str(&generated(
        "crates/dispatch-policy/src/input.rs",
        "policy-inputs",
    ));
    out.push_str(
        "\nWhat a policy's `input` holds for each decision (see [policies](../policy.md)). \
         A policy that names any other input is refused when it is loaded.\n",
    );
    out.push_str(&dispatch_policy::input::reference_markdown());
    out
}

fn exit_codes_page() -> String {
    let mut out = String::from("# Exit codes\n\n");
    out.push_str(&generated("crates/dispatch-cli/src/error.rs", "exit-codes"));
    out.push_str("\n| code | meaning |\n|---|---|\n");
    for (code, meaning) in EXIT_CODES {
        let _ = writeln!(out, "| {code} | {meaning} |");
    }
    out
}

/// The operations of an OpenAPI document, as tables by tag.
fn http_api_page(doc: &Value) -> String {
    let mut out = String::from("# HTTP API operations\n\n");
    out.push_str(&generated(
        "the OpenAPI document of crates/dispatch-server",
        "http-api",
    ));
    out.push_str(
        "\nEvery operation of `dispatch server`, from the OpenAPI document it serves at \
         `GET /v1/openapi.json` (the [HTTP API guide](../guide/http-api.md) explains the \
         conventions, auth and error codes).\n",
    );
    let mut rows: Vec<(String, String)> = Vec::new();
    let paths = doc.get("paths").and_then(Value::as_object);
    for (path, item) in paths.into_iter().flatten() {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, op) in item {
            if !matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "patch" | "head" | "options"
            ) {
                continue;
            }
            let tag = op
                .pointer("/tags/0")
                .and_then(Value::as_str)
                .unwrap_or("other")
                .to_string();
            rows.push((tag, operation_row(path, method, op)));
        }
    }
    let mut tags: Vec<&String> = rows.iter().map(|(t, _)| t).collect();
    tags.sort();
    tags.dedup();
    for tag in tags {
        let _ = write!(
            out,
            "\n## {tag}\n\n| operation | summary | parameters | answers |\n|---|---|---|---|\n"
        );
        for (_, row) in rows.iter().filter(|(t, _)| t == tag) {
            out.push_str(row);
        }
    }
    out
}

fn operation_row(path: &str, method: &str, op: &Value) -> String {
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let summary = op
        .get("summary")
        .or_else(|| op.get("description"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let params: Vec<String> = op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p.get("name")?.as_str()?;
            let place = p.get("in").and_then(Value::as_str).unwrap_or("");
            let required = p.get("required").and_then(Value::as_bool) == Some(true);
            Some(format!(
                "`{name}` ({place}{})",
                if required { ", required" } else { "" }
            ))
        })
        .chain(op.get("requestBody").map(|b| {
            let required = b.get("required").and_then(Value::as_bool) == Some(true);
            format!("body{}", if required { " (required)" } else { "" })
        }))
        .collect();
    let answers: Vec<&str> = op
        .get("responses")
        .and_then(Value::as_object)
        .map(|r| r.keys().map(String::as_str).collect())
        .unwrap_or_default();
    format!(
        "| `{} {path}` | {} | {} | {} |\n",
        method.to_ascii_uppercase(),
        cell(summary.lines().next().unwrap_or("")),
        params.join(", "),
        answers.join(", ")
    )
}
