//! `sluice_sip::sdp::Sdp::parse` and `sluice_sip::sdp::rewrite` on the two offers a carrier relay
//! sees most: a plain audio offer from a SIP phone, and an audio+video WebRTC-style offer whose
//! ICE attributes the relay strips.
//!
//! `cargo bench -p sluice-sip --bench sdp_rewrite` (criterion reports the time per SDP; the
//! rewrite cases start from an already parsed `Sdp` and include printing the result).

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_sip::sdp::{rewrite, IceAction, MediaRewrite, RewritePlan, Sdp};

/// A SIP phone's audio offer: G.711 both laws, DTMF events, session-level `c=`.
const AUDIO: &str = "v=0\r\n\
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

/// An audio+video offer with ICE (ufrag, pwd, host and srflx candidates per media) and
/// `a=rtcp:` lines, as a softphone behind NAT sends it.
const AUDIO_VIDEO_ICE: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 10.0.0.23\r\n\
s=-\r\n\
c=IN IP4 10.0.0.23\r\n\
t=0 0\r\n\
a=ice-options:trickle\r\n\
m=audio 54400 RTP/AVP 111 0 8 101\r\n\
a=rtcp:54401 IN IP4 10.0.0.23\r\n\
a=ice-ufrag:F7gI\r\n\
a=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\n\
a=candidate:1 1 UDP 2130706431 10.0.0.23 54400 typ host\r\n\
a=candidate:1 2 UDP 2130706430 10.0.0.23 54401 typ host\r\n\
a=candidate:2 1 UDP 1694498815 198.51.100.10 61000 typ srflx raddr 10.0.0.23 rport 54400\r\n\
a=candidate:2 2 UDP 1694498814 198.51.100.10 61001 typ srflx raddr 10.0.0.23 rport 54401\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=sendrecv\r\n\
m=video 55400 RTP/AVP 96 97\r\n\
a=rtcp:55401 IN IP4 10.0.0.23\r\n\
a=ice-ufrag:F7gI\r\n\
a=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\n\
a=candidate:1 1 UDP 2130706431 10.0.0.23 55400 typ host\r\n\
a=candidate:1 2 UDP 2130706430 10.0.0.23 55401 typ host\r\n\
a=candidate:2 1 UDP 1694498815 198.51.100.10 62000 typ srflx raddr 10.0.0.23 rport 55400\r\n\
a=candidate:2 2 UDP 1694498814 198.51.100.10 62001 typ srflx raddr 10.0.0.23 rport 55401\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtpmap:97 H264/90000\r\n\
a=fmtp:97 profile-level-id=42e01f;packetization-mode=1\r\n\
a=rtcp-fb:96 nack\r\n\
a=rtcp-fb:96 nack pli\r\n\
a=sendrecv\r\n";

const RELAY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 100);

fn relayed(rtp_port: u16) -> Option<MediaRewrite> {
    Some(MediaRewrite {
        addr: RELAY,
        rtp_port,
        rtcp_port: None,
    })
}

/// The audio offer to the relay, ICE untouched (there is none).
fn audio_plan() -> RewritePlan {
    RewritePlan {
        media: vec![relayed(30000)],
        origin: Some(RELAY),
        ..RewritePlan::default()
    }
}

/// Both media to the relay, ICE removed.
fn audio_video_plan() -> RewritePlan {
    RewritePlan {
        media: vec![relayed(30000), relayed(30002)],
        origin: Some(RELAY),
        ice: IceAction::Remove,
        ..RewritePlan::default()
    }
}

fn sdp_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("sdp_parse");
    for (name, text) in [("audio", AUDIO), ("audio_video_ice", AUDIO_VIDEO_ICE)] {
        let bytes = text.as_bytes();
        Sdp::parse(bytes).expect("fixture parses");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| b.iter(|| Sdp::parse(black_box(bytes))));
    }
    group.finish();
}

fn sdp_rewrite(c: &mut Criterion) {
    let mut group = c.benchmark_group("sdp_rewrite");
    for (name, text, plan) in [
        ("audio", AUDIO, audio_plan()),
        (
            "audio_video_ice_remove",
            AUDIO_VIDEO_ICE,
            audio_video_plan(),
        ),
    ] {
        let sdp = Sdp::parse(text.as_bytes()).expect("fixture parses");
        let out = rewrite(&sdp, &plan).expect("plan fits").to_bytes();
        let out = String::from_utf8(out).expect("SDP is text");
        assert!(out.contains("203.0.113.100"), "relay address written");
        assert!(!out.contains("a=candidate"), "ICE removed");
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                rewrite(black_box(&sdp), black_box(&plan))
                    .expect("plan fits")
                    .to_bytes()
            })
        });
    }
    group.finish();
}

/// What the proxy does per SDP body: parse, rewrite, print.
fn sdp_parse_rewrite(c: &mut Criterion) {
    let bytes = AUDIO.as_bytes();
    let plan = audio_plan();
    let mut group = c.benchmark_group("sdp_parse_rewrite");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("audio", |b| {
        b.iter(|| {
            let sdp = Sdp::parse(black_box(bytes)).expect("fixture parses");
            rewrite(&sdp, &plan).expect("plan fits").to_bytes()
        })
    });
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
    targets = sdp_parse, sdp_rewrite, sdp_parse_rewrite
}
criterion_main!(benches);
