//! A scripted mock model server for tests, benchmarks and newcomers without
//! a key. It speaks the real wire formats — OpenAI Chat Completions at
//! `POST /v1/chat/completions`, the OpenAI Responses API at
//! `POST /v1/responses`, Anthropic Messages at `POST /v1/messages` and
//! Gemini at `POST /v1beta/models/{model}:streamGenerateContent` (or
//! `:generateContent`), streamed (SSE) or whole — on a loopback port, answering each request with
//! the next [`Step`] of its [`Script`]: text, tool calls split across chunks,
//! an error status (429 with `Retry-After`, 500, 401, …), a stalled stream, a
//! cut stream, non-JSON data, a 200 that is an HTML page (a captive portal), or
//! stateless tool rounds for concurrent load.
//! Requests a real server would refuse (no model, no messages; no
//! `max_tokens` for Anthropic) get a 400 in the provider's error shape.
//!
//! `GET /_mock/requests` lists what it received (the [`Received`] list as a
//! JSON array); `POST /_mock/steps` appends a step or an array of steps, for
//! a mock running as its own process (`dispatch-bench mock-llm`).

mod answer;
mod anthropic;
mod gemini;
pub mod mcp;
mod openai;
mod respond;
mod responses;
mod script;
mod server;
mod tls;

pub use script::{Call, DEFAULT_REPLY, Script, Step, Usage};
pub use server::{MockServer, Received};
