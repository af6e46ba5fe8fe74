//! Helpers shared by the limit and budget tests.

pub mod redis;
