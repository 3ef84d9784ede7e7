//! The registrar's location service in virtual time: register, refresh, expiry, removal, the
//! wildcard, CSeq ordering, limits, several devices and the NATed source.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_sip::registrar::{
    ContactSpec, Contacts, LocationStore, MemoryStore, OverflowPolicy, RegisterError,
    RegisterRequest, Registrar, RegistrarConfig, RegistrarConfigError, Source, Transport,
};

const AOR: &str = "sip:alice@example.com";
const T0: Duration = Duration::from_secs(1_700_000_000);
const PHONE: &str = "sip:alice@192.168.1.20:5060";
const SOFTPHONE: &str = "sip:alice@10.0.0.7:5062;transport=tcp";

fn at(s: u64) -> Duration {
    T0 + Duration::from_secs(s)
}

fn nat(port: u16) -> Source {
    Source {
        addr: SocketAddr::from(([203, 0, 113, 7], port)),
        transport: Transport::Udp,
        local: Some(SocketAddr::from(([198, 51, 100, 1], 5060))),
    }
}

fn req(
    call_id: &str,
    cseq: u32,
    contacts: Vec<ContactSpec>,
    expires: Option<u32>,
) -> RegisterRequest {
    RegisterRequest {
        call_id: call_id.to_owned(),
        cseq,
        contacts: Contacts::List(contacts),
        expires,
        source: nat(40_000),
        user_agent: Some("TestPhone/1.0".to_owned()),
    }
}

fn registrar() -> Registrar {
    Registrar::in_memory(RegistrarConfig::default()).expect("valid config")
}

fn contacts_of(r: &mut Registrar, now: Duration) -> Vec<(String, u32)> {
    r.bindings(now, AOR)
        .expect("in-memory store")
        .into_iter()
        .map(|b| (b.binding.contact, b.expires_in))
        .collect()
}

#[test]
fn register_binds_the_contact_with_the_default_expiry() {
    let mut r = registrar();
    let out = r
        .register(T0, AOR, &req("c1", 1, vec![ContactSpec::new(PHONE)], None))
        .expect("registers");
    assert_eq!((out.added, out.refreshed, out.removed), (1, 0, 0));
    assert_eq!(out.bindings.len(), 1);
    let b = &out.bindings[0];
    assert_eq!(b.expires_in, 3600);
    assert_eq!(b.binding.contact, PHONE);
    assert_eq!(b.binding.call_id, "c1");
    assert_eq!(b.binding.cseq, 1);
    assert_eq!(b.binding.user_agent.as_deref(), Some("TestPhone/1.0"));
    assert_eq!(contacts_of(&mut r, at(600)), vec![(PHONE.to_owned(), 3000)]);
}

#[test]
fn expires_header_and_contact_param_and_clamping() {
    let mut r = registrar();
    let out = r
        .register(
            T0,
            AOR,
            &req(
                "c1",
                1,
                vec![
                    ContactSpec::new(PHONE),
                    ContactSpec::new(SOFTPHONE).with_expires(100_000),
                ],
                Some(120),
            ),
        )
        .expect("registers");
    let mut got: Vec<(String, u32)> = out
        .bindings
        .iter()
        .map(|b| (b.binding.contact.clone(), b.expires_in))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![(SOFTPHONE.to_owned(), 7200), (PHONE.to_owned(), 120)],
        "param wins over header, max_expires caps"
    );
}

#[test]
fn refresh_extends_the_binding() {
    let mut r = registrar();
    r.register(
        T0,
        AOR,
        &req("c1", 1, vec![ContactSpec::new(PHONE)], Some(300)),
    )
    .expect("registers");
    let out = r
        .register(
            at(250),
            AOR,
            &req("c1", 2, vec![ContactSpec::new(PHONE)], Some(300)),
        )
        .expect("refreshes");
    assert_eq!((out.added, out.refreshed), (0, 1));
    assert_eq!(out.bindings.len(), 1);
    assert_eq!(out.bindings[0].expires_in, 300);
    assert_eq!(out.bindings[0].binding.created_at, T0);
    assert_eq!(out.bindings[0].binding.updated_at, at(250));
    // Live past the first expiry.
    assert_eq!(contacts_of(&mut r, at(400)), vec![(PHONE.to_owned(), 150)]);
}

#[test]
fn a_refresh_with_differently_cased_host_is_the_same_binding() {
    let mut r = registrar();
    r.register(T0, AOR, &req("c1", 1, vec![ContactSpec::new(PHONE)], None))
        .expect("registers");
    let out = r
        .register(
            at(1),
            AOR,
            &req(
                "c1",
                2,
                vec![ContactSpec::new("SIP:alice@192.168.1.20:5060")],
                None,
            ),
        )
        .expect("refreshes");
    assert_eq!((out.added, out.refreshed, out.bindings.len()), (0, 1, 1));
}

#[test]
fn bindings_expire_and_are_pruned() {
    let mut r = registrar();
    r.register(
        T0,
        AOR,
        &req("c1", 1, vec![ContactSpec::new(PHONE)], Some(60)),
    )
    .expect("registers");
    assert_eq!(contacts_of(&mut r, at(59)), vec![(PHONE.to_owned(), 1)]);
    assert_eq!(r.store().aor_count(), 1);
    assert!(contacts_of(&mut r, at(60)).is_empty());
    assert_eq!(r.store().aor_count(), 0, "expired bindings are deleted");
    assert_eq!(r.store().load(AOR).expect("load"), Vec::new());
}

#[test]
fn purge_expired_sweeps_every_aor() {
    let mut r = registrar();
    for (i, aor) in ["sip:a@x", "sip:b@x", "sip:c@x"].into_iter().enumerate() {
        let e = 60 * (u32::try_from(i).expect("small") + 1);
        r.register(
            T0,
            aor,
            &req("c", 1, vec![ContactSpec::new(PHONE)], Some(e)),
        )
        .expect("registers");
    }
    assert_eq!(r.purge_expired(at(59)).expect("purge"), 0);
    assert_eq!(r.purge_expired(at(120)).expect("purge"), 2);
    assert_eq!(r.store().aor_count(), 1);
}

#[test]
fn two_devices_share_an_aor() {
    let mut r = registrar();
    r.register(
        T0,
        AOR,
        &req("desk", 1, vec![ContactSpec::new(PHONE)], None),
    )
    .expect("desk phone");
    let mut soft = req("soft", 1, vec![ContactSpec::new(SOFTPHONE)], Some(600));
    soft.source = Source {
        addr: SocketAddr::from(([198, 18, 0, 9], 51_000)),
        transport: Transport::Tcp,
        local: None,
    };
    let out = r.register(at(10), AOR, &soft).expect("softphone");
    assert_eq!(out.bindings.len(), 2, "the 200 OK lists both devices");
    let live = r.bindings(at(20), AOR).expect("bindings");
    assert_eq!(live.len(), 2);
    let softphone = live
        .iter()
        .find(|b| b.binding.contact == SOFTPHONE)
        .expect("softphone bound");
    assert_eq!(softphone.binding.destination().transport, Transport::Tcp);
    assert_eq!(softphone.expires_in, 590);
    // The softphone expires first; the desk phone stays.
    assert_eq!(contacts_of(&mut r, at(700)), vec![(PHONE.to_owned(), 2900)]);
}

#[test]
fn the_nated_source_is_stored_beside_the_contact() {
    let mut r = registrar();
    let mut request = req("c1", 1, vec![ContactSpec::new(PHONE)], None);
    request.source = nat(40_123);
    r.register(T0, AOR, &request).expect("registers");
    let b = &r.bindings(at(1), AOR).expect("bindings")[0].binding;
    assert_eq!(
        b.contact, PHONE,
        "the Contact URI (private address) is kept"
    );
    assert_eq!(b.received, nat(40_123));
    assert_eq!(
        b.destination().addr,
        SocketAddr::from(([203, 0, 113, 7], 40_123))
    );
    assert_eq!(b.received.to_uri(), "sip:203.0.113.7:40123;transport=udp");
    // The NAT mapping changed: a refresh moves the destination.
    let mut again = req("c1", 2, vec![ContactSpec::new(PHONE)], None);
    again.source = nat(40_999);
    r.register(at(60), AOR, &again).expect("refresh");
    let b = &r.bindings(at(61), AOR).expect("bindings")[0].binding;
    assert_eq!(b.destination().addr.port(), 40_999);
}

#[test]
fn ipv6_source_uri() {
    let s = Source {
        addr: "[2001:db8::1]:5061".parse().expect("addr"),
        transport: Transport::Tls,
        local: None,
    };
    assert_eq!(s.to_uri(), "sip:[2001:db8::1]:5061;transport=tls");
}

#[test]
fn expires_zero_unregisters_one_contact() {
    let mut r = registrar();
    r.register(
        T0,
        AOR,
        &req(
            "c1",
            1,
            vec![ContactSpec::new(PHONE), ContactSpec::new(SOFTPHONE)],
            None,
        ),
    )
    .expect("registers");
    let out = r
        .register(
            at(5),
            AOR,
            &req("c1", 2, vec![ContactSpec::new(PHONE).with_expires(0)], None),
        )
        .expect("unregisters");
    assert_eq!(out.removed, 1);
    assert_eq!(
        contacts_of(&mut r, at(6)),
        vec![(SOFTPHONE.to_owned(), 3594)]
    );
    // Removing an unknown contact is a no-op, not an error.
    let out = r
        .register(
            at(7),
            AOR,
            &req("c1", 3, vec![ContactSpec::new("sip:nobody@h")], Some(0)),
        )
        .expect("no-op");
    assert_eq!((out.added, out.removed, out.bindings.len()), (0, 0, 1));
}

#[test]
fn wildcard_unregisters_all() {
    let mut r = registrar();
    r.register(
        T0,
        AOR,
        &req(
            "c1",
            1,
            vec![ContactSpec::new(PHONE), ContactSpec::new(SOFTPHONE)],
            None,
        ),
    )
    .expect("registers");
    let star = RegisterRequest {
        contacts: Contacts::Wildcard,
        ..req("c2", 1, Vec::new(), Some(0))
    };
    let out = r.register(at(5), AOR, &star).expect("unregisters all");
    assert_eq!(out.removed, 2);
    assert!(out.bindings.is_empty());
    assert!(contacts_of(&mut r, at(6)).is_empty());
    assert_eq!(r.store().aor_count(), 0);
}

#[test]
fn wildcard_needs_expires_zero_and_no_other_contact() {
    let mut r = registrar();
    r.register(T0, AOR, &req("c1", 1, vec![ContactSpec::new(PHONE)], None))
        .expect("registers");
    for (contacts, expires) in [
        (Contacts::Wildcard, None),
        (Contacts::Wildcard, Some(3600)),
        (Contacts::WildcardWithOthers, Some(0)),
    ] {
        let star = RegisterRequest {
            contacts,
            ..req("c2", 1, Vec::new(), expires)
        };
        let err = r.register(at(1), AOR, &star).expect_err("invalid wildcard");
        assert!(matches!(err, RegisterError::InvalidWildcard), "{err}");
        assert_eq!(err.status_code(), 400);
    }
    assert_eq!(contacts_of(&mut r, at(2)).len(), 1, "nothing removed");
}

#[test]
fn wildcard_respects_cseq_order() {
    let mut r = registrar();
    r.register(T0, AOR, &req("c1", 5, vec![ContactSpec::new(PHONE)], None))
        .expect("registers");
    let star = |cseq| RegisterRequest {
        contacts: Contacts::Wildcard,
        ..req("c1", cseq, Vec::new(), Some(0))
    };
    let err = r.register(at(1), AOR, &star(5)).expect_err("same CSeq");
    assert!(matches!(
        err,
        RegisterError::CSeqOutOfOrder { got: 5, stored: 5 }
    ));
    assert_eq!(contacts_of(&mut r, at(2)).len(), 1);
    r.register(at(3), AOR, &star(6)).expect("higher CSeq");
    assert!(contacts_of(&mut r, at(4)).is_empty());
}

#[test]
fn lower_or_equal_cseq_for_the_same_call_id_is_refused() {
    let mut r = registrar();
    r.register(
        T0,
        AOR,
        &req("c1", 10, vec![ContactSpec::new(PHONE)], Some(600)),
    )
    .expect("registers");
    for cseq in [9, 10] {
        let err = r
            .register(
                at(1),
                AOR,
                &req("c1", cseq, vec![ContactSpec::new(PHONE)], Some(0)),
            )
            .expect_err("out of order");
        assert!(
            matches!(err, RegisterError::CSeqOutOfOrder { got, stored: 10 } if got == cseq),
            "{err}"
        );
        assert_eq!(err.status_code(), 400);
    }
    assert_eq!(contacts_of(&mut r, at(2)), vec![(PHONE.to_owned(), 598)]);
    // A new Call-ID (the phone rebooted) may start again at CSeq 1.
    r.register(
        at(3),
        AOR,
        &req("c2", 1, vec![ContactSpec::new(PHONE)], Some(0)),
    )
    .expect("new call-id");
    assert!(contacts_of(&mut r, at(4)).is_empty());
}

#[test]
fn an_out_of_order_request_changes_nothing_at_all() {
    let mut r = registrar();
    r.register(
        T0,
        AOR,
        &req("c1", 10, vec![ContactSpec::new(PHONE)], Some(600)),
    )
    .expect("registers");
    // One new contact and one out-of-order update: all or nothing.
    let err = r
        .register(
            at(1),
            AOR,
            &req(
                "c1",
                3,
                vec![ContactSpec::new(SOFTPHONE), ContactSpec::new(PHONE)],
                None,
            ),
        )
        .expect_err("out of order");
    assert!(matches!(err, RegisterError::CSeqOutOfOrder { .. }));
    assert_eq!(contacts_of(&mut r, at(2)), vec![(PHONE.to_owned(), 598)]);
}

#[test]
fn too_brief_is_423_with_min_expires() {
    let mut r = registrar();
    let err = r
        .register(
            T0,
            AOR,
            &req("c1", 1, vec![ContactSpec::new(PHONE)], Some(30)),
        )
        .expect_err("too brief");
    assert_eq!(err.status_code(), 423);
    assert_eq!(err.min_expires(), Some(60));
    assert_eq!(err.reason_phrase(), "Interval Too Brief");
    // A too-brief contact parameter fails the whole request too.
    let err = r
        .register(
            T0,
            AOR,
            &req(
                "c1",
                2,
                vec![
                    ContactSpec::new(SOFTPHONE),
                    ContactSpec::new(PHONE).with_expires(1),
                ],
                None,
            ),
        )
        .expect_err("too brief");
    assert!(matches!(
        err,
        RegisterError::IntervalTooBrief { min_expires: 60 }
    ));
    assert!(contacts_of(&mut r, at(1)).is_empty());
    // Exactly the minimum is fine.
    r.register(
        T0,
        AOR,
        &req("c1", 3, vec![ContactSpec::new(PHONE)], Some(60)),
    )
    .expect("minimum accepted");
}

#[test]
fn max_contacts_is_enforced() {
    let cfg = RegistrarConfig {
        max_contacts: 2,
        ..RegistrarConfig::default()
    };
    let mut r = Registrar::in_memory(cfg).expect("config");
    r.register(
        T0,
        AOR,
        &req(
            "c1",
            1,
            vec![ContactSpec::new(PHONE), ContactSpec::new(SOFTPHONE)],
            None,
        ),
    )
    .expect("two fit");
    let err = r
        .register(
            at(1),
            AOR,
            &req("c2", 1, vec![ContactSpec::new("sip:alice@10.9.9.9")], None),
        )
        .expect_err("a third does not");
    assert!(matches!(err, RegisterError::TooManyContacts { max: 2 }));
    assert_eq!(err.status_code(), 403);
    assert_eq!(err.to_string(), "too many contacts for this AoR (max 2)");
    assert_eq!(contacts_of(&mut r, at(2)).len(), 2);
    // Refreshing existing ones is fine, and so is a new one after one expired.
    r.register(
        at(3),
        AOR,
        &req("c1", 2, vec![ContactSpec::new(PHONE)], Some(60)),
    )
    .expect("refresh");
    r.register(
        at(70),
        AOR,
        &req("c2", 2, vec![ContactSpec::new("sip:alice@10.9.9.9")], None),
    )
    .expect("room again after expiry");
    assert_eq!(contacts_of(&mut r, at(71)).len(), 2);
}

#[test]
fn replace_oldest_overflow_policy() {
    let cfg = RegistrarConfig {
        max_contacts: 2,
        overflow: OverflowPolicy::ReplaceOldest,
        ..RegistrarConfig::default()
    };
    let mut r = Registrar::in_memory(cfg).expect("config");
    r.register(
        T0,
        AOR,
        &req("a", 1, vec![ContactSpec::new("sip:a@1.1.1.1")], None),
    )
    .expect("a");
    r.register(
        at(1),
        AOR,
        &req("b", 1, vec![ContactSpec::new("sip:b@1.1.1.1")], None),
    )
    .expect("b");
    r.register(
        at(2),
        AOR,
        &req("a", 2, vec![ContactSpec::new("sip:a@1.1.1.1")], None),
    )
    .expect("a refreshed, b is now the oldest");
    let out = r
        .register(
            at(3),
            AOR,
            &req("c", 1, vec![ContactSpec::new("sip:c@1.1.1.1")], None),
        )
        .expect("c replaces b");
    assert_eq!(out.removed, 1);
    let mut got: Vec<String> = out
        .bindings
        .into_iter()
        .map(|b| b.binding.contact)
        .collect();
    got.sort();
    assert_eq!(got, vec!["sip:a@1.1.1.1", "sip:c@1.1.1.1"]);
    // A single request binding more than the maximum is still refused.
    let err = r
        .register(
            at(4),
            AOR,
            &req(
                "d",
                1,
                (0..3)
                    .map(|i| ContactSpec::new(format!("sip:d{i}@1.1.1.1")))
                    .collect(),
                None,
            ),
        )
        .expect_err("too many in one request");
    assert!(matches!(err, RegisterError::TooManyContacts { max: 2 }));
}

#[test]
fn a_query_lists_the_bindings_without_changing_them() {
    let mut r = registrar();
    r.register(T0, AOR, &req("c1", 1, vec![ContactSpec::new(PHONE)], None))
        .expect("registers");
    let query = RegisterRequest {
        contacts: Contacts::None,
        ..req("other", 1, Vec::new(), None)
    };
    let out = r.register(at(100), AOR, &query).expect("query");
    assert_eq!((out.added, out.refreshed, out.removed), (0, 0, 0));
    assert_eq!(out.bindings.len(), 1);
    assert_eq!(out.bindings[0].expires_in, 3500);
    assert_eq!(out.bindings[0].binding.call_id, "c1");
}

#[test]
fn bindings_are_ordered_by_q() {
    let mut r = registrar();
    let mut low = ContactSpec::new(PHONE);
    low.q = Some(100);
    let mut high = ContactSpec::new(SOFTPHONE);
    high.q = Some(900);
    r.register(T0, AOR, &req("c1", 1, vec![low, high], None))
        .expect("registers");
    let order: Vec<String> = contacts_of(&mut r, at(1))
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(order, vec![SOFTPHONE, PHONE]);
}

#[test]
fn invalid_input_is_400() {
    let mut r = registrar();
    let err = r
        .register(T0, "  ", &req("c1", 1, vec![ContactSpec::new(PHONE)], None))
        .expect_err("empty aor");
    assert_eq!(err.status_code(), 400);
    for bad in ["", "sip:a b@c", "sip:a@c\r\nX: y"] {
        let err = r
            .register(T0, AOR, &req("c1", 1, vec![ContactSpec::new(bad)], None))
            .expect_err("bad contact");
        assert!(matches!(err, RegisterError::InvalidContact), "{bad:?}");
        assert_eq!(err.status_code(), 400);
    }
}

#[test]
fn config_is_validated() {
    let bad = |cfg: RegistrarConfig| Registrar::in_memory(cfg).expect_err("refused");
    let d = RegistrarConfig::default();
    assert_eq!(
        bad(RegistrarConfig {
            min_expires: 0,
            ..d
        }),
        RegistrarConfigError::BadExpiry
    );
    assert_eq!(
        bad(RegistrarConfig {
            default_expires: 10,
            ..d
        }),
        RegistrarConfigError::BadExpiry
    );
    assert_eq!(
        bad(RegistrarConfig {
            max_expires: 100,
            ..d
        }),
        RegistrarConfigError::BadExpiry
    );
    assert_eq!(
        bad(RegistrarConfig {
            max_contacts: 0,
            ..d
        }),
        RegistrarConfigError::NoContacts
    );
}

/// A store that fails every write, as a database might.
#[derive(Default)]
struct BrokenStore(MemoryStore);

#[derive(Debug, thiserror::Error)]
#[error("database unavailable")]
struct Down;

impl LocationStore for BrokenStore {
    type Error = Down;
    fn load(&self, aor: &str) -> Result<Vec<sluice_sip::registrar::Binding>, Down> {
        Ok(self.0.load(aor).unwrap_or_default())
    }
    fn replace(&mut self, _: &str, _: Vec<sluice_sip::registrar::Binding>) -> Result<(), Down> {
        Err(Down)
    }
    fn purge_expired(&mut self, _: Duration) -> Result<usize, Down> {
        Err(Down)
    }
}

#[test]
fn store_failures_are_500() {
    let mut r = Registrar::new(RegistrarConfig::default(), BrokenStore::default()).expect("cfg");
    let err = r
        .register(T0, AOR, &req("c1", 1, vec![ContactSpec::new(PHONE)], None))
        .expect_err("store down");
    assert_eq!(err.status_code(), 500);
    assert_eq!(err.to_string(), "location store: database unavailable");
}
