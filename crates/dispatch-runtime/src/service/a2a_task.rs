//! What `serve --a2a` says about itself and its runs, in A2A's shapes: the
//! agent card built from the parcel's manifest, and a heartbeat run as a
//! task (the run id is the task id, and is in its metadata too).

use dispatch_agent::a2a::wire::{
    AgentCard, Artifact, Capabilities, Message, PROTOCOL_VERSION, Part, Role, Skill, Task,
    TaskState, TaskStatus,
};
use dispatch_core::Status;
use dispatch_core::parcel::Manifest;
use dispatch_store::Run;
use serde_json::{Value, json};

/// The card of `manifest` served at `endpoint`; `bearer` when the listener
/// needs its shared secret (which A2A clients send as a bearer token).
pub fn card(manifest: &Manifest, endpoint: &str, bearer: bool) -> AgentCard {
    let description = description(manifest);
    let mut skills: Vec<Skill> = manifest
        .instructions
        .skills
        .iter()
        .map(|s| Skill {
            id: s.name.clone(),
            name: s.name.clone(),
            description: s.description.clone().unwrap_or_default(),
            tags: vec!["skill".into()],
            examples: Vec::new(),
        })
        .collect();
    if skills.is_empty() {
        skills.push(Skill {
            id: manifest.name.clone(),
            name: manifest.name.clone(),
            description: description.clone(),
            tags: vec![manifest.entrypoint.as_str().to_string()],
            examples: Vec::new(),
        });
    }
    let modes = vec!["text/plain".to_string(), "application/json".to_string()];
    AgentCard {
        protocol_version: PROTOCOL_VERSION.into(),
        name: manifest.name.clone(),
        description,
        url: Some(endpoint.to_string()),
        preferred_transport: Some("JSONRPC".into()),
        version: manifest.version.clone().unwrap_or_else(|| "0.0.0".into()),
        capabilities: Capabilities {
            streaming: true,
            push_notifications: true,
            state_transition_history: false,
        },
        default_input_modes: modes.clone(),
        default_output_modes: modes,
        skills,
        security_schemes: bearer.then(|| json!({"bearer": {"type": "http", "scheme": "bearer"}})),
        security: bearer.then(|| json!([{"bearer": []}])),
    }
}

/// The agent's description: its `description` label, else the first line
/// of its IDENTITY, else a plain one.
fn description(manifest: &Manifest) -> String {
    let label = ["description", "org.opencontainers.image.description"]
        .iter()
        .find_map(|k| manifest.labels.get(*k).cloned());
    let identity = manifest.instructions.identity.as_deref().and_then(|i| {
        i.lines()
            .map(|l| l.trim().trim_start_matches('#').trim())
            .find(|l| !l.is_empty())
            .map(str::to_string)
    });
    label
        .or(identity)
        .unwrap_or_else(|| format!("The Dispatch agent {}", manifest.name))
}

/// Where a run stands, as a task state.
pub(super) fn state_of(status: Status) -> TaskState {
    match status {
        // In review: a person decides, not the caller; the task waits.
        Status::Created | Status::Review | Status::Queued | Status::Starting => {
            TaskState::Submitted
        }
        Status::Running | Status::Paused => TaskState::Working,
        Status::Succeeded => TaskState::Completed,
        Status::Failed | Status::TimedOut => TaskState::Failed,
        Status::Cancelled | Status::Stopped => TaskState::Canceled,
    }
}

/// The message's input for the agent: one text part as a string, one data
/// part as its value, several as their text joined.
pub(super) fn input_of(message: &Message) -> Value {
    match message.parts.as_slice() {
        [Part::Text { text }] => Value::String(text.clone()),
        [Part::Data { data }] => data.clone(),
        parts => Value::String(dispatch_agent::a2a::wire::parts_text(parts)),
    }
}

/// The task of heartbeat run `run`.
pub(super) fn task_of(run: &Run, context: &str) -> Task {
    let state = state_of(run.status());
    let message = run.state.reason().map(|r| {
        Message::new(
            Role::Agent,
            vec![Part::Text {
                text: r.to_string(),
            }],
            format!("{}-status", run.id),
        )
    });
    let status = TaskStatus {
        state,
        message,
        timestamp: chrono::DateTime::from_timestamp_millis(run.updated_at)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    };
    let mut task = Task::new(run.id.to_string(), context.to_string(), status);
    if let Some(output) = run.output.as_ref().filter(|_| state.is_final()) {
        let part = match output {
            Value::String(s) => Part::Text { text: s.clone() },
            other => Part::Data {
                data: other.clone(),
            },
        };
        task.artifacts.push(Artifact {
            artifact_id: "output".into(),
            name: Some("output".into()),
            parts: vec![part],
        });
    }
    task.metadata = Some(json!({"dispatch": {
        "run_id": run.id,
        "service_run_id": run.parent_id,
        "status": run.status(),
        "exit_code": run.state.exit_code(),
    }}));
    task
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_status_has_a_task_state_and_only_ends_are_final() {
        for s in Status::ALL {
            assert_eq!(state_of(s).is_final(), s.is_terminal(), "{s:?}");
        }
    }

    #[test]
    fn the_card_comes_from_the_agentfile() {
        let m: Manifest = serde_json::from_value(json!({
            "schema": 1, "courier": "process", "name": "planner", "entrypoint": "job",
            "command": ["true"], "files": [], "version": "1.2.0",
            "labels": {"description": "Plans trips."},
            "instructions": {"skills": [{"name": "routes", "content": "x", "description": "Finds routes"}]}
        }))
        .expect("a manifest");
        let c = card(&m, "http://127.0.0.1:9/", true);
        assert_eq!(
            (c.name.as_str(), c.description.as_str()),
            ("planner", "Plans trips.")
        );
        assert_eq!(c.version, "1.2.0");
        assert_eq!(c.skills[0].id, "routes");
        assert_eq!(c.url.as_deref(), Some("http://127.0.0.1:9/"));
        assert!(c.capabilities.streaming && c.security.is_some());
    }
}
