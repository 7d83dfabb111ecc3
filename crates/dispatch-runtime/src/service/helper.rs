//! The service helper (`dispatch internal run-record <id>` for a `service`
//! run). It claims the run, binds its listener, moves it to `running` with
//! itself as both helper and "agent" (a service has no agent process of its
//! own), then sleeps in one `select!` over: the next timer deadline, wakes
//! from the listener, SIGUSR1 (manual wakes), finished heartbeats, and
//! SIGTERM / SIGINT. On SIGTERM it closes the listener, cancels wakes that
//! never started, waits for the running ones (`dispatch stop` ends them after
//! its grace period), and records `stopped`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dispatch_core::{RunId, Status, Transition, now_ms};
use dispatch_store::{Run, ServiceStore, Store, StoreError};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, mpsc};

use super::config::parse_listen_addr;
use super::exec::{Core, Reason, Reply, Wake};
use super::ingress::{self, Ingress};
use super::model::{ListenerState, ServiceConfig, ServiceDoc};
use super::schedule::Timers;
use super::wake;
use crate::error::{RuntimeError, RuntimeResult};
use crate::layout::Layout;
use crate::record::{AdvanceError, advance};
use crate::snapshot::{self, FinalSnapshot};
use crate::{os, run_exit_code};

/// How long after a rejected request its count is saved (at the latest).
const REJECTION_SAVE_DELAY: Duration = Duration::from_millis(500);
/// How many wakes may wait in the channel from the listener.
const WAKE_CHANNEL: usize = 1024;

/// Runs the service `id` until it is stopped. Returns the helper's exit
/// status. `shared` is a handle on the same store that the listener's
/// tasks may keep (`serve --a2a` reads and stops its runs with it).
pub async fn run_service<S: Store + ServiceStore + ?Sized>(
    store: &S,
    layout: &Layout,
    id: &RunId,
    exe: PathBuf,
    shared: Option<Arc<dyn Store>>,
) -> RuntimeResult<i32> {
    let mut run = store.get_run(id).await?;
    let me = os::this_process();
    let claim = Transition::Claim {
        helper: me,
        at: now_ms(),
    };
    match advance(store, &mut run, &claim, None).await {
        Ok(()) => {}
        Err(AdvanceError::Illegal(_)) => {
            return Err(StoreError::InvalidState {
                id: id.clone(),
                status: run.status(),
                hint: "another helper owns it or it has finished",
            }
            .into());
        }
        Err(AdvanceError::Store(e)) => return Err(e.into()),
    }
    if run.stop_requested_at.is_some() {
        return finish(store, layout, &mut run, stopped("stopped by user")).await;
    }
    let doc = match store.get_service_state(id).await {
        Ok(Some(s)) => ServiceDoc::decode(&s),
        Ok(None) => Err(format!("run {id} has no service state")),
        Err(e) => Err(e.to_string()),
    };
    let (doc, mut timers) = match doc.and_then(|d| {
        let timers = Timers::new(d.schedules.clone()).map_err(|e| e.to_string())?;
        Ok((d, timers))
    }) {
        Ok(x) => x,
        Err(reason) => return finish(store, layout, &mut run, failed(reason)).await,
    };

    let (tx, mut rx) = mpsc::channel::<Wake>(WAKE_CHANNEL);
    let mut listeners: Vec<ListenerState> = Vec::new();
    let mut ingress: Option<(Arc<Ingress>, tokio::task::JoinHandle<()>)> = None;
    if let Some(policy) = doc.config.listen.clone() {
        let bound = match bind(&policy.addr).await {
            Ok(l) => l,
            Err(reason) => return finish(store, layout, &mut run, failed(reason)).await,
        };
        let addr = bound
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| policy.addr.clone());
        listeners.push(ListenerState {
            addr: policy.addr.clone(),
            bound_addr: Some(addr.clone()),
            ..ListenerState::default()
        });
        let a2a = match &doc.config.a2a {
            Some(serve) => match a2a_agent(layout, &run, serve, &policy, &addr, shared, &tx) {
                Ok(a) => Some(Arc::new(a)),
                Err(reason) => return finish(store, layout, &mut run, failed(reason)).await,
            },
            None => None,
        };
        let ing = match Ingress::new(policy, addr, tx.clone()) {
            Ok(mut i) => {
                i.a2a = a2a;
                Arc::new(i)
            }
            Err(reason) => return finish(store, layout, &mut run, failed(reason)).await,
        };
        let task = tokio::spawn(ingress::serve(bound, ing.clone()));
        ingress = Some((ing, task));
    }
    drop(tx);
    // Handlers first: SIGUSR1 would otherwise kill us, and `dispatch wake`
    // sends it as soon as the run is `running`.
    let (mut term, mut int, mut usr1) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        _ => {
            let reason = "cannot install signal handlers".to_string();
            return finish(store, layout, &mut run, failed(reason)).await;
        }
    };
    // Listeners bound and timers anchored are saved before anyone sees
    // `running` (`serve --detach` returns then, and prints nothing stale).
    let mut state = Persisted {
        config: doc.config.clone(),
        listeners,
    };
    let missed = timers.start(now_ms());
    state.save(store, id, &timers, ingress.as_ref()).await;
    let up = Transition::AgentStarted {
        agent: me,
        at: now_ms(),
    };
    if let Err(e) = advance(store, &mut run, &up, None).await {
        return Err(match e {
            AdvanceError::Store(e) => e.into(),
            AdvanceError::Illegal(e) => StoreError::InvalidState {
                id: id.clone(),
                status: e.from,
                hint: "it changed while the service was starting",
            }
            .into(),
        });
    }
    describe(&run, &doc.config, &timers, &state.listeners);

    let mut core = Core::new(run.clone(), layout.clone(), exe, doc.config.clone());
    let origin = match &run.origin_id {
        Some(o) => store.get_run(o).await.ok(),
        None => None,
    };
    let origin_lost = origin
        .as_ref()
        .is_some_and(|o| o.status() == Status::Stopped && o.stop_requested_at.is_none());
    if !missed.is_empty() || origin_lost {
        let missed: Vec<Value> = missed
            .iter()
            .map(|(label, due)| json!({"schedule": label, "missed_since": due}))
            .collect();
        let wake = Wake {
            reason: Reason::Recovery,
            detail: json!({
                "previous_run_id": run.origin_id,
                "previous_status": origin.as_ref().map(|o| o.status()),
                "previous_reason": origin.as_ref().and_then(|o| o.state.reason().map(str::to_string)),
                "missed": missed,
            }),
            payload: run.payload.clone(),
            request: None,
            timer: None,
            session: None,
            reply: None,
        };
        core.admit(store, &wake).await;
    }
    manual_wakes(store, layout, &mut core, id).await;
    state.save(store, id, &timers, ingress.as_ref()).await;

    // Rejected requests only bump a counter; it is saved at most once per
    // REJECTION_SAVE_DELAY, and only when something was rejected.
    let never = Notify::new();
    let rejections: &Notify = ingress.as_ref().map_or(&never, |(ing, _)| &ing.rejections);
    let mut save_at: Option<tokio::time::Instant> = None;
    loop {
        let save_due = async {
            match save_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let deadline = timers.next_deadline();
        let sleep = async {
            match deadline {
                Some(d) => {
                    tokio::time::sleep(Duration::from_millis((d - now_ms()).max(0) as u64)).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {
                for fire in timers.due(now_ms()) {
                    let reason = if fire.label.starts_with("every ") { Reason::Interval } else { Reason::Schedule };
                    let wake = Wake {
                        reason,
                        detail: json!({"schedule": fire.label, "scheduled_for": fire.scheduled_for}),
                        payload: fire.payload.clone(),
                        request: None,
                        timer: Some(fire.index),
                        session: None,
                        reply: None,
                    };
                    if let Reply::Busy(_) = core.admit(store, &wake).await {
                        timers.record_skip(fire.index);
                    }
                }
                state.save(store, id, &timers, ingress.as_ref()).await;
            }
            Some(first) = rx.recv() => {
                let mut next = Some(first);
                while let Some(w) = next {
                    http_wake(store, &mut core, &mut state, w).await;
                    next = rx.try_recv().ok();
                }
                state.save(store, id, &timers, ingress.as_ref()).await;
            }
            Some(()) = usr1.recv() => {
                manual_wakes(store, layout, &mut core, id).await;
            }
            Some(done) = core.running.join_next(), if !core.running.is_empty() => {
                if let Ok(done) = done {
                    core.finished(store, done).await;
                }
            }
            _ = rejections.notified(), if save_at.is_none() => {
                save_at = Some(tokio::time::Instant::now() + REJECTION_SAVE_DELAY);
            }
            _ = save_due => {
                save_at = None;
                state.save(store, id, &timers, ingress.as_ref()).await;
            }
            Some(()) = term.recv() => break,
            Some(()) = int.recv() => break,
        }
    }

    // Graceful stop: no new wakes; the running ones finish (or are ended by
    // `dispatch stop` after its grace period).
    crate::say_info!(
        "[dispatch] service {id} stopping: closing listeners, waiting for running wakes"
    );
    rx.close();
    if let Some((_, task)) = &ingress {
        task.abort();
    }
    core.cancel_pending(store).await;
    while let Some(done) = core.running.join_next().await {
        if let Ok(done) = done {
            core.finished(store, done).await;
        }
    }
    state.save(store, id, &timers, ingress.as_ref()).await;
    let by_user = store
        .get_run(id)
        .await
        .map(|r| r.stop_requested_at.is_some())
        .unwrap_or(false);
    let mut run = store.get_run(id).await.unwrap_or(run);
    let reason = if by_user {
        "stopped by user"
    } else {
        "stopped by signal"
    };
    finish(store, layout, &mut run, stopped(reason)).await
}

/// An accepted HTTP request counts as handled.
async fn http_wake<S: Store + ?Sized>(
    store: &S,
    core: &mut Core,
    state: &mut Persisted,
    mut wake: Wake,
) {
    let reply = core.admit(store, &wake).await;
    if matches!(wake.reason, Reason::Http | Reason::A2a)
        && let (Reply::Accepted(_), Some(l)) = (&reply, state.listeners.first_mut())
    {
        l.requests_handled += 1;
        l.last_request_at = Some(now_ms());
    }
    if let Some(tx) = wake.reply.take() {
        let _ = tx.send(reply);
    }
}

async fn manual_wakes<S: Store + ?Sized>(store: &S, layout: &Layout, core: &mut Core, id: &RunId) {
    for (name, payload) in wake::take_requests(layout, id) {
        let wake = Wake {
            reason: Reason::Manual,
            detail: json!({}),
            payload,
            request: None,
            timer: None,
            session: None,
            reply: None,
        };
        let reply = core.admit(store, &wake).await;
        wake::acknowledge(layout, id, &name, &reply);
    }
}

/// What the service writes to its `service_state` row.
struct Persisted {
    config: ServiceConfig,
    listeners: Vec<ListenerState>,
}

impl Persisted {
    async fn save<S: ServiceStore + ?Sized>(
        &self,
        store: &S,
        id: &RunId,
        timers: &Timers,
        ingress: Option<&(Arc<Ingress>, tokio::task::JoinHandle<()>)>,
    ) {
        let mut listeners = self.listeners.clone();
        if let (Some(l), Some((ing, _))) = (listeners.first_mut(), ingress) {
            l.requests_rejected = ing.rejected.load(Ordering::Relaxed);
        }
        let doc = ServiceDoc {
            config: self.config.clone(),
            schedules: timers.states(),
            listeners,
        };
        if let Err(e) = store.put_service_state(&doc.encode(id, now_ms())).await {
            crate::say_warn!("[dispatch] could not save the service state: {e}");
        }
    }
}

/// The A2A side of the listener bound at `addr`: its card from the parcel.
fn a2a_agent(
    layout: &Layout,
    run: &Run,
    serve: &super::model::A2aServe,
    policy: &super::model::IngressPolicy,
    addr: &str,
    shared: Option<Arc<dyn Store>>,
    wakes: &mpsc::Sender<Wake>,
) -> Result<super::a2a::A2aAgent, String> {
    let store = shared.ok_or("--a2a needs a shared handle on the store (an internal error)")?;
    let parcel = crate::launch::resolve_parcel(layout, &run.parcel_digest)
        .map_err(|e| format!("cannot read the parcel for the agent card: {e}"))?;
    let rpc_paths = match &policy.path {
        Some(p) => vec![p.clone()],
        None => vec!["/".to_string(), "/a2a".to_string()],
    };
    let endpoint = serve
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}{}", rpc_paths[0]));
    let card = super::a2a_task::card(&parcel.manifest, &endpoint, policy.secret_sha256.is_some());
    if let Some(ttl) = serve.session_ttl_ms {
        let prefix = format!("{}/{}", parcel.manifest.name, super::a2a::SESSION_PREFIX);
        tokio::spawn(super::a2a_sessions::expire(
            store.clone(),
            layout.clone(),
            run.id.clone(),
            prefix,
            ttl,
        ));
    }
    let host = super::a2a_local::LocalHost {
        wakes: wakes.clone(),
        store: store.clone(),
        layout: layout.clone(),
    };
    Ok(super::a2a::A2aAgent::new(
        &card,
        rpc_paths,
        store,
        run.id.clone(),
        Arc::new(host),
    ))
}

async fn bind(addr: &str) -> Result<TcpListener, String> {
    let sock = parse_listen_addr(addr).map_err(|e| e.to_string())?;
    TcpListener::bind(sock)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

fn describe(run: &Run, config: &ServiceConfig, timers: &Timers, listeners: &[ListenerState]) {
    let mut parts = Vec::new();
    for t in timers.states() {
        parts.push(format!("timer `{}`", t.label()));
    }
    for l in listeners {
        let addr = l.bound_addr.as_deref().unwrap_or(&l.addr);
        parts.push(match &config.a2a {
            Some(_) => format!(
                "listening on {addr} as an A2A agent (card at http://{addr}/.well-known/agent-card.json)"
            ),
            None => format!("listening on {addr}"),
        });
    }
    if parts.is_empty() {
        parts.push("manual wakes only".into());
    }
    crate::say_info!(
        "[dispatch] service {} up (overlap {}): {}",
        run.id,
        config.overlap.as_str(),
        parts.join(", ")
    );
}

fn stopped(reason: &str) -> Transition {
    Transition::Cancel {
        reason: reason.to_string(),
        exit_code: None,
        at: now_ms(),
    }
}

fn failed(reason: String) -> Transition {
    Transition::Fail {
        reason,
        exit_code: None,
        at: now_ms(),
    }
}

/// Writes the terminal snapshot, then the terminal state.
async fn finish<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: &mut Run,
    t: Transition,
) -> RuntimeResult<i32> {
    let state = match run.state.apply(run.operation, &t) {
        Ok(s) => s,
        Err(_) => return Ok(run_exit_code(&run.state)),
    };
    let snap = FinalSnapshot {
        run_id: run.id.clone(),
        attempt: run.attempt,
        state: state.clone(),
        output: None,
        written_at: now_ms(),
    };
    if let Err(e) = snapshot::write(layout, &snap) {
        crate::say_warn!("[dispatch] could not write the terminal snapshot: {e}");
    }
    crate::say_info!(
        "[dispatch] service {} {}{}",
        run.id,
        state.status(),
        state.reason().map(|r| format!(": {r}")).unwrap_or_default()
    );
    match advance(store, run, &t, None).await {
        Ok(()) | Err(AdvanceError::Illegal(_)) => Ok(run_exit_code(&run.state)),
        Err(AdvanceError::Store(e)) => Err(RuntimeError::from(e)),
    }
}
