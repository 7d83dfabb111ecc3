//! What a worker's previous process left on its root when it was killed
//! (`kill -9`, the OOM killer) before it could clean up: the process trees
//! of its runs, then their overlay workspaces. And what a run this worker
//! lets go of before it ended (drained back to the queue, its lease lost)
//! would leave: its workspace, which its aborted task no longer removes.
//!
//! Every store call here is bounded (a lease renewal's interval, `L/6`):
//! a worker stopping while cut off from its database must not wait for the
//! partition to heal. The first call that gets no answer ends the asking;
//! what was not checked stays as it is, for the next worker on this root.

use dispatch_core::{RunId, now_ms};
use dispatch_store::StoreError;

use nix::sys::signal::Signal;

use super::{Held, Worker, bounded, kill};
use crate::metrics::Metrics;

impl Worker {
    /// Whether no live worker or local helper but this one holds run `id`:
    /// it ended, is queued, or its lease is this worker's name's or expired,
    /// and no live process of this machine (a local helper sharing the
    /// root, as under `dispatch ui`) holds it without a lease. `None` when
    /// the database gave no answer in time.
    async fn nobody_elses(&self, id: &RunId) -> Option<bool> {
        let limit = self.times().renew_every();
        match bounded(self.store.lease(id), limit, "a lease's read").await {
            Ok(Some(lease)) => {
                Some(lease.owner == self.config.name || lease.expires_at <= now_ms())
            }
            // Ended, queued, or a local helper's.
            Ok(None) => match bounded(self.store.get_run(id), limit, "a run's read").await {
                Ok(run) => Some(!run.state.helper().is_some_and(|h| {
                    h != dispatch_runtime::os::this_process() && dispatch_runtime::os::is_alive(h)
                })),
                Err(StoreError::NotFound(_)) => Some(true),
                Err(StoreError::Unavailable { .. }) => None,
                Err(_) => Some(false),
            },
            Err(StoreError::Unavailable { .. }) => None,
            Err(_) => Some(false),
        }
    }

    /// Those of `ids` nobody else holds ([`Worker::nobody_elses`]), asked
    /// in order until the database does not answer; the rest are said (as
    /// `what`) and left.
    async fn only_ours(&self, ids: Vec<RunId>, what: &str) -> Vec<RunId> {
        let total = ids.len();
        let mut ours = Vec::with_capacity(total);
        for (i, id) in ids.into_iter().enumerate() {
            match self.nobody_elses(&id).await {
                Some(true) => ours.push(id),
                Some(false) => {}
                None => {
                    self.silent(total - i, what);
                    break;
                }
            }
        }
        ours
    }

    /// Says that the database went silent while `left` runs were still to
    /// be looked at, and what becomes of them.
    fn silent(&self, left: usize, what: &str) {
        if left == 0 {
            return;
        }
        self.log(&format!(
            "the database does not answer: {what} of {left} run(s) left for a worker on this \
             root to reclaim when it starts"
        ));
    }

    /// The runs `ids` were let go of before they ended (their agents were
    /// sent SIGKILL): each one's recorded process group is killed and
    /// removed, and its workspace removed (only unmounted when
    /// the run asked to keep it), as a run that leaves a worker for a retry
    /// does, unless another worker holds the run by now. Off the runtime's
    /// thread: an unmount walks the whole mount table.
    pub(super) async fn leave_workspaces(&self, ids: Vec<RunId>) {
        let limit = self.times().renew_every();
        let ours = self.only_ours(ids, "the workspaces").await;
        let total = ours.len();
        let mut go = Vec::with_capacity(total);
        for (i, id) in ours.into_iter().enumerate() {
            // Not known (no answer): only unmounted, its files left.
            match bounded(self.store.run_extras(&id), limit, "a run's extras").await {
                Ok(extras) => go.push((id, extras.keep_workspace)),
                Err(StoreError::Unavailable { .. }) => {
                    go.push((id, true));
                    self.silent(total - i - 1, "the workspaces");
                    break;
                }
                Err(_) => go.push((id, false)),
            }
        }
        let layout = self.config.layout.clone();
        let gone = tokio::task::spawn_blocking(move || {
            for (id, keep) in &go {
                dispatch_runtime::contain::remove_recorded(&layout, id);
                match keep {
                    true => dispatch_runtime::workspace::unmount(&layout, id),
                    false => dispatch_runtime::workspace::release(&layout, id),
                }
            }
        });
        if let Err(e) = gone.await {
            self.log(&format!("cannot remove the workspaces of runs let go: {e}"));
        }
    }

    /// The workspaces of runs whose lease this worker lost, once those runs
    /// ended: before that, the run may be back in the queue or held by
    /// another worker sharing this root, which a removal would break.
    pub(super) async fn leave_ended_workspaces(&mut self) {
        if self.lost_workspaces.is_empty() {
            return;
        }
        let mut ended = Vec::new();
        let mut waiting = Vec::new();
        let limit = self.times().renew_every();
        let mut silent = false;
        for id in std::mem::take(&mut self.lost_workspaces) {
            if silent {
                waiting.push(id);
                continue;
            }
            match bounded(self.store.get_run(&id), limit, "a run's read").await {
                Ok(run) if run.state.is_terminal() => ended.push(id),
                // Removed meanwhile (`rm`): so is its directory.
                Err(StoreError::NotFound(_)) => {}
                // Asked again at the next tick.
                Err(StoreError::Unavailable { .. }) => {
                    silent = true;
                    waiting.push(id);
                }
                _ => waiting.push(id),
            }
        }
        self.lost_workspaces = waiting;
        if !ended.is_empty() {
            self.leave_workspaces(ended).await;
        }
    }

    /// Whether run `id` ended asking to keep its workspace.
    /// Not known (no answer in time): not kept, so it is unmounted and its
    /// files stay.
    async fn kept(&self, id: &RunId) -> bool {
        let limit = self.times().renew_every();
        let ended = bounded(self.store.get_run(id), limit, "a run's read")
            .await
            .is_ok_and(|r| r.state.is_terminal());
        ended
            && bounded(self.store.run_extras(id), limit, "a run's extras")
                .await
                .is_ok_and(|e| e.keep_workspace)
    }

    /// Reclaims what this worker's previous process (killed before it
    /// cleaned up) left under its directory, for runs no live worker holds:
    /// ended, back in the queue, or leased to this worker's name or to no
    /// one any more. Each such run's process tree is killed first (its
    /// recorded group, see `dispatch_runtime::contain`), then its overlay
    /// workspace is unmounted, unless the run ended asking to keep it
    /// (until `dispatch rm`). Its files stay (the upper layer), as after a
    /// helper's death. Returns how many processes were killed and how many
    /// workspaces unmounted.
    pub(super) async fn reclaim_left_behind(&self) -> (usize, usize) {
        let layout = &self.config.layout;
        let mounted = dispatch_runtime::workspace::mounted(layout);
        let mut runs = dispatch_runtime::contain::recorded(layout);
        runs.extend(mounted.iter().cloned());
        runs.sort();
        runs.dedup();
        let (mut killed, mut unmounted) = (0, 0);
        for id in self
            .only_ours(runs, "the process trees and workspaces")
            .await
        {
            killed += dispatch_runtime::contain::kill_leftovers(layout, &id);
            if mounted.contains(&id) && !self.kept(&id).await {
                dispatch_runtime::workspace::unmount(layout, &id);
                unmounted += 1;
            }
        }
        (killed, unmounted)
    }

    /// The grace period is over: every run still in hand goes back to the
    /// queue, then its agent is killed.
    pub(super) async fn release_all(&mut self) {
        let held: Vec<(RunId, Held)> = self.held.drain().collect();
        let ids: Vec<RunId> = held.iter().map(|(id, _)| id.clone()).collect();
        // Each run's agent is stopped and its workspace removed while this
        // worker still holds the lease: no worker sharing this root can
        // claim the run and make its workspace meanwhile.
        for (id, h) in &held {
            h.store.lease().lose();
            kill(h, Signal::SIGKILL);
            h.task.abort();
            self.forget(id);
        }
        self.leave_workspaces(ids).await;
        let limit = self.times().renew_every();
        let mut unreleased = 0;
        for (id, h) in held {
            if unreleased > 0 {
                unreleased += 1;
                continue;
            }
            let release = self.store.release(
                &id,
                h.store.fence(),
                now_ms(),
                "worker drained before the run finished",
            );
            match bounded(release, limit, "a release").await {
                Ok(_) => {
                    self.summary.released += 1;
                    Metrics::add(&self.metrics.runs_released, 1);
                }
                Err(e @ StoreError::Unavailable { .. }) => {
                    self.log(&format!("run {id}: cannot release: {e}"));
                    unreleased = 1;
                }
                Err(e) => self.log(&format!("run {id}: cannot release: {e}")),
            }
        }
        if unreleased > 0 {
            self.log(&format!(
                "{unreleased} run(s) not released (the database does not answer): each goes \
                 back to the queue when its lease expires"
            ));
        }
        self.log(&format!(
            "released {} run(s) back to the queue",
            self.summary.released
        ));
    }
}
