//! A cluster service's overlap policy, kept as local `dispatch serve` keeps
//! it (see `dispatch_runtime::service::exec`): while `max_concurrent` wakes
//! (1 under `queue` and `skip`) are queued or running, a new wake is dropped
//! under `skip`; otherwise it waits, unless its timer's previous wake is
//! still waiting or `max_pending` wakes already wait. Each service's
//! heartbeats carry a concurrency key of their own with that maximum, so
//! the workers never run more of them at once whatever the queue holds.

use std::collections::HashSet;

use dispatch_core::concurrency::{RunConcurrency, Strategy};
use dispatch_runtime::service::{Overlap, ServiceConfig, ServiceDoc};
use dispatch_store::Run;
use serde_json::Value;

use super::WakeSpec;

/// The wakes admitted, in order, and those refused with why.
pub struct Admission {
    pub admitted: Vec<WakeSpec>,
    pub refused: Vec<(WakeSpec, String)>,
}

/// How many wakes may run at once.
fn slots(config: &ServiceConfig) -> u32 {
    match config.overlap {
        Overlap::Concurrent => config.max_concurrent.max(1),
        Overlap::Queue | Overlap::Skip => 1,
    }
}

/// The concurrency key of `service`'s heartbeats.
pub fn key(service: &Run, config: &ServiceConfig) -> RunConcurrency {
    RunConcurrency {
        key: format!("{}/service:{}", service.parcel_name, service.id),
        max: slots(config),
        strategy: Strategy::Queue,
    }
}

fn schedule_of(wake: &Value) -> Option<&str> {
    wake.get("schedule").and_then(Value::as_str)
}

/// Decides about `specs` given the service's wakes still live: `running`
/// of them started, `queued` waiting (their payloads say which timer fired
/// them). Pure.
pub fn admit(
    config: &ServiceConfig,
    running: usize,
    queued: &[Run],
    specs: Vec<WakeSpec>,
) -> Admission {
    let slots = slots(config) as usize;
    let mut live = running + queued.len();
    let mut waiting = live.saturating_sub(slots);
    let mut timers: HashSet<String> = queued
        .iter()
        .filter_map(|r| schedule_of(&r.payload["wake"]).map(str::to_string))
        .collect();
    let mut out = Admission {
        admitted: Vec::new(),
        refused: Vec::new(),
    };
    for spec in specs {
        let timer = schedule_of(&spec.detail).map(str::to_string);
        if live >= slots {
            let why = match config.overlap {
                Overlap::Skip => Some("a wake is already running (overlap: skip)".to_string()),
                _ if timer.as_ref().is_some_and(|t| timers.contains(t)) => {
                    Some("this timer's previous wake is still waiting".to_string())
                }
                _ if waiting as u64 >= u64::from(config.max_pending) => Some(format!(
                    "{waiting} wakes are already waiting (hint: raise --max-pending)"
                )),
                _ => None,
            };
            if let Some(why) = why {
                out.refused.push((spec, why));
                continue;
            }
            waiting += 1;
        }
        live += 1;
        timers.extend(timer);
        out.admitted.push(spec);
    }
    out
}

/// Counts the refused wakes in the service's document: a timer's `skipped`,
/// a webhook request's `requests_rejected`.
pub fn count_refused(doc: &mut ServiceDoc, refused: &[(WakeSpec, String)], now: dispatch_core::Ts) {
    for (spec, _) in refused {
        if spec.reason == "http" {
            reject_request(doc, now);
        } else if let Some(label) = schedule_of(&spec.detail)
            && let Some(s) = doc.schedules.iter_mut().find(|s| s.label() == label)
        {
            s.skipped += 1;
        }
    }
}

/// Counts one webhook request answered with anything but 202.
pub fn reject_request(doc: &mut ServiceDoc, now: dispatch_core::Ts) {
    if let Some(l) = doc.listeners.first_mut() {
        l.requests_rejected += 1;
        l.last_request_at = Some(now);
    }
}

/// Counts the webhook requests among `admitted` as handled.
pub fn count_handled(doc: &mut ServiceDoc, admitted: &[WakeSpec], now: dispatch_core::Ts) {
    let handled = admitted.iter().filter(|s| s.reason == "http").count() as u64;
    if handled > 0
        && let Some(l) = doc.listeners.first_mut()
    {
        l.requests_handled += handled;
        l.last_request_at = Some(now);
    }
}
