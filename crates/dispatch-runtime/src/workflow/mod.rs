//! The workflow courier: a coordinator whose state is entirely in the store.
//!
//! A workflow run (the parent) has no agent of its own. Each member's turn
//! is a child run (`parent_id`), created queued like any dispatch, so it has
//! its own attempts, budget, approvals, isolation and log. Messages are
//! rows of the store ([`dispatch_store::MessageStore`]), each recorded once
//! under an id derived from what caused it (the workflow's start, or the
//! child run that sent it) and carrying the id of the child run that
//! delivers it. Each pass of the loop reads the store and moves on from what
//! it finds:
//!
//! 1. every ended child not looked at yet: record the messages it sent
//!    (or its default routes, or its failure as ERROR);
//! 2. a message to `__end__`: the workflow succeeds with its payload;
//!    an ERROR to the coordinator: it fails;
//! 3. every message whose child run does not exist yet: check the hop limit
//!    and the workflow's budget, then create the child (its id is the
//!    message's, so a message is delivered once however often this runs);
//! 4. nothing live and nothing left to deliver: the workflow fails (stalled).
//!
//! Nothing lives only in memory, so a coordinator killed at any point is
//! replaced by one that picks up from the store (a local helper is revived
//! by lost-helper recovery; in a cluster the parent's lease expires and
//! another worker claims it). Locally the coordinator starts a helper
//! process for each child it creates; in a cluster the coordinating worker
//! runs those it has room for itself ([`here`]) and the workers claim the
//! others from the queue.

pub mod graph;
mod here;
mod join;
mod pass;
mod standby;
mod turns;

use dispatch_core::EventKind;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use dispatch_core::event::Usage;
use dispatch_core::policy::RunPolicy;
use dispatch_core::workflow::{self, END, Workflow};
use dispatch_core::{RunId, Status, Transition, now_ms};
use dispatch_store::{Message, Run, RunFilter, Store};
use serde_json::Value;

use crate::error::RuntimeResult;
use crate::layout::Layout;

pub use here::{MemberRun, Members, RunHere};
pub use join::JOIN;
pub use standby::TurnSignal;
pub use turns::{COORDINATOR, REFUSED};

/// The shortest and longest pause between two passes.
const MIN_TICK: Duration = Duration::from_millis(2);
const MAX_TICK: Duration = Duration::from_millis(25);
/// How often live children are checked for a dead helper.
const RECONCILE_EVERY: Duration = Duration::from_millis(500);
/// How long a stopped child has to end.
const CHILD_GRACE: Duration = Duration::from_millis(2_000);

/// Where the coordinator runs.
#[derive(Clone, Copy)]
pub struct Where<'a> {
    /// A helper process on this machine: it starts a helper for each
    /// member run. A worker (`false`) runs those it has room for itself
    /// ([`Self::here`]) and leaves the others to the queue.
    pub local: bool,
    /// Where the member runs' briefs go for other machines (a worker's store).
    pub briefs: Option<&'a dyn BriefSink>,
    /// A worker that runs, of the member runs, those it has room for
    /// itself, created claimed by it (see [`here`]); the rest go to the queue.
    pub here: Option<&'a dyn RunHere>,
}

/// Stores a brief (its SHA-256 and bytes) where workers on other machines
/// fetch it: the cluster's database.
pub trait BriefSink: Send + Sync {
    fn put<'a>(
        &'a self,
        sha256: &'a str,
        bytes: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;
}

/// Runs the coordinator of workflow run `run` until the workflow ends.
/// Returns the run's final transition and output. `log` gets one line per
/// delivery and message.
pub async fn coordinate<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: &Run,
    wf: &Workflow,
    policy: &RunPolicy,
    host: Where<'_>,
    log: &mut (dyn FnMut(&str) + Send),
) -> RuntimeResult<(Transition, Option<Value>)> {
    let mut c = pass::Coordination::start(store, layout, run, wf, policy, host).await?;
    let _here = Coordinating::register(&run.id, c.helpers.heard.clone());
    // The members' helpers checkpoint the database's log when their runs
    // end, off every hop's path; this process writes on it.
    store.latency_path(true);
    let _path = LatencyPath(store);
    let mut tick = MIN_TICK;
    loop {
        tick = match c.pass(log).await? {
            pass::Pass::End(end) => return Ok(end),
            pass::Pass::Again => continue,
            pass::Pass::Wait { changed: true } => MIN_TICK,
            pass::Pass::Wait { changed: false } => (tick * 2).min(MAX_TICK),
        };
        // A member's run that ended (its helper says so, or exits) wakes the next pass.
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = c.helpers.heard.woken.notified() => {}
        }
    }
}

/// The coordinators running in this process, by workflow run: a member run
/// that ends in this process (a worker's) wakes its coordinator's next pass
/// at once ([`member_ended`]) rather than at its next poll.
static COORDINATING: std::sync::LazyLock<std::sync::Mutex<HashMap<RunId, Arc<standby::Heard>>>> =
    std::sync::LazyLock::new(Default::default);

/// Ends [`dispatch_store::RunStore::latency_path`] when dropped.
struct LatencyPath<'s, S: Store + ?Sized>(&'s S);

impl<S: Store + ?Sized> Drop for LatencyPath<'_, S> {
    fn drop(&mut self) {
        self.0.latency_path(false);
    }
}

/// Registered in [`COORDINATING`] while it lives.
struct Coordinating(RunId);

impl Coordinating {
    fn register(id: &RunId, heard: Arc<standby::Heard>) -> Coordinating {
        if let Ok(mut all) = COORDINATING.lock() {
            all.insert(id.clone(), heard);
        }
        Coordinating(id.clone())
    }
}

impl Drop for Coordinating {
    fn drop(&mut self) {
        if let Ok(mut all) = COORDINATING.lock() {
            all.remove(&self.0);
        }
    }
}

/// Member run of workflow run `parent` ended here: its coordinator, when it
/// runs in this process, looks at once.
pub(crate) fn member_ended(parent: &RunId) {
    if let Some(heard) = COORDINATING
        .lock()
        .ok()
        .and_then(|all| all.get(parent).cloned())
    {
        heard.woken.notify_one();
    }
}

/// How a local coordinator starts its members' helpers: one is kept
/// started ahead ([`standby`]) for the next turn.
struct Helpers<'a> {
    layout: &'a Layout,
    exe: Option<std::path::PathBuf>,
    standby: Option<standby::Standby>,
    heard: Arc<standby::Heard>,
}

impl<'a> Helpers<'a> {
    /// With `ahead`, a helper is started at once for the first turn.
    fn new(layout: &'a Layout, ahead: bool) -> Self {
        let mut h = Helpers {
            layout,
            exe: std::env::current_exe().ok(),
            standby: None,
            heard: Arc::default(),
        };
        if ahead {
            h.refill();
        }
        h
    }

    /// The standby helper's process, when one is started and alive.
    fn ready(&mut self) -> Option<dispatch_core::ProcRef> {
        let process = self.standby.as_mut().and_then(standby::Standby::process);
        if process.is_none() {
            self.standby = None;
        }
        process
    }

    fn refill(&mut self) {
        if self.standby.is_none()
            && let Some(exe) = &self.exe
        {
            self.standby = standby::Standby::spawn(self.layout, exe).ok();
        }
    }

    /// Starts the helper of member run `id`: the standby one, or (none, or
    /// it is gone) a new one. The next standby is started by [`Self::refill`].
    async fn start(&mut self, id: &RunId) {
        if !self.hand(id).await {
            self.spawn(id);
        }
    }

    /// Hands run `id`, created claimed by the standby helper, to it. Should
    /// the helper be gone (killed meanwhile), its claim is given back as a
    /// lost helper's (no agent started: no attempt counts) and a new helper
    /// takes the run.
    async fn start_claimed<S: Store + ?Sized>(&mut self, store: &S, id: &RunId) {
        if self.hand(id).await {
            return;
        }
        let requeued = match store.get_run(id).await {
            Ok(mut run) if run.status() == Status::Starting => {
                let failure = crate::helper::retry::AttemptFailure {
                    reason: "the helper started ahead for this member was gone before it took the run; another one takes it (this does not count as an attempt)".into(),
                    exit_code: None,
                    status: Status::Failed,
                };
                crate::helper::retry::requeue(store, &mut run, &failure, now_ms(), true).await
            }
            // Created queued (its concurrency key had no slot free).
            Ok(run) => Ok(run.status() == Status::Queued),
            Err(_) => Ok(false),
        };
        if requeued.unwrap_or(false) {
            self.spawn(id);
        }
    }

    /// Hands run `id` to the standby helper; `false` when there is none or it is gone.
    async fn hand(&mut self, id: &RunId) -> bool {
        match self.standby.take() {
            Some(s) => s.take(id, self.heard.clone()).await.is_ok(),
            None => false,
        }
    }

    fn spawn(&self, id: &RunId) {
        if let Some(exe) = &self.exe
            && let Err(e) = crate::launch::spawn_helper(self.layout, exe, id)
        {
            crate::say_warn!("warning: no helper could start for member run {id}: {e}");
        }
    }
}

fn fail(reason: String) -> Transition {
    Transition::Fail {
        reason,
        exit_code: None,
        at: now_ms(),
    }
}

/// `sender → receiver KIND (message id)`.
fn describe(m: &Message) -> String {
    let n = &m.message;
    format!(
        "message {} → {} {} ({})",
        n.sender, n.receiver, n.kind, n.id
    )
}

/// Every child run of the workflow, by id.
async fn children_of<S: Store + ?Sized>(
    store: &S,
    id: &RunId,
) -> RuntimeResult<HashMap<RunId, Run>> {
    let filter = RunFilter {
        parent_id: Some(id.clone()),
        ..RunFilter::default()
    };
    let runs = store.list_runs(&filter).await?;
    Ok(runs.into_iter().map(|r| (r.id.clone(), r)).collect())
}

/// The members' usage together.
pub fn usage_of(children: &HashMap<RunId, Run>) -> Usage {
    let mut total = Usage::default();
    for c in children.values() {
        total.add(c.usage);
    }
    total
}

/// Brings the workflow run's usage up to its members' together, with a
/// `usage` event for the difference (so a coordinator that resumes adds
/// only what is not counted yet).
async fn roll_up<S: Store + ?Sized>(store: &S, parent: &Run, used: &Usage) -> RuntimeResult<()> {
    let have = parent.usage;
    let (input, output) = (
        used.input_tokens.saturating_sub(have.input_tokens),
        used.output_tokens.saturating_sub(have.output_tokens),
    );
    let cost = (used.cost_usd - have.cost_usd).max(0.0);
    if input == 0 && output == 0 && cost < 1e-12 {
        return Ok(());
    }
    let data = serde_json::json!({
        "model": "workflow members",
        "input_tokens": input,
        "output_tokens": output,
        "cost_usd": cost,
        "rollup": true,
    });
    let event = dispatch_core::NewEvent::new(EventKind::Usage, parent.attempt, now_ms(), data);
    store.append_events(&parent.id, &[event]).await?;
    Ok(())
}

/// What of the workflow's budget `used` crosses (`reached`: reaches), if any.
fn over_budget(policy: &RunPolicy, used: &Usage, reached: bool) -> Option<String> {
    let l = &policy.limits;
    let tokens = used.total_tokens();
    let beyond = |n: f64, max: f64| if reached { n >= max } else { n > max };
    match (l.max_tokens, l.max_cost_usd) {
        (Some(max), _) if beyond(tokens as f64, max as f64) => {
            Some(format!("{tokens} tokens used, limit {max}"))
        }
        (_, Some(max)) if beyond(used.cost_usd, max) => Some(format!(
            "cost ${:.4} reaches limit ${max:.4}",
            used.cost_usd
        )),
        _ => None,
    }
}

/// A fan-out whose members all ended: the aggregate, as a message to `__end__`.
fn fan_in(
    wf: &Workflow,
    msgs: &[Message],
    children: &HashMap<RunId, Run>,
    id: &RunId,
) -> Option<dispatch_store::NewMessage> {
    let mut results: Vec<(i64, String, Value)> = msgs
        .iter()
        .filter_map(|m| {
            let c = children.get(m.message.child_run.as_ref()?)?;
            // A turn whose message was refused failed.
            let refused = msgs.iter().any(|r| {
                r.message.receiver == REFUSED && r.message.sender_run.as_ref() == Some(&c.id)
            });
            let ok = c.status() == Status::Succeeded && !refused;
            let end = c.state.ended_at().unwrap_or(i64::MAX);
            ok.then(|| {
                (
                    end,
                    m.message.receiver.clone(),
                    c.output.clone().unwrap_or(Value::Null),
                )
            })
        })
        .collect();
    if results.is_empty() {
        return None;
    }
    if wf.aggregate == workflow::Aggregate::First {
        results.sort_by_key(|(end, _, _)| *end);
    }
    let results: Vec<(String, Value)> = results.into_iter().map(|(_, n, v)| (n, v)).collect();
    let payload = workflow::aggregate(wf.aggregate, &results);
    let mid = format!("{id}.aggregate");
    Some(turns::message(
        mid,
        COORDINATOR,
        None,
        END,
        "RESULT",
        payload,
    ))
}

/// Starts a helper for each queued child this coordinator has not started
/// one for (a child created by a coordinator that died before starting its
/// helper is started here; two helpers for one run race for one claim).
/// A member that starts nothing (`noop`) runs here, at once.
async fn spawn_queued<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    children: &HashMap<RunId, Run>,
    spawned: &mut HashSet<RunId>,
    (noop, parcels): (&HashSet<String>, &turns::Parcels),
    helpers: &mut Helpers<'_>,
) {
    let me = crate::os::this_process();
    for c in children.values() {
        let queued = c.status() == Status::Queued;
        let held = c.status() == Status::Starting && c.state.helper() == Some(me);
        if !(queued || held) || !spawned.insert(c.id.clone()) {
            continue;
        }
        if !noop.contains(&c.parcel_digest) {
            helpers.start(&c.id).await;
        } else if queued {
            let _ = Box::pin(crate::helper::claim_and_run(store, layout, c.clone())).await;
        } else {
            // Created claimed by this process (see `turns::plan`).
            let known = crate::helper::Known {
                parcel: parcels.get(&c.parcel_digest).cloned(),
                ..Default::default()
            };
            let run = crate::helper::run_claimed(store, layout, c.clone(), true, known);
            let _ = Box::pin(run).await;
        }
    }
}

/// Stops every live child: locally through `stop` (TERM, grace, KILL);
/// in a cluster by asking (the worker holding each one stops it).
async fn stop_children<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    children: &HashMap<RunId, Run>,
    local: bool,
) {
    let live: Vec<&Run> = children
        .values()
        .filter(|c| !c.state.is_terminal())
        .collect();
    for c in &live {
        let _ = store.request_stop(&c.id, now_ms()).await;
    }
    for c in live {
        if local
            || matches!(
                c.status(),
                Status::Queued | Status::Created | Status::Review
            )
        {
            let _ = crate::stop::stop(store, layout, &c.id, CHILD_GRACE, false).await;
        }
    }
}
