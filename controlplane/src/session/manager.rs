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
    media_rules, Facing, InstalledStream, MediaDesc, MediaPorts, Party, Side, Symmetry,
    TerminationCause, Timeouts,
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
    pub fn offer(&mut self, now: Duration, signal: &Signal) -> Result<Vec<u8>, SessionError> {
        let (parsed, media) = sdp::describe(&signal.sdp)?;
        let (sender_iface, receiver_iface) = match &signal.direction {
            Some([from, to]) => (self.interface(Some(from))?, self.interface(Some(to))?),
            None => (0, 0),
        };
        if !self.calls.contains_key(&signal.call_id) {
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
            };
            self.calls.insert(signal.call_id.clone(), call);
        }
        let result = self.offer_existing(now, signal, &parsed, media);
        if result.is_err() {
            // A first offer that failed leaves nothing behind.
            if self
                .calls
                .get(&signal.call_id)
                .is_some_and(|c| c.answered.is_none() && c.streams.is_empty())
            {
                self.drop_call(&signal.call_id);
            }
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
        call.offerer = offerer;
        call.last_signal = now;
        if signal.label.is_some() {
            call.label = signal.label.clone();
        }
        let party = &mut call.parties[offerer.index()];
        party.signalling_source = signal.signalling_source.or(party.signalling_source);
        party.symmetry = signal.symmetry;
        party.media = media;
        // New media lines get ports; existing ones keep theirs (a re-INVITE keeps the streams).
        while call.ports.len() < call.parties[offerer.index()].media.len() {
            let a = self.pools[call.facing[0].interface].allocate()?;
            let b = match self.pools[call.facing[1].interface].allocate() {
                Ok(port) => port,
                Err(e) => {
                    self.pools[call.facing[0].interface].release(a);
                    return Err(e.into());
                }
            };
            call.ports.push(MediaPorts { rtp: [a, b] });
            call.streams.push(Vec::new());
        }
        let answerer = offerer.other();
        let edit = edit_for(call, answerer, signal);
        let out = sdp::rewrite(parsed, &edit)?;
        if call.state == CallState::Established {
            Self::sync_rules(self.forwarder.as_mut(), call)?;
        }
        Ok(out)
    }

    /// The answer to the outstanding offer: completes the streams and returns the SDP to forward.
    pub fn answer(&mut self, now: Duration, signal: &Signal) -> Result<Vec<u8>, SessionError> {
        let (parsed, media) = sdp::describe(&signal.sdp)?;
        let call = self
            .calls
            .get_mut(&signal.call_id)
            .ok_or_else(|| SessionError::UnknownCall(signal.call_id.clone()))?;
        let answerer = call.offerer.other();
        // ng answers carry the offerer's tag as from-tag and the answerer's as to-tag; a second
        // branch of a forked call answering replaces the first (the latest answer wins).
        let tag = match answerer {
            Side::B => signal.to_tag.clone(),
            Side::A => Some(signal.from_tag.clone()),
        };
        if media.len() > call.ports.len() {
            return Err(SessionError::BadSdp(format!(
                "the answer has {} media lines, the offer {}",
                media.len(),
                call.ports.len()
            )));
        }
        let party = &mut call.parties[answerer.index()];
        party.tag = tag.or(party.tag.take());
        party.signalling_source = signal.signalling_source.or(party.signalling_source);
        party.symmetry = signal.symmetry;
        party.media = media;
        call.last_signal = now;
        call.strict_source |= signal.strict_source;
        let edit = edit_for(call, call.offerer, signal);
        let out = sdp::rewrite(&parsed, &edit)?;
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
            // Streams no longer wanted (rejected, rtcp-mux now) go away.
            installed.retain(|s| {
                let keep = wanted
                    .iter()
                    .any(|(side, rtcp, _)| *side == s.from && *rtcp == s.rtcp);
                if !keep {
                    let _ = forwarder.remove(s.id);
                }
                keep
            });
            for (side, rtcp, rule) in wanted {
                match installed.iter().find(|s| s.from == side && s.rtcp == rtcp) {
                    Some(existing) => forwarder.update(existing.id, &rule)?,
                    None => {
                        let id = forwarder.install(&rule)?;
                        installed.push(InstalledStream {
                            id,
                            from: side,
                            rtcp,
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
            rtp: [Totals::default(); 2],
            rtcp: [Totals::default(); 2],
            last_packet_age_s: None,
            streams: Vec::new(),
        };
        let mut last_seen: Option<Duration> = None;
        for (index, streams) in call.streams.iter().enumerate() {
            for s in streams {
                let counters = self.forwarder.stream_counters(s.id)?;
                let totals = if s.rtcp {
                    &mut report.rtcp
                } else {
                    &mut report.rtp
                };
                totals[s.from.index()].add(&counters);
                last_seen = last_seen.max(counters.last_seen);
                let desc = &call.parties[s.from.index()].media[index];
                let port = call.ports[index].rtp[s.from.index()] + u16::from(s.rtcp);
                report.streams.push(StreamReport {
                    media: index,
                    kind: desc.kind.clone(),
                    from: s.from,
                    rtcp: s.rtcp,
                    relay: SocketAddrV4::new(call.facing[s.from.index()].addr, port),
                    sdp_peer: if s.rtcp { desc.rtcp } else { desc.rtp },
                    latched_peer: self.forwarder.latched_peer(s.id)?,
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
        for (id, call) in &self.calls {
            let cause = match call.state {
                CallState::Offered => (now.saturating_sub(call.created) >= t.offer)
                    .then_some(TerminationCause::OfferTimeout),
                CallState::Established => {
                    let answered = call.answered.unwrap_or(call.created);
                    if t.max_duration
                        .is_some_and(|max| now.saturating_sub(answered) >= max)
                    {
                        Some(TerminationCause::MaxDuration)
                    } else {
                        let mut last = answered.max(call.last_signal);
                        for s in call.streams.iter().flatten() {
                            if let Ok(c) = self.forwarder.stream_counters(s.id) {
                                last = last.max(c.last_seen.unwrap_or_default());
                            }
                        }
                        // A party that holds the other sends nothing, or only music on hold.
                        let held = call
                            .parties
                            .iter()
                            .any(|p| !p.media.is_empty() && p.media.iter().all(MediaDesc::on_hold));
                        let limit = if held { t.hold } else { t.media };
                        (now.saturating_sub(last) >= limit)
                            .then_some(TerminationCause::MediaTimeout)
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
fn edit_for(call: &Call, toward: Side, signal: &Signal) -> SdpEdit {
    let facing = &call.facing[toward.index()];
    SdpEdit {
        media: call
            .ports
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
