//! Durable waits. An agent that writes a `wait` event and exits 0 suspends
//! its run: the attempt ends, the run is `paused` holding no process and no
//! worker slot, and what it waits for (a signal, an approval's decision, a
//! timer) wakes it: the run goes back to the queue, and its next attempt
//! finds what woke it in `$DISPATCH_RESUME` (and its last checkpoint in
//! `$DISPATCH_CHECKPOINT`).
//!
//! Every wake is a compare-and-set from the suspended state, so a signal, a
//! decision and a timer racing each other wake the run once. A signal that
//! arrives before the run waits for it is kept (a `signal` event) and taken
//! by the first wait for its name after it: both sides write first and look
//! second, so neither misses the other.

use dispatch_core::EventKind;
use dispatch_core::{NewEvent, RunId, RunState, Status, Transition, Wait, WaitFor, now_ms};
use dispatch_store::{Approval, Decision, Event, Run, StateWrite, Store, StoreError};
use serde_json::{Value, json};

use crate::error::{RuntimeError, RuntimeResult};
use crate::layout::Layout;
use crate::record::{AdvanceError, advance_all, state_event};

/// What happened to a signal.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The run was waiting for it and is queued for its next attempt.
    Woke(Box<Run>),
    /// Kept for the run's first wait on that name.
    Kept,
}

/// Sends signal `name` (with `value`) to run `id`.
pub async fn signal<S: Store + ?Sized>(
    store: &S,
    id: &RunId,
    name: &str,
    value: Value,
) -> RuntimeResult<Delivery> {
    check_name(name)?;
    let run = store.get_run(id).await?;
    if run.state.is_terminal() {
        return Err(RuntimeError::Ended {
            id: id.to_string(),
            status: run.status(),
        });
    }
    let resume = json!({"for": "signal", "name": name, "value": value});
    if waits_for(&run, WaitFor::Signal, name)
        && let Some(woken) = wake(
            store,
            run.clone(),
            resume.clone(),
            &format!("signal `{name}`"),
        )
        .await?
    {
        return Ok(Delivery::Woke(Box::new(woken)));
    }
    // Not waiting for it (yet): kept, then looked at again, in case the run
    // suspended on it meanwhile (its own look may have come before ours).
    let event = NewEvent::new(
        EventKind::Signal,
        run.attempt,
        now_ms(),
        json!({"name": name, "value": value}),
    );
    store.append_events(id, &[event]).await?;
    let run = store.get_run(id).await?;
    if waits_for(&run, WaitFor::Signal, name)
        && let Some(woken) = wake(store, run, resume, &format!("signal `{name}`")).await?
    {
        return Ok(Delivery::Woke(Box::new(woken)));
    }
    Ok(Delivery::Kept)
}

fn check_name(name: &str) -> RuntimeResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
    match ok {
        true => Ok(()),
        false => Err(RuntimeError::BadDecision(format!(
            "invalid signal name `{}` (hint: letters, digits, `-`, `_`, `.`, `:`; at most 200)",
            dispatch_core::event::shorten(name, 60)
        ))),
    }
}

/// Wakes `id` if it is suspended waiting for approval `approval_id`.
pub async fn approval_decided<S: Store + ?Sized>(
    store: &S,
    id: &RunId,
    approval_id: &str,
    decision: &Decision,
) -> RuntimeResult<Option<Run>> {
    let run = store.get_run(id).await?;
    if !waits_for(&run, WaitFor::Approval, approval_id) {
        return Ok(None);
    }
    let resume = json!({
        "for": "approval",
        "id": approval_id,
        "decision": decision.decision,
        "by": decision.by,
        "rationale": decision.rationale,
    });
    let why = format!("approval `{approval_id}` decided ({})", decision.decision);
    wake(store, run, resume, &why).await
}

fn waits_for(run: &Run, kind: WaitFor, name: &str) -> bool {
    matches!(&run.state, RunState::Suspended { wait, .. } if wait.wait_for == kind && wait.name == name)
}

/// Moves suspended `run` back to the queue; the `state` event carries
/// `resume` (what the next attempt is handed). `None` when it was woken
/// already, stopped, or is no longer suspended.
async fn wake<S: Store + ?Sized>(
    store: &S,
    mut run: Run,
    resume: Value,
    why: &str,
) -> RuntimeResult<Option<Run>> {
    let t = Transition::Wake { at: now_ms() };
    for _ in 0..5 {
        if !matches!(run.state, RunState::Suspended { .. }) {
            return Ok(None);
        }
        let next = match run.state.apply(run.operation, &t) {
            Ok(next) => next,
            Err(_) => return Ok(None),
        };
        let mut event = state_event(&run, &next, None);
        event.data["reason"] = json!(format!("woken: {why}"));
        event.data["resume"] = resume.clone();
        let write = StateWrite::new(next, event);
        match store.transition(&run.id, run.version, &write).await {
            Ok(updated) => return Ok(Some(updated)),
            Err(StoreError::Conflict { .. }) => run = store.get_run(&run.id).await?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// Suspends `run` (its attempt ended with the `wait` event `data`), after
/// saving `steps` (the agent's start, when not saved yet, and `then`, the
/// events it wrote). Returns whether what it waits for had happened already
/// and the run is queued again.
pub(crate) async fn suspend<S: Store + ?Sized>(
    store: &S,
    run: &mut Run,
    data: &Value,
    steps: &[Transition],
    then: &[dispatch_core::NewEvent],
) -> RuntimeResult<bool> {
    let at = now_ms();
    let Some(wait) = dispatch_core::event::wait_of(data, at) else {
        return Ok(false); // checked when the event was read; cannot happen
    };
    if wait.wait_for == WaitFor::Approval {
        ask(store, run, &wait, data, at).await;
    }
    let mut all = steps.to_vec();
    all.push(Transition::Suspend {
        wait: wait.clone(),
        at,
    });
    match advance_all(store, run, &all, then, None).await {
        Ok(()) => {}
        Err(AdvanceError::Illegal(_)) => return Ok(false), // stopped meanwhile
        Err(AdvanceError::Store(e)) => return Err(e.into()),
    }
    if run.stop_requested_at.is_some() {
        // A stop asked for while the agent ran: nothing to wait for.
        let reason = match &run.state {
            RunState::Suspended { reason, .. } => format!("cancelled while {reason}"),
            _ => "cancelled".into(),
        };
        let t = Transition::Cancel {
            reason,
            exit_code: None,
            at: now_ms(),
        };
        return match crate::record::advance(store, run, &t, None).await {
            Ok(()) | Err(AdvanceError::Illegal(_)) => Ok(false),
            Err(AdvanceError::Store(e)) => Err(e.into()),
        };
    }
    // Whatever it waits for may be here already.
    let woken = match wait.wait_for {
        WaitFor::Signal => match kept_signal(store, &run.id, &wait.name).await {
            Some(value) => {
                let resume = json!({"for": "signal", "name": wait.name, "value": value});
                wake(
                    store,
                    run.clone(),
                    resume,
                    &format!("signal `{}`", wait.name),
                )
                .await?
            }
            None => None,
        },
        WaitFor::Approval => {
            let decided = store
                .list_approvals(Some(&run.id), false)
                .await?
                .into_iter()
                .find(|a| a.id == wait.name && a.decision.is_some());
            match decided {
                Some(a) => {
                    let decision = Decision {
                        decision: a.decision.unwrap_or_default(),
                        by: a.decided_by.unwrap_or_default(),
                        rationale: a.rationale,
                        at: a.decided_at.unwrap_or(at),
                        input: a.input,
                    };
                    approval_decided(store, &run.id, &wait.name, &decision).await?
                }
                None => None,
            }
        }
        WaitFor::Timer => None,
        // Raised (or its period ended) while the run was pausing.
        WaitFor::Quota => match over_quota(store, &wait.name).await {
            false => wake(store, run.clone(), quota_resume(&wait.name), "its quota").await?,
            true => None,
        },
    };
    let woken = match woken {
        Some(w) => Some(w),
        None => wake_if_due(store, run.clone()).await?,
    };
    match woken {
        Some(w) => {
            *run = w;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Wakes the runs of `project` paused for its quota (`ON BUDGET pause`)
/// once it is over no hard budget any more: after `dispatch quota set`
/// raised it, or `quota rm` removed it. Returns the runs woken (queued
/// again; locally, the caller starts each one's helper).
pub async fn quota_changed<S: Store + ?Sized>(store: &S, project: &str) -> RuntimeResult<Vec<Run>> {
    if over_quota(store, project).await {
        return Ok(Vec::new());
    }
    let filter = dispatch_store::RunFilter {
        statuses: vec![Status::Paused],
        projects: vec![project.to_string()],
        ..Default::default()
    };
    let mut woken = Vec::new();
    for run in store.list_runs(&filter).await? {
        if let RunState::Suspended { wait, .. } = &run.state
            && wait.wait_for == WaitFor::Quota
            && let Some(w) = wake(
                store,
                run.clone(),
                quota_resume(project),
                "its quota raised",
            )
            .await?
        {
            woken.push(w);
        }
    }
    Ok(woken)
}

/// Whether `project` is over a hard budget (tokens or USD per period) now.
/// The store out of reach: not over (as before a model call).
async fn over_quota<S: Store + ?Sized>(store: &S, project: &str) -> bool {
    store
        .quota_use(&[project.to_string()], now_ms())
        .await
        .is_ok_and(|used| {
            used.iter()
                .any(|u| u.quota.limit.period().is_some() && u.hard_reached())
        })
}

fn quota_resume(project: &str) -> Value {
    json!({"for": "quota", "project": project})
}

/// Records the approval a suspending agent asks for (shown by `approvals ls`).
async fn ask<S: Store + ?Sized>(store: &S, run: &Run, wait: &Wait, data: &Value, at: i64) {
    let approval = Approval {
        run_id: run.id.clone(),
        id: wait.name.clone(),
        attempt: run.attempt,
        summary: data["summary"].as_str().unwrap_or("").to_string(),
        requested_at: at,
        deadline: wait.until,
        decision: None,
        decided_by: None,
        rationale: None,
        decided_at: None,
        details: None,
        input: None,
    };
    if let Err(e) = store.request_approval(&approval).await {
        crate::say_warn!("[dispatch] could not record approval `{}`: {e}", wait.name);
    }
}

/// The value of the newest `signal` event named `name` that no wake has
/// taken yet (sent after the last wake by a signal of that name).
async fn kept_signal<S: Store + ?Sized>(store: &S, id: &RunId, name: &str) -> Option<Value> {
    let events = crate::helper::retry::all_events(store, id).await;
    let taken = |e: &&Event| {
        e.event.is(EventKind::State)
            && e.event.data["resume"]["for"] == "signal"
            && e.event.data["resume"]["name"] == name
    };
    let since = events.iter().rev().find(taken).map_or(0, |e| e.seq);
    events
        .iter()
        .rev()
        .take_while(|e| e.seq > since)
        .find(|e| e.event.is(EventKind::Signal) && e.event.data["name"] == name)
        .map(|e| e.event.data["value"].clone())
}

/// Wakes `run` if its wait has run out (a timer rang, a signal or an
/// approval timed out; the approval is then denied by `dispatch`).
pub async fn wake_if_due<S: Store + ?Sized>(store: &S, run: Run) -> RuntimeResult<Option<Run>> {
    let RunState::Suspended { wait, .. } = &run.state else {
        return Ok(None);
    };
    let now = now_ms();
    if wait.until.is_none_or(|until| until > now) {
        return Ok(None);
    }
    let wait = wait.clone();
    let resume = match wait.wait_for {
        WaitFor::Timer => json!({"for": "timer"}),
        // The over budget's period ended: the run calls its model again
        // (and pauses again if another budget is still over).
        WaitFor::Quota => json!({"for": "quota", "project": wait.name, "timed_out": true}),
        WaitFor::Signal => json!({"for": "signal", "name": wait.name, "timed_out": true}),
        WaitFor::Approval => {
            let rationale = timeout_rationale(store, &run.id, &wait.name).await;
            let decision = Decision {
                decision: "deny".into(),
                by: "dispatch".into(),
                rationale: Some(rationale.clone()),
                at: now,
                input: None,
            };
            let _ = store.decide_approval(&run.id, &wait.name, &decision).await;
            json!({"for": "approval", "id": wait.name, "decision": "deny", "by": "dispatch",
                   "rationale": rationale, "timed_out": true})
        }
    };
    wake(store, run, resume, "its wait timed out").await
}

/// Why a timed-out approval is denied: `no decision within <its time>`.
async fn timeout_rationale<S: Store + ?Sized>(store: &S, id: &RunId, approval: &str) -> String {
    let asked = store
        .list_approvals(Some(id), true)
        .await
        .ok()
        .and_then(|all| all.into_iter().find(|a| a.id == approval));
    match asked.and_then(|a| Some(a.deadline? - a.requested_at)) {
        Some(ms) => format!(
            "no decision within {}",
            dispatch_core::time::human_duration(ms.max(0))
        ),
        None => "timed out".into(),
    }
}

/// Wakes every suspended run whose wait has run out; returns them.
pub async fn wake_due<S: Store + ?Sized>(store: &S) -> RuntimeResult<Vec<Run>> {
    let filter = dispatch_store::RunFilter {
        statuses: vec![Status::Paused],
        summary: true,
        ..Default::default()
    };
    let mut woken = Vec::new();
    for run in store.list_runs(&filter).await? {
        if let Some(w) = wake_if_due(store, run).await? {
            woken.push(w);
        }
    }
    Ok(woken)
}

/// What woke the run for `attempt`, when a wake queued it (from the run's
/// `events`).
pub(crate) fn resume_in(events: &[Event], attempt: u32) -> Option<Value> {
    let last_requeue = events
        .iter()
        .rev()
        .find(|e| e.event.is(EventKind::State) && e.event.data["to"] == "queued")?;
    let resume = last_requeue.event.data.get("resume")?;
    (last_requeue.event.attempt + 1 == attempt).then(|| resume.clone())
}

/// Writes `resume` for the attempt; returns the file's path.
pub(crate) fn write_resume(layout: &Layout, id: &RunId, resume: &Value) -> Option<String> {
    let path = layout.run_dir(id).join("resume.json");
    let bytes = serde_json::to_vec(resume).ok()?;
    std::fs::write(&path, bytes).ok()?;
    Some(path.to_string_lossy().into_owned())
}

/// Starts a helper for a local run a wake (or an approval in review) queued
/// (daemonless: nobody else will).
pub fn start_woken(layout: &Layout, run: &Run) {
    if let RunState::Queued { not_before } = run.state {
        crate::recover::spawn_once(layout, run, not_before.unwrap_or(0), "was woken");
    }
}
