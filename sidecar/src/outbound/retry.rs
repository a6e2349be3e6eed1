//! Building blocks of outbound retries, each pure or self-contained so it
//! can be tested without a network: which outcomes are retried
//! ([`classify`]), how long to wait ([`backoff`]), whether the service can
//! afford another retry ([`budget`]), keeping a request body to send again
//! ([`body`]) and the deadline all tries share ([`deadline`]).
//!
//! The forwarding loop that joins them lives with the caller; these modules
//! hold no connection and never sleep.

pub mod backoff;
pub mod body;
pub mod budget;
pub mod classify;
pub mod deadline;

pub use backoff::{backoff, retry_after, retry_delay, MAX_RETRY_AFTER};
pub use body::{buffer_for_retry, BufferError, Buffered, ReplayBody};
pub use budget::{Budget, Budgets};
pub use classify::{is_idempotent, should_retry, RetryReason, TryFailure, TryResult};
pub use deadline::{effective_deadline, grpc_timeout, try_timeout};
