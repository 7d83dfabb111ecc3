//! Dispatch's test harness: what the crates' integration tests (and the
//! benchmarks, which drive the same real processes) share.
//!
//! - [`eventually`] / [`eventually_async`]: wait on a condition with a
//!   deadline, never a fixed sleep.
//! - [`testdb`]: a fresh PostgreSQL database per test, dropped after it.
//! - [`proxy`]: a fault-injecting TCP proxy (partition, outage, heal).
//! - [`http`]: plain blocking HTTP requests, on the workspace's client.
//! - [`receiver`]: notification receivers (HTTP and SMTP) that record
//!   every message.
//! - [`tls_proxy`]: `https://` on loopback in front of a plain server, with
//!   a CA made for the test.
//! - [`mock`]: the scripted mock model server (every provider's wire
//!   format on loopback) and [`mock::mcp`], the fixture MCP server; the
//!   `dispatch-mcp-fixture` binary of this crate and `dispatch-bench
//!   mock-llm` serve them as programs.
//!
//! A dev-dependency of the production crates (they ship none of this); a
//! normal dependency of `dispatch-bench` only, whose benchmarks create
//! throwaway databases, cut connections and script models the same way.

pub mod http;
pub mod mock;
pub mod proxy;
pub mod receiver;
pub mod testdb;
pub mod tls_proxy;
mod wait;

pub use wait::{eventually, eventually_async};
