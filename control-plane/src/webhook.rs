//! The sidecar injector: a mutating admission webhook the API server calls
//! on every Pod created in a meshed namespace. `admit` is the pure decision
//! (an AdmissionReview in, one out, with the JSONPatch `mycel_inject`
//! computes: the same function `mycelctl inject` uses); `serve` is its
//! HTTPS listener; `ca_bundle` points the webhook configuration at the
//! mesh CA, so the API server trusts the controller's serving certificate.
//!
//! The controller serves it rather than a separate `mycel-injector`
//! binary: the webhook needs the mesh CA's serving certificate and the
//! namespace watch, both of which the controller already holds, and one
//! Deployment fewer is one fewer thing to keep available.

pub mod admit;
pub mod ca_bundle;
pub mod serve;

pub use admit::{review, NamespaceInfo};
pub use serve::{serve, WebhookLimits};
