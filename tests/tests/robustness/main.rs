//! What the mesh withstands: one module per area, one test per attack, each
//! named after the attack it reproduces. Every test here failed on the code
//! before its fix.
//!
//! Real processes on loopback (controller, proxies, apps), started by the
//! harness in `mycel-tests`.

mod certs;
mod controller;
mod limits;
mod protocol;
