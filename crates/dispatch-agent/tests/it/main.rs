//! The crate's integration tests, one binary (each module was a test
//! binary of its own): one link instead of one per file.

mod direct_h2;
mod mcp;
mod mock_anthropic;
mod mock_common;
mod mock_faults;
mod mock_openai;
mod mock_script;
mod providers_mock;
mod providers_native;
mod providers_search;
mod providers_wire;
