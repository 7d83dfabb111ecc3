//! The process courier: start the parcel's COMMAND in its own process group
//! with the agent protocol's environment, and supervise it.

use dispatch_core::EventKind;
pub(crate) use dispatch_core::redact::{mask, mask_value};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use dispatch_core::{AgentEvent, NewEvent, now_ms};
use dispatch_store::Store;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;

use super::watch::Watch;
use crate::follow::LineFollower;
use crate::handoff::{Handoff, HandoffError, Upstream};
use crate::os;

/// How often the helper looks for new lines in `$DISPATCH_EVENTS` while the agent runs.
const EVENTS_POLL: Duration = Duration::from_millis(20);
/// How long a just-started agent has to exit before its start is saved on its
/// own: one that is done by then, leaving no events, has its start saved with
/// its end, in one transaction. Its events are first followed then too.
pub(crate) const START_WINDOW: Duration = EVENTS_POLL;
/// How long output pipes may stay open after the agent's group is gone
/// (a descendant that escaped into another session can hold them).
const PIPE_DRAIN: Duration = Duration::from_secs(2);

/// Everything needed to start the agent.
pub(crate) struct AgentSpec {
    pub command: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    pub log: PathBuf,
    pub events: PathBuf,
    /// Values to mask in the log.
    pub secrets: Vec<String>,
    pub attempt: u32,
}

/// `sandbox`: the attempt's `RESOURCES`, entered before the agent executes.
/// A shell-form COMMAND the shell would only split into words runs without
/// the shell (see [`super::shell`]); when that cannot start, the shell runs
/// it as written, and says why in the log as it would have.
/// `jail`: the run's group, entered first, and its sandbox, entered last.
pub(crate) fn spawn(
    spec: &AgentSpec,
    sandbox: Option<&crate::limits::Sandbox>,
    jail: &crate::sandbox::Plan,
) -> std::io::Result<Child> {
    let has_path = spec.env.iter().any(|(k, _)| k == "PATH");
    if let Some(words) = super::shell::direct_words(&spec.command).filter(|_| has_path)
        && let Ok(child) = spawn_argv(&words, spec, sandbox, jail, true)
    {
        return Ok(child);
    }
    spawn_argv(&spec.command, spec, sandbox, jail, false)
}

/// `pwd`: set `PWD` as the shell would (when the allowlist has none).
fn spawn_argv(
    argv: &[String],
    spec: &AgentSpec,
    sandbox: Option<&crate::limits::Sandbox>,
    jail: &crate::sandbox::Plan,
    pwd: bool,
) -> std::io::Result<Child> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("the parcel has an empty COMMAND"))?;
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&spec.log)?;
    let mut env: Vec<(&OsStr, &OsStr)> = spec
        .env
        .iter()
        .map(|(k, v)| (OsStr::new(k), OsStr::new(v)))
        .collect();
    if pwd && !spec.env.iter().any(|(k, _)| k == "PWD") {
        env.push((OsStr::new("PWD"), spec.cwd.as_os_str()));
    }
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(&spec.cwd)
        // Nothing but the allowlist (see `agent_env`).
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .process_group(0);
    // The run's group first (see `sandbox::Plan::contain`).
    jail.contain(&mut cmd);
    // SAFETY: only system calls between fork and exec (see `powers`).
    unsafe {
        cmd.pre_exec(|| {
            dispatch_agent::tools::powers::drop_write_powers();
            Ok(())
        });
    }
    if let Some(sandbox) = sandbox {
        sandbox.apply(&mut cmd);
    }
    jail.apply_exec(
        &mut cmd,
        OsStr::new(program),
        args.iter().map(OsStr::new),
        env.iter().copied(),
    )?;
    if spec.secrets.is_empty() {
        // Nothing to mask: the agent writes straight into the log.
        cmd.stdout(log.try_clone()?).stderr(log);
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    cmd.spawn()
}

/// A running agent under supervision: its stdin fed, its output copied to
/// the log (masked), and, when this process owns its signals, a SIGTERM or
/// SIGINT to it passed on to the agent's group as SIGTERM. Dropped before
/// the agent was reaped (its task aborted), it kills the agent's group.
pub(crate) struct Supervisor {
    child: Child,
    pgid: u32,
    feeder: JoinHandle<()>,
    copiers: Vec<JoinHandle<()>>,
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    /// Whether this process was asked to stop (SIGTERM / SIGINT).
    pub signalled: bool,
    reaped: bool,
}

impl Supervisor {
    pub(crate) fn start(spec: &AgentSpec, mut child: Child, own_signals: bool) -> Self {
        let pgid = child.id().unwrap_or(0);
        let stdin = child.stdin.take();
        let input = spec.stdin.clone();
        let feeder = tokio::spawn(async move {
            if let Some(mut stdin) = stdin {
                // The agent may not read its stdin; a broken pipe is fine.
                let _ = stdin.write_all(&input).await;
            }
        });
        let mut copiers = Vec::new();
        for out in [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|e| Box::new(e) as Box<dyn AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            copiers.push(tokio::spawn(copy_masked(
                out,
                spec.log.clone(),
                spec.secrets.clone(),
            )));
        }
        // A worker running many runs handles its own signals (drain).
        let listen = |kind| own_signals.then(|| signal(kind).ok()).flatten();
        Supervisor {
            child,
            pgid,
            feeder,
            copiers,
            term: listen(SignalKind::terminate()),
            int: listen(SignalKind::interrupt()),
            signalled: false,
            reaped: false,
        }
    }

    /// The agent's process group (its pid).
    pub(crate) fn pgid(&self) -> u32 {
        self.pgid
    }

    /// Waits at most `window` for the agent to exit, without following its
    /// events. Its exit status when it did.
    pub(crate) async fn exit_within(
        &mut self,
        window: Duration,
    ) -> Option<std::io::Result<ExitStatus>> {
        let deadline = tokio::time::sleep(window);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                status = self.child.wait() => return Some(status),
                _ = &mut deadline => return None,
                Some(()) = recv(&mut self.term) => self.stop_group(),
                Some(()) = recv(&mut self.int) => self.stop_group(),
            }
        }
    }

    /// Follows `events` into the store, and keeps `watch`, until the agent exits.
    pub(crate) async fn until_exit<S: Store + ?Sized>(
        &mut self,
        store: &S,
        run_id: &dispatch_core::RunId,
        events: &mut EventPump,
        watch: &mut Watch,
        upstream: &dyn Upstream,
    ) -> std::io::Result<ExitStatus> {
        let mut tick = tokio::time::interval(EVENTS_POLL);
        loop {
            tokio::select! {
                status = self.child.wait() => return status,
                _ = tick.tick() => {
                    let batch = events.pump(store, run_id, upstream, false).await;
                    watch.observe(store, &batch, true).await;
                    if let Some((reason, retryable)) = events.refused.take() {
                        watch.refuse(reason, retryable);
                    }
                    watch.tick(store).await;
                }
                Some(()) = recv(&mut self.term) => self.stop_group(),
                Some(()) = recv(&mut self.int) => self.stop_group(),
            }
        }
    }

    fn stop_group(&mut self) {
        self.signalled = true;
        os::signal_group(self.pgid, Signal::SIGTERM);
    }

    /// The agent exited: what is left of its group is killed, and its output
    /// drains into the log.
    pub(crate) async fn reap(&mut self) {
        // The leader is gone; its group goes with it.
        os::signal_group(self.pgid, Signal::SIGKILL);
        self.reaped = true;
        self.feeder.abort();
        for c in std::mem::take(&mut self.copiers) {
            let _ = tokio::time::timeout(PIPE_DRAIN, c).await;
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if !self.reaped {
            os::signal_group(self.pgid, Signal::SIGKILL);
        }
    }
}

async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

async fn copy_masked<R: AsyncRead + Unpin>(src: R, log: PathBuf, secrets: Vec<String>) {
    let Ok(file) = tokio::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&log)
        .await
    else {
        return;
    };
    let mut file = file;
    let mut reader = BufReader::new(src);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let masked = mask(&String::from_utf8_lossy(&line), &secrets);
                if file.write_all(masked.as_bytes()).await.is_err() {
                    break;
                }
            }
        }
    }
}

/// Moves lines from `$DISPATCH_EVENTS` into the store.
pub(crate) struct EventPump {
    follower: LineFollower,
    attempt: u32,
    /// The last `output` event's value.
    pub last_output: Option<Value>,
    /// The last `error` event's message.
    pub error: Option<String>,
    /// False when the last `error` event said `"retryable": false`.
    pub error_retryable: bool,
    /// The last `wait` event: the agent asks to suspend when it exits 0.
    pub wait: Option<Value>,
    /// A handoff that started nothing: why, and whether another attempt
    /// may do better. The attempt fails.
    pub refused: Option<(String, bool)>,
    /// `NETWORK allow`: the egress proxy's decisions, stored with the
    /// agent's events (see [`crate::egress`]).
    pub network: Option<crate::egress::Recorder>,
    secrets: Vec<String>,
}

impl EventPump {
    /// `secrets`: values masked in every event before it is stored.
    pub(crate) fn new(path: PathBuf, attempt: u32, secrets: Vec<String>) -> Self {
        EventPump {
            follower: LineFollower::new(path),
            attempt,
            secrets,
            last_output: None,
            error: None,
            error_retryable: true,
            wait: None,
            refused: None,
            network: None,
        }
    }

    /// Moves the lines the agent added into the store; a `handoff` starts
    /// its run first (through `upstream`), and is stored with its `run_id`.
    pub(crate) async fn pump<S: Store + ?Sized>(
        &mut self,
        store: &S,
        run_id: &dispatch_core::RunId,
        upstream: &dyn Upstream,
        finish: bool,
    ) -> Vec<NewEvent> {
        let batch = self.collect(run_id, upstream, finish).await;
        crate::record::append_events(store, run_id, &batch).await;
        batch
    }

    /// The events of the lines the agent added, not stored yet (a
    /// `handoff` has started its run all the same).
    pub(crate) async fn collect(
        &mut self,
        run_id: &dispatch_core::RunId,
        upstream: &dyn Upstream,
        finish: bool,
    ) -> Vec<NewEvent> {
        let mut batch = self.network.as_ref().map(|n| n.take()).unwrap_or_default();
        let lines = self.follower.poll(finish);
        if lines.is_empty() {
            return batch;
        }
        let at = now_ms();
        batch.reserve(lines.len());
        for line in &lines {
            let parsed = AgentEvent::parse(line);
            if let AgentEvent::Known {
                kind: EventKind::Handoff,
                data,
            } = parsed
            {
                let data = mask_value(data, &self.secrets);
                let events = hand_off(run_id, upstream, data, self.attempt, at).await;
                if let Err((reason, retryable, _)) = &events {
                    self.error = Some(reason.clone());
                    self.error_retryable = *retryable;
                    self.refused = Some((reason.clone(), *retryable));
                }
                batch.extend(events.unwrap_or_else(|(_, _, e)| e));
                continue;
            }
            batch.push(self.event_of(parsed, at));
        }
        batch
    }

    fn event_of(&mut self, parsed: AgentEvent, at: i64) -> NewEvent {
        match parsed {
            AgentEvent::Known { kind, data } => {
                let data = mask_value(data, &self.secrets);
                match kind {
                    EventKind::Output => self.last_output = data.get("value").cloned(),
                    EventKind::Wait => self.wait = Some(data.clone()),
                    EventKind::Error => {
                        self.error = data
                            .get("message")
                            .and_then(Value::as_str)
                            .map(str::to_string);
                        self.error_retryable =
                            data.get("retryable").and_then(Value::as_bool) != Some(false);
                    }
                    _ => {}
                }
                NewEvent::new(kind, self.attempt, at, data)
            }
            AgentEvent::Malformed { warning } => {
                let message = mask(&warning, &self.secrets);
                NewEvent::new(
                    EventKind::Warning,
                    self.attempt,
                    at,
                    json!({ "message": message }),
                )
            }
        }
    }
}

/// Starts the run a `handoff` event asks for. The event to store (with
/// the new run's id), or: why nothing started, whether another attempt
/// may do better, and the `warning` and `error` events that say so.
pub(crate) async fn hand_off(
    run_id: &dispatch_core::RunId,
    upstream: &dyn Upstream,
    mut data: Value,
    attempt: u32,
    at: i64,
) -> Result<Vec<NewEvent>, (String, bool, Vec<NewEvent>)> {
    let handoff = Handoff::of_event(&data);
    match upstream.start(run_id, &handoff).await {
        Ok(created) => {
            data["run_id"] = json!(created.run().id);
            data["key"] = json!(handoff.key);
            data["deduplicated"] = json!(matches!(created, dispatch_store::Created::Existing(_)));
            Ok(vec![NewEvent::new(EventKind::Handoff, attempt, at, data)])
        }
        Err(e) => {
            let retryable = matches!(e, HandoffError::Failed(_));
            let reason = e.message().to_string();
            let events = vec![
                NewEvent::new(
                    EventKind::Warning,
                    attempt,
                    at,
                    json!({"message": format!("`handoff` event started nothing: {reason}"), "event": data}),
                ),
                NewEvent::new(
                    EventKind::Error,
                    attempt,
                    at,
                    json!({"message": reason, "retryable": retryable, "source": "handoff"}),
                ),
            ];
            Err((reason, retryable, events))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked() {
        let s = vec!["hunter2".to_string()];
        assert_eq!(
            mask("pw=hunter2 again hunter2\n", &s),
            "pw=**** again ****\n"
        );
    }
}
