//! `POST /v1/runs`: queue a run of a built parcel for the workers, with the
//! reliability options of `dispatch run` (policy overrides, idempotency key
//! or `dedup`, `force`, session) and the queue options (priority, labels,
//! callback), all stored in one transaction.

use dispatch_api::CreateRun;
use dispatch_core::EventKind;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dispatch_core::parcel::Parcel;
use dispatch_core::policy::{RunPolicy, Spelling};
use dispatch_core::units::parse_duration_ms_or_seconds;
use dispatch_core::{NewEvent, Operation, now_ms};
use dispatch_runtime::launch::{self, LaunchRequest};
use dispatch_runtime::submit::{check_session_name, default_key};
use dispatch_store::{Created, NewRun, QueueOptions, RunExtras};
use serde_json::{Value, json};

use super::parcels::find_parcel;
use super::patience::{Patience, enqueue_once};
use super::runs::{Params, bounded, flag, params, resolve, wait_for_end};
use super::schemas;
use super::wire;
use super::{ApiError, ApiResult, AppState};
use crate::callback_guard::check_url;
use crate::metrics::Metrics;

/// The longest `?wait=true` blocks, whatever `timeout` asks.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// The reliability options of a request, checked.
pub(super) struct Reliability {
    policy: RunPolicy,
    idempotency_key: Option<String>,
    session: Option<String>,
}

/// What the server checks and derives of a [`CreateRun`] (the wire type
/// lives in `dispatch-api`).
pub(super) trait Checked {
    /// Checks what the workers and the store cannot: one 400 line per
    /// mistake. Returns the queue timeout in milliseconds.
    fn check(&self) -> ApiResult<Option<i64>>;
    /// The project the run belongs to.
    fn project(&self) -> &str;
    /// `queue_timeout` in milliseconds, checked.
    fn queue_timeout_ms(&self) -> ApiResult<Option<i64>>;
    fn reliability(
        &self,
        parcel: &Parcel,
        operation: Operation,
        payload: &Value,
    ) -> ApiResult<Reliability>;
}

impl Checked for CreateRun {
    fn check(&self) -> ApiResult<Option<i64>> {
        // Only built parcels: a server never builds from a path a client names.
        if self.parcel.is_empty() || self.parcel.contains('/') || self.parcel.starts_with('.') {
            return Err(ApiError::bad_request(format!(
                "`{}` is not a parcel name or digest (hint: upload it with POST /v1/parcels)",
                self.parcel
            )));
        }
        if self.idempotency_key.as_deref() == Some("") {
            return Err(ApiError::bad_request(
                "idempotency_key must not be empty (hint: leave it out, or set \"dedup\": true)",
            ));
        }
        if let Some(name) = &self.session {
            check_session_name(name)?;
        }
        if let Some(project) = &self.project {
            dispatch_core::project::check_project(project).map_err(ApiError::bad_request)?;
        }
        self.queue_timeout_ms()
    }

    fn project(&self) -> &str {
        self.project
            .as_deref()
            .unwrap_or(dispatch_core::project::DEFAULT_PROJECT)
    }

    fn queue_timeout_ms(&self) -> ApiResult<Option<i64>> {
        let Some(text) = self.queue_timeout.as_deref() else {
            return Ok(None);
        };
        let ms = parse_duration_ms_or_seconds(text)
            .ok()
            .and_then(|ms| i64::try_from(ms).ok())
            .filter(|ms| *ms > 0)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "queue_timeout `{text}` is not a positive duration (hint: \"30s\", \"5m\", \"1h\")"
                ))
            })?;
        Ok(Some(ms))
    }

    fn reliability(
        &self,
        parcel: &Parcel,
        operation: Operation,
        payload: &Value,
    ) -> ApiResult<Reliability> {
        let overrides = self
            .policy
            .clone()
            .unwrap_or_default()
            .overrides(Spelling::Field)
            .map_err(ApiError::bad_request)?;
        let idempotency_key = self.idempotency_key.clone().or_else(|| {
            self.dedup
                .then(|| default_key(&parcel.digest, operation.as_str(), payload))
        });
        Ok(Reliability {
            policy: RunPolicy::resolve(&parcel.manifest, &overrides),
            idempotency_key,
            session: self
                .session
                .as_ref()
                .map(|s| format!("{}/{s}", parcel.manifest.name)),
        })
    }
}

#[utoipa::path(
    post,
    path = "/v1/runs",
    operation_id = "createRun",
    tag = "runs",
    summary = "Create a run of a built parcel, queued for the workers",
    description = "With `Accept: text/event-stream`, the answer is the run's events as they happen (as `getRunEvents`).",
    params(schemas::CreateRunQuery, schemas::CreateRunHeaders),
    request_body = CreateRun,
    responses(
        (status = 201, description = "created", body = schemas::Run),
        (status = 200, description = "an idempotency key matched an existing run (`deduplicated`), or `wait` saw the run end", body = schemas::Run, content(
            (schemas::Run = "application/json"),
            (schemas::SseEvent = "text/event-stream"),
        )),
        (status = 202, description = "`wait` timed out before the run ended", body = schemas::Run),
        (status = 400, description = "`bad_request`: a bad body, parameter or `traceparent` header, or a `parent_id` of another project; `ambiguous_id`: `parent_id` matches several runs; `missing_secret`: the parcel needs a secret the server lacks", body = schemas::Error),
        (status = 401, description = "`unauthorized`: a token is required", body = schemas::Error),
        (status = 403, description = "`forbidden`: the server's policy denies the run (the message says why); `cross_origin`: sent by a page of another origin", body = schemas::Error),
        (status = 404, description = "`parcel_not_found`; `run_not_found`: no run matches `parent_id`", body = schemas::Error),
        (status = 409, description = "`session_busy`: a live run holds the session", body = schemas::Error),
        (status = 413, description = "`payload_too_large`: the body is over 2 MiB", body = schemas::Error),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    query: Params,
    headers: HeaderMap,
    token: Option<axum::Extension<dispatch_store::TokenRecord>>,
    body: Bytes,
) -> ApiResult<Response> {
    let params = params(query)?;
    super::runs::only_known(params.keys(), &["wait", "timeout"])?;
    let wait = flag(&params, "wait")?;
    let timeout = bounded(&params, "timeout", 0.0, MAX_WAIT.as_secs_f64())?
        .map_or(Duration::from_secs(30), Duration::from_secs_f64);
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("bad run request: {e}")))?;
    check_payload(&value)?;
    let req: CreateRun = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("bad run request: {e}")))?;
    let traceparent = traceparent_of(&headers)?;
    let patience = state.patience();
    let who = super::policy::who(token.as_deref());
    let ready = prepare(
        &state,
        &patience,
        req,
        traceparent,
        (&who, token.as_deref()),
        &mut Parcels::new(),
    )
    .await?;
    super::publish::put_brief(&state, &patience, &ready.brief).await?;
    let (new, extras, options) = (ready.new, ready.extras, ready.options);
    let created = enqueue(&state, &patience, &new, &extras, &options, ready.dedupe).await?;
    let deduplicated = matches!(created, Created::Existing(_));
    let run = match created {
        Created::New(run) | Created::Existing(run) => run,
    };
    let streaming = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if streaming {
        // The run's events as they happen, from its `created` event on.
        return Ok(super::stream::event_stream(state, run.id, 0));
    }
    let answer = |status: StatusCode, run: &dispatch_store::Run| {
        let mut doc = wire::run(run);
        doc.deduplicated = Some(deduplicated);
        (status, Json(doc)).into_response()
    };
    if !wait {
        // Like Stripe: the same key answers the same run, 200 rather than 201.
        let status = if deduplicated {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        return Ok(answer(status, &run));
    }
    let run = wait_for_end(&state, &run.id, timeout).await?;
    // 200 with the finished run; 202 when the wait timed out first.
    let status = if run.state.is_terminal() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(answer(status, &run))
}

/// The parcels a batch's items named, found once each.
pub(super) type Parcels = std::collections::HashMap<String, Parcel>;

/// A checked request, ready to be stored: the run, its extras and queue
/// options, and its brief (SHA-256, bytes; stored with it).
pub(super) struct Prepared {
    pub new: NewRun,
    pub extras: RunExtras,
    pub options: QueueOptions,
    pub dedupe: bool,
    pub brief: (String, Vec<u8>),
}

/// Checks `req` (one 400 line per mistake; a 403 when the token may not
/// run in its project) and makes its run: parcel found and put into the
/// store, brief written here, policy, concurrency and model resolved.
/// Nothing of the run is stored yet.
pub(super) async fn prepare(
    state: &AppState,
    patience: &Patience,
    mut req: CreateRun,
    traceparent: Option<String>,
    (who, token): (
        &dispatch_policy::input::Who,
        Option<&dispatch_store::TokenRecord>,
    ),
    parcels: &mut Parcels,
) -> ApiResult<Prepared> {
    let queue_timeout_ms = req.check()?;
    crate::auth::may(token, req.project(), dispatch_store::TokenScope::Run)?;
    let secret = match (&req.callback_url, &state.callback_secret) {
        (None, _) => None,
        (Some(url), _) if let Err(refusal) = check_url(url, state.callback_policy) => {
            return Err(ApiError::bad_request(refusal));
        }
        (Some(_), None) => {
            return Err(ApiError::bad_request(
                "this server has no callback secret (hint: start it with DISPATCH_CALLBACK_SECRET set)",
            ));
        }
        (Some(_), Some(secret)) => Some(secret.clone()),
    };
    let parent_id = match &req.parent_id {
        Some(p) => Some(same_project_parent(state, patience, p, req.project(), token).await?),
        None => None,
    };
    let parcel = match parcels.get(&req.parcel) {
        Some(p) => p.clone(),
        None => {
            let p = patience.retry(|| find_parcel(state, &req.parcel)).await?;
            parcels.insert(req.parcel.clone(), p.clone());
            p
        }
    };
    launch::check_secrets(&parcel)?;
    dispatch_runtime::limits::machine::check_fits(&parcel.manifest.resources)
        .map_err(dispatch_runtime::RuntimeError::Resources)?;
    let operation = req.operation.unwrap_or(parcel.manifest.entrypoint);
    if operation == Operation::Service {
        return Err(ApiError::bad_request(format!(
            "`{}` is a service; POST /v1/runs runs jobs and heartbeats (hint: start a service with `dispatch serve`, or pass \"operation\": \"job\")",
            parcel.manifest.name
        )));
    }
    let payload = req.payload.clone().unwrap_or_else(|| json!({}));
    let passed = super::policy::gate(state, who, &parcel, operation, &mut req, &payload)?;
    let mut reliability = req.reliability(&parcel, operation, &payload)?;
    if let Some(m) = passed.as_ref().and_then(|p| p.modify.as_ref()) {
        super::policy::lower_limits(&mut reliability.policy, m);
    }
    // A native agent's keys are the workers' (read where the model is called);
    // what needs no key is checked now: a cost limit needs known prices.
    dispatch_runtime::submit::check_native_without_keys(&parcel, &reliability.policy)?;
    // The model it calls: the request's choice over this server's `LLM_*`
    // (a native agent's only; a process agent reads its own environment).
    let llm = match parcel.manifest.courier {
        dispatch_core::parcel::Courier::Agent => dispatch_runtime::submit::ModelChoice {
            model: req.model.clone(),
            base_url: req.base_url.clone(),
            provider: req.provider.clone(),
            reasoning_effort: req.reasoning_effort.clone(),
        }
        .context(|k| std::env::var(k).ok())
        .map_err(|e| ApiError::bad_request(e.to_string()))?,
        _ => None,
    };
    let request = LaunchRequest {
        source: parcel.digest.clone(),
        operation: Some(operation),
        payload,
        parent_id,
        origin_id: None,
        project: req.project().to_string(),
    };
    let concurrency = dispatch_runtime::concurrency::resolve(
        &parcel.manifest,
        &request.payload,
        &req.labels,
        &dispatch_runtime::concurrency::ConcurrencyOverrides {
            key: req.concurrency_key.clone(),
            max: req.concurrency_max,
            strategy: req.concurrency_strategy,
        },
    )?;
    let (mut new, brief) = patience
        .retry(|| {
            super::publish::new_run_calling(state, &parcel, &request, operation, llm.as_ref())
        })
        .await?;
    new.created = req.start == Some(false);
    let extras = RunExtras {
        idempotency_key: reliability.idempotency_key,
        session: reliability.session,
        policy: Some(serde_json::to_value(&reliability.policy).expect("a policy is plain data")),
        keep_workspace: req.keep_workspace,
        concurrency,
        traceparent,
        // The policy's decision is written with the run, in its transaction.
        events: passed
            .as_ref()
            .map(|p| dispatch_runtime::policy_gate::decision_event(&p.event))
            .into_iter()
            .collect(),
        // Sent to a person by the policy: created in review, never claimed.
        review: passed
            .as_ref()
            .and_then(|p| p.review.clone())
            .map(|r| state.review(r)),
    };
    let options = QueueOptions {
        queue_timeout_ms,
        priority: req.priority.unwrap_or(0),
        labels: req.labels,
        // Checked above: only with a secret to sign it.
        callback_url: req.callback_url.filter(|_| secret.is_some()),
        requests: dispatch_store::Capacity::of(&parcel.manifest.resources),
    };
    Ok(Prepared {
        new,
        extras,
        options,
        dedupe: !req.force,
        brief,
    })
}

/// The full id of the parent `arg` names, when it is in `project`: a run
/// never hangs under a run of another project (its usage, quota and
/// audit would belong to one project and be listed under the other). A
/// parent in a project `token` may not read is answered as absent.
async fn same_project_parent(
    state: &AppState,
    patience: &Patience,
    arg: &str,
    project: &str,
    token: Option<&dispatch_store::TokenRecord>,
) -> ApiResult<dispatch_core::RunId> {
    let id = patience.retry(|| resolve(state, arg)).await?;
    let parent = patience
        .retry(|| async { Ok(state.store.get_run(&id).await?) })
        .await?;
    if parent.project == project {
        return Ok(id);
    }
    if crate::auth::may(token, &parent.project, dispatch_store::TokenScope::Read).is_err() {
        return Err(dispatch_store::StoreError::NotFound(arg.to_string()).into());
    }
    Err(ApiError::bad_request(format!(
        "parent run {id} is in project {}, not in project {project}: a run and its parent share one project (hint: pass \"project\": \"{}\", or start it without `parent_id`)",
        parent.project, parent.project
    )))
}

/// Queues a run for the workers: stores it with its extras and queue options
/// in one transaction (or finds the run it duplicates, when `dedupe`),
/// waiting out a lost database as `patience` allows. A new run gets its
/// callback noted, is counted, wakes this process's workers and is
/// announced on the bus (in bus mode).
pub(super) async fn enqueue(
    state: &AppState,
    patience: &Patience,
    new: &NewRun,
    extras: &RunExtras,
    options: &QueueOptions,
    dedupe: bool,
) -> ApiResult<Created> {
    let created = enqueue_once(state, patience, new, extras, options, dedupe).await?;
    if let Created::New(run) = &created {
        after_enqueue(state, patience, run, options).await?;
    }
    Ok(created)
}

/// What follows a new run into the queue: its callback noted, counted,
/// this process's workers woken, announced on the bus (in bus mode).
pub(super) async fn after_enqueue(
    state: &AppState,
    patience: &Patience,
    run: &dispatch_store::Run,
    options: &QueueOptions,
) -> ApiResult<()> {
    if run.state.is_terminal() {
        // Dropped at once (its concurrency key was full).
        state.traced(&run.id);
    }
    if let Some(url) = &options.callback_url {
        let event = NewEvent::new(
            EventKind::CallbackRegistered,
            run.attempt,
            now_ms(),
            json!({"url": url}),
        );
        let events = std::slice::from_ref(&event);
        patience
            .retry(|| async { Ok(state.store.append_events(&run.id, events).await?) })
            .await?;
    }
    Metrics::add(&state.metrics.runs_created, 1);
    state.wake.notify_one();
    if options.queue_timeout_ms.is_some() {
        state.queue_timeouts.notify_one();
    }
    if let Some(bus) = &state.bus
        && let Err(e) = bus.announce(run.id.as_str()).await
    {
        // The queue has the run; workers find it at their next poll.
        tracing::warn!(
            "[server] run {}: cannot announce it on the bus: {e}",
            run.id
        );
    }
    Ok(())
}

/// The deepest payload a run takes: a run is answered nested in lists and
/// events, and JSON parsers (serde_json's included) stop at 128 levels.
const MAX_PAYLOAD_DEPTH: usize = 64;

/// What a run request's JSON may not hold: NUL characters, a payload
/// nested deeper than [`MAX_PAYLOAD_DEPTH`].
pub(super) fn check_payload(value: &Value) -> ApiResult<()> {
    super::runs::reject_nul(value, "")?;
    if let Some(payload) = value.get("payload")
        && depth(payload) > MAX_PAYLOAD_DEPTH
    {
        return Err(ApiError::bad_request(format!(
            "`payload` is nested more than {MAX_PAYLOAD_DEPTH} levels deep (hint: flatten it, or send the deep part as a JSON string)"
        )));
    }
    Ok(())
}

/// How deeply `value` nests arrays and objects (a scalar is 0).
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The `traceparent` header, checked (a 400 names what is wrong); stored as given.
pub(super) fn traceparent_of(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("traceparent") else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| {
        ApiError::bad_request(
            "the traceparent header is not text (hint: 00-<trace id>-<parent id>-<flags>)",
        )
    })?;
    text.parse::<dispatch_core::trace::TraceParent>()
        .map_err(|e| ApiError::bad_request(format!("traceparent header: {e}")))?;
    Ok(Some(text.trim().to_string()))
}
