//! The process courier: start the parcel's COMMAND in its own process group
//! with the agent protocol's environment, and supervise it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use dispatch_core::{AgentEvent, NewEvent, now_ms};
use dispatch_store::Store;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

use super::watch::Watch;
use crate::follow::LineFollower;
use crate::os;

/// How often the helper looks for new lines in `$DISPATCH_EVENTS` while the agent runs.
const EVENTS_POLL: Duration = Duration::from_millis(20);
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

/// What the agent left behind when it exited.
pub(crate) struct AgentOutcome {
    pub exit_code: i32,
    pub last_output: Option<Value>,
    /// The last `error` event's message.
    pub error: Option<String>,
    /// False when the last `error` event said `"retryable": false`.
    pub error_retryable: bool,
    /// Whether the helper itself was asked to stop (SIGTERM / SIGINT).
    pub signalled: bool,
}

pub(crate) fn spawn(spec: &AgentSpec) -> std::io::Result<Child> {
    let (program, args) = spec
        .command
        .split_first()
        .ok_or_else(|| std::io::Error::other("the parcel has an empty COMMAND"))?;
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&spec.log)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(&spec.cwd)
        .env_remove(crate::layout::ROOT_ENV)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .process_group(0);
    if spec.secrets.is_empty() {
        // Nothing to mask: the agent writes straight into the log.
        cmd.stdout(log.try_clone()?).stderr(log);
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    cmd.spawn()
}

/// Feeds stdin, copies output to the log, follows events into the store and
/// waits for the agent to exit. On SIGTERM/SIGINT to the helper, the agent's
/// group gets SIGTERM. After exit, anything left in the group is killed.
pub(crate) async fn supervise<S: Store + ?Sized>(
    store: &S,
    run_id: &dispatch_core::RunId,
    spec: &AgentSpec,
    mut child: Child,
    watch: &mut Watch,
    own_signals: bool,
) -> AgentOutcome {
    let pgid = child.id().unwrap_or(0);
    watch.set_group(pgid);
    let stdin = child.stdin.take();
    let input = spec.stdin.clone();
    let feeder = tokio::spawn(async move {
        if let Some(mut stdin) = stdin {
            // The agent may not read its stdin; a broken pipe is fine.
            let _ = stdin.write_all(&input).await;
        }
    });
    let mut copiers = Vec::new();
    if let Some(out) = child.stdout.take() {
        copiers.push(tokio::spawn(copy_masked(
            out,
            spec.log.clone(),
            spec.secrets.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        copiers.push(tokio::spawn(copy_masked(
            err,
            spec.log.clone(),
            spec.secrets.clone(),
        )));
    }

    let mut events = EventPump::new(spec.events.clone(), spec.attempt);
    // A worker running many runs handles its own signals (drain).
    let listen = |kind| own_signals.then(|| signal(kind).ok()).flatten();
    let mut term = listen(SignalKind::terminate());
    let mut int = listen(SignalKind::interrupt());
    let mut tick = tokio::time::interval(EVENTS_POLL);
    let mut signalled = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = tick.tick() => {
                let batch = events.pump(store, run_id, false).await;
                watch.observe(store, &batch, true).await;
                watch.tick(store).await;
            }
            Some(()) = recv(&mut term) => { signalled = true; os::signal_group(pgid, Signal::SIGTERM); }
            Some(()) = recv(&mut int) => { signalled = true; os::signal_group(pgid, Signal::SIGTERM); }
        }
    };
    // The leader is gone; its group goes with it.
    os::signal_group(pgid, Signal::SIGKILL);
    feeder.abort();
    for c in copiers {
        let _ = tokio::time::timeout(PIPE_DRAIN, c).await;
    }
    let batch = events.pump(store, run_id, true).await;
    watch.agent_gone();
    watch.observe(store, &batch, false).await;
    AgentOutcome {
        exit_code: status.map(os::exit_code_of).unwrap_or(1),
        last_output: events.last_output,
        error: events.error,
        error_retryable: events.error_retryable,
        signalled,
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

/// Replaces every secret value in `text` with `****`.
pub(crate) fn mask(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), "****");
    }
    out
}

/// Moves lines from `$DISPATCH_EVENTS` into the store.
struct EventPump {
    follower: LineFollower,
    attempt: u32,
    last_output: Option<Value>,
    error: Option<String>,
    error_retryable: bool,
}

impl EventPump {
    fn new(path: PathBuf, attempt: u32) -> Self {
        EventPump {
            follower: LineFollower::new(path),
            attempt,
            last_output: None,
            error: None,
            error_retryable: true,
        }
    }

    async fn pump<S: Store + ?Sized>(
        &mut self,
        store: &S,
        run_id: &dispatch_core::RunId,
        finish: bool,
    ) -> Vec<NewEvent> {
        let lines = self.follower.poll(finish);
        if lines.is_empty() {
            return Vec::new();
        }
        let at = now_ms();
        let batch: Vec<NewEvent> = lines
            .iter()
            .map(|line| match AgentEvent::parse(line) {
                AgentEvent::Known { kind, data } => {
                    match kind {
                        "output" => self.last_output = data.get("value").cloned(),
                        "error" => {
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
                    NewEvent::new("warning", self.attempt, at, json!({ "message": warning }))
                }
            })
            .collect();
        if let Err(e) = store.append_events(run_id, &batch).await {
            eprintln!("[dispatch] could not record {} event(s): {e}", batch.len());
        }
        batch
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
