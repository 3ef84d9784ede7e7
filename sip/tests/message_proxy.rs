//! Unit tests for the proxy helpers and stream framing in `sluice_sip::message`.

use std::net::SocketAddr;

use rsip::headers::UntypedHeader;
use rsip::Header;
use sluice_sip::message::proxy::*;
use sluice_sip::message::{frame_stream, parse, Frame, FrameError, Limits, Request, SipMessage};

const SECRET: &[u8] = b"0123456789abcdef";

fn req(text: &str) -> Request {
    match parse(
        text.replace("\r\n", "\n").replace('\n', "\r\n").as_bytes(),
        &Limits::UDP,
    )
    .unwrap()
    {
        SipMessage::Request(r) => r,
        SipMessage::Response(_) => panic!("request expected"),
    }
}

fn invite(extra: &str) -> Request {
    req(&format!(
        "INVITE sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKabc;rport
Max-Forwards: 70
To: <sip:bob@example.com>
From: <sip:alice@example.net>;tag=ft
Call-ID: cid@10.0.0.1
CSeq: 1 INVITE
{extra}Content-Length: 0

"
    ))
}

fn values(r: &Request, pick: fn(&Header) -> Option<&str>) -> Vec<String> {
    r.headers
        .iter()
        .filter_map(pick)
        .map(str::to_owned)
        .collect()
}

fn vias(r: &Request) -> Vec<String> {
    values(r, |h| match h {
        Header::Via(v) => Some(v.value()),
        _ => None,
    })
}

fn routes(r: &Request) -> Vec<String> {
    values(r, |h| match h {
        Header::Route(v) => Some(v.value()),
        _ => None,
    })
}

fn record_routes(r: &Request) -> Vec<String> {
    values(r, |h| match h {
        Header::RecordRoute(v) => Some(v.value()),
        _ => None,
    })
}

fn us() -> LocalAddr {
    LocalAddr::new("UDP", "203.0.113.5", 5060)
}

#[test]
fn top_via_and_branch() {
    let r = invite("");
    let v = top_via(&r.headers).unwrap();
    assert_eq!(v.host, "10.0.0.1");
    assert_eq!(v.port, Some(5062));
    assert_eq!(top_via_branch(&r.headers).as_deref(), Some("z9hG4bKabc"));
}

#[test]
fn received_and_rport_from_the_packet_source() {
    let mut r = invite("");
    let src: SocketAddr = "198.51.100.7:40000".parse().unwrap();
    assert!(apply_received_rport(&mut r.headers, src).unwrap());
    assert_eq!(
        vias(&r)[0],
        "SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKabc;rport=40000;received=198.51.100.7"
    );
    assert_eq!(response_target(&r.headers), Some(src));

    // Same host, no rport: untouched.
    let mut plain = req(&invite("")
        .to_bytes()
        .iter()
        .map(|&b| b as char)
        .collect::<String>()
        .replace(";rport", ""));
    let same: SocketAddr = "10.0.0.1:5062".parse().unwrap();
    assert!(!apply_received_rport(&mut plain.headers, same).unwrap());
    // Different host, no rport: received only.
    let other: SocketAddr = "10.9.9.9:5062".parse().unwrap();
    assert!(apply_received_rport(&mut plain.headers, other).unwrap());
    assert!(vias(&plain)[0].ends_with(";branch=z9hG4bKabc;received=10.9.9.9"));
    assert_eq!(
        response_target(&plain.headers),
        Some("10.9.9.9:5062".parse().unwrap())
    );
}

#[test]
fn branch_is_deterministic_and_keyed() {
    let r = invite("");
    let b = compute_branch(&r, SECRET);
    assert!(b.starts_with(MAGIC_COOKIE));
    assert_eq!(
        b,
        compute_branch(&invite(""), SECRET),
        "retransmission maps to the same branch"
    );
    assert_ne!(b, compute_branch(&r, b"another secret"));
    let other = req(&String::from_utf8(r.to_bytes())
        .unwrap()
        .replace("z9hG4bKabc", "z9hG4bKdef"));
    assert_ne!(b, compute_branch(&other, SECRET));
    // CANCEL for the INVITE gets the INVITE's branch.
    let cancel = req(&String::from_utf8(r.to_bytes())
        .unwrap()
        .replace("INVITE", "CANCEL"));
    assert_eq!(b, compute_branch(&cancel, SECRET));
    // RFC 2543 top Via (no cookie): hashed over the request fields, still deterministic.
    let old = req(&String::from_utf8(r.to_bytes())
        .unwrap()
        .replace("z9hG4bKabc", "1234"));
    assert_eq!(compute_branch(&old, SECRET), compute_branch(&old, SECRET));
    assert_ne!(compute_branch(&old, SECRET), b);
}

#[test]
fn push_and_pop_our_via() {
    let mut r = invite("");
    let b = compute_branch(&r, SECRET);
    push_via(&mut r.headers, &us(), &b);
    assert_eq!(
        vias(&r)[0],
        format!("SIP/2.0/UDP 203.0.113.5:5060;branch={b};rport")
    );
    assert_eq!(vias(&r).len(), 2);
    // The forwarded request still parses.
    assert!(parse(&r.to_bytes(), &Limits::UDP).is_ok());

    let mut resp = build_response(&r, 180, "Ringing", Some("tt"));
    assert_eq!(pop_own_via(&mut resp.headers, &[us()]), Ok(1));
    assert_eq!(
        pop_own_via(&mut resp.headers, &[us()]),
        Err(ProxyError::NotOurVia)
    );

    let v6 = LocalAddr::new("tcp", "2001:db8::5", 5070);
    let mut r6 = invite("");
    push_via(&mut r6.headers, &v6, "z9hG4bKx");
    assert_eq!(
        vias(&r6)[0],
        "SIP/2.0/TCP [2001:db8::5]:5070;branch=z9hG4bKx;rport"
    );
    let mut resp6 = build_response(&r6, 200, "OK", None);
    assert_eq!(pop_own_via(&mut resp6.headers, &[v6]), Ok(1));
}

#[test]
fn max_forwards_decrement_and_483() {
    let mut r = invite("");
    assert_eq!(decrement_max_forwards(&mut r.headers), Ok(69));
    assert!(String::from_utf8(r.to_bytes())
        .unwrap()
        .contains("Max-Forwards: 69\r\n"));
    let mut one = req(&String::from_utf8(r.to_bytes())
        .unwrap()
        .replace("Max-Forwards: 69", "Max-Forwards: 001"));
    assert!(!too_many_hops(&one.headers));
    assert_eq!(decrement_max_forwards(&mut one.headers), Ok(0));
    assert!(too_many_hops(&one.headers));
    assert_eq!(
        decrement_max_forwards(&mut one.headers),
        Err(ProxyError::TooManyHops)
    );
    let resp = build_response(&one, 483, "Too Many Hops", None);
    assert_eq!(resp.status, 483);
    // Missing Max-Forwards: one is added with 70.
    let mut none = req(&String::from_utf8(r.to_bytes())
        .unwrap()
        .replace("Max-Forwards: 69\r\n", ""));
    assert_eq!(
        decrement_max_forwards(&mut none.headers),
        Ok(DEFAULT_MAX_FORWARDS)
    );
    assert!(String::from_utf8(none.to_bytes())
        .unwrap()
        .contains("Max-Forwards: 70\r\n"));
}

#[test]
fn loop_versus_spiral() {
    let received = invite("");
    let branch = compute_branch(&received, SECRET);
    let mut forwarded = received.clone();
    push_via(&mut forwarded.headers, &us(), &branch);
    // The same request comes back to us: a loop.
    assert!(is_loop(&forwarded, &[us()], SECRET));
    // It comes back with another Request-URI (retargeted): a spiral.
    let mut spiral = forwarded.clone();
    spiral.uri = "sip:bob@192.0.2.99".to_owned();
    assert!(!is_loop(&spiral, &[us()], SECRET));
    // Our branch through someone else's sent-by: not ours.
    assert!(!is_loop(
        &forwarded,
        &[LocalAddr::new("UDP", "192.0.2.1", 5060)],
        SECRET
    ));
    assert!(!is_loop(&received, &[us()], SECRET));
}

#[test]
fn record_route_single_and_double() {
    let mut r = invite("Record-Route: <sip:upstream.example.com;lr>\n");
    record_route(&mut r.headers, &us(), &us());
    assert_eq!(
        record_routes(&r),
        ["<sip:203.0.113.5:5060;lr>", "<sip:upstream.example.com;lr>"]
    );
    let mut r2 = invite("");
    let outside = LocalAddr::new("TCP", "198.51.100.1", 5060);
    record_route(&mut r2.headers, &us(), &outside);
    assert_eq!(
        record_routes(&r2),
        [
            "<sip:198.51.100.1:5060;transport=tcp;lr>",
            "<sip:203.0.113.5:5060;lr>"
        ]
    );
    assert!(parse(&r2.to_bytes(), &Limits::UDP).is_ok());
}

#[test]
fn route_preprocessing_loose_and_double() {
    let outside = LocalAddr::new("TCP", "198.51.100.1", 5060);
    let mut r = req(&String::from_utf8(invite("Route: <sip:203.0.113.5;lr>, <sip:198.51.100.1:5060;transport=tcp;lr>, <sip:next.example.com;lr>\n").to_bytes()).unwrap().replace("To: <sip:bob@example.com>", "To: <sip:bob@example.com>;tag=tt"));
    assert!(is_in_dialog(&r.headers));
    let out = preprocess_route(&mut r, &[us(), outside]).unwrap();
    assert_eq!(
        out,
        RoutePreprocess {
            strict_route_fixed: false,
            removed: 2
        }
    );
    assert_eq!(routes(&r), ["<sip:next.example.com;lr>"]);
    assert_eq!(r.uri, "sip:bob@example.com");
    // Not ours on top: nothing removed.
    assert_eq!(preprocess_route(&mut r, &[us()]).unwrap().removed, 0);
}

#[test]
fn route_preprocessing_strict_router() {
    // A strict router put our Record-Route URI in the Request-URI and the remote target last.
    let text = String::from_utf8(
        invite("Route: <sip:next.example.com>, <sip:bob@192.0.2.44:5070>\n").to_bytes(),
    )
    .unwrap();
    let mut r = req(&text.replace("INVITE sip:bob@example.com", "INVITE sip:203.0.113.5;lr"));
    let out = preprocess_route(&mut r, &[us()]).unwrap();
    assert!(out.strict_route_fixed);
    assert_eq!(r.uri, "sip:bob@192.0.2.44:5070");
    assert_eq!(routes(&r), ["<sip:next.example.com>"]);
}

#[test]
fn response_building_and_dialog_state() {
    let r = invite("");
    assert!(!is_in_dialog(&r.headers));
    let resp = build_response(&r, 200, "OK", Some("srv1"));
    let text = String::from_utf8(resp.to_bytes()).unwrap();
    assert_eq!(
        text,
        "SIP/2.0 200 OK\r\n\
         Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKabc;rport\r\n\
         From: <sip:alice@example.net>;tag=ft\r\n\
         To: <sip:bob@example.com>;tag=srv1\r\n\
         Call-ID: cid@10.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         Content-Length: 0\r\n\r\n"
    );
    assert!(is_in_dialog(&resp.headers));
    // 100 Trying never gets a to-tag; an existing tag is kept.
    assert!(!is_in_dialog(
        &build_response(&r, 100, "Trying", Some("x")).headers
    ));
    let in_dialog = build_response(
        &req(&text
            .replace("SIP/2.0 200 OK", "BYE sip:a@b SIP/2.0")
            .replace("1 INVITE", "1 BYE")),
        200,
        "OK",
        Some("other"),
    );
    assert!(String::from_utf8(in_dialog.to_bytes())
        .unwrap()
        .contains(";tag=srv1\r\n"));
    assert!(parse(&resp.to_bytes(), &Limits::UDP).is_ok());
}

#[test]
fn stream_framing() {
    let msg = invite("").to_bytes();
    let with_body = {
        let t = String::from_utf8(msg.clone())
            .unwrap()
            .replace("Content-Length: 0", "l: 3");
        let mut b = t.into_bytes();
        b.extend_from_slice(b"abc");
        b
    };
    let mut stream = b"\r\n\r\n\r\n".to_vec();
    stream.extend_from_slice(&msg);
    stream.extend_from_slice(&with_body);
    let l = Limits::STREAM;
    assert_eq!(
        frame_stream(&stream, &l),
        Ok(Some(Frame::KeepAlive { len: 4, pong: true }))
    );
    assert_eq!(
        frame_stream(&stream[4..], &l),
        Ok(Some(Frame::KeepAlive {
            len: 2,
            pong: false
        }))
    );
    assert_eq!(
        frame_stream(&stream[6..], &l),
        Ok(Some(Frame::Message { len: msg.len() }))
    );
    let rest = &stream[6 + msg.len()..];
    assert_eq!(
        frame_stream(rest, &l),
        Ok(Some(Frame::Message {
            len: with_body.len()
        }))
    );
    // Partial input asks for more.
    for cut in [0, 1, 10, with_body.len() - 1] {
        assert_eq!(frame_stream(&rest[..cut], &l), Ok(None), "cut {cut}");
    }
    assert_eq!(frame_stream(b"\r\n", &l), Ok(None));
    assert_eq!(frame_stream(b"\r\n\r", &l), Ok(None));
    // Errors close the connection.
    let no_cl = String::from_utf8(msg.clone())
        .unwrap()
        .replace("Content-Length: 0\r\n", "");
    assert_eq!(
        frame_stream(no_cl.as_bytes(), &l),
        Err(FrameError::MissingContentLength)
    );
    let two = String::from_utf8(msg.clone())
        .unwrap()
        .replace("Content-Length: 0\r\n", "Content-Length: 0\r\nl: 0\r\n");
    assert_eq!(
        frame_stream(two.as_bytes(), &l),
        Err(FrameError::DuplicateContentLength)
    );
    let neg = String::from_utf8(msg.clone())
        .unwrap()
        .replace("Content-Length: 0", "Content-Length: -1");
    assert_eq!(
        frame_stream(neg.as_bytes(), &l),
        Err(FrameError::BadContentLength)
    );
    assert_eq!(frame_stream(&[0x16, 3, 1, 0], &l), Err(FrameError::Garbage));
    let big = String::from_utf8(msg)
        .unwrap()
        .replace("Content-Length: 0", "Content-Length: 9999999");
    assert_eq!(
        frame_stream(big.as_bytes(), &l),
        Err(FrameError::TooLarge {
            limit: l.max_message_len
        })
    );
    assert_eq!(
        frame_stream(&vec![b'A'; l.max_message_len + 1], &l),
        Err(FrameError::TooLarge {
            limit: l.max_message_len
        })
    );
}
