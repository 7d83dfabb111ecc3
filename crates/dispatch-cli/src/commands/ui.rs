//! `dispatch ui`: the web dashboard over the local `.dispatch/` database.

use std::net::{IpAddr, SocketAddr};

use clap::Args;
use dispatch_server::serve::{Backend, Server, shutdown_signal};

use crate::ctx::Ctx;
use crate::error::{CliError, CliResult, chain};

#[derive(Debug, Args)]
pub struct UiArgs {
    /// The port to serve the dashboard on (0 picks a free one).
    #[arg(long, value_name = "PORT", default_value_t = 8078)]
    pub port: u16,
    /// The address to listen on; any other than loopback requires a token
    /// (`dispatch token create`) to log in.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Worker slots for runs queued from the dashboard (replay, restart);
    /// 0: they wait for a `dispatch server` or `dispatch worker`.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub workers: usize,
    /// Require a token even on a loopback address.
    #[arg(long)]
    pub require_auth: bool,
    #[command(flatten)]
    pub http: super::http_args::HttpArgs,
}

fn fail(e: impl std::error::Error) -> CliError {
    CliError::input(chain(&e))
}

/// Serves the dashboard (and the `/v1` API it stands on) until SIGTERM or
/// SIGINT; prints its URL on stdout.
pub async fn ui(ctx: &Ctx, args: &UiArgs) -> CliResult {
    // The in-process server's and workers' logs, as `dispatch server` writes them.
    super::server_log::LogArgs {
        log_format: super::server_log::LogFormat::Text,
    }
    .init()?;
    let allowed_hosts = args.http.allowed_hosts()?;
    let named = !allowed_hosts.is_empty();
    let limits = args.http.limits()?;
    let backend = Backend::open(&ctx.layout, None, 4).await.map_err(fail)?;
    let shutdown = shutdown_signal().map_err(fail)?;
    let mut config = dispatch_server::worker::WorkerConfig::new(ctx.layout.clone());
    config.slots = args.workers;
    let listen = SocketAddr::new(args.bind, args.port);
    let server = Server::bind(listen, backend, ctx.layout.clone(), config)
        .await
        .map_err(|e| {
            CliError::input(format!(
                "{} (hint: another program uses port {}; pick one with --port)",
                chain(&e),
                args.port
            ))
        })?
        .with_required_auth(args.require_auth)
        .with_allowed_hosts(allowed_hosts)
        .with_limits(limits)
        .with_local_runs(true);
    let url = format!("http://{}/ui/", server.addr());
    let auth = if server.requires_auth() {
        "; log in with a token from `dispatch token create`"
    } else {
        ""
    };
    eprintln!(
        "dispatch ui serving {} at {url}{auth} (Ctrl-C stops it)",
        ctx.layout.db().display()
    );
    if !server.addr().ip().is_loopback() && !named {
        eprintln!(
            "open it by this machine's IP address; to use its name, pass --allowed-host NAME"
        );
    }
    println!("{url}");
    server.run(shutdown).await.map_err(fail)?;
    Ok(0)
}
