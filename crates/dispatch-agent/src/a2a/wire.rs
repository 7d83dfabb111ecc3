//! The A2A protocol's JSON shapes (JSON-RPC binding, protocol 0.3), shared by
//! the `TOOL A2A` client and `dispatch serve --a2a`. Field names are the
//! specification's (camelCase); unknown fields are ignored when read, so a
//! newer peer's additions do not break us.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version our cards announce.
pub const PROTOCOL_VERSION: &str = "0.3.0";
/// Where an agent card is served (current name, then the older one).
pub const CARD_PATHS: [&str; 2] = ["/.well-known/agent-card.json", "/.well-known/agent.json"];

/// JSON-RPC error codes: the standard ones and A2A's own.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    pub const TASK_NOT_FOUND: i64 = -32001;
    pub const TASK_NOT_CANCELABLE: i64 = -32002;
    pub const PUSH_NOT_SUPPORTED: i64 = -32003;
    pub const UNSUPPORTED_OPERATION: i64 = -32004;
}

/// An agent card: who the agent is and where to call it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCard {
    #[serde(default)]
    pub protocol_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The JSON-RPC endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_transport: Option<String>,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub default_input_modes: Vec<String>,
    #[serde(default)]
    pub default_output_modes: Vec<String>,
    #[serde(default)]
    pub skills: Vec<Skill>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_schemes: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    #[serde(default)]
    pub streaming: bool,
    #[serde(default)]
    pub push_notifications: bool,
    #[serde(default)]
    pub state_transition_history: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Skill {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

/// One piece of a message or an artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Part {
    Text { text: String },
    Data { data: Value },
    File { file: Value },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Agent,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default = "message_kind")]
    pub kind: String,
}

fn message_kind() -> String {
    "message".into()
}

impl Message {
    pub fn new(role: Role, parts: Vec<Part>, message_id: String) -> Message {
        Message {
            role,
            parts,
            message_id,
            context_id: None,
            task_id: None,
            metadata: None,
            kind: message_kind(),
        }
    }

    /// The text of its text parts, a data part as JSON.
    pub fn text(&self) -> String {
        parts_text(&self.parts)
    }
}

/// The text of `parts`: text parts joined by newlines, data parts as JSON.
pub fn parts_text(parts: &[Part]) -> String {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Text { text } => Some(text.clone()),
            Part::Data { data } => Some(data.to_string()),
            Part::File { .. } => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where a task stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskState {
    Submitted,
    Working,
    InputRequired,
    Completed,
    Canceled,
    Failed,
    Rejected,
    AuthRequired,
    Unknown,
}

impl TaskState {
    /// Nothing more will happen to the task (input-required and
    /// auth-required end the exchange too: the caller must act).
    pub fn is_final(self) -> bool {
        !matches!(self, TaskState::Submitted | TaskState::Working)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Submitted => "submitted",
            TaskState::Working => "working",
            TaskState::InputRequired => "input-required",
            TaskState::Completed => "completed",
            TaskState::Canceled => "canceled",
            TaskState::Failed => "failed",
            TaskState::Rejected => "rejected",
            TaskState::AuthRequired => "auth-required",
            TaskState::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    pub artifact_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: String,
    #[serde(default)]
    pub context_id: String,
    pub status: TaskStatus,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default = "task_kind")]
    pub kind: String,
}

fn task_kind() -> String {
    "task".into()
}

impl Task {
    pub fn new(id: String, context_id: String, status: TaskStatus) -> Task {
        Task {
            id,
            context_id,
            status,
            artifacts: Vec::new(),
            history: Vec::new(),
            metadata: None,
            kind: task_kind(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusUpdate {
    pub task_id: String,
    #[serde(default)]
    pub context_id: String,
    pub status: TaskStatus,
    #[serde(rename = "final", default)]
    pub is_final: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default = "status_kind")]
    pub kind: String,
}

fn status_kind() -> String {
    "status-update".into()
}

impl StatusUpdate {
    pub fn new(task: &Task, is_final: bool) -> StatusUpdate {
        StatusUpdate {
            task_id: task.id.clone(),
            context_id: task.context_id.clone(),
            status: task.status.clone(),
            is_final,
            metadata: task.metadata.clone(),
            kind: status_kind(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactUpdate {
    pub task_id: String,
    #[serde(default)]
    pub context_id: String,
    pub artifact: Artifact,
    #[serde(default)]
    pub append: bool,
    #[serde(default)]
    pub last_chunk: bool,
    #[serde(default = "artifact_kind")]
    pub kind: String,
}

fn artifact_kind() -> String {
    "artifact-update".into()
}

impl ArtifactUpdate {
    pub fn new(task: &Task, artifact: Artifact) -> ArtifactUpdate {
        ArtifactUpdate {
            task_id: task.id.clone(),
            context_id: task.context_id.clone(),
            artifact,
            append: false,
            last_chunk: true,
            kind: artifact_kind(),
        }
    }
}

/// What `message/send` answers, and what each `message/stream` event holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Task(Task),
    Message(Message),
    Status(StatusUpdate),
    Artifact(ArtifactUpdate),
}

impl Reply {
    /// Reads a `result` by its `kind` (a task without one is still a task).
    pub fn from_value(v: Value) -> Result<Reply, String> {
        let kind = v
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("task")
            .to_string();
        let r = match kind.as_str() {
            "task" => serde_json::from_value(v).map(Reply::Task),
            "message" => serde_json::from_value(v).map(Reply::Message),
            "status-update" => serde_json::from_value(v).map(Reply::Status),
            "artifact-update" => serde_json::from_value(v).map(Reply::Artifact),
            other => return Err(format!("an unknown result kind `{other}`")),
        };
        r.map_err(|e| format!("a malformed {kind}: {e}"))
    }

    pub fn to_value(&self) -> Value {
        let r = match self {
            Reply::Task(t) => serde_json::to_value(t),
            Reply::Message(m) => serde_json::to_value(m),
            Reply::Status(s) => serde_json::to_value(s),
            Reply::Artifact(a) => serde_json::to_value(a),
        };
        r.unwrap_or(Value::Null)
    }
}

/// `message/send` and `message/stream` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendParams {
    pub message: Message,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<SendConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendConfiguration {
    /// Wait for the task to finish before answering (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocking: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_length: Option<u32>,
    /// Where to POST the task when its status changes (push notifications).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_notification_config: Option<PushConfig>,
}

/// The header a push notification carries the config's `token` in.
pub const NOTIFICATION_TOKEN_HEADER: &str = "X-A2A-Notification-Token";

/// Where and how to send a task's push notifications.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushConfig {
    /// Names the config among a task's (the agent gives one when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The client's webhook: each notification is a POST of the task.
    pub url: String,
    /// Sent back in [`NOTIFICATION_TOKEN_HEADER`], so the client knows the
    /// notification is for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<PushAuth>,
}

/// How the agent authenticates to the client's webhook: `Bearer` with
/// `credentials` is sent as `Authorization: Bearer <credentials>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushAuth {
    #[serde(default)]
    pub schemes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
}

/// `tasks/pushNotificationConfig/set` parameters and answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskPushConfig {
    pub task_id: String,
    pub push_notification_config: PushConfig,
}

/// `tasks/pushNotificationConfig/get|list|delete` parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushConfigParams {
    #[serde(alias = "taskId")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_notification_config_id: Option<String>,
}

/// `tasks/get` and `tasks/cancel` parameters (upstream Dispatch sends
/// `taskId`; the specification's field is `id`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskIdParams {
    #[serde(alias = "taskId")]
    pub id: String,
    #[serde(
        default,
        rename = "historyLength",
        skip_serializing_if = "Option::is_none"
    )]
    pub history_length: Option<u32>,
}

/// A JSON-RPC request.
pub fn request(id: &str, method: &str, params: Value) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// A JSON-RPC success answer.
pub fn success(id: &Value, result: Value) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A JSON-RPC error answer.
pub fn failure(id: &Value, code: i64, message: &str) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_task_from_a_python_a2a_server_reads() {
        // The shape a2a-python's JSON-RPC handler answers `message/send` with.
        let v = json!({
            "id": "t-1", "contextId": "c-1", "kind": "task",
            "status": {"state": "completed", "timestamp": "2025-01-01T00:00:00Z"},
            "artifacts": [{"artifactId": "a", "parts": [{"kind": "text", "text": "42"}]}],
            "history": [{"role": "user", "kind": "message", "messageId": "m",
                         "parts": [{"kind": "text", "text": "q"}]}],
            "extra": "ignored"
        });
        let Reply::Task(t) = Reply::from_value(v).expect("a task") else {
            panic!("not a task")
        };
        assert_eq!(t.status.state, TaskState::Completed);
        assert_eq!(parts_text(&t.artifacts[0].parts), "42");
        let s = json!({"kind": "status-update", "taskId": "t", "contextId": "c",
                       "status": {"state": "input-required"}, "final": true});
        assert!(
            matches!(Reply::from_value(s), Ok(Reply::Status(u)) if u.is_final && u.status.state.is_final())
        );
        assert!(Reply::from_value(json!({"kind": "nope"})).is_err());
    }

    #[test]
    fn task_id_params_take_both_spellings() {
        let a: TaskIdParams = serde_json::from_value(json!({"id": "x"})).expect("id");
        let b: TaskIdParams = serde_json::from_value(json!({"taskId": "x"})).expect("taskId");
        assert_eq!(a, b);
    }
}
