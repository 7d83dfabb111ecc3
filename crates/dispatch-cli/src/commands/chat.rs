//! `dispatch chat <dir> [--session NAME]`: a foreground conversation with a
//! native agent. Each line typed is one turn: a run (operation `chat`) in the
//! session, created claimed by this process and run here, its answer printed
//! as it streams. The conversation lives in the session (in the store), so
//! leaving and coming back with the same `--session` continues it. Ctrl-C
//! stops the current turn (the run ends `cancelled`); Ctrl-D leaves (exit 0).

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dispatch_core::Operation;
use dispatch_core::parcel::Courier;
use dispatch_runtime::helper::{Known, run_claimed};
use dispatch_runtime::launch::LaunchRequest;
use dispatch_runtime::native::deltas;
use dispatch_runtime::submit::{self, SubmitOptions};
use dispatch_store::{Created, RunStore};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::cli::ChatArgs;
use crate::commands::run::print_summary;
use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};

pub async fn chat(ctx: &Ctx, args: &ChatArgs) -> CliResult {
    let session = match &args.session {
        Some(s) => s.clone(),
        None => format!("chat-{}", dispatch_core::RunId::new().short()),
    };
    submit::check_session_name(&session)?;
    let store = ctx.store()?;
    let mut opts = SubmitOptions {
        session: Some(session.clone()),
        helper: Some(dispatch_runtime::os::this_process()),
        ..SubmitOptions::default()
    };
    // Checked once before the first turn: a parcel that cannot chat is refused now.
    let first = submit::prepare(
        &ctx.layout,
        &request(&args.source, Value::String(String::new())),
        &opts,
    )?;
    let parcel = first.parcel().clone();
    if parcel.manifest.courier != Courier::Agent {
        return Err(CliError::input(format!(
            "{} is not a native agent (hint: `dispatch chat` talks to an Agentfile with `FROM agent` and a MODEL)",
            args.source
        )));
    }
    let interactive = std::io::stdin().is_terminal();
    eprintln!(
        "chatting with {} in session {session}: type a message and press Enter; Ctrl-C stops a turn, Ctrl-D leaves",
        parcel.manifest.name
    );
    let parcel = Arc::new(parcel);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let line = tokio::select! {
            l = lines.next_line() => l,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("\n(no turn is running; Ctrl-D leaves)");
                continue;
            }
        };
        let Ok(Some(line)) = line else {
            if interactive {
                eprintln!();
            }
            return Ok(0);
        };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        opts.helper = Some(dispatch_runtime::os::this_process());
        let sub = submit::prepare(
            &ctx.layout,
            &request(&args.source, Value::String(text.into())),
            &opts,
        )?;
        let (created, _, extras) = submit::create(&store, &ctx.layout, sub).await?;
        let run = match created {
            Created::New(run) => run,
            Created::Existing(run) => {
                eprintln!(
                    "session {session} is busy with run {}; try again when it ends",
                    run.id.short()
                );
                continue;
            }
        };
        let mut stream = deltas().subscribe();
        let id = run.id.clone();
        let streamed = Arc::new(AtomicBool::new(false));
        let said = streamed.clone();
        let printer = tokio::spawn(async move {
            let mut out = std::io::stdout();
            while let Ok(d) = stream.recv().await {
                if d.run_id == id {
                    said.store(true, Ordering::Relaxed);
                    let _ = out.write_all(d.text.as_bytes());
                    let _ = out.flush();
                }
            }
        });
        let known = Known {
            parcel: Some(parcel.clone()),
            extras: Some(extras),
            upstream: None,
            briefs: None,
            here: None,
            shared: None,
            turn: None,
        };
        let result = run_claimed(&store, &ctx.layout, run.clone(), true, known).await;
        printer.abort();
        let finished = store.get_run(&run.id).await?;
        // A courier that streams no text (a WASM guest answers in events):
        // its answer is the run's output.
        if !streamed.load(Ordering::Relaxed) {
            match &finished.output {
                Some(Value::String(text)) => print!("{text}"),
                Some(Value::Null) | None => {}
                Some(other) => print!("{other}"),
            }
        }
        println!();
        print_summary(&finished);
        // A turn that failed or was stopped is reported above; the chat goes on.
        result?;
    }
}

fn request(source: &str, payload: Value) -> LaunchRequest {
    LaunchRequest {
        source: source.to_string(),
        operation: Some(Operation::Chat),
        payload,
        parent_id: None,
        origin_id: None,
        project: dispatch_core::project::DEFAULT_PROJECT.to_string(),
    }
}
