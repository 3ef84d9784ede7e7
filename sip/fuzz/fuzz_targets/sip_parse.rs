//! Parse any bytes as a SIP message: never panics; an accepted message prints and reparses to an
//! equal message; the 400 builder never panics; stream framing never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/message_corpus.rs"]
mod message_corpus;

fuzz_target!(|data: &[u8]| {
    message_corpus::check(data);
});
