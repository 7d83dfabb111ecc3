//! Approval decisions: recorded in the store (who, when, why; the first
//! decision stands), written for the agent to `$DISPATCH_APPROVALS/<id>.json`
//! (temporary file + rename, so the agent never reads half a file), and the
//! paused run resumed once nothing else is pending. The approval of a run
//! in review decides the run itself (see [`crate::review`]).

use dispatch_core::{RunId, Status, Transition, now_ms};
use dispatch_store::{Approval, Decision, Store};
use serde_json::json;

use crate::error::{RuntimeError, RuntimeResult, io};
use crate::layout::Layout;
use crate::record::{AdvanceError, advance};

/// Whether `id` can name a decision file: no path separators, not hidden.
pub fn valid_approval_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && !id.starts_with('.') && !id.contains(['/', '\\', '\0'])
}

/// Decides approval `approval_id` of `run` and resumes the run when it waits
/// on nothing else.
pub async fn decide<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: &RunId,
    approval_id: &str,
    decision: &Decision,
) -> RuntimeResult<Approval> {
    if let Some(input) = &decision.input {
        check_input(store, run, approval_id, decision, input).await?;
    }
    // A run in review: the decision queues or cancels it, at once.
    let stored = store.get_run(run).await?;
    if crate::review::decides_review(&stored, approval_id) {
        return Ok(crate::review::decide(store, &stored, decision).await?.0);
    }
    let decided = store.decide_approval(run, approval_id, decision).await?;
    write_decision_file(layout, run, approval_id, decision)?;
    resume_if_clear(store, run).await?;
    // A run suspended on it is queued for its next attempt.
    crate::suspend::approval_decided(store, run, approval_id, decision).await?;
    Ok(decided)
}

/// Edited arguments go with an approval of a tool call, and must pass the
/// tool's schema (the run stays paused otherwise).
async fn check_input<S: Store + ?Sized>(
    store: &S,
    run: &RunId,
    approval_id: &str,
    decision: &Decision,
    input: &serde_json::Value,
) -> RuntimeResult<()> {
    if decision.decision != "approve" {
        return Err(RuntimeError::BadDecision(
            "--input replaces the arguments of an approved call; a denial takes none".into(),
        ));
    }
    let asked = store
        .list_approvals(Some(run), false)
        .await?
        .into_iter()
        .find(|a| a.id == approval_id);
    let Some(asked) = asked else {
        return Ok(()); // the store says which: no such approval
    };
    let Some(details) = asked.details.as_ref().filter(|d| d["tool"].is_string()) else {
        return Err(RuntimeError::BadDecision(format!(
            "approval `{approval_id}` is not a tool call; it takes no --input"
        )));
    };
    let schema = details
        .get("schema")
        .cloned()
        .unwrap_or(json!({"type": "object"}));
    let problems: Vec<String> = match jsonschema::validator_for(&schema) {
        Ok(v) => v
            .iter_errors(input)
            .take(3)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("{}: {e}", if at.is_empty() { "/" } else { &at })
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    if problems.is_empty() {
        return Ok(());
    }
    Err(RuntimeError::BadDecision(format!(
        "--input does not match the arguments schema of tool `{}`: {} (the run stays paused; nothing was decided)",
        details["tool"].as_str().unwrap_or("?"),
        problems.join("; ")
    )))
}

/// Writes `{"decision","by","rationale"}` atomically where the agent looks.
pub fn write_decision_file(
    layout: &Layout,
    run: &RunId,
    approval_id: &str,
    decision: &Decision,
) -> RuntimeResult<()> {
    let dir = layout.run_dir(run).join("approvals");
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    let path = dir.join(format!("{approval_id}.json"));
    let tmp = dir.join(format!(".{approval_id}.{}.tmp", std::process::id()));
    let body = json!({
        "decision": decision.decision,
        "by": decision.by,
        "rationale": decision.rationale,
        "at": decision.at,
    });
    let bytes = serde_json::to_vec(&body).expect("a decision is plain JSON");
    std::fs::write(&tmp, bytes).map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("renaming", &path))
}

/// Resumes the paused run when none of its approvals is pending.
pub(crate) async fn resume_if_clear<S: Store + ?Sized>(store: &S, id: &RunId) -> RuntimeResult<()> {
    if !store.list_approvals(Some(id), true).await?.is_empty() {
        return Ok(());
    }
    let mut run = store.get_run(id).await?;
    if run.status() != Status::Paused {
        return Ok(());
    }
    match advance(store, &mut run, &Transition::Resume { at: now_ms() }, None).await {
        Ok(()) | Err(AdvanceError::Illegal(_)) => Ok(()),
        Err(AdvanceError::Store(e)) => Err(e.into()),
    }
}

/// Denies every pending approval of `run`: whoever asked is gone.
pub(crate) async fn expire_pending<S: Store + ?Sized>(store: &S, run: &RunId, rationale: &str) {
    let Ok(pending) = store.list_approvals(Some(run), true).await else {
        return;
    };
    for a in pending {
        let decision = Decision {
            decision: "deny".into(),
            by: "dispatch".into(),
            rationale: Some(rationale.to_string()),
            at: now_ms(),
            input: None,
        };
        let _ = store.decide_approval(run, &a.id, &decision).await;
    }
}
