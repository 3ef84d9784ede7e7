//! The rtpengine "ng" control protocol: how Kamailio's and OpenSIPS' `rtpengine` modules
//! drive Sluice, so that Sluice can replace rtpengine without touching the SIP proxy's
//! configuration.
//!
//! # The protocol
//!
//! The SIP proxy sends one UDP datagram per command: `<cookie> <dictionary>`, where the
//! cookie is an opaque token without spaces (Kamailio uses `<pid>_<counter>`) and the
//! dictionary is bencoded (see [`bencode`]). The dictionary's `command` key selects the
//! operation; `offer` and `answer` carry the whole SDP body in `sdp` together with the SIP
//! `call-id`, `from-tag`, `to-tag` and `via-branch`, plus options (`flags`, `replace`,
//! `ICE`, `direction`, `received-from`, ...). The media proxy answers
//! `<same cookie> <dictionary>` with `result` = `ok` (and the rewritten `sdp`), `pong`,
//! `error` (with `error-reason`, nothing else) or `load limit`; a non-fatal problem is
//! reported in `warning`. When a reply is lost the proxy resends the same datagram with the
//! same cookie, and must get the same reply without the command running twice.
//!
//! # What Sluice implements
//!
//! * Framing over UDP, bencoded dictionaries (unsorted keys tolerated, as rtpengine does)
//!   and JSON dictionaries (replied to in JSON); garbage without a cookie is dropped.
//! * Commands `ping`, `offer`, `answer`, `delete`, `query`, `list` typed as
//!   [`protocol::Command`]; every other command is passed through as
//!   `Command::Other(name)` with the raw dictionary for the handler to accept or refuse.
//! * The options Kamailio sends for ordinary calls, typed in [`protocol::Flags`], including
//!   the `rtpp-flags` string form that newer Kamailio versions send for rtpengine to parse.
//!   Names match as in rtpengine: case-insensitive, spaces/hyphens/underscores alike.
//!   Anything else (transcoding, recording control, DTMF, T.38, ...) is reported back in the
//!   reply's `warning` rather than silently ignored.
//! * Replies for `pong`, `ok`+`sdp`, `error`, `load limit`, `list` (`calls`) and the
//!   `query`/`delete` statistics (`created`, `last signal`, `totals`, `tags` → `medias` →
//!   `streams`), built from typed structs ([`protocol::CallStats`] and friends).
//! * Retransmission handling with a 30 s reply cache ([`server::ReplyCache`]).
//! * Call-timeout notification as rtpengine's `--b2b-url` XML-RPC callback
//!   ([`server::XmlRpcNotifier`]; see the [`server`] module docs).
//!
//! Not implemented: the TCP, HTTP and WebSocket transports, Homer/Redis/MQTT side
//! channels, and the commands beyond the six above (they reach the handler as `Other`).

pub mod bencode;
pub mod protocol;
pub mod server;

#[allow(unused_imports)] // for the tests and the fuzz target, which include this module
pub use bencode::{decode, encode, BencodeError, Value};
#[allow(unused_imports)]
pub use protocol::{
    finish_reply, parse_datagram, CallStats, CallTotals, Command, Flags, MediaStats, PacketStats,
    Reply, Request, RequestError, StreamStats, TagStats,
};
#[allow(unused_imports)]
pub use server::{NgHandler, NgServer, ServerConfig, ServerStats};

/// The fuzzing property, shared by `fuzz/fuzz_targets/ng_parse.rs` and the corpus replay
/// test: decoding and request parsing never panic, a decoded value re-encodes to a document
/// that decodes to the same value, and every reply (error or finished) re-parses.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    if let Ok((v, used)) = bencode::decode(data) {
        assert!(used <= data.len());
        let enc = bencode::encode(&v);
        let (back, used2) = bencode::decode(&enc).expect("re-encoded value decodes");
        assert_eq!(used2, enc.len());
        assert_eq!(back, v);
    }
    match protocol::parse_datagram(data) {
        None => {}
        Some(Err(e)) => {
            let reply = e.reply();
            let (cookie, body) = protocol::split_cookie(&reply).expect("reply has the cookie");
            assert_eq!(cookie, e.cookie);
            if e.format == protocol::Format::Bencode {
                bencode::decode(body).expect("error reply decodes");
            }
        }
        Some(Ok(req)) => {
            let reply = protocol::finish_reply(&req, protocol::Reply::ok());
            let (cookie, _) = protocol::split_cookie(&reply).expect("reply has the cookie");
            assert_eq!(cookie, req.cookie);
        }
    }
}
