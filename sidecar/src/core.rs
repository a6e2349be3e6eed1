//! Plumbing every listener shares: how connections are accepted, limited,
//! timed out and drained ([`serve`], [`drain`]), and the mesh's HTTP
//! contract: body type, mesh headers, the proxy's own error responses
//! ([`http`]).

pub mod drain;
pub mod http;
pub mod serve;
