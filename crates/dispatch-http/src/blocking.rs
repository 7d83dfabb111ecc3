//! Requests for callers that are plain functions (the CLI's remote
//! commands reading `std::io::Read` bodies, dependency probes, tests),
//! whatever runtime they are called from.
//!
//! `reqwest::blocking` refuses to run inside a Tokio runtime (the CLI runs
//! in a current-thread one), so the requests run on one small runtime
//! thread of this module's own ([`handle`]) and the caller waits for them by
//! parking its thread ([`wait`]). A body is read as it arrives.

use std::future::Future;
use std::io::Read;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

/// An answer: status, headers, and the body still to read.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    body: Body,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Response {
    /// The body, read to the end.
    pub fn text(mut self) -> std::io::Result<String> {
        let mut out = String::new();
        self.body.read_to_string(&mut out)?;
        Ok(out)
    }

    /// The body, read to the end, as bytes.
    pub fn bytes(mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.body.read_to_end(&mut out)?;
        Ok(out)
    }

    /// The body as a reader (for streams).
    pub fn into_reader(self) -> Box<dyn Read + Send> {
        Box::new(self.body)
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (any case), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Sends `request` (built on any client) and waits for its status and
/// headers; the body is read as it arrives. `Err(None)` when the request's
/// task died (a panic in the client), `Err(Some(e))` for the client's error.
pub fn send(request: reqwest::RequestBuilder) -> Result<Response, Option<reqwest::Error>> {
    send_with(async move { request.send().await })
}

/// [`send`] for a request that is made ready asynchronously first (a body
/// streamed from a file that is opened there).
pub fn send_with<F>(request: F) -> Result<Response, Option<reqwest::Error>>
where
    F: Future<Output = Result<reqwest::Response, reqwest::Error>> + Send + 'static,
{
    let sent = handle().spawn(async move {
        let response = request.await?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_string(), v)
            })
            .collect();
        Ok::<_, reqwest::Error>((status, headers, pump(response)))
    });
    match wait(sent) {
        Ok(Ok((status, headers, rx))) => Ok(Response {
            status,
            headers,
            body: Body {
                rx,
                chunk: Bytes::new(),
            },
        }),
        Ok(Err(e)) => Err(Some(e)),
        Err(_) => Err(None),
    }
}

/// Runs `fut` on this module's runtime and waits for it; `None` when it
/// panicked.
pub fn run<F>(fut: F) -> Option<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    wait(handle().spawn(fut)).ok()
}

/// Streams `response`'s body into a channel the blocking reader drains;
/// stops when the reader is dropped.
fn pump(mut response: reqwest::Response) -> mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel(8);
    handle().spawn(async move {
        loop {
            let next = match response.chunk().await {
                Ok(Some(chunk)) => Ok(chunk),
                Ok(None) => return,
                Err(e) => Err(std::io::Error::other(e)),
            };
            let failed = next.is_err();
            if tx.send(next).await.is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// A body being read: chunks from [`pump`].
struct Body {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    chunk: Bytes,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match wait(self.rx.recv()) {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// The runtime requests run on: a current-thread runtime driven by one
/// thread of its own, started on the first request.
pub fn handle() -> &'static Handle {
    static RUNTIME: OnceLock<Handle> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime starts (the process is out of threads or files otherwise)");
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("dispatch-http".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .expect("a thread starts (the process is out of threads otherwise)");
        handle
    })
}

/// Waits for `fut` by parking this thread, whatever runtime it is in: the
/// work itself runs on [`handle`]. `unconstrained`: inside a caller's
/// runtime, tokio's cooperative budget would otherwise turn a long body
/// into a busy loop (the budget is only refilled when a task yields).
pub fn wait<F: Future>(fut: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(tokio::task::unconstrained(fut));
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}
