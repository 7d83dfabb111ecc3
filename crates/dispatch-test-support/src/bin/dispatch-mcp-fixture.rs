//! The fixture MCP server of `dispatch_test_support::mock::mcp` as a program, for
//! tests that start MCP servers as real processes.
//!
//! `dispatch-mcp-fixture` serves over stdin/stdout until stdin ends;
//! `dispatch-mcp-fixture --http 127.0.0.1:0` binds that address, prints
//! `http://ADDR/mcp` on stdout (one line) and serves streamable HTTP there.
//! Exit code 1 with a message on stderr when it cannot serve, 2 on bad usage.

use std::io::Write;

use dispatch_test_support::mock::mcp::{serve_http, serve_stdio};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.as_slice() {
        [] => serve_stdio().await,
        [flag, addr] if flag == "--http" => http(addr).await,
        _ => {
            eprintln!("usage: dispatch-mcp-fixture [--http ADDR]");
            std::process::exit(2);
        }
    };
    match result {
        // Exit at once: tokio's stdin reader is a blocking thread that would
        // otherwise hold up the runtime's shutdown.
        Ok(()) => std::process::exit(0),
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(1);
        }
    }
}

async fn http(addr: &str) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("mcp fixture: cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("mcp fixture: no local address: {e}"))?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "http://{local}/mcp")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("mcp fixture: cannot print the URL: {e}"))?;
    serve_http(listener).await
}
