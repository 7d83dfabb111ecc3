//! One pass of a workflow's coordinator (see the module's steps 1–4): read
//! the store, record what ended members sent, end the workflow when a
//! message or a limit says so, deliver what is not delivered yet, and end
//! it stalled when nothing is live and nothing is left to deliver.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use dispatch_core::policy::RunPolicy;
use dispatch_core::workflow::{Coordinator, END, Workflow};
use dispatch_core::{RunId, Status, Transition, now_ms};
use dispatch_store::{Message, Run, Store};
use serde_json::Value;

use super::{
    COORDINATOR, Helpers, RECONCILE_EVERY, REFUSED, Where, children_of, describe, fail, fan_in,
    here, join, over_budget, roll_up, spawn_queued, stop_children, turns, usage_of,
};
use crate::error::{RuntimeError, RuntimeResult};
use crate::layout::Layout;

/// How a workflow ends: its final transition and output.
pub(super) type End = (Transition, Option<Value>);

/// What a pass found.
pub(super) enum Pass {
    /// The workflow ended.
    End(End),
    /// Something was stored for the next pass to read at once.
    Again,
    /// Nothing more to do until a member moves; `changed` when this pass
    /// stored or delivered something.
    Wait { changed: bool },
}

/// A coordinator's view between passes: what it looked at, what it started,
/// and its members' parcels. Everything else is read from the store.
pub(super) struct Coordination<'a, S: Store + ?Sized> {
    store: &'a S,
    layout: &'a Layout,
    wf: &'a Workflow,
    policy: &'a RunPolicy,
    host: Where<'a>,
    id: RunId,
    parcels: turns::Parcels,
    /// The members' parcels that start nothing (`FROM noop`): they run in
    /// this process.
    noop: HashSet<String>,
    all_noop: bool,
    looked_at: HashSet<RunId>,
    spawned: HashSet<RunId>,
    pub(super) helpers: Helpers<'a>,
    logged: usize,
    reconciled: Instant,
}

impl<'a, S: Store + ?Sized> Coordination<'a, S> {
    /// The coordinator of workflow run `run`, its first messages stored.
    pub(super) async fn start(
        store: &'a S,
        layout: &'a Layout,
        run: &Run,
        wf: &'a Workflow,
        policy: &'a RunPolicy,
        host: Where<'a>,
    ) -> RuntimeResult<Self> {
        store
            .put_messages(&run.id, run.attempt, &turns::first(wf, run))
            .await?;
        // Each member's parcel, loaded once (a missing one fails its delivery).
        let mut parcels = turns::Parcels::new();
        for m in &wf.members {
            if !parcels.contains_key(&m.parcel)
                && let Ok(p) = dispatch_core::parcel::load(&layout.parcels().join(&m.parcel))
            {
                parcels.insert(m.parcel.clone(), Arc::new(p));
            }
        }
        let noop: HashSet<String> = parcels
            .iter()
            .filter(|(_, p)| p.manifest.courier == dispatch_core::parcel::Courier::Noop)
            .map(|(digest, _)| digest.clone())
            .collect();
        let all_noop = wf.members.iter().all(|m| noop.contains(&m.parcel));
        Ok(Coordination {
            store,
            layout,
            wf,
            policy,
            host,
            id: run.id.clone(),
            parcels,
            noop,
            all_noop,
            looked_at: HashSet::new(),
            spawned: HashSet::new(),
            helpers: Helpers::new(layout, host.local && !all_noop),
            logged: 0,
            reconciled: Instant::now(),
        })
    }

    /// One pass; `log` gets one line per delivery and message.
    pub(super) async fn pass(&mut self, log: &mut (dyn FnMut(&str) + Send)) -> RuntimeResult<Pass> {
        let (store, local) = (self.store, self.host.local);
        // Three reads at once (on PostgreSQL, three connections: one round
        // trip's wait instead of three). The messages that created the
        // children were committed before the children were, in an earlier
        // pass, so no child is seen without its message.
        let (parent, mut children, mut msgs) = tokio::try_join!(
            async { Ok::<_, RuntimeError>(store.get_run(&self.id).await?) },
            children_of(store, &self.id),
            async { Ok(store.list_messages(&self.id).await?) },
        )?;
        if self.reconciled.elapsed() >= RECONCILE_EVERY && local {
            for c in children.values_mut().filter(|c| !c.state.is_terminal()) {
                *c = crate::reconcile::reconcile(store, self.layout, c.clone()).await?;
            }
            self.reconciled = Instant::now();
        }
        if parent.stop_requested_at.is_some() {
            self.stop(&children).await;
            let t = Transition::Cancel {
                reason: "stopped by user; every live member's run was stopped".into(),
                exit_code: None,
                at: now_ms(),
            };
            return Ok(Pass::End((t, None)));
        }
        let mut changed = self.record_sent(&parent, &children, &mut msgs).await?;
        for m in msgs.iter().skip(self.logged) {
            log(&describe(m));
        }
        self.logged = msgs.len();
        let used = usage_of(&children);
        roll_up(store, &parent, &used).await?;
        if let Some(end) = self.ended(&msgs, &children, &used).await {
            return Ok(Pass::End(end));
        }
        match self.deliver(&parent, &children, &msgs, log).await? {
            Ok(delivered) => changed |= delivered,
            Err(end) => return Ok(Pass::End(end)),
        }
        // Locally, the runs just created get their helpers below. A worker
        // needs no fresh read: a run it just created is live, and with the
        // view from the start of the pass its message counts as not
        // delivered yet, so the workflow cannot be taken for ended or
        // stalled; the next pass reads them.
        if changed && local {
            children = children_of(store, &self.id).await?;
        }
        if local {
            self.start_helpers(&children).await;
        }
        self.idle(&parent, &children, &msgs)
            .await
            .map(|idle| idle.unwrap_or(Pass::Wait { changed }))
    }

    /// Records the messages of every ended child not looked at yet, and the
    /// joins they complete; whether any was stored.
    async fn record_sent(
        &mut self,
        parent: &Run,
        children: &HashMap<RunId, Run>,
        msgs: &mut Vec<Message>,
    ) -> RuntimeResult<bool> {
        let agent_of: HashMap<&RunId, &str> = msgs
            .iter()
            .filter_map(|m| Some((m.message.child_run.as_ref()?, m.message.receiver.as_str())))
            .collect();
        let mut sent = Vec::new();
        for c in children.values().filter(|c| c.state.is_terminal()) {
            if self.looked_at.insert(c.id.clone())
                && let Some(agent) = agent_of.get(&c.id)
            {
                sent.extend(turns::outgoing(self.store, self.wf, agent, c).await?);
            }
        }
        let mut changed = !sent.is_empty();
        // What a put stores comes after what the pass read (the workflow's
        // lock orders them); one stored meanwhile by a coordinator that lost
        // its lease is read by the next pass.
        if changed {
            let stored = self
                .store
                .put_messages(&self.id, parent.attempt, &sent)
                .await?;
            msgs.extend(stored);
        }
        let joined = join::ready(self.wf, msgs, children, &self.id);
        if !joined.is_empty() {
            let stored = self
                .store
                .put_messages(&self.id, parent.attempt, &joined)
                .await?;
            msgs.extend(stored);
            changed = true;
        }
        Ok(changed)
    }

    /// How the workflow ends, when a message or the budget says so: an
    /// ERROR to the coordinator, a message to `__end__`, members over the
    /// workflow's budget.
    async fn ended(
        &self,
        msgs: &[Message],
        children: &HashMap<RunId, Run>,
        used: &dispatch_core::event::Usage,
    ) -> Option<End> {
        let end = if let Some(m) = msgs.iter().find(|m| m.message.receiver == COORDINATOR) {
            let reason = m.message.payload["reason"]
                .as_str()
                .unwrap_or("a member failed");
            (
                fail(format!("agent `{}` failed: {reason}", m.message.sender)),
                None,
            )
        } else if let Some(m) = msgs.iter().find(|m| m.message.receiver == END) {
            let t = Transition::Exited {
                code: 0,
                at: now_ms(),
            };
            (t, Some(m.message.payload.clone()))
        } else if let Some(over) = over_budget(self.policy, used, false) {
            let reason = format!("budget_exceeded: {over} (the workflow's members together)");
            (fail(reason), None)
        } else {
            return None;
        };
        self.stop(children).await;
        Some(end)
    }

    /// Creates the child run of every message not delivered yet (checking
    /// the hop limit and the budget first), together: `Ok(Ok(changed))`, or
    /// `Ok(Err(end))` when the workflow ends instead.
    async fn deliver(
        &mut self,
        parent: &Run,
        children: &HashMap<RunId, Run>,
        msgs: &[Message],
        log: &mut (dyn FnMut(&str) + Send),
    ) -> RuntimeResult<Result<bool, End>> {
        let wf = self.wf;
        let used = usage_of(children);
        let mut hops = 0u64;
        let mut planned: Vec<turns::Planned> = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            let Some(child) = &m.message.child_run else {
                continue;
            };
            hops += 1;
            if children.contains_key(child) {
                continue;
            }
            if wf.coordinator != Coordinator::FanOut && hops > wf.hop_limit() {
                self.stop(children).await;
                let (from, to) = (&m.message.sender, &m.message.receiver);
                let reason = format!(
                    "LIMIT HOPS {} reached: the message from `{from}` to `{to}` was not delivered (hint: raise LIMIT HOPS, or end the loop with a message to __end__)",
                    wf.hop_limit()
                );
                return Ok(Err((fail(reason), None)));
            }
            if let Some(over) = over_budget(self.policy, &used, true) {
                self.stop(children).await;
                let reason = format!(
                    "budget_exceeded: {over}; `{}` was not started (the workflow's members together)",
                    m.message.receiver
                );
                return Ok(Err((fail(reason), None)));
            }
            // A member with a process is created claimed by the helper
            // started ahead for it, which runs it as soon as it has its id.
            // A member that starts nothing is created claimed by this process.
            let member = wf.member(&m.message.receiver).filter(|_| self.host.local);
            let ahead = match member {
                Some(member) if self.noop.contains(&member.parcel) => {
                    Some(crate::os::this_process())
                }
                Some(_) if planned.iter().all(|p| p.2.is_none()) => self.helpers.ready(),
                _ => None,
            };
            let to = turns::To {
                hop: hops,
                thread: &msgs[..i],
                claimed_by: ahead,
            };
            match turns::plan(self.layout, (wf, &mut self.parcels), parent, m, to).await {
                Ok(Some(run)) => planned.push((run, (m, hops), ahead)),
                Ok(None) => {}
                // The store may answer later: the coordinator ends and a new one resumes.
                Err(e @ RuntimeError::Store(_)) => return Err(e),
                // A member that cannot start (a missing secret, a dependency
                // down, its parcel gone) will not start on a second try either.
                Err(e) => {
                    self.stop(children).await;
                    let reason = format!("member `{}` could not start: {e}", m.message.receiver);
                    return Ok(Err((fail(reason), None)));
                }
            }
        }
        // Delivered together: one transaction for a fan-out's members.
        let runs: Vec<_> = planned.iter().map(|(run, _, _)| run.clone()).collect();
        let created = match here::deliver(self.store, self.layout, self.host, &runs).await {
            Ok(created) => created,
            // The store may answer later: the coordinator ends and a new one resumes.
            Err((_, e @ RuntimeError::Store(_))) => return Err(e),
            Err((i, e)) => {
                self.stop(children).await;
                let to = planned
                    .get(i)
                    .map_or("?", |p| p.1.0.message.receiver.as_str());
                let reason = format!("member `{to}` could not start: {e}");
                return Ok(Err((fail(reason), None)));
            }
        };
        let mut changed = false;
        for ((run, (m, hop), ahead), created) in planned.iter().zip(created) {
            let child = &run.0.id;
            if created && ahead.is_some() && !self.noop.contains(&run.0.parcel_digest) {
                self.spawned.insert(child.clone());
                self.helpers.start_claimed(self.store, child).await;
            }
            if created {
                log(&format!(
                    "{} starts as run {child} (hop {hop})",
                    m.message.receiver
                ));
            }
            changed = true;
        }
        Ok(Ok(changed))
    }

    /// Locally: a helper for each queued child not started yet, and the
    /// next turn's helper started ahead once no member is starting (or the
    /// last one handed a run said its agent started): its program start
    /// and database open would slow their claims.
    async fn start_helpers(&mut self, children: &HashMap<RunId, Run>) {
        let ours = (&self.noop, &self.parcels);
        let (store, layout) = (self.store, self.layout);
        spawn_queued(
            store,
            layout,
            children,
            &mut self.spawned,
            ours,
            &mut self.helpers,
        )
        .await;
        let starting = children
            .values()
            .any(|c| matches!(c.status(), Status::Queued | Status::Starting));
        if (!starting || self.helpers.heard.take_started()) && !self.all_noop {
            self.helpers.refill();
        }
    }

    /// With nothing live and nothing left to deliver: a fan-out's fan-in
    /// (`Again`: stored for the next pass), or the workflow's end (refused,
    /// or stalled). `None` while something is live or undelivered.
    async fn idle(
        &self,
        parent: &Run,
        children: &HashMap<RunId, Run>,
        msgs: &[Message],
    ) -> RuntimeResult<Option<Pass>> {
        let live = children.values().any(|c| !c.state.is_terminal());
        let undelivered = msgs.iter().any(|m| {
            m.message
                .child_run
                .as_ref()
                .is_some_and(|c| !children.contains_key(c))
        });
        if live || undelivered || self.looked_at.len() < children.len() {
            return Ok(None);
        }
        if self.wf.coordinator == Coordinator::FanOut {
            let Some(end) = fan_in(self.wf, msgs, children, &self.id) else {
                let reason = "every member of the fan-out failed".to_string();
                return Ok(Some(Pass::End((fail(reason), None))));
            };
            self.store
                .put_messages(&self.id, parent.attempt, &[end])
                .await?;
            return Ok(Some(Pass::Again));
        }
        if let Some(m) = msgs.iter().find(|m| m.message.receiver == REFUSED) {
            let reason = m.message.payload["reason"]
                .as_str()
                .unwrap_or("a message was refused");
            let reason = format!(
                "{reason}; the message was refused and no other member is running or pending (hint: send to a member named by AGENT, or add `ROUTE {} -> <agent> ON ERROR`)",
                m.message.sender
            );
            return Ok(Some(Pass::End((fail(reason), None))));
        }
        let reason = format!(
            "the workflow stalled: no member is running and none sent a message to {END} (hint: have the last agent send `{{\"type\":\"message\",\"to\":\"{END}\",…}}`, or add `ROUTE <agent> -> {END}`)"
        );
        Ok(Some(Pass::End((fail(reason), None))))
    }

    /// Stops every live child (see [`stop_children`]).
    async fn stop(&self, children: &HashMap<RunId, Run>) {
        stop_children(self.store, self.layout, children, self.host.local).await;
    }
}
