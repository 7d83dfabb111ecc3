//! The server is stopping: streams that would otherwise last as long as a
//! run (SSE events, followed logs, the dashboard's live parts) end at
//! once, so a graceful shutdown does not wait for the clients that hold
//! them open (a dashboard tab left open, `dispatch logs -f`).

use std::future::Future;
use std::pin::Pin;

use futures_util::Stream;
use futures_util::stream::{StreamExt, TakeUntil};
use tokio::sync::watch;

/// Whether the server is stopping (cheap to clone; one per request).
#[derive(Clone, Debug)]
pub struct Stopping(watch::Receiver<bool>);

/// Completes when the server starts stopping.
pub type Stopped = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Stopping {
    pub fn new(rx: watch::Receiver<bool>) -> Stopping {
        Stopping(rx)
    }

    /// Completes once the server is stopping (or its sender is gone).
    pub fn stopped(&self) -> Stopped {
        let mut rx = self.0.clone();
        Box::pin(async move {
            while !*rx.borrow_and_update() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
    }

    /// `stream`, ending when the server starts stopping.
    pub fn bound<S: Stream>(&self, stream: S) -> TakeUntil<S, Stopped> {
        stream.take_until(self.stopped())
    }
}
