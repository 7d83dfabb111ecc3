//! What started a run: its `trigger`, recorded when the run is created and
//! never changed (`dispatch ps --filter trigger=upstream`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What started a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Someone dispatched it: `dispatch run|create|serve|chat`, `POST /v1/runs`.
    #[default]
    Manual,
    /// `dispatch restart` (or a service started again): a new run of a
    /// finished one, linked by `origin_id`.
    Restart,
    /// `dispatch replay`, `dispatch dlq replay`, `POST /v1/runs/{id}/replay`:
    /// the exact brief of an earlier run again, linked by `origin_id`.
    Replay,
    /// Another run handed off to it (a `handoff` event or the native
    /// `handoff` tool); `origin_id` is the run that handed off.
    Upstream,
    /// A case of `dispatch eval`.
    Eval,
    /// A workflow's coordinator started it for an agent turn (`parent_id`
    /// is the workflow's run).
    Workflow,
}

impl Trigger {
    pub const ALL: [Trigger; 6] = [
        Trigger::Manual,
        Trigger::Restart,
        Trigger::Replay,
        Trigger::Upstream,
        Trigger::Eval,
        Trigger::Workflow,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Restart => "restart",
            Trigger::Replay => "replay",
            Trigger::Upstream => "upstream",
            Trigger::Eval => "eval",
            Trigger::Workflow => "workflow",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Trigger {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Trigger::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = Trigger::ALL.iter().map(Trigger::as_str).collect();
                format!("unknown trigger `{s}` (expected {})", all.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_round_trip_through_their_names() {
        for t in Trigger::ALL {
            assert_eq!(t.as_str().parse::<Trigger>(), Ok(t));
            assert_eq!(serde_json::to_value(t).expect("json"), t.as_str());
        }
        assert!("cron".parse::<Trigger>().is_err());
    }
}
