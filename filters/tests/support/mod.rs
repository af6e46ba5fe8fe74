//! Helpers shared by the limit and budget tests.

/// The end-to-end tests' Redis harness, the one copy of it.
#[allow(dead_code)]
#[path = "../../../tests/src/redis.rs"]
pub mod redis;

/// The ports the Redis harness starts its server on.
#[allow(dead_code)]
#[path = "../../../tests/src/ports.rs"]
pub mod ports;
