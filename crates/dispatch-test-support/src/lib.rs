//! Dispatch's test harness: what the crates' integration tests (and the
//! benchmarks, which drive the same real processes) share.
//!
//! - [`eventually`] / [`eventually_async`]: wait on a condition with a
//!   deadline, never a fixed sleep.
//! - [`testdb`]: a fresh PostgreSQL database per test, dropped after it.
//! - [`proxy`]: a fault-injecting TCP proxy (partition, outage, heal).
//! - [`http`]: plain blocking HTTP requests, on the workspace's client.
//!
//! A dev-dependency of the production crates (they ship none of this); a
//! normal dependency of `dispatch-bench` only, whose benchmarks create
//! throwaway databases and cut connections the same way.
//!
//! The mock model and MCP servers stay in `dispatch_agent::mock`: the
//! documented `dispatch-bench mock-llm` command and the
//! `dispatch-mcp-fixture` binary serve them to users.

pub mod http;
pub mod proxy;
pub mod testdb;
mod wait;

pub use wait::{eventually, eventually_async};
