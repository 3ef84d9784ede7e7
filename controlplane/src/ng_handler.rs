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
            Command::Offer => {
                self.remember(req);
                match manager.offer(now, &Self::signal(req)) {
                    Ok(sdp) => Reply::sdp(sdp),
                    Err(e) => error_reply(&e),
                }
            }
            Command::Answer => {
                self.remember(req);
                match manager.answer(now, &Self::signal(req)) {
                    Ok(sdp) => Reply::sdp(sdp),
                    Err(e) => error_reply(&e),
                }
            }
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
