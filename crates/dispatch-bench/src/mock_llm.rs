//! `dispatch-bench mock-llm [--port N] [--script FILE] [--reply TEXT]
//! [--delay-ms N] [--tool-rounds N]`: the scripted mock model server
//! (`dispatch_test_support::mock`) as a process, for newcomers without a key and for
//! benchmarks. Prints its base URL (`http://127.0.0.1:PORT/v1`) as the one
//! line on stdout and serves until SIGTERM or Ctrl-C; everything else goes
//! to stderr. Exit codes: 0 stopped by a signal, 1 could not serve, 2 bad
//! arguments.

use std::io::Write;
use std::net::SocketAddr;

use dispatch_test_support::mock::{MockServer, Script, Step};

const USAGE: &str = "usage: dispatch-bench mock-llm [--port N] [--script FILE] [--reply TEXT] [--delay-ms N] [--tool-rounds N]";

/// What the command line asks for.
#[derive(Debug, Default, PartialEq)]
struct Options {
    port: u16,
    script: Option<String>,
    reply: Option<String>,
    delay_ms: Option<u64>,
    tool_rounds: Option<usize>,
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag} expects a number, got `{v}`"))
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--port" => o.port = number(flag, &value()?)?,
            "--script" => o.script = Some(value()?),
            "--reply" => o.reply = Some(value()?),
            "--delay-ms" => o.delay_ms = Some(number(flag, &value()?)?),
            "--tool-rounds" => o.tool_rounds = Some(number(flag, &value()?)?),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(o)
}

/// The script to serve: the file's (or the default), with the flags
/// applied to its fallback `rounds` step.
fn script(o: &Options) -> Result<Script, String> {
    let mut script = match &o.script {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
            serde_json::from_str(&text).map_err(|e| format!("{path} is not a mock script: {e}"))?
        }
        None => Script::default(),
    };
    if o.reply.is_none() && o.delay_ms.is_none() && o.tool_rounds.is_none() {
        return Ok(script);
    }
    let Step::Rounds {
        tool_rounds,
        text,
        delay_ms,
        ..
    } = &mut script.fallback
    else {
        return Err(
            "--reply, --delay-ms and --tool-rounds set the fallback `rounds` step, but the \
             script's fallback is another kind (hint: drop the flags or edit the script)"
                .into(),
        );
    };
    if let Some(reply) = &o.reply {
        text.clone_from(reply);
    }
    if let Some(d) = o.delay_ms {
        *delay_ms = d;
    }
    if let Some(n) = o.tool_rounds {
        *tool_rounds = n;
    }
    Ok(script)
}

pub fn main(args: &[String]) -> i32 {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return 0;
    }
    let (options, script) = match parse(args).and_then(|o| script(&o).map(|s| (o, s))) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
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
    rt.block_on(serve(options.port, script))
}

async fn serve(port: u16, script: Script) -> i32 {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let server = match MockServer::start_on(addr, script).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {addr}: {e} (hint: another --port, or 0 for a free one)"
            );
            return 1;
        }
    };
    println!("{}", server.base_url());
    if let Err(e) = std::io::stdout().flush() {
        eprintln!("error: cannot write the base URL to stdout: {e}");
        return 1;
    }
    eprintln!(
        "mock model server on {0}: OpenAI POST {0}/chat/completions, Anthropic POST {0}/messages; \
         GET /_mock/requests, POST /_mock/steps; Ctrl-C stops it",
        server.base_url()
    );
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot watch for SIGTERM: {e}");
            return 1;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!(
        "mock model server: stopping after {} requests",
        server.request_count()
    );
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_set_the_fallback_rounds_step() {
        let o = parse(&args(&[
            "--port",
            "8088",
            "--reply",
            "hi",
            "--delay-ms",
            "2000",
            "--tool-rounds",
            "2",
        ]))
        .expect("valid flags");
        assert_eq!(o.port, 8088);
        let s = script(&o).expect("a script");
        assert!(matches!(
            s.fallback,
            Step::Rounds { tool_rounds: 2, delay_ms: 2000, ref text, .. } if text == "hi"
        ));
    }

    #[test]
    fn mistakes_are_one_clear_line() {
        for (bad, says) in [
            (&["--port"][..], "--port needs a value"),
            (&["--port", "99999"][..], "--port expects a number"),
            (&["--delay", "5"][..], "unknown argument `--delay`"),
        ] {
            let e = parse(&args(bad)).expect_err("refused");
            assert!(e.contains(says), "{e}");
        }
        let o = Options {
            script: Some("/nonexistent/script.json".into()),
            ..Options::default()
        };
        assert!(script(&o).expect_err("refused").contains("cannot read"));
    }

    #[test]
    fn flags_refuse_a_script_whose_fallback_is_not_rounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("script.json");
        std::fs::write(&path, r#"{"fallback": {"kind": "text", "text": "x"}}"#).expect("write");
        let path = path.to_string_lossy().into_owned();
        let plain = Options {
            script: Some(path.clone()),
            ..Options::default()
        };
        assert!(matches!(
            script(&plain).expect("loads").fallback,
            Step::Text { .. }
        ));
        let o = Options {
            reply: Some("hi".into()),
            ..plain
        };
        assert!(script(&o).expect_err("refused").contains("hint"));
    }
}
