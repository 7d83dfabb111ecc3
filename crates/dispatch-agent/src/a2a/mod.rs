//! The A2A (agent-to-agent) protocol: its wire types ([`wire`]), the
//! operator's trust policy ([`trust`]), and the `TOOL A2A` client
//! ([`client`]). `dispatch serve --a2a`, the serving side, lives in the
//! runtime's service ingress and shares [`wire`].

pub mod client;
pub mod trust;
pub mod wire;
