//! What every command needs: where the state lives, the store, id resolution.

use std::time::Duration;

use dispatch_core::RunId;
use dispatch_core::id::normalize_prefix;
use dispatch_runtime::Layout;
use dispatch_runtime::reconcile::reconcile;
use dispatch_store::sqlite::SqliteStore;
use dispatch_store::{Run, RunStore};

use crate::error::{CliError, CliResult};

/// The environment variable that sets how long to wait for a locked database.
pub const BUSY_TIMEOUT_ENV: &str = "DISPATCH_BUSY_TIMEOUT_MS";

pub struct Ctx {
    pub layout: Layout,
    /// The state directory was named with `--root`, not found.
    named: bool,
}

impl Ctx {
    pub fn new(root: Option<std::path::PathBuf>) -> Self {
        // Named on the command line: a directory that is not there is a
        // mistake to say (DISPATCH_ROOT may point at one yet to be made).
        let named = root.as_ref().is_some_and(|r| !r.as_os_str().is_empty())
            && std::env::args_os().any(|a| {
                let a = a.as_encoded_bytes();
                a == b"--root" || a.starts_with(b"--root=")
            });
        let layout = match root {
            Some(r) if r.is_absolute() => Layout::new(r),
            Some(r) => Layout::new(std::env::current_dir().unwrap_or_default().join(r)),
            None => Layout::discover(),
        };
        Ctx { layout, named }
    }

    /// Opens (creating if needed) the run database.
    pub fn store(&self) -> CliResult<SqliteStore> {
        let ms = match std::env::var(BUSY_TIMEOUT_ENV) {
            Ok(v) => v.parse::<u64>().map_err(|_| {
                CliError::input(format!(
                    "{BUSY_TIMEOUT_ENV}={v} is not a number of milliseconds"
                ))
            })?,
            Err(_) => 5_000,
        };
        Ok(SqliteStore::open(
            &self.layout.db(),
            Duration::from_millis(ms),
        )?)
    }

    /// Opens the database only if it exists (read commands on a fresh directory).
    pub fn existing_store(&self) -> CliResult<Option<SqliteStore>> {
        if self.named && !self.layout.root().exists() {
            return Err(CliError::input(format!(
                "there is no state directory at {} (hint: check --root / DISPATCH_ROOT; `dispatch run` creates one)",
                self.layout.root().display()
            )));
        }
        if self.layout.db().exists() {
            self.store().map(Some)
        } else {
            Ok(None)
        }
    }
}

/// The run whose id starts with `arg`, reconciled.
pub async fn find_run(store: &SqliteStore, layout: &Layout, arg: &str) -> CliResult<Run> {
    let id = resolve_id(store, arg).await?;
    let run = store.get_run(&id).await?;
    Ok(reconcile(store, layout, run).await?)
}

/// The full id of the one run whose id starts with `arg`.
pub async fn resolve_id(store: &SqliteStore, arg: &str) -> CliResult<RunId> {
    let prefix = normalize_prefix(arg).map_err(|e| CliError::input(e.to_string()))?;
    Ok(store.resolve_prefix(&prefix).await?)
}
