//! `dispatch serve --a2a`: the service's listener as an A2A agent.
//!
//! - `GET /.well-known/agent-card.json` (and the older `agent.json`): the
//!   card built from the Agentfile, served without the shared secret (it
//!   holds none, and a client needs it to learn how to authenticate).
//! - `POST <path>` (the listen path, `/` by default): JSON-RPC 2.0, behind
//!   the listener's checks (shared secret as `Authorization: Bearer`, size
//!   limits). `message/send` and `message/stream` each admit one wake, as
//!   any HTTP wake is (the overlap policy applies), whose heartbeat run is
//!   the task: its id is the task id. `message/send` answers when the run
//!   has ended (unless `configuration.blocking` is false); `message/stream`
//!   streams the task, its status changes, its output as an artifact and the
//!   final status as server-sent events. `tasks/get` answers from the run's
//!   state in the store; `tasks/resubscribe` streams it again;
//!   `tasks/cancel` stops the run as `dispatch stop` does;
//!   `tasks/pushNotificationConfig/set|get|list|delete` (and
//!   `configuration.pushNotificationConfig`) keep the client's webhook for
//!   a task (see `a2a_push`).
//!
//! The runs are durable: a client that goes away leaves its run running,
//! and `tasks/get` finds it later.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dispatch_agent::a2a::wire::{
    self, ArtifactUpdate, Reply, SendParams, StatusUpdate, TaskIdParams, code,
};
use dispatch_core::RunId;
use dispatch_store::{Run, Store};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::a2a_task::{input_of, task_of};
use super::check;
use super::ingress::Ingress;

/// A response body: whole, or a stream of server-sent events.
pub type Body = BoxBody<Bytes, Infallible>;

/// How often a followed run is read: every `FOLLOW_FIRST` for its first
/// `FOLLOW_BRISK` (most runs an A2A client waits on are short), then less
/// often, up to every `FOLLOW_MAX`.
const FOLLOW_FIRST: Duration = Duration::from_millis(20);
const FOLLOW_BRISK: Duration = Duration::from_secs(2);
const FOLLOW_MAX: Duration = Duration::from_millis(250);
/// How long `tasks/cancel` waits for the run to end before answering.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// What the A2A side of a listener knows.
pub struct A2aAgent {
    /// The card, serialized once.
    pub card: Bytes,
    /// Where JSON-RPC requests go: the listen path, or `/` and `/a2a` (where
    /// upstream Dispatch's client calls an agent that has no card).
    pub rpc_paths: Vec<String>,
    pub store: Arc<dyn Store>,
    pub service: RunId,
    /// The push notification configs of its tasks.
    pub(super) pushes: Arc<super::a2a_push::Pushes>,
    /// Where its tasks run: this machine's service helper, or the cluster.
    pub host: Arc<dyn A2aHost>,
}

/// Where an A2A agent's tasks run.
#[async_trait::async_trait]
pub trait A2aHost: Send + Sync {
    /// Admits `message` (its input `payload`) as a task of the service in
    /// session `session` (a name under its parcel), `detail` going into
    /// its `wake` event; the task's run, just created. Else the HTTP
    /// status (503: busy or stopping) and why.
    async fn admit(
        &self,
        payload: Value,
        detail: Value,
        session: &str,
    ) -> Result<Run, (StatusCode, String)>;
    /// Stops the task's run (`tasks/cancel`), waiting a little for its end.
    async fn cancel(&self, run: &Run);
    /// Why push notifications may not go to `url` (beyond its being an
    /// http(s) URL), if they may not.
    fn check_push_url(&self, _url: &str) -> Result<(), String> {
        Ok(())
    }
    /// The client push notifications are sent with.
    fn push_client(&self) -> reqwest::Client {
        crate::native::client().clone()
    }
}

impl A2aAgent {
    /// The agent of `service` whose card is `card`, its tasks run by `host`.
    pub fn new(
        card: &dispatch_agent::a2a::wire::AgentCard,
        rpc_paths: Vec<String>,
        store: Arc<dyn Store>,
        service: RunId,
        host: Arc<dyn A2aHost>,
    ) -> A2aAgent {
        A2aAgent {
            card: serde_json::to_vec(card).unwrap_or_default().into(),
            rpc_paths,
            store,
            service,
            pushes: Default::default(),
            host,
        }
    }
}

pub(super) fn whole(status: StatusCode, body: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Answers one request to an A2A listener.
pub(super) async fn handle(
    req: Request<Incoming>,
    ing: &Ingress,
    agent: &Arc<A2aAgent>,
    _remote: SocketAddr,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    if parts.method == Method::GET && wire::CARD_PATHS.contains(&path.as_str()) {
        let mut r = Response::new(Full::new(agent.card.clone()).boxed());
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return r;
    }
    if !agent.rpc_paths.contains(&path) {
        return whole(
            StatusCode::NOT_FOUND,
            &json!({"code": "not_found", "message": format!("no such path (hint: the agent card is at {}, JSON-RPC at {})", wire::CARD_PATHS[0], agent.rpc_paths.join(" and "))}),
        );
    }
    if parts.method != Method::POST {
        let mut r = whole(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"code": "method_not_allowed", "message": "A2A JSON-RPC takes POST"}),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let p = &ing.policy;
    // The path is checked above (`/a2a` is not the policy's).
    if let Err(r) = check::check_head(
        p,
        ing.secret_digest.as_deref(),
        &parts.method,
        p.path.as_deref().unwrap_or(&path),
        &parts.headers,
    ) {
        let mut resp = whole(r.status, &r.body());
        for (name, value) in r.headers {
            resp.headers_mut().insert(name, value);
        }
        return resp;
    }
    let body = match Limited::new(body, p.max_body_bytes as usize)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let r = check::body_too_large(p);
            return whole(r.status, &r.body());
        }
        Err(_) => {
            let r = check::bad_body();
            return whole(r.status, &r.body());
        }
    };
    rpc(agent, &body).await
}

pub(super) fn rpc_error(id: &Value, code: i64, message: impl AsRef<str>) -> Response<Body> {
    whole(StatusCode::OK, &wire::failure(id, code, message.as_ref()))
}

/// The request's params as `T`, or what is wrong with them.
pub(super) fn params<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, String> {
    serde_json::from_value(v.get("params").cloned().unwrap_or(Value::Null))
        .map_err(|e| format!("invalid params: {e}"))
}

/// Answers one JSON-RPC request `body` (checked already: the secret, the
/// size) to `agent`.
pub async fn rpc(agent: &Arc<A2aAgent>, body: &[u8]) -> Response<Body> {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return rpc_error(&Value::Null, code::PARSE_ERROR, format!("not JSON: {e}")),
    };
    let id = v.get("id").cloned().unwrap_or(Value::Null);
    let method = match (v.get("jsonrpc").and_then(Value::as_str), v.get("method")) {
        (Some("2.0"), Some(Value::String(m))) => m.clone(),
        _ => {
            return rpc_error(
                &id,
                code::INVALID_REQUEST,
                "not a JSON-RPC 2.0 request (hint: {\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"message/send\",\"params\":{…}})",
            );
        }
    };
    match method.as_str() {
        "message/send" | "message/stream" => {
            let p: SendParams = match params(&v) {
                Ok(p) => p,
                Err(e) => return rpc_error(&id, code::INVALID_PARAMS, e),
            };
            if let Some(task) = &p.message.task_id {
                return continuing(agent, &id, task).await;
            }
            let push = p
                .configuration
                .as_ref()
                .and_then(|c| c.push_notification_config.clone());
            if let Some(Err(e)) = push.as_ref().map(|c| super::a2a_push::check(agent, c)) {
                return rpc_error(&id, code::INVALID_PARAMS, e);
            }
            // The conversation: the client's context, else a new one. Its
            // tasks run one after another in one session.
            let context = match &p.message.context_id {
                Some(c) => match check_context(c) {
                    Ok(()) => c.clone(),
                    Err(e) => return rpc_error(&id, code::INVALID_PARAMS, e),
                },
                None => RunId::new().to_string(),
            };
            let detail = json!({"a2a": {
                "message_id": p.message.message_id,
                "context_id": context,
            }});
            let admitted = agent
                .host
                .admit(input_of(&p.message), detail, &session_of(&context))
                .await;
            let run = match admitted {
                Ok(run) => run,
                Err((status, message)) => {
                    let mut r = whole(status, &wire::failure(&id, code::INTERNAL_ERROR, &message));
                    if status == StatusCode::SERVICE_UNAVAILABLE {
                        r.headers_mut()
                            .insert("retry-after", HeaderValue::from_static("1"));
                    }
                    return r;
                }
            };
            if let Some(config) = push {
                // Checked above: it is kept.
                let _ = super::a2a_push::subscribe(agent, &run, &context, config);
            }
            if method == "message/stream" {
                return stream(agent.clone(), id, run, context);
            }
            let blocking = p.configuration.and_then(|c| c.blocking).unwrap_or(true);
            let run = if blocking {
                follow(&*agent.store, &run, |_| true).await
            } else {
                Ok(run)
            };
            match run {
                Ok(run) => ok(&id, Reply::Task(task_of(&run, &context))),
                Err(e) => rpc_error(&id, code::INTERNAL_ERROR, e),
            }
        }
        "tasks/get" | "tasks/resubscribe" | "tasks/cancel" => {
            let p: TaskIdParams = match params(&v) {
                Ok(p) => p,
                Err(e) => return rpc_error(&id, code::INVALID_PARAMS, e),
            };
            let run = match task_run(agent, &p.id).await {
                Ok(run) => run,
                Err(r) => return rpc_error(&id, code::TASK_NOT_FOUND, r),
            };
            let context = context_of(agent, &run).await;
            match method.as_str() {
                "tasks/get" => ok(&id, Reply::Task(task_of(&run, &context))),
                "tasks/resubscribe" => stream(agent.clone(), id, run, context),
                _ => cancel(agent, &id, run, &context).await,
            }
        }
        m if m.starts_with("tasks/pushNotificationConfig/") => {
            super::a2a_push::rpc(agent, &id, m, &v).await
        }
        other => rpc_error(
            &id,
            code::METHOD_NOT_FOUND,
            format!(
                "no method `{other}` (hint: message/send, message/stream, tasks/get, tasks/cancel, tasks/resubscribe, tasks/pushNotificationConfig/set|get|list|delete)"
            ),
        ),
    }
}

fn ok(id: &Value, reply: Reply) -> Response<Body> {
    whole(StatusCode::OK, &wire::success(id, reply.to_value()))
}

/// The session of context `c`: a name under the service's parcel.
fn session_of(context: &str) -> String {
    format!("{SESSION_PREFIX}{context}")
}

/// What names a context's session.
pub const SESSION_PREFIX: &str = "a2a-";

/// Refuses a `contextId` that cannot name a session.
fn check_context(c: &str) -> Result<(), String> {
    match crate::submit::check_session_name(&session_of(c)) {
        Ok(()) => Ok(()),
        Err(_) => Err(format!(
            "contextId must be 1 to 120 letters, digits, `.`, `_` or `-` (it names the conversation's session here), got `{}`",
            dispatch_core::event::shorten(c, 60)
        )),
    }
}

/// The context of task `run`: that of the session it ran in (runs created
/// before contexts were kept had none: their own id).
pub(super) async fn context_of(agent: &A2aAgent, run: &Run) -> String {
    let session = agent
        .store
        .run_extras(&run.id)
        .await
        .ok()
        .and_then(|e| e.session);
    session
        .as_deref()
        .and_then(|s| s.split_once('/'))
        .and_then(|(_, name)| name.strip_prefix(SESSION_PREFIX))
        .map_or_else(|| run.id.to_string(), str::to_string)
}

/// A message naming a task: a task here never waits for input (it ends
/// completed, failed or canceled), so a conversation goes on with a new
/// task in the same context; the error says which.
async fn continuing(agent: &A2aAgent, id: &Value, task: &str) -> Response<Body> {
    let run = match task_run(agent, task).await {
        Ok(run) => run,
        Err(r) => return rpc_error(id, code::TASK_NOT_FOUND, r),
    };
    let context = context_of(agent, &run).await;
    let now = match run.state.is_terminal() {
        true => "has ended",
        false => "is still working and will not ask for input",
    };
    rpc_error(
        id,
        code::UNSUPPORTED_OPERATION,
        format!(
            "task {task} {now} ({}); continue its conversation with a new message without taskId and with contextId {context}",
            run.status()
        ),
    )
}

/// The heartbeat run `id` of this service, or why there is none.
pub(super) async fn task_run(agent: &A2aAgent, id: &str) -> Result<Run, String> {
    let not_found = || format!("no task `{id}` on this agent");
    let run_id: RunId = id.parse().map_err(|_| not_found())?;
    match agent.store.get_run(&run_id).await {
        Ok(run) if run.parent_id.as_ref() == Some(&agent.service) => Ok(run),
        _ => Err(not_found()),
    }
}

/// Reads `run` until it has ended, calling `seen` at each change of status
/// (it returns false to stop following).
pub(super) async fn follow(
    store: &dyn Store,
    run: &Run,
    mut seen: impl FnMut(&Run) -> bool,
) -> Result<Run, String> {
    let started = std::time::Instant::now();
    let mut wait = FOLLOW_FIRST;
    let mut last = run.status();
    let mut now = run.clone();
    while !now.state.is_terminal() {
        tokio::time::sleep(wait).await;
        if started.elapsed() >= FOLLOW_BRISK {
            wait = (wait * 2).min(FOLLOW_MAX);
        }
        now = store.get_run(&run.id).await.map_err(|e| e.to_string())?;
        if now.status() != last {
            last = now.status();
            if !now.state.is_terminal() && !seen(&now) {
                break;
            }
        }
    }
    Ok(now)
}

/// `tasks/cancel`: stops the run (TERM, grace, KILL) and answers its task.
async fn cancel(agent: &A2aAgent, id: &Value, run: Run, context: &str) -> Response<Body> {
    if run.state.is_terminal() {
        return rpc_error(
            id,
            code::TASK_NOT_CANCELABLE,
            format!("task {} has already ended ({})", run.id, run.status()),
        );
    }
    agent.host.cancel(&run).await;
    match agent.store.get_run(&run.id).await {
        Ok(run) => ok(id, Reply::Task(task_of(&run, context))),
        Err(e) => rpc_error(id, code::INTERNAL_ERROR, e.to_string()),
    }
}

/// The task of `run` as server-sent events: the task, each change of its
/// status, its output as an artifact, and the final status.
fn stream(agent: Arc<A2aAgent>, id: Value, run: Run, context: String) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let event = move |reply: Reply| {
        Bytes::from(format!(
            "data: {}\n\n",
            wire::success(&id, reply.to_value())
        ))
    };
    tokio::spawn(async move {
        let first = task_of(&run, &context);
        if tx.send(event(Reply::Task(first))).await.is_err() {
            return;
        }
        let tx2 = tx.clone();
        let event2 = event.clone();
        let context2 = context.clone();
        let end = follow(&*agent.store, &run, move |now| {
            let update = StatusUpdate::new(&task_of(now, &context2), false);
            tx2.try_send(event2(Reply::Status(update))).is_ok() || !tx2.is_closed()
        })
        .await;
        let Ok(end) = end else { return };
        if !end.state.is_terminal() {
            return;
        }
        let task = task_of(&end, &context);
        for a in &task.artifacts {
            let update = ArtifactUpdate::new(&task, a.clone());
            if tx.send(event(Reply::Artifact(update))).await.is_err() {
                return;
            }
        }
        let _ = tx
            .send(event(Reply::Status(StatusUpdate::new(&task, true))))
            .await;
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(StreamBody::new(frames).boxed());
    let headers = r.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    r
}
