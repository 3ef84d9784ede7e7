//! The registrar's location service (RFC 3261 §10.3), pure.
//!
//! The caller parses the REGISTER, authenticates it ([`crate::auth`]), checks that the user may
//! register the address-of-record, canonicalises the AoR from the To header, and hands the rest
//! to [`Registrar::register`] as a [`RegisterRequest`]: the Contact list (or `*`), the Expires
//! header, Call-ID, CSeq, and where the request came from. It answers with the AoR's bindings
//! after the update, each with its remaining expiry, for the `200 OK`'s Contact list; or a
//! [`RegisterError`] whose [`RegisterError::status_code`] is the answer (`400`, `423` with
//! `Min-Expires:` [`RegisterError::min_expires`], `403`, `500`).
//!
//! # Time
//!
//! `now` is wall-clock time as a [`Duration`] since the Unix epoch (the caller passes it, and
//! tests pass virtual time); bindings store absolute expiry times so that a database can hold
//! them. A binding is live while `now < expires_at`.
//!
//! # Rules (RFC 3261 §10.3 steps 6–8)
//!
//! - Each Contact's expiry is its `expires` parameter, else the Expires header, else
//!   [`RegistrarConfig::default_expires`]. `0` removes the binding. A non-zero value below
//!   [`RegistrarConfig::min_expires`] fails the whole request with `423 Interval Too Brief`; one
//!   above [`RegistrarConfig::max_expires`] is shortened to it.
//! - `Contact: *` must be the only Contact and come with `Expires: 0` (else `400`); it removes every
//!   binding of the AoR.
//! - For an existing binding (same Contact URI, see [`contact_key`]) with the same Call-ID, the
//!   request's CSeq must be higher than the stored one, or the whole request fails (`400`): this
//!   drops out-of-order and replayed REGISTERs. A different Call-ID (the UA rebooted) replaces the
//!   binding.
//! - Updates are all-or-nothing: the new binding set is computed in full, then handed to the
//!   [`LocationStore`] in one [`LocationStore::replace`]. No Contact at all is a query.
//! - At most [`RegistrarConfig::max_contacts`] live bindings per AoR: beyond that the request is
//!   refused ([`RegisterError::TooManyContacts`], `403`), or, with
//!   [`OverflowPolicy::ReplaceOldest`], the least recently refreshed bindings that this request did
//!   not touch are dropped.
//!
//! # NAT
//!
//! Each binding stores the [`Source`] the REGISTER came from (address, transport, and the local
//! socket it arrived on), as nathelper's `fix_nated_register` does: requests for the AoR must be
//! sent there ([`Binding::destination`]), since the Contact URI of a NATed phone names a private
//! address. The Contact URI is kept as the Request-URI of those requests.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// A transport a REGISTER can arrive over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// SCTP.
    Sctp,
    /// WebSocket.
    Ws,
    /// Secure WebSocket.
    Wss,
}

impl Transport {
    /// The `transport=` URI parameter value, lowercase.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Sctp => "sctp",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a request came from: the address requests for the binding must go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    /// The packet's source address (after NAT).
    pub addr: SocketAddr,
    /// The transport it came over.
    pub transport: Transport,
    /// The local socket it arrived on, for multi-homed proxies and connection reuse.
    pub local: Option<SocketAddr>,
}

impl Source {
    /// The source as a SIP URI, e.g. `sip:203.0.113.7:40123;transport=udp` (`[...]` around IPv6),
    /// as nathelper stores in the `received` attribute.
    pub fn to_uri(&self) -> String {
        format!("sip:{};transport={}", self.addr, self.transport)
    }
}

/// One Contact of a REGISTER, parsed by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactSpec {
    /// The Contact URI, without display name or angle brackets, e.g.
    /// `sip:alice@192.168.1.20:5060;transport=udp`.
    pub uri: String,
    /// The Contact's `expires` parameter, if any.
    pub expires: Option<u32>,
    /// The Contact's `q` parameter in thousandths (`q=0.5` → 500), if any.
    pub q: Option<u16>,
}

impl ContactSpec {
    /// A Contact with just a URI.
    pub fn new(uri: impl Into<String>) -> ContactSpec {
        ContactSpec {
            uri: uri.into(),
            expires: None,
            q: None,
        }
    }

    /// The same Contact with an `expires` parameter.
    pub fn with_expires(mut self, expires: u32) -> ContactSpec {
        self.expires = Some(expires);
        self
    }
}

/// The Contact header(s) of a REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts {
    /// No Contact: a query for the current bindings.
    None,
    /// `Contact: *` and nothing else.
    Wildcard,
    /// A list of Contacts. A list that mixed `*` with URIs must be passed as
    /// [`Contacts::WildcardWithOthers`].
    List(Vec<ContactSpec>),
    /// `*` together with other Contact values: always refused with `400`.
    WildcardWithOthers,
}

/// What the registrar needs from a REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    /// The Call-ID.
    pub call_id: String,
    /// The CSeq number.
    pub cseq: u32,
    /// The Contacts.
    pub contacts: Contacts,
    /// The Expires header, if any.
    pub expires: Option<u32>,
    /// Where the request came from.
    pub source: Source,
    /// The User-Agent header, kept for display.
    pub user_agent: Option<String>,
}

/// A stored binding of an AoR to a Contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI: the Request-URI of requests for this binding.
    pub contact: String,
    /// Where the REGISTER came from: where requests for this binding are sent.
    pub received: Source,
    /// When the binding expires (since the Unix epoch).
    pub expires_at: Duration,
    /// The Call-ID of the REGISTER that last wrote it.
    pub call_id: String,
    /// The CSeq of the REGISTER that last wrote it.
    pub cseq: u32,
    /// The `q` value in thousandths, if given.
    pub q: Option<u16>,
    /// When the binding was first created.
    pub created_at: Duration,
    /// When it was last written.
    pub updated_at: Duration,
    /// The User-Agent of the REGISTER that last wrote it.
    pub user_agent: Option<String>,
}

impl Binding {
    /// Whether the binding is live at `now`.
    pub fn is_live(&self, now: Duration) -> bool {
        now < self.expires_at
    }

    /// Whole seconds left at `now`, rounded up (0 once expired), for the `200 OK`'s `expires`.
    pub fn expires_in(&self, now: Duration) -> u32 {
        let left = self.expires_at.saturating_sub(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    /// Where requests for this binding go: the REGISTER's source address and transport.
    pub fn destination(&self) -> Source {
        self.received
    }

    /// The comparison key of the Contact URI.
    pub fn key(&self) -> String {
        contact_key(&self.contact)
    }
}

/// A live binding with its remaining expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveBinding {
    /// The binding.
    pub binding: Binding,
    /// Seconds left, for the `expires` parameter of the `200 OK`'s Contact.
    pub expires_in: u32,
}

/// The result of a successful REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterOutcome {
    /// Every live binding of the AoR after the update, for the `200 OK`'s Contact list.
    pub bindings: Vec<ActiveBinding>,
    /// Contacts newly bound.
    pub added: usize,
    /// Existing bindings refreshed or updated.
    pub refreshed: usize,
    /// Bindings removed (expires 0, `*`, or [`OverflowPolicy::ReplaceOldest`]).
    pub removed: usize,
}

/// What to do when a REGISTER would leave more than [`RegistrarConfig::max_contacts`] bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverflowPolicy {
    /// Refuse the request ([`RegisterError::TooManyContacts`]).
    #[default]
    Reject,
    /// Drop the least recently written bindings that the request did not touch; refuse only if
    /// the request itself binds too many.
    ReplaceOldest,
}

/// Registrar limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Expiry when neither the Contact nor the request gives one; default 3600 s.
    pub default_expires: u32,
    /// Shortest non-zero expiry accepted (else `423`); default 60 s.
    pub min_expires: u32,
    /// Longest expiry granted (longer requests are shortened); default 7200 s.
    pub max_expires: u32,
    /// Most live bindings per AoR; default 10.
    pub max_contacts: usize,
    /// What happens beyond `max_contacts`.
    pub overflow: OverflowPolicy,
}

impl Default for RegistrarConfig {
    fn default() -> RegistrarConfig {
        RegistrarConfig {
            default_expires: 3600,
            min_expires: 60,
            max_expires: 7200,
            max_contacts: 10,
            overflow: OverflowPolicy::Reject,
        }
    }
}

/// Why a [`RegistrarConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrarConfigError {
    /// Not `1 <= min_expires <= default_expires <= max_expires`.
    #[error("need 1 <= min_expires <= default_expires <= max_expires")]
    BadExpiry,
    /// `max_contacts` is zero.
    #[error("max_contacts must be at least 1")]
    NoContacts,
}

/// Why a REGISTER failed. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The AoR is empty.
    #[error("empty address-of-record")]
    InvalidAor,
    /// A Contact URI is empty or holds whitespace or control characters.
    #[error("invalid Contact URI")]
    InvalidContact,
    /// `*` with other Contacts, or without `Expires: 0`.
    #[error("Contact: * needs Expires: 0 and no other Contact")]
    InvalidWildcard,
    /// A binding with the same Call-ID has a CSeq at least as high (RFC 3261 §10.3 step 7).
    #[error("CSeq {got} not above {stored} stored for this Call-ID")]
    CSeqOutOfOrder {
        /// The request's CSeq.
        got: u32,
        /// The stored CSeq.
        stored: u32,
    },
    /// A non-zero expiry below the minimum: answer `423` with `Min-Expires`.
    #[error("interval too brief, minimum {min_expires} s")]
    IntervalTooBrief {
        /// The `Min-Expires` to send.
        min_expires: u32,
    },
    /// The AoR would have more than `max` live bindings.
    #[error("too many contacts for this AoR (max {max})")]
    TooManyContacts {
        /// The limit.
        max: usize,
    },
    /// The location store failed.
    #[error("location store: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl RegisterError {
    /// The SIP status to answer with.
    pub fn status_code(&self) -> u16 {
        match self {
            RegisterError::InvalidAor
            | RegisterError::InvalidContact
            | RegisterError::InvalidWildcard
            | RegisterError::CSeqOutOfOrder { .. } => 400,
            RegisterError::IntervalTooBrief { .. } => 423,
            RegisterError::TooManyContacts { .. } => 403,
            RegisterError::Store(_) => 500,
        }
    }

    /// A reason phrase for the status line.
    pub fn reason_phrase(&self) -> &'static str {
        match self {
            RegisterError::InvalidAor => "Bad Request",
            RegisterError::InvalidContact => "Invalid Contact",
            RegisterError::InvalidWildcard => "Invalid Wildcard Contact",
            RegisterError::CSeqOutOfOrder { .. } => "CSeq Out Of Order",
            RegisterError::IntervalTooBrief { .. } => "Interval Too Brief",
            RegisterError::TooManyContacts { .. } => "Too Many Contacts",
            RegisterError::Store(_) => "Server Internal Error",
        }
    }

    /// The `Min-Expires` header value a `423` must carry.
    pub fn min_expires(&self) -> Option<u32> {
        match self {
            RegisterError::IntervalTooBrief { min_expires } => Some(*min_expires),
            _ => None,
        }
    }
}

/// Where bindings live. Implement it over a database to share registrations across nodes; the
/// registrar reads an AoR's bindings, computes the new set, and writes it back in one call, which
/// a database should do in one transaction (serialising concurrent REGISTERs for one AoR).
pub trait LocationStore {
    /// The store's error, reported as [`RegisterError::Store`] (`500`).
    type Error: std::error::Error + Send + Sync + 'static;

    /// All bindings stored for `aor`, expired ones included (the registrar filters).
    fn load(&self, aor: &str) -> Result<Vec<Binding>, Self::Error>;

    /// Replaces every binding of `aor` with `bindings` atomically; an empty list deletes the AoR.
    fn replace(&mut self, aor: &str, bindings: Vec<Binding>) -> Result<(), Self::Error>;

    /// Deletes every binding expired at `now`, returning how many.
    fn purge_expired(&mut self, now: Duration) -> Result<usize, Self::Error>;
}

/// The in-memory [`LocationStore`].
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    aors: HashMap<String, Vec<Binding>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// How many AoRs hold bindings (live or not yet purged).
    pub fn aor_count(&self) -> usize {
        self.aors.len()
    }
}

impl LocationStore for MemoryStore {
    type Error = std::convert::Infallible;

    fn load(&self, aor: &str) -> Result<Vec<Binding>, Self::Error> {
        Ok(self.aors.get(aor).cloned().unwrap_or_default())
    }

    fn replace(&mut self, aor: &str, bindings: Vec<Binding>) -> Result<(), Self::Error> {
        if bindings.is_empty() {
            self.aors.remove(aor);
        } else {
            self.aors.insert(aor.to_owned(), bindings);
        }
        Ok(())
    }

    fn purge_expired(&mut self, now: Duration) -> Result<usize, Self::Error> {
        let mut purged = 0;
        self.aors.retain(|_, bindings| {
            let before = bindings.len();
            bindings.retain(|b| b.is_live(now));
            purged += before - bindings.len();
            !bindings.is_empty()
        });
        Ok(purged)
    }
}

/// The comparison key of a Contact URI: the scheme and the host part lowercased, the user part
/// and parameters as given, surrounding whitespace and angle brackets removed. A simplification
/// of RFC 3261 §19.1.4 that is enough for a UA re-registering the Contact it sent before.
pub fn contact_key(uri: &str) -> String {
    let uri = uri.trim();
    let uri = uri
        .strip_prefix('<')
        .and_then(|u| u.strip_suffix('>'))
        .unwrap_or(uri);
    let (scheme, rest) = match uri.find(':') {
        Some(i) => (&uri[..i], &uri[i + 1..]),
        None => ("", uri),
    };
    let (user, hostpart) = match rest.rfind('@') {
        Some(i) => (&rest[..=i], &rest[i + 1..]),
        None => ("", rest),
    };
    let host_end = hostpart.find([';', '?']).unwrap_or(hostpart.len());
    let mut key = String::with_capacity(uri.len());
    key.push_str(&scheme.to_ascii_lowercase());
    if !scheme.is_empty() {
        key.push(':');
    }
    key.push_str(user);
    key.push_str(&hostpart[..host_end].to_ascii_lowercase());
    key.push_str(&hostpart[host_end..]);
    key
}

/// The location service: REGISTER processing over a [`LocationStore`].
#[derive(Debug)]
pub struct Registrar<S: LocationStore = MemoryStore> {
    config: RegistrarConfig,
    store: S,
}

impl Registrar<MemoryStore> {
    /// A registrar over a fresh [`MemoryStore`].
    pub fn in_memory(config: RegistrarConfig) -> Result<Self, RegistrarConfigError> {
        Registrar::new(config, MemoryStore::new())
    }
}

impl<S: LocationStore> Registrar<S> {
    /// Checks `config` and builds a registrar over `store`.
    pub fn new(config: RegistrarConfig, store: S) -> Result<Self, RegistrarConfigError> {
        if config.min_expires == 0
            || config.min_expires > config.default_expires
            || config.default_expires > config.max_expires
        {
            return Err(RegistrarConfigError::BadExpiry);
        }
        if config.max_contacts == 0 {
            return Err(RegistrarConfigError::NoContacts);
        }
        Ok(Registrar { config, store })
    }

    /// The configuration.
    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Processes a REGISTER for `aor` (already authenticated and authorised) at `now`. On success
    /// the store holds the new binding set and the outcome lists it; on error nothing changed.
    pub fn register(
        &mut self,
        now: Duration,
        aor: &str,
        request: &RegisterRequest,
    ) -> Result<RegisterOutcome, RegisterError> {
        if aor.trim().is_empty() {
            return Err(RegisterError::InvalidAor);
        }
        let stored = self.store.load(aor).map_err(store_err)?;
        let mut live: Vec<Binding> = stored.iter().filter(|b| b.is_live(now)).cloned().collect();
        let pruned = stored.len() - live.len();

        let (mut added, mut refreshed, mut removed) = (0, 0, 0);
        match &request.contacts {
            Contacts::None => {
                if pruned == 0 {
                    return Ok(self.outcome(now, live, 0, 0, 0));
                }
            }
            Contacts::WildcardWithOthers => return Err(RegisterError::InvalidWildcard),
            Contacts::Wildcard => {
                if request.expires != Some(0) {
                    return Err(RegisterError::InvalidWildcard);
                }
                for b in &live {
                    if b.call_id == request.call_id && request.cseq <= b.cseq {
                        return Err(RegisterError::CSeqOutOfOrder {
                            got: request.cseq,
                            stored: b.cseq,
                        });
                    }
                }
                removed = live.len();
                live.clear();
            }
            Contacts::List(list) => {
                // Validate everything before changing anything.
                let mut planned = Vec::with_capacity(list.len());
                for c in list {
                    if c.uri.trim().is_empty()
                        || c.uri.chars().any(|ch| ch.is_control() || ch == ' ')
                    {
                        return Err(RegisterError::InvalidContact);
                    }
                    let expires = self.expiry_for(c, request.expires)?;
                    planned.push((contact_key(&c.uri), c, expires));
                }
                let mut touched: Vec<String> = Vec::new();
                for (key, c, expires) in planned {
                    let existing = live.iter().position(|b| b.key() == key);
                    if let Some(i) = existing.filter(|_| !touched.contains(&key)) {
                        // A Contact listed twice in one request: the last one wins.
                        let b = &live[i];
                        if b.call_id == request.call_id && request.cseq <= b.cseq {
                            return Err(RegisterError::CSeqOutOfOrder {
                                got: request.cseq,
                                stored: b.cseq,
                            });
                        }
                    }
                    match (existing, expires) {
                        (Some(i), 0) => {
                            live.remove(i);
                            removed += 1;
                        }
                        (None, 0) => {}
                        (Some(i), e) => {
                            let b = &mut live[i];
                            b.contact = c.uri.trim().to_owned();
                            b.received = request.source;
                            b.expires_at = now + Duration::from_secs(u64::from(e));
                            b.call_id = request.call_id.clone();
                            b.cseq = request.cseq;
                            b.q = c.q;
                            b.updated_at = now;
                            b.user_agent = request.user_agent.clone();
                            refreshed += 1;
                        }
                        (None, e) => {
                            live.push(Binding {
                                contact: c.uri.trim().to_owned(),
                                received: request.source,
                                expires_at: now + Duration::from_secs(u64::from(e)),
                                call_id: request.call_id.clone(),
                                cseq: request.cseq,
                                q: c.q,
                                created_at: now,
                                updated_at: now,
                                user_agent: request.user_agent.clone(),
                            });
                            added += 1;
                        }
                    }
                    touched.push(key);
                }
                let max = self.config.max_contacts;
                if live.len() > max {
                    let over = live.len() - max;
                    let mut untouched: Vec<(Duration, String)> = live
                        .iter()
                        .filter(|b| !touched.contains(&b.key()))
                        .map(|b| (b.updated_at, b.key()))
                        .collect();
                    if self.config.overflow == OverflowPolicy::Reject || untouched.len() < over {
                        return Err(RegisterError::TooManyContacts { max });
                    }
                    untouched.sort();
                    let drop: Vec<String> =
                        untouched.into_iter().take(over).map(|(_, k)| k).collect();
                    live.retain(|b| !drop.contains(&b.key()));
                    removed += over;
                }
            }
        }
        self.store.replace(aor, live.clone()).map_err(store_err)?;
        Ok(self.outcome(now, live, added, refreshed, removed))
    }

    /// The live bindings of `aor` at `now`, highest `q` first, then most recently written; expired
    /// bindings of the AoR are deleted from the store on the way.
    pub fn bindings(
        &mut self,
        now: Duration,
        aor: &str,
    ) -> Result<Vec<ActiveBinding>, RegisterError> {
        let stored = self.store.load(aor).map_err(store_err)?;
        let total = stored.len();
        let live: Vec<Binding> = stored.into_iter().filter(|b| b.is_live(now)).collect();
        if live.len() != total {
            self.store.replace(aor, live.clone()).map_err(store_err)?;
        }
        Ok(self.outcome(now, live, 0, 0, 0).bindings)
    }

    /// Deletes every binding expired at `now`, in all AoRs; returns how many.
    pub fn purge_expired(&mut self, now: Duration) -> Result<usize, RegisterError> {
        self.store.purge_expired(now).map_err(store_err)
    }

    fn expiry_for(&self, c: &ContactSpec, header: Option<u32>) -> Result<u32, RegisterError> {
        let requested = c.expires.or(header).unwrap_or(self.config.default_expires);
        if requested == 0 {
            return Ok(0);
        }
        if requested < self.config.min_expires {
            return Err(RegisterError::IntervalTooBrief {
                min_expires: self.config.min_expires,
            });
        }
        Ok(requested.min(self.config.max_expires))
    }

    fn outcome(
        &self,
        now: Duration,
        mut live: Vec<Binding>,
        added: usize,
        refreshed: usize,
        removed: usize,
    ) -> RegisterOutcome {
        live.sort_by(|a, b| {
            b.q.unwrap_or(1000)
                .cmp(&a.q.unwrap_or(1000))
                .then(b.updated_at.cmp(&a.updated_at))
        });
        RegisterOutcome {
            bindings: live
                .into_iter()
                .map(|binding| ActiveBinding {
                    expires_in: binding.expires_in(now),
                    binding,
                })
                .collect(),
            added,
            refreshed,
            removed,
        }
    }
}

fn store_err<E: std::error::Error + Send + Sync + 'static>(e: E) -> RegisterError {
    RegisterError::Store(Box::new(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_keys() {
        assert_eq!(
            contact_key("SIP:Alice@Example.COM:5060;Transport=UDP"),
            "sip:Alice@example.com:5060;Transport=UDP"
        );
        assert_eq!(contact_key(" <sip:10.0.0.1> "), "sip:10.0.0.1");
        assert_eq!(contact_key("garbage"), "garbage");
        assert_eq!(contact_key(""), "");
        assert_eq!(contact_key("sip:a@b@C;x?y"), "sip:a@b@c;x?y");
    }

    #[test]
    fn expires_in_rounds_up() {
        let b = Binding {
            contact: "sip:a@b".into(),
            received: Source {
                addr: SocketAddr::from(([192, 0, 2, 1], 5060)),
                transport: Transport::Udp,
                local: None,
            },
            expires_at: Duration::from_millis(10_500),
            call_id: "c".into(),
            cseq: 1,
            q: None,
            created_at: Duration::ZERO,
            updated_at: Duration::ZERO,
            user_agent: None,
        };
        assert_eq!(b.expires_in(Duration::from_secs(10)), 1);
        assert_eq!(b.expires_in(Duration::from_secs(11)), 0);
        assert!(!b.is_live(Duration::from_millis(10_500)));
    }
}
