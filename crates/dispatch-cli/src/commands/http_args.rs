//! What `dispatch server` and `dispatch ui` take from web pages and
//! clients: the names they answer to, timeouts, a connection cap and token
//! rates (see `dispatch_server::guard` and `dispatch_server::limits`).

use std::time::Duration;

use clap::Args;
use dispatch_server::guard::AllowedHosts;
use dispatch_server::limits::HttpLimits;

use crate::error::{CliError, CliResult};

#[derive(Debug, Args)]
pub struct HttpArgs {
    /// A name clients reach this server by, besides its IP addresses and
    /// localhost (repeatable or comma-separated): `dispatch.example.com`,
    /// `.example.com` for the domain and its subdomains, or `*` for any.
    /// Requests for other names are refused (421), so a web page cannot
    /// reach the server through DNS rebinding.
    #[arg(
        long = "allowed-host",
        env = "DISPATCH_ALLOWED_HOSTS",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Open connections at most; more are answered 503 at once
    /// (default: half the file limit, at most 4096).
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// How long a client may take to send a request's head; idle
    /// keep-alive connections close after it too.
    #[arg(long, value_name = "AGE", default_value = "10s")]
    pub header_timeout: String,
    /// Requests a second one token may send, in bursts of ten seconds'
    /// worth; more get 429 with Retry-After (0: no limit).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub token_rate: u32,
}

impl HttpArgs {
    /// The names, checked before anything starts (one line on error).
    pub fn allowed_hosts(&self) -> CliResult<AllowedHosts> {
        AllowedHosts::new(&self.allowed_hosts).map_err(CliError::input)
    }

    /// The limits, checked before anything starts.
    pub fn limits(&self) -> CliResult<HttpLimits> {
        let header = dispatch_core::time::parse_age(&self.header_timeout)
            .ok()
            .filter(|ms| *ms > 0)
            .ok_or_else(|| {
                CliError::input(format!(
                    "--header-timeout `{}` is not a positive duration (hint: 10s or 1m)",
                    self.header_timeout
                ))
            })?;
        if self.max_connections == Some(0) {
            return Err(CliError::input(
                "--max-connections 0 would refuse every client (hint: leave it out for the default)",
            ));
        }
        Ok(HttpLimits {
            max_connections: self.max_connections,
            header_timeout: Duration::from_millis(header as u64),
            token_rate: self.token_rate,
            ..HttpLimits::default()
        })
    }
}
