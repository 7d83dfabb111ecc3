//! The `TOOL A2A` client: find the remote agent (its card at
//! `/.well-known/agent-card.json`, or the older `agent.json`), check it
//! against the parcel's and the operator's trust policy, then send the
//! model's input as one message: `message/stream` when the card says the
//! agent streams, else `message/send`, polling `tasks/get` while the task is
//! unfinished. A call that runs out of time cancels its task (`tasks/cancel`,
//! best effort). Whatever goes wrong is one line for the model.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dispatch_core::tool::A2aDiscovery;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use super::trust::{Policy, Required};
use super::wire::{self, AgentCard, Part, Reply, Role, Task, TaskState};

/// The most of a card or an answer read.
const MAX_BODY: usize = 4 << 20;
/// How often an unfinished task is asked about, at first and at most.
const POLL_FIRST: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_secs(2);

/// One `TOOL A2A`, ready to call.
pub struct Remote {
    /// The tool's name (for messages).
    pub tool: String,
    /// The declared URL.
    pub url: String,
    pub discovery: A2aDiscovery,
    /// The AUTH headers, values read from the declared secrets.
    pub headers: Vec<(String, String)>,
    pub expect_agent_name: Option<String>,
    pub expect_card_sha256: Option<String>,
    pub policy: Arc<Policy>,
}

/// Where calls go, once discovery is done.
#[derive(Clone, Debug, Default)]
struct Endpoint {
    url: String,
    agent: Option<String>,
    streaming: bool,
}

/// How one call ended: the model's text and the event's fields.
pub struct Answer {
    pub text: String,
    pub is_error: bool,
    pub meta: Map<String, Value>,
}

impl Answer {
    fn error(text: String, meta: Map<String, Value>) -> Answer {
        Answer {
            text: format!("error: {text}"),
            is_error: true,
            meta,
        }
    }
}

/// Sends `parts` to the remote agent within `timeout`.
pub async fn call(
    http: &reqwest::Client,
    remote: &Remote,
    parts: Vec<Part>,
    timeout: Duration,
) -> Answer {
    let deadline = Instant::now() + timeout;
    let mut meta = Map::new();
    meta.insert("url".into(), json!(remote.url));
    let endpoint = match tokio::time::timeout(timeout, discover(http, remote)).await {
        Ok(Ok(e)) => e,
        Ok(Err(why)) => return Answer::error(format!("A2A {}: {why}", remote.tool), meta),
        Err(_) => return timed_out(remote, timeout, meta),
    };
    meta.insert("endpoint".into(), json!(endpoint.url));
    if let Some(a) = &endpoint.agent {
        meta.insert("agent".into(), json!(a));
    }
    meta.insert("streamed".into(), json!(endpoint.streaming));
    let task_id = std::sync::Mutex::new(None::<String>);
    let message = wire::Message::new(Role::User, parts, new_id("msg"));
    let exchange = async {
        if endpoint.streaming {
            stream(http, remote, &endpoint, message, &task_id).await
        } else {
            send(http, remote, &endpoint, message, &task_id).await
        }
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let outcome = tokio::time::timeout(left, exchange).await;
    let id = task_id.lock().map(|g| g.clone()).unwrap_or_default();
    if let Some(id) = &id {
        meta.insert("task_id".into(), json!(id));
    }
    match outcome {
        Ok(Ok(reply)) => finish(remote, reply, meta),
        Ok(Err(why)) => Answer::error(format!("A2A {}: {why}", remote.tool), meta),
        Err(_) => {
            if let Some(id) = id {
                cancel(http, remote, &endpoint, &id).await;
                meta.insert("canceled".into(), json!(true));
            }
            timed_out(remote, timeout, meta)
        }
    }
}

fn timed_out(remote: &Remote, timeout: Duration, mut meta: Map<String, Value>) -> Answer {
    meta.insert("timed_out".into(), json!(true));
    Answer::error(
        format!(
            "A2A {}: the remote agent did not finish within {} ms (TIMEOUT)",
            remote.tool,
            timeout.as_millis()
        ),
        meta,
    )
}

/// The final reply as the model's text.
fn finish(remote: &Remote, reply: Reply, mut meta: Map<String, Value>) -> Answer {
    let task = match reply {
        Reply::Message(m) => {
            return Answer {
                text: m.text(),
                is_error: false,
                meta,
            };
        }
        Reply::Task(t) => t,
        Reply::Status(_) | Reply::Artifact(_) => {
            return Answer::error(
                format!("A2A {}: the remote agent's answer has no task", remote.tool),
                meta,
            );
        }
    };
    meta.insert("state".into(), json!(task.status.state.as_str()));
    let said = task
        .status
        .message
        .as_ref()
        .map(|m| m.text())
        .filter(|t| !t.is_empty());
    let output: Vec<String> = task
        .artifacts
        .iter()
        .map(|a| wire::parts_text(&a.parts))
        .filter(|t| !t.is_empty())
        .collect();
    match task.status.state {
        TaskState::Completed => Answer {
            text: if output.is_empty() {
                said.unwrap_or_default()
            } else {
                output.join("\n")
            },
            is_error: false,
            meta,
        },
        state => Answer::error(
            format!(
                "A2A {}: the remote task {} ended {}{}",
                remote.tool,
                task.id,
                state.as_str(),
                said.map(|s| format!(": {s}")).unwrap_or_default()
            ),
            meta,
        ),
    }
}

/// The endpoint to call: the card's, checked, or the declared URL.
async fn discover(http: &reqwest::Client, remote: &Remote) -> Result<Endpoint, String> {
    let required = remote.policy.check(&remote.url)?;
    let direct = Endpoint {
        url: rpc_fallback(&remote.url),
        ..Endpoint::default()
    };
    if remote.discovery == A2aDiscovery::Direct {
        if required.any() {
            return Err("the A2A trust policy requires the agent card's identity, but DISCOVERY direct reads no card (hint: DISCOVERY card)".into());
        }
        return Ok(direct);
    }
    let mut tried = Vec::new();
    for url in card_urls(&remote.url)? {
        match fetch_card(http, remote, &url).await {
            Ok(Some((card, raw))) => return checked(remote, &required, &url, card, &raw),
            Ok(None) => tried.push(url),
            Err(why) => {
                if remote.discovery == A2aDiscovery::Card || required.any() {
                    return Err(why);
                }
                tried.push(url);
            }
        }
    }
    if remote.discovery == A2aDiscovery::Card || required.any() {
        return Err(format!(
            "no agent card at {} (DISCOVERY {}{}) (hint: is URL the agent's base URL?)",
            tried.join(" nor "),
            remote.discovery.as_str(),
            if required.any() {
                ", and the trust policy requires its identity"
            } else {
                ""
            }
        ));
    }
    Ok(direct)
}

/// The JSON-RPC endpoint when no card names one, as upstream Dispatch has
/// it: `<url>/a2a` for a URL without a path, else the URL.
fn rpc_fallback(declared: &str) -> String {
    let trimmed = declared.trim_end_matches('/');
    match Url::parse(declared) {
        Ok(u) if u.path().trim_end_matches('/').is_empty() => format!("{trimmed}/a2a"),
        _ => trimmed.to_string(),
    }
}

/// Where the card may be: under the URL's path (less a final `/a2a`), then
/// at its origin.
fn card_urls(declared: &str) -> Result<Vec<String>, String> {
    let url = Url::parse(declared).map_err(|e| format!("`{declared}` is not a URL ({e})"))?;
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/a2a").unwrap_or(path);
    let mut bases = vec![format!("{origin}{path}")];
    if !path.is_empty() {
        bases.push(origin);
    }
    Ok(bases
        .iter()
        .flat_map(|b| wire::CARD_PATHS.iter().map(move |p| format!("{b}{p}")))
        .collect())
}

/// The card at `url`, with its raw body; `None` when there is none (404).
async fn fetch_card(
    http: &reqwest::Client,
    remote: &Remote,
    url: &str,
) -> Result<Option<(AgentCard, Vec<u8>)>, String> {
    let mut req = http.get(url).header("accept", "application/json");
    for (k, v) in &remote.headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.map_err(|e| unreachable_line(url, &e))?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let body = read(resp).await.map_err(|e| format!("GET {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "GET {url} answered HTTP {}: {}",
            status.as_u16(),
            quote(&body)
        ));
    }
    let card: AgentCard = serde_json::from_slice(&body).map_err(|e| {
        format!(
            "{url} is not an A2A agent card ({e}); it begins: {}",
            quote(&body)
        )
    })?;
    Ok(Some((card, body)))
}

/// The parcel's and the operator's checks of a discovered card.
fn checked(
    remote: &Remote,
    required: &Required,
    card_url: &str,
    card: AgentCard,
    raw: &[u8],
) -> Result<Endpoint, String> {
    let digest = hex::encode(Sha256::digest(raw));
    for want in [&remote.expect_card_sha256, &required.card_sha256]
        .into_iter()
        .flatten()
    {
        if !want.eq_ignore_ascii_case(&digest) {
            return Err(format!(
                "the agent card at {card_url} has SHA-256 {digest}, not the expected {want} (EXPECT_CARD_SHA256 or the trust policy)"
            ));
        }
    }
    for want in [&remote.expect_agent_name, &required.agent_name]
        .into_iter()
        .flatten()
    {
        if card.name.is_empty() {
            return Err(format!(
                "the agent card at {card_url} has no name, and `{want}` is required"
            ));
        }
        if card.name != *want {
            return Err(format!(
                "the agent card at {card_url} names `{}`, not the expected `{want}`",
                card.name
            ));
        }
    }
    let endpoint = card
        .url
        .clone()
        .unwrap_or_else(|| rpc_fallback(&remote.url));
    let (declared, found) = (Url::parse(&remote.url), Url::parse(&endpoint));
    let same_origin = match (&declared, &found) {
        (Ok(a), Ok(b)) => a.origin() == b.origin(),
        _ => false,
    };
    if !same_origin {
        return Err(format!(
            "the agent card at {card_url} points to {endpoint}, off the declared origin of {} (a card may refine the path, never the origin)",
            remote.url
        ));
    }
    remote.policy.check(&endpoint)?;
    Ok(Endpoint {
        url: endpoint,
        agent: Some(card.name).filter(|n| !n.is_empty()),
        streaming: card.capabilities.streaming,
    })
}

/// `message/send`, then `tasks/get` until the task is final.
async fn send(
    http: &reqwest::Client,
    remote: &Remote,
    endpoint: &Endpoint,
    message: wire::Message,
    task_id: &std::sync::Mutex<Option<String>>,
) -> Result<Reply, String> {
    let params = json!({"message": message, "configuration": {"blocking": true}});
    let mut reply = rpc(http, remote, &endpoint.url, "message/send", params).await?;
    let mut wait = POLL_FIRST;
    loop {
        let task = match &reply {
            Reply::Task(t) => t,
            _ => return Ok(reply),
        };
        if let Ok(mut g) = task_id.lock() {
            *g = Some(task.id.clone());
        }
        if task.status.state.is_final() {
            return Ok(reply);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(POLL_MAX);
        reply = rpc(
            http,
            remote,
            &endpoint.url,
            "tasks/get",
            json!({"id": task.id}),
        )
        .await?;
    }
}

/// `message/stream`: the events until the task's final one, folded into a task.
async fn stream(
    http: &reqwest::Client,
    remote: &Remote,
    endpoint: &Endpoint,
    message: wire::Message,
    task_id: &std::sync::Mutex<Option<String>>,
) -> Result<Reply, String> {
    let url = &endpoint.url;
    let body = wire::request(
        &new_id("req"),
        "message/stream",
        json!({"message": message}),
    );
    let mut req = http
        .post(url)
        .json(&body)
        .header("accept", "text/event-stream");
    for (k, v) in &remote.headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.map_err(|e| unreachable_line(url, &e))?;
    let status = resp.status();
    let is_sse = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
    if !status.is_success() || !is_sse {
        // A JSON-RPC error comes back as plain JSON.
        let text = read(resp).await.map_err(|e| format!("POST {url}: {e}"))?;
        return answer_of(url, status.as_u16(), &text, "message/stream");
    }
    let mut fold = Fold::default();
    let mut events = resp.bytes_stream().eventsource();
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| format!("POST {url}: the event stream broke: {e}"))?;
        let reply = answer_of(url, 200, event.data.as_bytes(), "message/stream")?;
        let over = fold.take(reply);
        if let (Some(id), Ok(mut g)) = (fold.task_id(), task_id.lock()) {
            *g = Some(id);
        }
        if over {
            break;
        }
    }
    fold.end().map_err(|e| format!("POST {url}: {e}"))
}

/// Appends streamed chunks: a text chunk continues the text before it.
fn append(parts: &mut Vec<Part>, more: Vec<Part>) {
    for p in more {
        match (parts.last_mut(), p) {
            (Some(Part::Text { text }), Part::Text { text: next }) => text.push_str(&next),
            (_, p) => parts.push(p),
        }
    }
}

/// The events of a `message/stream`, folded into the task they tell of
/// (artifact chunks appended, the last status kept), or the message that
/// answered instead.
#[derive(Default)]
struct Fold {
    task: Option<Task>,
    message: Option<wire::Message>,
}

impl Fold {
    /// Takes one event; true when the exchange is over.
    fn take(&mut self, reply: Reply) -> bool {
        match reply {
            Reply::Message(m) => {
                self.message = Some(m);
                true
            }
            Reply::Task(t) => {
                let done = t.status.state.is_final();
                self.task = Some(t);
                done
            }
            Reply::Artifact(a) => {
                let t = self.task.get_or_insert_with(|| {
                    let status = wire::TaskStatus {
                        state: TaskState::Working,
                        message: None,
                        timestamp: None,
                    };
                    Task::new(a.task_id.clone(), a.context_id.clone(), status)
                });
                match t
                    .artifacts
                    .iter_mut()
                    .find(|x| x.artifact_id == a.artifact.artifact_id)
                {
                    Some(x) if a.append => append(&mut x.parts, a.artifact.parts),
                    Some(x) => *x = a.artifact,
                    None => t.artifacts.push(a.artifact),
                }
                false
            }
            Reply::Status(s) => {
                let t = self.task.get_or_insert_with(|| {
                    Task::new(s.task_id.clone(), s.context_id.clone(), s.status.clone())
                });
                t.status = s.status;
                s.is_final || t.status.state.is_final()
            }
        }
    }

    fn task_id(&self) -> Option<String> {
        self.task.as_ref().map(|t| t.id.clone())
    }

    /// The answer, once the stream is over.
    fn end(self) -> Result<Reply, String> {
        if let Some(m) = self.message {
            return Ok(Reply::Message(m));
        }
        match self.task {
            Some(t) if t.status.state.is_final() => Ok(Reply::Task(t)),
            Some(t) => Err(format!(
                "the event stream ended with task {} still {}",
                t.id,
                t.status.state.as_str()
            )),
            None => Err("the event stream ended without a task".into()),
        }
    }
}

/// One JSON-RPC call; its result, or one line saying what went wrong.
async fn rpc(
    http: &reqwest::Client,
    remote: &Remote,
    url: &str,
    method: &str,
    params: Value,
) -> Result<Reply, String> {
    let mut req = http
        .post(url)
        .json(&wire::request(&new_id("req"), method, params))
        .header("accept", "application/json");
    for (k, v) in &remote.headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.map_err(|e| unreachable_line(url, &e))?;
    let status = resp.status().as_u16();
    let body = read(resp).await.map_err(|e| format!("POST {url}: {e}"))?;
    answer_of(url, status, &body, method)
}

/// A JSON-RPC answer's result, or its error, as one line.
fn answer_of(url: &str, status: u16, body: &[u8], method: &str) -> Result<Reply, String> {
    if matches!(status, 401 | 403) {
        return Err(format!(
            "{url} refused the credentials ({method} answered HTTP {status}) (hint: check the TOOL line's AUTH and the value of its SECRET)"
        ));
    }
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            return Err(format!(
                "{url} is not an A2A agent: {method} answered HTTP {status} with something that is not JSON-RPC; it begins: {}",
                quote(body)
            ));
        }
    };
    if let Some(e) = v.get("error") {
        let code = e.get("code").and_then(Value::as_i64).unwrap_or_default();
        let message = e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        return Err(format!("{method} failed: JSON-RPC error {code}: {message}"));
    }
    match v.get("result") {
        Some(r) if v.get("jsonrpc").is_some() => {
            Reply::from_value(r.clone()).map_err(|e| format!("{method} answered {e}"))
        }
        _ => Err(format!(
            "{url} is not an A2A agent: {method} answered HTTP {status} without a JSON-RPC result; it begins: {}",
            quote(body)
        )),
    }
}

/// Best effort: the task is no longer wanted.
async fn cancel(http: &reqwest::Client, remote: &Remote, endpoint: &Endpoint, id: &str) {
    let call = rpc(
        http,
        remote,
        &endpoint.url,
        "tasks/cancel",
        json!({"id": id}),
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), call).await;
}

async fn read(resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("the answer broke off: {e}"))?;
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY {
            return Err(format!("the answer is larger than {MAX_BODY} bytes"));
        }
    }
    Ok(body)
}

fn unreachable_line(url: &str, e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    format!("cannot reach the A2A agent at {url}: {text}")
}

fn quote(body: &[u8]) -> String {
    dispatch_core::event::shorten(String::from_utf8_lossy(body).trim(), 120)
}

/// A fresh id for a message or a request.
pub fn new_id(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "{prefix}-{:x}-{}-{n}",
        dispatch_core::now_ms(),
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_card_is_looked_for_under_the_path_then_at_the_origin() {
        assert_eq!(
            card_urls("https://a.example.com").expect("ok"),
            [
                "https://a.example.com/.well-known/agent-card.json",
                "https://a.example.com/.well-known/agent.json"
            ]
        );
        let urls = card_urls("http://127.0.0.1:9/agents/x/").expect("ok");
        assert_eq!(
            urls[0],
            "http://127.0.0.1:9/agents/x/.well-known/agent-card.json"
        );
        assert_eq!(urls[3], "http://127.0.0.1:9/.well-known/agent.json");
        let urls = card_urls("https://a.example.com/a2a").expect("ok");
        assert_eq!(urls[0], "https://a.example.com/.well-known/agent-card.json");
    }

    #[test]
    fn without_a_card_a_bare_origin_is_called_at_a2a_as_upstream_does() {
        assert_eq!(
            rpc_fallback("https://a.example.com"),
            "https://a.example.com/a2a"
        );
        assert_eq!(
            rpc_fallback("https://a.example.com/"),
            "https://a.example.com/a2a"
        );
        assert_eq!(
            rpc_fallback("https://a.example.com/rpc/"),
            "https://a.example.com/rpc"
        );
    }

    /// A `message/stream` answer as a2a-python's server writes it: the
    /// task, a working status, the output in two appended chunks, the end.
    const RECORDED_STREAM: &str = r#"data: {"id":"r1","jsonrpc":"2.0","result":{"contextId":"c9","history":[{"contextId":"c9","kind":"message","messageId":"m1","parts":[{"kind":"text","text":"plan"}],"role":"user","taskId":"t9"}],"id":"t9","kind":"task","status":{"state":"submitted"}}}

data: {"id":"r1","jsonrpc":"2.0","result":{"contextId":"c9","final":false,"kind":"status-update","status":{"state":"working","timestamp":"2025-08-01T10:00:00.000000+00:00"},"taskId":"t9"}}

data: {"id":"r1","jsonrpc":"2.0","result":{"append":false,"artifact":{"artifactId":"a1","name":"answer","parts":[{"kind":"text","text":"Take the "}]},"contextId":"c9","kind":"artifact-update","lastChunk":false,"taskId":"t9"}}

data: {"id":"r1","jsonrpc":"2.0","result":{"append":true,"artifact":{"artifactId":"a1","parts":[{"kind":"text","text":"9:40."}]},"contextId":"c9","kind":"artifact-update","lastChunk":true,"taskId":"t9"}}

data: {"id":"r1","jsonrpc":"2.0","result":{"contextId":"c9","final":true,"kind":"status-update","status":{"state":"completed","timestamp":"2025-08-01T10:00:01.000000+00:00"},"taskId":"t9"}}
"#;

    fn fold(stream: &str) -> Result<Reply, String> {
        let mut f = Fold::default();
        for data in stream.lines().filter_map(|l| l.strip_prefix("data: ")) {
            let reply = answer_of("http://x/", 200, data.as_bytes(), "message/stream")?;
            if f.take(reply) {
                break;
            }
        }
        f.end()
    }

    #[test]
    fn a_recorded_stream_folds_into_the_finished_task() {
        let Ok(Reply::Task(t)) = fold(RECORDED_STREAM) else {
            panic!("a task")
        };
        assert_eq!(
            (t.id.as_str(), t.status.state),
            ("t9", TaskState::Completed)
        );
        let remote = Remote {
            tool: "planner".into(),
            url: "http://x/".into(),
            discovery: A2aDiscovery::Auto,
            headers: Vec::new(),
            expect_agent_name: None,
            expect_card_sha256: None,
            policy: Arc::default(),
        };
        let answer = finish(&remote, Reply::Task(t), Map::new());
        assert_eq!(
            (answer.text.as_str(), answer.is_error),
            ("Take the 9:40.", false)
        );
        // Cut before its end, it says where the task was left.
        let cut: String = RECORDED_STREAM
            .split("\n\n")
            .take(3)
            .collect::<Vec<_>>()
            .join("\n\n");
        let e = fold(&cut).expect_err("unfinished");
        assert_eq!(e, "the event stream ended with task t9 still working");
    }

    #[test]
    fn an_answer_that_is_not_json_rpc_says_so_in_one_line() {
        let e = answer_of("http://x/", 200, b"<html>hi</html>", "message/send").expect_err("html");
        assert!(
            e.contains("is not an A2A agent") && !e.contains('\n'),
            "{e}"
        );
        let e = answer_of("http://x/", 200, br#"{"ok":1}"#, "message/send").expect_err("json");
        assert!(e.contains("without a JSON-RPC result"), "{e}");
        let e = answer_of(
            "http://x/",
            200,
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"nope"}}"#,
            "tasks/get",
        )
        .expect_err("error");
        assert_eq!(e, "tasks/get failed: JSON-RPC error -32601: nope");
    }
}
