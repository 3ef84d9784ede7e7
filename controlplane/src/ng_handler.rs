//! The rtpengine ng commands, served by the session manager.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_dataplane::monotonic_now;

use crate::ng::protocol::{
    CallStats, CallTotals, Command, IceMode, MediaStats, PacketStats, Reply, Request, StreamStats,
    TagStats,
};
use crate::ng::server::{CallTimeout, NgHandler};
use crate::session::{
    CallReport, IceAction, SessionError, SessionManager, Signal, Symmetry, Totals,
};

/// What the ng socket learned about a call, to tell its proxy when the relay ends it.
#[derive(Clone, Debug, Default)]
pub struct NgOrigin {
    pub source: Option<IpAddr>,
    pub xmlrpc_callback: Option<IpAddr>,
}

/// Serves ng requests with a shared session manager.
pub struct SessionNgHandler {
    pub manager: Arc<Mutex<SessionManager>>,
    /// Call-id -> where its requests came from.
    pub origins: Arc<Mutex<HashMap<String, NgOrigin>>>,
}

impl SessionNgHandler {
    fn signal(req: &Request) -> Signal {
        let flags = &req.flags;
        let v4 = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        };
        // NAT detection compares the SDP with where the SIP message came from: the proxy tells
        // (`received-from`); without it, nothing is compared. `trust-address` trusts the SDP.
        let signalling_source = if flags.trust_address {
            None
        } else {
            flags.received_from.as_ref().and_then(|r| v4(r.address))
        };
        let symmetry = match flags.symmetric {
            Some(true) => Symmetry::Symmetric,
            Some(false) => Symmetry::Asymmetric,
            None if flags.trust_address => Symmetry::Asymmetric,
            None => Symmetry::Auto,
        };
        let direction = match flags.direction.as_slice() {
            [from, to] => Some([from.clone(), to.clone()]),
            _ => None,
        };
        Signal {
            call_id: req.call_id.clone().unwrap_or_default(),
            from_tag: req.from_tag.clone().unwrap_or_default(),
            to_tag: req.to_tag.clone(),
            sdp: req.sdp.clone().unwrap_or_default(),
            signalling_source,
            direction,
            // The relay anchors the media, so the endpoints' own candidates are wrong: they are
            // removed unless the proxy asks for another ICE mode. Sluice runs no ICE agent of its
            // own, so `force` removes them too, and the other modes leave them as they are.
            ice: match flags.ice {
                Some(IceMode::Remove) | Some(IceMode::Force) | Some(IceMode::ForceRelay) | None => {
                    IceAction::Remove
                }
                Some(_) => IceAction::Keep,
            },
            replace_origin: flags.replace.origin || flags.replace.origin_full,
            symmetry,
            strict_source: flags.strict_source,
            label: flags.label.clone(),
        }
    }

    fn remember(&self, req: &Request) {
        if let (Some(call_id), Ok(mut origins)) = (req.call_id.as_ref(), self.origins.lock()) {
            let entry = origins.entry(call_id.clone()).or_default();
            entry.source = req.source.map(|s: SocketAddr| s.ip()).or(entry.source);
            entry.xmlrpc_callback = req.flags.xmlrpc_callback.or(entry.xmlrpc_callback);
        }
    }

    fn forget(&self, call_id: &str) {
        if let Ok(mut origins) = self.origins.lock() {
            origins.remove(call_id);
        }
    }
}

fn error_reply(e: &SessionError) -> Reply {
    Reply::error(&e.to_string())
}

impl NgHandler for SessionNgHandler {
    fn handle(&mut self, req: &Request) -> Reply {
        let now = monotonic_now();
        let Ok(mut manager) = self.manager.lock() else {
            return Reply::error("internal error: the session manager is unavailable");
        };
        match &req.command {
            Command::Ping => Reply::pong(),
            // Where a call's requests come from is remembered once the manager has the call: a
            // refused first offer (or an answer for an unknown call) must leave no entry behind.
            Command::Offer => match manager.offer(now, &Self::signal(req)) {
                Ok(sdp) => {
                    self.remember(req);
                    Reply::sdp(sdp)
                }
                Err(e) => error_reply(&e),
            },
            Command::Answer => match manager.answer(now, &Self::signal(req)) {
                Ok(sdp) => {
                    self.remember(req);
                    Reply::sdp(sdp)
                }
                Err(e) => error_reply(&e),
            },
            Command::Delete => {
                let call_id = req.call_id.clone().unwrap_or_default();
                match manager.delete(now, &call_id) {
                    Ok(ended) => {
                        drop(manager);
                        self.forget(&call_id);
                        Reply::call_stats(&call_stats(&ended.report, now))
                    }
                    Err(e) => error_reply(&e),
                }
            }
            Command::Query => {
                let call_id = req.call_id.clone().unwrap_or_default();
                match manager.report(now, &call_id) {
                    Ok(report) => Reply::call_stats(&call_stats(&report, now)),
                    Err(e) => error_reply(&e),
                }
            }
            Command::List => {
                let mut ids: Vec<&str> = manager.call_ids().collect();
                ids.sort_unstable();
                // rtpengine's default; an unbounded list would not fit in one UDP datagram.
                ids.truncate(req.flags.limit.map_or(32, |l| l as usize));
                Reply::list(&ids)
            }
            Command::Other(_) => Reply::error("Unrecognized command"),
        }
    }
}

/// How the relay tells the proxy that a call it ended is over.
pub fn call_timeout(report: &CallReport, origin: &NgOrigin) -> CallTimeout {
    CallTimeout {
        call_id: report.call_id.clone(),
        from_tag: report.from_tag.clone().unwrap_or_default(),
        to_tag: report.to_tag.clone().unwrap_or_default(),
        ng_source: origin.source,
        xmlrpc_callback: origin.xmlrpc_callback,
    }
}

/// A monotonic instant as UNIX seconds, given `now` on both clocks.
fn unix_secs(t: Duration, now: Duration) -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    wall.saturating_sub(now.saturating_sub(t)).as_secs()
}

fn packets(t: &Totals) -> PacketStats {
    PacketStats {
        packets: t.packets,
        bytes: t.bytes,
        errors: 0,
    }
}

/// A call's report in the shape of rtpengine's `query` and `delete` replies.
pub fn call_stats(report: &CallReport, now: Duration) -> CallStats {
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
    let tags = [
        (report.from_tag.clone(), &report.to_tag),
        (report.to_tag.clone(), &report.from_tag),
    ];
    let mut stats = CallStats {
        created: unix_secs(secs(report.created_s), now),
        last_signal: unix_secs(secs(report.last_signal_s), now),
        tags: Vec::new(),
        totals: CallTotals {
            rtp: packets(&Totals {
                packets: report.rtp[0].packets + report.rtp[1].packets,
                bytes: report.rtp[0].bytes + report.rtp[1].bytes,
            }),
            rtcp: packets(&Totals {
                packets: report.rtcp[0].packets + report.rtcp[1].packets,
                bytes: report.rtcp[0].bytes + report.rtcp[1].bytes,
            }),
        },
    };
    for (side, (tag, other)) in tags.iter().enumerate() {
        let Some(tag) = tag else { continue };
        let mut medias: Vec<MediaStats> = Vec::new();
        for s in report.streams.iter().filter(|s| s.from.index() == side) {
            let index = s.media as u32 + 1;
            let media = match medias.iter_mut().position(|m| m.index == index) {
                Some(i) => &mut medias[i],
                None => {
                    medias.push(MediaStats {
                        index,
                        media_type: s.kind.clone(),
                        ..MediaStats::default()
                    });
                    let last = medias.len() - 1;
                    &mut medias[last]
                }
            };
            media.streams.push(StreamStats {
                local_port: Some(s.relay.port()),
                endpoint: Some(SocketAddr::V4(s.latched_peer.unwrap_or(s.sdp_peer))),
                advertised_endpoint: Some(SocketAddr::V4(s.sdp_peer)),
                crypto_suite: None,
                last_packet: s
                    .last_packet_age_s
                    .map(|age| unix_secs(now.saturating_sub(secs(age)), now)),
                flags: vec![if s.rtcp { "RTCP" } else { "RTP" }.to_owned()],
                stats: PacketStats {
                    packets: s.packets,
                    bytes: s.bytes,
                    errors: 0,
                },
            });
        }
        stats.tags.push(TagStats {
            tag: tag.clone(),
            label: report.label.clone().filter(|_| side == 0),
            created: stats.created,
            in_dialogue_with: (*other).clone(),
            medias,
        });
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ng::bencode::{encode, Value};
    use crate::ng::protocol::parse_document;
    use crate::session::tests::{advertised, audio_sdp, config, public, FakeForwarder, RELAY};
    use crate::session::Timeouts;

    struct Harness {
        handler: SessionNgHandler,
        fake: FakeForwarder,
    }

    fn harness() -> Harness {
        let fake = FakeForwarder::default();
        let manager = SessionManager::new(
            config(vec![public()], Timeouts::default()),
            Box::new(fake.clone()),
        )
        .expect("manager");
        Harness {
            handler: SessionNgHandler {
                manager: Arc::new(Mutex::new(manager)),
                origins: Arc::default(),
            },
            fake,
        }
    }

    /// A request dictionary with `command` and `call-id`.
    fn command(command: &str, call_id: &str) -> Value {
        Value::dict()
            .with("command", command)
            .with("call-id", call_id)
    }

    fn offer(call_id: &str, sdp: Vec<u8>) -> Value {
        command("offer", call_id)
            .with("from-tag", "ta")
            .with("sdp", sdp)
    }

    fn answer(call_id: &str, sdp: Vec<u8>) -> Value {
        command("answer", call_id)
            .with("from-tag", "ta")
            .with("to-tag", "tb")
            .with("sdp", sdp)
    }

    impl Harness {
        /// Encodes `dict` as the ng socket would receive it, parses it, and handles it.
        fn send(&mut self, dict: Value) -> Value {
            let request = parse_document("cookie1", &encode(&dict)).expect("a valid request");
            self.handler.handle(&request).to_value()
        }

        fn call(&mut self, call_id: &str) {
            let reply = self.send(offer(call_id, audio_sdp("198.51.100.10", 4000)));
            assert_eq!(result(&reply), "ok", "{reply:?}");
            let reply = self.send(answer(call_id, audio_sdp("192.0.2.20", 5000)));
            assert_eq!(result(&reply), "ok", "{reply:?}");
        }

        fn origins(&self) -> usize {
            self.handler.origins.lock().expect("origins").len()
        }
    }

    fn result(reply: &Value) -> &str {
        reply.get("result").and_then(Value::as_str).unwrap_or("")
    }

    fn reason(reply: &Value) -> &str {
        reply
            .get("error-reason")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    fn sdp_of(reply: &Value) -> &[u8] {
        reply
            .get("sdp")
            .and_then(Value::as_bytes)
            .expect("an sdp in the reply")
    }

    fn relay(port: u16) -> std::net::SocketAddrV4 {
        format!("{RELAY}:{port}").parse().expect("address")
    }

    fn packets(reply: &Value, kind: &str) -> Option<i64> {
        reply.get("totals")?.get(kind)?.get("packets")?.as_int()
    }

    #[test]
    fn ping_is_answered_with_pong() {
        let mut h = harness();
        let reply = h.send(Value::dict().with("command", "ping"));
        assert_eq!(result(&reply), "pong");
    }

    #[test]
    fn offer_returns_the_rewritten_sdp() {
        let mut h = harness();
        let reply = h.send(offer("c1", audio_sdp("198.51.100.10", 4000)));
        assert_eq!(result(&reply), "ok");
        let adv = advertised(sdp_of(&reply));
        assert_eq!(adv.len(), 1);
        assert_eq!(adv[0].port(), 30002, "the relay port facing B");
        assert_ne!(adv[0].ip().to_string(), "198.51.100.10");
        assert_eq!(h.fake.installs(), 0);
        assert_eq!(h.origins(), 1);
    }

    #[test]
    fn answer_returns_the_rewritten_sdp_and_installs_the_rules() {
        let mut h = harness();
        h.send(offer("c1", audio_sdp("198.51.100.10", 4000)));
        let reply = h.send(answer("c1", audio_sdp("192.0.2.20", 5000)));
        assert_eq!(result(&reply), "ok");
        assert_eq!(advertised(sdp_of(&reply))[0].port(), 30000, "facing A");
        assert_eq!(h.fake.rules().len(), 4);
    }

    #[test]
    fn ng_flags_reach_the_session_manager() {
        let mut h = harness();
        let reply = h.send(
            offer("c1", audio_sdp("198.51.100.10", 4000))
                .with(
                    "received-from",
                    vec![Value::bytes("IP4"), Value::bytes("198.51.100.99")],
                )
                .with("flags", vec![Value::bytes("strict-source")]),
        );
        assert_eq!(result(&reply), "ok", "{reply:?}");
        h.send(answer("c1", audio_sdp("192.0.2.20", 5000)));
        let from_a = h.fake.rule_at(&relay(30000).to_string());
        assert!(from_a.latch, "the SDP differs from received-from: NAT");
        assert!(from_a.strict_source);
        // `symmetric`/`asymmetric` flags.
        let mut h = harness();
        h.send(
            offer("c1", audio_sdp("192.168.1.10", 4000))
                .with("flags", vec![Value::bytes("asymmetric")]),
        );
        h.send(answer("c1", audio_sdp("192.0.2.20", 5000)));
        assert!(!h.fake.rule_at(&relay(30000).to_string()).latch);
    }

    #[test]
    fn query_reports_the_fake_counters() {
        let mut h = harness();
        h.call("c1");
        h.fake.set(&relay(30000).to_string(), 100, 17_200, None);
        h.fake.set(&relay(30002).to_string(), 90, 15_480, None);
        h.fake.set(&relay(30001).to_string(), 2, 160, None);
        let reply = h.send(command("query", "c1"));
        assert_eq!(result(&reply), "ok", "{reply:?}");
        assert_eq!(packets(&reply, "RTP"), Some(190));
        assert_eq!(packets(&reply, "RTCP"), Some(2));
        let tags = reply.get("tags").and_then(Value::as_dict).expect("tags");
        assert!(tags.contains_key(&b"ta"[..]) && tags.contains_key(&b"tb"[..]));
    }

    #[test]
    fn delete_ends_the_call_and_reports_its_totals() {
        let mut h = harness();
        h.call("c1");
        h.fake.set(&relay(30000).to_string(), 7, 700, None);
        let reply = h.send(command("delete", "c1").with("from-tag", "ta"));
        assert_eq!(result(&reply), "ok", "{reply:?}");
        assert_eq!(packets(&reply, "RTP"), Some(7));
        assert!(h.fake.rules().is_empty(), "its rules are removed");
        assert_eq!(h.origins(), 0, "its origin is forgotten");
        let reply = h.send(command("query", "c1"));
        assert_eq!(result(&reply), "error");
        let reply = h.send(Value::dict().with("command", "list"));
        assert_eq!(reply.get("calls"), Some(&Value::List(Vec::new())));
    }

    #[test]
    fn list_names_the_active_calls() {
        let mut h = harness();
        h.call("c2");
        h.call("c1");
        let reply = h.send(Value::dict().with("command", "list"));
        assert_eq!(result(&reply), "ok");
        assert_eq!(
            reply.get("calls"),
            Some(&Value::List(vec![Value::bytes("c1"), Value::bytes("c2")]))
        );
    }

    #[test]
    fn an_unknown_call_id_is_an_error() {
        let mut h = harness();
        for dict in [
            command("query", "nope"),
            command("delete", "nope").with("from-tag", "ta"),
            answer("nope", audio_sdp("192.0.2.20", 5000)),
        ] {
            let reply = h.send(dict);
            assert_eq!(result(&reply), "error");
            assert_eq!(reason(&reply), "unknown call-id `nope`");
        }
        assert_eq!(h.origins(), 0, "an answer for no call leaves no origin");
    }

    #[test]
    fn a_malformed_sdp_is_an_error_with_its_reason() {
        let mut h = harness();
        let reply = h.send(offer(
            "c1",
            b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nm=audio x RTP/AVP 0\r\n".to_vec(),
        ));
        assert_eq!(result(&reply), "error");
        let why = reason(&reply);
        assert!(why.starts_with("bad SDP: line 3"), "{why}");
        assert!(why.contains("m= port"), "{why}");
        assert!(reply.get("sdp").is_none());
        let list = h.send(Value::dict().with("command", "list"));
        assert_eq!(list.get("calls"), Some(&Value::List(Vec::new())), "no call");
        assert_eq!(h.origins(), 0, "a refused offer leaves no origin behind");
    }

    #[test]
    fn an_ipv6_sdp_is_an_error() {
        let mut h = harness();
        let reply = h.send(offer(
            "c1",
            b"v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
                .to_vec(),
        ));
        assert_eq!(result(&reply), "error");
        assert!(reason(&reply).starts_with("unsupported: "), "{reply:?}");
    }

    #[test]
    fn an_unknown_command_is_an_error() {
        let mut h = harness();
        let reply = h.send(Value::dict().with("command", "frobnicate"));
        assert_eq!(result(&reply), "error");
        assert_eq!(reason(&reply), "Unrecognized command");
    }
}
