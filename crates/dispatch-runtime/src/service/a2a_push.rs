//! A2A push notifications of `serve --a2a`: a client gives a webhook for a
//! task (`configuration.pushNotificationConfig` of `message/send` or
//! `message/stream`, or `tasks/pushNotificationConfig/set`), and the agent
//! POSTs the task there (its JSON, as `tasks/get` answers it) at each
//! change of its status, the final one included, with the config's token
//! in `X-A2A-Notification-Token` and `Authorization: Bearer <credentials>`
//! when its authentication says `Bearer`.
//!
//! Delivery never holds up the run: one task per followed run reads the
//! run and sends, in order. A status on the way is sent once; the final
//! status is retried with backoff ([`FINAL_TRIES`] tries, from
//! [`FIRST_RETRY`] doubling up to [`MAX_RETRY`]) on a connection error or
//! a 5xx / 408 / 429 answer. Each final delivery is a `push_notification`
//! event of the service (the webhook's origin, the answer, the tries;
//! never the token).
//!
//! The configs live in the service helper's memory: a restarted service
//! has none (its tasks still answer `tasks/get`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dispatch_agent::a2a::wire::{
    self, NOTIFICATION_TOKEN_HEADER, PushConfig, PushConfigParams, TaskPushConfig, code,
};
use dispatch_core::{NewEvent, RunId, now_ms};
use dispatch_store::{Run, Store};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::a2a::{A2aAgent, Body, context_of, params, rpc_error, task_run, whole};
use super::a2a_task::task_of;

/// Tries of a final notification.
const FINAL_TRIES: u32 = 6;
const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// How long one POST may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many configs per task.
const MAX_CONFIGS: usize = 8;

/// The push configs of the tasks being followed, by task id.
#[derive(Default)]
pub(super) struct Pushes {
    configs: Mutex<HashMap<String, Vec<PushConfig>>>,
}

impl Pushes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<PushConfig>>> {
        self.configs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The configs of `task`.
    pub fn of(&self, task: &str) -> Vec<PushConfig> {
        self.lock().get(task).cloned().unwrap_or_default()
    }

    /// Adds `config` to `task` (replacing the one of the same id); whether
    /// the task had none before (its follower must start). The config as
    /// kept: its id is the task's when the client gave none.
    fn put(&self, task: &str, mut config: PushConfig) -> Result<(PushConfig, bool), String> {
        check_url(&config)?;
        let id = config.id.clone().unwrap_or_else(|| task.to_string());
        config.id = Some(id.clone());
        let mut all = self.lock();
        let list = all.entry(task.to_string()).or_default();
        let first = list.is_empty();
        list.retain(|c| c.id.as_deref() != Some(id.as_str()));
        if list.len() >= MAX_CONFIGS {
            return Err(format!(
                "task {task} has {MAX_CONFIGS} push notification configs already (hint: tasks/pushNotificationConfig/delete one)"
            ));
        }
        list.push(config.clone());
        Ok((config, first))
    }

    /// Removes config `id` of `task`; whether there was one.
    pub fn delete(&self, task: &str, id: &str) -> bool {
        let mut all = self.lock();
        let Some(list) = all.get_mut(task) else {
            return false;
        };
        let before = list.len();
        list.retain(|c| c.id.as_deref() != Some(id));
        before != list.len()
    }

    /// Ends the following of `task` once each of its configs has had
    /// the final status (`sent`, by id); else the configs set meanwhile,
    /// to send it to first.
    fn finish(&self, task: &str, sent: &[Option<String>]) -> Vec<PushConfig> {
        let mut all = self.lock();
        let late: Vec<PushConfig> = all
            .get(task)
            .into_iter()
            .flatten()
            .filter(|c| !sent.contains(&c.id))
            .cloned()
            .collect();
        if late.is_empty() {
            all.remove(task);
        }
        late
    }
}

/// Refuses a webhook that is not an absolute http(s) URL, or one the
/// agent's host does not send to (a cluster server's callback guard).
pub(super) fn check(agent: &A2aAgent, config: &PushConfig) -> Result<(), String> {
    check_url(config)?;
    agent.host.check_push_url(&config.url)
}

fn check_url(config: &PushConfig) -> Result<(), String> {
    match url::Url::parse(&config.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(format!(
            "pushNotificationConfig.url `{}` is not an http(s) URL (hint: \"url\": \"https://client.example.com/a2a/notify\")",
            dispatch_core::event::shorten(&config.url, 80)
        )),
    }
}

/// `tasks/pushNotificationConfig/set|get|list|delete`.
pub(super) async fn rpc(agent: &A2aAgent, id: &Value, method: &str, v: &Value) -> Response<Body> {
    let answer = |result: Value| whole(StatusCode::OK, &wire::success(id, result));
    let as_value = |task: &str, c: PushConfig| {
        serde_json::to_value(TaskPushConfig {
            task_id: task.to_string(),
            push_notification_config: c,
        })
        .unwrap_or_default()
    };
    if method == "tasks/pushNotificationConfig/set" {
        let p: TaskPushConfig = match params(v) {
            Ok(p) => p,
            Err(e) => return rpc_error(id, code::INVALID_PARAMS, e),
        };
        let run = match task_run(agent, &p.task_id).await {
            Ok(run) => run,
            Err(e) => return rpc_error(id, code::TASK_NOT_FOUND, e),
        };
        let context = context_of(agent, &run).await;
        return match subscribe(agent, &run, &context, p.push_notification_config) {
            Ok(kept) => answer(as_value(&p.task_id, kept)),
            Err(e) => rpc_error(id, code::INVALID_PARAMS, e),
        };
    }
    let p: PushConfigParams = match params(v) {
        Ok(p) => p,
        Err(e) => return rpc_error(id, code::INVALID_PARAMS, e),
    };
    if let Err(e) = task_run(agent, &p.id).await {
        return rpc_error(id, code::TASK_NOT_FOUND, e);
    }
    let configs = agent.pushes.of(&p.id);
    let wanted = p.push_notification_config_id.as_deref();
    match method {
        "tasks/pushNotificationConfig/get" => {
            let found = configs
                .into_iter()
                .find(|c| wanted.is_none_or(|w| c.id.as_deref() == Some(w)));
            match found {
                Some(c) => answer(as_value(&p.id, c)),
                None => rpc_error(
                    id,
                    code::INVALID_PARAMS,
                    format!(
                        "task {} has no such push notification config (configs are kept until the task ends; hint: tasks/pushNotificationConfig/set)",
                        p.id
                    ),
                ),
            }
        }
        "tasks/pushNotificationConfig/list" => answer(Value::Array(
            configs.into_iter().map(|c| as_value(&p.id, c)).collect(),
        )),
        "tasks/pushNotificationConfig/delete" => {
            let Some(w) = wanted else {
                return rpc_error(
                    id,
                    code::INVALID_PARAMS,
                    "invalid params: pushNotificationConfigId is required",
                );
            };
            agent.pushes.delete(&p.id, w);
            answer(Value::Null)
        }
        other => rpc_error(
            id,
            code::METHOD_NOT_FOUND,
            format!(
                "no method `{other}` (hint: tasks/pushNotificationConfig/set, get, list or delete)"
            ),
        ),
    }
}

/// Registers `config` for the task of `run` (in `context`) and, for the
/// first config of a task, starts following it; a task that has ended is
/// sent once at once.
pub(super) fn subscribe(
    agent: &A2aAgent,
    run: &Run,
    context: &str,
    config: PushConfig,
) -> Result<PushConfig, String> {
    check(agent, &config)?;
    let task = run.id.to_string();
    let (kept, first) = agent.pushes.put(&task, config)?;
    if first {
        let follower = Follower {
            client: agent.host.push_client(),
            pushes: agent.pushes.clone(),
            store: agent.store.clone(),
            service: agent.service.clone(),
            context: context.to_string(),
        };
        tokio::spawn(follower.run(run.clone()));
    }
    Ok(kept)
}

struct Follower {
    client: reqwest::Client,
    pushes: Arc<Pushes>,
    store: Arc<dyn Store>,
    service: RunId,
    context: String,
}

impl Follower {
    /// Follows `run` to its end, sending each status it passes through.
    async fn run(self, run: Run) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Run>();
        let store = self.store.clone();
        let first = run.clone();
        let reader = tokio::spawn(async move {
            let end = super::a2a::follow(&*store, &first, |now| tx.send(now.clone()).is_ok()).await;
            if let Ok(end) = end {
                let _ = tx.send(end);
            }
        });
        if !run.state.is_terminal() {
            self.send(&run, self.pushes.of(run.id.as_str()), 1).await;
        }
        let mut end = None;
        while let Some(now) = rx.recv().await {
            if now.state.is_terminal() {
                end = Some(now);
                break;
            }
            self.send(&now, self.pushes.of(now.id.as_str()), 1).await;
        }
        reader.abort();
        let Some(end) = end else {
            // The store failed us: nothing more can be said of the task.
            self.pushes.lock().remove(run.id.as_str());
            return;
        };
        // The final status goes to every config, those set while it was
        // on its way too.
        let mut sent = Vec::new();
        loop {
            let configs = self.pushes.finish(end.id.as_str(), &sent);
            if configs.is_empty() {
                return;
            }
            sent.extend(configs.iter().map(|c| c.id.clone()));
            self.send(&end, configs, FINAL_TRIES).await;
        }
    }

    /// Sends the task of `run` to each of `configs`.
    async fn send(&self, run: &Run, configs: Vec<PushConfig>, tries: u32) {
        let task = task_of(run, &self.context);
        let body = serde_json::to_vec(&task).unwrap_or_default();
        for config in configs {
            let (answer, used) = deliver(&self.client, &config, &body, tries).await;
            if tries > 1 {
                self.record(run, &config, &answer, used).await;
            }
        }
    }

    async fn record(
        &self,
        run: &Run,
        config: &PushConfig,
        answer: &Result<u16, String>,
        tries: u32,
    ) {
        let origin = url::Url::parse(&config.url)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        let (ok, status, error) = match answer {
            Ok(s) => ((200..300).contains(s), Some(*s), None),
            Err(e) => (false, None, Some(e.clone())),
        };
        if !ok {
            crate::say_warn!(
                "[dispatch] push notification of task {} to {origin} failed after {tries} tries: {}",
                run.id,
                error
                    .clone()
                    .unwrap_or_else(|| format!("HTTP {}", status.unwrap_or(0)))
            );
        }
        let attempt = self
            .store
            .get_run(&self.service)
            .await
            .map_or(1, |r| r.attempt);
        let data = json!({
            "task_id": run.id, "config_id": config.id, "webhook": origin,
            "delivered": ok, "http_status": status, "error": error, "tries": tries,
        });
        let e = NewEvent::new("push_notification", attempt, now_ms(), data);
        if let Err(e) = self.store.append_events(&self.service, &[e]).await {
            crate::say_warn!("[dispatch] could not record a push_notification event: {e}");
        }
    }
}

/// POSTs `body` to the webhook of `config`, up to `tries` times; the last
/// answer's status (or why there was none) and the tries used.
async fn deliver(
    client: &reqwest::Client,
    config: &PushConfig,
    body: &[u8],
    tries: u32,
) -> (Result<u16, String>, u32) {
    let mut wait = FIRST_RETRY;
    let mut used = 0;
    loop {
        used += 1;
        let answer = post(client, config, body).await;
        let again = match &answer {
            Ok(s) => *s >= 500 || *s == 408 || *s == 429,
            Err(_) => true,
        };
        if !again || used >= tries {
            return (answer, used);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_RETRY);
    }
}

async fn post(client: &reqwest::Client, config: &PushConfig, body: &[u8]) -> Result<u16, String> {
    let mut req = client
        .post(&config.url)
        .timeout(POST_TIMEOUT)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(token) = &config.token {
        req = req.header(NOTIFICATION_TOKEN_HEADER, token);
    }
    if let Some(auth) = &config.authentication
        && auth
            .schemes
            .iter()
            .any(|s| s.eq_ignore_ascii_case("bearer"))
        && let Some(c) = &auth.credentials
    {
        req = req.bearer_auth(c);
    }
    match req.send().await {
        Ok(resp) => Ok(resp.status().as_u16()),
        Err(e) => Err(dispatch_core::error_chain(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: Option<&str>, url: &str) -> PushConfig {
        PushConfig {
            id: id.map(str::to_string),
            url: url.into(),
            token: None,
            authentication: None,
        }
    }

    #[test]
    fn configs_are_kept_by_id_and_bad_urls_refused() {
        let p = Pushes::default();
        let (kept, first) = p
            .put("t1", config(None, "http://127.0.0.1:9/n"))
            .expect("ok");
        assert_eq!((kept.id.as_deref(), first), (Some("t1"), true));
        let (_, first) = p
            .put("t1", config(Some("t1"), "http://127.0.0.1:9/m"))
            .expect("ok");
        assert!(!first);
        assert_eq!(p.of("t1").len(), 1, "the same id is replaced");
        p.put("t1", config(Some("b"), "https://x.example/n"))
            .expect("ok");
        assert_eq!(p.of("t1").len(), 2);
        assert!(p.delete("t1", "b") && !p.delete("t1", "b"));
        for bad in ["ftp://x/n", "not a url", "/relative"] {
            assert!(p.put("t2", config(None, bad)).is_err(), "{bad}");
        }
    }
}
