//! `dispatch-bench mock-llm [--port N] [--script FILE] [--reply TEXT]
//! [--delay-ms N] [--tool-rounds N]`: the scripted mock model server
//! (`dispatch_agent::mock`) as a process, for newcomers without a key and for
//! benchmarks. Prints its base URL (`http://127.0.0.1:PORT/v1`) as the one
//! line on stdout and serves until SIGTERM or Ctrl-C.

use std::io::Write;
use std::net::SocketAddr;

use dispatch_agent::mock::{MockServer, Script, Step};

pub fn main(args: &[String]) -> i32 {
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let number = |flag: &str| -> Result<Option<u64>, String> {
        value(flag)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("{flag} expects a number, got `{v}`"))
            })
            .transpose()
    };
    let run = || -> Result<(Script, u16), String> {
        let mut script = match value("--script") {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {path}: {e}"))?;
                serde_json::from_str(&text)
                    .map_err(|e| format!("{path} is not a mock script: {e}"))?
            }
            None => Script::default(),
        };
        if let Step::Rounds {
            tool_rounds,
            text,
            delay_ms,
            ..
        } = &mut script.fallback
        {
            if let Some(reply) = value("--reply") {
                *text = reply;
            }
            if let Some(d) = number("--delay-ms")? {
                *delay_ms = d;
            }
            if let Some(n) = number("--tool-rounds")? {
                *tool_rounds = n as usize;
            }
        }
        let port = number("--port")?.unwrap_or(0);
        let port = u16::try_from(port).map_err(|_| format!("--port {port} is not a port"))?;
        Ok((script, port))
    };
    let (script, port) = match run() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async {
        let server = match MockServer::start_on(SocketAddr::from(([127, 0, 0, 1], port)), script).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot listen on 127.0.0.1:{port}: {e}");
                return 1;
            }
        };
        println!("{}", server.base_url());
        let _ = std::io::stdout().flush();
        eprintln!(
            "mock model server on {} (OpenAI: POST /v1/chat/completions, Anthropic: POST /v1/messages); Ctrl-C stops it",
            server.base_url()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            Some(()) = async { match term.as_mut() { Some(t) => t.recv().await, None => std::future::pending().await } } => {}
        }
        eprintln!("mock model server: {} requests served", server.requests().len());
        0
    })
}
