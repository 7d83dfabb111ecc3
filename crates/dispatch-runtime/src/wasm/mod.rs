//! WASM agents (`FROM dispatch/wasm`): a WebAssembly component, built
//! against upstream Dispatch's courier ABI (`wit/dispatch-courier.wit`,
//! `dispatch:courier@0.0.1`), runs in this process under wasmtime.
//!
//! - [`guest`]: the guest's own thread: its store (memory cap, epoch
//!   interruption, fuel under `LIMIT FUEL`), its WASI capabilities (the Agentfile's ENV, the run's
//!   workspace as the only preopened directory, no sockets), and the host
//!   functions it imports, each of which asks the attempt ([`Ask`]).
//! - The attempt (`helper/wasm.rs`) answers the asks with the native
//!   agent's machinery: model calls through `dispatch-agent`'s providers,
//!   the parcel's TOOL lines run as a native agent runs them, the same
//!   events, billing and budgets.
//!
//! One engine per process; compiled components are kept by SHA-256 in
//! memory (a worker compiles each once) and on disk under the runtime's
//! `cache/wasm/` (a helper process reuses the compilation of an earlier run).

pub(crate) mod guest;
pub(crate) mod prune;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// The host side of the courier ABI (types and the `host` trait), and the
/// guest's exports.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "courier-guest",
        imports: { default: trappable },
    });
}

pub(crate) use bindings::dispatch::courier::host as abi;
pub(crate) use bindings::exports::dispatch::courier::guest as guest_abi;

/// How often the engine's epoch advances: how soon a guest in a loop sees
/// a stop or its deadline.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Compiled components kept in memory.
const CACHE_SIZE: usize = 16;

/// The process's engine (Cranelift, epoch interruption on), and the thread
/// that ticks its epoch. `fuel`: the engine whose code counts fuel (`LIMIT
/// FUEL`); counting slows every guest down, so guests without the limit
/// run on the other one. Each engine has its own compilations.
pub(crate) fn engine(fuel: bool) -> Result<&'static Engine, String> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    static FUELED: OnceLock<Result<Engine, String>> = OnceLock::new();
    let cell = if fuel { &FUELED } else { &ENGINE };
    cell.get_or_init(|| {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.consume_fuel(fuel);
        config.wasm_component_model(true);
        let engine = Engine::new(&config).map_err(|e| format!("cannot start wasmtime: {e}"))?;
        let ticking = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticking.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| format!("cannot start the epoch thread: {e}"))?;
        Ok(engine)
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The component at `path` (whose SHA-256 is `sha256`), compiled for the
/// engine that counts fuel or the other ([`engine`]): from memory, else
/// from `cache_dir`'s compilation, else compiled now (and kept in both).
pub(crate) fn load(
    path: &Path,
    sha256: &str,
    cache_dir: &Path,
    fuel: bool,
) -> Result<Component, String> {
    static CACHE: OnceLock<Mutex<HashMap<(String, bool), Component>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (sha256.to_string(), fuel);
    if let Some(c) = cache.lock().ok().and_then(|m| m.get(&key).cloned()) {
        return Ok(c);
    }
    let engine = engine(fuel)?;
    let compiled = cache_dir.join(format!(
        "{sha256}-{:016x}.cwasm",
        engine_fingerprint(engine)
    ));
    let component = match from_disk(engine, &compiled) {
        Some(c) => c,
        None => {
            let bytes = std::fs::read(path)
                .map_err(|e| format!("cannot read the component {}: {e}", path.display()))?;
            let c = Component::new(engine, &bytes).map_err(|e| {
                format!(
                    "the component {} is not a valid WebAssembly component: {}",
                    path.display(),
                    one_line(&e)
                )
            })?;
            to_disk(&c, &compiled);
            c
        }
    };
    if let Ok(mut m) = cache.lock() {
        if m.len() >= CACHE_SIZE {
            m.clear();
        }
        m.insert(key, component.clone());
    }
    Ok(component)
}

/// What the compiled code depends on: the engine's settings and version.
pub(crate) fn engine_fingerprint(engine: &Engine) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    h.finish()
}

fn from_disk(engine: &Engine, path: &Path) -> Option<Component> {
    if !path.is_file() {
        return None;
    }
    // SAFETY: the file is native code this runtime compiled and wrote itself
    // (`to_disk`, renamed into place whole) under the runtime's own state
    // directory, named by the component's SHA-256 and this engine's
    // compatibility hash; wasmtime checks its header and version again.
    unsafe { Component::deserialize_file(engine, path) }.ok()
}

fn to_disk(component: &Component, path: &Path) {
    let Ok(bytes) = component.serialize() else {
        return;
    };
    let Some(dir) = path.parent() else { return };
    let _ = std::fs::create_dir_all(dir);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// A wasmtime error as one line: its message and causes.
pub(crate) fn one_line(e: &wasmtime::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text.replace('\n', " ")
}
