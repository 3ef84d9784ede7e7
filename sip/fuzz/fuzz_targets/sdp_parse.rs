//! Parse any bytes; an accepted body must print back unchanged, and rewriting it with fixed plans
//! must not panic, must reparse and must be idempotent.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/sdp_check.rs"]
mod sdp_check;

fuzz_target!(|data: &[u8]| {
    sdp_check::check(data);
});
