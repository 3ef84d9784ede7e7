//! `sluice_sip::message::parse` on the messages a proxy sees most (an INVITE with an SDP offer,
//! a 200 OK with the answer, a REGISTER with digest credentials), and `frame_stream` cutting two
//! back-to-back messages out of one TCP buffer.
//!
//! `cargo bench -p sluice-sip --bench sip_parse` (criterion reports the time per message; the
//! `frame_stream` case frames both messages, so halve it for one).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_sip::message::{frame_stream, parse, Frame, Limits, SipMessage};

const SDP_OFFER: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 198.51.100.10\r\n\
s=-\r\n\
c=IN IP4 198.51.100.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

const SDP_ANSWER: &str = "v=0\r\n\
o=bob 2808844564 2808844564 IN IP4 192.0.2.20\r\n\
s=-\r\n\
c=IN IP4 192.0.2.20\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=sendrecv\r\n";

/// A carrier-style INVITE: two Vias, Record-Route, P-Asserted-Identity, an SDP offer.
fn invite() -> Vec<u8> {
    format!(
        "INVITE sip:+15551230002@sip.example.net;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK776asdhds.1;received=203.0.113.5\r\n\
Via: SIP/2.0/UDP 198.51.100.10:5060;rport=5060;branch=z9hG4bKnashds8\r\n\
Max-Forwards: 69\r\n\
Record-Route: <sip:203.0.113.5;lr>\r\n\
To: <sip:+15551230002@sip.example.net;user=phone>\r\n\
From: \"Alice\" <sip:+15551230001@sip.example.net;user=phone>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.net\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:+15551230001@198.51.100.10:5060;transport=udp>\r\n\
P-Asserted-Identity: \"Alice\" <sip:+15551230001@sip.example.net;user=phone>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK, REFER, NOTIFY\r\n\
Supported: timer, 100rel, replaces\r\n\
Session-Expires: 1800;refresher=uac\r\n\
User-Agent: Sluice-bench/1.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{SDP_OFFER}",
        SDP_OFFER.len()
    )
    .into_bytes()
}

/// The 200 OK to [`invite`], with the callee's SDP answer.
fn ok_200() -> Vec<u8> {
    format!(
        "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK776asdhds.1;received=203.0.113.5\r\n\
Via: SIP/2.0/UDP 198.51.100.10:5060;rport=5060;branch=z9hG4bKnashds8\r\n\
Record-Route: <sip:203.0.113.5;lr>\r\n\
To: <sip:+15551230002@sip.example.net;user=phone>;tag=a6c85cf\r\n\
From: \"Alice\" <sip:+15551230001@sip.example.net;user=phone>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.net\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:+15551230002@192.0.2.20:5060>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE\r\n\
Supported: timer\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{SDP_ANSWER}",
        SDP_ANSWER.len()
    )
    .into_bytes()
}

/// A REGISTER carrying digest credentials (the second REGISTER of a challenge exchange).
fn register() -> Vec<u8> {
    b"REGISTER sip:sip.example.net SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.10:5060;rport;branch=z9hG4bKnashds7\r\n\
Max-Forwards: 70\r\n\
To: <sip:alice@sip.example.net>\r\n\
From: <sip:alice@sip.example.net>;tag=456248\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1827 REGISTER\r\n\
Contact: <sip:alice@198.51.100.10:5060>;expires=3600\r\n\
Authorization: Digest username=\"alice\", realm=\"sip.example.net\", \
nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"sip:sip.example.net\", \
response=\"6629fae49393a05397450978507c4ef1\", algorithm=MD5, \
cnonce=\"0a4f113b\", qop=auth, nc=00000001, opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"\r\n\
Expires: 3600\r\n\
User-Agent: Sluice-bench/1.0\r\n\
Content-Length: 0\r\n\r\n"
        .to_vec()
}

/// Parses `bytes` once outside the measurement, so a broken fixture fails loudly.
fn checked(bytes: &[u8]) -> &[u8] {
    match parse(bytes, &Limits::UDP) {
        Ok(SipMessage::Request(_) | SipMessage::Response(_)) => bytes,
        Err(e) => panic!("fixture does not parse: {e}"),
    }
}

/// Frames every message in `buf` and returns how many there were.
fn frame_all(mut buf: &[u8]) -> usize {
    let mut messages = 0;
    while let Some(frame) = frame_stream(buf, &Limits::STREAM).expect("stream frames") {
        let len = match frame {
            Frame::Message { len } => {
                messages += 1;
                len
            }
            Frame::KeepAlive { len, .. } => len,
        };
        buf = &buf[len..];
    }
    messages
}

fn sip_parse(c: &mut Criterion) {
    let invite = invite();
    let ok = ok_200();
    let register = register();
    let mut group = c.benchmark_group("sip_parse");
    for (name, bytes) in [
        ("invite_sdp", checked(&invite)),
        ("ok_200_sdp", checked(&ok)),
        ("register_digest", checked(&register)),
    ] {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| b.iter(|| parse(black_box(bytes), &Limits::UDP)));
    }
    group.finish();
}

fn sip_frame_stream(c: &mut Criterion) {
    // An INVITE and its 200 OK back to back, as one TCP read might deliver them.
    let mut buf = invite();
    buf.extend_from_slice(&ok_200());
    assert_eq!(frame_all(&buf), 2, "both messages frame");
    let mut group = c.benchmark_group("sip_frame_stream");
    group.throughput(Throughput::Elements(2));
    group.bench_function("two_messages", |b| b.iter(|| frame_all(black_box(&buf))));
    group.finish();
}

fn config() -> Criterion {
    // Short, so `cargo test --all-targets` (one pass per bench) and CI stay fast; pass
    // `--measurement-time` for steadier figures.
    Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
}

criterion_group! {
    name = benches;
    config = config();
    targets = sip_parse, sip_frame_stream
}
criterion_main!(benches);
