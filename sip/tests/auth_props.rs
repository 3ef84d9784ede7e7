//! Property tests for Digest parsing and verification: garbage never panics, printed credentials
//! and challenges parse back, and verification of arbitrary credentials only ever fails cleanly.

use std::time::Duration;

use proptest::prelude::*;
use sluice_sip::auth::{
    Algorithm, AuthConfig, Authenticator, Challenge, DigestCredentials, DigestRequest, Qop, Secret,
};

const T0: Duration = Duration::from_secs(1_700_000_000);

/// Strings of any characters except controls (which a quoted string cannot carry).
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            8 => any::<char>().prop_filter("no control", |c| !c.is_control()),
            1 => Just('"'),
            1 => Just('\\'),
            1 => Just(','),
            1 => Just('='),
            1 => Just(' '),
        ],
        0..24,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop::sample::select(Algorithm::ALL.to_vec())
}

/// Pieces a header value is made of, to build near-valid garbage.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Digest ".to_owned()),
        Just("username".to_owned()),
        Just("realm".to_owned()),
        Just("nonce".to_owned()),
        Just("uri".to_owned()),
        Just("response".to_owned()),
        Just("qop".to_owned()),
        Just("nc".to_owned()),
        Just("cnonce".to_owned()),
        Just("algorithm".to_owned()),
        Just("=".to_owned()),
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just(",".to_owned()),
        Just(" ".to_owned()),
        Just("\r\n ".to_owned()),
        Just("auth".to_owned()),
        Just("00000001".to_owned()),
        Just("SHA-256".to_owned()),
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn garbage_never_panics(s in any::<String>()) {
        let _ = DigestCredentials::parse(&s);
        let _ = Challenge::parse(&s);
        let _ = DigestCredentials::parse(&format!("Digest {s}"));
        let _ = Challenge::parse(&format!("Digest {s}"));
    }

    #[test]
    fn near_valid_garbage_never_panics(parts in prop::collection::vec(fragment(), 0..40)) {
        let s: String = parts.concat();
        let _ = DigestCredentials::parse(&s);
        let _ = Challenge::parse(&s);
    }

    #[test]
    fn mutated_valid_headers_never_panic(
        cut in 0usize..400,
        insert in any::<char>(),
        at in 0usize..400,
    ) {
        let valid = "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", \
            nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", qop=auth, \
            nc=00000001, cnonce=\"0a4f113b\", response=\"6629fae49393a05397450978507c4ef1\", \
            opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";
        let mut s: Vec<char> = valid.chars().collect();
        if cut < s.len() {
            s.remove(cut);
        }
        let at = at.min(s.len());
        s.insert(at, insert);
        let s: String = s.into_iter().collect();
        let _ = DigestCredentials::parse(&s);
    }

    #[test]
    fn printed_credentials_parse_back(
        username in text(), realm in text(), nonce in text(), uri in text(),
        response in text(), cnonce in text(), opaque in prop::option::of(text()),
        algorithm in algorithm(), nc in 1u32.., with_qop in any::<bool>(),
    ) {
        let creds = DigestCredentials {
            username, realm, nonce, uri, response, algorithm,
            cnonce: with_qop.then_some(cnonce),
            opaque,
            qop: with_qop.then_some(Qop::Auth),
            nc: with_qop.then(|| format!("{nc:08x}")),
        };
        prop_assert_eq!(DigestCredentials::parse(&creds.to_string()), Ok(creds));
    }

    #[test]
    fn printed_challenges_parse_back(
        realm in text(), nonce in text(), opaque in prop::option::of(text()),
        algorithm in algorithm(), stale in any::<bool>(), qop in any::<bool>(),
    ) {
        let ch = Challenge {
            realm, nonce, opaque, algorithm,
            qop: if qop { vec![Qop::Auth] } else { Vec::new() },
            stale,
        };
        prop_assert_eq!(Challenge::parse(&ch.to_string()), Ok(ch));
    }

    #[test]
    fn arbitrary_credentials_fail_cleanly(
        nonce in text(), response in text(), cnonce in text(), nc in 1u32..,
        algorithm in algorithm(), at in 0u64..1000,
    ) {
        let mut cfg = AuthConfig::new("r", vec![1u8; 32]);
        cfg.algorithms = Algorithm::ALL.to_vec();
        let mut server = Authenticator::new(cfg).expect("config");
        let creds = DigestCredentials {
            username: "u".into(), realm: "r".into(), nonce, uri: "sip:r".into(), response,
            algorithm, cnonce: Some(cnonce), opaque: None, qop: Some(Qop::Auth),
            nc: Some(format!("{nc:08x}")),
        };
        let req = DigestRequest { method: "INVITE", request_uri: "sip:r", expected_username: "u" };
        let result = server.verify(
            T0 + Duration::from_secs(at), &req, &creds, &Secret::Password("p".into()),
        );
        prop_assert!(result.is_err());
    }
}
