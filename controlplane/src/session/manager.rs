//! The session manager: offers and answers in, rewritten SDP and stream rules out, timeouts and
//! final counters at the end. The ng control socket and the SIP proxy drive the same manager.
//!
//! Time comes in as `now` (the monotonic clock the relay's counters use), so timeouts are tested
//! in virtual time.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use sluice_dataplane::{BackendKind, DataplaneError, Forwarder, StreamCounters};

use super::model::{
    call_on_hold, media_rules, Facing, InstalledStream, MediaDesc, MediaPorts, Party, Side,
    Symmetry, TerminationCause, Timeouts,
};
use super::ports::{PortError, PortPool};
use super::sdp::{self, IceAction, SdpEdit};

/// A relay interface: its name (rtpengine's `--interface NAME/ADDR!ADVERTISED`), the address the
/// rules listen on, the address the SDP advertises, and its port range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayInterface {
    pub name: String,
    pub addr: Ipv4Addr,
    pub advertised: Ipv4Addr,
    pub ports: std::ops::RangeInclusive<u16>,
}

/// Settings of the session manager.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// At least one; the first is the default for both sides.
    pub interfaces: Vec<RelayInterface>,
    pub timeouts: Timeouts,
}

/// What went wrong with a request. `BadSdp` is the peer's fault (a SIP proxy answers 488).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("bad SDP: {0}")]
    BadSdp(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("unknown call-id `{0}`")]
    UnknownCall(String),
    #[error("unknown interface `{0}` in direction")]
    UnknownInterface(String),
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error("the relay refused a stream: {0}")]
    Dataplane(#[from] DataplaneError),
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// An offer or an answer, with the flags that shape it.
#[derive(Clone, Debug, Default)]
pub struct Signal {
    pub call_id: String,
    pub from_tag: String,
    /// Empty on a first offer.
    pub to_tag: Option<String>,
    pub sdp: Vec<u8>,
    /// Where the SIP message came from (rtpengine's `received-from`), for NAT detection.
    pub signalling_source: Option<Ipv4Addr>,
    /// Interfaces facing the sender and the receiver of this SDP (rtpengine's `direction`).
    pub direction: Option<[String; 2]>,
    pub ice: IceAction,
    pub replace_origin: bool,
    pub symmetry: Symmetry,
    pub strict_source: bool,
    pub label: Option<String>,
}

/// The state of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    /// An offer is out, no answer yet.
    Offered,
    /// Answered: media flows through the relay.
    Established,
}

struct Call {
    call_id: String,
    label: Option<String>,
    created: Duration,
    answered: Option<Duration>,
    last_signal: Duration,
    state: CallState,
    /// Who sent the outstanding (or last) offer.
    offerer: Side,
    parties: [Party; 2],
    facing: [Facing; 2],
    ports: Vec<MediaPorts>,
    streams: Vec<Vec<InstalledStream>>,
    strict_source: bool,
    /// What streams removed before the end of the call (a re-INVITE rejecting one, rtcp-mux
    /// agreed later) carried, so the call's totals keep it.
    retired: Retired,
    /// Before this time the media timeout cannot fire, so `poll` does not read the call's
    /// counters (a read is a map lookup per stream: thousands of calls polled several times a
    /// second would cost the relay process a noticeable share of a core). Reset by signalling.
    media_check_at: Duration,
}

/// The final counters of the streams a call no longer has.
#[derive(Clone, Copy, Debug, Default)]
struct Retired {
    rtp: [Totals; 2],
    rtcp: [Totals; 2],
    last_seen: Option<Duration>,
}

/// Packets and bytes of one direction of one stream kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub packets: u64,
    pub bytes: u64,
}

impl Totals {
    fn add(&mut self, c: &StreamCounters) {
        self.packets += c.packets;
        self.bytes += c.bytes;
    }
}

/// One relayed stream of a call, for NOC staff and for ng `query`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StreamReport {
    pub media: usize,
    pub kind: String,
    /// The side whose packets this stream carries.
    pub from: Side,
    pub rtcp: bool,
    /// Where the relay receives them.
    pub relay: SocketAddrV4,
    /// The sender as its SDP said.
    pub sdp_peer: SocketAddrV4,
    /// The sender as the relay learned it from its first packet (NAT), if it latched.
    pub latched_peer: Option<SocketAddrV4>,
    pub packets: u64,
    pub bytes: u64,
    /// Seconds since the last packet; `None` if none yet.
    pub last_packet_age_s: Option<f64>,
}

/// A call's state and counters.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct CallReport {
    pub call_id: String,
    pub label: Option<String>,
    pub state: CallState,
    pub backend: &'static str,
    pub from_tag: Option<String>,
    pub to_tag: Option<String>,
    /// Seconds since the call was created / answered.
    pub age_s: f64,
    pub duration_s: Option<f64>,
    pub created_s: f64,
    pub last_signal_s: f64,
    /// Per direction: what side A sent (RTP, RTCP) and what side B sent.
    pub rtp: [Totals; 2],
    pub rtcp: [Totals; 2],
    /// Seconds since the last packet in either direction; `None` if none yet.
    pub last_packet_age_s: Option<f64>,
    pub streams: Vec<StreamReport>,
}

/// A call the manager ended by itself, or that a `delete` ended.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Ended {
    pub cause: TerminationCause,
    pub report: CallReport,
}

/// The session manager.
pub struct SessionManager {
    config: SessionConfig,
    pools: Vec<PortPool>,
    forwarder: Box<dyn Forwarder>,
    calls: HashMap<String, Call>,
    /// The last calls that ended, newest last, so NOC staff can see why a call went away.
    ended: std::collections::VecDeque<Ended>,
}

/// How many ended calls [`SessionManager::recently_ended`] keeps.
pub const ENDED_KEPT: usize = 1000;

impl SessionManager {
    /// A manager relaying through `forwarder`.
    pub fn new(config: SessionConfig, forwarder: Box<dyn Forwarder>) -> Result<Self, SessionError> {
        if config.interfaces.is_empty() {
            return Err(SessionError::Invalid(
                "at least one relay interface is needed".into(),
            ));
        }
        let pools = config
            .interfaces
            .iter()
            .map(|i| PortPool::new(&i.name, i.ports.clone()))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            config,
            pools,
            forwarder,
            calls: HashMap::new(),
            ended: Default::default(),
        })
    }

    /// The forwarding path's kind.
    pub fn backend(&self) -> BackendKind {
        self.forwarder.kind()
    }

    /// The forwarding path, for its global counters.
    pub fn forwarder(&self) -> &dyn Forwarder {
        self.forwarder.as_ref()
    }

    /// Active calls.
    pub fn call_ids(&self) -> impl Iterator<Item = &str> {
        self.calls.keys().map(String::as_str)
    }

    /// Port pairs in use, over every interface.
    #[cfg(test)]
    pub fn ports_in_use(&self) -> usize {
        self.pools.iter().map(PortPool::in_use).sum()
    }

    fn interface(&self, name: Option<&str>) -> Result<usize, SessionError> {
        match name {
            None => Ok(0),
            Some(n) => self
                .config
                .interfaces
                .iter()
                .position(|i| i.name == n)
                .ok_or_else(|| SessionError::UnknownInterface(n.to_owned())),
        }
    }

    fn facing(&self, index: usize) -> Facing {
        let i = &self.config.interfaces[index];
        Facing {
            interface: index,
            addr: i.addr,
            advertised: i.advertised,
        }
    }

    /// An SDP offer: anchors its media on the relay and returns the SDP to forward.
    ///
    /// A first offer creates the call; `direction` (interfaces facing the sender and the
    /// receiver) applies to it only. A later offer on the same call-id is a re-offer from either
    /// party (a re-INVITE from the callee carries its own tag as `from_tag`): existing media lines
    /// keep their relay ports and, once answered, their rules are updated in place.
    ///
    /// A refused offer (bad SDP, unknown interface, no free port) changes nothing: a refused
    /// first offer leaves no call and no port behind, a refused re-offer leaves the call as it
    /// was. Only the relay refusing a rule update of an answered call (`Dataplane`) leaves the
    /// new descriptions in place with the rules partly updated.
    pub fn offer(&mut self, now: Duration, signal: &Signal) -> Result<Vec<u8>, SessionError> {
        let (parsed, media) = sdp::describe(&signal.sdp)?;
        let (sender_iface, receiver_iface) = match &signal.direction {
            Some([from, to]) => (self.interface(Some(from))?, self.interface(Some(to))?),
            None => (0, 0),
        };
        let new_call = !self.calls.contains_key(&signal.call_id);
        if new_call {
            let call = Call {
                call_id: signal.call_id.clone(),
                label: signal.label.clone(),
                created: now,
                answered: None,
                last_signal: now,
                state: CallState::Offered,
                offerer: Side::A,
                parties: [
                    Party {
                        tag: Some(signal.from_tag.clone()),
                        ..Party::default()
                    },
                    Party::default(),
                ],
                facing: [self.facing(sender_iface), self.facing(receiver_iface)],
                ports: Vec::new(),
                streams: Vec::new(),
                strict_source: signal.strict_source,
                retired: Retired::default(),
                media_check_at: Duration::ZERO,
            };
            self.calls.insert(signal.call_id.clone(), call);
        }
        let result = self.offer_existing(now, signal, &parsed, media);
        if result.is_err() && new_call {
            // A first offer that failed leaves nothing behind (and a failed re-offer must not
            // end the call it was for).
            self.drop_call(&signal.call_id);
        }
        result
    }

    fn offer_existing(
        &mut self,
        now: Duration,
        signal: &Signal,
        parsed: &sdp::Parsed,
        media: Vec<MediaDesc>,
    ) -> Result<Vec<u8>, SessionError> {
        let call = self
            .calls
            .get_mut(&signal.call_id)
            .ok_or_else(|| SessionError::UnknownCall(signal.call_id.clone()))?;
        // A re-offer may come from either party (a re-INVITE from the callee reverses the tags).
        let offerer = if call.parties[1].tag.as_deref() == Some(signal.from_tag.as_str()) {
            Side::B
        } else {
            Side::A
        };
        // New media lines get ports; existing ones keep theirs (a re-INVITE keeps the streams).
        // Nothing of the call changes until every port is allocated and the SDP is rewritten.
        let mut new_ports = Vec::new();
        let release = |pools: &mut [PortPool], facing: &[Facing; 2], ports: &[MediaPorts]| {
            for p in ports {
                pools[facing[0].interface].release(p.rtp[0]);
                pools[facing[1].interface].release(p.rtp[1]);
            }
        };
        while call.ports.len() + new_ports.len() < media.len() {
            let allocated =
                self.pools[call.facing[0].interface]
                    .allocate()
                    .and_then(|a| match self.pools[call.facing[1].interface].allocate() {
                        Ok(b) => Ok([a, b]),
                        Err(e) => {
                            self.pools[call.facing[0].interface].release(a);
                            Err(e)
                        }
                    });
            match allocated {
                Ok(rtp) => new_ports.push(MediaPorts { rtp }),
                Err(e) => {
                    release(&mut self.pools, &call.facing, &new_ports);
                    return Err(e.into());
                }
            }
        }
        let answerer = offerer.other();
        let all_ports: Vec<MediaPorts> = call.ports.iter().chain(&new_ports).cloned().collect();
        let edit = edit_for(&call.facing, &all_ports, answerer, signal);
        let out = match sdp::rewrite(parsed, &edit) {
            Ok(out) => out,
            Err(e) => {
                release(&mut self.pools, &call.facing, &new_ports);
                return Err(e);
            }
        };
        call.streams.extend(new_ports.iter().map(|_| Vec::new()));
        call.ports = all_ports;
        call.offerer = offerer;
        call.last_signal = now;
        call.media_check_at = Duration::ZERO;
        if signal.label.is_some() {
            call.label = signal.label.clone();
        }
        let party = &mut call.parties[offerer.index()];
        party.signalling_source = signal.signalling_source.or(party.signalling_source);
        party.symmetry = signal.symmetry;
        party.media = media;
        if call.state == CallState::Established {
            Self::sync_rules(self.forwarder.as_mut(), call)?;
        }
        Ok(out)
    }

    /// The answer to the outstanding offer: completes the streams and returns the SDP to forward.
    ///
    /// ng answers carry the offerer's tag as `from_tag` and the answerer's as `to_tag`. A second
    /// answer to the same offer (another branch of a forked call, with its own to-tag) replaces
    /// the first: the latest answer wins and the rules are updated, not duplicated. An answer
    /// with more media lines than the offer is `BadSdp`; a failed answer changes nothing.
    pub fn answer(&mut self, now: Duration, signal: &Signal) -> Result<Vec<u8>, SessionError> {
        let (parsed, media) = sdp::describe(&signal.sdp)?;
        let call = self
            .calls
            .get_mut(&signal.call_id)
            .ok_or_else(|| SessionError::UnknownCall(signal.call_id.clone()))?;
        let answerer = call.offerer.other();
        let offered = call.parties[call.offerer.index()].media.len();
        if media.len() > offered {
            return Err(SessionError::BadSdp(format!(
                "the answer has {} media lines, the offer {offered}",
                media.len(),
            )));
        }
        let edit = edit_for(&call.facing, &call.ports, call.offerer, signal);
        let out = sdp::rewrite(&parsed, &edit)?;
        let party = &mut call.parties[answerer.index()];
        // The answerer's tag is the to-tag, whichever side it is; the latest branch wins.
        party.tag = signal.to_tag.clone().or(party.tag.take());
        party.signalling_source = signal.signalling_source.or(party.signalling_source);
        party.symmetry = signal.symmetry;
        party.media = media;
        call.last_signal = now;
        call.media_check_at = Duration::ZERO;
        call.strict_source |= signal.strict_source;
        Self::sync_rules(self.forwarder.as_mut(), call)?;
        if call.state == CallState::Offered {
            call.state = CallState::Established;
            call.answered.get_or_insert(now);
        }
        Ok(out)
    }

    /// Installs, updates or removes the rules of every media line to match both descriptions.
    fn sync_rules(forwarder: &mut dyn Forwarder, call: &mut Call) -> Result<(), SessionError> {
        for index in 0..call.ports.len() {
            let wanted = media_rules(
                &call.facing,
                &call.ports[index],
                &call.parties,
                index,
                call.strict_source,
            );
            let installed = &mut call.streams[index];
            let retired = &mut call.retired;
            // Streams no longer wanted (rejected, rtcp-mux now) go away; the call's totals keep
            // what they carried.
            installed.retain(|s| {
                let keep = wanted
                    .iter()
                    .any(|(side, rtcp, _)| *side == s.from && *rtcp == s.rtcp);
                if !keep {
                    match forwarder.remove(s.id) {
                        Ok(last) => {
                            let totals = if s.rtcp {
                                &mut retired.rtcp
                            } else {
                                &mut retired.rtp
                            };
                            totals[s.from.index()].add(&last);
                            retired.last_seen = retired.last_seen.max(last.last_seen);
                        }
                        Err(e) => tracing::warn!(
                            call_id = %call.call_id, stream = %s.id, error = %e,
                            "removing a stream"
                        ),
                    }
                }
                keep
            });
            for (side, rtcp, rule) in wanted {
                match installed
                    .iter_mut()
                    .find(|s| s.from == side && s.rtcp == rtcp)
                {
                    // Unchanged: rewriting it would only reset what the relay learned.
                    Some(existing) if existing.rule == rule => {}
                    Some(existing) => {
                        forwarder.update(existing.id, &rule)?;
                        existing.rule = rule;
                    }
                    None => {
                        let id = forwarder.install(&rule)?;
                        installed.push(InstalledStream {
                            id,
                            from: side,
                            rtcp,
                            rule,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Ends a call: removes its streams, frees its ports, and returns its final report.
    pub fn delete(&mut self, now: Duration, call_id: &str) -> Result<Ended, SessionError> {
        let report = self.report(now, call_id)?;
        self.drop_call(call_id);
        let ended = Ended {
            cause: TerminationCause::Deleted,
            report,
        };
        self.remember(ended.clone());
        Ok(ended)
    }

    fn remember(&mut self, ended: Ended) {
        if self.ended.len() == ENDED_KEPT {
            self.ended.pop_front();
        }
        self.ended.push_back(ended);
    }

    /// The last calls that ended (at most [`ENDED_KEPT`]), oldest first.
    pub fn recently_ended(&self) -> impl Iterator<Item = &Ended> {
        self.ended.iter()
    }

    fn drop_call(&mut self, call_id: &str) {
        if let Some(call) = self.calls.remove(call_id) {
            for stream in call.streams.iter().flatten() {
                if let Err(e) = self.forwarder.remove(stream.id) {
                    tracing::warn!(%call_id, error = %e, "removing a stream");
                }
            }
            for ports in &call.ports {
                self.pools[call.facing[0].interface].release(ports.rtp[0]);
                self.pools[call.facing[1].interface].release(ports.rtp[1]);
            }
        }
    }

    /// A call's state and counters now.
    pub fn report(&self, now: Duration, call_id: &str) -> Result<CallReport, SessionError> {
        let call = self
            .calls
            .get(call_id)
            .ok_or_else(|| SessionError::UnknownCall(call_id.to_owned()))?;
        let secs = |d: Duration| d.as_secs_f64();
        let mut report = CallReport {
            call_id: call.call_id.clone(),
            label: call.label.clone(),
            state: call.state,
            backend: self.forwarder.kind().name(),
            from_tag: call.parties[0].tag.clone(),
            to_tag: call.parties[1].tag.clone(),
            age_s: secs(now.saturating_sub(call.created)),
            duration_s: call.answered.map(|a| secs(now.saturating_sub(a))),
            created_s: secs(call.created),
            last_signal_s: secs(call.last_signal),
            rtp: call.retired.rtp,
            rtcp: call.retired.rtcp,
            last_packet_age_s: None,
            streams: Vec::new(),
        };
        let mut last_seen = call.retired.last_seen;
        for (index, streams) in call.streams.iter().enumerate() {
            for s in streams {
                // A stream the relay lost must not make the call unreportable (and so
                // undeletable): it counts as silent.
                let counters = self.forwarder.stream_counters(s.id).unwrap_or_else(|e| {
                    tracing::warn!(%call_id, stream = %s.id, error = %e, "stream counters");
                    StreamCounters::default()
                });
                let totals = if s.rtcp {
                    &mut report.rtcp
                } else {
                    &mut report.rtp
                };
                totals[s.from.index()].add(&counters);
                last_seen = last_seen.max(counters.last_seen);
                let desc = call.parties[s.from.index()].media.get(index);
                let port = call.ports[index].rtp[s.from.index()] + u16::from(s.rtcp);
                let sdp_peer = desc.map_or(s.rule.expected_peer, |d| {
                    Some(if s.rtcp { d.rtcp } else { d.rtp })
                });
                report.streams.push(StreamReport {
                    media: index,
                    kind: desc.map_or_else(String::new, |d| d.kind.clone()),
                    from: s.from,
                    rtcp: s.rtcp,
                    relay: SocketAddrV4::new(call.facing[s.from.index()].addr, port),
                    sdp_peer: sdp_peer.unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
                    latched_peer: self.forwarder.latched_peer(s.id).unwrap_or_default(),
                    packets: counters.packets,
                    bytes: counters.bytes,
                    last_packet_age_s: counters.last_seen.map(|t| secs(now.saturating_sub(t))),
                });
            }
        }
        report.last_packet_age_s = last_seen.map(|t| secs(now.saturating_sub(t)));
        Ok(report)
    }

    /// Reports of every active call.
    pub fn reports(&self, now: Duration) -> Vec<CallReport> {
        let mut reports: Vec<_> = self
            .calls
            .keys()
            .filter_map(|id| self.report(now, id).ok())
            .collect();
        reports.sort_by(|a, b| a.created_s.total_cmp(&b.created_s));
        reports
    }

    /// Ends the calls whose timeouts fired and returns them with their final counters.
    pub fn poll(&mut self, now: Duration) -> Vec<Ended> {
        let t = self.config.timeouts;
        let mut expired = Vec::new();
        for (id, call) in self.calls.iter_mut() {
            let cause = match call.state {
                // Counted from the latest offer: a re-sent offer is still outstanding.
                CallState::Offered => (now.saturating_sub(call.last_signal) >= t.offer)
                    .then_some(TerminationCause::OfferTimeout),
                CallState::Established => {
                    let answered = call.answered.unwrap_or(call.created);
                    if t.max_duration
                        .is_some_and(|max| now.saturating_sub(answered) >= max)
                    {
                        Some(TerminationCause::MaxDuration)
                    } else if now < call.media_check_at {
                        None
                    } else {
                        let mut last = answered
                            .max(call.last_signal)
                            .max(call.retired.last_seen.unwrap_or_default());
                        for s in call.streams.iter().flatten() {
                            if let Ok(c) = self.forwarder.stream_counters(s.id) {
                                last = last.max(c.last_seen.unwrap_or_default());
                            }
                        }
                        // A party that holds the other sends nothing, or only music on hold.
                        let limit = if call_on_hold(&call.parties) {
                            t.hold
                        } else {
                            t.media
                        };
                        if now.saturating_sub(last) >= limit {
                            Some(TerminationCause::MediaTimeout)
                        } else {
                            // Nothing can expire before the last packet plus the limit.
                            call.media_check_at = last + limit;
                            None
                        }
                    }
                }
            };
            if let Some(cause) = cause {
                expired.push((id.clone(), cause));
            }
        }
        let mut ended = Vec::new();
        for (id, cause) in expired {
            match self.report(now, &id) {
                Ok(report) => {
                    tracing::info!(call_id = %id, cause = cause.name(), "call ended by the relay");
                    ended.push(Ended { cause, report });
                }
                Err(e) => tracing::warn!(call_id = %id, error = %e, "final counters"),
            }
            self.drop_call(&id);
        }
        for e in &ended {
            self.remember(e.clone());
        }
        ended
    }
}

/// The SDP edit for the party `toward`, which will receive this SDP: every media line advertises
/// the relay's address and port facing `toward`, so that its packets go to the relay.
fn edit_for(facing: &[Facing; 2], ports: &[MediaPorts], toward: Side, signal: &Signal) -> SdpEdit {
    let facing = &facing[toward.index()];
    SdpEdit {
        media: ports
            .iter()
            .map(|p| {
                let rtp = p.rtp[toward.index()];
                Some((facing.advertised, rtp, rtp + 1))
            })
            .collect(),
        origin: signal.replace_origin.then_some(facing.advertised),
        session_connection: facing.advertised,
        ice: signal.ice,
    }
}
