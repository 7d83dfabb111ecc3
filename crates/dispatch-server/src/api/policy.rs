//! The policy gate in front of `POST /v1/runs` and its batch (see
//! `dispatch_runtime::policy_gate`): the server's policy file
//! (`DISPATCH_POLICY`, else `policy.rego` in its state directory) decides
//! before anything is stored; a denial is `403 forbidden` naming the
//! reason. The policy is read again when the file changes; a change that
//! does not load leaves the last good policy in force, and the server's
//! log says so.

use std::collections::BTreeMap;

use dispatch_core::Operation;
use dispatch_core::parcel::Parcel;
use dispatch_core::policy::RunPolicy;
use dispatch_policy::Modify;
use dispatch_policy::input::Who;
use dispatch_runtime::policy_gate::{self, Passed, RunAsk};
use serde_json::Value;

use super::AppState;
use super::create::Checked;
use super::error::ApiResult;
use dispatch_api::CreateRun;

/// Who asks, for the policy: the request's token by name, else (a server
/// that requires no token) `anonymous`.
pub(super) fn who(token: Option<&dispatch_store::TokenRecord>) -> Who {
    match token {
        Some(t) => Who {
            name: t.name.clone(),
            kind: "token",
        },
        None => Who {
            name: "anonymous".into(),
            kind: "anonymous",
        },
    }
}

/// Asks the policy about `req`; applies its labels and model to `req`.
pub(super) fn gate(
    state: &AppState,
    who: &Who,
    parcel: &Parcel,
    operation: Operation,
    req: &mut CreateRun,
    payload: &Value,
) -> ApiResult<Option<Passed>> {
    let Some(path) = policy_gate::policy_file(&state.layout) else {
        return Ok(None);
    };
    let loaded = policy_gate::cached(&path)?;
    let ask = RunAsk {
        who: who.clone(),
        project: req.project(),
        parcel,
        operation,
        trigger: "manual",
        labels: labels_of(&req.labels),
        payload,
    };
    let passed = policy_gate::check_run(&loaded, &ask)?;
    if let Some(m) = &passed.modify {
        for (k, v) in &m.labels {
            req.labels
                .retain(|l| l != k && !l.starts_with(&format!("{k}=")));
            req.labels.push(format!("{k}={v}"));
        }
        if let Some(model) = &m.model {
            req.model = Some(model.clone());
        }
    }
    Ok(Some(passed))
}

/// Who decides from the dashboard: its session's token by name, else
/// (a server that requires no token) `anonymous`.
pub(crate) fn who_of_session(name: Option<&str>) -> Who {
    match name {
        Some(name) => Who {
            name: name.to_string(),
            kind: "token",
        },
        None => who(None),
    }
}

/// Asks the policy about running `old` again (a replay or a restart,
/// trigger `replay`): a denial is `403 forbidden`, a review sends the new
/// run to review (a run denied in review is not run again by a replay);
/// budgets it lowers are lowered in `policy`, the run's stored one.
pub(super) fn gate_again(
    state: &AppState,
    who: &Who,
    parcel: &Parcel,
    old: &dispatch_store::Run,
    payload: &Value,
    policy: &mut Value,
) -> ApiResult<Option<Passed>> {
    let Some(path) = policy_gate::policy_file(&state.layout) else {
        return Ok(None);
    };
    let loaded = policy_gate::cached(&path)?;
    let ask = RunAsk {
        who: who.clone(),
        project: &old.project,
        parcel,
        operation: old.operation,
        trigger: dispatch_core::Trigger::Replay.as_str(),
        labels: labels_of(&old.labels),
        payload,
    };
    let passed = policy_gate::check_run(&loaded, &ask)?;
    if let Some(m) = &passed.modify
        && let Ok(mut p) = serde_json::from_value::<RunPolicy>(policy.clone())
    {
        lower_limits(&mut p, m);
        *policy = serde_json::to_value(&p).expect("a policy is plain data");
    }
    Ok(Some(passed))
}

/// `key=value` labels as the policy's map (a bare `key` has an empty value).
fn labels_of(labels: &[String]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

/// The policy's budgets, where lower than the run's.
pub(super) fn lower_limits(policy: &mut RunPolicy, m: &Modify) {
    if let Some(cap) = m.limit_tokens {
        let now = policy.limits.max_tokens;
        policy.limits.max_tokens = Some(now.map_or(cap, |n| n.min(cap)));
    }
    if let Some(cap) = m.limit_cost_usd {
        let now = policy.limits.max_cost_usd;
        policy.limits.max_cost_usd = Some(now.map_or(cap, |n| n.min(cap)));
    }
}
