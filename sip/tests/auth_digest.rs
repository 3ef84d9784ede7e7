//! Digest authentication: RFC known answers, the challenge → response → verify round trip, and
//! every refusal (stale, replay, tampering, mismatches).

use std::time::Duration;

use sluice_sip::auth::{
    compute_ha1, compute_response, compute_response_from_ha1, Algorithm, AuthConfig,
    AuthConfigError, AuthError, AuthParseError, Authenticator, Challenge, ChallengeRole,
    DigestCredentials, DigestInput, DigestRequest, Ha1Set, Qop, Secret,
};

const REALM: &str = "sip.example.com";
const SECRET: [u8; 32] = [0x5a; 32];
const T0: Duration = Duration::from_secs(1_700_000_000);
const URI: &str = "sip:sip.example.com";
const USER: &str = "alice";
const PASSWORD: &str = "correct horse";

fn secs(s: u64) -> Duration {
    T0 + Duration::from_secs(s)
}

fn server() -> Authenticator {
    Authenticator::new(AuthConfig::new(REALM, SECRET)).expect("valid config")
}

fn request() -> DigestRequest<'static> {
    DigestRequest {
        method: "REGISTER",
        request_uri: URI,
        expected_username: USER,
    }
}

fn password() -> Secret {
    Secret::Password(PASSWORD.to_owned())
}

/// What a UA does with a challenge: answer it for `method`/`uri` with nonce-count `nc`.
fn answer(challenge: &str, method: &str, uri: &str, nc: u32, password: &str) -> String {
    let ch = Challenge::parse(challenge).expect("challenge parses");
    let nc = format!("{nc:08x}");
    let cnonce = "0a4f113b";
    let qop = ch.qop.first().copied();
    let input = DigestInput {
        algorithm: ch.algorithm,
        username: USER,
        realm: &ch.realm,
        nonce: &ch.nonce,
        method,
        uri,
        qop,
        nc: qop.map(|_| nc.as_str()),
        cnonce: qop.map(|_| cnonce),
    };
    let creds = DigestCredentials {
        username: USER.to_owned(),
        realm: ch.realm.clone(),
        nonce: ch.nonce.clone(),
        uri: uri.to_owned(),
        response: compute_response(&input, password),
        algorithm: ch.algorithm,
        cnonce: qop.map(|_| cnonce.to_owned()),
        opaque: ch.opaque.clone(),
        qop,
        nc: qop.map(|_| nc.clone()),
    };
    creds.to_string()
}

/// The first (most preferred) challenge, as a header value.
fn first_challenge(server: &Authenticator, now: Duration, rnd: u8) -> String {
    server.challenges(now, [rnd; 16], false)[0].to_string()
}

fn verify(server: &mut Authenticator, now: Duration, header: &str) -> Result<(), AuthError> {
    let creds = DigestCredentials::parse(header)?;
    server
        .verify(now, &request(), &creds, &password())
        .map(|_| ())
}

// ------------------------------------------------------------------------------------------------
// Known answers
// ------------------------------------------------------------------------------------------------

#[test]
fn rfc2617_section_3_5_md5_known_answer() {
    let header = r#"Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629fae49393a05397450978507c4ef1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
    let creds = DigestCredentials::parse(header).expect("RFC 2617 example parses");
    assert_eq!(creds.username, "Mufasa");
    assert_eq!(creds.algorithm, Algorithm::Md5);
    assert_eq!(creds.qop, Some(Qop::Auth));
    assert_eq!(creds.nonce_count(), Some(1));
    let input = creds.digest_input("GET");
    assert_eq!(
        compute_response(&input, "Circle Of Life"),
        "6629fae49393a05397450978507c4ef1"
    );
    let ha1 = compute_ha1(
        Algorithm::Md5,
        "Mufasa",
        "testrealm@host.com",
        "Circle Of Life",
    );
    assert_eq!(
        compute_response_from_ha1(&input, &ha1.to_ascii_uppercase()),
        creds.response
    );
}

const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
const RFC7616_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";

fn rfc7616_input(algorithm: Algorithm) -> DigestInput<'static> {
    DigestInput {
        algorithm,
        username: "Mufasa",
        realm: "http-auth@example.org",
        nonce: RFC7616_NONCE,
        method: "GET",
        uri: "/dir/index.html",
        qop: Some(Qop::Auth),
        nc: Some("00000001"),
        cnonce: Some(RFC7616_CNONCE),
    }
}

#[test]
fn rfc7616_section_3_9_1_md5_known_answer() {
    let header = format!(
        "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", uri=\"/dir/index.html\", \
         algorithm=MD5, nonce=\"{RFC7616_NONCE}\", nc=00000001, cnonce=\"{RFC7616_CNONCE}\", \
         qop=auth, response=\"8ca523f5e9506fed4657c9700eebdbec\", opaque=\"{RFC7616_OPAQUE}\""
    );
    let creds = DigestCredentials::parse(&header).expect("parses");
    assert_eq!(creds.opaque.as_deref(), Some(RFC7616_OPAQUE));
    assert_eq!(creds.digest_input("GET"), rfc7616_input(Algorithm::Md5));
    assert_eq!(
        compute_response(&rfc7616_input(Algorithm::Md5), "Circle of Life"),
        "8ca523f5e9506fed4657c9700eebdbec"
    );
}

#[test]
fn rfc7616_section_3_9_1_sha256_known_answer() {
    let header = format!(
        "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", uri=\"/dir/index.html\", \
         algorithm=SHA-256, nonce=\"{RFC7616_NONCE}\", nc=00000001, cnonce=\"{RFC7616_CNONCE}\", \
         qop=auth, response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\", \
         opaque=\"{RFC7616_OPAQUE}\""
    );
    let creds = DigestCredentials::parse(&header).expect("parses");
    let input = creds.digest_input("GET");
    assert_eq!(input, rfc7616_input(Algorithm::Sha256));
    assert_eq!(compute_response(&input, "Circle of Life"), creds.response);
    let ha1 = Ha1Set::from_password("Mufasa", "http-auth@example.org", "Circle of Life");
    let stored = ha1.get(Algorithm::Sha256).expect("sha256 ha1");
    assert_eq!(compute_response_from_ha1(&input, stored), creds.response);
}

#[test]
fn rfc7616_challenge_parses() {
    let header = format!(
        "Digest\r\n realm=\"http-auth@example.org\",\r\n qop=\"auth, auth-int\",\r\n \
         algorithm=SHA-256,\r\n nonce=\"{RFC7616_NONCE}\",\r\n opaque=\"{RFC7616_OPAQUE}\""
    );
    let ch = Challenge::parse(&header).expect("parses");
    assert_eq!(ch.realm, "http-auth@example.org");
    assert_eq!(ch.algorithm, Algorithm::Sha256);
    assert_eq!(ch.qop, vec![Qop::Auth, Qop::AuthInt]);
    assert!(!ch.stale);
}

// ------------------------------------------------------------------------------------------------
// Challenges
// ------------------------------------------------------------------------------------------------

#[test]
fn challenges_offer_sha256_then_md5_with_qop_auth_and_opaque() {
    let s = server();
    let chs = s.challenges(T0, [1; 16], false);
    assert_eq!(chs.len(), 2);
    assert_eq!(chs[0].algorithm, Algorithm::Sha256);
    assert_eq!(chs[1].algorithm, Algorithm::Md5);
    assert_eq!(chs[0].nonce, chs[1].nonce);
    let text = chs[0].to_string();
    assert!(
        text.starts_with("Digest realm=\"sip.example.com\", nonce=\""),
        "{text}"
    );
    assert!(text.contains(", algorithm=SHA-256"), "{text}");
    assert!(text.contains(", qop=\"auth\""), "{text}");
    assert!(text.contains(", opaque=\""), "{text}");
    assert!(!text.contains("stale"), "{text}");
    let back = Challenge::parse(&text).expect("own challenge parses");
    assert_eq!(back, chs[0]);

    let stale = s.challenges(T0, [1; 16], true);
    assert!(stale[0].to_string().ends_with(", stale=true"));
    assert!(
        Challenge::parse(&stale[1].to_string())
            .expect("parses")
            .stale
    );
}

#[test]
fn nonces_differ_per_random_and_time() {
    let s = server();
    let a = s.make_nonce(T0, [1; 16]);
    assert_ne!(a, s.make_nonce(T0, [2; 16]));
    assert_ne!(a, s.make_nonce(secs(1), [1; 16]));
    assert!(a
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
}

#[test]
fn role_headers_and_codes() {
    assert_eq!(ChallengeRole::Www.status_code(), 401);
    assert_eq!(ChallengeRole::Proxy.status_code(), 407);
    assert_eq!(ChallengeRole::Www.challenge_header(), "WWW-Authenticate");
    assert_eq!(
        ChallengeRole::Proxy.credentials_header(),
        "Proxy-Authorization"
    );
}

// ------------------------------------------------------------------------------------------------
// Round trips
// ------------------------------------------------------------------------------------------------

#[test]
fn end_to_end_every_offered_algorithm() {
    let mut cfg = AuthConfig::new(REALM, SECRET);
    cfg.algorithms = Algorithm::ALL.to_vec();
    let mut s = Authenticator::new(cfg).expect("config");
    for (i, ch) in s.challenges(T0, [3; 16], false).iter().enumerate() {
        // One nonce shared by all challenges: each algorithm continues the nonce-count.
        let nc = u32::try_from(i).expect("small") + 1;
        let header = answer(&ch.to_string(), "REGISTER", URI, nc, PASSWORD);
        let creds = DigestCredentials::parse(&header).expect("client header parses");
        let ok = s
            .verify(secs(1), &request(), &creds, &password())
            .unwrap_or_else(|e| panic!("{}: {e}", ch.algorithm));
        assert_eq!(ok.algorithm, ch.algorithm);
        assert_eq!(ok.username, USER);
        assert_eq!(ok.nonce_count, Some(nc));
        assert_eq!(ok.nonce_expires_in, Duration::from_secs(299));
    }
}

#[test]
fn end_to_end_with_stored_ha1() {
    let mut s = server();
    let secret = Secret::Ha1(Ha1Set::from_password(USER, REALM, PASSWORD));
    for (i, algorithm) in [Algorithm::Sha256, Algorithm::Md5].into_iter().enumerate() {
        let chs = s.challenges(T0, [40 + i as u8; 16], false);
        let ch = chs
            .iter()
            .find(|c| c.algorithm == algorithm)
            .expect("offered");
        let header = answer(&ch.to_string(), "REGISTER", URI, 1, PASSWORD);
        let creds = DigestCredentials::parse(&header).expect("parses");
        let ok = s
            .verify(secs(1), &request(), &creds, &secret)
            .expect("verifies");
        assert_eq!(ok.algorithm, algorithm);
    }
    // A wrong password against the stored HA1.
    let ch = first_challenge(&s, secs(3), 5);
    let creds = DigestCredentials::parse(&answer(&ch, "REGISTER", URI, 1, "wrong")).expect("p");
    assert_eq!(
        s.verify(secs(3), &request(), &creds, &secret),
        Err(AuthError::WrongResponse)
    );
}

#[test]
fn missing_stored_ha1_for_the_algorithm_is_a_500() {
    let mut s = server();
    let only_md5 = Secret::Ha1(Ha1Set {
        md5: Some(compute_ha1(Algorithm::Md5, USER, REALM, PASSWORD)),
        ..Ha1Set::default()
    });
    let ch = first_challenge(&s, T0, 6); // SHA-256
    let creds = DigestCredentials::parse(&answer(&ch, "REGISTER", URI, 1, PASSWORD)).expect("p");
    let err = s
        .verify(T0, &request(), &creds, &only_md5)
        .expect_err("no SHA-256 HA1");
    assert_eq!(err, AuthError::CredentialUnavailable(Algorithm::Sha256));
    assert_eq!(err.status_code(ChallengeRole::Www), 500);

    let garbage_ha1 = Secret::Ha1(Ha1Set {
        sha256: Some("not hex".into()),
        ..Ha1Set::default()
    });
    assert_eq!(
        s.verify(T0, &request(), &creds, &garbage_ha1),
        Err(AuthError::CredentialUnavailable(Algorithm::Sha256))
    );
}

#[test]
fn uppercase_hex_response_is_accepted() {
    let mut s = server();
    let ch = first_challenge(&s, T0, 7);
    let mut creds =
        DigestCredentials::parse(&answer(&ch, "REGISTER", URI, 1, PASSWORD)).expect("p");
    creds.response = creds.response.to_ascii_uppercase();
    assert!(s.verify(T0, &request(), &creds, &password()).is_ok());
}

// ------------------------------------------------------------------------------------------------
// Expiry and replay
// ------------------------------------------------------------------------------------------------

#[test]
fn expired_nonce_is_stale() {
    let mut s = server();
    let ch = first_challenge(&s, T0, 8);
    let header = answer(&ch, "REGISTER", URI, 1, PASSWORD);
    let err = verify(&mut s, secs(300), &header).expect_err("expired at 300 s");
    assert_eq!(err, AuthError::StaleNonce);
    assert!(err.is_stale());
    assert_eq!(err.status_code(ChallengeRole::Www), 401);
    assert_eq!(err.status_code(ChallengeRole::Proxy), 407);
    // Just before expiry it is fine.
    let mut s = server();
    assert_eq!(verify(&mut s, secs(299), &header), Ok(()));
}

#[test]
fn expired_nonce_with_wrong_password_is_not_stale() {
    let mut s = server();
    let ch = first_challenge(&s, T0, 9);
    let header = answer(&ch, "REGISTER", URI, 1, "guess");
    let err = verify(&mut s, secs(1000), &header).expect_err("wrong");
    assert_eq!(err, AuthError::WrongResponse);
    assert!(!err.is_stale());
}

#[test]
fn nonce_lifetime_is_configurable() {
    let mut cfg = AuthConfig::new(REALM, SECRET);
    cfg.nonce_lifetime = Duration::from_secs(30);
    let mut s = Authenticator::new(cfg).expect("config");
    let ch = first_challenge(&s, T0, 10);
    let header = answer(&ch, "REGISTER", URI, 1, PASSWORD);
    assert_eq!(
        verify(&mut s, secs(30), &header),
        Err(AuthError::StaleNonce)
    );
}

#[test]
fn nonce_from_the_future_beyond_skew_is_stale() {
    let mut s = server();
    let ch = first_challenge(&s, secs(120), 11);
    let header = answer(&ch, "REGISTER", URI, 1, PASSWORD);
    assert_eq!(verify(&mut s, T0, &header), Err(AuthError::StaleNonce));
    // Within 30 s of skew it is accepted.
    let ch = first_challenge(&s, secs(20), 12);
    let header = answer(&ch, "REGISTER", URI, 1, PASSWORD);
    assert_eq!(verify(&mut s, T0, &header), Ok(()));
}

#[test]
fn replayed_nonce_count_is_rejected() {
    let mut s = server();
    let ch = first_challenge(&s, T0, 13);
    let h1 = answer(&ch, "REGISTER", URI, 1, PASSWORD);
    let h2 = answer(&ch, "REGISTER", URI, 2, PASSWORD);
    let h5 = answer(&ch, "REGISTER", URI, 5, PASSWORD);
    assert_eq!(verify(&mut s, secs(1), &h1), Ok(()));
    let err = verify(&mut s, secs(2), &h1).expect_err("same nc replayed");
    assert_eq!(err, AuthError::Replay);
    assert!(err.is_stale());
    assert_eq!(err.status_code(ChallengeRole::Proxy), 407);
    assert_eq!(verify(&mut s, secs(3), &h2), Ok(()));
    assert_eq!(verify(&mut s, secs(4), &h5), Ok(()), "gaps are allowed");
    assert_eq!(verify(&mut s, secs(5), &h2), Err(AuthError::Replay));
    assert_eq!(verify(&mut s, secs(6), &h5), Err(AuthError::Replay));
    assert_eq!(s.tracked_nonces(), 1);
}

#[test]
fn expired_nonces_leave_the_table() {
    let mut s = server();
    for i in 0..5u8 {
        let ch = first_challenge(&s, T0, 100 + i);
        assert_eq!(
            verify(&mut s, secs(1), &answer(&ch, "REGISTER", URI, 1, PASSWORD)),
            Ok(())
        );
    }
    assert_eq!(s.tracked_nonces(), 5);
    s.purge_expired(secs(299));
    assert_eq!(s.tracked_nonces(), 5);
    s.purge_expired(secs(300));
    assert_eq!(s.tracked_nonces(), 0);
    // Pruned on the fly too.
    let ch = first_challenge(&s, secs(300), 120);
    assert_eq!(
        verify(
            &mut s,
            secs(301),
            &answer(&ch, "REGISTER", URI, 1, PASSWORD)
        ),
        Ok(())
    );
    assert_eq!(s.tracked_nonces(), 1);
}

#[test]
fn a_full_table_never_reopens_a_replay() {
    let mut cfg = AuthConfig::new(REALM, SECRET);
    cfg.max_tracked_nonces = 2;
    let mut s = Authenticator::new(cfg).expect("config");
    let chs: Vec<String> = (0..3u8)
        .map(|i| first_challenge(&s, secs(u64::from(i)), 200 + i))
        .collect();
    for ch in &chs {
        assert_eq!(
            verify(&mut s, secs(5), &answer(ch, "REGISTER", URI, 1, PASSWORD)),
            Ok(())
        );
    }
    assert_eq!(s.tracked_nonces(), 2);
    // The first nonce was evicted: its nc=1 replay is not accepted, and neither is a fresh nc.
    let replay = answer(&chs[0], "REGISTER", URI, 1, PASSWORD);
    assert_eq!(verify(&mut s, secs(6), &replay), Err(AuthError::StaleNonce));
    let next = answer(&chs[0], "REGISTER", URI, 2, PASSWORD);
    assert_eq!(verify(&mut s, secs(6), &next), Err(AuthError::StaleNonce));
    // Tracked nonces go on working; nonces issued later than the evicted one too.
    let h = answer(&chs[2], "REGISTER", URI, 2, PASSWORD);
    assert_eq!(verify(&mut s, secs(7), &h), Ok(()));
    let newer = first_challenge(&s, secs(7), 250);
    assert_eq!(
        verify(
            &mut s,
            secs(8),
            &answer(&newer, "REGISTER", URI, 1, PASSWORD)
        ),
        Ok(())
    );
    assert!(s.tracked_nonces() <= 2);
}

// ------------------------------------------------------------------------------------------------
// Mismatches and tampering
// ------------------------------------------------------------------------------------------------

#[test]
fn wrong_password_is_rejected() {
    let mut s = server();
    let ch = first_challenge(&s, T0, 14);
    let err = verify(&mut s, T0, &answer(&ch, "REGISTER", URI, 1, "hunter2")).expect_err("no");
    assert_eq!(err, AuthError::WrongResponse);
    assert_eq!(err.status_code(ChallengeRole::Www), 401);
    assert_eq!(s.tracked_nonces(), 0, "a wrong digest leaves no state");
}

#[test]
fn wrong_realm_is_rejected() {
    let mut s = server();
    let ch = first_challenge(&s, T0, 15).replace(REALM, "evil.example.net");
    let header = answer(&ch, "REGISTER", URI, 1, PASSWORD);
    assert_eq!(verify(&mut s, T0, &header), Err(AuthError::RealmMismatch));
}

#[test]
fn nonce_of_another_realm_is_rejected() {
    let other = Authenticator::new(AuthConfig::new("other.example.com", SECRET)).expect("cfg");
    let mut s = server();
    let theirs = other.make_nonce(T0, [16; 16]);
    let ours = s.make_nonce(T0, [16; 16]);
    let ch = first_challenge(&s, T0, 16).replace(&ours, &theirs);
    let header = answer(&ch, "REGISTER", URI, 1, PASSWORD);
    assert_eq!(verify(&mut s, T0, &header), Err(AuthError::InvalidNonce));
}

#[test]
fn wrong_uri_is_rejected() {
    let mut s = server();
    let ch = first_challenge(&s, T0, 17);
    let header = answer(&ch, "REGISTER", "sip:other.example.com", 1, PASSWORD);
    let err = verify(&mut s, T0, &header).expect_err("uri");
    assert_eq!(err, AuthError::UriMismatch);
    assert_eq!(err.status_code(ChallengeRole::Www), 400);
}

#[test]
fn wrong_username_is_rejected() {
    let mut s = server();
    let ch = first_challenge(&s, T0, 18);
    let creds = DigestCredentials::parse(&answer(&ch, "REGISTER", URI, 1, PASSWORD)).expect("p");
    let req = DigestRequest {
        expected_username: "bob",
        ..request()
    };
    let err = s.verify(T0, &req, &creds, &password()).expect_err("user");
    assert_eq!(err, AuthError::UsernameMismatch);
    assert_eq!(err.status_code(ChallengeRole::Proxy), 403);
}

#[test]
fn wrong_method_is_rejected() {
    let mut s = server();
    let ch = first_challenge(&s, T0, 19);
    let header = answer(&ch, "INVITE", URI, 1, PASSWORD);
    assert_eq!(verify(&mut s, T0, &header), Err(AuthError::WrongResponse));
}

#[test]
fn tampered_nonce_is_rejected() {
    let mut s = server();
    let ch = Challenge::parse(&first_challenge(&s, T0, 20)).expect("parses");
    let nonce = ch.nonce.clone();
    let mut variants = Vec::new();
    for i in [0, 5, 11, 30, nonce.len() - 1] {
        let mut b = nonce.clone().into_bytes();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        variants.push(String::from_utf8(b).expect("ascii"));
    }
    variants.push(nonce[..nonce.len() - 1].to_owned());
    variants.push(format!("{nonce}A"));
    variants.push(String::new());
    variants.push("not-a-nonce".to_owned());
    variants.push("!".repeat(nonce.len()));
    for bad in variants {
        let tampered = Challenge {
            nonce: bad.clone(),
            ..ch.clone()
        };
        // The client computes a correct digest over the tampered nonce: only the MAC can tell.
        let header = answer(&tampered.to_string(), "REGISTER", URI, 1, PASSWORD);
        assert_eq!(
            verify(&mut s, T0, &header),
            Err(AuthError::InvalidNonce),
            "nonce {bad:?}"
        );
    }
    // A nonce minted with another secret.
    let forger = Authenticator::new(AuthConfig::new(REALM, [0x11u8; 32].to_vec())).expect("config");
    let forged = Challenge {
        nonce: forger.make_nonce(T0, [20; 16]),
        ..ch.clone()
    };
    let header = answer(&forged.to_string(), "REGISTER", URI, 1, PASSWORD);
    assert_eq!(verify(&mut s, T0, &header), Err(AuthError::InvalidNonce));
}

#[test]
fn tampered_parameters_break_the_digest() {
    let mut s = server();
    let ch = first_challenge(&s, T0, 21);
    let good = DigestCredentials::parse(&answer(&ch, "REGISTER", URI, 1, PASSWORD)).expect("p");
    let mut higher_nc = good.clone();
    higher_nc.nc = Some("00000002".into());
    let mut other_cnonce = good.clone();
    other_cnonce.cnonce = Some("deadbeef".into());
    for bad in [higher_nc, other_cnonce] {
        assert_eq!(
            s.verify(T0, &request(), &bad, &password()),
            Err(AuthError::WrongResponse)
        );
    }
    let mut other_opaque = good.clone();
    other_opaque.opaque = Some("xyz".into());
    assert_eq!(
        s.verify(T0, &request(), &other_opaque, &password()),
        Err(AuthError::OpaqueMismatch)
    );
    let mut no_opaque = good.clone();
    no_opaque.opaque = None;
    assert!(s.verify(T0, &request(), &no_opaque, &password()).is_ok());
}

#[test]
fn algorithm_not_offered_is_rechallenged() {
    let mut cfg = AuthConfig::new(REALM, SECRET);
    cfg.algorithms = vec![Algorithm::Sha256];
    let mut s = Authenticator::new(cfg).expect("config");
    let ch = first_challenge(&s, T0, 22).replace("SHA-256", "MD5");
    let err = verify(&mut s, T0, &answer(&ch, "REGISTER", URI, 1, PASSWORD)).expect_err("md5");
    assert_eq!(err, AuthError::AlgorithmNotOffered(Algorithm::Md5));
    assert_eq!(err.status_code(ChallengeRole::Www), 401);
}

#[test]
fn unknown_algorithm_is_rechallenged() {
    let err: AuthError = DigestCredentials::parse(
        r#"Digest username="a", realm="r", nonce="n", uri="u", response="x", algorithm=SHA-1"#,
    )
    .expect_err("unknown")
    .into();
    assert_eq!(
        err,
        AuthError::Parse(AuthParseError::UnknownAlgorithm("SHA-1".into()))
    );
    assert_eq!(err.status_code(ChallengeRole::Www), 401);
}

#[test]
fn auth_int_is_refused() {
    let mut s = server();
    let ch = first_challenge(&s, T0, 23).replace("qop=\"auth\"", "qop=\"auth-int\"");
    let err = verify(&mut s, T0, &answer(&ch, "REGISTER", URI, 1, PASSWORD)).expect_err("int");
    assert_eq!(err, AuthError::QopNotSupported(Qop::AuthInt));
}

#[test]
fn rfc2069_responses_are_refused_by_default() {
    let mut s = server();
    let ch = first_challenge(&s, T0, 24).replace(", qop=\"auth\"", "");
    let header = answer(&ch, "REGISTER", URI, 1, PASSWORD);
    assert!(!header.contains("qop"), "{header}");
    let err = verify(&mut s, T0, &header).expect_err("no qop");
    assert_eq!(err, AuthError::QopRequired);
    assert_eq!(err.status_code(ChallengeRole::Www), 401);
}

#[test]
fn rfc2069_responses_when_allowed_serve_one_request_per_nonce() {
    let mut cfg = AuthConfig::new(REALM, SECRET);
    cfg.allow_no_qop = true;
    cfg.algorithms = vec![Algorithm::Md5, Algorithm::Md5Sess];
    let mut s = Authenticator::new(cfg).expect("config");
    let ch = first_challenge(&s, T0, 25).replace(", qop=\"auth\"", "");
    let header = answer(&ch, "REGISTER", URI, 1, PASSWORD);
    assert_eq!(verify(&mut s, T0, &header), Ok(()));
    assert_eq!(verify(&mut s, secs(1), &header), Err(AuthError::Replay));
    // -sess needs a cnonce, so a qop.
    let sess = s.challenges(T0, [26; 16], false)[1]
        .to_string()
        .replace(", qop=\"auth\"", "");
    let header = answer(&sess, "REGISTER", URI, 1, PASSWORD);
    assert_eq!(verify(&mut s, T0, &header), Err(AuthError::QopRequired));
}

// ------------------------------------------------------------------------------------------------
// Parsing
// ------------------------------------------------------------------------------------------------

#[test]
fn parse_is_lenient_about_case_order_quoting_and_whitespace() {
    let header = "dIgEsT   NC=0000000a,RESPONSE=\"AbC\" ,  Uri = \"sip:x\" ,, \
                  Nonce=n0,Realm=\"r \\\"q\\\" \\\\ ü\",cnonce=c,qop=\"auth\",\
                  UserName=\"bo\\b\", ALGORITHM=\"sha-256\", foo=bar, baz=\"q,x\"";
    let c = DigestCredentials::parse(header).expect("parses");
    assert_eq!(c.username, "bob");
    assert_eq!(c.realm, "r \"q\" \\ ü");
    assert_eq!(c.nonce, "n0");
    assert_eq!(c.uri, "sip:x");
    assert_eq!(c.response, "AbC");
    assert_eq!(c.algorithm, Algorithm::Sha256);
    assert_eq!(c.qop, Some(Qop::Auth));
    assert_eq!(c.nonce_count(), Some(10));
    assert_eq!(c.nc.as_deref(), Some("0000000a"));
    assert_eq!(c.cnonce.as_deref(), Some("c"));
    assert_eq!(c.opaque, None);
    // Display → parse round trip keeps everything.
    assert_eq!(DigestCredentials::parse(&c.to_string()), Ok(c));
}

#[test]
fn parse_errors() {
    let base = r#"username="a", realm="r", nonce="n", uri="u", response="x""#;
    let cases: Vec<(String, AuthParseError)> = vec![
        (String::new(), AuthParseError::Empty),
        ("   \t ".into(), AuthParseError::Empty),
        ("x".repeat(9000), AuthParseError::TooLong),
        (format!("Basic {base}"), AuthParseError::NotDigest),
        (
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==".into(),
            AuthParseError::NotDigest,
        ),
        (
            format!("Digest {base}, Realm=\"s\""),
            AuthParseError::Duplicate("realm".into()),
        ),
        (
            r#"Digest username="a", realm="r", nonce="n", uri="u""#.into(),
            AuthParseError::Missing("response"),
        ),
        (
            format!("Digest {base}, qop=auth, cnonce=\"c\""),
            AuthParseError::Missing("nc"),
        ),
        (
            format!("Digest {base}, qop=auth, nc=00000001"),
            AuthParseError::Missing("cnonce"),
        ),
        (
            format!("Digest {base}, qop=auth, nc=00000000, cnonce=c"),
            AuthParseError::InvalidNc,
        ),
        (
            format!("Digest {base}, qop=auth, nc=1234567890, cnonce=c"),
            AuthParseError::InvalidNc,
        ),
        (
            format!("Digest {base}, qop=auth-conf, nc=1, cnonce=c"),
            AuthParseError::UnknownQop("auth-conf".into()),
        ),
        (
            format!("Digest {base}, userhash=true"),
            AuthParseError::Unsupported("userhash"),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(DigestCredentials::parse(&input), Err(want), "{input:?}");
    }
    for syntax in [
        "Digest username=\"a",
        "Digest username",
        "Digest username=",
        "Digest =x",
        "Digest username=\"a\" realm=\"r\"",
        "Digest username=\"a\\",
        "Digest username=\"a\x01\"",
        "Digest, username=a",
        "\"Digest\" username=a",
        "Digest\x00username=a",
    ] {
        assert!(
            matches!(
                DigestCredentials::parse(syntax),
                Err(AuthParseError::Syntax { .. })
            ),
            "{syntax:?} -> {:?}",
            DigestCredentials::parse(syntax)
        );
    }
}

#[test]
fn config_is_validated() {
    let bad = |f: fn(&mut AuthConfig)| {
        let mut c = AuthConfig::new(REALM, SECRET);
        f(&mut c);
        Authenticator::new(c).expect_err("refused")
    };
    assert_eq!(bad(|c| c.realm.clear()), AuthConfigError::InvalidRealm);
    assert_eq!(
        bad(|c| c.realm = "a\"b".into()),
        AuthConfigError::InvalidRealm
    );
    assert_eq!(
        bad(|c| c.secret = vec![1; 15]),
        AuthConfigError::SecretTooShort
    );
    assert_eq!(
        bad(|c| c.algorithms.clear()),
        AuthConfigError::BadAlgorithms
    );
    assert_eq!(
        bad(|c| c.algorithms = vec![Algorithm::Md5, Algorithm::Md5]),
        AuthConfigError::BadAlgorithms
    );
    assert_eq!(
        bad(|c| c.nonce_lifetime = Duration::ZERO),
        AuthConfigError::BadLimits
    );
    assert_eq!(
        bad(|c| c.max_tracked_nonces = 0),
        AuthConfigError::BadLimits
    );
    let debug = format!("{:?} {:?}", AuthConfig::new(REALM, SECRET), password());
    assert!(
        !debug.contains("90, 90") && !debug.contains(PASSWORD),
        "{debug}"
    );
}
