//! The ng control protocol codec and server: real Kamailio-style messages, error replies,
//! warnings, retransmissions and a loopback `ping`. Only 127.0.0.1 ephemeral ports are used.

// The binary crate has no library target, so the module is compiled into this test.
#[allow(dead_code, unused_imports)]
#[path = "../src/ng/mod.rs"]
mod ng;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ng::bencode::{decode, encode, Value};
use ng::protocol::{
    parse_datagram, AddressFamily, CallStats, CallTotals, Command, Format, IceMode, MediaStats,
    PacketStats, Reply, Request, StreamStats, TagStats, TransportProtocol,
};
use ng::server::{NgServer, ServerConfig};

const SDP: &str = "v=0\r\no=- 1545997027 1 IN IP4 198.51.100.1\r\ns=tester\r\nt=0 0\r\n\
m=audio 2000 RTP/AVP 0\r\nc=IN IP4 198.51.100.1\r\na=sendrecv\r\n";

fn bstr(s: &str) -> String {
    format!("{}:{}", s.len(), s)
}

/// An `offer` as Kamailio's rtpengine module bencodes it for
/// `rtpengine_offer("replace-origin replace-session-connection ICE=remove trust-address
/// direction=priv direction=pub RTP/AVP rtcp-mux-demux SDES-off label=caller")`.
fn kamailio_offer(cookie: &str) -> Vec<u8> {
    let mut s = format!("{cookie} d");
    s += &format!("{}{}", bstr("sdp"), bstr(SDP));
    s += &format!("{}l{}e", bstr("flags"), bstr("trust-address"));
    s += &format!(
        "{}l{}{}e",
        bstr("replace"),
        bstr("origin"),
        bstr("session-connection")
    );
    s += &format!("{}{}", bstr("ICE"), bstr("remove"));
    s += &format!("{}l{}{}e", bstr("direction"), bstr("priv"), bstr("pub"));
    s += &format!("{}{}", bstr("transport-protocol"), bstr("RTP/AVP"));
    s += &format!("{}l{}e", bstr("rtcp-mux"), bstr("demux"));
    s += &format!("{}l{}e", bstr("SDES"), bstr("off"));
    s += &format!("{}{}", bstr("label"), bstr("caller"));
    s += &format!(
        "{}l{}{}e",
        bstr("received-from"),
        bstr("IP4"),
        bstr("192.0.2.10")
    );
    s += &format!("{}l{}e", bstr("supports"), bstr("load limit"));
    s += &format!(
        "{}{}",
        bstr("call-id"),
        bstr("a84b4c76e66710@pc33.example.com")
    );
    s += &format!("{}{}", bstr("via-branch"), bstr("z9hG4bK776asdhds"));
    s += &format!("{}{}", bstr("from-tag"), bstr("1928301774"));
    s += &format!("{}{}", bstr("command"), bstr("offer"));
    s += "e";
    s.into_bytes()
}

fn parse_ok(d: &[u8]) -> Request {
    parse_datagram(d)
        .expect("has a cookie")
        .unwrap_or_else(|e| panic!("error reply: {}", e.reason))
}

fn reply_dict(datagram: &[u8], cookie: &str) -> Value {
    let prefix = format!("{cookie} ");
    assert!(
        datagram.starts_with(prefix.as_bytes()),
        "reply {:?} lacks cookie {cookie}",
        String::from_utf8_lossy(datagram)
    );
    let body = &datagram[prefix.len()..];
    let (v, used) = decode(body).expect("reply decodes");
    assert_eq!(used, body.len());
    v
}

fn assert_error_reply(datagram: &[u8], reason_part: &str) {
    let r = parse_datagram(datagram)
        .expect("has a cookie")
        .expect_err("must be an error");
    let bytes = r.reply();
    if r.format == Format::Json {
        let body = &bytes[r.cookie.len() + 1..];
        let j: serde_json::Value = serde_json::from_slice(body).expect("JSON error reply");
        assert_eq!(j["result"], "error");
        assert!(j["error-reason"].as_str().unwrap().contains(reason_part));
        return;
    }
    let v = reply_dict(&bytes, &r.cookie);
    let d = v.as_dict().unwrap();
    assert_eq!(
        d.len(),
        2,
        "error replies carry result and error-reason only: {v}"
    );
    assert_eq!(v.get("result").and_then(Value::as_str), Some("error"));
    let reason = v.get("error-reason").and_then(Value::as_str).unwrap();
    assert!(
        reason.contains(reason_part),
        "{reason:?} does not mention {reason_part:?}"
    );
}

#[test]
fn kamailio_offer_is_typed() {
    let req = parse_ok(&kamailio_offer("5323_1"));
    assert_eq!(req.cookie, "5323_1");
    assert_eq!(req.command, Command::Offer);
    assert_eq!(
        req.call_id.as_deref(),
        Some("a84b4c76e66710@pc33.example.com")
    );
    assert_eq!(req.from_tag.as_deref(), Some("1928301774"));
    assert_eq!(req.to_tag, None);
    assert_eq!(req.via_branch.as_deref(), Some("z9hG4bK776asdhds"));
    assert_eq!(req.sdp.as_deref(), Some(SDP.as_bytes()));
    assert_eq!(req.format, Format::Bencode);
    let f = &req.flags;
    assert!(f.trust_address);
    assert!(f.replace.origin && f.replace.session_connection);
    assert_eq!(f.ice, Some(IceMode::Remove));
    assert_eq!(f.direction, ["priv", "pub"]);
    assert_eq!(f.transport_protocol, Some(TransportProtocol::RtpAvp));
    assert!(f.rtcp_mux.demux);
    assert_eq!(f.sdes, ["off"]);
    assert_eq!(f.label.as_deref(), Some("caller"));
    let rf = f.received_from.unwrap();
    assert_eq!(rf.family, AddressFamily::Ip4);
    assert_eq!(rf.address, "192.0.2.10".parse::<IpAddr>().unwrap());
    assert!(f.supports_load_limit);
    assert!(req.warnings.is_empty(), "{:?}", req.warnings);
}

#[test]
fn offer_round_trips_through_the_codec() {
    let d = kamailio_offer("7_1");
    let body = &d[4..];
    let (v, used) = decode(body).unwrap();
    assert_eq!(used, body.len());
    // Kamailio's key order is not sorted; ours is. Same value either way.
    let re = encode(&v);
    assert_eq!(decode(&re).unwrap().0, v);
    let mut again = b"7_1 ".to_vec();
    again.extend_from_slice(&re);
    assert_eq!(parse_ok(&again).flags, parse_ok(&d).flags);
}

#[test]
fn spaced_and_hyphenated_spellings_are_equal() {
    let v = Value::dict()
        .with("command", "answer")
        .with("call-id", "c1")
        .with("from-tag", "f1")
        .with("to-tag", "t1")
        .with("sdp", SDP)
        .with(
            "flags",
            vec![
                Value::bytes("strict source"),
                Value::bytes("SIP-source-address"),
                Value::bytes("port latching"),
                Value::bytes("asymmetric"),
                Value::bytes("loop-protect"),
                Value::bytes("record-call"),
                Value::bytes("replace-origin"),
                Value::bytes("from-tags-abc"),
                Value::bytes("codec-strip-PCMA"),
                Value::bytes("RTP/SAVPF"),
            ],
        )
        .with("replace", vec![Value::bytes("session connection")])
        .with(
            "received from",
            vec![Value::bytes("IP6"), Value::bytes("2001:db8::1")],
        )
        .with("media address", "203.0.113.5")
        .with("address family", "IP4")
        .with("DTLS", "passive")
        .with("ICE", vec![Value::bytes("force"), Value::bytes("trickle")]);
    let mut d = b"c1 ".to_vec();
    d.extend(encode(&v));
    let req = parse_ok(&d);
    assert_eq!(req.command, Command::Answer);
    let f = &req.flags;
    assert!(f.strict_source && f.sip_source_address && f.port_latching && f.loop_protect);
    assert_eq!(f.symmetric, Some(false));
    assert_eq!(f.record_call, Some(true));
    assert!(f.replace.origin && f.replace.session_connection);
    assert_eq!(f.from_tags, ["abc"]);
    assert_eq!(f.codec.get("strip").unwrap(), &["PCMA"]);
    assert_eq!(f.transport_protocol, Some(TransportProtocol::RtpSavpf));
    assert_eq!(f.received_from.unwrap().family, AddressFamily::Ip6);
    assert_eq!(f.media_address, Some("203.0.113.5".parse().unwrap()));
    assert_eq!(f.address_family, Some(AddressFamily::Ip4));
    assert_eq!(f.dtls, Some(ng::protocol::DtlsMode::Passive));
    assert_eq!(f.ice, Some(IceMode::Force));
    assert_eq!(f.ice_options, ["trickle"]);
    assert!(req.warnings.is_empty(), "{:?}", req.warnings);
}

#[test]
fn rtpp_flags_string_is_parsed_like_the_dictionary() {
    let v = Value::dict()
        .with("command", "offer")
        .with("call-id", "c2")
        .with("from-tag", "f2")
        .with("sdp", SDP)
        .with(
            "rtpp-flags",
            "replace-origin replace-session-connection strict-source ICE=remove \
             direction=priv direction=pub label=callee RTP/AVP address-family=IP4 \
             rtcp-mux=[demux] codec=[strip=[PCMA G729] mask=[PCMU]] received-from=[IP4 192.0.2.1]",
        );
    let mut d = b"x ".to_vec();
    d.extend(encode(&v));
    let req = parse_ok(&d);
    let f = &req.flags;
    assert!(f.replace.origin && f.replace.session_connection && f.strict_source);
    assert_eq!(f.ice, Some(IceMode::Remove));
    assert_eq!(f.direction, ["priv", "pub"]);
    assert_eq!(f.label.as_deref(), Some("callee"));
    assert_eq!(f.transport_protocol, Some(TransportProtocol::RtpAvp));
    assert_eq!(f.address_family, Some(AddressFamily::Ip4));
    assert!(f.rtcp_mux.demux);
    assert_eq!(f.codec.get("strip").unwrap(), &["PCMA", "G729"]);
    assert_eq!(f.codec.get("mask").unwrap(), &["PCMU"]);
    assert_eq!(
        f.received_from.unwrap().address,
        "192.0.2.1".parse::<IpAddr>().unwrap()
    );
    assert!(req.warnings.is_empty(), "{:?}", req.warnings);
}

#[test]
fn unknown_keys_and_flags_come_back_as_warning() {
    let v = Value::dict()
        .with("command", "offer")
        .with("call-id", "c3")
        .with("from-tag", "f3")
        .with("sdp", SDP)
        .with(
            "flags",
            vec![Value::bytes("symmetric"), Value::bytes("frobnicate")],
        )
        .with("T.38", vec![Value::bytes("decode")])
        .with("replace", vec![Value::bytes("everything")]);
    let mut d = b"w1 ".to_vec();
    d.extend(encode(&v));
    let req = parse_ok(&d);
    assert_eq!(req.flags.symmetric, Some(true));
    assert_eq!(req.warnings.len(), 3, "{:?}", req.warnings);
    let out = ng::protocol::finish_reply(&req, Reply::sdp(SDP));
    let r = reply_dict(&out, "w1");
    assert_eq!(r.get("result").and_then(Value::as_str), Some("ok"));
    assert_eq!(r.get("sdp").and_then(Value::as_bytes), Some(SDP.as_bytes()));
    let w = r.get("warning").and_then(Value::as_str).unwrap();
    assert!(
        w.contains("frobnicate") && w.contains("T.38") && w.contains("everything"),
        "{w}"
    );
    // An error reply never carries the warning.
    let out = ng::protocol::finish_reply(&req, Reply::error("Ran out of ports"));
    let r = reply_dict(&out, "w1");
    assert_eq!(r.as_dict().unwrap().len(), 2);
}

#[test]
fn malformed_requests_get_error_replies() {
    assert_error_reply(b"e1 li1ei2ee", "dictionary");
    assert_error_reply(b"e2 4:spam", "dictionary");
    assert_error_reply(b"e3 d7:command4:ping", "bencode");
    assert_error_reply(b"e4 ", "no payload");
    assert_error_reply(b"e5 de", "command");
    assert_error_reply(b"e6 d7:commandi1ee", "command");
    assert_error_reply(b"e7 d7:command5:offer8:from-tag1:f3:sdp1:xe", "call-id");
    assert_error_reply(b"e8 d7:command5:offer7:call-id1:c3:sdp1:xe", "from-tag");
    assert_error_reply(b"e9 d7:command5:offer7:call-id1:c8:from-tag1:fe", "SDP");
    assert_error_reply(
        b"e10 d7:command6:answer7:call-id1:c8:from-tag1:f3:sdp1:xe",
        "to-tag",
    );
    assert_error_reply(
        b"e11 d7:command6:delete7:call-idi5e8:from-tag1:fe",
        "call-id",
    );
    assert_error_reply(b"e12 d7:command5:querye", "call-id");
    assert_error_reply(
        b"e13 d7:command5:offer7:call-id1:c8:from-tag1:f3:sdp1:x13:received-fromi1ee",
        "received-from",
    );
    assert_error_reply(
        b"e14 d7:command5:offer7:call-id1:c8:from-tag1:f3:sdp1:x13:received-froml3:IP46:bad-ipee",
        "IP address",
    );
    assert_error_reply(b"e15 d7:command4:ping5:flagsi3ee", "flags");
    assert_error_reply(b"e16 {\"command\": ", "JSON");
    assert_error_reply(b"e17 d7:command4:ping5:limiti0ee", "limit");
}

#[test]
fn garbage_without_cookie_is_dropped() {
    for g in [
        &b""[..],
        b"nocookie",
        b" d7:command4:pinge",
        b"\x00\x01\x02 d7:command4:pinge",
        b"\xff\xfe garbage",
    ] {
        assert!(parse_datagram(g).is_none(), "{g:?}");
    }
    let long = format!("{} d7:command4:pinge", "a".repeat(300));
    assert!(parse_datagram(long.as_bytes()).is_none());
}

#[test]
fn other_commands_reach_the_handler() {
    let req = parse_ok(b"o1 d7:command15:start recording7:call-id1:ce");
    assert_eq!(req.command, Command::Other("start recording".into()));
    assert_eq!(req.raw.get("call-id").and_then(Value::as_str), Some("c"));
    let req = parse_ok(b"o2 d7:command4:PINGe");
    assert_eq!(req.command, Command::Ping);
    let req = parse_ok(b"o3 d7:command4:list5:limiti5ee");
    assert_eq!(req.command, Command::List);
    assert_eq!(req.flags.limit, Some(5));
}

#[test]
fn json_requests_get_json_replies() {
    let req = parse_ok(br#"j1 {"command": "ping"}"#);
    assert_eq!(req.format, Format::Json);
    let out = ng::protocol::finish_reply(&req, Reply::pong());
    assert_eq!(out, br#"j1 {"result":"pong"}"#);
}

fn sample_stats() -> CallStats {
    let ep = |p: u16| Some(SocketAddr::from(([198, 51, 100, 1], p)));
    CallStats {
        created: 1_402_064_111,
        last_signal: 1_402_064_116,
        totals: CallTotals {
            rtp: PacketStats {
                packets: 705,
                bytes: 100_287,
                errors: 0,
            },
            rtcp: PacketStats {
                packets: 22,
                bytes: 2244,
                errors: 0,
            },
        },
        tags: vec![
            TagStats {
                tag: "cs6kn1rloc".into(),
                label: Some("caller".into()),
                created: 1_402_064_111,
                in_dialogue_with: Some("0f0d2e18".into()),
                medias: vec![MediaStats {
                    index: 1,
                    media_type: "audio".into(),
                    protocol: Some("RTP/AVP".into()),
                    flags: vec!["initialized".into()],
                    streams: vec![StreamStats {
                        local_port: Some(30018),
                        endpoint: ep(57370),
                        advertised_endpoint: ep(57370),
                        crypto_suite: None,
                        last_packet: Some(1_402_064_124),
                        flags: vec!["RTP".into(), "filled".into(), "confirmed".into()],
                        stats: PacketStats {
                            packets: 343,
                            bytes: 56950,
                            errors: 0,
                        },
                    }],
                }],
            },
            TagStats {
                tag: "0f0d2e18".into(),
                in_dialogue_with: Some("cs6kn1rloc".into()),
                ..Default::default()
            },
        ],
    }
}

#[test]
fn query_reply_has_rtpengines_shape() {
    let out = Reply::call_stats(&sample_stats()).encode("q1", Format::Bencode);
    let r = reply_dict(&out, "q1");
    assert_eq!(r.get("result").and_then(Value::as_str), Some("ok"));
    assert_eq!(r.get("created"), Some(&Value::Int(1_402_064_111)));
    assert_eq!(r.get("last signal"), Some(&Value::Int(1_402_064_116)));
    let rtp = r.get("totals").and_then(|t| t.get("RTP")).unwrap();
    assert_eq!(rtp.get("packets"), Some(&Value::Int(705)));
    assert_eq!(rtp.get("bytes"), Some(&Value::Int(100_287)));
    assert_eq!(rtp.get("errors"), Some(&Value::Int(0)));
    let rtcp = r.get("totals").and_then(|t| t.get("RTCP")).unwrap();
    assert_eq!(rtcp.get("packets"), Some(&Value::Int(22)));
    let tag = r.get("tags").and_then(|t| t.get("cs6kn1rloc")).unwrap();
    assert_eq!(tag.get("tag").and_then(Value::as_str), Some("cs6kn1rloc"));
    assert_eq!(tag.get("label").and_then(Value::as_str), Some("caller"));
    assert_eq!(
        tag.get("in dialogue with").and_then(Value::as_str),
        Some("0f0d2e18")
    );
    let media = &tag.get("medias").and_then(Value::as_list).unwrap()[0];
    assert_eq!(media.get("index"), Some(&Value::Int(1)));
    assert_eq!(media.get("type").and_then(Value::as_str), Some("audio"));
    assert_eq!(
        media.get("protocol").and_then(Value::as_str),
        Some("RTP/AVP")
    );
    let stream = &media.get("streams").and_then(Value::as_list).unwrap()[0];
    assert_eq!(stream.get("local port"), Some(&Value::Int(30018)));
    let ep = stream.get("endpoint").unwrap();
    assert_eq!(ep.get("family").and_then(Value::as_str), Some("IPv4"));
    assert_eq!(
        ep.get("address").and_then(Value::as_str),
        Some("198.51.100.1")
    );
    assert_eq!(ep.get("port"), Some(&Value::Int(57370)));
    assert!(stream.get("advertised endpoint").is_some());
    assert_eq!(stream.get("last packet"), Some(&Value::Int(1_402_064_124)));
    assert_eq!(
        stream.get("stats").and_then(|s| s.get("packets")),
        Some(&Value::Int(343))
    );
    assert!(stream.get("crypto suite").is_none());
    // The other side has no medias yet.
    let other = r.get("tags").and_then(|t| t.get("0f0d2e18")).unwrap();
    assert_eq!(other.get("medias"), Some(&Value::List(vec![])));
}

#[test]
fn list_pong_and_load_limit_replies() {
    let r = reply_dict(
        &Reply::list(&["a", "b"]).encode("l1", Format::Bencode),
        "l1",
    );
    assert_eq!(
        r.get("calls"),
        Some(&Value::List(vec![Value::bytes("a"), Value::bytes("b")]))
    );
    assert_eq!(
        Reply::pong().encode("5323_1", Format::Bencode),
        b"5323_1 d6:result4:ponge"
    );
    let r = reply_dict(
        &Reply::load_limit("busy").encode("l2", Format::Bencode),
        "l2",
    );
    assert_eq!(r.get("result").and_then(Value::as_str), Some("load limit"));
    assert_eq!(r.get("message").and_then(Value::as_str), Some("busy"));
}

/// A handler that counts calls and answers offers with a fixed SDP.
#[derive(Default)]
struct Counting {
    calls: usize,
}

impl ng::server::NgHandler for Counting {
    fn handle(&mut self, req: &Request) -> Reply {
        self.calls += 1;
        match req.command {
            Command::Ping => Reply::pong(),
            Command::Offer | Command::Answer => {
                Reply::sdp(format!("v=0\r\ns=call {}\r\n", self.calls))
            }
            Command::Delete | Command::Query => Reply::call_stats(&sample_stats()),
            Command::List => Reply::list(&["c"]),
            Command::Other(_) => Reply::error("Unrecognized command"),
        }
    }
}

fn loopback_server(config: ServerConfig) -> NgServer<Counting> {
    NgServer::bind("127.0.0.1:0", Counting::default(), config).expect("bind loopback")
}

#[test]
fn retransmission_gets_the_identical_cached_reply() {
    let mut s = loopback_server(ServerConfig::default());
    let src: SocketAddr = "127.0.0.1:5060".parse().unwrap();
    let now = Instant::now();
    let offer = kamailio_offer("r1");
    let first = s.process(&offer, src, now).unwrap();
    let again = s
        .process(&offer, src, now + Duration::from_secs(5))
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(s.handler().calls, 1);
    assert_eq!(s.stats().retransmissions, 1);
    // A new cookie runs the handler again.
    let other = s.process(&kamailio_offer("r2"), src, now).unwrap();
    assert_ne!(first, other);
    assert_eq!(s.handler().calls, 2);
    // Another source with the same cookie is a different request.
    let src2: SocketAddr = "127.0.0.1:5061".parse().unwrap();
    s.process(&offer, src2, now).unwrap();
    assert_eq!(s.handler().calls, 3);
    // After the cache lifetime the command runs again.
    s.process(&offer, src, now + Duration::from_secs(31))
        .unwrap();
    assert_eq!(s.handler().calls, 4);
    // Error replies are cached too.
    let bad = b"r3 d7:command5:offere";
    let e1 = s.process(bad, src, now).unwrap();
    let e2 = s.process(bad, src, now).unwrap();
    assert_eq!(e1, e2);
    assert_eq!(s.stats().malformed, 1);
}

#[test]
fn reply_cache_is_bounded() {
    let mut s = loopback_server(ServerConfig {
        cache_capacity: 4,
        ..ServerConfig::default()
    });
    let src: SocketAddr = "127.0.0.1:5060".parse().unwrap();
    let now = Instant::now();
    for i in 0..10 {
        s.process(format!("b{i} d7:command4:pinge").as_bytes(), src, now);
    }
    assert_eq!(s.handler().calls, 10);
    // The newest are still cached, the oldest were evicted.
    s.process(b"b9 d7:command4:pinge", src, now);
    assert_eq!(s.handler().calls, 10);
    s.process(b"b0 d7:command4:pinge", src, now);
    assert_eq!(s.handler().calls, 11);
}

fn client() -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

fn exchange(c: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Vec<u8> {
    c.send_to(msg, to).unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, from) = c.recv_from(&mut buf).expect("reply within 5 s");
    assert_eq!(from, to);
    buf.truncate(n);
    buf
}

#[test]
fn ping_pong_and_retransmission_over_loopback() {
    let server = loopback_server(ServerConfig {
        poll_interval: Duration::from_millis(20),
        ..ServerConfig::default()
    });
    let handle = server.spawn().unwrap();
    let addr = handle.local_addr();
    let c = client();
    assert_eq!(
        exchange(&c, addr, b"5323_1 d7:command4:pinge"),
        b"5323_1 d6:result4:ponge"
    );

    let first = exchange(&c, addr, &kamailio_offer("9_1"));
    let again = exchange(&c, addr, &kamailio_offer("9_1"));
    assert_eq!(first, again);
    let r = reply_dict(&first, "9_1");
    assert_eq!(
        r.get("sdp").and_then(Value::as_str),
        Some("v=0\r\ns=call 2\r\n")
    );

    // Garbage gets no answer; the next request still does.
    c.send_to(b"garbage-without-space", addr).unwrap();
    let e = exchange(&c, addr, b"9_2 d7:command5:querye");
    let r = reply_dict(&e, "9_2");
    assert_eq!(r.get("result").and_then(Value::as_str), Some("error"));

    let (server, result) = handle.stop();
    result.unwrap();
    let st = server.stats();
    assert_eq!(st.received, 5);
    assert_eq!(st.garbage, 1);
    assert_eq!(st.retransmissions, 1);
    assert_eq!(st.malformed, 1);
    assert_eq!(st.handled, 2);
    assert_eq!(server.handler().calls, 2);
}

#[test]
fn timeout_callback_posts_kamailio_xmlrpc() {
    use ng::server::{CallTimeout, TimeoutNotifier, XmlRpcFormat, XmlRpcNotifier};
    use std::io::{Read, Write};
    use std::net::TcpListener;

    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let srv = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        // Read until the body (after the blank line) reaches its Content-Length.
        loop {
            let n = s.read(&mut buf).unwrap();
            req.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&req).to_string();
            if let Some(i) = text.find("\r\n\r\n") {
                let len: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                if req.len() >= i + 4 + len || n == 0 {
                    break;
                }
            }
        }
        s.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n\r\n<?xml version=\"1.0\"?>\
              <methodResponse><params><param><value><string>ok</string></value></param>\
              </params></methodResponse>",
        )
        .unwrap();
        String::from_utf8(req).unwrap()
    });
    let n = XmlRpcNotifier::new(&format!("http://%%:{port}/RPC2"), XmlRpcFormat::Kamailio)
        .unwrap()
        .with_timeout(Duration::from_secs(5));
    n.notify(&CallTimeout {
        call_id: "a<b>&c@host".into(),
        from_tag: "ft".into(),
        to_tag: "tt".into(),
        ng_source: Some("127.0.0.1".parse().unwrap()),
        xmlrpc_callback: None,
    })
    .unwrap();
    let req = srv.join().unwrap();
    assert!(req.starts_with("POST /RPC2 HTTP/1.0\r\n"), "{req}");
    assert!(req.contains("Content-Type: text/xml"));
    assert!(req.contains("<methodName>dlg.terminate_dlg</methodName>"));
    assert!(req.contains("<string>a&lt;b&gt;&amp;c@host</string>"));
    assert!(req.contains("<string>ft</string></value></param><param><value><string>tt</string>"));
    assert!(XmlRpcNotifier::new("https://x/", XmlRpcFormat::CallId).is_err());
}

/// Replays the checked-in fuzz corpus: nothing panics, and whatever decodes re-encodes to
/// the same value.
#[test]
fn fuzz_corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ng_parse");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        ng::fuzz_one(&data);
        n += 1;
    }
    assert!(n >= 10, "corpus has only {n} files");
}
