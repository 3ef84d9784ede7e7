//! The SIP proxy's media relay ([`MediaRelay`]) over the session manager: every SDP the proxy
//! forwards is anchored on the relay by [`SessionManager::offer`] / [`SessionManager::answer`],
//! and a call's media is released by [`SessionManager::delete`] when the proxy is done with it.
//!
//! # Tags
//!
//! The proxy names a call by its Call-ID, the caller's From tag and the callee's To tag
//! ([`CallRef`]). The session manager wants rtpengine's view: an offer's `from_tag` is the
//! sender's tag, an answer's `to_tag` the answerer's. The bridge translates by the leg that sent
//! the SDP, so a re-INVITE from the callee is a re-offer from the callee's party.
//!
//! # Relay interfaces
//!
//! With several relay interfaces (one toward the access network, one toward the carriers, say),
//! each side of a call gets the interface whose networks hold its address: the sender's by the
//! signalling source of the first offer, the receiver's by [`MediaBridge::set_target`], the
//! address the proxy is about to send the request to (the composing layer sets it from the
//! Request-URI before each input). Failing that, with exactly two interfaces the receiver gets
//! the one the sender does not have; otherwise the first interface serves.
//!
//! # Final counters
//!
//! `delete` consumes the call's final report; the bridge keeps the last one per call
//! ([`MediaBridge::take_ended`]) for the CDR written when the proxy reports the call ended.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sluice_sip::proxy::{CallRef, Cidr, Leg, MediaError, MediaRelay};

use crate::session::manager::Ended;
use crate::session::{SessionError, SessionManager, Signal};

/// A relay interface as the bridge sees it: its name in the session manager and the networks
/// reached through it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeInterface {
    pub name: String,
    pub networks: Vec<Cidr>,
}

/// What the bridge knows of a call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgeCall {
    /// The caller's From tag.
    pub from_tag: String,
    /// The callee's To tag, once an SDP from the callee carried it.
    pub to_tag: Option<String>,
    /// Whether the caller is the session manager's side A (it made the first offer); side A's
    /// counters are then what the caller sent.
    pub caller_is_a: bool,
    /// The relay interfaces facing the caller and the callee.
    facing: [String; 2],
}

/// The [`MediaRelay`] the proxy owns, over the manager the API and the timeout loop share.
pub struct MediaBridge {
    manager: Arc<Mutex<SessionManager>>,
    clock: fn() -> Duration,
    interfaces: Vec<BridgeInterface>,
    target: Option<IpAddr>,
    calls: HashMap<String, BridgeCall>,
    ended: HashMap<String, Ended>,
}

fn lock(m: &Mutex<SessionManager>) -> MutexGuard<'_, SessionManager> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn media_error(e: SessionError) -> MediaError {
    match e {
        SessionError::BadSdp(why) => MediaError::BadSdp(why),
        SessionError::Unsupported(why) => MediaError::BadSdp(format!("unsupported: {why}")),
        other => MediaError::Unavailable(other.to_string()),
    }
}

fn index(leg: Leg) -> usize {
    match leg {
        Leg::Caller => 0,
        Leg::Callee => 1,
    }
}

impl MediaBridge {
    /// A bridge over `manager`, reading `clock` for `now` (the clock of the relay's counters).
    /// `interfaces` must name the manager's interfaces.
    pub fn new(
        manager: Arc<Mutex<SessionManager>>,
        clock: fn() -> Duration,
        interfaces: Vec<BridgeInterface>,
    ) -> Self {
        Self {
            manager,
            clock,
            interfaces,
            target: None,
            calls: HashMap::new(),
            ended: HashMap::new(),
        }
    }

    /// Where the request being handled goes, if known: picks the callee's relay interface.
    pub fn set_target(&mut self, target: Option<IpAddr>) {
        self.target = target;
    }

    /// The call's tags and sides, while its media is up.
    pub fn call(&self, call_id: &str) -> Option<&BridgeCall> {
        self.calls.get(call_id)
    }

    /// The final report of a call whose media was deleted, once.
    pub fn take_ended(&mut self, call_id: &str) -> Option<(BridgeCall, Ended)> {
        let ended = self.ended.remove(call_id)?;
        let call = self.calls.remove(call_id).unwrap_or_default();
        Some((call, ended))
    }

    /// Keeps the report of a call the manager ended by itself (media timeout), for when the
    /// proxy reports the call ended (its `delete` then finds nothing).
    pub fn keep_ended(&mut self, ended: Ended) {
        self.ended.insert(ended.report.call_id.clone(), ended);
    }

    /// Forgets a call (its CDR is written, or it never had media).
    pub fn forget(&mut self, call_id: &str) {
        self.calls.remove(call_id);
        self.ended.remove(call_id);
    }

    fn facing_index(&self, ip: IpAddr) -> Option<usize> {
        self.interfaces
            .iter()
            .position(|i| i.networks.iter().any(|n| n.contains(ip)))
    }

    /// The interfaces facing (sender, receiver) of a first offer from `source`.
    fn choose_facing(&self, source: IpAddr) -> [String; 2] {
        let name = |i: usize| {
            self.interfaces
                .get(i)
                .map(|x| x.name.clone())
                .unwrap_or_default()
        };
        let sender = self.facing_index(source);
        let receiver = self.target.and_then(|t| self.facing_index(t));
        let other = |i: usize| (self.interfaces.len() == 2).then_some(1 - i);
        let (s, r) = match (sender, receiver) {
            (Some(s), Some(r)) => (s, r),
            (Some(s), None) => (s, other(s).unwrap_or(s)),
            (None, Some(r)) => (other(r).unwrap_or(r), r),
            (None, None) => (0, 0),
        };
        [name(s), name(r)]
    }

    fn signal(&self, call: &CallRef, sdp: &[u8], source: IpAddr, sender: Leg) -> Signal {
        let known = self.calls.get(&call.call_id);
        let caller_tag = call.from_tag.clone();
        let callee_tag = call
            .to_tag
            .clone()
            .or_else(|| known.and_then(|c| c.to_tag.clone()));
        let direction = known.map(|c| {
            [
                c.facing[index(sender)].clone(),
                c.facing[index(sender.other())].clone(),
            ]
        });
        let (from_tag, to_tag) = match sender {
            Leg::Caller => (caller_tag, callee_tag),
            Leg::Callee => (callee_tag.unwrap_or_default(), Some(caller_tag)),
        };
        Signal {
            call_id: call.call_id.clone(),
            from_tag,
            to_tag,
            sdp: sdp.to_vec(),
            signalling_source: match source {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(v6) => v6.to_ipv4_mapped(),
            },
            direction,
            // A phone's o= line names its private address; the other party should see only
            // the relay, as in c= (what rtpengine does with `replace-origin`).
            replace_origin: true,
            ..Signal::default()
        }
    }

    /// Registers the call on its first SDP.
    fn track(&mut self, call: &CallRef, source: IpAddr, sender: Leg) {
        if !self.calls.contains_key(&call.call_id) {
            let [s, r] = self.choose_facing(source);
            let facing = match sender {
                Leg::Caller => [s, r],
                Leg::Callee => [r, s],
            };
            self.calls.insert(
                call.call_id.clone(),
                BridgeCall {
                    from_tag: call.from_tag.clone(),
                    to_tag: call.to_tag.clone(),
                    caller_is_a: sender == Leg::Caller,
                    facing,
                },
            );
        }
        // A new call under a Call-ID that ended before: its old report is stale.
        self.ended.remove(&call.call_id);
        if let (Some(c), Some(tag)) = (self.calls.get_mut(&call.call_id), &call.to_tag) {
            c.to_tag = Some(tag.clone());
        }
    }
}

impl MediaRelay for MediaBridge {
    fn offer(
        &mut self,
        call: &CallRef,
        sdp: &[u8],
        source: IpAddr,
        toward: Leg,
    ) -> Result<Vec<u8>, MediaError> {
        let sender = toward.other();
        let new = !self.calls.contains_key(&call.call_id);
        self.track(call, source, sender);
        let signal = self.signal(call, sdp, source, sender);
        let result = lock(&self.manager).offer((self.clock)(), &signal);
        if result.is_err() && new {
            self.calls.remove(&call.call_id);
        }
        result.map_err(media_error)
    }

    fn answer(
        &mut self,
        call: &CallRef,
        sdp: &[u8],
        source: IpAddr,
        toward: Leg,
    ) -> Result<Vec<u8>, MediaError> {
        let sender = toward.other();
        self.track(call, source, sender);
        let mut signal = self.signal(call, sdp, source, sender);
        // An answer names the offerer's tag as from-tag and the answerer's as to-tag.
        let sender_tag = std::mem::take(&mut signal.from_tag);
        signal.from_tag = signal.to_tag.take().unwrap_or_default();
        signal.to_tag = Some(sender_tag).filter(|t| !t.is_empty());
        lock(&self.manager)
            .answer((self.clock)(), &signal)
            .map_err(media_error)
    }

    fn delete(&mut self, call_id: &str) {
        match lock(&self.manager).delete((self.clock)(), call_id) {
            Ok(ended) => {
                self.ended.insert(call_id.to_owned(), ended);
            }
            // Ended by the manager already (its report is kept), or never had media.
            Err(SessionError::UnknownCall(_)) => {}
            Err(e) => tracing::warn!(%call_id, error = %e, "deleting a call's media"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::Ipv4Addr;

    use crate::session::tests::FakeForwarder;
    use crate::session::{RelayInterface, SessionConfig, Timeouts};

    fn bridge() -> MediaBridge {
        let iface = |name: &str, addr: Ipv4Addr, ports| RelayInterface {
            name: name.into(),
            addr,
            advertised: addr,
            ports,
        };
        let manager = SessionManager::new(
            SessionConfig {
                interfaces: vec![
                    iface("a", Ipv4Addr::LOCALHOST, 41000..=41099),
                    iface("b", Ipv4Addr::new(127, 0, 0, 2), 41100..=41199),
                ],
                timeouts: Timeouts::default(),
            },
            Box::new(FakeForwarder::default()),
        )
        .expect("manager");
        MediaBridge::new(
            Arc::new(Mutex::new(manager)),
            || Duration::from_secs(1),
            vec![
                BridgeInterface {
                    name: "a".into(),
                    networks: vec![Cidr::parse("10.1.0.0/16").unwrap()],
                },
                BridgeInterface {
                    name: "b".into(),
                    networks: vec![Cidr::parse("10.2.0.0/16").unwrap()],
                },
            ],
        )
    }

    fn sdp(ip: &str, port: u16) -> Vec<u8> {
        format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn offer_answer_delete_through_the_manager() {
        let mut b = bridge();
        let mut call = CallRef {
            call_id: "c1".into(),
            from_tag: "ft".into(),
            to_tag: None,
        };
        let caller: IpAddr = "10.1.0.5".parse().unwrap();
        let callee: IpAddr = "10.2.0.7".parse().unwrap();
        b.set_target(Some(callee));
        let out = b
            .offer(&call, &sdp("10.1.0.5", 4000), caller, Leg::Callee)
            .expect("offer");
        let out = String::from_utf8(out).unwrap();
        // Toward the callee: the relay address on the callee's interface, in c= and o=.
        assert!(out.contains("c=IN IP4 127.0.0.2"), "{out}");
        assert!(out.contains("o=- 1 1 IN IP4 127.0.0.2"), "{out}");
        assert_eq!(
            b.call("c1").unwrap().facing,
            ["a".to_owned(), "b".to_owned()]
        );
        call.to_tag = Some("tt".into());
        let out = b
            .answer(&call, &sdp("10.2.0.7", 5000), callee, Leg::Caller)
            .expect("answer");
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("c=IN IP4 127.0.0.1"), "{out}");
        assert!(out.contains("o=- 1 1 IN IP4 127.0.0.1"), "{out}");
        b.delete("c1");
        let (c, ended) = b.take_ended("c1").expect("final report");
        assert!(c.caller_is_a);
        assert_eq!(c.to_tag.as_deref(), Some("tt"));
        assert_eq!(ended.report.call_id, "c1");
        assert!(b.take_ended("c1").is_none());
    }

    #[test]
    fn bad_sdp_is_488() {
        let mut b = bridge();
        let call = CallRef {
            call_id: "c2".into(),
            from_tag: "ft".into(),
            to_tag: None,
        };
        let e = b
            .offer(&call, b"not sdp", "10.1.0.5".parse().unwrap(), Leg::Callee)
            .expect_err("refused");
        assert_eq!(e.status().0, 488);
        assert!(b.call("c2").is_none());
    }
}
