//! Replays the checked-in fuzz corpus (`sip/fuzz/corpus/sip_parse/`) through the same checks
//! as the `sip_parse` fuzz target (which includes this file with `#[path]`), so CI covers it
//! without cargo-fuzz or nightly.

use sluice_sip::message::{frame_stream, parse, Limits, ParseError, SipMessage};

/// Parse never panics; an accepted message prints to bytes that parse to an equal message and
/// print the same again; an answerable error builds a response that prints; framing never
/// panics and never reports more than it has.
pub fn check(data: &[u8]) {
    let relaxed = Limits {
        max_message_len: usize::MAX,
        ..Limits::UDP
    };
    match parse(data, &Limits::UDP) {
        Ok(msg) => {
            let printed = msg.to_bytes();
            let again: SipMessage = match parse(&printed, &relaxed) {
                Ok(m) => m,
                Err(e) => panic!("printed message does not reparse: {e}"),
            };
            assert_eq!(again, msg, "parse(print(m)) != m");
            assert_eq!(again.to_bytes(), printed, "printing is not stable");
        }
        Err(e @ ParseError::BadRequest(_)) => {
            let resp = e.response();
            assert!(resp.is_some(), "answerable error without response");
            if let Some(resp) = resp {
                let bytes = resp.to_bytes();
                assert!(bytes.starts_with(b"SIP/2.0 "));
            }
        }
        Err(e) => {
            assert!(e.response().is_none(), "dropped input must not be answered");
            let _ = e.to_string();
        }
    }
    match frame_stream(data, &Limits::STREAM) {
        Ok(Some(sluice_sip::message::Frame::Message { len }))
        | Ok(Some(sluice_sip::message::Frame::KeepAlive { len, .. })) => {
            assert!(len > 0 && len <= data.len(), "frame length out of range");
        }
        Ok(None) | Err(_) => {}
    }
}

#[test]
fn corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/sip_parse");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus directory")
        .map(|e| e.expect("corpus entry").path())
        .collect();
    entries.sort();
    for path in &entries {
        eprintln!("replaying {}", path.display());
        check(&std::fs::read(path).expect("corpus file"));
    }
    assert!(
        entries.len() >= 20,
        "expected at least 20 corpus files, found {}",
        entries.len()
    );
}
