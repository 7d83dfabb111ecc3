//! The WASM courier (`FROM agent` with a COMPONENT): the agent is a WASM
//! guest in a sandboxed engine inside this helper or worker (see [`crate::wasm`]
//! and [`crate::helper::wasm`]), with the parcel's state pulled before and pushed after.

use dispatch_store::Store;

use super::{Attempt, Courier, Ended};
use crate::error::RuntimeResult;
use crate::helper::native::NativeCtx;
use crate::helper::wasm;

pub(crate) struct Wasm;

impl Courier for Wasm {
    async fn carry<S: Store + ?Sized>(
        self,
        store: &S,
        mut a: Box<Attempt<'_>>,
    ) -> RuntimeResult<Ended> {
        let state = match a.pull_state().await {
            Ok(state) => state,
            Err(ended) => return Ok(ended),
        };
        let ctx = a.ctx;
        if let Some(turn) = ctx.turn {
            turn.agent_started();
        }
        let native = NativeCtx {
            policy: ctx.policy,
            session: ctx.session,
            own_signals: ctx.own_signals,
            parcel: a.parcel,
            prepared: &a.prepared,
            upstream: ctx.upstream,
        };
        let ended = wasm::attempt(store, a.layout, a.run, a.log, &native).await;
        a.push_state(store, state).await;
        ended
    }
}
