//! Agentfile parsing. (Being written.)

/// An Agentfile that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct AgentfileError {
    pub line: usize,
    pub message: String,
}
