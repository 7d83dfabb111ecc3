//! The cases' runs on the local store: each repeat of each case is a real
//! run, created and started the way `dispatch run --detach` does it (the
//! parcel's brief, policy and helper), labeled `eval` and `eval=<id>`, a
//! child of the eval's run (see [`dispatch_runtime::group`]); and how a
//! finished run is checked against its case (for every backend).

use std::time::Duration;

use dispatch_core::EventKind;
use dispatch_core::parcel::Parcel;
use dispatch_runtime::launch::LaunchRequest;
use dispatch_runtime::reconcile::reconcile;
use dispatch_runtime::submit::{self, SubmitOptions};
use dispatch_store::sqlite::SqliteStore;
use dispatch_store::{Created, EventStore, QueueOptions, QueueStore, Run, RunStore};
use serde_json::Value;

use super::cases::Case;
use super::check::{Observed, failures};
use super::grade::{self, Verdict};
use super::pool::Backend;
use crate::ctx::Ctx;
use crate::error::CliResult;

/// The grace period a stopped eval gives its live cases.
const CASE_GRACE: Duration = Duration::from_secs(5);

/// One finished run of one case.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub case: String,
    /// Which repeat, from 1.
    pub repeat: u32,
    pub run_id: String,
    pub passed: bool,
    /// Every failed expectation; the first is the one shown.
    pub failures: Vec<String>,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub tokens: u64,
    pub cost_usd: f64,
    pub duration_ms: u64,
    /// `expect.judge`: what the judge said (its tokens and cost are its
    /// own, not the run's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<Verdict>,
}

/// What the runs need besides the cases.
pub struct Plan<'a> {
    pub eval_id: &'a str,
    pub parcel: &'a Parcel,
    pub jobs: usize,
    pub repeat: u32,
    /// The options every run is dispatched with (policy overrides).
    pub options: SubmitOptions,
    /// The eval's run: the parent of every case's run.
    pub group: Option<dispatch_core::RunId>,
}

/// The local store: each case's run started the way `dispatch run
/// --detach` starts one, read (and reconciled) from the store.
pub struct Local<'a> {
    pub ctx: &'a Ctx,
    pub store: &'a SqliteStore,
}

impl Backend for Local<'_> {
    const POLL: Duration = Duration::from_millis(10);

    async fn start(&self, plan: &Plan<'_>, case: &Case) -> CliResult<Run> {
        start(self.ctx, self.store, plan, case).await
    }

    async fn refresh(&self, run: &Run) -> CliResult<Run> {
        let now = self.store.get_run(&run.id).await?;
        Ok(reconcile(self.store, &self.ctx.layout, now).await?)
    }

    async fn trail(&self, run: &Run) -> CliResult<Trail> {
        trail(self.store, run).await
    }

    async fn group_stopped(&self, plan: &Plan<'_>) -> CliResult<bool> {
        Ok(match &plan.group {
            Some(group) => self.store.get_run(group).await?.stop_requested_at.is_some(),
            None => false,
        })
    }

    /// Every live case's run at once, each with [`CASE_GRACE`].
    async fn stop_live(&self, live: &[&Run]) {
        let stops = live.iter().map(|run| {
            dispatch_runtime::stop::stop(self.store, &self.ctx.layout, &run.id, CASE_GRACE, false)
        });
        for (result, run) in futures_util::future::join_all(stops)
            .await
            .into_iter()
            .zip(live)
        {
            if let Err(e) = result
                && !matches!(e, dispatch_runtime::RuntimeError::AlreadyFinished { .. })
            {
                super::say::err(&format!("warning: could not stop case run {}: {e}", run.id));
            }
        }
    }
}

/// Creates the case's run (labeled) and spawns its helper.
async fn start(ctx: &Ctx, store: &SqliteStore, plan: &Plan<'_>, case: &Case) -> CliResult<Run> {
    let req = LaunchRequest {
        source: plan.parcel.digest.clone(),
        operation: None,
        payload: case.payload.clone(),
        parent_id: plan.group.clone(),
        origin_id: None,
        project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
    };
    let (mut new, extras, _) = submit::prepare(&ctx.layout, &req, &plan.options)?.into_parts();
    new.trigger = dispatch_core::Trigger::Eval;
    let queue = QueueOptions {
        labels: vec!["eval".to_string(), format!("eval={}", plan.eval_id)],
        ..QueueOptions::default()
    };
    let run = match store.enqueue_with(&new, &extras, &queue, false).await? {
        Created::New(run) | Created::Existing(run) => run,
    };
    crate::commands::run::start_run(ctx, store, &run).await?;
    Ok(run)
}

/// What a run's events say it did, for the checks that read them.
#[derive(Default)]
pub(super) struct Trail {
    /// Each `tool_call` event's tool name and arguments, in order.
    pub tool_calls: Vec<(String, Value)>,
    /// A workflow's messages (its `message` events): sender, receiver, kind.
    pub messages: Vec<(String, String, String)>,
}

impl Trail {
    /// Adds what one stored event (as JSON: `type`, `data`) says.
    pub(super) fn add(&mut self, kind: &str, d: &Value) {
        match EventKind::parse(kind) {
            Some(EventKind::ToolCall) => {
                let name = d["name"].as_str().unwrap_or_default().to_string();
                let input = d.get("input").cloned().unwrap_or(Value::Null);
                self.tool_calls.push((name, input));
            }
            // The coordinator's record of a message names its sender.
            Some(EventKind::Message) if d.get("from").is_some() => {
                let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
                self.messages.push((s("from"), s("to"), s("kind")));
            }
            _ => {}
        }
    }
}

/// The outcome of a finished run of `case`, given its tool calls (each
/// tool's name and arguments; read only when the case checks tools).
pub(super) async fn outcome(
    plan: &Plan<'_>,
    case: &Case,
    repeat: u32,
    run: &Run,
    trail: Trail,
) -> Outcome {
    let st = &run.state;
    let end = st.ended_at().unwrap_or(run.updated_at);
    let duration_ms = (end - st.started_at().unwrap_or(run.created_at)).max(0) as u64;
    let u = run.usage;
    let observed = Observed {
        status: run.status().to_string(),
        exit_code: st.exit_code(),
        output: run.output.as_ref(),
        tool_calls: trail.tool_calls,
        messages: trail.messages,
        tokens: u.total_tokens(),
        cost_usd: u.cost_usd,
        duration_ms,
        reason: st.reason().map(str::to_string),
    };
    let mut failures = failures(&case.expect, &observed);
    // A replay that missed its cassette says so first, in full.
    if let Some(r) = st
        .reason()
        .filter(|r| r.contains("replay: request") || r.contains("replay: tool call"))
    {
        failures.insert(0, r.to_string());
    }
    let verdict = match &case.expect.judge {
        None => None,
        Some(spec) => {
            let agent = plan.parcel.manifest.agent.as_ref();
            let v = match grade::model_for(spec, agent) {
                Ok(model) => {
                    grade::grade(
                        spec,
                        &model,
                        agent,
                        &case.payload,
                        run.output.as_ref(),
                        &observed.status,
                    )
                    .await
                }
                Err(e) => Verdict {
                    passed: Some(false),
                    reason: e,
                    model: String::new(),
                    input_tokens: 0,
                    output_tokens: 0,
                    cost_usd: None,
                },
            };
            if v.passed == Some(false) {
                let why = if v.reason.starts_with("judge") {
                    v.reason.clone()
                } else {
                    format!("judge: {}", v.reason)
                };
                failures.push(why);
            }
            Some(v)
        }
    };
    Outcome {
        case: case.name.clone(),
        repeat,
        run_id: run.id.to_string(),
        passed: failures.is_empty(),
        failures,
        status: observed.status,
        exit_code: observed.exit_code,
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        tokens: u.total_tokens(),
        cost_usd: u.cost_usd,
        duration_ms,
        judge: verdict,
    }
}

/// The run's `tool_call` and `message` events.
async fn trail(store: &SqliteStore, run: &Run) -> CliResult<Trail> {
    let mut out = Trail::default();
    let mut after = 0;
    loop {
        let page = store.list_events(&run.id, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            out.add(&e.event.kind, &e.event.data);
        }
    }
    Ok(out)
}

/// One line on stderr per finished run.
pub(super) fn progress(n: usize, total: usize, o: &Outcome) {
    let verdict = if o.passed {
        "pass".to_string()
    } else {
        format!("FAIL {}", o.failures.first().map_or("", String::as_str))
    };
    let rep = if o.repeat > 1 {
        format!(" #{}", o.repeat)
    } else {
        String::new()
    };
    let unjudged = match &o.judge {
        Some(v) if v.passed.is_none() => format!(" ({})", v.reason),
        _ => String::new(),
    };
    super::say::err(&format!(
        "[{n}/{total}] {}{rep}: {verdict}{unjudged} (run {})",
        o.case, o.run_id
    ));
}
