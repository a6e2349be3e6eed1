//! Skipping tests whose requirements this machine lacks: the shared rule
//! of every Mycel test crate (`mycel_test_support::skip`), where the suites
//! have always found it.

pub use mycel_test_support::skip::{require, summary_path};
