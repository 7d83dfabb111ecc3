//! `dispatch reference agentfile [DIRECTIVE]`: the Agentfile directive
//! registry for people and scripts. Without a directive, every directive
//! and what it expects; with one, its shape, example and upstream meaning.
//! The directive's names are the argument's possible values, so the scripts
//! of `dispatch completion bash|zsh|fish` complete them.

use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand};
use dispatch_core::agentfile::DIRECTIVES;
use dispatch_core::agentfile::directives::{Args as Shape, Directive, Upstream, find};
use serde_json::{Value, json};

use crate::cli::Format;
use crate::error::{CliError, CliResult};
use crate::output::{print_columns, print_json};

#[derive(Debug, Args)]
pub struct ReferenceArgs {
    #[command(subcommand)]
    pub command: ReferenceCommand,
}

#[derive(Debug, Subcommand)]
pub enum ReferenceCommand {
    /// Agentfile directives: every one, or one with its arguments, example and upstream meaning.
    Agentfile {
        /// A directive (any case); your shell completes the names.
        #[arg(value_parser = directive_names(), ignore_case = true, hide_possible_values = true)]
        directive: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

/// The directives' names, as the argument's possible values (case-insensitive).
fn directive_names() -> PossibleValuesParser {
    let names = DIRECTIVES
        .iter()
        .map(|d| clap::builder::PossibleValue::new(d.name).help(d.expects));
    PossibleValuesParser::new(names)
}

pub fn reference(args: &ReferenceArgs) -> CliResult {
    let ReferenceCommand::Agentfile { directive, format } = &args.command;
    let Some(name) = directive else {
        if *format == Format::Json {
            print_json(&DIRECTIVES.iter().map(describe).collect::<Vec<_>>());
            return Ok(0);
        }
        let rows: Vec<Vec<String>> = DIRECTIVES
            .iter()
            .map(|d| {
                let expects = match d.refused() {
                    Some(_) => "(refused)".to_string(),
                    None => d.expects.replace('`', ""),
                };
                vec![d.name.to_string(), expects]
            })
            .collect();
        print_columns(&["DIRECTIVE", "EXPECTS"], &rows);
        return Ok(0);
    };
    let d = find(name).ok_or_else(|| {
        CliError::input(format!(
            "unknown directive `{name}` (hint: `dispatch reference agentfile` lists them)"
        ))
    })?;
    if *format == Format::Json {
        print_json(&describe(d));
    } else {
        // A closed pipe (`| head`) ends it quietly.
        let _ = std::io::Write::write_all(&mut std::io::stdout(), d.help().as_bytes());
    }
    Ok(0)
}

/// Lines for fish's completion script: clap_complete's fish script completes
/// no positional values, so the directives' names are added here.
pub fn fish_completions() -> String {
    let when =
        "__fish_dispatch_using_subcommand reference; and __fish_seen_subcommand_from agentfile";
    DIRECTIVES
        .iter()
        .map(|d| {
            let about = d
                .expects
                .replace('`', "")
                .replace('\\', "\\\\")
                .replace('\'', "\\'");
            format!(
                "complete -c dispatch -n \"{when}\" -f -a {} -d '{about}'\n",
                d.name
            )
        })
        .collect()
}

/// One directive as JSON: `name`, `args` (`text`, or `{min, max}`), `once`,
/// `expects`, `example`, `refused` (the reason, or null) and `upstream`
/// (`ours`, `same`, or its forms).
fn describe(d: &Directive) -> Value {
    let args = match d.args {
        Shape::Text => json!("text"),
        Shape::Words { min, max } => json!({"min": min, "max": max}),
    };
    let upstream = match &d.upstream {
        Upstream::Ours => json!("ours"),
        Upstream::AsOurs => json!("same"),
        Upstream::Forms(forms) => forms
            .iter()
            .map(|f| json!({"form": f.form, "upstream": f.upstream, "here": f.here}))
            .collect(),
    };
    json!({
        "name": d.name,
        "args": args,
        "once": d.once,
        "expects": d.expects,
        "example": d.example,
        "refused": d.refused(),
        "upstream": upstream,
    })
}
