//! The checks every fuzz input and every corpus file goes through. Shared by
//! `sip/fuzz/fuzz_targets/sdp_parse.rs` (via `#[path]`) and `sip/tests/fuzz_corpus.rs`.

use std::net::Ipv4Addr;

use sluice_sip::sdp::{
    rewrite, HoldAddress, IceAction, MediaRewrite, RewritePlan, Sdp, SdpError, MAX_SDP_LEN,
};

/// Two fixed plans: everything to one relay address (ICE removed, origin and hold replaced), and
/// one address per media with explicit RTCP ports (ICE and hold kept).
pub fn fixed_plans(sdp: &Sdp) -> [RewritePlan; 2] {
    let n = sdp.media().len();
    let shared = RewritePlan {
        media: (0..n)
            .map(|i| {
                Some(MediaRewrite {
                    addr: Ipv4Addr::new(203, 0, 113, 1),
                    rtp_port: 40000 + 2 * (i as u16 % 1000),
                    rtcp_port: None,
                })
            })
            .collect(),
        origin: Some(Ipv4Addr::new(203, 0, 113, 1)),
        session_connection: None,
        ice: IceAction::Remove,
        hold: HoldAddress::Replace,
    };
    let split = RewritePlan {
        media: (0..n)
            .map(|i| {
                (i % 3 != 2).then(|| MediaRewrite {
                    addr: Ipv4Addr::new(198, 51, 100, 1 + (i % 200) as u8),
                    rtp_port: 50000 + 2 * (i as u16 % 1000),
                    rtcp_port: Some(60000 + (i as u16 % 1000)),
                })
            })
            .collect(),
        origin: None,
        session_connection: None,
        ice: IceAction::Keep,
        hold: HoldAddress::Keep,
    };
    [shared, split]
}

/// Parse; if accepted, printing gives the input back, and rewriting with the fixed plans either
/// fails only for IPv6 or gives an SDP that parses and that a second rewrite leaves unchanged.
pub fn check(data: &[u8]) {
    let Ok(sdp) = Sdp::parse(data) else {
        return;
    };
    assert_eq!(sdp.to_bytes(), data, "print(parse(x)) != x");
    for plan in fixed_plans(&sdp) {
        match rewrite(&sdp, &plan) {
            Ok(out) => {
                let bytes = out.to_bytes();
                if bytes.len() <= MAX_SDP_LEN {
                    let reparsed = Sdp::parse(&bytes).expect("rewritten SDP must parse");
                    assert_eq!(reparsed, out, "rewritten SDP reparses differently");
                }
                assert_eq!(out.media().len(), sdp.media().len());
                let again = rewrite(&out, &plan).expect("second rewrite must succeed");
                assert_eq!(again, out, "rewrite is not idempotent");
            }
            Err(e @ SdpError::Ipv6NotRelayed { .. }) => {
                assert!(sdp
                    .media()
                    .iter()
                    .any(|m| m.effective_connection().is_some_and(|c| c.is_ipv6())));
                let _ = e.to_string();
            }
            Err(e) => panic!("unexpected rewrite error: {e}"),
        }
    }
}
