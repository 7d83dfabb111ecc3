//! `dispatch skill ls|inspect <parcel>`: the skills a parcel bundles (an
//! Agentfile directory, built first as `dispatch run` would, or a built
//! parcel by name or digest). Each skill: its name, description, the files
//! of its Agent Skills bundle, and the tools its `skill.toml` declares.

use clap::{Args, Subcommand};
use dispatch_core::parcel::{Parcel, Skill};
use dispatch_core::tool::{ToolDecl, ToolKind};
use dispatch_runtime::launch::resolve_parcel;
use serde_json::{Value, json};

use crate::cli::Format;
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};
use crate::output::{print_columns, print_json};

#[derive(Debug, Args)]
pub struct SkillArgs {
    #[command(subcommand)]
    pub command: SkillCommand,
}

#[derive(Debug, Subcommand)]
pub enum SkillCommand {
    /// List the skills a parcel bundles: name, description, files, tools.
    Ls {
        /// An Agentfile directory, or a built parcel's name or digest.
        parcel: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Show one skill: its description, files, tools and instructions.
    Inspect {
        /// An Agentfile directory, or a built parcel's name or digest.
        parcel: String,
        /// The skill's name (as `dispatch skill ls` shows it).
        name: String,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
}

pub fn skill(ctx: &Ctx, args: &SkillArgs) -> CliResult {
    match &args.command {
        SkillCommand::Ls { parcel, format } => {
            let p = resolve_parcel(&ctx.layout, parcel)?;
            let skills: Vec<Value> = p
                .manifest
                .instructions
                .skills
                .iter()
                .map(|s| describe(&p, s))
                .collect();
            if *format == Format::Json {
                print_json(
                    &json!({"parcel": p.manifest.name, "digest": p.digest, "skills": skills}),
                );
                return Ok(0);
            }
            if skills.is_empty() {
                eprintln!(
                    "{} bundles no skills (hint: `SKILL <dir>` in its Agentfile adds an Agent Skills bundle)",
                    p.manifest.name
                );
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = skills
                .iter()
                .map(|s| {
                    let names = |k: &str, field: &str| {
                        let list: Vec<&str> = s[k]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|v| v[field].as_str())
                            .collect();
                        match list.len() {
                            0 => "-".to_string(),
                            _ => list.join(","),
                        }
                    };
                    vec![
                        s["name"].as_str().unwrap_or("?").to_string(),
                        s["files"].as_array().map_or(0, Vec::len).to_string(),
                        names("tools", "name"),
                        dispatch_core::event::shorten(
                            &s["description"].as_str().unwrap_or("-").replace('\n', " "),
                            80,
                        ),
                    ]
                })
                .collect();
            print_columns(&["NAME", "FILES", "TOOLS", "DESCRIPTION"], &rows);
            Ok(0)
        }
        SkillCommand::Inspect {
            parcel,
            name,
            format,
        } => {
            let p = resolve_parcel(&ctx.layout, parcel)?;
            let skills = &p.manifest.instructions.skills;
            let Some(s) = skills.iter().find(|s| s.name == *name) else {
                let known: Vec<&str> = skills.iter().map(|s| s.name.as_str()).collect();
                let hint = match known.len() {
                    0 => "it bundles none".to_string(),
                    _ => format!("its skills are {}", known.join(", ")),
                };
                return Err(CliError::input(format!(
                    "{} has no skill named `{name}` (hint: {hint})",
                    p.manifest.name
                )));
            };
            let mut doc = describe(&p, s);
            doc["instructions"] = json!(s.content);
            if *format == Format::Json {
                print_json(&doc);
                return Ok(0);
            }
            print_human(&doc);
            Ok(0)
        }
    }
}

fn print_human(doc: &Value) {
    let text = |k: &str| doc[k].as_str().unwrap_or("-").to_string();
    println!("Skill:       {}", text("name"));
    println!("Description: {}", text("description"));
    println!("Directory:   {}", text("dir"));
    let files = doc["files"].as_array().cloned().unwrap_or_default();
    println!("Files:       {}", files.len());
    for f in &files {
        let x = if f["executable"] == true {
            " (executable)"
        } else {
            ""
        };
        println!(
            "  {}  {} bytes{x}",
            f["path"].as_str().unwrap_or("?"),
            f["size"]
        );
    }
    let tools = doc["tools"].as_array().cloned().unwrap_or_default();
    println!("Tools:       {}", tools.len());
    for t in &tools {
        let field = |k: &str| t[k].as_str().unwrap_or("-").to_string();
        println!(
            "  {}  {}  approval {}  risk {}  {}",
            field("name"),
            field("script"),
            field("approval"),
            field("risk"),
            field("description")
        );
    }
    println!("Instructions:\n{}", text("instructions").trim_end());
}

/// One skill of `p` as data: name, description, directory, files, tools.
fn describe(p: &Parcel, s: &Skill) -> Value {
    let files: Vec<Value> = match &s.dir {
        Some(dir) => {
            let prefix = format!("{}/", dir.trim_end_matches('/'));
            p.manifest
                .files
                .iter()
                .filter(|f| f.path.starts_with(&prefix))
                .map(|f| {
                    json!({"path": &f.path[prefix.len()..], "size": f.size,
                           "sha256": f.sha256, "executable": f.executable})
                })
                .collect()
        }
        None => Vec::new(),
    };
    let tools: Vec<Value> = match (&s.dir, p.manifest.agent.as_ref()) {
        (Some(dir), Some(agent)) => agent.tools.iter().filter_map(|t| tool_of(t, dir)).collect(),
        _ => Vec::new(),
    };
    json!({
        "name": s.name, "description": s.description, "dir": s.dir,
        "kind": if s.dir.is_some() { "bundle" } else { "file" },
        "files": files, "tools": tools,
    })
}

/// A LOCAL tool whose program is in the bundle at `dir` (its `skill.toml`'s).
fn tool_of(t: &ToolDecl, dir: &str) -> Option<Value> {
    let ToolKind::Local { program, .. } = &t.kind else {
        return None;
    };
    let script = program.strip_prefix(&format!("{}/", dir.trim_end_matches('/')))?;
    Some(json!({
        "name": t.name, "script": script, "description": t.description,
        "schema": t.schema_file, "approval": t.approval.map(|a| a.as_str()),
        "risk": t.risk.map(|r| r.as_str()), "timeout_ms": t.timeout_ms,
    }))
}
