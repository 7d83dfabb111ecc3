//! The policy gate in front of run creation (see `dispatch_policy`): the
//! policy file is `$DISPATCH_POLICY`, else `policy.rego` in the state
//! directory when it exists; without one every run is allowed, as before.
//! A policy that cannot be loaded refuses every run (fail closed).

use std::path::{Path, PathBuf};

use dispatch_core::Operation;
use dispatch_core::parcel::Parcel;
use dispatch_policy::input::{Budget, Parcel as PolicyParcel, RunInput, Who};
use dispatch_policy::{Modify, Policy, RunDecision};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::{RuntimeError, RuntimeResult};
use crate::layout::Layout;

/// The variable naming the policy file.
pub const POLICY_ENV: &str = "DISPATCH_POLICY";
/// The policy file looked for in the state directory.
pub const POLICY_FILE: &str = "policy.rego";

/// The policy file in force for `layout`, if any.
pub fn policy_file(layout: &Layout) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(POLICY_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = layout.root().join(POLICY_FILE);
    path.exists().then_some(path)
}

/// A loaded policy with the digest of its text (recorded with decisions).
#[derive(Debug)]
pub struct LoadedPolicy {
    pub policy: Policy,
    pub sha256: String,
}

/// Loads the policy at `path` (a broken one is an error: no run passes).
pub fn load(path: &Path) -> RuntimeResult<LoadedPolicy> {
    let text = std::fs::read(path).map_err(crate::error::io("cannot read the policy", path))?;
    let text_str = String::from_utf8_lossy(&text);
    let policy = Policy::from_text(path, &text_str).map_err(|e| {
        RuntimeError::Policy(format!(
            "{e} (hint: check it with `dispatch policy test {}`; no run is created until it loads)",
            path.display()
        ))
    })?;
    Ok(LoadedPolicy {
        policy,
        sha256: hex::encode(Sha256::digest(&text)),
    })
}

/// The policy at `path` as this process last loaded it, loaded again when
/// the file changed (its modification time or length). A long-lived
/// process (a server, a worker) keeps the last good policy when a changed
/// file does not load, and says so; with no good one, it is an error.
pub fn cached(path: &Path) -> RuntimeResult<std::sync::Arc<LoadedPolicy>> {
    type Cache = std::collections::HashMap<PathBuf, (Stamp, std::sync::Arc<LoadedPolicy>)>;
    static CACHE: std::sync::OnceLock<std::sync::Mutex<Cache>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let stamp = stamp(path);
    let last = cache.lock().ok().and_then(|c| c.get(path).cloned());
    if let (Some((was, policy)), Some(now)) = (&last, &stamp)
        && was == now
    {
        return Ok(policy.clone());
    }
    match load(path) {
        Ok(loaded) => {
            let loaded = std::sync::Arc::new(loaded);
            if let (Ok(mut c), Some(now)) = (cache.lock(), stamp) {
                c.insert(path.to_path_buf(), (now, loaded.clone()));
            }
            Ok(loaded)
        }
        Err(e) => match last {
            Some((_, good)) => {
                crate::say_warn!(
                    "[dispatch] {e}; keeping the last good policy (sha256 {})",
                    &good.sha256[..12]
                );
                Ok(good)
            }
            None => Err(e),
        },
    }
}

type Stamp = (std::time::SystemTime, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// What a run about to be created is, for the policy.
pub struct RunAsk<'a> {
    pub who: Who,
    /// The project the run is created in.
    pub project: &'a str,
    pub parcel: &'a Parcel,
    pub operation: Operation,
    pub trigger: &'a str,
    pub labels: std::collections::BTreeMap<String, String>,
    pub payload: &'a Value,
}

/// The decision on a run that may be created: what to change of it, why
/// it waits in review for a person (if it does), and the `policy` event
/// that records the decision on the run.
#[derive(Clone, Debug)]
pub struct Passed {
    pub modify: Option<Modify>,
    /// The `review` rule's reasons, joined: the run is created in
    /// `review` and waits for `dispatch approve` (see [`crate::review`]).
    pub review: Option<String>,
    pub event: Value,
}

/// The `policy` event of a decision, to store with the run it let through.
pub fn decision_event(data: &Value) -> dispatch_core::event::NewEvent {
    let at = dispatch_core::time::now_ms();
    dispatch_core::event::NewEvent::of(dispatch_core::RunEvent::Policy(data.clone()), 0, at)
}

/// Asks `policy` about the run: `Ok` with what to change when it may be
/// created (and why it waits in review, when it must), an error saying why
/// when not.
pub fn check_run(loaded: &LoadedPolicy, ask: &RunAsk<'_>) -> RuntimeResult<Passed> {
    let manifest = &ask.parcel.manifest;
    let input = RunInput {
        who: ask.who.clone(),
        project: ask.project.to_string(),
        parcel: PolicyParcel {
            name: manifest.name.clone(),
            digest: ask.parcel.digest.clone(),
            version: manifest.version.clone(),
            labels: manifest.labels.clone(),
        },
        operation: ask.operation.as_str().to_string(),
        trigger: ask.trigger.to_string(),
        labels: ask.labels.clone(),
        payload: ask.payload.clone(),
        budget: Budget {
            tokens: manifest.limits.max_tokens,
            cost_usd: manifest.limits.max_cost_usd,
        },
        model: manifest
            .agent
            .as_ref()
            .and_then(|a| a.models.first())
            .map(|m| m.name.clone()),
    }
    .to_value();
    let path = loaded.policy.path().display().to_string();
    let decision = loaded
        .policy
        .decide_run(&input)
        .map_err(|e| RuntimeError::Policy(e.to_string()))?;
    match decision {
        RunDecision::Deny { reasons } => Err(RuntimeError::Policy(format!(
            "policy {path} denies this run: {} (hint: `dispatch policy test {path} --input JSON` shows why)",
            reasons.join("; ")
        ))),
        RunDecision::Review { reasons, modify } => {
            let mut event = event(loaded, ask, "review", &modify);
            event["reasons"] = json!(reasons);
            Ok(Passed {
                modify,
                review: Some(reasons.join("; ")),
                event,
            })
        }
        RunDecision::Allow { modify } => {
            let event = event(loaded, ask, "allow", &modify);
            Ok(Passed {
                modify,
                review: None,
                event,
            })
        }
    }
}

/// The `policy` event's data for a run the policy lets through.
fn event(
    loaded: &LoadedPolicy,
    ask: &RunAsk<'_>,
    decision: &str,
    modify: &Option<Modify>,
) -> Value {
    json!({
        "decision": decision,
        "action": "create_run",
        "who": ask.who,
        "policy": loaded.policy.path().display().to_string(),
        "policy_sha256": loaded.sha256,
        "modify": modify,
    })
}

/// The gate of a local dispatch: `None` when no policy is in force.
pub fn gate_local(
    layout: &Layout,
    project: &str,
    parcel: &Parcel,
    operation: Operation,
    trigger: dispatch_core::Trigger,
    payload: &Value,
) -> RuntimeResult<Option<Passed>> {
    let Some(path) = policy_file(layout) else {
        return Ok(None);
    };
    let loaded = cached(&path)?;
    let ask = RunAsk {
        who: dispatch_policy::input::local_user(),
        project,
        parcel,
        operation,
        trigger: trigger.as_str(),
        labels: Default::default(),
        payload,
    };
    check_run(&loaded, &ask).map(Some)
}

/// The dispatch options with the policy's changes: budgets lowered (never
/// raised) and the model replaced. Labels are a cluster run's: a local run
/// has none, so they are only recorded with the decision.
pub fn apply(
    opts: &crate::submit::SubmitOptions,
    manifest: &dispatch_core::parcel::Manifest,
    m: &Modify,
) -> crate::submit::SubmitOptions {
    let mut o = opts.clone();
    if let Some(cap) = m.limit_tokens {
        let now = o.overrides.max_tokens.or(manifest.limits.max_tokens);
        o.overrides.max_tokens = Some(now.map_or(cap, |n| n.min(cap)));
    }
    if let Some(cap) = m.limit_cost_usd {
        let now = o.overrides.max_cost_usd.or(manifest.limits.max_cost_usd);
        o.overrides.max_cost_usd = Some(now.map_or(cap, |n| n.min(cap)));
    }
    if let Some(model) = &m.model {
        o.model.model = Some(model.clone());
    }
    o
}

/// The gate of a run's tool calls: its policy (the one in force where the
/// run executes), or a gate that denies every call when that policy does
/// not load. `None` without a policy.
pub fn tool_gate(
    layout: &Layout,
    run: &dispatch_store::Run,
    parcel: &Parcel,
) -> Option<std::sync::Arc<dyn dispatch_agent::tools::ToolGate>> {
    let path = policy_file(layout)?;
    let manifest = &parcel.manifest;
    let base = ToolBase {
        who: dispatch_policy::input::local_user(),
        project: run.project.clone(),
        run_id: run.id.to_string(),
        parcel: PolicyParcel {
            name: manifest.name.clone(),
            digest: parcel.digest.clone(),
            version: manifest.version.clone(),
            labels: manifest.labels.clone(),
        },
    };
    let loaded = cached(&path).map_err(|e| e.to_string());
    Some(std::sync::Arc::new(PolicyToolGate { loaded, base }))
}

struct ToolBase {
    who: Who,
    project: String,
    run_id: String,
    parcel: PolicyParcel,
}

struct PolicyToolGate {
    loaded: Result<std::sync::Arc<LoadedPolicy>, String>,
    base: ToolBase,
}

impl dispatch_agent::tools::ToolGate for PolicyToolGate {
    fn decide(
        &self,
        ask: &dispatch_agent::tools::GateAsk<'_>,
    ) -> dispatch_agent::tools::GateDecision {
        use dispatch_agent::tools::GateDecision as G;
        let loaded = match &self.loaded {
            Ok(l) => l,
            Err(e) => return G::Deny(e.clone()),
        };
        let input = dispatch_policy::input::ToolInput {
            who: self.base.who.clone(),
            project: self.base.project.clone(),
            run_id: self.base.run_id.clone(),
            parcel: self.base.parcel.clone(),
            tool: ask.tool.to_string(),
            kind: ask.kind.to_string(),
            arguments: ask.arguments.clone(),
            risk: ask.risk.map(str::to_string),
            approval: ask.approval.to_string(),
        }
        .to_value();
        match loaded.policy.decide_tool(&input) {
            Err(e) => G::Deny(e.to_string()),
            Ok(dispatch_policy::ToolDecision::Allow) => G::Allow,
            Ok(dispatch_policy::ToolDecision::Deny { reasons }) => G::Deny(reasons.join("; ")),
            Ok(dispatch_policy::ToolDecision::RequireApproval { reasons }) => {
                G::RequireApproval(reasons.join("; "))
            }
            Ok(dispatch_policy::ToolDecision::AutoApprove { rules }) => {
                G::AutoApprove(rules.join("; "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_file_is_the_variable_else_the_state_directorys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path());
        // SAFETY: this test alone touches DISPATCH_POLICY in this process.
        unsafe { std::env::remove_var(POLICY_ENV) };
        assert_eq!(policy_file(&layout), None);
        std::fs::write(dir.path().join(POLICY_FILE), "package dispatch\n").expect("write");
        assert_eq!(policy_file(&layout), Some(dir.path().join(POLICY_FILE)));
        let loaded = load(&dir.path().join(POLICY_FILE)).expect("loads");
        assert_eq!(loaded.sha256.len(), 64);
        std::fs::write(dir.path().join("bad.rego"), "package dispatch\nx if {\n").expect("write");
        let e = load(&dir.path().join("bad.rego"))
            .expect_err("an error")
            .to_string();
        assert!(
            e.contains("bad.rego") && e.contains("dispatch policy test"),
            "{e}"
        );
    }
}
