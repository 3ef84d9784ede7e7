//! The rtpengine "ng" client of the end-to-end tests: `sluice-bench`'s (bench/src/ng.rs), which
//! is written from the protocol rather than from Sluice's own codec, so that a mistake shared by
//! Sluice's encoder and decoder cannot hide from the tests. What is here only turns its errors
//! into panics that show the whole value.

#![allow(dead_code)] // each test file uses a different part

pub use sluice_bench::ng::{dict, NgClient, Value};

/// Accessors that panic with the whole value when it has not the expected shape.
pub trait ValueExt {
    /// The string at `key`.
    fn str_at(&self, key: &str) -> &str;
    /// The integer at a path of keys.
    fn int_at(&self, keys: &[&str]) -> i64;
}

impl ValueExt for Value {
    fn str_at(&self, key: &str) -> &str {
        self.get(key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no string `{key}` in {self:?}"))
    }

    fn int_at(&self, keys: &[&str]) -> i64 {
        self.path(keys)
            .and_then(Value::as_int)
            .unwrap_or_else(|| panic!("no integer at {keys:?} in {self:?}"))
    }
}

/// Requests whose failure ends the test.
pub trait NgExt {
    /// The reply to `request`, whose `result` must be `ok` (or `pong`).
    fn expect_ok(&self, request: &Value) -> Value;
}

impl NgExt for NgClient {
    fn expect_ok(&self, request: &Value) -> Value {
        self.ok(request).unwrap_or_else(|e| panic!("{e:#}"))
    }
}
