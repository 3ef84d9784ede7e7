//! Property tests: generated SDPs round-trip byte for byte, and the rewrite keeps everything but
//! the addresses and ports it is asked to change.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use sluice_sip::sdp::{
    rewrite, Connection, HoldAddress, IceAction, MediaRewrite, RewritePlan, Sdp, ICE_ATTRIBUTES,
};

fn ip() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        1 => Just(Ipv4Addr::UNSPECIFIED),
        6 => (1u8..=223, any::<u8>(), any::<u8>(), 1u8..=254)
            .prop_map(|(a, b, c, d)| Ipv4Addr::new(a, b, c, d)),
    ]
}

fn trailing() -> impl Strategy<Value = &'static str> {
    prop_oneof![8 => Just(""), 1 => Just(" "), 1 => Just("\t ")]
}

fn media_attr() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u8..128).prop_map(|pt| format!("a=rtpmap:{pt} PCMU/8000")),
        (0u8..128).prop_map(|pt| format!("a=fmtp:{pt} 0-15")),
        Just("a=ptime:20".to_owned()),
        Just("a=sendrecv".to_owned()),
        Just("a=sendonly".to_owned()),
        Just("a=recvonly".to_owned()),
        Just("a=inactive".to_owned()),
        Just("a=rtcp-mux".to_owned()),
        (1024u16..65000).prop_map(|p| format!("a=rtcp:{p}")),
        (1024u16..65000, ip()).prop_map(|(p, a)| format!("a=rtcp:{p} IN IP4 {a}")),
        (ip(), 1024u16..65000)
            .prop_map(|(a, p)| format!("a=candidate:1 1 UDP 2130706431 {a} {p} typ host")),
        Just("a=ice-ufrag:F7gI".to_owned()),
        Just("a=ice-pwd:x9cml/YzichV2+XlhiMu8g".to_owned()),
        Just("a=end-of-candidates".to_owned()),
        Just("a=remote-candidates:1 192.0.2.3 45664".to_owned()),
        Just("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32".to_owned()),
        Just("a=label:main".to_owned()),
        Just("a=x-unknown".to_owned()),
        Just("b=AS:64".to_owned()),
        Just("i=media title".to_owned()),
        Just("k=prompt".to_owned()),
    ]
}

fn session_attr() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a=ice-ufrag:8hhY".to_owned()),
        Just("a=ice-pwd:asd88fgpdd777uzjYhagZg".to_owned()),
        Just("a=ice-options:trickle".to_owned()),
        Just("a=ice-lite".to_owned()),
        Just("a=sendonly".to_owned()),
        Just("a=recvonly".to_owned()),
        Just("a=group:BUNDLE 0 1".to_owned()),
        Just("a=tool:gen".to_owned()),
    ]
}

#[derive(Debug, Clone)]
struct MediaModel {
    kind: u8,
    port: u16,
    count: Option<u16>,
    proto: &'static str,
    formats: Vec<u8>,
    connection: Option<Ipv4Addr>,
    lines: Vec<String>,
}

fn media() -> impl Strategy<Value = MediaModel> {
    (
        0u8..3,
        prop_oneof![1 => Just(0u16), 6 => 1024u16..65000],
        proptest::option::weighted(0.1, 2u16..4),
        prop_oneof![
            Just("RTP/AVP"),
            Just("RTP/SAVP"),
            Just("RTP/AVPF"),
            Just("RTP/SAVPF")
        ],
        proptest::collection::vec(0u8..128, 1..5),
        proptest::option::weighted(0.4, ip()),
        proptest::collection::vec(media_attr(), 0..8),
    )
        .prop_map(
            |(kind, port, count, proto, formats, connection, lines)| MediaModel {
                kind,
                port,
                count,
                proto: if kind == 2 { "udptl" } else { proto },
                formats,
                connection,
                lines,
            },
        )
}

#[derive(Debug, Clone)]
struct SdpModel {
    eol: &'static str,
    final_eol: bool,
    origin: Ipv4Addr,
    session_connection: Option<Ipv4Addr>,
    session_lines: Vec<String>,
    media: Vec<MediaModel>,
    trailing: Vec<&'static str>,
}

fn sdp_model() -> impl Strategy<Value = SdpModel> {
    (
        prop_oneof![Just("\r\n"), Just("\n")],
        proptest::bool::weighted(0.8),
        ip(),
        proptest::option::weighted(0.7, ip()),
        proptest::collection::vec(session_attr(), 0..4),
        proptest::collection::vec(media(), 1..5),
        proptest::collection::vec(trailing(), 64),
    )
        .prop_map(
            |(eol, final_eol, origin, session_connection, session_lines, media, trailing)| {
                SdpModel {
                    eol,
                    final_eol,
                    origin,
                    session_connection,
                    session_lines,
                    media,
                    trailing,
                }
            },
        )
}

fn print(model: &SdpModel) -> Vec<u8> {
    let mut lines = vec![
        "v=0".to_owned(),
        format!("o=- 4858 1 IN IP4 {}", model.origin),
        "s=-".to_owned(),
    ];
    if let Some(c) = model.session_connection {
        lines.push(format!("c=IN IP4 {c}"));
    }
    lines.push("t=0 0".to_owned());
    lines.extend(model.session_lines.iter().cloned());
    for m in &model.media {
        let kind = ["audio", "video", "image"][usize::from(m.kind)];
        let port = match m.count {
            Some(n) => format!("{}/{n}", m.port),
            None => m.port.to_string(),
        };
        let formats = if m.kind == 2 {
            "t38".to_owned()
        } else {
            m.formats
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        };
        lines.push(format!("m={kind} {port} {} {formats}", m.proto));
        if let Some(c) = m.connection {
            lines.push(format!("c=IN IP4 {c}"));
        }
        lines.extend(m.lines.iter().cloned());
    }
    let mut out = String::new();
    let n = lines.len();
    for (i, line) in lines.iter().enumerate() {
        out.push_str(line);
        if i > 0 {
            out.push_str(model.trailing[i % model.trailing.len()]);
        }
        if i + 1 < n || model.final_eol {
            out.push_str(model.eol);
        }
    }
    out.into_bytes()
}

fn plan_for(media_count: usize) -> impl Strategy<Value = RewritePlan> {
    let rewrite = prop_oneof![
        1 => Just(None),
        4 => (
            prop_oneof![Just(Ipv4Addr::new(203, 0, 113, 1)), Just(Ipv4Addr::new(203, 0, 113, 2))],
            (1u16..32000).prop_map(|p| p * 2),
            proptest::option::weighted(0.4, 1u16..65535),
        )
            .prop_map(|(addr, rtp_port, rtcp_port)| Some(MediaRewrite {
                addr,
                rtp_port,
                rtcp_port
            })),
    ];
    (
        proptest::collection::vec(rewrite, media_count),
        proptest::option::of(Just(Ipv4Addr::new(203, 0, 113, 7))),
        proptest::option::weighted(0.2, Just(Ipv4Addr::new(203, 0, 113, 1))),
        prop_oneof![Just(IceAction::Keep), Just(IceAction::Remove)],
        prop_oneof![Just(HoldAddress::Keep), Just(HoldAddress::Replace)],
    )
        .prop_map(
            |(media, origin, session_connection, ice, hold)| RewritePlan {
                media,
                origin,
                session_connection,
                ice,
                hold,
            },
        )
}

fn sdp_and_plan() -> impl Strategy<Value = (Vec<u8>, RewritePlan)> {
    sdp_model().prop_flat_map(|model| {
        let n = model.media.len();
        (Just(print(&model)), plan_for(n))
    })
}

fn is_ice(line: &str) -> bool {
    line.strip_prefix("a=").is_some_and(|v| {
        let name = v.split(':').next().unwrap_or("").trim();
        ICE_ATTRIBUTES.contains(&name)
    })
}

/// Lines a rewrite may touch: o=, c=, m=, a=rtcp: (and ICE when removing).
fn is_address_line(line: &str) -> bool {
    line.starts_with("o=")
        || line.starts_with("c=")
        || line.starts_with("m=")
        || line.starts_with("a=rtcp:")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn print_parse_roundtrip(model in sdp_model()) {
        let bytes = print(&model);
        let sdp = Sdp::parse(&bytes).expect("generated SDP parses");
        prop_assert_eq!(sdp.to_bytes(), bytes);
        prop_assert_eq!(sdp.media().len(), model.media.len());
        for (m, mm) in sdp.media().iter().zip(&model.media) {
            prop_assert_eq!(m.port(), mm.port);
            prop_assert_eq!(m.port_count(), mm.count);
            prop_assert_eq!(m.proto().as_str(), mm.proto);
            let own = mm.connection.or(model.session_connection);
            prop_assert_eq!(
                m.effective_connection().and_then(Connection::ip),
                own.map(IpAddr::V4)
            );
        }
    }

    #[test]
    fn rewrite_keeps_everything_else((bytes, plan) in sdp_and_plan()) {
        let sdp = Sdp::parse(&bytes).expect("generated SDP parses");
        let out = rewrite(&sdp, &plan).expect("IPv4 rewrite succeeds");
        let printed = out.to_bytes();
        let reparsed = Sdp::parse(&printed).expect("rewritten SDP parses");
        prop_assert_eq!(&reparsed, &out);

        // Idempotent.
        let again = rewrite(&out, &plan).expect("second rewrite");
        prop_assert_eq!(&again, &out);

        // Same media, in order, with the same types, protos and formats.
        prop_assert_eq!(out.media().len(), sdp.media().len());
        for (i, (before, after)) in sdp.media().iter().zip(out.media()).enumerate() {
            prop_assert_eq!(before.kind(), after.kind());
            prop_assert_eq!(before.proto(), after.proto());
            prop_assert_eq!(before.formats(), after.formats());
            prop_assert_eq!(before.port_count(), after.port_count());
            prop_assert_eq!(before.direction(), after.direction());
            prop_assert_eq!(before.rtcp_mux(), after.rtcp_mux());
            prop_assert_eq!(before.has_crypto(), after.has_crypto());
            let non_address = |m: &sluice_sip::sdp::MediaSection| -> Vec<_> {
                m.attributes()
                    .iter()
                    .filter(|a| a.name != "rtcp" && !ICE_ATTRIBUTES.contains(&a.name.as_str()))
                    .cloned()
                    .collect()
            };
            prop_assert_eq!(non_address(before), non_address(after));
            if plan.ice == IceAction::Remove {
                prop_assert!(!after.ice().any());
            } else {
                prop_assert_eq!(before.ice(), after.ice());
            }
            match plan.media[i] {
                Some(rw) if before.port() != 0 => {
                    prop_assert_eq!(after.port(), rw.rtp_port);
                    let held = plan.hold == HoldAddress::Keep && !sdp.has_ice() && before.is_hold_address();
                    let want = if held { Ipv4Addr::UNSPECIFIED } else { rw.addr };
                    prop_assert_eq!(
                        after.effective_connection().and_then(Connection::ip),
                        Some(IpAddr::V4(want))
                    );
                    if let Some(rtcp) = after.rtcp() {
                        let want_port = rw.rtcp_port.unwrap_or(if before.rtcp_mux() {
                            rw.rtp_port
                        } else {
                            rw.rtp_port + 1
                        });
                        prop_assert_eq!(rtcp.port, want_port);
                        if let Some(c) = &rtcp.connection {
                            prop_assert!(c.is_hold() || c.ip() == Some(IpAddr::V4(rw.addr)));
                        }
                    } else if let Some(p) = rw.rtcp_port {
                        prop_assert_eq!(p, rw.rtp_port + 1);
                    }
                }
                _ => {
                    prop_assert_eq!(after.port(), before.port());
                    prop_assert_eq!(after.rtcp(), before.rtcp());
                    if before.port() != 0 {
                        prop_assert_eq!(after.effective_connection(), before.effective_connection());
                    }
                }
            }
        }
        if plan.ice == IceAction::Remove {
            prop_assert!(!out.has_ice());
        }
        prop_assert_eq!(&out.origin().session_version, &sdp.origin().session_version);

        // Only the intended lines differ: dropping o=/c=/m=/a=rtcp: (and ICE when removed) from
        // both sides leaves the same lines in the same order.
        let removed = |l: &str| is_address_line(l) || (plan.ice == IceAction::Remove && is_ice(l));
        let keep = |l: &&str| !removed(l);
        let before: Vec<&str> = sdp.lines().filter(keep).collect();
        let after: Vec<&str> = out.lines().filter(keep).collect();
        prop_assert_eq!(before, after);
        // And the line endings are the input's.
        let lf_only = !bytes.windows(2).any(|w| w == b"\r\n");
        if lf_only {
            prop_assert!(!printed.contains(&b'\r'));
        }
    }
}
