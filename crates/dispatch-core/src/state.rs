//! Run states and the pure transition function.
//!
//! A state carries its own data (who owns the run, when it started, how it
//! ended). [`RunState::apply`] is pure: given the current state and a
//! [`Transition`], it returns the next state and the event to record, or
//! refuses an illegal move. The store saves the result with a compare-and-set.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::time::Ts;

/// What a run executes; on the wire (with the `utoipa` feature), the
/// `Operation` schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(
    feature = "utoipa",
    derive(utoipa::ToSchema),
    schema(description = "What a run executes.")
)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Job,
    Heartbeat,
    Service,
    /// One turn of a conversation (`dispatch chat`).
    Chat,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Job => "job",
            Operation::Heartbeat => "heartbeat",
            Operation::Service => "service",
            Operation::Chat => "chat",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "job" => Ok(Operation::Job),
            "heartbeat" => Ok(Operation::Heartbeat),
            "service" => Ok(Operation::Service),
            "chat" => Ok(Operation::Chat),
            other => Err(format!(
                "unknown operation `{other}` (expected job, heartbeat, service or chat)"
            )),
        }
    }
}

/// A process the runtime owns: its pid and its start time as the kernel
/// reports it (so a recycled pid is never mistaken for ours).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRef {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22); 0 if unknown.
    #[serde(default)]
    pub start_ticks: u64,
}

/// The status name alone, for filtering and display; on the wire (with the
/// `utoipa` feature), the `RunStatus` schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(
    feature = "utoipa",
    derive(utoipa::ToSchema),
    schema(as = RunStatus, description = "A run's status.")
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Made by `dispatch create`; waits for `dispatch start`, never claimed.
    Created,
    /// The policy sent it to a person: waits for `dispatch approve` (then
    /// queued) or `dispatch deny` (then cancelled), never claimed.
    Review,
    Queued,
    Starting,
    Running,
    Paused,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Stopped,
}

impl Status {
    pub const ALL: [Status; 11] = [
        Status::Created,
        Status::Review,
        Status::Queued,
        Status::Starting,
        Status::Running,
        Status::Paused,
        Status::Succeeded,
        Status::Failed,
        Status::TimedOut,
        Status::Cancelled,
        Status::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Review => "review",
            Status::Queued => "queued",
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::Cancelled => "cancelled",
            Status::Stopped => "stopped",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Succeeded
                | Status::Failed
                | Status::TimedOut
                | Status::Cancelled
                | Status::Stopped
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown status `{s}` (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// The state of a run, with the data that belongs to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RunState {
    /// Created (`dispatch create`), not in the queue until it is started.
    Created {},
    /// Created waiting for a person (the policy's `review` rule said why):
    /// no process, no worker and no queue slot until it is approved
    /// (queued for its first attempt) or denied (cancelled).
    Review { reason: String, since: Ts },
    /// Waiting to be claimed; not before `not_before` when waiting out a backoff.
    Queued {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        not_before: Option<Ts>,
    },
    /// Claimed by a helper that is preparing the agent.
    Starting { helper: ProcRef, since: Ts },
    /// The agent is up. `agent.pid` is also its process group id.
    Running {
        helper: ProcRef,
        agent: ProcRef,
        started_at: Ts,
    },
    /// Suspended in a durable wait (a signal, an approval, a timer): the
    /// attempt ended, no process and no worker slot is held; shown as `paused`.
    /// Woken, the run goes back to the queue for its next attempt.
    Suspended {
        started_at: Option<Ts>,
        since: Ts,
        wait: Wait,
        reason: String,
    },
    /// Waiting for a decision (an approval); the agent process is still owned.
    Paused {
        helper: ProcRef,
        agent: ProcRef,
        started_at: Ts,
        reason: String,
    },
    Succeeded {
        started_at: Option<Ts>,
        ended_at: Ts,
        exit_code: i32,
    },
    Failed {
        started_at: Option<Ts>,
        ended_at: Ts,
        exit_code: Option<i32>,
        reason: String,
    },
    TimedOut {
        started_at: Option<Ts>,
        ended_at: Ts,
        exit_code: Option<i32>,
        reason: String,
    },
    Cancelled {
        started_at: Option<Ts>,
        ended_at: Ts,
        exit_code: Option<i32>,
        reason: String,
    },
    Stopped {
        started_at: Option<Ts>,
        ended_at: Ts,
        exit_code: Option<i32>,
        reason: String,
    },
}

/// Something that happens to a run.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    /// A created run goes into the queue (`dispatch start`).
    Start { at: Ts },
    /// A person approved a run in review: it goes into the queue. (A
    /// denial is a [`Transition::Cancel`].)
    Approve { at: Ts },
    /// A helper takes a queued run.
    Claim { helper: ProcRef, at: Ts },
    /// The agent process is running.
    AgentStarted { agent: ProcRef, at: Ts },
    /// The run waits for a decision.
    Pause { reason: String, at: Ts },
    /// The decision came; the run continues.
    Resume { at: Ts },
    /// The attempt ended in a durable wait.
    Suspend { wait: Wait, at: Ts },
    /// What a suspended run waited for happened: back to the queue.
    Wake { at: Ts },
    /// The agent exited with `code` (128 + n when killed by signal n).
    Exited { code: i32, at: Ts },
    /// The run failed without (or regardless of) an exit status.
    Fail {
        reason: String,
        exit_code: Option<i32>,
        at: Ts,
    },
    /// A deadline passed.
    TimeOut {
        reason: String,
        exit_code: Option<i32>,
        at: Ts,
    },
    /// Someone stopped or cancelled the run. A service ends `stopped`, anything else `cancelled`.
    Cancel {
        reason: String,
        exit_code: Option<i32>,
        at: Ts,
    },
    /// The process that owned the run is gone and left no result.
    /// A service ends `stopped`, anything else `failed`.
    Lost { reason: String, at: Ts },
    /// A failed attempt goes back to the queue for another try.
    Requeue { not_before: Option<Ts>, at: Ts },
}

impl Transition {
    /// The reason this transition carries, if any (to mask what must not be stored).
    pub fn reason_mut(&mut self) -> Option<&mut String> {
        match self {
            Transition::Pause { reason, .. }
            | Transition::Fail { reason, .. }
            | Transition::TimeOut { reason, .. }
            | Transition::Cancel { reason, .. }
            | Transition::Lost { reason, .. } => Some(reason),
            _ => None,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Transition::Start { .. } => "start",
            Transition::Approve { .. } => "approve",
            Transition::Claim { .. } => "claim",
            Transition::AgentStarted { .. } => "agent_started",
            Transition::Pause { .. } => "pause",
            Transition::Resume { .. } => "resume",
            Transition::Suspend { .. } => "suspend",
            Transition::Wake { .. } => "wake",
            Transition::Exited { .. } => "exited",
            Transition::Fail { .. } => "fail",
            Transition::TimeOut { .. } => "time_out",
            Transition::Cancel { .. } => "cancel",
            Transition::Lost { .. } => "lost",
            Transition::Requeue { .. } => "requeue",
        }
    }
}

/// A move the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {from} run cannot {transition}")]
pub struct TransitionError {
    pub from: Status,
    pub transition: &'static str,
}

impl RunState {
    pub fn queued() -> Self {
        RunState::Queued { not_before: None }
    }

    pub fn status(&self) -> Status {
        match self {
            RunState::Created {} => Status::Created,
            RunState::Review { .. } => Status::Review,
            RunState::Queued { .. } => Status::Queued,
            RunState::Starting { .. } => Status::Starting,
            RunState::Running { .. } => Status::Running,
            RunState::Paused { .. } | RunState::Suspended { .. } => Status::Paused,
            RunState::Succeeded { .. } => Status::Succeeded,
            RunState::Failed { .. } => Status::Failed,
            RunState::TimedOut { .. } => Status::TimedOut,
            RunState::Cancelled { .. } => Status::Cancelled,
            RunState::Stopped { .. } => Status::Stopped,
        }
    }

    pub fn is_terminal(&self) -> bool {
        self.status().is_terminal()
    }

    /// The helper process that owns the run, while one does.
    pub fn helper(&self) -> Option<ProcRef> {
        match self {
            RunState::Starting { helper, .. }
            | RunState::Running { helper, .. }
            | RunState::Paused { helper, .. } => Some(*helper),
            _ => None,
        }
    }

    /// The agent process (and process group leader), while it runs.
    pub fn agent(&self) -> Option<ProcRef> {
        match self {
            RunState::Running { agent, .. } | RunState::Paused { agent, .. } => Some(*agent),
            _ => None,
        }
    }

    pub fn started_at(&self) -> Option<Ts> {
        match self {
            RunState::Created {}
            | RunState::Review { .. }
            | RunState::Queued { .. }
            | RunState::Starting { .. } => None,
            RunState::Running { started_at, .. } | RunState::Paused { started_at, .. } => {
                Some(*started_at)
            }
            RunState::Succeeded { started_at, .. }
            | RunState::Failed { started_at, .. }
            | RunState::TimedOut { started_at, .. }
            | RunState::Cancelled { started_at, .. }
            | RunState::Stopped { started_at, .. }
            | RunState::Suspended { started_at, .. } => *started_at,
        }
    }

    pub fn ended_at(&self) -> Option<Ts> {
        match self {
            RunState::Succeeded { ended_at, .. }
            | RunState::Failed { ended_at, .. }
            | RunState::TimedOut { ended_at, .. }
            | RunState::Cancelled { ended_at, .. }
            | RunState::Stopped { ended_at, .. } => Some(*ended_at),
            _ => None,
        }
    }

    pub fn exit_code(&self) -> Option<i32> {
        match self {
            RunState::Succeeded { exit_code, .. } => Some(*exit_code),
            RunState::Failed { exit_code, .. }
            | RunState::TimedOut { exit_code, .. }
            | RunState::Cancelled { exit_code, .. }
            | RunState::Stopped { exit_code, .. } => *exit_code,
            _ => None,
        }
    }

    /// Why the run ended (or paused, or waits in review), when it says.
    pub fn reason(&self) -> Option<&str> {
        match self {
            RunState::Review { reason, .. }
            | RunState::Paused { reason, .. }
            | RunState::Suspended { reason, .. }
            | RunState::Failed { reason, .. }
            | RunState::TimedOut { reason, .. }
            | RunState::Cancelled { reason, .. }
            | RunState::Stopped { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// The next state after `t`, for a run of `operation`. Pure.
    pub fn apply(&self, operation: Operation, t: &Transition) -> Result<RunState, TransitionError> {
        let refuse = || TransitionError {
            from: self.status(),
            transition: t.name(),
        };
        if self.is_terminal() {
            return Err(refuse());
        }
        let started_at = self.started_at();
        let next = match (self, t) {
            (RunState::Created {}, Transition::Start { .. }) => {
                RunState::Queued { not_before: None }
            }
            // Dated like a wake, so that a reader finds an approved local
            // run whose helper never came (see `revive_overdue`).
            (RunState::Review { .. }, Transition::Approve { at }) => RunState::Queued {
                not_before: Some(*at),
            },
            (RunState::Queued { .. }, Transition::Claim { helper, at }) => RunState::Starting {
                helper: *helper,
                since: *at,
            },
            (RunState::Starting { helper, .. }, Transition::AgentStarted { agent, at }) => {
                RunState::Running {
                    helper: *helper,
                    agent: *agent,
                    started_at: *at,
                }
            }
            (
                RunState::Running {
                    helper,
                    agent,
                    started_at,
                },
                Transition::Pause { reason, .. },
            ) => RunState::Paused {
                helper: *helper,
                agent: *agent,
                started_at: *started_at,
                reason: reason.clone(),
            },
            (
                RunState::Paused {
                    helper,
                    agent,
                    started_at,
                    ..
                },
                Transition::Resume { .. },
            ) => RunState::Running {
                helper: *helper,
                agent: *agent,
                started_at: *started_at,
            },
            (
                RunState::Running { .. } | RunState::Paused { .. },
                Transition::Suspend { wait, at },
            ) => RunState::Suspended {
                started_at,
                since: *at,
                reason: wait.describe(),
                wait: wait.clone(),
            },
            // Dated, so the wake is told from any other time in the queue.
            (RunState::Suspended { .. }, Transition::Wake { at }) => RunState::Queued {
                not_before: Some(*at),
            },
            // A created run never claimed ends with a verdict too: the run
            // of an eval on a cluster, held by its client, not by a worker.
            (
                RunState::Created {} | RunState::Running { .. } | RunState::Paused { .. },
                Transition::Exited { code, at },
            ) => {
                if *code == 0 {
                    RunState::Succeeded {
                        started_at,
                        ended_at: *at,
                        exit_code: 0,
                    }
                } else {
                    RunState::Failed {
                        started_at,
                        ended_at: *at,
                        exit_code: Some(*code),
                        reason: exit_reason(*code),
                    }
                }
            }
            (
                RunState::Starting { .. } | RunState::Running { .. } | RunState::Paused { .. },
                Transition::Fail {
                    reason,
                    exit_code,
                    at,
                },
            )
            | (
                RunState::Created {} | RunState::Queued { .. },
                Transition::Fail {
                    reason,
                    exit_code,
                    at,
                },
            ) => RunState::Failed {
                started_at,
                ended_at: *at,
                exit_code: *exit_code,
                reason: reason.clone(),
            },
            // A queued run times out when nobody claimed it in time (a queue timeout).
            (
                RunState::Queued { .. }
                | RunState::Starting { .. }
                | RunState::Running { .. }
                | RunState::Paused { .. },
                Transition::TimeOut {
                    reason,
                    exit_code,
                    at,
                },
            ) => RunState::TimedOut {
                started_at,
                ended_at: *at,
                exit_code: *exit_code,
                reason: reason.clone(),
            },
            (
                _,
                Transition::Cancel {
                    reason,
                    exit_code,
                    at,
                },
            ) => {
                if operation == Operation::Service {
                    RunState::Stopped {
                        started_at,
                        ended_at: *at,
                        exit_code: *exit_code,
                        reason: reason.clone(),
                    }
                } else {
                    RunState::Cancelled {
                        started_at,
                        ended_at: *at,
                        exit_code: *exit_code,
                        reason: reason.clone(),
                    }
                }
            }
            (
                RunState::Starting { .. } | RunState::Running { .. } | RunState::Paused { .. },
                Transition::Lost { reason, at },
            ) => {
                if operation == Operation::Service {
                    RunState::Stopped {
                        started_at,
                        ended_at: *at,
                        exit_code: None,
                        reason: reason.clone(),
                    }
                } else {
                    RunState::Failed {
                        started_at,
                        ended_at: *at,
                        exit_code: None,
                        reason: reason.clone(),
                    }
                }
            }
            (
                RunState::Starting { .. } | RunState::Running { .. } | RunState::Paused { .. },
                Transition::Requeue { not_before, .. },
            ) => RunState::Queued {
                not_before: *not_before,
            },
            _ => return Err(refuse()),
        };
        Ok(next)
    }
}

/// What a suspended run waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitFor {
    /// `POST /v1/runs/{id}/signal` / `dispatch signal RUN NAME`.
    Signal,
    /// A decision on the approval named `name`.
    Approval,
    /// Time alone.
    Timer,
    /// The hard budget of project `name`'s quota to be raised, or its
    /// period to end (`ON BUDGET pause`).
    Quota,
}

/// A durable wait: what a suspended run waits for, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wait {
    #[serde(rename = "for")]
    pub wait_for: WaitFor,
    /// The signal's or the approval's name; empty for a timer.
    #[serde(default)]
    pub name: String,
    /// When the wait ends without what it waits for (a timer: when it rings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Ts>,
}

impl Wait {
    /// How `ps` says it.
    pub fn describe(&self) -> String {
        match self.wait_for {
            WaitFor::Signal => format!("waiting for signal `{}`", self.name),
            WaitFor::Approval => format!("waiting for approval `{}`", self.name),
            WaitFor::Timer => "waiting for a timer".to_string(),
            WaitFor::Quota => format!(
                "paused: project `{}` is over its quota (raise it with `dispatch quota set`)",
                self.name
            ),
        }
    }
}

/// The reason recorded for a non-zero exit.
pub fn exit_reason(code: i32) -> String {
    if code > 128 && code < 128 + 65 {
        format!("agent killed by signal {} (exit code {code})", code - 128)
    } else {
        format!("agent exited with code {code}")
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
