//! `--record DIR` / `--replay DIR`: the runs this eval starts record their
//! native model calls into a cassette, or are answered from one (see
//! `dispatch_agent::cassette`). The mode reaches each run's helper through
//! the environment it inherits.

use std::path::Path;

use dispatch_agent::cassette::{CASSETTE_ENV, Mode};
use dispatch_agent::cassette_tools::TOOLS_ENV;
use dispatch_core::parcel::Parcel;

use crate::error::{CliError, CliResult};

/// Sets the cassette mode for the helpers this process spawns. Replay needs
/// no model key: each key the models name gets a placeholder when unset
/// (a cassette never holds keys, and no request goes out).
pub fn setup(
    record: Option<&Path>,
    replay: Option<&Path>,
    replay_tools: bool,
    parcel: &Parcel,
    judged: bool,
) -> CliResult<()> {
    let mode = match (record, replay) {
        (Some(dir), _) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                CliError::input(format!(
                    "--record {}: cannot create the cassette directory: {e}",
                    dir.display()
                ))
            })?;
            Mode::Record(absolute(dir)?)
        }
        (None, Some(dir)) => {
            if !dir.is_dir() {
                return Err(CliError::input(format!(
                    "--replay {}: no such cassette directory (hint: record one first with `dispatch eval <agent> --record {}`)",
                    dir.display(),
                    dir.display()
                )));
            }
            Mode::Replay(absolute(dir)?)
        }
        (None, None) => return Ok(()),
    };
    if parcel.manifest.courier != dispatch_core::parcel::Courier::Agent && !judged {
        super::say::err(&format!(
            "warning: {} is not a native agent (FROM agent) and no case has a judge: it makes no model calls through Dispatch, so there is nothing to record or replay",
            parcel.manifest.name
        ));
    }
    let keys: Vec<&String> = parcel
        .manifest
        .agent
        .iter()
        .flat_map(|a| a.models.iter().filter_map(|m| m.key.as_ref()))
        .collect();
    let replaying = matches!(mode, Mode::Replay(_));
    // SAFETY: called before this process opened its store or spawned
    // anything: the runtime is current-thread and no other thread exists
    // that could read the environment at the same time.
    unsafe {
        std::env::set_var(CASSETTE_ENV, mode.env_value());
        if replay_tools {
            std::env::set_var(TOOLS_ENV, "replay");
        }
        if replaying {
            for k in keys {
                if std::env::var_os(k).is_none_or(|v| v.is_empty()) {
                    std::env::set_var(k, "unused-in-replay");
                }
            }
        }
    }
    Ok(())
}

fn absolute(dir: &Path) -> CliResult<std::path::PathBuf> {
    std::path::absolute(dir)
        .map_err(|e| CliError::input(format!("cannot resolve {}: {e}", dir.display())))
}
