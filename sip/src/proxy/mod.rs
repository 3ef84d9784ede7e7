//! The stateful proxy core (RFC 3261 §16), sans-IO: registrar front end, digest authentication,
//! routing (location service with parallel forking, PSTN gateways by prefix with failover,
//! trusted-peer transit), media anchoring through a [`MediaRelay`], and just enough dialog
//! tracking to report calls ([`ProxyEvent`]) and to end them ([`ProxyCore::end_call`]).
//!
//! # The driving loop
//!
//! [`ProxyCore`] owns no socket and reads no clock. The composing layer (the `controlplane`'s
//! SIP transport on mio) feeds it and drains it, quinn-proto style:
//!
//! ```text
//! loop {
//!     wait for a datagram or until poll_timeout()
//!     now = start.elapsed()                       // monotonic Duration since startup
//!     on a datagram:  core.handle_datagram(now, local, source, transport, &bytes)
//!     on the timeout: core.handle_timeout(now)
//!     on media timeout (session manager): core.end_call(now, call_id, EndReason::MediaTimeout)
//!     while let Some(t) = core.poll_transmit() { socket(t.local).send_to(&t.contents, t.destination) }
//!     while let Some(e) = core.poll_event()    { CDRs, metrics, logs }
//!     next_wakeup = core.poll_timeout()           // None: nothing armed
//! }
//! ```
//!
//! After **every** call that takes `now`, drain `poll_transmit` and `poll_event` and re-read
//! `poll_timeout`. The media relay is called synchronously from inside those calls through the
//! [`MediaRelay`] the core owns ([`ProxyCore::relay_mut`] reaches it).
//!
//! `now` is one [`Duration`] used for transaction timers, registration expiry and digest nonce
//! age. Nonces are only checked by the node that issued them unless every node is driven with the
//! same epoch (e.g. the Unix epoch); the registrar stores absolute expiry in the same time base.
//! Randomness (nonces, tags, branches of our own requests) is derived from the `seed` given to
//! [`ProxyCore::new`]; the same inputs always produce the same outputs.
//!
//! # Layers
//!
//! Datagrams are parsed by [`crate::message::parse`] (malformed answerable requests get their
//! `400` statelessly, garbage is dropped and counted in [`Stats`]), then run through
//! [`crate::transaction::Transactions`] (retransmissions absorbed, 100 Trying sent at once, hop by
//! hop ACKs, timers). Both layers work on the message layer's [`Request`] and [`Response`],
//! and every byte sent is printed by [`Request::to_bytes`] / [`Response::to_bytes`]: a forwarded
//! message keeps its extension method, Request-URI, reason phrase, header order, other headers'
//! names and values as written, and body bytes, apart from the proxy's own edits (Via,
//! Record-Route, Route, Max-Forwards, the SDP and its Content-Length, and the `Authorization` /
//! `Proxy-Authorization` values for our own realms, which UAs resend on every request of a
//! dialog and which never leave us; other realms' credentials are forwarded). The header fields
//! the layers look inside ([`crate::message::TYPED_HEADERS`]) print with their RFC 3261 names, and
//! compact names are expanded (`v:` becomes `Via:`), which §7.3.1 and §7.3.3 make equivalent.
//!
//! # Routing
//!
//! 1. Max-Forwards 0 → `483`; a loop (our Via with the branch we would compute now) → `482`;
//!    route preprocessing (§16.4) removes our own Route entries.
//! 2. In-dialog requests (To tag) and the ACK for a 2xx follow the remaining Route set; with no
//!    Route left they go to the other party's recorded signalling address (the NATed source of
//!    its INVITE or 200 OK), else to the Request-URI.
//! 3. REGISTER for a local domain: digest (`401`), the username must be the To user or an alias
//!    of it, then the registrar binds the Contact to the request's source (NAT).
//! 4. Other requests: callers whose From domain is local must authenticate (`407`); trusted peers
//!    (by source IP) need not; anyone else may only reach local users. The Request-URI then picks:
//!    a local user → all live bindings in parallel (`480` when none); a number from a local
//!    account or trusted peer → the PSTN route with the longest prefix (with
//!    `P-Asserted-Identity` for local callers, failover on 5xx/408/timeout); a trusted peer's
//!    foreign Request-URI → transit to it; otherwise `404`/`403`.
//!
//! # CANCEL
//!
//! A CANCEL is answered 200 at once and CANCELs every pending branch (a branch without a
//! provisional yet gets its CANCEL when one arrives, §9.1); the response context carries on, so
//! the callee's 487 (with its To tag) is what the caller gets (§16.10, §16.7 step 6). A branch
//! with no final 64·T1 after our CANCEL is given up (§9.1), and when no branch left a final
//! the caller gets our own 487. A 2xx crossing the CANCEL is forwarded and answers the call.
//!
//! # Timer C
//!
//! Every forwarded INVITE branch runs timer C ([`ProxyConfig::timer_c`], 3 minutes by default;
//! §16.6 step 11), restarted by each provisional but 100 (§16.7 step 2). When it fires on a
//! branch that has had a provisional, the branch is CANCELled (§16.8) and, as after any CANCEL
//! of ours, given 64·T1 for its final. The caller did not cancel, so the branch's 487 is taken
//! for a 408 Request Timeout (with the callee's To tag): a 487 would tell the caller its own
//! request was withdrawn, and a CDR `failed:487` would look like a cancelled call. A 408 is what
//! §16.8 prescribes for a branch without a provisional and §16.7 step 6 for a context left
//! without any final, so the caller gets the same answer whether the callee answers our CANCEL
//! or not (CDR cause `failed:408`). Such a branch does not fail over to the next gateway: the
//! callee was reached and did not answer. A 2xx crossing our CANCEL still answers the call.
//!
//! # Left out
//!
//! DNS (targets must be IP addresses), strict-routing next hops, reliable provisionals (PRACK
//! offers) and RFC 2543 peers.

pub mod config;
pub mod media;
mod util;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rsip::Transport;
use thiserror::Error;

pub use config::{
    Account, Cidr, CidrError, Gateway, Interface, ProxyConfig, PstnRoute, DEFAULT_TIMER_C,
};
pub use media::{CallRef, Leg, MediaError, MediaRelay};

use crate::auth::{
    AuthConfig, AuthConfigError, Authenticator, ChallengeRole, DigestCredentials, DigestRequest,
};
use crate::message::grammar::{same_host, split_outside_quotes};
use crate::message::proxy::{
    apply_received_rport, build_response, compute_branch, decrement_max_forwards, is_in_dialog,
    is_loop, pop_own_via, preprocess_route, push_via, record_route, response_target, too_many_hops,
    LocalAddr,
};
use crate::message::{
    self, make_header, Limits, Method, NameAddr, ParseError, Request, Response, SipMessage, SipUri,
};
use crate::registrar::{
    ContactSpec, Contacts, LocationStore, MemoryStore, RegisterRequest, Registrar,
    RegistrarConfigError, Source,
};
use crate::transaction::{self, Event as TxEvent, TransactionKey, Transactions, TryingPolicy};
use util::Drbg;

/// Bytes for the driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The local socket to send from (an [`Interface::bind`]).
    pub local: SocketAddr,
    /// Where to send.
    pub destination: SocketAddr,
    /// Over which transport.
    pub transport: Transport,
    /// One whole SIP message.
    pub contents: Arc<[u8]>,
}

/// Why a call ended, as written into CDRs (`Display`: `bye:caller`, `bye:callee`, `cancel`,
/// `failed:486`, `media-timeout`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// The caller sent BYE.
    ByeCaller,
    /// The callee sent BYE.
    ByeCallee,
    /// The caller cancelled before an answer.
    Cancel,
    /// The call failed with this final status.
    Failed(u16),
    /// Ended by [`ProxyCore::end_call`] for this reason.
    Ended(EndReason),
}

impl fmt::Display for EndCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ByeCaller => f.write_str("bye:caller"),
            Self::ByeCallee => f.write_str("bye:callee"),
            Self::Cancel => f.write_str("cancel"),
            Self::Failed(code) => write!(f, "failed:{code}"),
            Self::Ended(reason) => f.write_str(reason.cause()),
        }
    }
}

/// Why the composing layer ends a call with [`ProxyCore::end_call`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The relay saw no media for too long.
    MediaTimeout,
    /// The call reached its maximum duration.
    MaxDuration,
    /// An operator ended it.
    Operator,
}

impl EndReason {
    /// The CDR cause.
    pub fn cause(self) -> &'static str {
        match self {
            Self::MediaTimeout => "media-timeout",
            Self::MaxDuration => "max-duration",
            Self::Operator => "operator",
        }
    }

    /// The `Reason` header value (RFC 3326) of the BYEs.
    pub fn reason_header(self) -> &'static str {
        match self {
            Self::MediaTimeout => "SIP;cause=408;text=\"media timeout\"",
            Self::MaxDuration => "SIP;cause=408;text=\"maximum call duration\"",
            Self::Operator => "SIP;cause=200;text=\"ended by operator\"",
        }
    }
}

/// What the composing layer learns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyEvent {
    /// An initial INVITE was accepted and forwarded.
    CallStarted {
        /// The Call-ID.
        call_id: String,
        /// The From URI.
        caller: String,
        /// The Request-URI as received.
        callee: String,
        /// Where the INVITE came from.
        source: SocketAddr,
        /// Who pays for the call, as a carrier bills it: the authenticated account
        /// (`user@domain`, the digest username and realm) for a local caller, the trusted
        /// peer's source address for a trusted peer (its caller ID is its own business), and
        /// nobody for a foreign caller reaching a local user.
        billing_party: Option<String>,
        /// The caller's `User-Agent`.
        user_agent: Option<String>,
    },
    /// The first 2xx to the initial INVITE was forwarded.
    CallAnswered {
        /// The Call-ID.
        call_id: String,
        /// The callee's `User-Agent` (else its `Server`) from the 2xx.
        user_agent: Option<String>,
    },
    /// The call is over (or never got going); its media was deleted.
    CallEnded {
        /// The Call-ID.
        call_id: String,
        /// Why.
        cause: EndCause,
    },
    /// A REGISTER succeeded.
    Registered {
        /// The canonical address-of-record.
        aor: String,
        /// Where it came from (where requests for it go).
        source: SocketAddr,
        /// Live bindings after the update.
        contacts: usize,
    },
    /// A message was dropped or refused for a reason worth logging.
    Dropped {
        /// Where it came from.
        source: SocketAddr,
        /// What was wrong.
        reason: String,
    },
    /// Something went wrong on our side (relay failure on an answer, transaction misuse).
    Error {
        /// The call concerned, if any.
        call_id: Option<String>,
        /// What happened.
        error: String,
    },
}

/// Errors of the proxy's API.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// [`ProxyConfig::interfaces`] is empty.
    #[error("no interface configured")]
    NoInterface,
    /// A domain cannot be a digest realm.
    #[error("auth configuration: {0}")]
    Auth(#[from] AuthConfigError),
    /// The registrar limits are inconsistent.
    #[error("registrar configuration: {0}")]
    Registrar(#[from] RegistrarConfigError),
    /// No such call.
    #[error("unknown call {0}")]
    UnknownCall(String),
    /// The call is not answered yet (cancel it instead).
    #[error("call {0} is not answered")]
    NotAnswered(String),
    /// The transaction layer refused a request we built.
    #[error("transaction layer: {0}")]
    Transaction(#[from] transaction::Error),
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed in.
    pub received: u64,
    /// Not SIP, too large, or malformed beyond answering: dropped.
    pub garbage: u64,
    /// Malformed requests answered with 400/505.
    pub bad_requests: u64,
    /// Messages dropped for other reasons (not our Via, transaction errors).
    pub dropped: u64,
    /// Requests forwarded (per branch, stateless ACKs included).
    pub forwarded_requests: u64,
    /// Responses forwarded.
    pub forwarded_responses: u64,
}

/// Who sent an out-of-dialog request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Local(usize),
    Trusted,
    Foreign,
}

/// A forwarding target.
#[derive(Debug, Clone)]
struct Target {
    uri: Option<String>,
    dest: SocketAddr,
    transport: Transport,
}

/// A server transaction we forward for.
#[derive(Debug)]
struct ServerCtx {
    /// As received (received/rport applied, our Routes removed): responses are built from it.
    request: Request,
    /// Our branch for this request, computed on it as received.
    branch: String,
    local: SocketAddr,
    branches: Vec<TransactionKey>,
    next_index: usize,
    finals: Vec<Response>,
    final_sent: bool,
    answered: bool,
    cancelled: bool,
    /// The request with Max-Forwards decremented, before Record-Route and Via: the template of
    /// every branch.
    template: Request,
    record_route: bool,
    /// The initial INVITE of this call.
    call: Option<String>,
}

impl ServerCtx {
    /// The context of a request about to be forwarded: no branch yet, no final response.
    fn new(
        request: Request,
        branch: String,
        local: SocketAddr,
        template: Request,
        record_route: bool,
        call: Option<String>,
    ) -> Self {
        ServerCtx {
            request,
            branch,
            local,
            branches: Vec::new(),
            next_index: 0,
            finals: Vec::new(),
            final_sent: false,
            answered: false,
            cancelled: false,
            template,
            record_route,
            call,
        }
    }
}

/// A client transaction (a branch, or our own CANCEL/BYE when `server` is `None`).
#[derive(Debug)]
struct ClientCtx {
    server: Option<TransactionKey>,
    request: Request,
    dest: SocketAddr,
    transport: Transport,
    provisional: bool,
    /// A final response arrived, or the branch was given up (timeout, or no final within
    /// 64·T1 of our CANCEL).
    done: bool,
    /// To be CANCELled once it has a provisional (§9.1: no CANCEL before one).
    cancel_pending: bool,
    /// Our CANCEL was sent (never twice).
    cancelled: bool,
    /// The entry of this INVITE branch in [`ProxyCore::timer_c`], while it runs.
    timer_c: Option<(Duration, u64)>,
    /// Timer C fired after a provisional and we CANCELled: the branch's 487 is our doing, and
    /// the caller is told 408 instead (§16.8).
    timed_out: bool,
    failover: Vec<Gateway>,
    offer_in_request: bool,
    sender: Leg,
}

/// What we remember of a call.
#[derive(Debug, Clone)]
struct Call {
    from_tag: String,
    caller_from: String,
    caller_to: String,
    caller_contact: String,
    caller_addr: SocketAddr,
    caller_transport: Transport,
    caller_cseq: u32,
    callee_tag: Option<String>,
    callee_contact: Option<String>,
    callee_addr: Option<(SocketAddr, Transport)>,
    callee_cseq: u32,
    record_route: Vec<String>,
    answered: bool,
    last_2xx: Option<(Vec<u8>, Vec<u8>)>,
}

/// The stateful proxy. See the [module documentation](self) for the driving loop.
#[derive(Debug)]
pub struct ProxyCore<R: MediaRelay, S: LocationStore = MemoryStore> {
    config: ProxyConfig,
    accounts: config::AccountIndex,
    ours: Vec<LocalAddr>,
    secret: Vec<u8>,
    rng: Drbg,
    relay: R,
    txs: Transactions,
    registrar: Registrar<S>,
    auths: HashMap<String, Authenticator>,
    servers: HashMap<TransactionKey, ServerCtx>,
    clients: HashMap<TransactionKey, ClientCtx>,
    calls: HashMap<String, Call>,
    /// Branches we sent a CANCEL on, by the time they must have a final (64·T1 after the
    /// CANCEL, §9.1); the sequence number keeps equal deadlines apart.
    cancel_guards: BTreeMap<(Duration, u64), TransactionKey>,
    /// INVITE branches by the time their timer C fires (§16.6 step 11); entries share
    /// `next_guard`.
    timer_c: BTreeMap<(Duration, u64), TransactionKey>,
    next_guard: u64,
    incoming_source: Option<SocketAddr>,
    out: std::collections::VecDeque<Transmit>,
    events: std::collections::VecDeque<ProxyEvent>,
    stats: Stats,
}

const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, REGISTER, INFO, MESSAGE, NOTIFY, REFER, PRACK";

fn is_number(user: &str) -> bool {
    let d = user.strip_prefix('+').unwrap_or(user);
    !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
}

/// Our branch for the `index`th branch of a request whose base branch is `base`
/// (`z9hG4bK<tx>.<loop>` → `z9hG4bK<tx>-<index>.<loop>`, keeping the loop part last).
fn indexed_branch(base: &str, index: usize) -> String {
    match base.split_once('.') {
        Some((tx, lp)) => format!("{tx}-{index}.{lp}"),
        None => format!("{base}-{index}"),
    }
}

impl<R: MediaRelay> ProxyCore<R> {
    /// A proxy over `relay` whose registrations live in memory. `seed` (at least 16 bytes, from
    /// a CSPRNG, the same on every node of a cluster so they accept each other's nonces) keys
    /// branches, nonces and tags.
    ///
    /// # Errors
    ///
    /// No interface, a domain that cannot be a realm, a seed shorter than 16 bytes, or bad
    /// registrar limits.
    pub fn new(config: ProxyConfig, relay: R, seed: &[u8]) -> Result<Self, ProxyError> {
        Self::with_store(config, relay, MemoryStore::new(), seed)
    }
}

impl<R: MediaRelay, S: LocationStore> ProxyCore<R, S> {
    /// A proxy over `relay` whose registrations live in `store` (a database, to keep them
    /// across restarts). The store's times are the `now` of this core: see the
    /// [module documentation](self).
    ///
    /// # Errors
    ///
    /// As [`ProxyCore::new`].
    pub fn with_store(
        config: ProxyConfig,
        relay: R,
        store: S,
        seed: &[u8],
    ) -> Result<Self, ProxyError> {
        if config.interfaces.is_empty() {
            return Err(ProxyError::NoInterface);
        }
        let mut auths = HashMap::new();
        for d in &config.domains {
            let mut auth_config = AuthConfig::new(d.clone(), seed.to_vec());
            if !config.digest_algorithms.is_empty() {
                auth_config.algorithms = config.digest_algorithms.clone();
            }
            let auth = Authenticator::new(auth_config)?;
            auths.insert(d.to_ascii_lowercase(), auth);
        }
        let registrar = Registrar::new(config.registrar, store)?;
        let mut tx_config = config.transactions.clone();
        tx_config.trying = TryingPolicy::Immediate;
        let ours = config
            .interfaces
            .iter()
            .map(|i| i.local_addr(Transport::Udp))
            .collect();
        Ok(Self {
            ours,
            secret: seed.to_vec(),
            rng: Drbg::new(seed),
            relay,
            txs: Transactions::new(tx_config),
            registrar,
            auths,
            servers: HashMap::new(),
            clients: HashMap::new(),
            calls: HashMap::new(),
            cancel_guards: BTreeMap::new(),
            timer_c: BTreeMap::new(),
            next_guard: 0,
            incoming_source: None,
            out: Default::default(),
            events: Default::default(),
            stats: Stats::default(),
            accounts: config::AccountIndex::new(&config.accounts),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// The media relay.
    pub fn relay(&self) -> &R {
        &self.relay
    }

    /// The media relay, mutably.
    pub fn relay_mut(&mut self) -> &mut R {
        &mut self.relay
    }

    /// The registrar (its bindings).
    pub fn registrar_mut(&mut self) -> &mut Registrar<S> {
        &mut self.registrar
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Calls being set up or up.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Live transactions (server and client).
    pub fn transactions(&self) -> usize {
        self.txs.len()
    }

    /// A datagram (or one framed stream message) arrived on our socket `local` from `source`.
    pub fn handle_datagram(
        &mut self,
        now: Duration,
        local: SocketAddr,
        source: SocketAddr,
        transport: Transport,
        bytes: &[u8],
    ) {
        self.stats.received += 1;
        let limits = if transaction::is_reliable(transport) {
            Limits::STREAM
        } else {
            Limits::UDP
        };
        match message::parse(bytes, &limits) {
            Ok(SipMessage::Request(req)) => {
                self.incoming_request(now, local, source, transport, req)
            }
            Ok(SipMessage::Response(resp)) => self.incoming_response(now, source, transport, resp),
            Err(ParseError::Empty) => {}
            Err(e) => {
                if let Some(resp) = e.response() {
                    self.stats.bad_requests += 1;
                    let dest = response_target(&resp.headers).unwrap_or(source);
                    self.send_bytes(dest, transport, resp.to_bytes());
                } else {
                    self.stats.garbage += 1;
                }
                self.events.push_back(ProxyEvent::Dropped {
                    source,
                    reason: e.to_string(),
                });
            }
        }
        self.flush();
    }

    /// Timers are due: call when `now` reaches [`Self::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Duration) {
        self.txs.handle_timeout(now);
        self.pump(now, None);
        self.fire_timer_c(now);
        self.expire_cancelled_branches(now);
        self.flush();
    }

    /// Ends an answered call from the middle (media timeout, maximum duration): sends a BYE with
    /// a `Reason` header to each side, built from the recorded dialog (both Contacts and tags,
    /// CSeq + 1, the Route sets from Record-Route), deletes its media and emits
    /// [`ProxyEvent::CallEnded`].
    ///
    /// # Errors
    ///
    /// Unknown or unanswered call; a BYE the transaction layer refuses.
    pub fn end_call(
        &mut self,
        now: Duration,
        call_id: &str,
        reason: EndReason,
    ) -> Result<(), ProxyError> {
        let call = self
            .calls
            .get(call_id)
            .cloned()
            .ok_or_else(|| ProxyError::UnknownCall(call_id.to_owned()))?;
        if !call.answered {
            return Err(ProxyError::NotAnswered(call_id.to_owned()));
        }
        self.calls.remove(call_id);
        self.relay.delete(call_id);
        self.events.push_back(ProxyEvent::CallEnded {
            call_id: call_id.to_owned(),
            cause: EndCause::Ended(reason),
        });
        let (toward_callee, toward_caller) = self.split_route_set(&call.record_route);
        let callee_tag = call.callee_tag.clone().unwrap_or_default();
        let callee_party = format!("{};tag={callee_tag}", call.caller_to);
        let mut result = Ok(());
        // Toward the callee: as the caller would send it.
        if let Some(contact) = &call.callee_contact {
            let dest = toward_callee
                .first()
                .and_then(|r| util::uri_target(r))
                .or(call.callee_addr);
            if let Some((dest, transport)) = dest {
                let bye = self.build_bye(
                    call_id,
                    contact,
                    &call.caller_from,
                    &callee_party,
                    call.caller_cseq.saturating_add(1),
                    &toward_callee,
                    reason,
                    dest,
                    transport,
                );
                if let Err(e) = self.send_own(now, bye, dest, transport) {
                    result = Err(e);
                }
            }
        }
        // Toward the caller: as the callee would send it.
        let dest = toward_caller
            .first()
            .and_then(|r| util::uri_target(r))
            .unwrap_or((call.caller_addr, call.caller_transport));
        let bye = self.build_bye(
            call_id,
            &call.caller_contact,
            &callee_party,
            &call.caller_from,
            call.callee_cseq.saturating_add(1),
            &toward_caller,
            reason,
            dest.0,
            dest.1,
        );
        if let Err(e) = self.send_own(now, bye, dest.0, dest.1) {
            result = Err(e);
        }
        self.pump(now, None);
        self.flush();
        result
    }

    /// The next message to send. Drain after every call that takes `now`.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next event. Drain after every call that takes `now`.
    pub fn poll_event(&mut self) -> Option<ProxyEvent> {
        self.events.pop_front()
    }

    /// When to call [`Self::handle_timeout`] next; `None` when nothing is armed.
    pub fn poll_timeout(&self) -> Option<Duration> {
        [
            self.txs.poll_timeout(),
            self.cancel_guards.keys().next().map(|&(at, _)| at),
            self.timer_c.keys().next().map(|&(at, _)| at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // -----------------------------------------------------------------------------------------
    // Input
    // -----------------------------------------------------------------------------------------

    fn incoming_request(
        &mut self,
        now: Duration,
        local: SocketAddr,
        source: SocketAddr,
        transport: Transport,
        mut req: Request,
    ) {
        let is_ack = req.method.is(rsip::Method::Ack);
        if let Err(e) = apply_received_rport(&mut req.headers, source) {
            self.drop_msg(source, format!("bad Via: {e}"));
            return;
        }
        self.incoming_source = Some(source);
        // The transaction layer hands the request back in its event; on error the headers
        // are still needed for the 400.
        let headers = (!is_ack).then(|| req.headers.clone());
        if let Err(e) = self
            .txs
            .handle_incoming(now, source, transport, SipMessage::Request(req))
        {
            if let Some(headers) = headers {
                let resp =
                    message::proxy::response_from_headers(&headers, 400, &e.to_string(), None);
                self.send_bytes(source, transport, resp.to_bytes());
            }
            self.drop_msg(source, e.to_string());
        }
        self.pump(now, Some(local));
    }

    fn incoming_response(
        &mut self,
        now: Duration,
        source: SocketAddr,
        transport: Transport,
        resp: Response,
    ) {
        self.incoming_source = Some(source);
        if let Err(e) = self
            .txs
            .handle_incoming(now, source, transport, SipMessage::Response(resp))
        {
            self.drop_msg(source, e.to_string());
        }
        self.pump(now, None);
    }

    fn drop_msg(&mut self, source: SocketAddr, reason: String) {
        self.stats.dropped += 1;
        self.events
            .push_back(ProxyEvent::Dropped { source, reason });
    }

    /// Handles every pending transaction event.
    fn pump(&mut self, now: Duration, local: Option<SocketAddr>) {
        while let Some(event) = self.txs.poll_event() {
            self.tx_event(now, local, event);
        }
        self.incoming_source = None;
    }

    fn tx_event(&mut self, now: Duration, local: Option<SocketAddr>, event: TxEvent) {
        let local = local.unwrap_or(self.config.interfaces[0].bind);
        match event {
            TxEvent::Request {
                key,
                source,
                transport,
                request,
            } => self.on_request(now, key, local, source, transport, request),
            TxEvent::Cancel {
                key,
                invite,
                request,
                ..
            } => self.on_cancel(now, key, invite, request),
            TxEvent::Ack { request, .. } => self.on_ack(request),
            TxEvent::Response { key, response } => {
                let source = self.incoming_source;
                self.on_response(now, key, response, source);
            }
            TxEvent::StrayResponse {
                source, response, ..
            } => self.on_stray(response, source),
            TxEvent::Timeout { key, .. } | TxEvent::TransportError { key } => {
                self.on_client_timeout(now, key);
            }
            TxEvent::Terminated { key } => {
                self.servers.remove(&key);
                if let Some(at) = self.clients.remove(&key).and_then(|c| c.timer_c) {
                    self.timer_c.remove(&at);
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Output
    // -----------------------------------------------------------------------------------------

    fn local_for(&self, dest: SocketAddr) -> SocketAddr {
        self.config
            .interface_for(dest.ip())
            .map_or(self.config.interfaces[0].bind, |i| i.bind)
    }

    /// Moves the transaction layer's transmits to our queue (keeps the order of sends).
    fn flush(&mut self) {
        while let Some(t) = self.txs.poll_transmit() {
            self.out.push_back(Transmit {
                local: self.local_for(t.destination),
                destination: t.destination,
                transport: t.transport,
                contents: t.contents,
            });
        }
    }

    fn send_bytes(&mut self, dest: SocketAddr, transport: Transport, bytes: Vec<u8>) {
        self.flush();
        self.out.push_back(Transmit {
            local: self.local_for(dest),
            destination: dest,
            transport,
            contents: Arc::from(bytes),
        });
    }

    /// Answers a server transaction.
    fn respond(&mut self, now: Duration, key: &TransactionKey, resp: &Response) {
        if let Err(e) = self.txs.send_response(now, key, resp.clone()) {
            self.events.push_back(ProxyEvent::Error {
                call_id: Some(util::call_id(&resp.headers)),
                error: e.to_string(),
            });
        }
    }

    /// Answers `req` on `key` with a locally generated response.
    fn reply(
        &mut self,
        now: Duration,
        key: &TransactionKey,
        req: &Request,
        status: u16,
        reason: &str,
    ) {
        let tag = self.rng.token();
        let resp = build_response(req, status, reason, Some(&tag));
        self.respond(now, key, &resp);
    }

    /// Sends a request of our own (CANCEL, BYE) in a client transaction.
    fn send_own(
        &mut self,
        now: Duration,
        req: Request,
        dest: SocketAddr,
        transport: Transport,
    ) -> Result<TransactionKey, ProxyError> {
        let key = self.txs.send_request(now, dest, transport, req.clone())?;
        self.clients.insert(
            key.clone(),
            ClientCtx {
                server: None,
                request: req,
                dest,
                transport,
                provisional: false,
                done: false,
                cancel_pending: false,
                cancelled: false,
                timer_c: None,
                timed_out: false,
                failover: Vec::new(),
                offer_in_request: false,
                sender: Leg::Caller,
            },
        );
        Ok(key)
    }

    fn own_via(&mut self, dest: SocketAddr, transport: Transport) -> (LocalAddr, String) {
        let iface = self
            .config
            .interface_for(dest.ip())
            .unwrap_or(&self.config.interfaces[0]);
        let local = iface.local_addr(transport);
        (local, format!("z9hG4bK{}", self.rng.token()))
    }

    // -----------------------------------------------------------------------------------------
    // Requests
    // -----------------------------------------------------------------------------------------

    /// Removes from a request we forward the credentials for our own realms (our domains), on
    /// every request of a dialog: UAs resend their cached credentials on ACK, BYE, re-INVITE,
    /// and a digest response is material for an offline guess of one of our accounts'
    /// passwords. Credentials for other realms are for someone downstream and stay (§22.3).
    fn remove_own_credentials(&self, headers: &mut rsip::Headers) {
        util::remove_credentials_for(headers, |realm| self.config.is_local_domain(realm));
    }

    fn is_local_host(&self, host: &str) -> bool {
        self.config.is_local_domain(host) || self.ours.iter().any(|l| same_host(&l.host, host))
    }

    fn on_request(
        &mut self,
        now: Duration,
        key: TransactionKey,
        local: SocketAddr,
        source: SocketAddr,
        transport: Transport,
        mut req: Request,
    ) {
        if too_many_hops(&req.headers) {
            self.reply(now, &key, &req, 483, "Too Many Hops");
            return;
        }
        if is_loop(&req, &self.ours, &self.secret) {
            self.reply(now, &key, &req, 482, "Loop Detected");
            return;
        }
        let branch = compute_branch(&req, &self.secret);
        if preprocess_route(&mut req, &self.ours).is_err() {
            self.reply(now, &key, &req, 400, "Bad Route");
            return;
        }
        if is_in_dialog(&req.headers) {
            self.in_dialog(now, key, local, source, transport, req, branch);
            return;
        }
        let (ruri_user, ruri_host) = match util::user_host(&req.uri) {
            Some(uh) => uh,
            None => {
                self.reply(now, &key, &req, 416, "Unsupported URI Scheme");
                return;
            }
        };
        if req.method.is(rsip::Method::Register) {
            if self.config.is_local_domain(&ruri_host) {
                self.on_register(now, &key, local, source, transport, &req);
            } else {
                self.reply(now, &key, &req, 403, "Forbidden");
            }
            return;
        }
        let has_route = !util::values(&req.headers, "Route").is_empty();
        if req.method.is(rsip::Method::Options)
            && ruri_user.is_none()
            && !has_route
            && self.is_local_host(&ruri_host)
        {
            let tag = self.rng.token();
            let mut resp = build_response(&req, 200, "OK", Some(&tag));
            resp.headers.push(make_header("Allow", ALLOW));
            self.respond(now, &key, &resp);
            return;
        }

        // Who is calling.
        let from = util::party(&req.headers, false);
        let (from_user, from_host) = from
            .as_ref()
            .and_then(|f| util::user_host(&f.uri))
            .unwrap_or((None, String::new()));
        let caller = if self.config.is_trusted(source.ip()) {
            Caller::Trusted
        } else if self.config.is_local_domain(&from_host) {
            match self.authorize(now, &req, from_user.as_deref().unwrap_or(""), &from_host) {
                Ok(i) => Caller::Local(i),
                Err(resp) => {
                    self.respond(now, &key, &resp);
                    return;
                }
            }
        } else {
            Caller::Foreign
        };

        // Where to.
        let mut failover = Vec::new();
        let mut pai = None;
        let targets: Vec<Target> = if has_route {
            if caller == Caller::Foreign {
                self.reply(now, &key, &req, 403, "Forbidden");
                return;
            }
            let first = util::value(&req.headers, "Route")
                .and_then(|r| NameAddr::parse(&r).ok())
                .and_then(|n| util::uri_target(&n.uri));
            match first {
                Some((dest, transport)) => vec![Target {
                    uri: None,
                    dest,
                    transport,
                }],
                None => {
                    self.reply(now, &key, &req, 404, "Not Found");
                    return;
                }
            }
        } else if self.is_local_host(&ruri_host) {
            let user = ruri_user.clone().unwrap_or_default();
            let domain = if self.config.is_local_domain(&ruri_host) {
                Some(ruri_host.clone())
            } else {
                self.config.domains.first().cloned()
            };
            let account = domain
                .as_deref()
                .and_then(|d| self.accounts.by_name(&user, d))
                .map(|i| self.config.accounts[i].aor());
            if let Some(aor) = account {
                let bindings = self.registrar.bindings(now, &aor).unwrap_or_default();
                if bindings.is_empty() {
                    self.reply(now, &key, &req, 480, "Temporarily Unavailable");
                    return;
                }
                bindings
                    .into_iter()
                    .map(|b| Target {
                        uri: Some(b.binding.contact.clone()),
                        dest: b.binding.received.addr,
                        transport: util::rsip_transport(b.binding.received.transport),
                    })
                    .collect()
            } else if is_number(&user) && caller != Caller::Foreign {
                match self.pstn_targets(&user, caller) {
                    Some((t, rest, p)) => {
                        failover = rest;
                        pai = p;
                        vec![t]
                    }
                    None => {
                        self.reply(now, &key, &req, 404, "No Route To Number");
                        return;
                    }
                }
            } else {
                self.reply(now, &key, &req, 404, "Not Found");
                return;
            }
        } else {
            let user = ruri_user.clone().unwrap_or_default();
            match caller {
                Caller::Trusted => match util::uri_target(&req.uri) {
                    Some((dest, transport)) => vec![Target {
                        uri: None,
                        dest,
                        transport,
                    }],
                    None => {
                        self.reply(now, &key, &req, 404, "Not Found");
                        return;
                    }
                },
                Caller::Local(_) if is_number(&user) => match self.pstn_targets(&user, caller) {
                    Some((t, rest, p)) => {
                        failover = rest;
                        pai = p;
                        vec![t]
                    }
                    None => {
                        self.reply(now, &key, &req, 404, "No Route To Number");
                        return;
                    }
                },
                Caller::Local(_) => {
                    self.reply(now, &key, &req, 404, "Not Found");
                    return;
                }
                Caller::Foreign => {
                    self.reply(now, &key, &req, 403, "Forbidden");
                    return;
                }
            }
        };

        // Build the template: credentials for us and untrusted identities removed.
        let mut template = req.clone();
        self.remove_own_credentials(&mut template.headers);
        if caller != Caller::Trusted {
            util::remove(&mut template.headers, "P-Asserted-Identity");
        }
        if let Some(p) = pai {
            template
                .headers
                .push(make_header("P-Asserted-Identity", &p));
        }
        if decrement_max_forwards(&mut template.headers).is_err() {
            self.reply(now, &key, &req, 483, "Too Many Hops");
            return;
        }

        let is_invite = req.method.is(rsip::Method::Invite);
        let call_id = util::call_id(&req.headers);
        let from_tag = util::tag(&req.headers, false).unwrap_or_default();
        let mut offer = false;
        if is_invite && util::has_sdp(&req.headers, &req.body) {
            let call = CallRef {
                call_id: call_id.clone(),
                from_tag: from_tag.clone(),
                to_tag: None,
            };
            match self.relay.offer(&call, &req.body, source.ip(), Leg::Callee) {
                Ok(sdp) => {
                    util::set_body(&mut template.headers, &mut template.body, sdp);
                    offer = true;
                }
                Err(e) => {
                    let (status, reason) = e.status();
                    self.reply(now, &key, &req, status, reason);
                    self.events.push_back(ProxyEvent::Dropped {
                        source,
                        reason: e.to_string(),
                    });
                    return;
                }
            }
        }
        let call = if is_invite {
            self.calls.insert(
                call_id.clone(),
                Call {
                    from_tag,
                    caller_from: util::value(&req.headers, "From").unwrap_or_default(),
                    caller_to: util::value(&req.headers, "To").unwrap_or_default(),
                    caller_contact: util::contact_uri(&req.headers).unwrap_or_default(),
                    caller_addr: source,
                    caller_transport: transport,
                    caller_cseq: util::cseq(&req.headers).unwrap_or(1),
                    callee_tag: None,
                    callee_contact: None,
                    callee_addr: None,
                    callee_cseq: 0,
                    record_route: Vec::new(),
                    answered: false,
                    last_2xx: None,
                },
            );
            let billing_party = match caller {
                Caller::Local(i) => self
                    .config
                    .accounts
                    .get(i)
                    .map(|a| format!("{}@{}", a.user, a.domain.to_ascii_lowercase())),
                Caller::Trusted => Some(source.ip().to_string()),
                Caller::Foreign => None,
            };
            self.events.push_back(ProxyEvent::CallStarted {
                call_id: call_id.clone(),
                caller: from.map(|f| f.uri).unwrap_or_default(),
                callee: req.uri.clone(),
                source,
                billing_party,
                user_agent: util::value(&req.headers, "User-Agent"),
            });
            Some(call_id)
        } else {
            None
        };
        self.servers.insert(
            key.clone(),
            ServerCtx::new(req, branch, local, template, is_invite, call),
        );
        let count = targets.len();
        for (i, t) in targets.into_iter().enumerate() {
            let rest = if i + 1 == count {
                std::mem::take(&mut failover)
            } else {
                Vec::new()
            };
            self.start_branch(now, &key, t, rest, offer, Leg::Caller);
        }
        self.check_complete(now, &key);
    }

    /// The first gateway of the route for `number`, the others for failover, and the
    /// P-Asserted-Identity to add for a local caller.
    fn pstn_targets(
        &self,
        number: &str,
        caller: Caller,
    ) -> Option<(Target, Vec<Gateway>, Option<String>)> {
        let route = self.config.pstn_route(number)?;
        let (first, rest) = route.gateways.split_first()?;
        let pai = match caller {
            Caller::Local(i) => self
                .config
                .accounts
                .get(i)
                .map(|a| format!("<sip:{}@{}>", a.user, a.domain)),
            _ => None,
        };
        Some((gateway_target(number, first), rest.to_vec(), pai))
    }

    /// Digest authentication of a caller from a local domain (`407` challenges).
    fn authorize(
        &mut self,
        now: Duration,
        req: &Request,
        from_user: &str,
        domain: &str,
    ) -> Result<usize, Response> {
        let domain = domain.to_ascii_lowercase();
        let creds = util::values(&req.headers, "Proxy-Authorization")
            .into_iter()
            .filter_map(|v| DigestCredentials::parse(&v).ok())
            .find(|c| c.realm.eq_ignore_ascii_case(&domain));
        let Some(creds) = creds else {
            return Err(self.challenge(now, req, &domain, ChallengeRole::Proxy, false));
        };
        let Some(index) = self.accounts.by_username(&creds.username, &domain) else {
            return Err(self.challenge(now, req, &domain, ChallengeRole::Proxy, false));
        };
        let account = self.config.accounts[index].clone();
        if !account.answers_to(from_user) {
            let tag = self.rng.token();
            return Err(build_response(req, 403, "Forbidden", Some(&tag)));
        }
        self.verify(now, req, &domain, &creds, &account, ChallengeRole::Proxy)
            .map(|()| index)
    }

    fn verify(
        &mut self,
        now: Duration,
        req: &Request,
        domain: &str,
        creds: &DigestCredentials,
        account: &Account,
        role: ChallengeRole,
    ) -> Result<(), Response> {
        let Some(auth) = self.auths.get_mut(domain) else {
            let tag = self.rng.token();
            return Err(build_response(req, 403, "Forbidden", Some(&tag)));
        };
        let dr = DigestRequest {
            method: req.method.as_str(),
            request_uri: &req.uri,
            expected_username: &creds.username,
        };
        match auth.verify(now, &dr, creds, &account.secret) {
            Ok(_) => Ok(()),
            Err(e) => {
                let status = e.status_code(role);
                if status == role.status_code() {
                    Err(self.challenge(now, req, domain, role, e.is_stale()))
                } else {
                    let tag = self.rng.token();
                    // 400 (malformed credentials, a digest uri that is not the Request-URI),
                    // 403 (another user's credentials) or 500 (no usable stored secret).
                    let reason = match status {
                        400 => "Bad Request",
                        403 => "Forbidden",
                        _ => "Server Internal Error",
                    };
                    Err(build_response(req, status, reason, Some(&tag)))
                }
            }
        }
    }

    fn challenge(
        &mut self,
        now: Duration,
        req: &Request,
        domain: &str,
        role: ChallengeRole,
        stale: bool,
    ) -> Response {
        let random = self.rng.bytes16();
        let tag = self.rng.token();
        let reason = match role {
            ChallengeRole::Www => "Unauthorized",
            ChallengeRole::Proxy => "Proxy Authentication Required",
        };
        let mut resp = build_response(req, role.status_code(), reason, Some(&tag));
        if let Some(auth) = self.auths.get(domain) {
            for c in auth.challenges(now, random, stale) {
                resp.headers
                    .push(make_header(role.challenge_header(), &c.to_string()));
            }
        }
        resp
    }

    fn on_register(
        &mut self,
        now: Duration,
        key: &TransactionKey,
        local: SocketAddr,
        source: SocketAddr,
        transport: Transport,
        req: &Request,
    ) {
        let Some((Some(to_user), to_host)) =
            util::party(&req.headers, true).and_then(|t| util::user_host(&t.uri))
        else {
            self.reply(now, key, req, 400, "Bad To");
            return;
        };
        if !self.config.is_local_domain(&to_host) {
            self.reply(now, key, req, 403, "Forbidden");
            return;
        }
        let creds = util::values(&req.headers, "Authorization")
            .into_iter()
            .filter_map(|v| DigestCredentials::parse(&v).ok())
            .find(|c| c.realm.eq_ignore_ascii_case(&to_host));
        let account = creds
            .as_ref()
            .and_then(|c| self.accounts.by_username(&c.username, &to_host))
            .map(|i| self.config.accounts[i].clone());
        let (Some(creds), Some(account)) = (creds, account) else {
            let resp = self.challenge(now, req, &to_host, ChallengeRole::Www, false);
            self.respond(now, key, &resp);
            return;
        };
        if !account.answers_to(&to_user) {
            self.reply(now, key, req, 403, "Forbidden");
            return;
        }
        if let Err(resp) = self.verify(now, req, &to_host, &creds, &account, ChallengeRole::Www) {
            self.respond(now, key, &resp);
            return;
        }
        let contacts = parse_contacts(&req.headers);
        let expires = util::value(&req.headers, "Expires").and_then(|v| v.trim().parse().ok());
        let rr = RegisterRequest {
            call_id: util::call_id(&req.headers),
            cseq: util::cseq(&req.headers).unwrap_or(0),
            contacts,
            expires,
            source: Source {
                addr: source,
                transport: util::registrar_transport(transport),
                local: Some(local),
            },
            user_agent: util::value(&req.headers, "User-Agent"),
        };
        let aor = account.aor();
        match self.registrar.register(now, &aor, &rr) {
            Ok(outcome) => {
                let tag = self.rng.token();
                let mut resp = build_response(req, 200, "OK", Some(&tag));
                for b in &outcome.bindings {
                    resp.headers.push(make_header(
                        "Contact",
                        &format!("<{}>;expires={}", b.binding.contact, b.expires_in),
                    ));
                }
                self.respond(now, key, &resp);
                self.events.push_back(ProxyEvent::Registered {
                    aor,
                    source,
                    contacts: outcome.bindings.len(),
                });
            }
            Err(e) => {
                let tag = self.rng.token();
                let mut resp = build_response(req, e.status_code(), e.reason_phrase(), Some(&tag));
                if let Some(min) = e.min_expires() {
                    resp.headers
                        .push(make_header("Min-Expires", &min.to_string()));
                }
                self.respond(now, key, &resp);
            }
        }
    }

    /// Where an in-dialog request (or 2xx ACK) goes: the remaining Route set, else the other
    /// party's recorded address, else the Request-URI. Also which leg sent it.
    fn in_dialog_target(&self, req: &Request) -> (Option<(SocketAddr, Transport)>, Leg) {
        let call = self.calls.get(&util::call_id(&req.headers));
        let from_tag = util::tag(&req.headers, false).unwrap_or_default();
        let leg = match call {
            Some(c) if c.from_tag != from_tag => Leg::Callee,
            _ => Leg::Caller,
        };
        if let Some(route) = util::value(&req.headers, "Route") {
            let target = NameAddr::parse(&route)
                .ok()
                .and_then(|n| util::uri_target(&n.uri));
            return (target, leg);
        }
        let recorded = call.and_then(|c| match leg {
            Leg::Caller => c.callee_addr,
            Leg::Callee => Some((c.caller_addr, c.caller_transport)),
        });
        (recorded.or_else(|| util::uri_target(&req.uri)), leg)
    }

    #[allow(clippy::too_many_arguments)]
    fn in_dialog(
        &mut self,
        now: Duration,
        key: TransactionKey,
        local: SocketAddr,
        source: SocketAddr,
        _transport: Transport,
        req: Request,
        branch: String,
    ) {
        let (target, leg) = self.in_dialog_target(&req);
        let Some((dest, transport)) = target else {
            self.reply(now, &key, &req, 481, "Call/Transaction Does Not Exist");
            return;
        };
        let call_id = util::call_id(&req.headers);
        let mut template = req.clone();
        self.remove_own_credentials(&mut template.headers);
        if decrement_max_forwards(&mut template.headers).is_err() {
            self.reply(now, &key, &req, 483, "Too Many Hops");
            return;
        }
        let seq = util::cseq(&req.headers).unwrap_or(0);
        if let Some(call) = self.calls.get_mut(&call_id) {
            match leg {
                Leg::Caller => call.caller_cseq = call.caller_cseq.max(seq),
                Leg::Callee => call.callee_cseq = call.callee_cseq.max(seq),
            }
        }
        let offers = req.method.is(rsip::Method::Invite) || req.method.is(rsip::Method::Update);
        let mut offer = false;
        if offers && util::has_sdp(&req.headers, &req.body) {
            let call_ref = self.call_ref(&req.headers, leg);
            match self
                .relay
                .offer(&call_ref, &req.body, source.ip(), leg.other())
            {
                Ok(sdp) => {
                    util::set_body(&mut template.headers, &mut template.body, sdp);
                    offer = true;
                }
                Err(e) => {
                    let (status, reason) = e.status();
                    self.reply(now, &key, &req, status, reason);
                    return;
                }
            }
        }
        if req.method.is(rsip::Method::Bye) && self.calls.remove(&call_id).is_some() {
            self.relay.delete(&call_id);
            self.events.push_back(ProxyEvent::CallEnded {
                call_id: call_id.clone(),
                cause: match leg {
                    Leg::Caller => EndCause::ByeCaller,
                    Leg::Callee => EndCause::ByeCallee,
                },
            });
        }
        self.servers.insert(
            key.clone(),
            ServerCtx::new(req, branch, local, template, false, None),
        );
        let target = Target {
            uri: None,
            dest,
            transport,
        };
        self.start_branch(now, &key, target, Vec::new(), offer, leg);
        self.check_complete(now, &key);
    }

    /// The media relay's name for the call of a message sent by `sender`.
    fn call_ref(&self, headers: &rsip::Headers, sender: Leg) -> CallRef {
        let call_id = util::call_id(headers);
        let (from, to) = (util::tag(headers, false), util::tag(headers, true));
        let (from_tag, to_tag) = match self.calls.get(&call_id) {
            Some(c) => (c.from_tag.clone(), c.callee_tag.clone().or(to)),
            None => match sender {
                Leg::Caller => (from.unwrap_or_default(), to),
                Leg::Callee => (to.unwrap_or_default(), from),
            },
        };
        CallRef {
            call_id,
            from_tag,
            to_tag,
        }
    }

    /// Forwards the server transaction's template to one target (§16.6).
    fn start_branch(
        &mut self,
        now: Duration,
        server: &TransactionKey,
        target: Target,
        failover: Vec<Gateway>,
        offer: bool,
        sender: Leg,
    ) {
        let Some(ctx) = self.servers.get_mut(server) else {
            return;
        };
        let mut req = ctx.template.clone();
        if let Some(uri) = &target.uri {
            req.uri = uri.clone();
        }
        let index = ctx.next_index;
        ctx.next_index += 1;
        let branch = indexed_branch(&ctx.branch, index);
        let inbound_iface = self
            .config
            .interface_at(ctx.local)
            .unwrap_or(&self.config.interfaces[0]);
        let outbound_iface = self
            .config
            .interface_for(target.dest.ip())
            .unwrap_or(&self.config.interfaces[0]);
        let inbound = inbound_iface.local_addr(target.transport);
        let outbound = outbound_iface.local_addr(target.transport);
        if ctx.record_route {
            record_route(&mut req.headers, &inbound, &outbound);
        }
        push_via(&mut req.headers, &outbound, &branch);
        match self
            .txs
            .send_request(now, target.dest, target.transport, req.clone())
        {
            Ok(key) => {
                self.stats.forwarded_requests += 1;
                ctx.branches.push(key.clone());
                let is_invite = req.method.is(rsip::Method::Invite);
                self.clients.insert(
                    key.clone(),
                    ClientCtx {
                        server: Some(server.clone()),
                        request: req,
                        dest: target.dest,
                        transport: target.transport,
                        provisional: false,
                        done: false,
                        cancel_pending: false,
                        cancelled: false,
                        timer_c: None,
                        timed_out: false,
                        failover,
                        offer_in_request: offer,
                        sender,
                    },
                );
                if is_invite {
                    self.start_timer_c(now, &key);
                }
            }
            Err(e) => {
                ctx.finals.push(build_response(
                    &ctx.request,
                    500,
                    "Server Internal Error",
                    None,
                ));
                self.events.push_back(ProxyEvent::Error {
                    call_id: Some(util::call_id(&req.headers)),
                    error: e.to_string(),
                });
            }
        }
    }

    /// A CANCEL for one of our INVITE server transactions (§16.10): 200 for the CANCEL at once,
    /// CANCEL on every pending branch, and the response context carries on: the branches'
    /// finals (normally the callees' 487s) are collected and the best one goes upstream
    /// ([`Self::check_complete`]), so the caller gets the callee's 487 with its To tag. A 2xx
    /// that crosses the CANCEL is still forwarded and answers the call (§16.7: 2xx are always
    /// forwarded).
    fn on_cancel(
        &mut self,
        now: Duration,
        key: TransactionKey,
        invite: Option<TransactionKey>,
        req: Request,
    ) {
        let Some(invite) = invite.filter(|k| self.servers.contains_key(k)) else {
            self.reply(now, &key, &req, 481, "Call/Transaction Does Not Exist");
            return;
        };
        self.reply(now, &key, &req, 200, "OK");
        let Some(ctx) = self.servers.get_mut(&invite) else {
            return;
        };
        ctx.cancelled = true;
        let branches = ctx.branches.clone();
        for b in branches {
            self.cancel_branch(now, &b);
        }
        self.check_complete(now, &invite);
    }

    /// CANCELs a branch now if it has had a provisional, else once it has (§16.10, §9.1), and
    /// gives it 64·T1 from the CANCEL to send its final ([`Self::expire_cancelled_branches`]).
    fn cancel_branch(&mut self, now: Duration, key: &TransactionKey) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if c.done || c.cancelled || !c.request.method.is(rsip::Method::Invite) {
            return;
        }
        if !c.provisional {
            // Until then the INVITE client transaction is in Calling, where timer B bounds
            // the wait.
            c.cancel_pending = true;
            return;
        }
        c.cancel_pending = false;
        c.cancelled = true;
        let cancel = cancel_for(&c.request);
        let (dest, transport) = (c.dest, c.transport);
        let deadline = now + self.txs.config().t1.saturating_mul(64);
        self.cancel_guards
            .insert((deadline, self.next_guard), key.clone());
        self.next_guard += 1;
        if let Err(e) = self.send_own(now, cancel, dest, transport) {
            self.events.push_back(ProxyEvent::Error {
                call_id: None,
                error: e.to_string(),
            });
        }
    }

    /// (Re)starts timer C of an INVITE branch: when it is forwarded (§16.6 step 11) and on each
    /// provisional but 100 (§16.7 step 2).
    fn start_timer_c(&mut self, now: Duration, key: &TransactionKey) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if let Some(old) = c.timer_c.take() {
            self.timer_c.remove(&old);
        }
        let at = (now + self.config.timer_c, self.next_guard);
        self.next_guard += 1;
        c.timer_c = Some(at);
        self.timer_c.insert(at, key.clone());
    }

    /// §16.8: timer C fired on a branch with no final. With a provisional, the branch is
    /// CANCELled (and given 64·T1 for its final, as any CANCEL); its 487 is then taken for a
    /// 408 and it fails over nowhere: the callee was reached and did not answer in time, which
    /// another gateway would not change. Without one, it is as if it had answered 408.
    fn fire_timer_c(&mut self, now: Duration) {
        while let Some(entry) = self.timer_c.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (at, key) = entry.remove_entry();
            let Some(c) = self.clients.get_mut(&key) else {
                continue;
            };
            if c.timer_c != Some(at) {
                continue;
            }
            c.timer_c = None;
            if c.done {
                continue;
            }
            if c.provisional {
                c.timed_out = true;
                c.failover.clear();
                self.cancel_branch(now, &key);
            } else {
                // Only with timers set far apart: timer B (64·T1) ends a branch that never
                // answered long before timer C.
                let _ = self.txs.terminate(&key);
                self.on_client_timeout(now, key);
            }
            self.pump(now, None);
        }
    }

    /// §9.1: a branch with no final response 64·T1 after our CANCEL is considered cancelled;
    /// its INVITE client transaction is destroyed and the response context completes without
    /// it.
    fn expire_cancelled_branches(&mut self, now: Duration) {
        while let Some(entry) = self.cancel_guards.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            let Some(c) = self.clients.get_mut(&key) else {
                continue;
            };
            if c.done {
                continue;
            }
            c.done = true;
            let server = c.server.clone();
            // Already gone only if it terminated on its own, which `done` would have caught.
            let _ = self.txs.terminate(&key);
            if let Some(server) = server {
                self.check_complete(now, &server);
            }
            self.pump(now, None);
        }
    }

    /// The ACK for a 2xx: end to end, forwarded statelessly along the route set (§16.6, §17.1.1.3).
    fn on_ack(&mut self, mut req: Request) {
        if too_many_hops(&req.headers) {
            return;
        }
        let branch = compute_branch(&req, &self.secret);
        if preprocess_route(&mut req, &self.ours).is_err() {
            return;
        }
        let (target, leg) = self.in_dialog_target(&req);
        let Some((dest, transport)) = target else {
            return;
        };
        if util::has_sdp(&req.headers, &req.body) {
            let call_ref = self.call_ref(&req.headers, leg);
            let src = self.incoming_source.map_or(dest.ip(), |s| s.ip());
            match self.relay.answer(&call_ref, &req.body, src, leg.other()) {
                Ok(sdp) => {
                    let body = &mut req.body;
                    util::set_body(&mut req.headers, body, sdp);
                }
                Err(e) => self.events.push_back(ProxyEvent::Error {
                    call_id: Some(call_ref.call_id),
                    error: e.to_string(),
                }),
            }
        }
        self.remove_own_credentials(&mut req.headers);
        if decrement_max_forwards(&mut req.headers).is_err() {
            return;
        }
        let (local, _) = self.own_via(dest, transport);
        push_via(&mut req.headers, &local, &branch);
        self.stats.forwarded_requests += 1;
        self.send_bytes(dest, transport, req.to_bytes());
    }

    // -----------------------------------------------------------------------------------------
    // Responses
    // -----------------------------------------------------------------------------------------

    fn on_response(
        &mut self,
        now: Duration,
        key: TransactionKey,
        mut resp: Response,
        source: Option<SocketAddr>,
    ) {
        let Some(client) = self.clients.get_mut(&key) else {
            return;
        };
        let status = resp.status;
        if status < 200 {
            client.provisional = true;
        }
        let Some(server) = client.server.clone() else {
            return;
        };
        let restart_timer_c = status > 100 && status < 200 && client.timer_c.is_some();
        let cancel_now = client.cancel_pending && status < 200;
        if restart_timer_c {
            self.start_timer_c(now, &key);
        }
        if cancel_now {
            self.cancel_branch(now, &key);
        }
        match pop_own_via(&mut resp.headers, &self.ours) {
            Ok(n) if n > 0 => {}
            _ => {
                self.stats.dropped += 1;
                return;
            }
        }
        if status == 100 {
            return;
        }
        let Some(client) = self.clients.get(&key) else {
            return;
        };
        let is_invite = client.request.method.is(rsip::Method::Invite);
        let offers = is_invite || client.request.method.is(rsip::Method::Update);
        let sender = client.sender;
        let offer_in_request = client.offer_in_request;
        let failover = client.failover.clone();
        let src_ip = source.map_or(client.dest.ip(), |s| s.ip());
        let source = source.unwrap_or(client.dest);
        let transport = client.transport;

        if status >= 300 {
            let (final_sent, cancelled) = self
                .servers
                .get(&server)
                .map_or((true, true), |s| (s.final_sent || s.answered, s.cancelled));
            if status == 487 && !cancelled && client.timed_out {
                // The 487 answers our own CANCEL of timer C; the caller asked nothing of the
                // kind, and is told what happened: no final in time (§16.8).
                resp.status = 408;
                resp.reason = "Request Timeout".to_owned();
            }
            if let Some(c) = self.clients.get_mut(&key) {
                c.done = true;
            }
            let retry = status >= 500 || status == 408;
            if retry && !failover.is_empty() && !final_sent && !cancelled {
                self.failover(now, &server, &key, failover);
                return;
            }
            if let Some(ctx) = self.servers.get_mut(&server) {
                ctx.finals.push(resp);
            }
            if status >= 600 {
                let others: Vec<TransactionKey> = self
                    .servers
                    .get(&server)
                    .map(|s| s.branches.clone())
                    .unwrap_or_default();
                for b in others.iter().filter(|b| **b != key) {
                    self.cancel_branch(now, b);
                }
            }
            self.check_complete(now, &server);
            return;
        }

        // 1xx and 2xx: rewrite SDP, forward now.
        if offers && util::has_sdp(&resp.headers, &resp.body) {
            let call_ref = self.call_ref(&resp.headers, sender);
            let original = resp.body.clone();
            let result = if offer_in_request {
                self.relay.answer(&call_ref, &resp.body, src_ip, sender)
            } else {
                self.relay.offer(&call_ref, &resp.body, src_ip, sender)
            };
            match result {
                Ok(sdp) => {
                    if status >= 200 && is_invite {
                        if let Some(call) = self.calls.get_mut(&call_ref.call_id) {
                            call.last_2xx = Some((original, sdp.clone()));
                        }
                    }
                    util::set_body(&mut resp.headers, &mut resp.body, sdp);
                }
                Err(e) => self.events.push_back(ProxyEvent::Error {
                    call_id: Some(call_ref.call_id),
                    error: e.to_string(),
                }),
            }
        }
        if status >= 200 {
            if let Some(c) = self.clients.get_mut(&key) {
                c.done = true;
            }
            let (initial_call, others) = match self.servers.get_mut(&server) {
                Some(ctx) => {
                    ctx.answered = true;
                    (ctx.call.clone(), ctx.branches.clone())
                }
                None => (None, Vec::new()),
            };
            if is_invite {
                if let Some(call_id) = initial_call {
                    self.record_answer(&call_id, &resp, source, transport);
                }
                for b in others.iter().filter(|b| **b != key) {
                    self.cancel_branch(now, b);
                }
            }
        }
        self.forward_response(now, &server, resp);
    }

    /// Records the callee's side of the dialog from the 2xx to the initial INVITE.
    fn record_answer(
        &mut self,
        call_id: &str,
        resp: &Response,
        source: SocketAddr,
        transport: Transport,
    ) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        if call.answered {
            return;
        }
        call.answered = true;
        call.callee_tag = util::tag(&resp.headers, true);
        call.callee_contact = util::contact_uri(&resp.headers);
        call.callee_addr = Some((source, transport));
        call.record_route = util::values(&resp.headers, "Record-Route");
        self.events.push_back(ProxyEvent::CallAnswered {
            call_id: call_id.to_owned(),
            user_agent: util::value(&resp.headers, "User-Agent")
                .or_else(|| util::value(&resp.headers, "Server")),
        });
    }

    /// Sends a response upstream on the server transaction, or statelessly along its Via when the
    /// transaction can no longer carry it (a 2xx after our 487).
    fn forward_response(&mut self, now: Duration, server: &TransactionKey, resp: Response) {
        self.stats.forwarded_responses += 1;
        let sent = self.txs.send_response(now, server, resp.clone());
        if sent.is_err() && (200..300).contains(&resp.status) {
            if let Some(dest) = response_target(&resp.headers) {
                let transport = crate::message::proxy::top_via(&resp.headers)
                    .map_or(Transport::Udp, |v| transport_of(&v.transport));
                self.send_bytes(dest, transport, resp.to_bytes());
            }
        }
    }

    fn failover(
        &mut self,
        now: Duration,
        server: &TransactionKey,
        failed: &TransactionKey,
        mut gateways: Vec<Gateway>,
    ) {
        let number = self
            .clients
            .get(failed)
            .and_then(|c| util::user_host(&c.request.uri))
            .and_then(|(u, _)| u)
            .unwrap_or_default();
        let offer = self.clients.get(failed).is_some_and(|c| c.offer_in_request);
        let next = gateways.remove(0);
        self.start_branch(
            now,
            server,
            gateway_target(&number, &next),
            gateways,
            offer,
            Leg::Caller,
        );
        self.check_complete(now, server);
    }

    fn on_client_timeout(&mut self, now: Duration, key: TransactionKey) {
        let Some(client) = self.clients.get_mut(&key) else {
            return;
        };
        let Some(server) = client.server.clone() else {
            return;
        };
        if client.done {
            return;
        }
        if self.servers.get(&server).is_some_and(|s| s.cancelled) {
            // A cancelled branch that never answered contributes nothing: the caller gets a
            // callee's 487 if any, else ours (see `check_complete`), not a 408 for a request
            // it withdrew itself.
            client.done = true;
            self.check_complete(now, &server);
            return;
        }
        let mut resp = build_response(&client.request, 408, "Request Timeout", None);
        let source = client.dest;
        if pop_own_via(&mut resp.headers, &self.ours).is_err() {
            return;
        }
        // Reuse the response path with a Via of ours re-added, so the branch logic is shared.
        let mut with_via = resp;
        if let Some(v) = util::value(&client.request.headers, "Via") {
            let mut hs: Vec<rsip::Header> = vec![make_header("Via", &v)];
            hs.extend(with_via.headers.iter().cloned());
            with_via.headers = hs.into();
        }
        self.on_response(now, key, with_via, Some(source));
    }

    /// Once every branch has a final (and no 2xx went up), sends the best one (§16.7 step 6).
    fn check_complete(&mut self, now: Duration, server: &TransactionKey) {
        let Some(ctx) = self.servers.get(server) else {
            return;
        };
        if ctx.final_sent || ctx.answered {
            return;
        }
        let pending = ctx
            .branches
            .iter()
            .any(|b| self.clients.get(b).is_some_and(|c| !c.done));
        if pending {
            return;
        }
        let tag = self.rng.token();
        let Some(ctx) = self.servers.get(server) else {
            return;
        };
        let mut best = match best_response(&ctx.finals) {
            Some(r) => r,
            // §16.7 step 6 asks for a 408 when the context holds no final. After a CANCEL that
            // only happens because every branch was cancelled and none answered in time (§9.1),
            // so the request was terminated at the caller's own request: 487 is the answer a
            // cancelling UAC expects (§9.2, what a UAS sends), and a 408 would blame a callee
            // for a timeout the caller caused.
            None if ctx.cancelled => {
                build_response(&ctx.request, 487, "Request Terminated", Some(&tag))
            }
            None => build_response(&ctx.request, 408, "Request Timeout", Some(&tag)),
        };
        if best.status == 401 || best.status == 407 {
            let mut extra = Vec::new();
            for r in ctx
                .finals
                .iter()
                .filter(|r| r.status == 401 || r.status == 407)
            {
                for name in ["WWW-Authenticate", "Proxy-Authenticate"] {
                    for v in util::values(&r.headers, name) {
                        extra.push(make_header(name, &v));
                    }
                }
            }
            let existing: Vec<String> = ["WWW-Authenticate", "Proxy-Authenticate"]
                .iter()
                .flat_map(|n| util::values(&best.headers, n))
                .collect();
            for h in extra {
                let (_, v) = message::header_name_value(&h);
                if !existing.contains(&v) {
                    best.headers.push(h);
                }
            }
        }
        if best.status == 503 {
            best.status = 500;
            best.reason = "Server Internal Error".to_owned();
        }
        let call = ctx.call.clone();
        let cause = if ctx.cancelled {
            EndCause::Cancel
        } else {
            EndCause::Failed(best.status)
        };
        if let Some(ctx) = self.servers.get_mut(server) {
            ctx.final_sent = true;
        }
        self.forward_response(now, server, best);
        if let Some(call_id) = call {
            if self.calls.remove(&call_id).is_some() {
                self.relay.delete(&call_id);
                self.events
                    .push_back(ProxyEvent::CallEnded { call_id, cause });
            }
        }
    }

    /// A response no client transaction claims: a retransmitted or forked 2xx to an INVITE.
    /// Pop our Via and forward it along the next one (§16.7, RFC 6026 §8.4). Anything else
    /// is dropped (RFC 6026 §7.3): e.g. the late 487 of a branch given up after our CANCEL,
    /// whose response context has already answered upstream.
    fn on_stray(&mut self, mut resp: Response, source: SocketAddr) {
        if !(200..300).contains(&resp.status) {
            self.stats.dropped += 1;
            return;
        }
        match pop_own_via(&mut resp.headers, &self.ours) {
            Ok(n) if n > 0 => {}
            _ => {
                self.stats.dropped += 1;
                return;
            }
        }
        let call_id = util::call_id(&resp.headers);
        if (200..300).contains(&resp.status) && util::has_sdp(&resp.headers, &resp.body) {
            let cached = self
                .calls
                .get(&call_id)
                .and_then(|c| c.last_2xx.clone())
                .filter(|(orig, _)| *orig == resp.body)
                .map(|(_, rewritten)| rewritten);
            let sdp = match cached {
                Some(s) => Some(s),
                None => {
                    let call_ref = self.call_ref(&resp.headers, Leg::Caller);
                    self.relay
                        .answer(&call_ref, &resp.body, source.ip(), Leg::Caller)
                        .ok()
                }
            };
            if let Some(sdp) = sdp {
                util::set_body(&mut resp.headers, &mut resp.body, sdp);
            }
        }
        let Some(dest) = response_target(&resp.headers) else {
            self.stats.dropped += 1;
            return;
        };
        let transport = crate::message::proxy::top_via(&resp.headers)
            .ok()
            .map(|v| transport_of(&v.transport))
            .unwrap_or(Transport::Udp);
        self.stats.forwarded_responses += 1;
        self.send_bytes(dest, transport, resp.to_bytes());
    }

    // -----------------------------------------------------------------------------------------
    // Dialog state
    // -----------------------------------------------------------------------------------------

    fn is_our_uri(&self, uri: &str) -> bool {
        SipUri::parse(uri).is_ok_and(|u| {
            let port = u.port.unwrap_or(5060);
            self.ours
                .iter()
                .any(|l| same_host(&l.host, &u.host) && l.port == port)
        })
    }

    /// Splits a dialog's Record-Route list (as in the 2xx: callee side first) around our own
    /// entries: the Route set toward the callee and the one toward the caller.
    fn split_route_set(&self, rr: &[String]) -> (Vec<String>, Vec<String>) {
        let uris: Vec<String> = rr
            .iter()
            .filter_map(|v| NameAddr::parse(v).ok().map(|n| n.uri))
            .collect();
        let ours: Vec<usize> = (0..uris.len())
            .filter(|&i| self.is_our_uri(&uris[i]))
            .collect();
        let (Some(&first), Some(&last)) = (ours.first(), ours.last()) else {
            return (Vec::new(), Vec::new());
        };
        let mut toward_callee: Vec<String> = uris[..first].to_vec();
        toward_callee.reverse();
        let toward_caller = uris[last + 1..].to_vec();
        (toward_callee, toward_caller)
    }

    #[allow(clippy::too_many_arguments)]
    fn build_bye(
        &mut self,
        call_id: &str,
        uri: &str,
        from: &str,
        to: &str,
        seq: u32,
        routes: &[String],
        reason: EndReason,
        dest: SocketAddr,
        transport: Transport,
    ) -> Request {
        let (local, branch) = self.own_via(dest, transport);
        let mut headers = rsip::Headers::default();
        push_via(&mut headers, &local, &branch);
        headers.push(make_header("Max-Forwards", "70"));
        for r in routes {
            headers.push(make_header("Route", &format!("<{r}>")));
        }
        headers.push(make_header("From", from));
        headers.push(make_header("To", to));
        headers.push(make_header("Call-ID", call_id));
        headers.push(make_header("CSeq", &format!("{seq} BYE")));
        headers.push(make_header("Reason", reason.reason_header()));
        headers.push(make_header("Content-Length", "0"));
        Request {
            method: Method::from(rsip::Method::Bye),
            uri: uri.to_owned(),
            headers,
            body: Vec::new(),
        }
    }
}

fn transport_of(name: &str) -> Transport {
    match name.to_ascii_uppercase().as_str() {
        "TCP" => Transport::Tcp,
        "TLS" => Transport::Tls,
        "SCTP" => Transport::Sctp,
        "WS" => Transport::Ws,
        "WSS" => Transport::Wss,
        _ => Transport::Udp,
    }
}

fn gateway_target(number: &str, gw: &Gateway) -> Target {
    let transport = if gw.transport == Transport::Udp {
        String::new()
    } else {
        format!(
            ";transport={}",
            gw.transport.to_string().to_ascii_lowercase()
        )
    };
    let host = match gw.addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    Target {
        uri: Some(format!("sip:{number}@{host}:{}{transport}", gw.addr.port())),
        dest: gw.addr,
        transport: gw.transport,
    }
}

/// The CANCEL for a forwarded INVITE (§9.1): same Request-URI, top Via (ours), Route, From, To,
/// Call-ID and CSeq number.
fn cancel_for(invite: &Request) -> Request {
    let mut headers = rsip::Headers::default();
    let mut via_done = false;
    for h in invite.headers.iter() {
        let (name, value) = message::header_name_value(h);
        let name = message::expand_compact(&name).to_ascii_lowercase();
        match name.as_str() {
            "via" if !via_done => {
                via_done = true;
                headers.push(h.clone());
            }
            "route" | "from" | "to" | "call-id" | "max-forwards" => headers.push(h.clone()),
            "cseq" => {
                let n = message::parse_cseq(&value).map_or(1, |(n, _)| n);
                headers.push(make_header("CSeq", &format!("{n} CANCEL")));
            }
            _ => {}
        }
    }
    headers.push(make_header("Content-Length", "0"));
    Request {
        method: Method::from(rsip::Method::Cancel),
        uri: invite.uri.clone(),
        headers,
        body: Vec::new(),
    }
}

/// The Contacts of a REGISTER for the registrar.
fn parse_contacts(headers: &rsip::Headers) -> Contacts {
    let values = util::values(headers, "Contact");
    if values.is_empty() {
        return Contacts::None;
    }
    let mut list = Vec::new();
    let mut wildcard = false;
    for v in &values {
        for piece in split_outside_quotes(v, ',') {
            let piece = piece.trim();
            if piece == "*" {
                wildcard = true;
                continue;
            }
            let Ok(n) = NameAddr::parse(piece) else {
                continue;
            };
            let mut spec = ContactSpec::new(n.uri.clone());
            spec.expires = n.param("expires").flatten().and_then(|e| e.parse().ok());
            spec.q = n
                .param("q")
                .flatten()
                .and_then(|q| q.parse::<f32>().ok())
                .map(|q| (q.clamp(0.0, 1.0) * 1000.0).round() as u16);
            list.push(spec);
        }
    }
    match (wildcard, list.is_empty()) {
        (true, true) => Contacts::Wildcard,
        (true, false) => Contacts::WildcardWithOthers,
        _ => Contacts::List(list),
    }
}

/// The best of the final responses (§16.7 step 6): a 6xx if any, else the lowest class, within
/// 4xx preferring the challenges 401/407.
fn best_response(finals: &[Response]) -> Option<Response> {
    if let Some(r) = finals.iter().find(|r| r.status >= 600) {
        return Some(r.clone());
    }
    let class = finals.iter().map(|r| r.status / 100).min()?;
    let in_class = || finals.iter().filter(move |r| r.status / 100 == class);
    in_class()
        .find(|r| r.status == 401 || r.status == 407)
        .or_else(|| in_class().next())
        .cloned()
}
