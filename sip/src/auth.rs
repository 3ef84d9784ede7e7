//! HTTP Digest authentication for SIP (RFC 2617, RFC 7616 algorithms, RFC 8760 for SIP).
//!
//! Sans-IO: the caller passes `now` (wall-clock time as a [`Duration`] since the Unix epoch) and
//! the randomness for nonces; nothing here reads a clock or an entropy source.
//!
//! # The flow
//!
//! 1. A request arrives without credentials: answer `401` (a registrar or UAS, with
//!    `WWW-Authenticate`) or `407` (a proxy, with `Proxy-Authenticate`), one header per
//!    [`Challenge`] from [`Authenticator::challenges`], in the configured order of preference
//!    (RFC 8760 §2.4: SHA-256 before MD5 by default).
//! 2. The request comes back with `Authorization` / `Proxy-Authorization`: parse the value with
//!    [`DigestCredentials::parse`], check that [`DigestCredentials::username`] is the user the request
//!    claims to be (the From user, or the To user of a REGISTER), look that user's [`Secret`] up
//!    and call [`Authenticator::verify`].
//! 3. On an [`AuthError`], [`AuthError::status_code`] says what to answer; for `401`/`407` send a
//!    fresh challenge with `stale` set to [`AuthError::is_stale`].
//!
//! For an unknown user, answer as for a wrong password (a fresh challenge), so that usernames
//! cannot be probed.
//!
//! # Nonces
//!
//! Nonces are stateless and self-verifying: base64url (no padding) of
//! `issued_at_secs (u64 BE) ‖ random (16 bytes) ‖ HMAC-SHA256(server secret, "sluice-nonce-v1" ‖
//! issued_at ‖ random ‖ realm)[..16]`, 54 characters. A nonce is accepted only if its MAC checks
//! out for this realm and secret (every node of a cluster that shares the secret accepts it), and
//! it expires [`AuthConfig::nonce_lifetime`] after it was issued; a correct response with an
//! expired nonce is answered with `stale=true`, so the client retries without asking its user.
//!
//! # Replay protection
//!
//! With `qop=auth` the nonce-count `nc` must strictly increase for each nonce: the highest `nc`
//! seen is kept per nonce in a bounded table ([`AuthConfig::max_tracked_nonces`]) from which
//! expired nonces are dropped. When the table is full, the oldest entry is evicted and every nonce
//! issued no later than it, and no longer tracked, is from then on answered as stale (`stale=true`,
//! the client fetches a fresh nonce): an eviction can never reopen a replay window.
//!
//! Without `qop` (RFC 2069 compatibility) there is no `nc` to order requests by. Such responses
//! are refused by default ([`AuthError::QopRequired`], a fresh challenge, which always offers
//! `qop="auth"`). With [`AuthConfig::allow_no_qop`] they are accepted, but each nonce then serves
//! exactly one request: a second use is a replay.
//!
//! Digests and nonce MACs are compared in constant time (`subtle`).
//!
//! # Credentials
//!
//! A user's [`Secret`] is either the plain password or the HA1 values a carrier provisions
//! (`H(username:realm:password)` per hash function, see [`compute_ha1`]), so the password itself
//! never has to be stored. The `-sess` variants derive their session HA1 from either.
//!
//! # Checks
//!
//! The response's `realm` must be ours, its `username` the expected one, its `uri` byte-for-byte
//! the Request-URI (RFC 2617 §3.2.2.5, which `400`s a mismatch), its algorithm one we offer, its
//! `opaque` (when present) ours. `qop=auth-int` is not offered and is refused.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest as _, Sha256, Sha512_256};
use subtle::ConstantTimeEq;

/// Longest header value [`DigestCredentials::parse`] and [`Challenge::parse`] accept, in bytes.
pub const MAX_HEADER_VALUE_LEN: usize = 8 * 1024;

/// Most parameters a header value may carry.
const MAX_PARAMS: usize = 64;

/// Length of the random part of a nonce.
pub const NONCE_RANDOM_LEN: usize = 16;

/// Shortest server secret [`Authenticator::new`] accepts, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// How far in the future a nonce's issue time may lie (clock skew between the nodes of a cluster
/// that share the secret) before it is treated as stale.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);

const TAG_LEN: usize = 16;
const NONCE_RAW_LEN: usize = 8 + NONCE_RANDOM_LEN + TAG_LEN;
/// `NONCE_RAW_LEN` (40) bytes in base64 without padding.
const NONCE_TEXT_LEN: usize = 54;

type HmacSha256 = Hmac<Sha256>;

// ------------------------------------------------------------------------------------------------
// Algorithms
// ------------------------------------------------------------------------------------------------

/// A Digest algorithm (RFC 7616 §6.1 registry; RFC 8760 for SIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5`, the RFC 2617 default (also when a response names no algorithm).
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256`.
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
    /// `SHA-512-256`.
    Sha512_256,
    /// `SHA-512-256-sess`.
    Sha512_256Sess,
}

impl Algorithm {
    /// Every algorithm, in RFC 8760 order of preference (strongest first, `-sess` after plain).
    pub const ALL: [Algorithm; 6] = [
        Algorithm::Sha512_256,
        Algorithm::Sha256,
        Algorithm::Md5,
        Algorithm::Sha512_256Sess,
        Algorithm::Sha256Sess,
        Algorithm::Md5Sess,
    ];

    /// The name as written in headers, e.g. `SHA-256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Sha512_256 => "SHA-512-256",
            Algorithm::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    /// Parses a name, case-insensitively; `None` for an unknown one.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(name))
    }

    /// Whether this is a `-sess` variant.
    pub fn is_sess(self) -> bool {
        matches!(
            self,
            Algorithm::Md5Sess | Algorithm::Sha256Sess | Algorithm::Sha512_256Sess
        )
    }

    /// The algorithm without `-sess`: the one whose HA1 is stored.
    pub fn base(self) -> Algorithm {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => Algorithm::Md5,
            Algorithm::Sha256 | Algorithm::Sha256Sess => Algorithm::Sha256,
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => Algorithm::Sha512_256,
        }
    }

    /// Length of a digest in lowercase hex (32 for MD5, 64 for the others).
    pub fn hex_len(self) -> usize {
        match self.base() {
            Algorithm::Md5 => 32,
            _ => 64,
        }
    }

    /// `H(data)` in lowercase hex.
    fn hash_hex(self, parts: &[&[u8]]) -> String {
        fn run<D: sha2::Digest>(mut d: D, parts: &[&[u8]]) -> String {
            for p in parts {
                d.update(p);
            }
            hex(&d.finalize())
        }
        match self.base() {
            Algorithm::Md5 => run(Md5::new(), parts),
            Algorithm::Sha256 => run(Sha256::new(), parts),
            _ => run(Sha512_256::new(), parts),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A quality of protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qop {
    /// `auth`: method and URI are protected. The only one offered.
    Auth,
    /// `auth-int`: the body is protected too. Parsed, never offered, refused by
    /// [`Authenticator::verify`].
    AuthInt,
}

impl Qop {
    /// The name as written in headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }

    /// Parses a name, case-insensitively.
    pub fn from_name(name: &str) -> Option<Qop> {
        if name.eq_ignore_ascii_case("auth") {
            Some(Qop::Auth)
        } else if name.eq_ignore_ascii_case("auth-int") {
            Some(Qop::AuthInt)
        } else {
            None
        }
    }
}

impl fmt::Display for Qop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ------------------------------------------------------------------------------------------------
// Computation (server and test clients)
// ------------------------------------------------------------------------------------------------

/// What a digest response is computed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestInput<'a> {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The username (as in the `username` parameter).
    pub username: &'a str,
    /// The realm.
    pub realm: &'a str,
    /// The server's nonce.
    pub nonce: &'a str,
    /// The request method, e.g. `REGISTER`.
    pub method: &'a str,
    /// The digest URI (the `uri` parameter, normally the Request-URI).
    pub uri: &'a str,
    /// `Some(Qop::Auth)` for `qop=auth`, `None` for an RFC 2069 response.
    pub qop: Option<Qop>,
    /// The nonce-count as sent, 8 hex digits (`00000001`); needed with a `qop`.
    pub nc: Option<&'a str>,
    /// The client nonce; needed with a `qop` and with `-sess` algorithms.
    pub cnonce: Option<&'a str>,
}

/// `H(username:realm:password)` for `algorithm`'s hash (the `-sess` suffix is ignored): the HA1
/// that carriers provision instead of the password.
pub fn compute_ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    algorithm.hash_hex(&[
        username.as_bytes(),
        b":",
        realm.as_bytes(),
        b":",
        password.as_bytes(),
    ])
}

/// The `response` a client sends for `input`, given the password.
pub fn compute_response(input: &DigestInput<'_>, password: &str) -> String {
    let ha1 = compute_ha1(input.algorithm, input.username, input.realm, password);
    compute_response_from_ha1(input, &ha1)
}

/// The `response` for `input` given the stored (non-`-sess`) HA1 in hex (either case).
///
/// Absent `nc` or `cnonce` count as empty strings: the result then matches no real client, it
/// does not panic. `qop=auth-int` is computed as `auth` (no body hash), which is never correct
/// and is refused by [`Authenticator::verify`] before it gets here.
pub fn compute_response_from_ha1(input: &DigestInput<'_>, ha1: &str) -> String {
    let alg = input.algorithm;
    let ha1 = ha1.to_ascii_lowercase();
    let cnonce = input.cnonce.unwrap_or("");
    let ha1 = if alg.is_sess() {
        alg.hash_hex(&[
            ha1.as_bytes(),
            b":",
            input.nonce.as_bytes(),
            b":",
            cnonce.as_bytes(),
        ])
    } else {
        ha1
    };
    let ha2 = alg.hash_hex(&[input.method.as_bytes(), b":", input.uri.as_bytes()]);
    match input.qop {
        Some(qop) => alg.hash_hex(&[
            ha1.as_bytes(),
            b":",
            input.nonce.as_bytes(),
            b":",
            input.nc.unwrap_or("").as_bytes(),
            b":",
            cnonce.as_bytes(),
            b":",
            qop.as_str().as_bytes(),
            b":",
            ha2.as_bytes(),
        ]),
        None => alg.hash_hex(&[
            ha1.as_bytes(),
            b":",
            input.nonce.as_bytes(),
            b":",
            ha2.as_bytes(),
        ]),
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

// ------------------------------------------------------------------------------------------------
// Stored secrets
// ------------------------------------------------------------------------------------------------

/// The HA1 values provisioned for one user in one realm, per hash function, in hex.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ha1Set {
    /// `MD5(username:realm:password)`, used by `MD5` and `MD5-sess`.
    pub md5: Option<String>,
    /// `SHA-256(username:realm:password)`, used by `SHA-256` and `SHA-256-sess`.
    pub sha256: Option<String>,
    /// `SHA-512-256(username:realm:password)`, used by `SHA-512-256` and `SHA-512-256-sess`.
    pub sha512_256: Option<String>,
}

impl Ha1Set {
    /// All three HA1 values for a password (what a provisioning system stores).
    pub fn from_password(username: &str, realm: &str, password: &str) -> Ha1Set {
        Ha1Set {
            md5: Some(compute_ha1(Algorithm::Md5, username, realm, password)),
            sha256: Some(compute_ha1(Algorithm::Sha256, username, realm, password)),
            sha512_256: Some(compute_ha1(
                Algorithm::Sha512_256,
                username,
                realm,
                password,
            )),
        }
    }

    /// The HA1 that `algorithm` needs, if provisioned.
    pub fn get(&self, algorithm: Algorithm) -> Option<&str> {
        match algorithm.base() {
            Algorithm::Md5 => self.md5.as_deref(),
            Algorithm::Sha256 => self.sha256.as_deref(),
            _ => self.sha512_256.as_deref(),
        }
    }
}

/// A user's stored secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The plain password.
    Password(String),
    /// Provisioned HA1 values (for the authenticator's realm).
    Ha1(Ha1Set),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets into logs.
        match self {
            Secret::Password(_) => f.write_str("Secret::Password(..)"),
            Secret::Ha1(_) => f.write_str("Secret::Ha1(..)"),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------

/// Why a header value is not a usable Digest `Authorization`/`Proxy-Authorization` or challenge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthParseError {
    /// The value is empty or only whitespace.
    #[error("empty header value")]
    Empty,
    /// The value exceeds [`MAX_HEADER_VALUE_LEN`].
    #[error("header value longer than {MAX_HEADER_VALUE_LEN} bytes")]
    TooLong,
    /// The scheme is not `Digest` (e.g. `Basic`, which SIP forbids).
    #[error("authentication scheme is not Digest")]
    NotDigest,
    /// The parameter list does not follow `name=value *("," name=value)`.
    #[error("syntax error at byte {at}: {what}")]
    Syntax {
        /// Byte offset in the value.
        at: usize,
        /// What was expected.
        what: &'static str,
    },
    /// More than the allowed number of parameters.
    #[error("too many parameters")]
    TooManyParams,
    /// A parameter appears twice.
    #[error("duplicate parameter `{0}`")]
    Duplicate(String),
    /// A required parameter is absent.
    #[error("missing parameter `{0}`")]
    Missing(&'static str),
    /// `nc` is not 1 to 8 hex digits, or is zero.
    #[error("invalid nonce-count")]
    InvalidNc,
    /// The algorithm is not one we know.
    #[error("unknown algorithm `{0}`")]
    UnknownAlgorithm(String),
    /// The `qop` is not `auth` or `auth-int`.
    #[error("unknown qop `{0}`")]
    UnknownQop(String),
    /// A feature we do not implement (`userhash=true`).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
}

/// Why a Digest response was refused. See [`AuthError::status_code`] for the answer to send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The header value did not parse.
    #[error("bad credentials header: {0}")]
    Parse(#[from] AuthParseError),
    /// The response is for another realm.
    #[error("realm mismatch")]
    RealmMismatch,
    /// The response's username is not the user the request claims to be.
    #[error("username does not match the expected user")]
    UsernameMismatch,
    /// The response's `uri` is not the Request-URI.
    #[error("digest uri does not match the Request-URI")]
    UriMismatch,
    /// The algorithm is not one we offer.
    #[error("algorithm {0} not offered")]
    AlgorithmNotOffered(Algorithm),
    /// No `qop`, and RFC 2069 responses are not allowed (or the algorithm is `-sess`).
    #[error("qop required")]
    QopRequired,
    /// A `qop` we do not offer (`auth-int`).
    #[error("qop {0} not supported")]
    QopNotSupported(Qop),
    /// The `opaque` is not the one we sent.
    #[error("opaque mismatch")]
    OpaqueMismatch,
    /// The nonce is not one of ours (bad encoding, bad MAC, other realm or secret).
    #[error("invalid nonce")]
    InvalidNonce,
    /// The digest is wrong (wrong password, or tampered parameters).
    #[error("wrong digest response")]
    WrongResponse,
    /// The digest is right but the nonce expired (or can no longer be tracked): challenge again
    /// with `stale=true`.
    #[error("stale nonce")]
    StaleNonce,
    /// The digest is right but this `nc` was already used with this nonce (or a qop-less nonce
    /// was used twice): a replay, or a retransmission that escaped the transaction layer.
    #[error("nonce-count replayed")]
    Replay,
    /// The user's [`Secret`] holds no HA1 for the chosen algorithm, or a malformed one: a
    /// provisioning error (offer only algorithms every user has an HA1 for).
    #[error("no usable stored credential for {0}")]
    CredentialUnavailable(Algorithm),
}

/// Where a challenge goes: a UAS or registrar challenges with `401`, a proxy with `407`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChallengeRole {
    /// `401 Unauthorized`, `WWW-Authenticate`, answered in `Authorization`.
    Www,
    /// `407 Proxy Authentication Required`, `Proxy-Authenticate`, answered in
    /// `Proxy-Authorization`.
    Proxy,
}

impl ChallengeRole {
    /// `401` or `407`.
    pub fn status_code(self) -> u16 {
        match self {
            ChallengeRole::Www => 401,
            ChallengeRole::Proxy => 407,
        }
    }

    /// The header that carries the challenge.
    pub fn challenge_header(self) -> &'static str {
        match self {
            ChallengeRole::Www => "WWW-Authenticate",
            ChallengeRole::Proxy => "Proxy-Authenticate",
        }
    }

    /// The header that carries the client's credentials.
    pub fn credentials_header(self) -> &'static str {
        match self {
            ChallengeRole::Www => "Authorization",
            ChallengeRole::Proxy => "Proxy-Authorization",
        }
    }
}

impl AuthError {
    /// The SIP status to answer with: `400` for malformed credentials or a `uri` that is not the
    /// Request-URI, `403` when the credentials are for another user, `500` when the stored
    /// credentials cannot serve the chosen algorithm, and otherwise the role's challenge (`401`
    /// or `407`), which must carry fresh [`Authenticator::challenges`] with
    /// `stale =` [`AuthError::is_stale`].
    pub fn status_code(&self, role: ChallengeRole) -> u16 {
        match self {
            AuthError::Parse(AuthParseError::UnknownAlgorithm(_)) => role.status_code(),
            AuthError::Parse(_) | AuthError::UriMismatch => 400,
            AuthError::UsernameMismatch => 403,
            AuthError::CredentialUnavailable(_) => 500,
            AuthError::RealmMismatch
            | AuthError::AlgorithmNotOffered(_)
            | AuthError::QopRequired
            | AuthError::QopNotSupported(_)
            | AuthError::OpaqueMismatch
            | AuthError::InvalidNonce
            | AuthError::WrongResponse
            | AuthError::StaleNonce
            | AuthError::Replay => role.status_code(),
        }
    }

    /// Whether the new challenge should say `stale=true`: the client knew the password, only the
    /// nonce is no longer good (expired, untracked, or its nonce-count replayed).
    pub fn is_stale(&self) -> bool {
        matches!(self, AuthError::StaleNonce | AuthError::Replay)
    }
}

/// Why an [`AuthConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    /// The realm is empty or holds a control character or a `"`.
    #[error("invalid realm")]
    InvalidRealm,
    /// The secret is shorter than [`MIN_SECRET_LEN`].
    #[error("server secret shorter than {MIN_SECRET_LEN} bytes")]
    SecretTooShort,
    /// No algorithm to offer, or one offered twice.
    #[error("algorithm list empty or with duplicates")]
    BadAlgorithms,
    /// A zero nonce lifetime or a zero-sized nonce table.
    #[error("nonce lifetime and nonce table size must be positive")]
    BadLimits,
}

// ------------------------------------------------------------------------------------------------
// Header parameter lists
// ------------------------------------------------------------------------------------------------

struct Param {
    /// Lowercased.
    name: String,
    value: String,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// RFC 3261 `token` characters.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// Splits `Scheme name=value, name="value", ...`: returns the scheme and the parameters, names
/// lowercased, quoted values unescaped. Unquoted values are taken leniently (any visible ASCII but
/// `,` and `"`), since some clients send base64 nonces unquoted. Empty list elements are skipped.
fn parse_header(value: &str) -> Result<(&str, Vec<Param>), AuthParseError> {
    if value.len() > MAX_HEADER_VALUE_LEN {
        return Err(AuthParseError::TooLong);
    }
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() && is_ws(b[i]) {
        i += 1;
    }
    if i == b.len() {
        return Err(AuthParseError::Empty);
    }
    let start = i;
    while i < b.len() && is_token(b[i]) {
        i += 1;
    }
    if i == start {
        return Err(AuthParseError::Syntax {
            at: i,
            what: "scheme",
        });
    }
    let scheme = &value[start..i];
    if i < b.len() && !is_ws(b[i]) {
        return Err(AuthParseError::Syntax {
            at: i,
            what: "whitespace after the scheme",
        });
    }
    let mut params: Vec<Param> = Vec::new();
    loop {
        // Skip whitespace and empty list elements.
        while i < b.len() && (is_ws(b[i]) || b[i] == b',') {
            i += 1;
        }
        if i == b.len() {
            break;
        }
        let name_start = i;
        while i < b.len() && is_token(b[i]) {
            i += 1;
        }
        if i == name_start {
            return Err(AuthParseError::Syntax {
                at: i,
                what: "parameter name",
            });
        }
        let name = value[name_start..i].to_ascii_lowercase();
        while i < b.len() && is_ws(b[i]) {
            i += 1;
        }
        if i == b.len() || b[i] != b'=' {
            return Err(AuthParseError::Syntax { at: i, what: "`=`" });
        }
        i += 1;
        while i < b.len() && is_ws(b[i]) {
            i += 1;
        }
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut closed = false;
            // Walk by chars so that UTF-8 in quoted strings survives.
            let rest = &value[i..];
            let mut chars = rest.char_indices();
            while let Some((off, c)) = chars.next() {
                match c {
                    '"' => {
                        i += off + 1;
                        closed = true;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, e)) if !e.is_control() || e == '\t' => val.push(e),
                        _ => {
                            return Err(AuthParseError::Syntax {
                                at: i + off,
                                what: "escaped character",
                            })
                        }
                    },
                    c if c.is_control() && c != '\t' => {
                        return Err(AuthParseError::Syntax {
                            at: i + off,
                            what: "no control character in a quoted string",
                        })
                    }
                    c => val.push(c),
                }
            }
            if !closed {
                return Err(AuthParseError::Syntax {
                    at: b.len(),
                    what: "closing quote",
                });
            }
        } else {
            let vstart = i;
            while i < b.len() && b[i].is_ascii_graphic() && b[i] != b',' && b[i] != b'"' {
                i += 1;
            }
            if i == vstart {
                return Err(AuthParseError::Syntax {
                    at: i,
                    what: "value",
                });
            }
            val.push_str(&value[vstart..i]);
        }
        while i < b.len() && is_ws(b[i]) {
            i += 1;
        }
        if i < b.len() && b[i] != b',' {
            return Err(AuthParseError::Syntax { at: i, what: "`,`" });
        }
        if params.iter().any(|p| p.name == name) {
            return Err(AuthParseError::Duplicate(name));
        }
        if params.len() == MAX_PARAMS {
            return Err(AuthParseError::TooManyParams);
        }
        params.push(Param { name, value: val });
    }
    Ok((scheme, params))
}

fn take(params: &mut Vec<Param>, name: &str) -> Option<String> {
    let idx = params.iter().position(|p| p.name == name)?;
    Some(params.swap_remove(idx).value)
}

fn require(params: &mut Vec<Param>, name: &'static str) -> Result<String, AuthParseError> {
    take(params, name).ok_or(AuthParseError::Missing(name))
}

/// Writes `"value"` with `"` and `\` escaped and control characters (which a quoted string
/// cannot hold) left out.
fn write_quoted(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in value.chars() {
        match c {
            '"' | '\\' => write!(f, "\\{c}")?,
            c if c.is_control() && c != '\t' => {}
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

// ------------------------------------------------------------------------------------------------
// Credentials (Authorization / Proxy-Authorization)
// ------------------------------------------------------------------------------------------------

/// A parsed Digest `Authorization` / `Proxy-Authorization` value.
///
/// [`fmt::Display`] prints it back as a header value (what a client sends); unknown parameters
/// are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    /// `username`.
    pub username: String,
    /// `realm`.
    pub realm: String,
    /// `nonce`, the server's.
    pub nonce: String,
    /// `uri`, the digest URI.
    pub uri: String,
    /// `response`, the digest in hex.
    pub response: String,
    /// `algorithm`; [`Algorithm::Md5`] when absent.
    pub algorithm: Algorithm,
    /// `cnonce`.
    pub cnonce: Option<String>,
    /// `opaque`.
    pub opaque: Option<String>,
    /// `qop`; `None` for an RFC 2069 response.
    pub qop: Option<Qop>,
    /// `nc` as sent (1 to 8 hex digits, not zero); present whenever `qop` is.
    pub nc: Option<String>,
}

impl DigestCredentials {
    /// Parses a header value. Parameter names are case-insensitive and in any order, values
    /// quoted or not; unknown parameters are ignored. `username`, `realm`, `nonce`, `uri` and
    /// `response` are required, and with a `qop` also `nc` and `cnonce`. Never panics.
    pub fn parse(value: &str) -> Result<DigestCredentials, AuthParseError> {
        let (scheme, mut params) = parse_header(value)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(AuthParseError::NotDigest);
        }
        if take(&mut params, "userhash").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Err(AuthParseError::Unsupported("userhash"));
        }
        let username = require(&mut params, "username")?;
        let realm = require(&mut params, "realm")?;
        let nonce = require(&mut params, "nonce")?;
        let uri = require(&mut params, "uri")?;
        let response = require(&mut params, "response")?;
        let algorithm = match take(&mut params, "algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::from_name(&a).ok_or(AuthParseError::UnknownAlgorithm(a))?,
        };
        let qop = match take(&mut params, "qop") {
            None => None,
            Some(q) => Some(Qop::from_name(&q).ok_or(AuthParseError::UnknownQop(q))?),
        };
        let cnonce = take(&mut params, "cnonce");
        let opaque = take(&mut params, "opaque");
        let nc = take(&mut params, "nc");
        if let Some(nc) = &nc {
            if parse_nc(nc).is_none() {
                return Err(AuthParseError::InvalidNc);
            }
        }
        if qop.is_some() {
            if nc.is_none() {
                return Err(AuthParseError::Missing("nc"));
            }
            if cnonce.is_none() {
                return Err(AuthParseError::Missing("cnonce"));
            }
        }
        Ok(DigestCredentials {
            username,
            realm,
            nonce,
            uri,
            response,
            algorithm,
            cnonce,
            opaque,
            qop,
            nc,
        })
    }

    /// The nonce-count as a number, if `nc` is present.
    pub fn nonce_count(&self) -> Option<u32> {
        self.nc.as_deref().and_then(parse_nc)
    }

    /// The [`DigestInput`] this response claims to be computed over, for `method`.
    pub fn digest_input<'a>(&'a self, method: &'a str) -> DigestInput<'a> {
        DigestInput {
            algorithm: self.algorithm,
            username: &self.username,
            realm: &self.realm,
            nonce: &self.nonce,
            method,
            uri: &self.uri,
            qop: self.qop,
            nc: self.nc.as_deref(),
            cnonce: self.cnonce.as_deref(),
        }
    }
}

fn parse_nc(nc: &str) -> Option<u32> {
    if nc.is_empty() || nc.len() > 8 || !nc.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(nc, 16).ok().filter(|&n| n != 0)
}

impl fmt::Display for DigestCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest username=")?;
        write_quoted(f, &self.username)?;
        f.write_str(", realm=")?;
        write_quoted(f, &self.realm)?;
        f.write_str(", nonce=")?;
        write_quoted(f, &self.nonce)?;
        f.write_str(", uri=")?;
        write_quoted(f, &self.uri)?;
        f.write_str(", response=")?;
        write_quoted(f, &self.response)?;
        write!(f, ", algorithm={}", self.algorithm)?;
        if let Some(cnonce) = &self.cnonce {
            f.write_str(", cnonce=")?;
            write_quoted(f, cnonce)?;
        }
        if let Some(opaque) = &self.opaque {
            f.write_str(", opaque=")?;
            write_quoted(f, opaque)?;
        }
        if let Some(qop) = self.qop {
            write!(f, ", qop={qop}")?;
        }
        if let Some(nc) = &self.nc {
            // Validated at parse time; a hand-built value with a bad nc is written quoted so the
            // header stays well-formed.
            if parse_nc(nc).is_some() {
                write!(f, ", nc={nc}")?;
            } else {
                f.write_str(", nc=")?;
                write_quoted(f, nc)?;
            }
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// Challenges (WWW-Authenticate / Proxy-Authenticate)
// ------------------------------------------------------------------------------------------------

/// A Digest challenge. [`fmt::Display`] writes the header value, e.g.
/// `Digest realm="sip.example", nonce="…", opaque="…", algorithm=SHA-256, qop="auth"`, with
/// `, stale=true` when [`Challenge::stale`] is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`, to be echoed by the client.
    pub opaque: Option<String>,
    /// `algorithm`.
    pub algorithm: Algorithm,
    /// `qop` options; empty for an RFC 2069 challenge.
    pub qop: Vec<Qop>,
    /// `stale=true`: the previous response was right but its nonce is no longer valid.
    pub stale: bool,
}

impl Challenge {
    /// Parses a challenge header value (what a client does). Unknown `qop` options and unknown
    /// parameters are ignored; an unknown algorithm is an error. Never panics.
    pub fn parse(value: &str) -> Result<Challenge, AuthParseError> {
        let (scheme, mut params) = parse_header(value)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(AuthParseError::NotDigest);
        }
        let realm = require(&mut params, "realm")?;
        let nonce = require(&mut params, "nonce")?;
        let opaque = take(&mut params, "opaque");
        let algorithm = match take(&mut params, "algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::from_name(&a).ok_or(AuthParseError::UnknownAlgorithm(a))?,
        };
        let qop = take(&mut params, "qop")
            .map(|q| {
                q.split(',')
                    .filter_map(|o| Qop::from_name(o.trim_matches(|c: char| c.is_whitespace())))
                    .collect()
            })
            .unwrap_or_default();
        let stale = take(&mut params, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true"));
        Ok(Challenge {
            realm,
            nonce,
            opaque,
            algorithm,
            qop,
            stale,
        })
    }
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest realm=")?;
        write_quoted(f, &self.realm)?;
        f.write_str(", nonce=")?;
        write_quoted(f, &self.nonce)?;
        if let Some(opaque) = &self.opaque {
            f.write_str(", opaque=")?;
            write_quoted(f, opaque)?;
        }
        write!(f, ", algorithm={}", self.algorithm)?;
        if !self.qop.is_empty() {
            f.write_str(", qop=\"")?;
            for (i, q) in self.qop.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                f.write_str(q.as_str())?;
            }
            f.write_str("\"")?;
        }
        if self.stale {
            f.write_str(", stale=true")?;
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------
// The authenticator
// ------------------------------------------------------------------------------------------------

/// Configuration of an [`Authenticator`].
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The realm (usually the SIP domain).
    pub realm: String,
    /// The server secret that nonces are MACed with (at least [`MIN_SECRET_LEN`] bytes; share it
    /// across a cluster so any node verifies any node's nonces).
    pub secret: Vec<u8>,
    /// How long a nonce is good for; default 300 s.
    pub nonce_lifetime: Duration,
    /// Algorithms offered, one challenge each, most preferred first; default SHA-256, MD5.
    pub algorithms: Vec<Algorithm>,
    /// Accept responses without `qop` (RFC 2069), one request per nonce; default `false`.
    pub allow_no_qop: bool,
    /// Most nonces whose nonce-count is tracked at once; default 65 536.
    pub max_tracked_nonces: usize,
}

impl AuthConfig {
    /// The defaults for `realm` and `secret`.
    pub fn new(realm: impl Into<String>, secret: impl Into<Vec<u8>>) -> AuthConfig {
        AuthConfig {
            realm: realm.into(),
            secret: secret.into(),
            nonce_lifetime: Duration::from_secs(300),
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            allow_no_qop: false,
            max_tracked_nonces: 65_536,
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("realm", &self.realm)
            .field("secret", &"..")
            .field("nonce_lifetime", &self.nonce_lifetime)
            .field("algorithms", &self.algorithms)
            .field("allow_no_qop", &self.allow_no_qop)
            .field("max_tracked_nonces", &self.max_tracked_nonces)
            .finish()
    }
}

/// What the request under verification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestRequest<'a> {
    /// The request method (for HA2).
    pub method: &'a str,
    /// The Request-URI as received; the response's `uri` must equal it.
    pub request_uri: &'a str,
    /// The user the request claims to be (the From user, or the To user of a REGISTER); the
    /// response's `username` must equal it.
    pub expected_username: &'a str,
}

/// A successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The authenticated username.
    pub username: String,
    /// The algorithm used.
    pub algorithm: Algorithm,
    /// The nonce-count accepted (`None` for an RFC 2069 response).
    pub nonce_count: Option<u32>,
    /// How long the nonce stays good for.
    pub nonce_expires_in: Duration,
}

/// Issues challenges and verifies responses. Holds the config and the nonce-count table.
#[derive(Debug)]
pub struct Authenticator {
    config: AuthConfig,
    opaque: String,
    nonces: NonceTracker,
}

impl Authenticator {
    /// Checks `config` and builds an authenticator.
    pub fn new(config: AuthConfig) -> Result<Authenticator, AuthConfigError> {
        if config.realm.is_empty() || config.realm.chars().any(|c| c.is_control() || c == '"') {
            return Err(AuthConfigError::InvalidRealm);
        }
        if config.secret.len() < MIN_SECRET_LEN {
            return Err(AuthConfigError::SecretTooShort);
        }
        let algs = &config.algorithms;
        if algs.is_empty() || algs.iter().enumerate().any(|(i, a)| algs[..i].contains(a)) {
            return Err(AuthConfigError::BadAlgorithms);
        }
        if config.nonce_lifetime.as_secs() == 0 || config.max_tracked_nonces == 0 {
            return Err(AuthConfigError::BadLimits);
        }
        let opaque = {
            let tag = mac(
                &config.secret,
                &[b"sluice-opaque-v1", config.realm.as_bytes()],
            );
            URL_SAFE_NO_PAD.encode(&tag[..12])
        };
        let nonces = NonceTracker::new(config.max_tracked_nonces);
        Ok(Authenticator {
            config,
            opaque,
            nonces,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// How many nonces are tracked now.
    pub fn tracked_nonces(&self) -> usize {
        self.nonces.map.len()
    }

    /// A fresh nonce issued at `now`, with `random` (16 bytes from a CSPRNG, fresh per call).
    pub fn make_nonce(&self, now: Duration, random: [u8; NONCE_RANDOM_LEN]) -> String {
        let issued = now.as_secs().to_be_bytes();
        let tag = self.nonce_tag(&issued, &random);
        let mut raw = [0u8; NONCE_RAW_LEN];
        raw[..8].copy_from_slice(&issued);
        raw[8..8 + NONCE_RANDOM_LEN].copy_from_slice(&random);
        raw[8 + NONCE_RANDOM_LEN..].copy_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The challenges to send (one `WWW-Authenticate` or `Proxy-Authenticate` header each, in
    /// this order): one per configured algorithm, sharing one fresh nonce, all with `qop="auth"`
    /// and our `opaque`. `stale` comes from [`AuthError::is_stale`] when re-challenging.
    pub fn challenges(
        &self,
        now: Duration,
        random: [u8; NONCE_RANDOM_LEN],
        stale: bool,
    ) -> Vec<Challenge> {
        let nonce = self.make_nonce(now, random);
        self.config
            .algorithms
            .iter()
            .map(|&algorithm| Challenge {
                realm: self.config.realm.clone(),
                nonce: nonce.clone(),
                opaque: Some(self.opaque.clone()),
                algorithm,
                qop: vec![Qop::Auth],
                stale,
            })
            .collect()
    }

    /// Verifies `credentials` for `request` against the user's stored `secret` at `now`, and on
    /// success records the nonce-count so that it cannot be used again.
    ///
    /// Checks, in order: realm, username, uri, algorithm, qop, opaque, the nonce's MAC, the digest
    /// (constant time), then the nonce's age and the nonce-count. The last two come after the
    /// digest so that `stale=true` is only said to a client that knows the password, and only
    /// such a client can fill the nonce-count table.
    pub fn verify(
        &mut self,
        now: Duration,
        request: &DigestRequest<'_>,
        credentials: &DigestCredentials,
        secret: &Secret,
    ) -> Result<Verified, AuthError> {
        let c = credentials;
        if c.realm != self.config.realm {
            return Err(AuthError::RealmMismatch);
        }
        if c.username != request.expected_username {
            return Err(AuthError::UsernameMismatch);
        }
        if c.uri != request.request_uri {
            return Err(AuthError::UriMismatch);
        }
        if !self.config.algorithms.contains(&c.algorithm) {
            return Err(AuthError::AlgorithmNotOffered(c.algorithm));
        }
        let nc = match c.qop {
            Some(Qop::Auth) => match (c.nonce_count(), &c.cnonce) {
                (Some(nc), Some(_)) => Some(nc),
                (None, _) => return Err(AuthParseError::Missing("nc").into()),
                (_, None) => return Err(AuthParseError::Missing("cnonce").into()),
            },
            Some(q @ Qop::AuthInt) => return Err(AuthError::QopNotSupported(q)),
            None if self.config.allow_no_qop && !c.algorithm.is_sess() => None,
            None => return Err(AuthError::QopRequired),
        };
        if let Some(opaque) = &c.opaque {
            if !bool::from(opaque.as_bytes().ct_eq(self.opaque.as_bytes())) {
                return Err(AuthError::OpaqueMismatch);
            }
        }
        let (issued, tag) = self.open_nonce(&c.nonce).ok_or(AuthError::InvalidNonce)?;

        let input = c.digest_input(request.method);
        let expected = match secret {
            Secret::Password(pw) => compute_response(&input, pw),
            Secret::Ha1(set) => {
                let ha1 = set
                    .get(c.algorithm)
                    .filter(|h| {
                        h.len() == c.algorithm.hex_len() && h.bytes().all(|b| b.is_ascii_hexdigit())
                    })
                    .ok_or(AuthError::CredentialUnavailable(c.algorithm))?;
                compute_response_from_ha1(&input, ha1)
            }
        };
        let given = c.response.to_ascii_lowercase();
        if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return Err(AuthError::WrongResponse);
        }

        let now_secs = now.as_secs();
        let lifetime = self.config.nonce_lifetime.as_secs();
        let expires_at = issued.saturating_add(lifetime);
        if now_secs >= expires_at || issued > now_secs.saturating_add(MAX_CLOCK_SKEW.as_secs()) {
            return Err(AuthError::StaleNonce);
        }
        self.nonces.use_nonce(tag, issued, nc, now_secs, lifetime)?;
        Ok(Verified {
            username: c.username.clone(),
            algorithm: c.algorithm,
            nonce_count: nc,
            nonce_expires_in: Duration::from_secs(expires_at - now_secs),
        })
    }

    /// Drops the nonce-count entries of nonces expired at `now` (also done on the fly).
    pub fn purge_expired(&mut self, now: Duration) {
        let lifetime = self.config.nonce_lifetime.as_secs();
        self.nonces.prune(now.as_secs(), lifetime);
    }

    fn nonce_tag(&self, issued: &[u8; 8], random: &[u8]) -> [u8; TAG_LEN] {
        let full = mac(
            &self.config.secret,
            &[
                b"sluice-nonce-v1",
                issued,
                random,
                self.config.realm.as_bytes(),
            ],
        );
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// Decodes and authenticates a nonce: its issue time (seconds) and its tag.
    fn open_nonce(&self, nonce: &str) -> Option<(u64, [u8; TAG_LEN])> {
        if nonce.len() != NONCE_TEXT_LEN {
            return None;
        }
        let mut raw = [0u8; NONCE_RAW_LEN + 2];
        let n = URL_SAFE_NO_PAD.decode_slice(nonce, &mut raw).ok()?;
        if n != NONCE_RAW_LEN {
            return None;
        }
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&raw[..8]);
        let tag = self.nonce_tag(&issued, &raw[8..8 + NONCE_RANDOM_LEN]);
        let given = &raw[8 + NONCE_RANDOM_LEN..NONCE_RAW_LEN];
        if !bool::from(given.ct_eq(&tag[..])) {
            return None;
        }
        Some((u64::from_be_bytes(issued), tag))
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length; the error branch cannot happen but is not unwrapped.
    let mut out = [0u8; 32];
    if let Ok(mut m) = HmacSha256::new_from_slice(key) {
        for p in parts {
            m.update(p);
        }
        out.copy_from_slice(&m.finalize().into_bytes());
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Nonce-count tracking
// ------------------------------------------------------------------------------------------------

#[derive(Debug)]
struct NonceEntry {
    /// Highest nonce-count accepted; `None` once used without a qop (single use).
    last_nc: Option<u32>,
}

/// Nonce-counts per nonce, bounded, evicting in first-use order.
#[derive(Debug)]
struct NonceTracker {
    max: usize,
    map: HashMap<[u8; TAG_LEN], NonceEntry>,
    order: VecDeque<([u8; TAG_LEN], u64)>,
    /// Issue time of the newest live nonce ever evicted: untracked nonces issued no later are
    /// stale, since their used nonce-counts are forgotten.
    evicted_up_to: Option<u64>,
}

impl NonceTracker {
    fn new(max: usize) -> NonceTracker {
        NonceTracker {
            max,
            map: HashMap::new(),
            order: VecDeque::new(),
            evicted_up_to: None,
        }
    }

    fn prune(&mut self, now: u64, lifetime: u64) {
        while let Some(&(key, issued)) = self.order.front() {
            if issued.saturating_add(lifetime) > now {
                break;
            }
            self.order.pop_front();
            self.map.remove(&key);
        }
    }

    fn use_nonce(
        &mut self,
        key: [u8; TAG_LEN],
        issued: u64,
        nc: Option<u32>,
        now: u64,
        lifetime: u64,
    ) -> Result<(), AuthError> {
        self.prune(now, lifetime);
        if let Some(entry) = self.map.get_mut(&key) {
            return match (entry.last_nc, nc) {
                (Some(last), Some(nc)) if nc > last => {
                    entry.last_nc = Some(nc);
                    Ok(())
                }
                _ => Err(AuthError::Replay),
            };
        }
        if self.evicted_up_to.is_some_and(|w| issued <= w) {
            return Err(AuthError::StaleNonce);
        }
        while self.map.len() >= self.max {
            let Some((old, old_issued)) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&old);
            self.evicted_up_to = Some(self.evicted_up_to.map_or(old_issued, |w| w.max(old_issued)));
        }
        if self.evicted_up_to.is_some_and(|w| issued <= w) {
            return Err(AuthError::StaleNonce);
        }
        self.map.insert(key, NonceEntry { last_nc: nc });
        self.order.push_back((key, issued));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nc_parsing() {
        assert_eq!(parse_nc("00000001"), Some(1));
        assert_eq!(parse_nc("ffffffff"), Some(u32::MAX));
        assert_eq!(parse_nc("00000000"), None);
        assert_eq!(parse_nc("100000000"), None);
        assert_eq!(parse_nc("+1"), None);
        assert_eq!(parse_nc(""), None);
    }

    #[test]
    fn nonce_text_length_matches_constant() {
        let a = Authenticator::new(AuthConfig::new("r", vec![7u8; 32])).expect("config");
        let n = a.make_nonce(Duration::from_secs(1_700_000_000), [9; 16]);
        assert_eq!(n.len(), NONCE_TEXT_LEN);
        assert!(a.open_nonce(&n).is_some());
    }

    #[test]
    fn tracker_entry_issue_time_kept() {
        let mut t = NonceTracker::new(1);
        t.use_nonce([1; 16], 10, Some(1), 10, 300).expect("first");
        assert_eq!(t.map.get(&[1; 16]).map(|e| e.last_nc), Some(Some(1)));
        // A second nonce evicts the first and raises the watermark to 10.
        t.use_nonce([2; 16], 11, Some(1), 11, 300).expect("second");
        assert_eq!(t.evicted_up_to, Some(10));
        assert_eq!(
            t.use_nonce([1; 16], 10, Some(2), 12, 300),
            Err(AuthError::StaleNonce)
        );
    }
}
