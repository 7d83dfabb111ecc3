//! `dispatch replay <run> --offline`: the new run's model calls are answered
//! from the old run's own recordings. Each `model_call` event of a native
//! run names its call as a cassette entry (`cassette_sha256`, stored with
//! the run's calls); they are gathered into `runs/<old id>/cassette/` and
//! the replay's helper serves them (see `dispatch_agent::cassette`): no
//! network, no key. A request the run never made fails the replay naming
//! the nearest one it made.

use dispatch_agent::cassette::{CASSETTE_ENV, Mode, write_entry};
use dispatch_core::EventKind;
use dispatch_core::parcel::Courier;
use dispatch_runtime::launch::resolve_parcel;
use dispatch_store::sqlite::SqliteStore;
use dispatch_store::{EventStore, Run};

use crate::ctx::Ctx;
use crate::error::{CliError, CliResult};

/// Gathers `old`'s recorded calls into a cassette and sets the replay mode
/// for the helper this process is about to spawn.
pub async fn prepare(ctx: &Ctx, store: &SqliteStore, old: &Run) -> CliResult<()> {
    let parcel = resolve_parcel(&ctx.layout, &old.parcel_digest)?;
    if parcel.manifest.courier != Courier::Agent {
        return Err(CliError::input(format!(
            "--offline replays a native agent's model calls; run {} is a {} run with none (hint: drop --offline)",
            old.id.short(),
            courier_name(parcel.manifest.courier)
        )));
    }
    let run_dir = ctx.layout.run_dir(&old.id);
    let dir = ctx.layout.run_dir(&old.id).join("cassette");
    let mut n = 0;
    for e in store.list_events(&old.id, 0, 1_000_000).await? {
        if !e.event.is(EventKind::ModelCall) {
            continue;
        }
        let Some(sha) = e.event.data["cassette_sha256"].as_str() else {
            continue;
        };
        let entry: serde_json::Value = dispatch_runtime::call_records::read(&run_dir, sha)
            .and_then(|t| serde_json::from_str(&t).ok())
            .ok_or_else(|| {
                CliError::input(format!(
                    "cannot replay run {} offline: its recorded call {sha} is missing or unreadable (in {})",
                    old.id.short(),
                    dispatch_runtime::call_records::path(&run_dir).display()
                ))
            })?;
        let key = entry["key"].as_str().unwrap_or_default().to_string();
        write_entry(&dir, &key, &entry).map_err(|e| {
            CliError::input(format!("cannot write the cassette {}: {e}", dir.display()))
        })?;
        n += 1;
    }
    if n == 0 {
        return Err(CliError::input(format!(
            "cannot replay run {} offline: it has no recorded model calls (runs from before recordings were kept have none) (hint: drop --offline to call the model again)",
            old.id.short()
        )));
    }
    let keys: Vec<&String> = parcel
        .manifest
        .agent
        .iter()
        .flat_map(|a| a.models.iter().filter_map(|m| m.key.as_ref()))
        .collect();
    // SAFETY: this process is single-threaded (a current-thread runtime and
    // a synchronous SQLite store); nothing reads the environment meanwhile.
    unsafe {
        std::env::set_var(CASSETTE_ENV, Mode::Replay(dir).env_value());
        for k in keys {
            if std::env::var_os(k).is_none_or(|v| v.is_empty()) {
                std::env::set_var(k, "unused-in-replay");
            }
        }
    }
    eprintln!(
        "offline: {n} recorded model call(s) of run {}",
        old.id.short()
    );
    Ok(())
}

fn courier_name(c: Courier) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "non-native".to_string())
}
