//! Building a workflow's members (`AGENT name source`): a directory (or
//! Agentfile) in the build context is built into the same parcels root; any
//! other source names a built parcel (by name, or digest or a unique prefix
//! of it). The workflow's manifest then names each member by digest, so the
//! workflow's digest covers its members'.

use std::cell::Cell;
use std::path::Path;

use crate::agentfile::{Agentfile, AgentfileError};
use crate::parcel::{Parcel, ParcelError};

/// How deep workflows may nest (a workflow member that is a workflow…).
const MAX_DEPTH: usize = 8;

thread_local! {
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Replaces each member's source with its parcel's digest. An error names
/// the member and its `AGENT` line.
pub(crate) fn resolve(af: &mut Agentfile, ctx: &Path, root: &Path) -> Result<(), AgentfileError> {
    let lines = af.member_lines.clone();
    let Some(wf) = af.manifest.workflow.as_mut() else {
        return Ok(());
    };
    for m in &mut wf.members {
        let line = lines.get(&m.name).copied().unwrap_or(1);
        let fail = |problem: String| {
            AgentfileError::new(
                line,
                format!("member `{}` ({}) {problem}", m.name, m.parcel),
            )
        };
        let parcel = member(&m.parcel, ctx, root).map_err(fail)?;
        m.parcel = parcel.digest;
    }
    Ok(())
}

fn member(source: &str, ctx: &Path, root: &Path) -> Result<Parcel, String> {
    let path = ctx.join(source);
    if path.exists() {
        let depth = DEPTH.with(|d| d.get());
        if depth >= MAX_DEPTH {
            return Err(format!(
                "nests workflows more than {MAX_DEPTH} deep (hint: does a member name the workflow itself?)"
            ));
        }
        DEPTH.with(|d| d.set(depth + 1));
        let built = crate::parcel_build::build(&path, root);
        DEPTH.with(|d| d.set(depth));
        return built.map_err(|e| format!("does not build: {}", one_line(&e)));
    }
    let all = crate::parcel_build::list(root);
    if let Some(p) = all.iter().find(|p| p.manifest.name == source) {
        return Ok(p.clone());
    }
    let by_digest: Vec<&Parcel> =
        match source.len() >= 4 && source.bytes().all(|b| b.is_ascii_hexdigit()) {
            true => all
                .iter()
                .filter(|p| p.digest.starts_with(source))
                .collect(),
            false => Vec::new(),
        };
    match by_digest.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err("is neither a directory next to the Agentfile nor a built parcel (hint: `AGENT name ./dir` with an Agentfile in ./dir, or build it first with `dispatch build`)".to_string()),
        many => Err(format!(
            "matches {} parcels (hint: use more of the digest)",
            many.len()
        )),
    }
}

fn one_line(e: &ParcelError) -> String {
    e.to_string().replace('\n', " ")
}
