//! Notification receivers on loopback, for tests that check every message
//! Dispatch sends: an HTTP receiver (axum) that records each POST and
//! answers from a per-path script (`503` a few times, then `200`), and an
//! SMTP receiver whose protocol is the `mailin` crate's session (this file
//! only moves lines between a socket and it), recording each message.
//!
//! Each runs on its own thread and stops when dropped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpListener as StdListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use tokio::sync::oneshot;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One POST the HTTP receiver answered.
#[derive(Clone, Debug)]
pub struct Posted {
    pub path: String,
    /// Lowercased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// What the receiver answered.
    pub status: u16,
}

impl Posted {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

#[derive(Default)]
struct Shared {
    posted: Mutex<Vec<Posted>>,
    /// Per path: how many more requests get a 503.
    failing: Mutex<HashMap<String, u32>>,
}

/// An HTTP receiver on `127.0.0.1:PORT`.
pub struct HttpReceiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _stop: oneshot::Sender<()>,
}

impl HttpReceiver {
    pub fn start() -> std::io::Result<HttpReceiver> {
        let std_listener = StdListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let app = Router::new().fallback(receive).with_state(shared.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("http-receiver".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                        return;
                    };
                    let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                        let _ = stopped.await;
                    });
                    let _ = serve.await;
                });
            })?;
        Ok(HttpReceiver {
            addr,
            shared,
            _stop: stop,
        })
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next `n` requests to `path` are answered `503`.
    pub fn fail_next(&self, path: &str, n: u32) {
        lock(&self.shared.failing).insert(path.to_string(), n);
    }

    /// Every request so far, in arrival order.
    pub fn posted(&self) -> Vec<Posted> {
        lock(&self.shared.posted).clone()
    }

    /// The requests to `path` so far.
    pub fn posted_to(&self, path: &str) -> Vec<Posted> {
        self.posted()
            .into_iter()
            .filter(|p| p.path == path)
            .collect()
    }
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let path = uri.path().to_string();
    let status = {
        let mut failing = lock(&shared.failing);
        match failing.get_mut(&path) {
            Some(n) if *n > 0 => {
                *n -= 1;
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::OK,
        }
    };
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    lock(&shared.posted).push(Posted {
        path,
        headers,
        body: body.to_vec(),
        status: status.as_u16(),
    });
    status
}

/// One message the SMTP receiver accepted.
#[derive(Clone, Debug, Default)]
pub struct Mail {
    /// The envelope's sender and recipients (`MAIL FROM`, `RCPT TO`).
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent (headers and body).
    pub data: String,
}

impl Mail {
    /// The value of header `name` (any case), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut()
                && line.starts_with([' ', '\t'])
            {
                v.push_str(line.trim_start());
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_string());
            }
        }
        value
    }

    /// The body (after the headers).
    pub fn body(&self) -> &str {
        self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

/// An SMTP receiver on `127.0.0.1:PORT` (no TLS, no AUTH).
pub struct SmtpReceiver {
    addr: SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
}

#[derive(Clone)]
struct Recorder {
    mails: Arc<Mutex<Vec<Mail>>>,
    current: Mail,
}

impl mailin::Handler for Recorder {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> mailin::Response {
        self.current = Mail {
            from: from.to_string(),
            ..Mail::default()
        };
        mailin::response::OK
    }

    fn rcpt(&mut self, to: &str) -> mailin::Response {
        self.current.to.push(to.to_string());
        mailin::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.data.push_str(&String::from_utf8_lossy(buf));
        Ok(())
    }

    fn data_end(&mut self) -> mailin::Response {
        lock(&self.mails).push(std::mem::take(&mut self.current));
        mailin::response::OK
    }
}

impl SmtpReceiver {
    pub fn start() -> std::io::Result<SmtpReceiver> {
        let listener = StdListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let mails = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder {
            mails: mails.clone(),
            current: Mail::default(),
        };
        // The thread ends with the process (a test binary); the listener
        // refuses nothing meanwhile.
        std::thread::Builder::new()
            .name("smtp-receiver".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let recorder = recorder.clone();
                    std::thread::spawn(move || session(stream, recorder));
                }
            })?;
        Ok(SmtpReceiver { addr, mails })
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every message accepted so far.
    pub fn mails(&self) -> Vec<Mail> {
        lock(&self.mails).clone()
    }
}

/// One SMTP session: the greeting, then each line to `mailin` and its
/// answer back, until it closes the session.
fn session(stream: TcpStream, recorder: Recorder) {
    let Ok(peer) = stream.peer_addr() else { return };
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut session = mailin::SessionBuilder::new("receiver.test").build(peer.ip(), recorder);
    if session.greeting().write_to(&mut out).is_err() {
        return;
    }
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let answer = session.process(&line);
        match answer.action {
            mailin::Action::NoReply => continue,
            mailin::Action::Close => {
                let _ = answer.write_to(&mut out);
                let _ = out.flush();
                return;
            }
            _ => {
                if answer
                    .write_to(&mut out)
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}
