//! Test support: the rate limiter's tests run against a real
//! `redis-server` (shared with the end-to-end tests).

pub(crate) use mycel_test_support::redis::RedisServer;
