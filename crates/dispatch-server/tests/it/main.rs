//! The crate's integration tests, one binary (each module was a test
//! binary of its own): one link instead of one per file.

mod api;
mod api_bad_input;
mod api_fuzz;
mod bus;
mod callbacks;
mod common;
mod enqueue_outage;
mod fenced;
mod openapi_contract;
mod outage;
mod queue_timeouts;
mod rates_redis;
mod reliability;
mod ship;
mod slow_clients;
mod wakeups;
mod web_guard;
mod workers;
