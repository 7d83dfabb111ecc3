//! What a worker's previous process left on its root when it was killed
//! (`kill -9`, the OOM killer) before it could clean up: the process trees
//! of its runs, then their overlay workspaces.

use dispatch_core::{RunId, now_ms};

use super::Worker;

impl Worker {
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
            let nobodys = match self.store.lease(&id).await {
                Ok(Some(lease)) => lease.owner == self.config.name || lease.expires_at <= now_ms(),
                // Ended, or queued.
                Ok(None) => true,
                Err(_) => false,
            };
            if !nobodys {
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
}
