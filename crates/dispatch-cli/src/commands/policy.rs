//! `dispatch policy test FILE --input JSON`: what a policy decides for an
//! input, for policy authors (and their CI). The same loading and checks
//! as the gate in front of every run: a policy that does not load here
//! refuses every run there.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use dispatch_policy::{Decision, Policy, RunDecision, ToolDecision};
use serde_json::Value;

use crate::cli::Format;
use crate::error::{CliError, CliResult};
use crate::output::print_json;

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Load a policy and print its decision for one input (`input.action`: create_run or tool_call).
    Test {
        /// The policy file (Rego, `package dispatch`).
        file: PathBuf,
        /// The input document: JSON, `@FILE` or `-` (stdin); without it, the policy is only loaded and checked.
        #[arg(long, value_name = "JSON")]
        input: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

pub fn policy(args: &PolicyArgs) -> CliResult {
    match &args.command {
        PolicyCommand::Test {
            file,
            input,
            format,
        } => test(file, input.as_deref(), *format),
    }
}

fn test(file: &std::path::Path, input: Option<&str>, format: Format) -> CliResult {
    let policy = Policy::load(file).map_err(|e| CliError::input(e.to_string()))?;
    let Some(input) = input else {
        eprintln!("policy {}: loads and passes its checks", file.display());
        return Ok(0);
    };
    let input = read_input(input)?;
    let decision = policy
        .decide(&input)
        .map_err(|e| CliError::input(e.to_string()))?;
    if format == Format::Json {
        print_json(&serde_json::to_value(&decision).unwrap_or(Value::Null));
        return Ok(0);
    }
    println!("{}", describe(&decision));
    Ok(0)
}

fn read_input(text: &str) -> Result<Value, CliError> {
    let (what, text) = match text {
        "-" => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .map_err(|e| CliError::input(format!("--input -: cannot read stdin: {e}")))?;
            ("stdin".to_string(), s)
        }
        t if t.starts_with('@') => {
            let path = &t[1..];
            let s = std::fs::read_to_string(path)
                .map_err(|e| CliError::input(format!("--input {t}: cannot read {path}: {e}")))?;
            (path.to_string(), s)
        }
        t => ("--input".to_string(), t.to_string()),
    };
    serde_json::from_str(&text).map_err(|e| {
        CliError::input(format!(
            "{what} is not JSON: {e} (hint: --input '{{\"action\":\"tool_call\",\"tool\":\"refund\",\"arguments\":{{\"amount\":20}}}}')"
        ))
    })
}

fn describe(decision: &Decision) -> String {
    let modify = |m: &Option<dispatch_policy::Modify>| match m {
        Some(m) => format!(
            " (modify: {})",
            serde_json::to_string(m).unwrap_or_default()
        ),
        None => String::new(),
    };
    match decision {
        Decision::Run(RunDecision::Allow { modify: m }) => format!("allow{}", modify(m)),
        Decision::Run(RunDecision::Deny { reasons }) => format!("deny: {}", reasons.join("; ")),
        Decision::Run(RunDecision::Review { reasons, modify: m }) => {
            format!("review: {}{}", reasons.join("; "), modify(m))
        }
        Decision::Tool(ToolDecision::Allow) => "allow".to_string(),
        Decision::Tool(ToolDecision::Deny { reasons }) => format!("deny: {}", reasons.join("; ")),
        Decision::Tool(ToolDecision::RequireApproval { reasons }) => {
            format!("require_approval: {}", reasons.join("; "))
        }
        Decision::Tool(ToolDecision::AutoApprove { rules }) => {
            format!("auto_approve: {}", rules.join("; "))
        }
    }
}
