//! Fuzzes the ng control protocol parser: `cargo +nightly fuzz run ng_parse` from
//! `controlplane/`. Decoding and request parsing must not panic, and a decoded bencode value
//! must re-encode to a document that decodes to the same value (see `ng::fuzz_one`).
//! The checked-in corpus in `corpus/ng_parse/` is replayed by `tests/ng_codec.rs`.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../src/ng/mod.rs"]
mod ng;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ng::fuzz_one(data);
});
