//! What every part of the proxy shares, and nothing else: the layer that
//! `inbound`, `outbound`, `gateway`, `discovery` and `identity` build on
//! (they never import each other's internals through it).
//!
//! - Serving: how connections are accepted, limited, timed out and drained
//!   ([`serve`], [`drain`]), under the limits the flags set ([`limits`]).
//! - The mesh's HTTP contract: body type, mesh headers, the proxy's own
//!   error responses ([`http`]).
//! - Transport: mutual TLS between sidecars ([`tls`]) over the proxy's
//!   current certificate and trust bundle ([`credentials`]), and a captured
//!   connection's original destination ([`orig_dst`]); certificates and
//!   keys from PEM files ([`pem_files`]); the gateway's HTTPS certificates
//!   from PEM, checked, whether from files or pushed ([`server_cert`]); a
//!   connection whose first bytes were read to detect its protocol,
//!   replayed ([`prefixed`]).
//! - The directory of services and endpoints the data path reads, filled by
//!   `discovery` ([`directory`]).
//! - The controller: its TLS channel ([`channel`]) and the jittered backoff
//!   every retry loop uses ([`backoff`]).

pub mod backoff;
pub mod budget;
pub mod channel;
pub mod credentials;
pub mod directory;
pub mod drain;
pub mod http;
#[cfg(test)]
mod layering;
pub mod limits;
pub mod orig_dst;
pub mod pem_files;
pub mod prefixed;
pub mod serve;
pub mod server_cert;
pub mod tls;
pub mod trim;
