//! (being written)

pub mod balance;
pub mod http;
pub mod plan;
