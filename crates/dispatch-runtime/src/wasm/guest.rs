//! The guest's thread: one store per run, with the capabilities the
//! Agentfile grants and nothing else, and the host functions of
//! `dispatch:courier/host`, each of which asks the attempt and blocks until
//! it answers ([`Ask`]).
//!
//! The guest ends when its export returns, when it traps, or when the
//! attempt stops it (a stop, a timeout, a budget): the store's epoch
//! deadline is checked every [`super::EPOCH_TICK`] and traps once
//! [`Grant::stop`] is set, and a host call waiting for its answer ends when
//! the attempt stops answering.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

use super::abi::{MemoryEntry, ModelRequest, ModelResponse, ToolInvocation, ToolResult};
use super::guest_abi::{GuestSession, Operation, ParcelContext, TurnResult};
use super::{bindings, one_line};

/// What the guest asks its host; answered on the sender it carries.
pub(crate) enum Ask {
    Model(ModelRequest, oneshot::Sender<Result<ModelResponse, String>>),
    Tool(ToolInvocation, oneshot::Sender<Result<ToolResult, String>>),
    Memory(MemoryAsk, oneshot::Sender<Result<MemoryAnswer, String>>),
}

/// The memory functions (`memory-*`).
pub(crate) enum MemoryAsk {
    Get {
        namespace: String,
        key: String,
    },
    Put {
        namespace: String,
        key: String,
        value: String,
    },
    Delete {
        namespace: String,
        key: String,
    },
    List {
        namespace: String,
        prefix: Option<String>,
    },
}

pub(crate) enum MemoryAnswer {
    Entry(Option<MemoryEntry>),
    Done(bool),
    Entries(Vec<MemoryEntry>),
}

/// What the run grants the guest.
pub(crate) struct Grant {
    /// The Agentfile's ENV (and ENV_PASSTHROUGH found), nothing else.
    pub env: Vec<(String, String)>,
    /// The run's workspace: the only directory the guest sees (as `.`).
    pub workspace: PathBuf,
    /// Where the guest's stdout and stderr go (the run's log).
    pub log: PathBuf,
    /// The most linear memory the guest may have, in bytes.
    pub memory_bytes: usize,
    /// `LIMIT FUEL`: the fuel the guest may burn (the component must be
    /// compiled for the engine that counts it).
    pub fuel: Option<u64>,
    /// The fuel the guest burned, set when it ends (with `fuel` only).
    pub fuel_used: Arc<AtomicU64>,
    /// Set to end the guest (checked every epoch tick).
    pub stop: Arc<AtomicBool>,
}

/// What the guest is called with.
pub(crate) struct Call {
    pub parcel: ParcelContext,
    pub session: GuestSession,
    pub operation: Operation,
    /// Call `open-session` first (a new session): its state seeds the turn's.
    pub open: bool,
}

/// How the guest's turn ended.
#[derive(Debug)]
pub(crate) enum GuestEnd {
    /// `handle-operation` returned its result.
    Turn(TurnResult),
    /// It returned an error (the guest's own words).
    Refused(String),
    /// The store's memory cap refused a growth.
    Memory(String),
    /// It burned all its fuel (`LIMIT FUEL`, the limit).
    Fuel(u64),
    /// The attempt stopped it (stop, timeout, budget) or stopped answering.
    Stopped,
    /// It could not be instantiated (an import this host does not give…).
    Instantiate(String),
    /// It trapped.
    Trap(String),
}

struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limits,
    asks: mpsc::Sender<Ask>,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The store's limits: linear memory up to the cap (a growth past it
/// traps, saying so), at most a few instances and tables.
struct Limits {
    memory_bytes: usize,
    denied: Option<String>,
    /// `LIMIT FUEL`, when set.
    fuel: Option<u64>,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            let why = format!(
                "memory cap exceeded: the guest asked for {} MiB of linear memory (it had {} MiB); the cap is {} MiB (hint: raise it with `RESOURCES memory=<size>`)",
                desired >> 20,
                current >> 20,
                self.memory_bytes >> 20
            );
            self.denied = Some(why.clone());
            return Err(wasmtime::format_err!("{why}"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }

    fn instances(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        16
    }
}

/// The trap a stopped guest ends with.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the run stopped the guest")
    }
}

impl std::error::Error for Interrupted {}

impl State {
    /// Asks the attempt and waits for its answer; a trap when it stopped
    /// answering (the run is ending).
    fn ask<R>(
        &mut self,
        make: impl FnOnce(oneshot::Sender<Result<R, String>>) -> Ask,
    ) -> wasmtime::Result<Result<R, String>> {
        let (tx, rx) = oneshot::channel();
        if self.asks.blocking_send(make(tx)).is_err() {
            return Err(wasmtime::Error::new(Interrupted));
        }
        rx.blocking_recv()
            .map_err(|_| wasmtime::Error::new(Interrupted))
    }

    fn memory(&mut self, ask: MemoryAsk) -> wasmtime::Result<Result<MemoryAnswer, String>> {
        self.ask(|tx| Ask::Memory(ask, tx))
    }
}

impl super::abi::Host for State {
    fn model_complete(
        &mut self,
        request: ModelRequest,
    ) -> wasmtime::Result<Result<ModelResponse, String>> {
        self.ask(|tx| Ask::Model(request, tx))
    }

    fn invoke_tool(
        &mut self,
        invocation: ToolInvocation,
    ) -> wasmtime::Result<Result<ToolResult, String>> {
        self.ask(|tx| Ask::Tool(invocation, tx))
    }

    fn memory_get(
        &mut self,
        namespace: String,
        key: String,
    ) -> wasmtime::Result<Result<Option<MemoryEntry>, String>> {
        Ok(match self.memory(MemoryAsk::Get { namespace, key })? {
            Ok(MemoryAnswer::Entry(e)) => Ok(e),
            Ok(_) => Err("unexpected answer".into()),
            Err(e) => Err(e),
        })
    }

    fn memory_put(
        &mut self,
        namespace: String,
        key: String,
        value: String,
    ) -> wasmtime::Result<Result<bool, String>> {
        let ask = MemoryAsk::Put {
            namespace,
            key,
            value,
        };
        Ok(done(self.memory(ask)?))
    }

    fn memory_delete(
        &mut self,
        namespace: String,
        key: String,
    ) -> wasmtime::Result<Result<bool, String>> {
        Ok(done(self.memory(MemoryAsk::Delete { namespace, key })?))
    }

    fn memory_list(
        &mut self,
        namespace: String,
        prefix: Option<String>,
    ) -> wasmtime::Result<Result<Vec<MemoryEntry>, String>> {
        Ok(match self.memory(MemoryAsk::List { namespace, prefix })? {
            Ok(MemoryAnswer::Entries(e)) => Ok(e),
            Ok(_) => Err("unexpected answer".into()),
            Err(e) => Err(e),
        })
    }
}

fn done(answer: Result<MemoryAnswer, String>) -> Result<bool, String> {
    match answer {
        Ok(MemoryAnswer::Done(b)) => Ok(b),
        Ok(_) => Err("unexpected answer".into()),
        Err(e) => Err(e),
    }
}

/// Starts the guest's turn on a thread of its own; its end arrives on the
/// receiver. `started` is told when the guest's first export is entered
/// (microseconds since the epoch).
pub(crate) fn spawn(
    component: Component,
    grant: Grant,
    call: Call,
    asks: mpsc::Sender<Ask>,
    started: oneshot::Sender<u64>,
) -> Result<oneshot::Receiver<GuestEnd>, String> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("wasm-guest".into())
        .spawn(move || {
            let end = run(component, grant, call, asks, started);
            let _ = tx.send(end);
        })
        .map_err(|e| format!("cannot start the guest's thread: {e}"))?;
    Ok(rx)
}

fn wasi(grant: &Grant) -> Result<WasiCtx, String> {
    let log = |what: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&grant.log)
            .map_err(|e| format!("cannot open the run's log for the guest's {what}: {e}"))
    };
    let mut b = WasiCtx::builder();
    b.envs(&grant.env)
        .args(&["guest"])
        .stdout(wasmtime_wasi::cli::OutputFile::new(log("stdout")?))
        .stderr(wasmtime_wasi::cli::OutputFile::new(log("stderr")?))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    b.preopened_dir(&grant.workspace, ".", FsPerms::ReadWrite)
        .map_err(|e| {
            format!(
                "cannot open the workspace {} for the guest: {e}",
                grant.workspace.display()
            )
        })?;
    Ok(b.build())
}

fn run(
    component: Component,
    grant: Grant,
    call: Call,
    asks: mpsc::Sender<Ask>,
    started: oneshot::Sender<u64>,
) -> GuestEnd {
    let engine = component.engine().clone();
    let wasi = match wasi(&grant) {
        Ok(w) => w,
        Err(e) => return GuestEnd::Instantiate(e),
    };
    let state = State {
        wasi,
        table: ResourceTable::new(),
        limits: Limits {
            memory_bytes: grant.memory_bytes,
            denied: None,
            fuel: grant.fuel,
        },
        asks,
    };
    let mut store = Store::new(&engine, state);
    store.limiter(|s| &mut s.limits);
    if let Some(fuel) = grant.fuel
        && let Err(e) = store.set_fuel(fuel)
    {
        return GuestEnd::Instantiate(one_line(&e));
    }
    let end = enter(&mut store, &engine, &component, &grant, call, started);
    if let (Some(limit), Ok(left)) = (grant.fuel, store.get_fuel()) {
        grant
            .fuel_used
            .store(limit.saturating_sub(left), Ordering::SeqCst);
    }
    end
}

/// The guest's turn in `store`: instantiated, `open-session` when asked,
/// then `handle-operation`.
fn enter(
    store: &mut Store<State>,
    engine: &wasmtime::Engine,
    component: &Component,
    grant: &Grant,
    call: Call,
    started: oneshot::Sender<u64>,
) -> GuestEnd {
    let stop = grant.stop.clone();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| match stop.load(Ordering::SeqCst) {
        true => Err(wasmtime::Error::new(Interrupted)),
        false => Ok(UpdateDeadline::Continue(1)),
    });
    let mut linker: Linker<State> = Linker::new(engine);
    let linked = bindings::CourierGuest::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
        .and_then(|()| wasmtime_wasi::p2::add_to_linker_sync(&mut linker));
    if let Err(e) = linked {
        return GuestEnd::Instantiate(one_line(&e));
    }
    let guest = match bindings::CourierGuest::instantiate(&mut *store, component, &linker) {
        Ok(g) => g,
        Err(e) => return classify(store, e, true),
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let _ = started.send(now.map_or(0, |d| d.as_micros() as u64));
    let exports = guest.dispatch_courier_guest();
    let mut session = call.session;
    if call.open {
        match exports.call_open_session(&mut *store, &call.parcel) {
            Ok(Ok(state)) => session.backend_state = state.or(session.backend_state),
            Ok(Err(e)) => return GuestEnd::Refused(format!("open-session: {e}")),
            Err(e) => return classify(store, e, false),
        }
    }
    match exports.call_handle_operation(&mut *store, &call.parcel, &session, &call.operation) {
        Ok(Ok(turn)) => GuestEnd::Turn(turn),
        Ok(Err(e)) => GuestEnd::Refused(e),
        Err(e) => classify(store, e, false),
    }
}

/// Why the guest ended with error `e`.
fn classify(store: &Store<State>, e: wasmtime::Error, instantiating: bool) -> GuestEnd {
    if let Some(why) = store.data().limits.denied.clone() {
        return GuestEnd::Memory(why);
    }
    if e.downcast_ref::<Interrupted>().is_some() {
        return GuestEnd::Stopped;
    }
    if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::OutOfFuel) {
        return GuestEnd::Fuel(store.data().limits.fuel.unwrap_or_default());
    }
    match instantiating {
        true => GuestEnd::Instantiate(one_line(&e)),
        false => GuestEnd::Trap(one_line(&e)),
    }
}
