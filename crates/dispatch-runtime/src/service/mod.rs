//! Services: long-lived runs woken by timers (cron schedules, a plain
//! interval), HTTP requests, manual `dispatch wake` turns and recovery after a
//! restart. Every wake executes as its own `heartbeat` run linked to the
//! service (`parent_id`), run by its own detached helper, so it has its own
//! log, exit code, usage and events, and a stop signal sent to the service
//! never reaches a wake that is still finishing.
//!
//! - [`launch`]: `dispatch serve` (check the options, create the service run
//!   and its `service_state` row, spawn the helper) and `restart`.
//! - [`helper`]: the service helper's event loop: it sleeps until the next
//!   timer deadline, an HTTP request, a SIGUSR1 (manual wake) or SIGTERM
//!   (graceful stop); nothing polls.
//! - `exec`: admission (the overlap policy) and the heartbeat helpers.
//! - `ingress`: the HTTP listener (hyper); [`check`]: its request checks,
//!   and [`signature`]: webhook signatures and replay refusal, both shared
//!   with the cluster servers' hooks.
//! - `a2a` / `a2a_task`: `serve --a2a`, the listener as an A2A agent (its
//!   card, JSON-RPC `message/send|stream`, `tasks/get|cancel`), each message
//!   a heartbeat run whose id is the task's; `a2a_sessions`: the expiry of
//!   its contexts' sessions (`--session-ttl`); `a2a_push`: push
//!   notifications of its tasks.
//! - [`wake`]: manual wakes, as files under `runs/<id>/wakes/` plus SIGUSR1.
//! - [`stop`]: graceful stop of a service.

pub mod a2a;
mod a2a_local;
mod a2a_push;
pub mod a2a_sessions;
pub mod a2a_task;
pub mod check;
pub mod config;
mod exec;
pub mod helper;
mod ingress;
pub mod launch;
pub mod model;
pub mod schedule;
pub mod signature;
pub mod stop;
pub mod wake;

pub use config::ServeOptions;
pub use model::{
    A2aServe, IngressPolicy, ListenerState, Overlap, ScheduleState, ServiceConfig, ServiceDoc,
    Trigger,
};

/// A service option that cannot work, said in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ServiceError(pub String);

impl ServiceError {
    pub fn new(message: impl Into<String>) -> Self {
        ServiceError(message.into())
    }
}
