//! The two things a coordinator does to the store: turn a member's ended
//! run into the messages it sends, and deliver messages by creating their
//! receivers' child runs (each under the id chosen when its message was
//! recorded, so a second delivery finds the run there and creates nothing;
//! those of one pass in one transaction).

use dispatch_core::EventKind;
use dispatch_core::parcel::Parcel;
use dispatch_core::workflow::{self, END, KINDS, START, Workflow};
use dispatch_core::{Operation, RunId, Status};
use dispatch_store::{Message, NewMessage, NewRun, Run, RunExtras, Store};
use serde_json::{Value, json};

use crate::error::RuntimeResult;
use crate::launch::LaunchRequest;
use crate::layout::Layout;
use crate::submit::{SubmitOptions, prepare_for};

/// The receiver of a member's failure when no `ROUTE … ON ERROR` takes it:
/// the coordinator, which fails the workflow.
pub const COORDINATOR: &str = "__coordinator__";

/// The receiver recorded for a message that was refused (its `to` names no
/// member): kept so the refusal is in the workflow's messages and events,
/// never delivered. Its sender's turn counts as failed.
pub const REFUSED: &str = "__refused__";

/// A new message from `sender` (run `sender_run`) to `receiver` (resolved).
pub(super) fn message(
    id: String,
    sender: &str,
    sender_run: Option<&RunId>,
    receiver: &str,
    kind: &str,
    payload: Value,
) -> NewMessage {
    let to_agent = ![END, COORDINATOR, REFUSED].contains(&receiver);
    NewMessage {
        id,
        sender: sender.to_string(),
        sender_run: sender_run.cloned(),
        receiver: receiver.to_string(),
        kind: kind.to_string(),
        payload,
        created_at: dispatch_core::now_ms(),
        child_run: to_agent.then(RunId::new),
    }
}

/// The first messages of a workflow: its input as a TASK to the entry
/// member (a fan-out: to every member in AGENTS order).
pub(super) fn first(wf: &Workflow, parent: &Run) -> Vec<NewMessage> {
    let to: Vec<&str> = match wf.coordinator {
        workflow::Coordinator::FanOut => wf.sequence(),
        _ => wf.entry().into_iter().collect(),
    };
    to.iter()
        .map(|name| {
            let id = format!("{}.start.{name}", parent.id);
            message(id, START, None, name, "TASK", parent.payload.clone())
        })
        .collect()
}

/// The messages the ended run `child` of member `agent` sends: those its
/// last attempt wrote (`message` events); or, with none, its output along
/// the default routes as RESULT (or its failure as ERROR; with no route for
/// it, to the coordinator). Ids are derived from the child's id, so
/// recording them twice records them once.
pub(super) async fn outgoing<S: Store + ?Sized>(
    store: &S,
    wf: &Workflow,
    agent: &str,
    child: &Run,
) -> RuntimeResult<Vec<NewMessage>> {
    let mut out = sends(store, wf, agent, child).await?;
    // A message to a JOIN member waits for its wave (see `super::join`).
    for m in out.iter_mut().filter(|m| super::join::held(wf, m)) {
        m.child_run = None;
    }
    Ok(out)
}

async fn sends<S: Store + ?Sized>(
    store: &S,
    wf: &Workflow,
    agent: &str,
    child: &Run,
) -> RuntimeResult<Vec<NewMessage>> {
    let id = |n: String| format!("{}.{n}", child.id);
    let mut out = Vec::new();
    if child.status() == Status::Succeeded {
        for (i, data) in sent(store, child).await?.into_iter().enumerate() {
            let to = data["to"].as_str().unwrap_or_default();
            let kind = data["kind"].as_str().map(str::to_ascii_uppercase);
            let kind = kind.filter(|k| KINDS.contains(&k.as_str()));
            let payload = data.get("payload").cloned().unwrap_or(Value::Null);
            match wf.resolve(agent, to) {
                Ok(rx) => out.push(message(
                    id(i.to_string()),
                    agent,
                    Some(&child.id),
                    &rx,
                    kind.as_deref().unwrap_or("RESULT"),
                    payload,
                )),
                Err(problem) => {
                    // The turn fails: nothing it sent goes out, its failure
                    // goes along its ERROR routes (see [`refused`]).
                    return Ok(refused(wf, agent, child, i, to, &problem));
                }
            }
        }
        if out.is_empty() {
            let output = child.output.clone().unwrap_or(Value::Null);
            for (i, rx) in wf.default_targets(agent, false).into_iter().enumerate() {
                let m = message(
                    id(format!("r{i}")),
                    agent,
                    Some(&child.id),
                    &rx,
                    "RESULT",
                    output.clone(),
                );
                out.push(m);
            }
        }
        return Ok(out);
    }
    let reason = child.state.reason().unwrap_or("it failed").to_string();
    let payload =
        json!({"agent": agent, "run": child.id, "status": child.status(), "reason": reason});
    let targets = wf.default_targets(agent, true);
    if targets.is_empty() && wf.coordinator != workflow::Coordinator::FanOut {
        let m = message(
            id("error".into()),
            agent,
            Some(&child.id),
            COORDINATOR,
            "ERROR",
            payload,
        );
        return Ok(vec![m]);
    }
    for (i, rx) in targets.into_iter().enumerate() {
        out.push(message(
            id(format!("x{i}")),
            agent,
            Some(&child.id),
            &rx,
            "ERROR",
            payload.clone(),
        ));
    }
    Ok(out)
}

/// The messages of a turn that sent a message to `to`, which `problem`
/// says is no receiver: the refusal (to [`REFUSED`], recorded, never
/// delivered) and, as for a turn that failed, an ERROR along each of the
/// sender's `ROUTE … ON ERROR` edges. With none, nothing goes on from this
/// turn: the workflow goes on with what else is pending, and fails naming
/// the refusal when nothing is.
fn refused(
    wf: &Workflow,
    agent: &str,
    child: &Run,
    i: usize,
    to: &str,
    problem: &str,
) -> Vec<NewMessage> {
    let id = |n: String| format!("{}.{n}", child.id);
    let reason = format!(
        "agent `{agent}` (run {}) sent a message to {problem}",
        child.id
    );
    let payload = json!({"agent": agent, "run": child.id, "to": to, "reason": reason});
    let mut out = vec![message(
        id(format!("e{i}")),
        agent,
        Some(&child.id),
        REFUSED,
        "ERROR",
        payload.clone(),
    )];
    for (i, rx) in wf.default_targets(agent, true).into_iter().enumerate() {
        out.push(message(
            id(format!("x{i}")),
            agent,
            Some(&child.id),
            &rx,
            "ERROR",
            payload.clone(),
        ));
    }
    out
}

/// The `message` events of the child's last attempt (what it sent).
async fn sent<S: Store + ?Sized>(store: &S, child: &Run) -> RuntimeResult<Vec<Value>> {
    const PAGE: usize = 500;
    let mut found = Vec::new();
    let mut after = 0;
    loop {
        let page = store.list_events(&child.id, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        // A short page is the last one: no read to learn that.
        let more = page.len() >= PAGE;
        found.extend(
            page.into_iter()
                .filter(|e| e.event.is(EventKind::Message) && e.event.attempt == child.attempt)
                .map(|e| e.event.data),
        );
        if !more {
            break;
        }
    }
    Ok(found)
}

/// How a message is delivered.
pub(super) struct To<'a> {
    /// The message's hop (its place among the workflow's deliveries).
    pub(super) hop: u64,
    /// The messages before it (the receiver's thread is their last few).
    pub(super) thread: &'a [Message],
    /// The helper the member run is created claimed by (one started ahead).
    pub(super) claimed_by: Option<dispatch_core::ProcRef>,
}

/// A delivery planned in a pass: the run, its message and hop, and the
/// helper started ahead it is created claimed by.
pub(super) type Planned<'m> = (
    (NewRun, RunExtras),
    (&'m Message, u64),
    Option<dispatch_core::ProcRef>,
);

/// The members' parcels, each loaded once (parcels are immutable).
pub(super) type Parcels = std::collections::HashMap<String, std::sync::Arc<Parcel>>;

/// The run that delivers `m` (to a member), ready to create: its brief
/// written, its id the message's. `None` for a message to no member.
/// (In a cluster the brief is stored for other machines when the run is
/// created: [`put_brief`], or with the run by [`super::here`].)
pub(super) async fn plan(
    layout: &Layout,
    (wf, parcels): (&Workflow, &mut Parcels),
    parent: &Run,
    m: &Message,
    to: To<'_>,
) -> RuntimeResult<Option<(NewRun, RunExtras)>> {
    let To {
        hop,
        thread,
        claimed_by,
    } = to;
    // The caller found no run of this id (one created meanwhile, by a
    // coordinator this one replaced, makes [`create`] create nothing).
    let Some(child_id) = m.message.child_run.clone() else {
        return Ok(None);
    };
    let member = wf
        .member(&m.message.receiver)
        .expect("a message to a member names one (resolved when recorded)");
    let start = thread.len().saturating_sub(workflow::THREAD_LEN);
    let thread: Vec<Value> = thread[start..]
        .iter()
        .map(|t| json!({"from": t.message.sender, "to": t.message.receiver, "kind": t.message.kind, "payload": t.message.payload}))
        .collect();
    let context = json!({"run": parent.id, "name": parent.parcel_name, "agent": member.name, "message": m.message.id, "hop": hop});
    let payload = workflow::envelope(
        &m.message.sender,
        &m.message.kind,
        &m.message.payload,
        context,
        thread,
    );
    let req = LaunchRequest {
        source: member.parcel.clone(),
        operation: Some(Operation::Job),
        payload,
        parent_id: Some(parent.id.clone()),
        origin_id: None,
        project: parent.project.clone(),
    };
    let mut opts = SubmitOptions::default();
    opts.overrides.run_timeout_ms = wf.agent_timeout_ms;
    opts.helper = claimed_by;
    let parcel = match parcels.get(&member.parcel) {
        Some(p) => Parcel::clone(p),
        None => {
            let p = crate::launch::resolve_parcel(layout, &member.parcel)?;
            parcels.insert(member.parcel.clone(), std::sync::Arc::new(p.clone()));
            p
        }
    };
    let (mut new, extras, _) = prepare_for(layout, parcel, &req, &opts)?.into_parts();
    new.id = child_id;
    new.trigger = dispatch_core::Trigger::Workflow;
    Ok(Some((new, extras)))
}

/// The brief of run `new`, as written to `layout`.
pub(super) fn brief_of(layout: &Layout, new: &NewRun) -> RuntimeResult<Vec<u8>> {
    let path = layout.brief(&new.brief_sha256);
    std::fs::read(&path).map_err(crate::error::io("reading", &path))
}

/// Stores the brief of run `new` (its bytes, `brief`) through `sink`,
/// where workers on other machines fetch it.
pub(super) async fn put_brief(
    layout: &Layout,
    sink: &dyn super::BriefSink,
    new: &NewRun,
    brief: Vec<u8>,
) -> RuntimeResult<()> {
    sink.put(&new.brief_sha256, brief)
        .await
        .map_err(|e| crate::RuntimeError::Io {
            what: "storing the brief",
            path: layout.brief(&new.brief_sha256),
            source: std::io::Error::other(e),
        })
}

/// Creates the planned runs, all in one transaction; whether each was
/// created here (`false`: it was created meanwhile, so delivered once).
pub(super) async fn create<S: Store + ?Sized>(
    store: &S,
    planned: &[(NewRun, RunExtras)],
) -> RuntimeResult<Vec<bool>> {
    if planned.is_empty() || store.create_runs_with(planned).await.is_ok() {
        return Ok(vec![true; planned.len()]);
    }
    // One of them exists (the id is its message's): one at a time.
    let mut created = Vec::with_capacity(planned.len());
    for (new, extras) in planned {
        created.push(match store.create_run_with(new, extras, false).await {
            Ok(_) => true,
            Err(_) if store.get_run(&new.id).await.is_ok() => false,
            Err(e) => return Err(e.into()),
        });
    }
    Ok(created)
}
