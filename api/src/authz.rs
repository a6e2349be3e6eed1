//! Authorization: who may call a workload, decided on the verified peer
//! identity. The model, its validation and the decision are shared so the
//! sidecar that enforces a policy and the controller that explains it can
//! never disagree.

mod decide;
mod model;
mod pattern;
mod peer;
mod validate;
mod wire;

#[cfg(test)]
mod tests;

pub use decide::{decide, decide_plaintext, Attributes, DecidedBy, Decision, HttpAttributes};
pub use model::{
    Action, Condition, DefaultPolicy, InboundPolicy, Operation, Policy, Rule, Source, ValueMatch,
};
pub use peer::{EffectiveMode, ModeFrom, MtlsMode, PeerAuthentication, PortMode, MAX_PORT_MODES};
pub use validate::{
    validate_inbound, validate_policy, InvalidPolicy, MAX_ENTRIES, MAX_POLICIES, MAX_RULES,
};
pub use wire::{from_proto, to_proto};
