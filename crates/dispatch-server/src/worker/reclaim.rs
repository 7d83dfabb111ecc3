//! What a worker's previous process left on its root when it was killed
//! (`kill -9`, the OOM killer) before it could clean up: the process trees
//! of its runs, then their overlay workspaces. And what a run this worker
//! lets go of before it ended (drained back to the queue, its lease lost)
//! would leave: its workspace, which its aborted task no longer removes.

use dispatch_core::{RunId, now_ms};

use nix::sys::signal::Signal;

use super::{Held, Worker, kill};
use crate::metrics::Metrics;

impl Worker {
    /// Whether no live worker or local helper but this one holds run `id`:
    /// it ended, is queued, or its lease is this worker's name's or expired,
    /// and no live process of this machine (a local helper sharing the
    /// root, as under `dispatch ui`) holds it without a lease.
    async fn nobody_elses(&self, id: &RunId) -> bool {
        match self.store.lease(id).await {
            Ok(Some(lease)) => lease.owner == self.config.name || lease.expires_at <= now_ms(),
            // Ended, queued, or a local helper's.
            Ok(None) => match self.store.get_run(id).await {
                Ok(run) => !run.state.helper().is_some_and(|h| {
                    h != dispatch_runtime::os::this_process() && dispatch_runtime::os::is_alive(h)
                }),
                Err(dispatch_store::StoreError::NotFound(_)) => true,
                Err(_) => false,
            },
            Err(_) => false,
        }
    }

    /// The runs `ids` were let go of before they ended (their agents were
    /// sent SIGKILL): each one's recorded process group is killed and
    /// removed, and its workspace removed (only unmounted when
    /// the run asked to keep it), as a run that leaves a worker for a retry
    /// does, unless another worker holds the run by now. Off the runtime's
    /// thread: an unmount walks the whole mount table.
    pub(super) async fn leave_workspaces(&self, ids: Vec<RunId>) {
        let mut go = Vec::with_capacity(ids.len());
        for id in ids {
            if !self.nobody_elses(&id).await {
                continue;
            }
            let keep = self
                .store
                .run_extras(&id)
                .await
                .is_ok_and(|e| e.keep_workspace);
            go.push((id, keep));
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
        for id in std::mem::take(&mut self.lost_workspaces) {
            match self.store.get_run(&id).await {
                Ok(run) if run.state.is_terminal() => ended.push(id),
                // Removed meanwhile (`rm`): so is its directory.
                Err(dispatch_store::StoreError::NotFound(_)) => {}
                _ => waiting.push(id),
            }
        }
        self.lost_workspaces = waiting;
        if !ended.is_empty() {
            self.leave_workspaces(ended).await;
        }
    }

    /// Whether run `id` ended asking to keep its workspace.
    async fn kept(&self, id: &RunId) -> bool {
        let ended = self
            .store
            .get_run(id)
            .await
            .is_ok_and(|r| r.state.is_terminal());
        ended
            && self
                .store
                .run_extras(id)
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
        for id in runs {
            if !self.nobody_elses(&id).await {
                continue;
            }
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
        for (id, h) in held {
            match self
                .store
                .release(
                    &id,
                    h.store.fence(),
                    now_ms(),
                    "worker drained before the run finished",
                )
                .await
            {
                Ok(_) => {
                    self.summary.released += 1;
                    Metrics::add(&self.metrics.runs_released, 1);
                }
                Err(e) => self.log(&format!("run {id}: cannot release: {e}")),
            }
        }
        self.log(&format!(
            "released {} run(s) back to the queue",
            self.summary.released
        ));
    }
}
