//! One module per command.

pub mod approvals;
pub mod build;
pub mod dlq;
pub mod images;
pub mod inspect;
pub mod internal;
pub mod logs;
pub mod prune;
pub mod ps;
pub mod remote;
pub mod remote_ps;
pub mod remote_reliability;
pub mod replay;
pub mod restart;
pub mod rm;
pub mod run;
pub mod serve;
pub mod server;
pub mod start;
pub mod stop;
pub mod telemetry;
pub mod token;
pub mod wait;
pub mod wake;
