//! What the native agent courier shares across runs in one process: the
//! cancellation of runs whose model loop is an async task here (a worker
//! passes a stop request on through [`cancel`]), and the live stream of
//! generated text ([`deltas`]) that the API's SSE streams subscribe to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use dispatch_core::RunId;
use tokio::sync::{Notify, broadcast};

fn cancels() -> &'static Mutex<HashMap<RunId, Arc<Notify>>> {
    static CANCELS: OnceLock<Mutex<HashMap<RunId, Arc<Notify>>>> = OnceLock::new();
    CANCELS.get_or_init(Default::default)
}

/// Registers a run whose loop runs in this process; dropped, it unregisters.
pub(crate) struct CancelGuard {
    id: RunId,
    pub(crate) notify: Arc<Notify>,
}

impl CancelGuard {
    pub(crate) fn register(id: &RunId) -> CancelGuard {
        let notify = Arc::new(Notify::new());
        if let Ok(mut map) = cancels().lock() {
            map.insert(id.clone(), notify.clone());
        }
        CancelGuard {
            id: id.clone(),
            notify,
        }
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = cancels().lock() {
            map.remove(&self.id);
        }
    }
}

/// Stops the model loop of run `id` if it runs in this process (its
/// in-flight request is dropped at once). True when there was one.
pub fn cancel(id: &RunId) -> bool {
    let notify = cancels().lock().ok().and_then(|m| m.get(id).cloned());
    match notify {
        Some(n) => {
            n.notify_one();
            true
        }
        None => false,
    }
}

/// The HTTP client every model call (and HTTP tool) of this process uses
/// (connections to a provider are reused across runs): the workspace's
/// (`dispatch_http`). When `DISPATCH_CACERT` cannot be used it is built
/// without it, and [`client_problem`] says why (a run is refused with it).
pub fn client() -> &'static reqwest::Client {
    &built().0
}

/// Why [`client`] was built without `DISPATCH_CACERT`, if it was.
pub fn client_problem() -> Option<&'static str> {
    built().1.as_deref()
}

fn built() -> &'static (reqwest::Client, Option<String>) {
    static CLIENT: OnceLock<(reqwest::Client, Option<String>)> = OnceLock::new();
    CLIENT.get_or_init(|| match dispatch_http::client("agent") {
        Ok(client) => (client, None),
        Err(e) => (dispatch_http::fallback(), Some(e.to_string())),
    })
}

/// Builds the client ahead of the first call (`dispatch run` does it while
/// the run is created).
pub fn warm_client() {
    let _ = client();
}

/// A piece of generated text of a run, as it arrived from the model.
#[derive(Clone, Debug)]
pub struct TextDelta {
    pub run_id: RunId,
    pub attempt: u32,
    pub text: String,
}

/// Every delta generated in this process (a worker inside `dispatch
/// server` shares it with the API). Subscribers filter by run.
pub fn deltas() -> &'static broadcast::Sender<TextDelta> {
    static DELTAS: OnceLock<broadcast::Sender<TextDelta>> = OnceLock::new();
    DELTAS.get_or_init(|| broadcast::channel(4096).0)
}
