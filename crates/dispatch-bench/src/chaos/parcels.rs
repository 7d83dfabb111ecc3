//! The two agents of `chaos`: a process agent that beats, and a native agent
//! whose model calls a LOCAL tool that beats the same way.
//!
//! A beat is a timestamp (ms) appended every 50 ms to
//! `$DISPATCH_STATE_DIR/exec-<run>-<attempt>-<pid>` (the parcel's state
//! directory: writable in the sandbox, kept after the run); `<that>.done` gets the time the work
//! ended. Most executions beat 0.2–1 s; `long_pct` % of them 1.2–1.8 × the
//! lease.

use std::path::Path;

use dispatch_runtime::Layout;

pub(super) const PROCESS: &str = "chaos";
pub(super) const NATIVE: &str = "chaos-native";

/// The beating script, for `lease_ms` and `long_pct`.
fn script(lease_ms: u64, long_pct: u64) -> String {
    // One beat is about 55 ms (50 ms of sleep, a `date`).
    let long_min = lease_ms * 12 / 10 / 55;
    let long_span = (lease_ms * 6 / 10 / 55).max(1);
    format!(
        "f=\"$DISPATCH_STATE_DIR/exec-$DISPATCH_RUN_ID-$DISPATCH_ATTEMPT-$$\"\n\
         r=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')\n\
         if [ $((r % 100)) -lt {long_pct} ]; then n=$(( {long_min} + r % {long_span} )); \
         else n=$(( r % 17 + 4 )); fi\n\
         i=0\n\
         while [ $i -lt $n ]; do date +%s%3N >> \"$f\"; sleep 0.05; i=$((i+1)); done\n\
         date +%s%3N > \"$f.done\"\n\
         echo beaten\n"
    )
}

/// Builds both parcels into `layout`; the native one's model is `model_url`.
pub(super) fn build(
    dir: &Path,
    layout: &Layout,
    model_url: &str,
    lease_ms: u64,
    long_pct: u64,
) -> Result<(), String> {
    let beat = script(lease_ms, long_pct);
    let process = dir.join(PROCESS);
    let native = dir.join(NATIVE);
    for d in [&process, &native] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write(
        &process.join("Agentfile"),
        &format!(
            "FROM process\nNAME {PROCESS}\nCOPY agent.sh\nCOMMAND sh agent.sh\n\
             RETRY 10 BACKOFF 100ms..1s\n"
        ),
    )?;
    write(&process.join("agent.sh"), &beat)?;
    write(
        &native.join("Agentfile"),
        &format!(
            "FROM agent\nNAME {NATIVE}\nMODEL gpt-4o-mini PROVIDER openai_chat BASE_URL {model_url}\n\
             TOOL LOCAL beat.sh AS beat TIMEOUT 60s\nRETRY 10 BACKOFF 100ms..1s\n"
        ),
    )?;
    write(&native.join("beat.sh"), &beat)?;
    for d in [&process, &native] {
        dispatch_core::parcel::build(d, &layout.parcels())
            .map_err(|e| format!("{} does not build: {e}", d.display()))?;
    }
    Ok(())
}
