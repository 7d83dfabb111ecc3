//! The native agent courier (`FROM agent`): the model loop runs inside
//! Dispatch. This crate holds the providers (one file each, behind the narrow
//! [`provider::Provider`] trait), prompt assembly, model resolution, the
//! loop itself. (The scripted mock model server the tests and benchmarks
//! talk to is `dispatch_test_support::mock`: this crate ships no mocks.)

pub mod a2a;
pub mod agent_loop;
pub mod anthropic;
pub mod billing;
pub mod cassette;
pub mod cassette_tools;
pub mod cli;
pub mod conversation;
pub mod gemini;
pub mod guest_step;
pub mod hosted;
pub mod mcp;
pub mod openai;
pub mod openai_responses;
pub mod prompt;
pub mod provider;
pub mod resolve;
pub mod round;
mod sse;
pub mod tools;
pub mod truncation;
pub mod wire;

pub use agent_loop::{Admission, LoopConfig, LoopEnd, NoTools, Sink, ToolOutcome, Tools, run_loop};
pub use conversation::{Conversation, SessionData};
pub use provider::{
    Delta, Effort, Exchange, FinishReason, Flow, Message, ModelRequest, ModelResponse, Provider,
    ProviderError, ProviderKind, Reasoning, RecordRequest, Role, Thinking, TokenUsage, ToolCall,
    ToolSpec,
};
pub use resolve::{Override, ResolvedModel, resolve};
pub use round::{DoneCall, PendingApproval};
pub use sse::send as send_model_request;
