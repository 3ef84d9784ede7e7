//! What an accounting record says in RADIUS: the attributes of each Accounting-Request, and
//! the mapping of our termination causes onto Acct-Terminate-Cause.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::packet::{Attribute, Value};
use crate::cdr::{CallInfo, MediaCounters, TerminationCause};

/// RFC 2865 / 2866 / 2869 / 3162 attribute types.
pub mod types {
    pub const USER_NAME: u8 = 1;
    pub const NAS_IP_ADDRESS: u8 = 4;
    pub const CALLED_STATION_ID: u8 = 30;
    pub const CALLING_STATION_ID: u8 = 31;
    pub const NAS_IDENTIFIER: u8 = 32;
    pub const ACCT_STATUS_TYPE: u8 = 40;
    pub const ACCT_DELAY_TIME: u8 = 41;
    pub const ACCT_INPUT_OCTETS: u8 = 42;
    pub const ACCT_OUTPUT_OCTETS: u8 = 43;
    pub const ACCT_SESSION_ID: u8 = 44;
    pub const ACCT_SESSION_TIME: u8 = 46;
    pub const ACCT_INPUT_PACKETS: u8 = 47;
    pub const ACCT_OUTPUT_PACKETS: u8 = 48;
    pub const ACCT_TERMINATE_CAUSE: u8 = 49;
    pub const ACCT_INPUT_GIGAWORDS: u8 = 52;
    pub const ACCT_OUTPUT_GIGAWORDS: u8 = 53;
    pub const EVENT_TIMESTAMP: u8 = 55;
    pub const NAS_IPV6_ADDRESS: u8 = 95;
}

/// Sluice's vendor attributes (`dictionary.sluice`).
pub mod vsa {
    pub const TERMINATION_CAUSE: u8 = 1;
    pub const SIP_FROM_TAG: u8 = 2;
    pub const SIP_TO_TAG: u8 = 3;
    pub const SIP_METHOD: u8 = 4;
    pub const SIP_RESPONSE_CODE: u8 = 5;
    pub const SOURCE_IP: u8 = 6;
    pub const CANONICAL_URI: u8 = 7;
    pub const GATEWAY: u8 = 8;
    pub const CARRIER: u8 = 9;
    pub const NODE: u8 = 10;
    pub const START_TIME: u8 = 11;
    pub const SIP_USER_AGENTS: u8 = 12;
}

/// The enterprise number of `dictionary.sluice`: 32473, reserved for documentation (RFC 5612)
/// until Sluice has one of its own.
pub const DEFAULT_VENDOR_ID: u32 = 32473;

/// Acct-Status-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// 1: the call was answered.
    Start,
    /// 3: the counters of a call still up.
    Interim,
    /// 2: an answered call ended.
    Stop,
    /// 15 (`Failed` in FreeRADIUS's dictionary): a call that was never answered (cancelled,
    /// refused), as the MSP / OpenSIPS platforms account missed calls. No Start came before it.
    Failed,
}

impl RecordKind {
    pub fn status_type(self) -> u32 {
        match self {
            Self::Start => 1,
            Self::Stop => 2,
            Self::Interim => 3,
            Self::Failed => 15,
        }
    }

    /// As the outbox stores it (the triggers write these names).
    #[cfg(test)]
    pub fn name(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Interim => "interim",
            Self::Stop => "stop",
            Self::Failed => "failed",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "start" => Self::Start,
            "interim" => Self::Interim,
            "stop" => Self::Stop,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// One accounting record waiting to go out: a row of the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcctRecord {
    /// Its place in the outbox.
    pub seq: i64,
    pub kind: RecordKind,
    pub call: CallInfo,
    pub sip_response_code: u16,
    /// When the call was answered (`None` for [`RecordKind::Failed`]).
    pub start: Option<SystemTime>,
    /// When what the record reports happened: the answer (Start), the counters' reading
    /// (Interim), the end (Stop, Failed). Event-Timestamp, and the base of Acct-Delay-Time.
    pub event: SystemTime,
    /// Why the call ended (Stop, Failed).
    pub cause: Option<TerminationCause>,
    pub counters: MediaCounters,
}

/// Who Sluice is to the RADIUS server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nas {
    /// NAS-Identifier.
    pub identifier: String,
    /// NAS-IP-Address or NAS-IPv6-Address; `None`: the address the request leaves from.
    pub ip: Option<IpAddr>,
    /// The Vendor-Id of Sluice's own attributes.
    pub vendor: u32,
}

/// Acct-Terminate-Cause (RFC 2866 §5.10) for our cause:
///
/// | our cause | Acct-Terminate-Cause | why |
/// |---|---|---|
/// | `bye:caller`, `bye:callee` | User-Request (1) | a party hung up; which one is in Sluice-Termination-Cause |
/// | `cancel` | User-Request (1) | the caller gave up (only on Failed records, which carry no Acct-Terminate-Cause) |
/// | `media-timeout` | Idle-Timeout (4) | no media crossed the relay for the media timeout |
/// | `max-duration` | Session-Timeout (5) | the call reached its maximum duration |
/// | `signalling-lost` | Lost-Service (3) | the dialog's signalling path went away |
/// | `restart` | NAS-Reboot (11) | Sluice stopped with the call up; closed at the next start |
/// | `failed:<code>` | Service-Unavailable (15) | the INVITE was refused (only on Failed records) |
pub fn terminate_cause(cause: TerminationCause) -> u32 {
    match cause {
        TerminationCause::Bye { .. } | TerminationCause::Cancel => 1,
        TerminationCause::SignallingLost => 3,
        TerminationCause::MediaTimeout => 4,
        TerminationCause::MaxDuration => 5,
        TerminationCause::Restart => 11,
        TerminationCause::Failed(_) => 15,
    }
}

/// UNIX seconds, as RADIUS's 32-bit `date` (0 before 1970, the largest after 2106).
pub fn unix_seconds(t: SystemTime) -> u32 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

fn whole_seconds(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// A counter as a 32-bit attribute and its Gigawords (RFC 2869 §5.1: how many times the
/// 32-bit counter wrapped).
fn split_octets(n: u64) -> (u32, u32) {
    (
        (n & 0xffff_ffff) as u32,
        u32::try_from(n >> 32).unwrap_or(u32::MAX),
    )
}

/// The attributes of `record`'s Accounting-Request sent at `now` (for Acct-Delay-Time) from
/// `source` (NAS-IP-Address when [`Nas::ip`] is not set).
///
/// Every record: Acct-Status-Type, Acct-Session-Id (the Call-ID), Event-Timestamp,
/// Acct-Delay-Time (seconds from the event to this transmission, so a record sent late after an
/// outage still dates itself), NAS-Identifier, NAS-IP-Address or NAS-IPv6-Address,
/// Calling-Station-Id (From URI), Called-Station-Id (To URI), User-Name (the billing party, when
/// known), and the vendor attributes Sluice-Sip-From-Tag, Sluice-Sip-To-Tag, Sluice-Sip-Method,
/// Sluice-Sip-Response-Code, Sluice-Source-IP, Sluice-Canonical-URI, Sluice-Gateway,
/// Sluice-Carrier, Sluice-Node, Sluice-Sip-User-Agents (each when known), Sluice-Start-Time
/// (answered calls).
/// Stop and Interim-Update add Acct-Session-Time (whole seconds since the answer, rounded
/// down), Acct-Input-Octets/-Gigawords and Acct-Input-Packets (from the caller),
/// Acct-Output-Octets/-Gigawords and Acct-Output-Packets (from the callee). Stop adds
/// Acct-Terminate-Cause; Stop and Failed add Sluice-Termination-Cause.
pub fn attributes(
    record: &AcctRecord,
    nas: &Nas,
    source: Option<IpAddr>,
    now: SystemTime,
) -> Vec<Attribute> {
    use types::*;
    use Value::*;
    let call = &record.call;
    let vendor = |kind, value| Attribute::vendor(nas.vendor, kind, value);
    let mut a = vec![
        Attribute::standard(ACCT_STATUS_TYPE, Integer(record.kind.status_type())),
        Attribute::standard(ACCT_SESSION_ID, Text(call.call_id.clone())),
        Attribute::standard(EVENT_TIMESTAMP, Date(unix_seconds(record.event))),
        Attribute::standard(
            ACCT_DELAY_TIME,
            Integer(whole_seconds(
                now.duration_since(record.event).unwrap_or_default(),
            )),
        ),
        Attribute::standard(NAS_IDENTIFIER, Text(nas.identifier.clone())),
    ];
    match nas.ip.or(source) {
        Some(IpAddr::V4(ip)) => a.push(Attribute::standard(NAS_IP_ADDRESS, Ipv4(ip))),
        Some(IpAddr::V6(ip)) => a.push(Attribute::standard(NAS_IPV6_ADDRESS, Ipv6(ip))),
        None => {}
    }
    a.push(Attribute::standard(
        CALLING_STATION_ID,
        Text(call.from_uri.clone()),
    ));
    a.push(Attribute::standard(
        CALLED_STATION_ID,
        Text(call.to_uri.clone()),
    ));
    if let Some(party) = &call.billing_party {
        a.push(Attribute::standard(USER_NAME, Text(party.clone())));
    }
    if matches!(record.kind, RecordKind::Stop | RecordKind::Interim) {
        let session = record
            .start
            .and_then(|start| record.event.duration_since(start).ok())
            .unwrap_or_default();
        let (in_octets, in_giga) = split_octets(record.counters.from_caller.bytes);
        let (out_octets, out_giga) = split_octets(record.counters.from_callee.bytes);
        let packets = |n: u64| Integer(u32::try_from(n).unwrap_or(u32::MAX));
        a.extend([
            Attribute::standard(ACCT_SESSION_TIME, Integer(whole_seconds(session))),
            Attribute::standard(ACCT_INPUT_OCTETS, Integer(in_octets)),
            Attribute::standard(ACCT_INPUT_GIGAWORDS, Integer(in_giga)),
            Attribute::standard(
                ACCT_INPUT_PACKETS,
                packets(record.counters.from_caller.packets),
            ),
            Attribute::standard(ACCT_OUTPUT_OCTETS, Integer(out_octets)),
            Attribute::standard(ACCT_OUTPUT_GIGAWORDS, Integer(out_giga)),
            Attribute::standard(
                ACCT_OUTPUT_PACKETS,
                packets(record.counters.from_callee.packets),
            ),
        ]);
    }
    if let Some(cause) = record.cause {
        // RFC 2866 §5.10: Acct-Terminate-Cause only in a Stop.
        if record.kind == RecordKind::Stop {
            a.push(Attribute::standard(
                ACCT_TERMINATE_CAUSE,
                Integer(terminate_cause(cause)),
            ));
        }
        a.push(vendor(vsa::TERMINATION_CAUSE, Text(cause.to_string())));
    }
    a.push(vendor(vsa::SIP_FROM_TAG, Text(call.from_tag.clone())));
    if let Some(tag) = &call.to_tag {
        a.push(vendor(vsa::SIP_TO_TAG, Text(tag.clone())));
    }
    a.push(vendor(vsa::SIP_METHOD, Text(call.sip_method.clone())));
    a.push(vendor(
        vsa::SIP_RESPONSE_CODE,
        Integer(u32::from(record.sip_response_code)),
    ));
    a.push(vendor(vsa::SOURCE_IP, Text(call.source_ip.to_string())));
    a.push(vendor(vsa::CANONICAL_URI, Text(call.canonical_uri.clone())));
    for (kind, value) in [(vsa::GATEWAY, &call.gateway), (vsa::CARRIER, &call.carrier)] {
        if let Some(v) = value {
            a.push(vendor(kind, Text(v.clone())));
        }
    }
    a.push(vendor(vsa::NODE, Text(call.node.clone())));
    if let Some(agents) = &call.user_agents {
        a.push(vendor(vsa::SIP_USER_AGENTS, Text(agents.clone())));
    }
    if let Some(start) = record.start {
        a.push(vendor(vsa::START_TIME, Date(unix_seconds(start))));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::{DirectionCounters, Party};
    use crate::radius::packet::AttrType;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(s)
    }

    fn call() -> CallInfo {
        CallInfo {
            call_id: "c1@10.0.0.1".into(),
            from_uri: "sip:alice@example.com".into(),
            to_uri: "sip:+4930123456@example.com".into(),
            from_tag: "ft".into(),
            to_tag: Some("tt".into()),
            source_ip: "2001:db8::5".parse().unwrap(),
            billing_party: Some("alice@example.com".into()),
            user_agents: Some("alicephone/1.0 + bobphone/2.0".into()),
            canonical_uri: "sip:+4930123456@198.51.100.7".into(),
            sip_method: "INVITE".into(),
            gateway: Some("198.51.100.7:5060".into()),
            carrier: None,
            node: "sbc-1".into(),
        }
    }

    fn stop() -> AcctRecord {
        AcctRecord {
            seq: 1,
            kind: RecordKind::Stop,
            call: call(),
            sip_response_code: 200,
            start: Some(t(1_717_000_000_900)),
            event: t(1_717_000_062_800),
            cause: Some(TerminationCause::MediaTimeout),
            counters: MediaCounters {
                from_caller: DirectionCounters {
                    packets: 5_000_000_000,
                    bytes: (3 << 32) + 17,
                },
                from_callee: DirectionCounters {
                    packets: 49,
                    bytes: 8428,
                },
            },
        }
    }

    fn nas() -> Nas {
        Nas {
            identifier: "sbc-1".into(),
            ip: None,
            vendor: DEFAULT_VENDOR_ID,
        }
    }

    fn find(a: &[Attribute], kind: u8) -> Option<&Value> {
        a.iter()
            .find(|x| x.kind == AttrType::Standard(kind))
            .map(|x| &x.value)
    }

    fn find_vsa(a: &[Attribute], kind: u8) -> Option<&Value> {
        a.iter()
            .find(|x| {
                x.kind
                    == AttrType::Vendor {
                        vendor: DEFAULT_VENDOR_ID,
                        kind,
                    }
            })
            .map(|x| &x.value)
    }

    #[test]
    fn a_stop_carries_time_counters_and_causes() {
        use types::*;
        let now = t(1_717_000_065_000);
        let a = attributes(&stop(), &nas(), Some("192.0.2.1".parse().unwrap()), now);
        assert_eq!(find(&a, ACCT_STATUS_TYPE), Some(&Value::Integer(2)));
        assert_eq!(
            find(&a, ACCT_SESSION_ID),
            Some(&Value::Text("c1@10.0.0.1".into()))
        );
        // 61.9 s: whole seconds, rounded down.
        assert_eq!(find(&a, ACCT_SESSION_TIME), Some(&Value::Integer(61)));
        assert_eq!(find(&a, ACCT_DELAY_TIME), Some(&Value::Integer(2)));
        assert_eq!(find(&a, EVENT_TIMESTAMP), Some(&Value::Date(1_717_000_062)));
        assert_eq!(find(&a, ACCT_INPUT_OCTETS), Some(&Value::Integer(17)));
        assert_eq!(find(&a, ACCT_INPUT_GIGAWORDS), Some(&Value::Integer(3)));
        assert_eq!(
            find(&a, ACCT_INPUT_PACKETS),
            Some(&Value::Integer(u32::MAX)),
            "saturates"
        );
        assert_eq!(find(&a, ACCT_OUTPUT_OCTETS), Some(&Value::Integer(8428)));
        assert_eq!(find(&a, ACCT_OUTPUT_GIGAWORDS), Some(&Value::Integer(0)));
        assert_eq!(find(&a, ACCT_OUTPUT_PACKETS), Some(&Value::Integer(49)));
        assert_eq!(find(&a, ACCT_TERMINATE_CAUSE), Some(&Value::Integer(4)));
        assert_eq!(
            find(&a, NAS_IP_ADDRESS),
            Some(&Value::Ipv4("192.0.2.1".parse().unwrap()))
        );
        assert_eq!(
            find(&a, USER_NAME),
            Some(&Value::Text("alice@example.com".into()))
        );
        assert_eq!(
            find(&a, CALLING_STATION_ID),
            Some(&Value::Text("sip:alice@example.com".into()))
        );
        assert_eq!(
            find_vsa(&a, vsa::TERMINATION_CAUSE),
            Some(&Value::Text("media-timeout".into()))
        );
        assert_eq!(
            find_vsa(&a, vsa::SOURCE_IP),
            Some(&Value::Text("2001:db8::5".into()))
        );
        assert_eq!(find_vsa(&a, vsa::CARRIER), None, "unknown: left out");
        assert_eq!(
            find_vsa(&a, vsa::START_TIME),
            Some(&Value::Date(1_717_000_000))
        );
        assert_eq!(
            find_vsa(&a, vsa::SIP_USER_AGENTS),
            Some(&Value::Text("alicephone/1.0 + bobphone/2.0".into()))
        );
    }

    #[test]
    fn a_start_has_no_counters_nor_causes() {
        use types::*;
        let start = AcctRecord {
            kind: RecordKind::Start,
            event: t(1_717_000_000_900),
            cause: None,
            counters: MediaCounters::default(),
            ..stop()
        };
        let nas = Nas {
            ip: Some("2001:db8::1".parse().unwrap()),
            ..nas()
        };
        let a = attributes(&start, &nas, Some("192.0.2.1".parse().unwrap()), t(0));
        assert_eq!(find(&a, ACCT_STATUS_TYPE), Some(&Value::Integer(1)));
        for absent in [
            ACCT_SESSION_TIME,
            ACCT_INPUT_OCTETS,
            ACCT_TERMINATE_CAUSE,
            NAS_IP_ADDRESS,
        ] {
            assert_eq!(find(&a, absent), None, "{absent}");
        }
        assert_eq!(find_vsa(&a, vsa::TERMINATION_CAUSE), None);
        assert_eq!(
            find(&a, NAS_IPV6_ADDRESS),
            Some(&Value::Ipv6("2001:db8::1".parse().unwrap())),
            "the configured address wins"
        );
        assert_eq!(
            find(&a, ACCT_DELAY_TIME),
            Some(&Value::Integer(0)),
            "a clock behind the event: no delay"
        );
    }

    #[test]
    fn a_failed_call_has_our_cause_but_no_terminate_cause() {
        let failed = AcctRecord {
            kind: RecordKind::Failed,
            sip_response_code: 486,
            start: None,
            cause: Some(TerminationCause::Failed(486)),
            counters: MediaCounters::default(),
            ..stop()
        };
        let a = attributes(&failed, &nas(), None, t(1_717_000_062_800));
        assert_eq!(find(&a, types::ACCT_STATUS_TYPE), Some(&Value::Integer(15)));
        assert_eq!(find(&a, types::ACCT_TERMINATE_CAUSE), None);
        assert_eq!(find(&a, types::ACCT_SESSION_TIME), None);
        assert_eq!(
            find_vsa(&a, vsa::TERMINATION_CAUSE),
            Some(&Value::Text("failed:486".into()))
        );
        assert_eq!(
            find_vsa(&a, vsa::SIP_RESPONSE_CODE),
            Some(&Value::Integer(486))
        );
        assert_eq!(find_vsa(&a, vsa::START_TIME), None);
    }

    #[test]
    fn the_terminate_cause_mapping() {
        use TerminationCause::*;
        let table = [
            (Bye { by: Party::Caller }, 1),
            (Bye { by: Party::Callee }, 1),
            (Cancel, 1),
            (SignallingLost, 3),
            (MediaTimeout, 4),
            (MaxDuration, 5),
            (Restart, 11),
            (Failed(503), 15),
        ];
        for (cause, code) in table {
            assert_eq!(terminate_cause(cause), code, "{cause}");
        }
    }

    #[test]
    fn kinds_round_trip() {
        for k in [
            RecordKind::Start,
            RecordKind::Interim,
            RecordKind::Stop,
            RecordKind::Failed,
        ] {
            assert_eq!(RecordKind::from_name(k.name()), Some(k));
        }
        assert_eq!(RecordKind::from_name("nope"), None);
    }
}
