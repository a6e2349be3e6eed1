//! Plumbing every listener shares: how connections are accepted, limited,
//! timed out and drained ([`serve`]).

pub mod drain;
pub mod serve;
