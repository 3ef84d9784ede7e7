//! Unit tests on real-world SDPs (the same files seed the fuzz corpus).

use std::net::{IpAddr, Ipv4Addr};

use sluice_sip::sdp::{
    rewrite, AddrType, Address, Connection, Direction, HoldAddress, IceAction, MediaKind,
    MediaRewrite, Proto, RewritePlan, Rtcp, Sdp, SdpError, SdpErrorKind, MAX_SDP_LEN,
};

macro_rules! corpus {
    ($name:literal) => {
        include_bytes!(concat!("../fuzz/corpus/sdp_parse/", $name)).as_slice()
    };
}

const RELAY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

fn relay(rtp_port: u16) -> Option<MediaRewrite> {
    Some(MediaRewrite {
        addr: RELAY,
        rtp_port,
        rtcp_port: None,
    })
}

fn plan(media: Vec<Option<MediaRewrite>>) -> RewritePlan {
    RewritePlan {
        media,
        ..RewritePlan::default()
    }
}

fn parse(bytes: &[u8]) -> Sdp {
    let sdp = Sdp::parse(bytes).expect("parses");
    assert_eq!(sdp.to_bytes(), bytes, "lossless");
    sdp
}

fn text(sdp: &Sdp) -> String {
    String::from_utf8(sdp.to_bytes()).expect("utf-8")
}

fn ip4(a: u8, b: u8, c: u8, d: u8) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
}

/// Lines of `after` that are not in `before` (as a multiset, in order of `after`).
fn changed_lines(before: &Sdp, after: &Sdp) -> Vec<String> {
    let mut old: Vec<&str> = before.lines().collect();
    let mut out = Vec::new();
    for line in after.lines() {
        if let Some(i) = old.iter().position(|l| *l == line) {
            old.remove(i);
        } else {
            out.push(line.to_owned());
        }
    }
    out
}

#[test]
fn linphone_offer_with_ice() {
    let sdp = parse(corpus!("linphone_ice_offer.sdp"));
    assert_eq!(sdp.origin().username, "alice");
    assert_eq!(sdp.origin().session_id, "1234");
    assert_eq!(sdp.origin().session_version, "567");
    assert_eq!(sdp.origin().address, "192.168.1.23");
    assert!(sdp.session_ice().ufrag && sdp.session_ice().pwd);
    assert!(sdp.has_ice());
    let [audio, video] = sdp.media() else {
        panic!("two media")
    };
    assert_eq!(audio.kind(), &MediaKind::Audio);
    assert_eq!(audio.port(), 7078);
    assert_eq!(audio.proto(), &Proto::RtpAvp);
    assert_eq!(audio.formats().len(), 9);
    assert_eq!(audio.ice().candidates, 4);
    assert_eq!(
        audio.rtcp(),
        Some(&Rtcp {
            port: 7079,
            connection: None
        })
    );
    assert_eq!(audio.direction(), Direction::SendRecv);
    assert_eq!(video.kind(), &MediaKind::Video);
    assert_eq!(
        video.effective_connection().and_then(Connection::ip),
        ip4(192, 168, 1, 23)
    );

    let mut p = plan(vec![relay(30000), relay(30002)]);
    p.ice = IceAction::Remove;
    p.origin = Some(RELAY);
    let out = rewrite(&sdp, &p).expect("rewrites");
    let s = text(&out);
    assert!(!s.contains("candidate") && !s.contains("ice-"), "{s}");
    assert!(s.contains("o=alice 1234 567 IN IP4 203.0.113.1\r\n"));
    assert!(s.contains("c=IN IP4 203.0.113.1\r\n"));
    assert!(s.contains("m=audio 30000 RTP/AVP 96 97 98 0 8 18 101 99 100\r\n"));
    assert!(s.contains("a=rtcp:30001\r\n"));
    assert!(s.contains("m=video 30002 RTP/AVP 96 97\r\n"));
    assert!(s.contains("a=rtcp:30003\r\n"));
    assert!(!s.contains("192.168.1.23"), "{s}");
    // Shared relay address: the session c= is rewritten, no media-level c= is inserted.
    assert_eq!(s.matches("\nc=").count(), 1);
    assert_eq!(rewrite(&out, &p).expect("again"), out);
}

#[test]
fn baresip_offer_rtcp_mux_and_end_of_candidates() {
    let sdp = parse(corpus!("baresip_offer_rtcp_mux.sdp"));
    let audio = &sdp.media()[0];
    assert!(audio.rtcp_mux());
    assert!(audio.ice().end_of_candidates && audio.ice().ufrag && audio.ice().pwd);
    assert!(sdp.session_ice().options);
    assert_eq!(audio.explicit_direction(), Some(Direction::SendRecv));
    let mut p = plan(vec![relay(31000)]);
    p.ice = IceAction::Remove;
    let out = rewrite(&sdp, &p).expect("rewrites");
    let s = text(&out);
    assert!(s.contains("a=rtcp-mux\r\n"));
    assert!(
        !s.contains("a=rtcp:"),
        "mux with default RTCP adds no a=rtcp"
    );
    assert!(!s.contains("ice-") && !s.contains("candidate"));
    assert!(s.contains("m=audio 31000 RTP/AVP 0 8 101\r\nb=AS:64\r\n"));
    assert!(out.media()[0].rtcp_mux());
}

#[test]
fn asterisk_offer_only_intended_lines_change() {
    let sdp = parse(corpus!("asterisk_offer.sdp"));
    let out = rewrite(&sdp, &plan(vec![relay(32000)])).expect("rewrites");
    assert_eq!(
        changed_lines(&sdp, &out),
        vec!["c=IN IP4 203.0.113.1", "m=audio 32000 RTP/AVP 0 8 3 101"]
    );
    assert_eq!(out.origin(), sdp.origin(), "o= untouched unless asked");
    assert_eq!(out.lines().count(), sdp.lines().count());
}

#[test]
fn polycom_trailing_whitespace_and_session_direction() {
    let sdp = parse(corpus!("polycom_offer.sdp"));
    assert_eq!(sdp.session_direction(), Some(Direction::SendRecv));
    let audio = &sdp.media()[0];
    assert_eq!(audio.explicit_direction(), None);
    assert_eq!(audio.direction(), Direction::SendRecv);
    assert_eq!(
        sdp.session_connection().and_then(Connection::ip),
        ip4(172, 16, 5, 10)
    );
    let fmtp = audio
        .attributes()
        .iter()
        .find(|a| a.value.as_deref() == Some("18 annexb=no"));
    assert!(fmtp.is_some(), "value without trailing space");
    let out = rewrite(&sdp, &plan(vec![relay(33000)])).expect("rewrites");
    let s = text(&out);
    // The untouched line keeps its trailing space; the rewritten one is canonical.
    assert!(s.contains("a=fmtp:18 annexb=no \r\n"));
    assert!(s.contains("c=IN IP4 203.0.113.1\r\n"));
}

#[test]
fn yealink_two_media_different_relay_addresses() {
    let sdp = parse(corpus!("yealink_video_offer.sdp"));
    let other = Ipv4Addr::new(203, 0, 113, 2);
    let p = plan(vec![
        relay(34000),
        Some(MediaRewrite {
            addr: other,
            rtp_port: 34002,
            rtcp_port: None,
        }),
    ]);
    let out = rewrite(&sdp, &p).expect("rewrites");
    // No common address: the session c= stays, each media gets its own c=.
    assert_eq!(out.session_connection(), sdp.session_connection());
    let [audio, video] = out.media() else {
        panic!("two media")
    };
    assert_eq!(audio.connection(), Some(&Connection::ipv4(RELAY)));
    assert_eq!(video.connection(), Some(&Connection::ipv4(other)));
    let s = text(&out);
    assert!(s.contains("m=video 34002 RTP/AVP 99\r\nc=IN IP4 203.0.113.2\r\nb=AS:1920\r\n"));
    assert_eq!(rewrite(&out, &p).expect("again"), out);
}

#[test]
fn ipv6_parses_but_is_not_relayed() {
    let sdp = parse(corpus!("ipv6_offer.sdp"));
    let c = sdp.session_connection().expect("c=");
    assert_eq!(c.addr_type, AddrType::Ip6);
    assert_eq!(c.address, Address::Ip("2001:db8::10".parse().expect("ip")));
    assert!(c.is_ipv6());
    let rtcp = sdp.media()[0].rtcp().expect("rtcp");
    assert_eq!(rtcp.port, 49173);
    assert!(rtcp.connection.as_ref().is_some_and(Connection::is_ipv6));
    let err = rewrite(&sdp, &plan(vec![relay(35000)])).expect_err("IPv6");
    assert_eq!(err, SdpError::Ipv6NotRelayed { media: 0, line: 4 });
    assert_eq!(err.kind(), SdpErrorKind::Unsupported);
    assert!(err.to_string().contains("IPv6 media is not relayed yet"));
    // Leaving the media alone is fine.
    let out = rewrite(&sdp, &plan(vec![None])).expect("no-op");
    assert_eq!(out, sdp);
}

#[test]
fn t38_reinvite_passes_through() {
    let sdp = parse(corpus!("t38_reinvite.sdp"));
    let image = &sdp.media()[0];
    assert_eq!(image.kind(), &MediaKind::Image);
    assert_eq!(image.proto(), &Proto::Udptl);
    assert_eq!(image.formats(), ["t38"]);
    let out = rewrite(&sdp, &plan(vec![relay(36000)])).expect("rewrites");
    assert_eq!(
        changed_lines(&sdp, &out),
        vec!["c=IN IP4 203.0.113.1", "m=image 36000 udptl t38"]
    );
}

#[test]
fn srtp_passes_through() {
    let sdp = parse(corpus!("srtp_offer.sdp"));
    let audio = &sdp.media()[0];
    assert_eq!(audio.proto(), &Proto::RtpSavp);
    assert!(audio.has_crypto());
    let out = rewrite(&sdp, &plan(vec![relay(37000)])).expect("rewrites");
    assert!(out.media()[0].has_crypto());
    assert_eq!(
        changed_lines(&sdp, &out),
        vec!["c=IN IP4 203.0.113.1", "m=audio 37000 RTP/SAVP 0 8 101"]
    );
}

#[test]
fn hold_sendonly_keeps_direction() {
    let sdp = parse(corpus!("hold_sendonly.sdp"));
    assert_eq!(sdp.media()[0].direction(), Direction::SendOnly);
    let out = rewrite(&sdp, &plan(vec![relay(38000)])).expect("rewrites");
    assert_eq!(out.media()[0].direction(), Direction::SendOnly);
    assert!(text(&out).contains("a=sendonly\r\n"));
}

#[test]
fn hold_zero_address_kept_by_default() {
    let sdp = parse(corpus!("hold_zero_address.sdp"));
    let audio = &sdp.media()[0];
    assert!(audio.is_hold_address());
    assert!(sdp.session_connection().is_some_and(Connection::is_hold));
    let out = rewrite(&sdp, &plan(vec![relay(39000)])).expect("rewrites");
    assert_eq!(
        changed_lines(&sdp, &out),
        vec!["m=audio 39000 RTP/AVP 0", "a=rtcp:39001 IN IP4 0.0.0.0"]
    );
    assert!(out.media()[0].is_hold_address());

    // The plan can ask for the relay address instead.
    let mut p = plan(vec![relay(39000)]);
    p.hold = HoldAddress::Replace;
    let out = rewrite(&sdp, &p).expect("rewrites");
    assert_eq!(
        changed_lines(&sdp, &out),
        vec![
            "c=IN IP4 203.0.113.1",
            "m=audio 39000 RTP/AVP 0",
            "a=rtcp:39001 IN IP4 203.0.113.1"
        ]
    );
    assert_eq!(rewrite(&out, &p).expect("again"), out);
}

#[test]
fn rejected_video_stays_at_port_zero() {
    let sdp = parse(corpus!("rejected_video_answer.sdp"));
    assert!(sdp.media()[1].is_rejected());
    // A rewrite for the rejected stream is ignored.
    let out = rewrite(&sdp, &plan(vec![relay(40000), relay(40002)])).expect("rewrites");
    assert_eq!(out.media()[1].port(), 0);
    let s = text(&out);
    assert!(s.ends_with("m=video 0 RTP/AVP 96\r\n"), "{s}");
    assert!(s.contains("c=IN IP4 203.0.113.1\r\n"));
}

#[test]
fn rtcp_with_address_is_rewritten() {
    let sdp = parse(corpus!("rtcp_with_address.sdp"));
    let rtcp = sdp.media()[0].rtcp().expect("rtcp");
    assert_eq!(rtcp.port, 53020);
    assert_eq!(
        rtcp.connection.as_ref().and_then(Connection::ip),
        ip4(126, 16, 64, 4)
    );
    assert!(sdp.session_connection().is_none());
    let p = plan(vec![Some(MediaRewrite {
        addr: RELAY,
        rtp_port: 41000,
        rtcp_port: Some(41001),
    })]);
    let out = rewrite(&sdp, &p).expect("rewrites");
    assert_eq!(
        changed_lines(&sdp, &out),
        vec![
            "m=audio 41000 RTP/AVP 0",
            "c=IN IP4 203.0.113.1",
            "a=rtcp:41001 IN IP4 203.0.113.1"
        ]
    );
}

#[test]
fn lf_unknown_lines_port_count_and_no_final_newline() {
    let bytes = corpus!("lf_unknown_lines.sdp");
    let sdp = parse(bytes);
    assert!(!bytes.ends_with(b"\n"));
    assert_eq!(sdp.line_ending(), sluice_sip::sdp::LineEnding::Lf);
    let c = sdp.session_connection().expect("c=");
    assert_eq!(c.suffix.as_deref(), Some("127"));
    let [audio, video] = sdp.media() else {
        panic!("two media")
    };
    assert_eq!(audio.port(), 49170);
    assert_eq!(audio.port_count(), Some(2));
    assert_eq!(audio.direction(), Direction::RecvOnly, "session default");
    assert_eq!(
        video.connection().and_then(Connection::ip),
        ip4(10, 47, 16, 6)
    );

    // Relay only the video, with an RTCP port that is not RTP+1: a=rtcp is appended, and the
    // missing final newline stays missing.
    let p = plan(vec![
        None,
        Some(MediaRewrite {
            addr: RELAY,
            rtp_port: 42000,
            rtcp_port: Some(42100),
        }),
    ]);
    let out = rewrite(&sdp, &p).expect("rewrites");
    let s = text(&out);
    assert!(
        s.ends_with("c=IN IP4 203.0.113.1\na=rtpmap:99 h263-1998/90000\na=rtcp:42100"),
        "{s}"
    );
    assert!(!s.contains('\r'));
    // The audio media is not relayed and relies on the session c=, which therefore stays.
    assert_eq!(out.session_connection(), sdp.session_connection());
    assert_eq!(out.media()[0], sdp.media()[0]);
    assert_eq!(rewrite(&out, &p).expect("again"), out);
}

#[test]
fn non_relayed_media_keeps_its_address() {
    let sdp = parse(corpus!("yealink_video_offer.sdp"));
    let out = rewrite(&sdp, &plan(vec![relay(43000), None])).expect("rewrites");
    // The video still relies on the session c=, so it stays and the audio gets its own c=.
    assert_eq!(out.session_connection(), sdp.session_connection());
    assert_eq!(out.media()[0].connection(), Some(&Connection::ipv4(RELAY)));
    assert_eq!(
        out.media()[1].effective_connection(),
        sdp.media()[1].effective_connection(),
    );

    // Forcing the session c= pins the video to its old address instead.
    let mut p = plan(vec![relay(43000), None]);
    p.session_connection = Some(RELAY);
    let out = rewrite(&sdp, &p).expect("rewrites");
    assert_eq!(out.session_connection(), Some(&Connection::ipv4(RELAY)));
    assert_eq!(
        out.media()[1].effective_connection(),
        sdp.media()[1].effective_connection(),
        "the video keeps going where it went"
    );
    assert!(text(&out).contains("m=video 11796 RTP/AVP 99\r\nc=IN IP4 192.168.0.105\r\n"));
    assert_eq!(rewrite(&out, &p).expect("again"), out);
}

#[test]
fn trailing_blank_lines_are_kept() {
    let sdp = parse(corpus!("trailing_blank_lines.sdp"));
    let p = RewritePlan {
        media: vec![Some(MediaRewrite {
            addr: RELAY,
            rtp_port: 44000,
            rtcp_port: Some(45000),
        })],
        ..RewritePlan::default()
    };
    let out = rewrite(&sdp, &p).expect("rewrites");
    assert!(text(&out).ends_with("a=ptime:20\r\na=rtcp:45000\r\n\r\n"));
}

#[test]
fn rejects_with_line_numbers() {
    let cases: &[(&[u8], SdpError)] = &[
        (
            corpus!("bad_no_version.sdp"),
            SdpError::MissingVersion { line: 1 },
        ),
        (
            corpus!("bad_port.sdp"),
            SdpError::BadMediaPort {
                line: 5,
                port: "4x00".into(),
            },
        ),
        (
            corpus!("bad_binary.sdp"),
            SdpError::InvalidBytes {
                line: 3,
                reason: "control character in line",
            },
        ),
        (b"", SdpError::Empty),
        (b"v=0\r\ns=-\r\n", SdpError::MissingOrigin),
        (
            b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nhello\r\n",
            SdpError::NotTypeValue { line: 3 },
        ),
        (
            b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n\r\ns=-\r\n",
            SdpError::NotTypeValue { line: 3 },
        ),
        (
            b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio +5 RTP/AVP 0\r\n",
            SdpError::BadMediaPort {
                line: 3,
                port: "+5".into(),
            },
        ),
        (
            b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 70000 RTP/AVP 0\r\n",
            SdpError::BadMediaPort {
                line: 3,
                port: "70000".into(),
            },
        ),
        (
            b"v=0\ro=- 1 1 IN IP4 1.2.3.4\r\n",
            SdpError::InvalidBytes {
                line: 1,
                reason: "carriage return that does not end the line",
            },
        ),
        (
            b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=\xff\r\n",
            SdpError::InvalidBytes {
                line: 3,
                reason: "line is not valid UTF-8",
            },
        ),
        (
            b"v=0\r\no=- 1 1 IN IP4\r\n",
            SdpError::Malformed {
                line: 2,
                reason: "o= line needs 6 fields, found 5".into(),
            },
        ),
        (
            b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:x\r\n",
            SdpError::Malformed {
                line: 4,
                reason: "a=rtcp: port `x` is not a number in 0..=65535".into(),
            },
        ),
    ];
    for (input, expected) in cases {
        let err = Sdp::parse(input).expect_err("rejected");
        assert_eq!(&err, expected, "{}", String::from_utf8_lossy(input));
        assert_eq!(err.kind(), SdpErrorKind::Malformed);
    }

    let err = Sdp::parse(corpus!("bad_connection_type.sdp")).expect_err("rejected");
    assert!(
        matches!(&err, SdpError::BadConnection { line: 4, reason } if reason.contains("IPX")),
        "{err}"
    );
    for bad in [
        "c=ATM NSAP 1.2.3.4",
        "c=IN IP4 ::1",
        "c=IN IP6 1.2.3.4",
        "c=IN IP4",
        "c=IN IP4 1.2.3.4/x",
    ] {
        let input = format!("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n{bad}\r\n");
        let err = Sdp::parse(input.as_bytes()).expect_err(bad);
        assert!(
            matches!(err, SdpError::BadConnection { line: 3, .. }),
            "{bad}: {err}"
        );
    }

    let big = vec![b'a'; MAX_SDP_LEN + 1];
    assert_eq!(
        Sdp::parse(&big),
        Err(SdpError::TooLarge {
            len: MAX_SDP_LEN + 1,
            limit: MAX_SDP_LEN
        })
    );
}

#[test]
fn invalid_plans() {
    let sdp = parse(corpus!("asterisk_offer.sdp"));
    let err = rewrite(&sdp, &plan(vec![])).expect_err("count");
    assert_eq!(err.kind(), SdpErrorKind::InvalidPlan);
    let err = rewrite(&sdp, &plan(vec![relay(0)])).expect_err("port 0");
    assert_eq!(err.kind(), SdpErrorKind::InvalidPlan);
    let err = rewrite(&sdp, &plan(vec![relay(65535)])).expect_err("no RTCP port");
    assert_eq!(err.kind(), SdpErrorKind::InvalidPlan);
}

#[test]
fn fqdn_and_attributes_without_values() {
    let input = b"v=0\r\no=- 1 1 IN IP4 host.example.com\r\ns=-\r\nc=IN IP4 media.example.com\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\na=rtcp-mux\r\na=foo:\r\na=bar\r\n";
    let sdp = parse(input);
    assert_eq!(
        sdp.session_connection().map(|c| &c.address),
        Some(&Address::Fqdn("media.example.com".into()))
    );
    let attrs = sdp.media()[0].attributes();
    assert_eq!(attrs[1].value.as_deref(), Some(""));
    assert_eq!(attrs[2].value, None);
    let out = rewrite(&sdp, &plan(vec![relay(46000)])).expect("rewrites");
    assert_eq!(
        out.session_connection().and_then(Connection::ip),
        Some(IpAddr::V4(RELAY))
    );
}

#[test]
fn explicit_session_connection_and_session_version_unchanged() {
    let sdp = parse(corpus!("asterisk_offer.sdp"));
    let mut p = plan(vec![relay(47000)]);
    p.session_connection = Some(Ipv4Addr::new(203, 0, 113, 9));
    p.origin = Some(RELAY);
    let out = rewrite(&sdp, &p).expect("rewrites");
    assert_eq!(
        out.session_connection(),
        Some(&Connection::ipv4(Ipv4Addr::new(203, 0, 113, 9)))
    );
    assert_eq!(
        out.media()[0].connection(),
        Some(&Connection::ipv4(RELAY)),
        "media c= inserted"
    );
    assert_eq!(out.origin().session_version, sdp.origin().session_version);
    assert_eq!(out.origin().address, "203.0.113.1");
    assert_eq!(rewrite(&out, &p).expect("again"), out);
}

#[test]
fn webrtc_zero_address_with_ice_is_not_a_hold() {
    let sdp = parse(corpus!("webrtc_dtls_offer.sdp"));
    let audio = &sdp.media()[0];
    assert_eq!(audio.proto(), &Proto::UdpTlsRtpSavpf);
    assert!(audio.is_hold_address() && audio.rtcp_mux() && sdp.has_ice());
    let mut p = plan(vec![relay(48000)]);
    p.ice = IceAction::Remove;
    let out = rewrite(&sdp, &p).expect("rewrites");
    let s = text(&out);
    assert!(s.contains("m=audio 48000 UDP/TLS/RTP/SAVPF 111 0\r\nc=IN IP4 203.0.113.1\r\n"));
    assert!(
        s.contains("a=rtcp:48000 IN IP4 203.0.113.1\r\n"),
        "mux: RTCP on the RTP port"
    );
    assert!(!out.has_ice());
    assert_eq!(rewrite(&out, &p).expect("again"), out);
}

#[test]
fn mixed_line_endings_and_ipv6_session() {
    let bytes = corpus!("mixed_endings_ipv6_session.sdp");
    let sdp = parse(bytes);
    assert!(sdp.session_connection().is_some_and(Connection::is_ipv6));
    assert_eq!(sdp.media()[1].direction(), Direction::Inactive);
    // The first media has its own IPv4 c=: it can be relayed; the second relies on IPv6.
    let out = rewrite(&sdp, &plan(vec![relay(49000), None])).expect("rewrites");
    assert_eq!(changed_lines(&sdp, &out).len(), 3);
    assert_eq!(out.session_connection(), sdp.session_connection());
    let err = rewrite(&sdp, &plan(vec![None, relay(49002)])).expect_err("IPv6");
    assert_eq!(err, SdpError::Ipv6NotRelayed { media: 1, line: 4 });
}
