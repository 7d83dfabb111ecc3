//! The agent courier (`FROM agent`): the native model loop runs inside this
//! helper or worker (see [`crate::helper::native`], where a model is
//! called), with the parcel's state pulled before and pushed after.

use dispatch_store::Store;

use super::{Attempt, Courier, Ended};
use crate::error::RuntimeResult;
use crate::helper::native::{self, NativeCtx};

pub(crate) struct Agent;

impl Courier for Agent {
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
        let ended = native::attempt(store, a.layout, a.run, a.log, &native).await;
        // `NETWORK allow`: what the tools' connections were allowed or refused.
        if let Some(proxy) = &a.prepared.egress {
            crate::record::append_events(store, &a.run.id, &proxy.recorder().take()).await;
        }
        a.push_state(store, state).await;
        ended
    }
}
