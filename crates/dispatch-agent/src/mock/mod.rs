//! A scripted mock model server for tests, benchmarks and newcomers without
//! a key. It speaks the real wire formats — OpenAI Chat Completions at
//! `POST /v1/chat/completions` and Anthropic Messages at `POST /v1/messages`,
//! streamed (SSE) or not — on a loopback port, answering each request with
//! the next [`Step`] of its [`Script`]: text, tool calls split across chunks,
//! an error status (429 with `Retry-After`, 500, 401), a stalled stream, a
//! cut stream, non-JSON data, or stateless tool rounds for concurrent load.
//!
//! `GET /_mock/requests` lists what it received; `POST /_mock/steps`
//! appends steps (a JSON array), for a mock running as its own process
//! (`dispatch-bench mock-llm`).

mod script;
mod server;
mod wire;

pub use script::{Call, Script, Step, Usage};
pub use server::{MockServer, Received};
