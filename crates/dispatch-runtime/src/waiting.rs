//! Why a local queued run waits, for `ps` and `inspect-run` (as a server
//! says it in `waiting`): its project at a hard limit of its quota (`--on-hard
//! wait`), whose helper waits for room. Worked out when asked, from the
//! store (the quota and what is used of it), so it is never stale; a
//! backoff is in the status already.

use std::collections::HashMap;

use dispatch_core::{RunId, RunState, Ts};
use dispatch_store::{QuotaUse, Run, Store};

/// Why each queued run of `runs` waits, when its project's quota holds it
/// back; each project's quota is read once.
pub async fn reasons<S: Store + ?Sized>(
    store: &S,
    runs: &[Run],
    now: Ts,
) -> HashMap<RunId, String> {
    let mut caps: HashMap<&str, Option<String>> = HashMap::new();
    let mut out = HashMap::new();
    for run in runs {
        let RunState::Queued { not_before } = &run.state else {
            continue;
        };
        if not_before.is_some_and(|at| at > now) {
            continue;
        }
        let why = match caps.get(run.project.as_str()) {
            Some(why) => why.clone(),
            None => {
                let why = project_capped(store, &run.project, now).await;
                caps.insert(&run.project, why.clone());
                why
            }
        };
        if let Some(why) = why {
            out.insert(run.id.clone(), why);
        }
    }
    out
}

/// Why `run` waits, when its project's quota holds it back.
pub async fn reason<S: Store + ?Sized>(store: &S, run: &Run, now: Ts) -> Option<String> {
    reasons(store, std::slice::from_ref(run), now)
        .await
        .remove(&run.id)
}

/// The first hard limit `project` has reached, said as a reason.
async fn project_capped<S: Store + ?Sized>(store: &S, project: &str, now: Ts) -> Option<String> {
    let used = store.quota_use(&[project.to_string()], now).await.ok()?;
    used.iter()
        .find(|u| u.hard_reached())
        .map(QuotaUse::waiting_text)
}
