//! The native agent courier's attempt: the model loop of `dispatch-agent`
//! as an async task of this helper or worker (no process per run). The loop
//! produces the run's event stream like any courier: `model_call`, `usage`,
//! `tool_call` and `checkpoint` events, stored round by round through the
//! [`RunSink`]; generated text goes to the log and live streams as it
//! arrives; request and response bodies are kept content-addressed in
//! `runs/<id>/calls.jsonl` (secrets masked; see [`crate::call_records`]).

use dispatch_agent::Admission;
use sha2::Digest;
use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dispatch_agent::agent_loop::{DEFAULT_LLM_TIMEOUT, DEFAULT_TOOL_ROUNDS};
use dispatch_agent::{Conversation, LoopConfig, Override, SessionData, Tools};
use dispatch_core::parcel::Parcel;
use dispatch_core::{EventKind, NewEvent, RunEvent, RunId, Status, now_ms};
use dispatch_store::{Run, Store, StoreError};
use serde_json::Value;

use super::agent::{mask, mask_value};
use super::native_attempt::{Phases, Stops, looping};
use super::retry::AttemptFailure;
use super::{LifecycleLog, Prepared};
use crate::courier::Ended;
use crate::error::RuntimeResult;
use crate::layout::Layout;
use crate::native::{CancelGuard, TextDelta, deltas};

/// What the attempt needs beyond the run.
pub(crate) struct NativeCtx<'a> {
    pub policy: &'a dispatch_core::policy::RunPolicy,
    pub session: Option<&'a str>,
    pub own_signals: bool,
    pub parcel: &'a Parcel,
    pub prepared: &'a Prepared,
    /// Starts the runs the agent hands off to (its `handoff` tool).
    pub upstream: &'a dyn crate::handoff::Upstream,
}

/// The loop's configuration for `run`: models resolved with the brief's
/// overrides and this process's keys. An error is why the run cannot start.
pub fn loop_config(
    parcel: &Parcel,
    brief_context: &Value,
    policy: &dispatch_core::policy::RunPolicy,
    env: impl Fn(&str) -> Option<String>,
) -> Result<LoopConfig, String> {
    let Some(agent) = parcel.manifest.agent.as_ref() else {
        return Err("the parcel is FROM agent but has no MODEL (build it again)".into());
    };
    // The brief's choice, else this process's `LLM_*` (a worker's
    // cluster-wide default; locally the same as the brief's).
    let over = match Override::from_context(brief_context) {
        Some(o) => Some(o),
        None => Override::from_env(&env)?,
    };
    let models = dispatch_agent::resolve(agent, over.as_ref(), env)?;
    if policy.limits.max_cost_usd.is_some()
        && let Some(why) = dispatch_agent::resolve::unpriced_for_cost_limit(&models)
    {
        return Err(why);
    }
    Ok(LoopConfig {
        models,
        llm_timeout: agent
            .llm_timeout_ms
            .map_or(DEFAULT_LLM_TIMEOUT, Duration::from_millis),
        max_tool_rounds: agent.max_tool_rounds.unwrap_or(DEFAULT_TOOL_ROUNDS),
        max_iterations: agent.max_iterations,
        max_output_tokens: agent.max_output_tokens,
        reasoning: dispatch_agent::Override::reasoning(over.as_ref(), agent),
        allow_truncation: agent.allow_truncation,
        max_context_tokens: agent.max_context_tokens,
        max_tokens: policy.limits.max_tokens,
        max_cost_usd: policy.limits.max_cost_usd,
        used: Default::default(),
        backoff: Duration::from_millis(500),
    })
}

/// Runs the current attempt of a claimed native run to its end: the phases
/// of [`super::native_attempt`] in order. What a phase reads and the loop
/// does not need goes with the phase: what this function holds while its
/// model works is what it needs (a local here lives, and is stored, until
/// its end).
pub(crate) async fn attempt<S: Store + ?Sized>(
    store: &S,
    layout: &Layout,
    run: &mut Run,
    log: &mut LifecycleLog,
    ctx: &NativeCtx<'_>,
) -> RuntimeResult<Ended> {
    let phases = Phases { store, layout, ctx };
    let (cfg, secrets) = match Box::pin(phases.configure(run, log)).await {
        Ok(configured) => configured,
        Err(ended) => return Ok(ended),
    };
    // The input moves into the conversation's first message (the run's
    // next record has it again, see `Phases::drive`).
    let payload = std::mem::take(&mut run.payload);
    let (mut conv, session_version) = match phases.conversation(run, payload, log).await {
        Ok(conversation) => conversation,
        Err(ended) => return Ok(ended),
    };
    let services = phases.services(run);
    // The phases larger than the loop's driver are boxed: awaited inline, a
    // phase's state (starting tools is ~10 KB) is laid out in this
    // function's and so held by every run while its model works (issue #38).
    let mut tooling = match Box::pin(phases.start_tools(run, log, &cfg, &secrets, &services)).await
    {
        Ok(tooling) => tooling,
        Err(ended) => return Ok(ended),
    };
    phases
        .bill_of_materials(run, log, &cfg, tooling.tool_box.as_ref())
        .await;
    // `dispatch eval --record` / `--replay-tools`: tool results in the cassette.
    let taped = dispatch_agent::cassette_tools::wrap(tooling.plain());
    let tools: &dyn Tools = match &taped {
        Some(t) => t,
        None => tooling.plain(),
    };
    let start = phases.agent_started();
    let guard = CancelGuard::register(&run.id);
    let watch = phases.watch(run);
    let mut sink = phases.sink(run, secrets);
    let mut stops = Stops::new(ctx.own_signals, &guard, watch, &services.approver.waiting);
    let looping = looping(&cfg, &mut conv, tooling.cli.as_ref(), tools, &mut sink);
    let outcome = phases.drive(run, &start, looping, &mut stops).await;
    drop(stops);
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(ended) => return Ok(ended),
    };
    Box::pin(phases.stop_tools(run, log, tooling.tool_box)).await;
    phases
        .bill_in_flight(run, log, &cfg, &mut sink, &outcome)
        .await;
    sink.end_text();
    let sink_secrets = sink.secrets.clone();
    drop(guard);
    let end = Box::pin(phases.end(run, log, outcome, &conv, session_version, &sink_secrets)).await;
    tooling.limits.end(store, &run.id, run.attempt, 0).await;
    // A dead letter reads the run's checkpoints from the store: the
    // conversation is not kept a second time, as JSON, while the run waits.
    Ok(Ended {
        end,
        checkpoint: None,
        start: None,
    })
}

/// `value` with every secret masked (what the store keeps of a model's words).
pub(crate) fn masked<T: serde::Serialize + serde::de::DeserializeOwned + Clone>(
    value: &T,
    secrets: &[String],
) -> T {
    if secrets.iter().all(String::is_empty) {
        return value.clone();
    }
    serde_json::to_value(value)
        .ok()
        .and_then(|v| serde_json::from_value(mask_value(v, secrets)).ok())
        .unwrap_or_else(|| value.clone())
}

pub(crate) fn failure(reason: String) -> AttemptFailure {
    AttemptFailure {
        reason,
        exit_code: None,
        status: Status::Failed,
    }
}

pub(crate) async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Saves the conversation as the session's next version. Another run that
/// saved in between wins the race for its turn; this turn is appended after it.
pub(crate) async fn save_session<S: Store + ?Sized>(
    store: &S,
    key: &str,
    conv: &Conversation,
    mut expected: i64,
    by: &RunId,
    log: &mut LifecycleLog,
) {
    let mut data = SessionData {
        messages: conv.messages.clone(),
        compacted: conv.compacted,
    };
    for _ in 0..5 {
        let value = serde_json::to_value(&data).unwrap_or(Value::Null);
        match store
            .put_session(key, &value, expected, Some(by), now_ms())
            .await
        {
            Ok(_) => return,
            Err(StoreError::SessionConflict { .. }) => {
                let Ok(Some(current)) = store.get_session(key).await else {
                    continue;
                };
                let theirs: SessionData = serde_json::from_value(current.data).unwrap_or_default();
                // Keep their history and add this turn (the messages past what this run started from).
                let mine = conv
                    .messages
                    .iter()
                    .skip_while(|m| theirs.messages.contains(m))
                    .cloned();
                let mut merged = theirs.messages.clone();
                merged.extend(mine);
                data = SessionData {
                    messages: merged,
                    compacted: theirs.compacted,
                };
                expected = current.version;
            }
            Err(e) => {
                log.line(&format!("could not save session {key}: {e}"));
                return;
            }
        }
    }
    log.line(&format!("could not save session {key}: it kept changing"));
}

/// Where the loop's results go: the run's events, log and calls directory.
pub(crate) struct RunSink<'a, S: ?Sized> {
    store: &'a S,
    run_id: RunId,
    /// The run's project (whose quotas each model call asks about).
    project: String,
    attempt: u32,
    log: Option<std::fs::File>,
    /// Writes the run's call records ([`CallRecords`]): what [`Self::blob`]
    /// calls, and what a model call takes along to record its request as
    /// it goes out.
    records: dispatch_agent::RecordRequest,
    pub(crate) secrets: Arc<[String]>,
    /// Whether the last text written to the log ended a line.
    at_line_start: bool,
    /// Streamed text not written yet: it may be the start of a secret.
    pending: String,
    /// The call sent and not recorded yet (its `model_call_sent`, as JSON
    /// text: held while the model works, a parsed map is ~1 KB more), and
    /// the bytes of answer it got so far.
    in_flight: Option<(Box<str>, usize)>,
    /// The parcel's `RATE_LIMIT`s.
    pub(super) rates: super::native_rate::Limits,
}

/// How many bytes at the end of `text` could begin a secret (held back).
fn held_back(text: &str, secrets: &[String]) -> usize {
    let mut keep = 0;
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        for n in (1..s.len().min(text.len() + 1)).rev() {
            if n > keep
                && text.is_char_boundary(text.len() - n)
                && s.as_bytes().starts_with(&text.as_bytes()[text.len() - n..])
            {
                keep = n;
                break;
            }
        }
    }
    keep
}

impl<'a, S: Store + ?Sized> RunSink<'a, S> {
    pub(crate) fn new(store: &'a S, layout: &Layout, run: &Run, secrets: Vec<String>) -> Self {
        let secrets: Arc<[String]> = secrets.into();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(layout.log(&run.id))
            .ok();
        RunSink {
            store,
            run_id: run.id.clone(),
            project: run.project.clone(),
            attempt: run.attempt,
            log,
            records: CallRecords::recorder(layout.run_dir(&run.id), secrets.clone()),
            secrets,
            at_line_start: true,
            pending: String::new(),
            in_flight: None,
            rates: super::native_rate::Limits::default(),
        }
    }

    /// The call sent and not recorded yet, as its `model_call_sent`, and
    /// the bytes of answer it got (to bill it when the run was stopped).
    pub(crate) fn take_in_flight(&mut self) -> Option<(Value, usize)> {
        let (sent, bytes) = self.in_flight.take()?;
        Some((serde_json::from_str(&sent).unwrap_or_default(), bytes))
    }

    fn emit(&mut self, text: String) {
        if text.is_empty() {
            return;
        }
        if let Some(f) = self.log.as_mut() {
            let _ = f.write_all(text.as_bytes());
        }
        if let Some(last) = text.chars().last() {
            self.at_line_start = last == '\n';
        }
        let _ = deltas().send(TextDelta {
            run_id: self.run_id.clone(),
            attempt: self.attempt,
            text,
        });
    }

    /// Ends the streamed text's line in the log.
    pub(crate) fn end_text(&mut self) {
        let rest = std::mem::take(&mut self.pending);
        self.emit(mask(&rest, &self.secrets));
        if !self.at_line_start
            && let Some(f) = self.log.as_mut()
        {
            let _ = f.write_all(b"\n");
            self.at_line_start = true;
        }
    }
}

#[async_trait::async_trait]
impl<S: Store + ?Sized> dispatch_agent::Sink for RunSink<'_, S> {
    fn delta(&mut self, text: &str) {
        // A secret may arrive split across fragments: hold back what could
        // be the start of one until the next fragment says.
        self.pending.push_str(text);
        let masked = mask(&self.pending, &self.secrets);
        let keep = held_back(&masked, &self.secrets);
        let ready = masked[..masked.len() - keep].to_string();
        self.pending = masked[masked.len() - keep..].to_string();
        self.emit(ready);
    }

    async fn record(&mut self, events: Vec<RunEvent>) -> Result<(), String> {
        let at = now_ms();
        let batch: Vec<NewEvent> = events
            .into_iter()
            .map(|e| {
                let (kind, data) = e.into_parts();
                NewEvent::new(kind, self.attempt, at, mask_value(data, &self.secrets))
            })
            .collect();
        if batch.iter().any(|e| e.is(EventKind::ModelCall)) {
            self.end_text();
            self.in_flight = None;
        }
        let sent = batch
            .iter()
            .find(|e| e.is(EventKind::ModelCallSent))
            .map(|e| (e.data.to_string().into_boxed_str(), 0));
        // A short outage should not lose a round: try a few times.
        let mut last = String::new();
        for wait in [0u64, 100, 400, 1_000, 2_000] {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            match self.store.append_events(&self.run_id, &batch).await {
                Ok(()) => {
                    // Only a call whose sending is on record goes out.
                    self.in_flight = sent.or(self.in_flight.take());
                    return Ok(());
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    fn streamed(&mut self, bytes: usize) {
        if let Some((_, got)) = self.in_flight.as_mut() {
            *got += bytes;
        }
    }

    async fn admit(&mut self, model: &str, provider: &str, est_tokens: u64) -> Admission {
        let (admission, waited) = self
            .rates
            .admit(
                self.store,
                model,
                provider,
                est_tokens,
                (&self.run_id, self.attempt),
            )
            .await;
        if let Some(event) = waited {
            let _ = self.record(vec![RunEvent::RateLimitWait(event)]).await;
        }
        admission
    }

    async fn over_quota(&mut self) -> Option<String> {
        super::native_quota::over_quota(self.store, &self.project).await
    }

    async fn settle(&mut self, admission: Admission, tokens: u64) {
        super::native_rate::Limits::settle(self.store, admission, tokens).await;
    }

    async fn rate_limited(&mut self, model: &str, provider: &str, wait: Duration) {
        self.rates.block(self.store, model, provider, wait).await;
    }

    fn blob(&mut self, bytes: &[u8]) -> Option<String> {
        (self.records.0)(bytes)
    }

    fn record_request(&mut self) -> Option<dispatch_agent::RecordRequest> {
        Some(self.records.clone())
    }
}

/// The run's call records, `runs/<id>/calls.jsonl` (see
/// [`crate::call_records`]): each body masked, then written once under its
/// sha256. Shared by the sink and the model call in flight, which records
/// its request as it goes out.
struct CallRecords {
    run_dir: PathBuf,
    secrets: Arc<[String]>,
    /// The digests of the records written by this attempt: the 32 bytes,
    /// not their hex (an 80-byte allocation each).
    recorded: Mutex<HashSet<[u8; 32]>>,
}

impl CallRecords {
    fn recorder(run_dir: PathBuf, secrets: Arc<[String]>) -> dispatch_agent::RecordRequest {
        let records = CallRecords {
            run_dir,
            secrets,
            recorded: Mutex::new(HashSet::new()),
        };
        dispatch_agent::RecordRequest(Arc::new(move |bytes| records.record(bytes)))
    }

    /// Records `bytes` (masked) unless this attempt did already: its sha256.
    fn record(&self, bytes: &[u8]) -> Option<String> {
        if bytes.is_empty() {
            return None;
        }
        let text = mask(&String::from_utf8_lossy(bytes), &self.secrets);
        let digest: [u8; 32] = sha2::Sha256::digest(text.as_bytes()).into();
        let sha = hex::encode(digest);
        let new = self
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(digest);
        if new {
            let _ = crate::call_records::append(&self.run_dir, &sha, &text);
        }
        Some(sha)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_split_across_fragments_is_held_back_then_masked() {
        let secrets = vec!["sk-SECRET".to_string()];
        let mut pending = String::new();
        let mut out = String::new();
        for piece in ["the key is sk-S", "ECR", "ET, bye"] {
            pending.push_str(piece);
            let masked = mask(&pending, &secrets);
            let keep = held_back(&masked, &secrets);
            out.push_str(&masked[..masked.len() - keep]);
            pending = masked[masked.len() - keep..].to_string();
        }
        out.push_str(&mask(&pending, &secrets));
        assert_eq!(out, "the key is ****, bye");
        assert_eq!(held_back("nothing like it", &secrets), 0);
        assert_eq!(held_back("ends with sk-", &secrets), 3);
    }
}
