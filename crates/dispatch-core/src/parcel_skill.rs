//! `SKILL <file|directory>` at build time. A file is a skill's
//! instructions, as written. A directory is an [Agent Skills] bundle: its
//! `SKILL.md` starts with YAML frontmatter (`name`, `description`, optional
//! `metadata`), and its body is the instructions; the whole directory is
//! copied into the parcel at the same path, so its scripts, references and
//! assets travel with it and the agent reads them on demand
//! (`read_skill_file`, added to a native agent's tools with the first bundle).
//!
//! A bundle may carry upstream Dispatch's sidecar, `skill.toml` (or the file
//! `metadata.dispatch-manifest` names): `[[tools]]` entries (`name`,
//! `script`, `schema`, `description`, `risk`, `approval`, `timeout`) become
//! LOCAL tools of the agent, unless a TOOL line declares the same name; its
//! `entrypoint` is the parcel's when the Agentfile has no ENTRYPOINT.
//!
//! [Agent Skills]: https://agentskills.io/specification

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::agentfile::{Agentfile, AgentfileError, CopySpec, SkillSpec};
use crate::parcel::{Courier, Skill};
use crate::state::Operation;
use crate::tool::{ApprovalPolicy, Risk, ToolDecl, ToolKind};
use crate::units::parse_duration_ms_or_seconds;

/// The file of a bundle that holds its instructions.
pub const SKILL_FILE: &str = "SKILL.md";
/// Upstream Dispatch's default sidecar file name.
const SIDECAR: &str = "skill.toml";
/// The built-in that reads a bundle's files.
pub const READ_SKILL_FILE: &str = "read_skill_file";

/// A `SKILL.md`'s frontmatter (fields the spec defines that we do not use
/// are accepted and ignored; `allowed-tools` is informational upstream too).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Frontmatter {
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_norway::Value>,
    #[serde(default)]
    pub license: Option<String>,
}

/// Upstream Dispatch's `skill.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sidecar {
    #[serde(default)]
    entrypoint: Option<String>,
    #[serde(default)]
    tools: Vec<SidecarTool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SidecarTool {
    name: String,
    script: String,
    #[serde(default)]
    schema: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    risk: Option<String>,
    #[serde(default)]
    approval: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

/// Splits a `SKILL.md` into its frontmatter and body; `Err` says what is wrong.
pub fn split_skill_md(text: &str) -> Result<(Frontmatter, String), String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Some(after) = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
    else {
        return Err("does not start with YAML frontmatter (hint: begin it with `---`, then `name: …` and `description: …`, then `---`)".into());
    };
    let (yaml, body) = match after.find("\n---") {
        Some(i) => {
            let rest = &after[i + 4..];
            let body = rest.split_once('\n').map_or("", |(_, b)| b);
            (&after[..i], body)
        }
        None => return Err("has no `---` line closing its frontmatter".into()),
    };
    let fm: Frontmatter = serde_norway::from_str(yaml).map_err(|e| {
        format!("has frontmatter that is not valid: {e} (hint: it needs `name` and `description`)")
    })?;
    check_skill_name(&fm.name)?;
    if fm.description.trim().is_empty() {
        return Err(
            "has an empty `description` (hint: say what the skill does and when to use it)".into(),
        );
    }
    Ok((fm, body.trim_start_matches(['\n', '\r']).to_string()))
}

/// The spec's name: 1–64 lowercase letters, digits and `-`, not starting or
/// ending with `-`.
fn check_skill_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "names the skill `{name}`: a skill name is 1-64 lowercase letters, digits and `-` (hint: `name: file-analyst`)"
        ))
    }
}

/// Resolves every SKILL of `af` against the build context `ctx`: reads the
/// files and bundles, adds each bundle's directory to the parcel's copies
/// and its sidecar's tools to the agent's. Returns the skills in order.
pub(crate) fn resolve(af: &mut Agentfile, ctx: &Path) -> Result<Vec<Skill>, AgentfileError> {
    let mut skills: Vec<Skill> = Vec::new();
    let mut lines: BTreeMap<String, usize> = BTreeMap::new();
    let mut synthesized: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let specs = af.skills.clone();
    for spec in &specs {
        let err = |m: String| AgentfileError::new(spec.line, m);
        let path = inside(ctx, &spec.path).ok_or_else(|| {
            err(format!(
                "SKILL file `{}` not found in the build context (hint: name a markdown file, or an Agent Skills directory holding {SKILL_FILE}; paths are relative to the directory that holds the Agentfile)",
                spec.path
            ))
        })?;
        let skill = if path.is_dir() {
            bundle(af, spec, &path, &mut synthesized).map_err(err)?
        } else {
            let content =
                read(&path).map_err(|e| err(format!("SKILL file `{}` {e}", spec.path)))?;
            Skill {
                name: spec.name.clone(),
                content,
                description: None,
                dir: None,
            }
        };
        if let Some(prev) = lines.insert(skill.name.clone(), spec.line) {
            return Err(err(format!(
                "SKILL `{}` is already defined on line {prev} (hint: each skill needs its own name)",
                skill.name
            )));
        }
        skills.push(skill);
    }
    if skills.iter().any(|s| s.dir.is_some())
        && af.manifest.courier == Courier::Agent
        && let Some(agent) = af.manifest.agent.as_mut()
        && !agent.tools.iter().any(|t| t.name == READ_SKILL_FILE)
    {
        let line = specs.first().map_or(0, |s| s.line);
        agent
            .tools
            .push(tool_decl(READ_SKILL_FILE.into(), ToolKind::Builtin, line));
    }
    Ok(skills)
}

/// One Agent Skills bundle (`dir`, the directory `spec` names).
fn bundle(
    af: &mut Agentfile,
    spec: &SkillSpec,
    dir: &Path,
    synthesized: &mut BTreeMap<String, (String, usize)>,
) -> Result<Skill, String> {
    let what = format!("SKILL directory `{}`", spec.path);
    let md = dir.join(SKILL_FILE);
    if !md.is_file() {
        return Err(format!(
            "{what} has no {SKILL_FILE} (hint: an Agent Skills bundle is a directory with {SKILL_FILE}: YAML frontmatter with `name` and `description`, then the instructions)"
        ));
    }
    let text = read(&md).map_err(|e| format!("{what}: {SKILL_FILE} {e}"))?;
    let (fm, body) = split_skill_md(&text).map_err(|e| format!("{what}: {SKILL_FILE} {e}"))?;
    if !af.copies.iter().any(|c| c.src == spec.path) {
        af.copies.push(CopySpec {
            src: spec.path.clone(),
            dest: spec.path.clone(),
            dest_is_dir: false,
            line: spec.line,
        });
    }
    let sidecar_name = match fm.metadata.get("dispatch-manifest") {
        Some(serde_norway::Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(format!(
                "{what}: metadata.dispatch-manifest must be a file name (hint: `dispatch-manifest: skill.toml`)"
            ));
        }
        None => dir.join(SIDECAR).is_file().then(|| SIDECAR.to_string()),
    };
    if let Some(name) = sidecar_name {
        sidecar(af, spec, dir, &name, &fm.name, synthesized)?;
    }
    Ok(Skill {
        name: fm.name,
        content: body,
        description: Some(fm.description),
        dir: Some(spec.path.clone()),
    })
}

/// Reads the sidecar `file` of the bundle at `dir` into the agent's tools.
fn sidecar(
    af: &mut Agentfile,
    spec: &SkillSpec,
    dir: &Path,
    file: &str,
    skill: &str,
    synthesized: &mut BTreeMap<String, (String, usize)>,
) -> Result<(), String> {
    let what = format!("SKILL directory `{}`: {file}", spec.path);
    let path = inside(dir, file)
        .filter(|p| p.is_file())
        .ok_or_else(|| format!("{what} not found in the skill's directory"))?;
    let text = read(&path).map_err(|e| format!("{what} {e}"))?;
    let car: Sidecar = toml::from_str(&text).map_err(|e| {
        let e = e.to_string();
        format!("{what} is not valid: {}", e.lines().last().unwrap_or(&e))
    })?;
    if let Some(e) = &car.entrypoint
        && af.entrypoint_line.is_none()
    {
        af.manifest.entrypoint = match e.as_str() {
            "job" => Operation::Job,
            "heartbeat" => Operation::Heartbeat,
            "chat" => Operation::Chat,
            _ => {
                return Err(format!(
                    "{what}: entrypoint `{e}` (hint: job, heartbeat or chat)"
                ));
            }
        };
    }
    if car.tools.is_empty() {
        return Ok(());
    }
    if af.manifest.courier != Courier::Agent {
        return Err(format!(
            "{what} declares tools, which only a native agent calls (hint: `FROM agent` or `FROM dispatch/native`)"
        ));
    }
    let agent = af.manifest.agent.get_or_insert_with(Default::default);
    for t in car.tools {
        let bad = |m: String| format!("{what}: tool `{}`: {m}", t.name);
        if agent
            .tools
            .iter()
            .any(|d| d.name == t.name && !synthesized.contains_key(&d.name))
        {
            continue; // the Agentfile's own TOOL line wins
        }
        if let Some((other, _)) = synthesized.get(&t.name) {
            return Err(bad(format!(
                "skill `{other}` declares it too (hint: rename one of them)"
            )));
        }
        let program = format!("{}/{}", spec.path, t.script.trim_start_matches("./"));
        if inside(dir, &t.script).is_none_or(|p| !p.is_file()) {
            return Err(bad(format!(
                "script `{}` not found in the skill's directory",
                t.script
            )));
        }
        let mut d = tool_decl(
            t.name.clone(),
            ToolKind::Local {
                program,
                using: Vec::new(),
            },
            spec.line,
        );
        d.description = t.description.clone();
        d.schema_file = t
            .schema
            .as_ref()
            .map(|s| format!("{}/{}", spec.path, s.trim_start_matches("./")));
        d.risk = t
            .risk
            .as_deref()
            .map(|r| {
                Risk::parse(r).ok_or_else(|| bad(format!("risk `{r}` (hint: low, medium or high)")))
            })
            .transpose()?;
        d.approval = t
            .approval
            .as_deref()
            .map(|a| {
                ApprovalPolicy::parse(a).ok_or_else(|| {
                    bad(format!(
                        "approval `{a}` (hint: never, always, confirm or audit)"
                    ))
                })
            })
            .transpose()?;
        d.timeout_ms = t
            .timeout
            .as_deref()
            .map(|v| parse_duration_ms_or_seconds(v).map_err(|e| bad(e.to_string())))
            .transpose()?;
        synthesized.insert(t.name.clone(), (skill.to_string(), spec.line));
        agent.tools.push(d);
    }
    Ok(())
}

fn tool_decl(name: String, kind: ToolKind, line: usize) -> ToolDecl {
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

/// `rel` under `root`, if it exists and stays inside it (symlinks included).
fn inside(root: &Path, rel: &str) -> Option<PathBuf> {
    let rel = crate::parcel_build::norm_rel(rel)?;
    let root = fs::canonicalize(root).ok()?;
    let real = fs::canonicalize(root.join(rel)).ok()?;
    real.starts_with(&root).then_some(real)
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => "is not valid UTF-8 text".to_string(),
        _ => format!("cannot be read: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontmatter_is_split_from_the_instructions() {
        let (fm, body) = split_skill_md(
            "---\nname: file-analyst\ndescription: Analyze files.\nmetadata:\n  dispatch-manifest: skill.toml\n---\n\n# Use the tools\n",
        )
        .expect("parses");
        assert_eq!(fm.name, "file-analyst");
        assert_eq!(fm.description, "Analyze files.");
        assert!(fm.metadata.contains_key("dispatch-manifest"));
        assert_eq!(body, "# Use the tools\n");
    }

    #[test]
    fn bad_frontmatter_says_what_is_wrong() {
        for (text, needle) in [
            ("# no frontmatter", "does not start with YAML frontmatter"),
            ("---\nname: a\n", "no `---` line"),
            ("---\nname: a\n---\n", "description"),
            ("---\nname: Bad_Name\ndescription: d\n---\n", "lowercase"),
            (
                "---\nname: a\ndescription: \"\"\n---\n",
                "empty `description`",
            ),
            ("---\n: : :\n---\n", "not valid"),
        ] {
            let e = split_skill_md(text).expect_err(text);
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
