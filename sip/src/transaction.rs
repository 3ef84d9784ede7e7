//! RFC 3261 §17 transactions, sans-IO.
//!
//! # The sans-IO contract
//!
//! [`Transactions`] owns no socket, no timer and no clock (quinn-proto and str0m style). The
//! driver feeds it three kinds of input and drains three kinds of output:
//!
//! | in | out |
//! |---|---|
//! | [`Transactions::handle_incoming`] (a parsed message, its source and transport) | [`Transactions::poll_transmit`]: bytes to send, to an address, on a transport |
//! | [`Transactions::send_request`] / [`Transactions::send_response`] (from the TU) | [`Transactions::poll_event`]: what the TU (the proxy core) must learn |
//! | [`Transactions::handle_timeout`], [`Transactions::handle_transport_error`] | [`Transactions::poll_timeout`]: when to call `handle_timeout` next |
//!
//! After **every** input the driver drains `poll_transmit` and `poll_event` until they return
//! `None`, then re-reads `poll_timeout` and sleeps at most until then:
//!
//! ```
//! # use std::time::Duration;
//! # use sluice_sip::transaction::{Config, Transactions};
//! let mut txs = Transactions::new(Config::default());
//! let now = Duration::ZERO; // the driver's monotonic clock, e.g. `start.elapsed()`
//! txs.handle_timeout(now);
//! while let Some(_t) = txs.poll_transmit() { /* socket.send_to(&t.contents, t.destination) */ }
//! while let Some(_e) = txs.poll_event() { /* hand to the proxy core */ }
//! let _sleep_until = txs.poll_timeout(); // None: no timer armed
//! ```
//!
//! # Time
//!
//! Time is a [`Duration`] since an arbitrary epoch chosen by the driver (typically
//! `start.elapsed()` of a `std::time::Instant` taken once at startup). It must be monotonic; a
//! `Duration` rather than `Instant` keeps tests free of the OS clock (`sip/clippy.toml` forbids
//! `Instant::now`), and virtual time starts at `Duration::ZERO`.
//!
//! # Messages
//!
//! Transactions take and return the message layer's [`Request`] and [`Response`]
//! ([`crate::message`]) and print what they send (requests, retransmissions, ACKs, responses)
//! with its lossless printer, never rsip's: extension methods, IPv6 hosts, reason phrases,
//! unknown headers and binary bodies reach the wire as they were given.
//!
//! # Matching (RFC 3261 §17.1.3, §17.2.3)
//!
//! A [`TransactionKey`] is the top Via `branch` plus the method, plus the top Via sent-by on the
//! server side. On the server side an ACK matches the INVITE transaction with its branch (that is
//! the ACK for a non-2xx final, which the transaction absorbs); an ACK matching nothing (the ACK
//! for a 2xx, which is end-to-end and has its own branch) is handed to the TU as
//! [`Event::Ack`] so that a proxy can forward it statelessly. A CANCEL is its own non-INVITE
//! transaction (method `CANCEL`), and [`Event::Cancel`] names the INVITE server transaction with
//! the same branch and sent-by, if any, for the TU.
//!
//! RFC 2543 peers (a branch without the `z9hG4bK` magic cookie) are **rejected** with
//! [`Error::Rfc2543`]: their matching rules (Request-URI, tags, Call-ID, CSeq, Via) are not
//! implemented. The driver may answer such a request statelessly or drop it.
//!
//! # RFC 6026
//!
//! The INVITE server transaction follows RFC 6026 §7.1: a 2xx from the TU moves it to
//! **Accepted**, where it absorbs INVITE retransmissions and passes further 2xx from the TU to the
//! transport, for timer L (64·T1). Without it, a retransmitted INVITE arriving after the 2xx
//! would look like a new request and reach the proxy core twice.
//!
//! The INVITE client transaction terminates on 2xx as in RFC 3261 §17.1.1.2: retransmitted or
//! forked 2xx responses then arrive as [`Event::StrayResponse`], which a proxy forwards
//! statelessly (RFC 3261 §16.7 / RFC 6026 §8.4) — the same outcome as RFC 6026's client
//! "Accepted" state, with one less state.
//!
//! # Reliability
//!
//! On a reliable transport (anything but UDP, see [`is_reliable`]) nothing is retransmitted
//! (timers A, E, G are not armed) and timers D, I, J and K are zero, so the transaction terminates
//! at once instead of lingering. Timers B, F and H still run.
//!
//! # Where responses go
//!
//! A server transaction sends its responses to the source address of the request (RFC 3581
//! symmetric response; on reliable transports RFC 3261 §18.2.2 reuses the connection, which the
//! driver finds from the same address and transport).
//!
//! # What is not here
//!
//! Timer C (the proxy's INVITE guard, RFC 3261 §16.6 step 11) belongs to the proxy core. A
//! non-INVITE server transaction has no timer until the TU answers: the TU must answer every
//! request it is given (the proxy answers with 408 when its own client transaction times out).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rsip::headers::UntypedHeader;
use rsip::{Header, Headers, Transport};

use crate::message::proxy::{top_via as parse_top_via, ProxyError};
use crate::message::{make_header, parse_cseq, Method, Request, Response, SipMessage, Via};

/// RFC 3261 Table 4: T1, the RTT estimate (500 ms).
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 Table 4: T2, the maximum retransmit interval for non-INVITE requests and INVITE
/// responses (4 s).
pub const T2: Duration = Duration::from_secs(4);
/// RFC 3261 Table 4: T4, the maximum duration a message will remain in the network (5 s).
pub const T4: Duration = Duration::from_secs(5);
/// RFC 3261 Table 4: timer B, INVITE transaction timeout (64·T1).
pub const TIMER_B: Duration = Duration::from_secs(32);
/// RFC 3261 Table 4: timer D, wait time for response retransmits, "> 32 s for UDP" and 0 for
/// reliable transports (§17.1.1.2).
pub const TIMER_D: Duration = Duration::from_secs(32);
/// RFC 3261 Table 4: timer F, non-INVITE transaction timeout (64·T1).
pub const TIMER_F: Duration = Duration::from_secs(32);
/// RFC 3261 Table 4: timer H, wait time for ACK receipt (64·T1).
pub const TIMER_H: Duration = Duration::from_secs(32);
/// RFC 3261 Table 4: timer I, wait time for ACK retransmits (T4 for UDP, 0 for reliable).
pub const TIMER_I: Duration = T4;
/// RFC 3261 Table 4: timer J, wait time for non-INVITE request retransmits (64·T1 for UDP, 0 for
/// reliable).
pub const TIMER_J: Duration = Duration::from_secs(32);
/// RFC 3261 Table 4: timer K, wait time for response retransmits (T4 for UDP, 0 for reliable).
pub const TIMER_K: Duration = T4;
/// RFC 6026 §8.11: timer L, wait time for accepted INVITE request retransmits (64·T1).
pub const TIMER_L: Duration = Duration::from_secs(32);
/// RFC 3261 §17.2.1: a server INVITE transaction sends 100 Trying itself "if the TU will not
/// generate a provisional response within 200 ms".
pub const TRYING_DELAY: Duration = Duration::from_millis(200);

/// The RFC 3261 §8.1.1.7 magic cookie that starts every RFC 3261 branch.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Whether `transport` is reliable in the RFC 3261 §17 sense: every transport but UDP.
pub fn is_reliable(transport: Transport) -> bool {
    !matches!(transport, Transport::Udp)
}

/// When a server INVITE transaction sends `100 Trying` on its own (RFC 3261 §17.2.1, §16.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryingPolicy {
    /// As soon as the INVITE arrives (what most proxies do, §16.2 allows it).
    Immediate,
    /// If the TU has sent no response within this delay ([`TRYING_DELAY`] by default). A
    /// retransmitted INVITE before then also triggers it.
    After(Duration),
    /// Never: the TU sends its own provisionals.
    Never,
}

/// Timer values and policies; [`Config::default`] is RFC 3261 Table 4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// T1, the RTT estimate; timers A, B, E, F, G, H, J and L derive from it.
    pub t1: Duration,
    /// T2, the cap on non-INVITE request and INVITE response retransmit intervals.
    pub t2: Duration,
    /// T4, the time a message stays in the network; timers I and K.
    pub t4: Duration,
    /// Timer D on unreliable transports (RFC 3261: at least 32 s).
    pub timer_d: Duration,
    /// When the server INVITE transaction sends 100 Trying itself.
    pub trying: TryingPolicy,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            t1: T1,
            t2: T2,
            t4: T4,
            timer_d: TIMER_D,
            trying: TryingPolicy::After(TRYING_DELAY),
        }
    }
}

impl Config {
    fn sixty_four_t1(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
    fn timer_d(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.timer_d
        }
    }
    fn timer_i(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t4
        }
    }
    fn timer_j(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.sixty_four_t1()
        }
    }
    fn timer_k(&self, reliable: bool) -> Duration {
        if reliable {
            Duration::ZERO
        } else {
            self.t4
        }
    }
}

/// Which side of a transaction we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// We sent the request.
    Client,
    /// We received the request.
    Server,
}

/// Identifies a transaction (RFC 3261 §17.1.3, §17.2.3).
///
/// Client keys are the top Via branch and the CSeq method; server keys add the top Via sent-by,
/// and an ACK is keyed as the INVITE it acknowledges.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TransactionKey {
    role: Role,
    branch: String,
    method: Method,
    sent_by: Option<String>,
}

impl TransactionKey {
    /// Client or server.
    pub fn role(&self) -> Role {
        self.role
    }
    /// The top Via branch, magic cookie included.
    pub fn branch(&self) -> &str {
        &self.branch
    }
    /// The method of the transaction (INVITE for an ACK to a non-2xx).
    pub fn method(&self) -> &Method {
        &self.method
    }
    /// The top Via sent-by (`host[:port]`), server keys only.
    pub fn sent_by(&self) -> Option<&str> {
        self.sent_by.as_deref()
    }
}

impl fmt::Display for TransactionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = match self.role {
            Role::Client => "client",
            Role::Server => "server",
        };
        write!(f, "{role} {} {}", self.method, self.branch)?;
        if let Some(sent_by) = &self.sent_by {
            write!(f, " from {sent_by}")?;
        }
        Ok(())
    }
}

/// The state of a transaction, for introspection ([`Transactions::state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// INVITE client, request sent, nothing heard.
    Calling,
    /// Non-INVITE client or server, before any provisional.
    Trying,
    /// A provisional was received (client) or sent (server).
    Proceeding,
    /// A final response was received (client, non-2xx for INVITE) or sent (server).
    Completed,
    /// INVITE server: the ACK for a non-2xx arrived.
    Confirmed,
    /// INVITE server: a 2xx was sent (RFC 6026).
    Accepted,
    /// Finished; such a transaction is removed at once, so this is never observed by `state`.
    Terminated,
}

/// The timer that made a transaction give up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutTimer {
    /// INVITE client: no response at all (RFC 3261 §17.1.1.2).
    B,
    /// Non-INVITE client: no final response (RFC 3261 §17.1.2.2).
    F,
    /// INVITE server: no ACK for a non-2xx final (RFC 3261 §17.2.1).
    H,
}

/// Bytes for the driver to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send: the next hop for requests, the request's source for responses.
    pub destination: SocketAddr,
    /// On which transport; on a reliable one the driver reuses or opens a connection.
    pub transport: Transport,
    /// One whole SIP message. Shared: retransmissions do not copy it.
    pub contents: Arc<[u8]>,
}

/// What the TU (the proxy core) must learn.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A new request created a server transaction; answer it with
    /// [`Transactions::send_response`]. Retransmissions are absorbed and not reported.
    Request {
        /// The new server transaction.
        key: TransactionKey,
        /// Where it came from (and where responses go).
        source: SocketAddr,
        /// On which transport.
        transport: Transport,
        /// The request.
        request: Request,
    },
    /// A CANCEL created its own server transaction (answer it: 200, or 481 when `invite` is
    /// `None`); `invite` is the INVITE server transaction it cancels (same branch and sent-by).
    Cancel {
        /// The CANCEL's own server transaction.
        key: TransactionKey,
        /// The INVITE server transaction being cancelled, if it still exists.
        invite: Option<TransactionKey>,
        /// Where it came from.
        source: SocketAddr,
        /// On which transport.
        transport: Transport,
        /// The CANCEL.
        request: Request,
    },
    /// An ACK that no transaction absorbs: the end-to-end ACK for a 2xx (RFC 3261 §17.1.1.3),
    /// which a proxy forwards statelessly. `key` is the Accepted INVITE server transaction it
    /// matched (RFC 6026 §7.1 "ACK / to TU"), if any.
    Ack {
        /// The matching INVITE server transaction in Accepted, if any.
        key: Option<TransactionKey>,
        /// Where it came from.
        source: SocketAddr,
        /// On which transport.
        transport: Transport,
        /// The ACK.
        request: Request,
    },
    /// A response for a client transaction: every provisional, the first final.
    /// Retransmitted non-2xx finals are absorbed (and re-ACKed).
    Response {
        /// The client transaction.
        key: TransactionKey,
        /// The response.
        response: Response,
    },
    /// A response matching no client transaction (RFC 3261 §18.1.2): a proxy forwards it
    /// statelessly (§16.7), e.g. a retransmitted 2xx to an INVITE.
    StrayResponse {
        /// Where it came from.
        source: SocketAddr,
        /// On which transport.
        transport: Transport,
        /// The response.
        response: Response,
    },
    /// The transaction timed out (timer B, F or H); it terminates next.
    Timeout {
        /// The transaction.
        key: TransactionKey,
        /// Which timer fired.
        timer: TimeoutTimer,
    },
    /// The driver reported a transport error ([`Transactions::handle_transport_error`]); the
    /// transaction terminates next.
    TransportError {
        /// The transaction.
        key: TransactionKey,
    },
    /// The transaction is gone; its key will not be reported again.
    Terminated {
        /// The transaction.
        key: TransactionKey,
    },
}

/// Errors: the first group are faults of the peer's message, the rest misuse of this API.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The message lacks a header the transaction layer needs.
    #[error("message has no {0} header")]
    MissingHeader(&'static str),
    /// A header the transaction layer needs does not parse.
    #[error("malformed {0} header")]
    MalformedHeader(&'static str),
    /// The top Via has no `branch` parameter.
    #[error("top Via has no branch parameter")]
    MissingBranch,
    /// An RFC 2543 branch (no magic cookie); not supported.
    #[error(
        "branch {0:?} lacks the magic cookie z9hG4bK: RFC 2543 transactions are not supported"
    )]
    Rfc2543(String),
    /// A status code outside 100..=699.
    #[error("status code {0} is outside 100..=699")]
    InvalidStatus(u16),
    /// The request line method and the CSeq method differ.
    #[error("request method {request} differs from CSeq method {cseq}")]
    CSeqMethodMismatch {
        /// The request line method.
        request: Method,
        /// The CSeq method.
        cseq: Method,
    },
    /// No such transaction (it may have terminated).
    #[error("no transaction {0}")]
    UnknownTransaction(TransactionKey),
    /// A client transaction with this branch and method exists already.
    #[error("transaction {0} already exists")]
    DuplicateTransaction(TransactionKey),
    /// ACK is never a client transaction: the ACK for a non-2xx is generated by the INVITE
    /// client transaction, the ACK for a 2xx is end-to-end ([`Transactions::send_stateless`]).
    #[error("ACK is not sent in a transaction (RFC 3261 §17.1.1.3)")]
    AckTransaction,
    /// Responses are sent on server transactions only.
    #[error("{0} is a client transaction")]
    NotServer(TransactionKey),
    /// The transaction's state does not allow this response (e.g. a second final).
    #[error("{key} in state {state:?} cannot send status {status}")]
    InvalidState {
        /// The transaction.
        key: TransactionKey,
        /// Its state.
        state: State,
        /// The refused status.
        status: u16,
    },
}

// ---------------------------------------------------------------------------------------------
// Message helpers
// ---------------------------------------------------------------------------------------------

/// The bytes on the wire come from the message layer's printer, which keeps what the message
/// was received with (extension methods, the Request-URI as written, reason phrases, unknown
/// headers, binary bodies); rsip's printer would lose them.
fn serialize(message: &impl ToBytes) -> Arc<[u8]> {
    Arc::from(message.to_bytes())
}

trait ToBytes {
    fn to_bytes(&self) -> Vec<u8>;
}

impl ToBytes for Request {
    fn to_bytes(&self) -> Vec<u8> {
        Request::to_bytes(self)
    }
}

impl ToBytes for Response {
    fn to_bytes(&self) -> Vec<u8> {
        Response::to_bytes(self)
    }
}

impl ToBytes for SipMessage {
    fn to_bytes(&self) -> Vec<u8> {
        SipMessage::to_bytes(self)
    }
}

fn method(m: rsip::Method) -> Method {
    Method::from(m)
}

fn top_via(headers: &Headers) -> Result<Via, Error> {
    parse_top_via(headers).map_err(|e| match e {
        ProxyError::NoVia => Error::MissingHeader("Via"),
        _ => Error::MalformedHeader("Via"),
    })
}

fn branch_of(via: &Via) -> Result<String, Error> {
    let branch = via.branch().ok_or(Error::MissingBranch)?.to_owned();
    if branch.starts_with(MAGIC_COOKIE) {
        Ok(branch)
    } else {
        Err(Error::Rfc2543(branch))
    }
}

/// The top Via sent-by as matched: `host[:port]`, lower case.
fn sent_by_of(via: &Via) -> String {
    let host = via.host.to_ascii_lowercase();
    match via.port {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

fn cseq(headers: &Headers) -> Result<(u32, Method), Error> {
    let value = headers
        .iter()
        .find_map(|h| match h {
            Header::CSeq(v) => Some(v.value()),
            _ => None,
        })
        .ok_or(Error::MissingHeader("CSeq"))?;
    parse_cseq(value).ok_or(Error::MalformedHeader("CSeq"))
}

fn cseq_method(headers: &Headers) -> Result<Method, Error> {
    cseq(headers).map(|(_, m)| m)
}

fn status_of(response: &Response) -> Result<u16, Error> {
    let code = response.status;
    if (100..700).contains(&code) {
        Ok(code)
    } else {
        Err(Error::InvalidStatus(code))
    }
}

/// The 100 Trying a server INVITE transaction sends itself (RFC 3261 §8.2.6): Via, From, To,
/// Call-ID, CSeq and Timestamp copied, no To tag added.
fn trying_for(request: &Request) -> Response {
    let mut headers = Headers::default();
    for header in request.headers.iter() {
        if matches!(
            header,
            Header::Via(_)
                | Header::From(_)
                | Header::To(_)
                | Header::CallId(_)
                | Header::CSeq(_)
                | Header::Timestamp(_)
        ) {
            headers.push(header.clone());
        }
    }
    headers.push(make_header("Content-Length", "0"));
    Response {
        status: 100,
        reason: "Trying".to_owned(),
        headers,
        body: Vec::new(),
    }
}

/// The ACK for a non-2xx final (RFC 3261 §17.1.1.3): the INVITE's Request-URI, top Via (same
/// branch), Call-ID, From, Route set and CSeq number; the response's To (with its tag); CSeq
/// method ACK; no body.
fn ack_for(invite: &Request, response: &Response) -> Result<Request, Error> {
    let (seq, _) = cseq(&invite.headers)?;
    let to = response
        .headers
        .iter()
        .find(|h| matches!(h, Header::To(_)))
        .ok_or(Error::MissingHeader("To"))?
        .clone();
    let mut headers = Headers::default();
    let mut via_done = false;
    for header in invite.headers.iter() {
        match header {
            Header::Via(_) if !via_done => {
                via_done = true;
                headers.push(header.clone());
            }
            Header::Route(_) | Header::From(_) | Header::CallId(_) | Header::MaxForwards(_) => {
                headers.push(header.clone())
            }
            _ => {}
        }
    }
    headers.push(to);
    headers.push(make_header("CSeq", &format!("{seq} ACK")));
    headers.push(make_header("Content-Length", "0"));
    Ok(Request {
        method: method(rsip::Method::Ack),
        uri: invite.uri.clone(),
        headers,
        body: Vec::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// State machines
// ---------------------------------------------------------------------------------------------

/// Where a transaction's outputs go, borrowed from [`Transactions`].
struct Out<'a> {
    transmits: &'a mut VecDeque<Transmit>,
    events: &'a mut VecDeque<Event>,
}

/// The addressing every transaction keeps.
#[derive(Clone, Debug)]
struct Peer {
    address: SocketAddr,
    transport: Transport,
}

impl Peer {
    fn reliable(&self) -> bool {
        is_reliable(self.transport)
    }
    fn send(&self, out: &mut Out<'_>, contents: &Arc<[u8]>) {
        out.transmits.push_back(Transmit {
            destination: self.address,
            transport: self.transport,
            contents: contents.clone(),
        });
    }
}

/// A retransmission timer: fires at `at`, then re-arms with the next interval.
#[derive(Clone, Copy, Debug)]
struct Retransmit {
    at: Duration,
    interval: Duration,
}

impl Retransmit {
    /// Armed at `now + interval` on unreliable transports only.
    fn arm(now: Duration, interval: Duration, reliable: bool) -> Option<Self> {
        (!reliable).then_some(Self {
            at: now + interval,
            interval,
        })
    }
    fn due(this: Option<Self>, now: Duration) -> bool {
        this.is_some_and(|r| r.at <= now)
    }
    /// The next firing after doubling the interval, capped at `cap` if given.
    fn backoff(self, now: Duration, cap: Option<Duration>) -> Self {
        let mut interval = self.interval.saturating_mul(2);
        if let Some(cap) = cap {
            interval = interval.min(cap);
        }
        Self {
            at: now + interval,
            interval,
        }
    }
}

fn earliest(deadlines: &[Option<Duration>]) -> Option<Duration> {
    deadlines.iter().flatten().min().copied()
}

/// INVITE client transaction, RFC 3261 §17.1.1 (Figure 5).
///
/// ```text
///                                |INVITE from TU
///              Timer A fires     |INVITE sent
///              Reset A,          V                      Timer B fires
///              INVITE sent +-----------+                or Transport Err.
///                +---------|           |---------------+inform TU
///                |         |  Calling  |               |
///                +-------->|           |-------------->|
///                          +-----------+ 2xx           |
///                             |  |       2xx to TU     |
///                             |  |1xx                  |
///     300-699 +---------------+  |1xx to TU            |
///    ACK sent |                  |                     |
/// resp. to TU |  1xx             V                     |
///             |  1xx to TU  -----------+               |
///             |  +---------|           |               |
///             |  |         |Proceeding |-------------->|
///             |  +-------->|           | 2xx           |
///             |            +-----------+ 2xx to TU     |
///             |       300-699    |                     |
///             |       ACK sent,  |                     |
///             |       resp. to TU|                     |
///             |                  |                     |
///             |                  V                     |
///             |            +-----------+               |
///             |            |           |               |
///             |            | Completed |               |
///             |            |           |               |
///             |            +-----------+               |
///             |              ^   |                     |
///             |              |   | Timer D fires       |
///             +--------------+   | -                   |
///           300-699 (again):     |                     |
///           ACK re-sent          V                     |
///                          +-----------+               |
///                          | Terminated|<--------------+
///                          +-----------+
/// ```
#[derive(Debug)]
struct ClientInvite {
    key: TransactionKey,
    peer: Peer,
    request: Request,
    contents: Arc<[u8]>,
    ack: Option<Arc<[u8]>>,
    state: ClientInviteState,
}

#[derive(Debug)]
enum ClientInviteState {
    Calling { a: Option<Retransmit>, b: Duration },
    Proceeding,
    Completed { d: Duration },
    Terminated,
}

impl ClientInvite {
    fn start(
        now: Duration,
        cfg: &Config,
        key: TransactionKey,
        peer: Peer,
        request: Request,
        out: &mut Out<'_>,
    ) -> Self {
        let contents = serialize(&request);
        peer.send(out, &contents);
        let state = ClientInviteState::Calling {
            a: Retransmit::arm(now, cfg.t1, peer.reliable()),
            b: now + cfg.sixty_four_t1(),
        };
        Self {
            key,
            peer,
            request,
            contents,
            ack: None,
            state,
        }
    }

    fn handle_response(&mut self, now: Duration, cfg: &Config, response: Response, out: &mut Out) {
        use ClientInviteState::*;
        let code = response.status;
        self.state = match std::mem::replace(&mut self.state, Terminated) {
            Calling { .. } | Proceeding => match code {
                100..=199 => {
                    self.to_tu(response, out);
                    Proceeding
                }
                200..=299 => {
                    self.to_tu(response, out);
                    Terminated
                }
                _ => match ack_for(&self.request, &response) {
                    Ok(ack) => {
                        let ack = serialize(&ack);
                        self.peer.send(out, &ack);
                        self.ack = Some(ack);
                        self.to_tu(response, out);
                        Self::completed(now, cfg, &self.peer)
                    }
                    // A final without To cannot be ACKed; report it and let timer B or the
                    // proxy core deal with the call.
                    Err(_) => {
                        self.to_tu(response, out);
                        Terminated
                    }
                },
            },
            Completed { d } => {
                if code >= 300 {
                    if let Some(ack) = &self.ack {
                        self.peer.send(out, ack);
                    }
                }
                Completed { d }
            }
            Terminated => Terminated,
        };
    }

    fn completed(now: Duration, cfg: &Config, peer: &Peer) -> ClientInviteState {
        let d = cfg.timer_d(peer.reliable());
        if d.is_zero() {
            ClientInviteState::Terminated
        } else {
            ClientInviteState::Completed { d: now + d }
        }
    }

    fn to_tu(&self, response: Response, out: &mut Out) {
        out.events.push_back(Event::Response {
            key: self.key.clone(),
            response,
        });
    }

    fn handle_timeout(&mut self, now: Duration, out: &mut Out) {
        use ClientInviteState::*;
        self.state = match std::mem::replace(&mut self.state, Terminated) {
            Calling { b, .. } if b <= now => {
                out.events.push_back(Event::Timeout {
                    key: self.key.clone(),
                    timer: TimeoutTimer::B,
                });
                Terminated
            }
            Calling { a, b } if Retransmit::due(a, now) => {
                self.peer.send(out, &self.contents);
                // Timer A doubles without a cap (§17.1.1.2): 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s.
                Calling {
                    a: a.map(|a| a.backoff(now, None)),
                    b,
                }
            }
            Completed { d } if d <= now => Terminated,
            other => other,
        };
    }

    fn poll_timeout(&self) -> Option<Duration> {
        match &self.state {
            ClientInviteState::Calling { a, b } => earliest(&[a.map(|a| a.at), Some(*b)]),
            ClientInviteState::Completed { d } => Some(*d),
            ClientInviteState::Proceeding | ClientInviteState::Terminated => None,
        }
    }

    fn state(&self) -> State {
        match self.state {
            ClientInviteState::Calling { .. } => State::Calling,
            ClientInviteState::Proceeding => State::Proceeding,
            ClientInviteState::Completed { .. } => State::Completed,
            ClientInviteState::Terminated => State::Terminated,
        }
    }
}

/// Non-INVITE client transaction, RFC 3261 §17.1.2 (Figure 6).
///
/// ```text
///                                    |Request from TU
///                                    |send request
///                Timer E             V
///                send request  +-----------+
///                    +---------|           |-------------------+
///                    |         |  Trying   |  Timer F          |
///                    +-------->|           |  or Transport Err.|
///                              +-----------+  inform TU        |
///                 200-699         |  |                         |
///                 resp. to TU     |  |1xx                      |
///                 +---------------+  |resp. to TU              |
///                 |                  |                         |
///                 |   Timer E        V       Timer F           |
///                 |   send req +-----------+ or Transport Err. |
///                 |  +---------|           | inform TU         |
///                 |  |         |Proceeding |------------------>|
///                 |  +-------->|           |-----+             |
///                 |            +-----------+     |1xx          |
///                 |              |      ^        |resp to TU   |
///                 | 200-699      |      +--------+             |
///                 | resp. to TU  |                             |
///                 |              |                             |
///                 |              V                             |
///                 |            +-----------+                   |
///                 |            |           |                   |
///                 |            | Completed |                   |
///                 |            |           |                   |
///                 |            +-----------+                   |
///                 |              ^   |                         |
///                 |              |   | Timer K                 |
///                 +--------------+   | -                       |
///                                    |                         |
///                                    V                         |
///              NOTE:           +-----------+                   |
///                              |           |                   |
///          transitions         | Terminated|<------------------+
///          labeled with        |           |
///          the event           +-----------+
/// ```
#[derive(Debug)]
struct ClientNonInvite {
    key: TransactionKey,
    peer: Peer,
    contents: Arc<[u8]>,
    state: ClientNonInviteState,
}

#[derive(Debug)]
enum ClientNonInviteState {
    Trying { e: Option<Retransmit>, f: Duration },
    Proceeding { e: Option<Retransmit>, f: Duration },
    Completed { k: Duration },
    Terminated,
}

impl ClientNonInvite {
    fn start(
        now: Duration,
        cfg: &Config,
        key: TransactionKey,
        peer: Peer,
        request: Request,
        out: &mut Out<'_>,
    ) -> Self {
        let contents = serialize(&request);
        peer.send(out, &contents);
        let state = ClientNonInviteState::Trying {
            e: Retransmit::arm(now, cfg.t1, peer.reliable()),
            f: now + cfg.sixty_four_t1(),
        };
        Self {
            key,
            peer,
            contents,
            state,
        }
    }

    fn handle_response(&mut self, now: Duration, cfg: &Config, response: Response, out: &mut Out) {
        use ClientNonInviteState::*;
        let code = response.status;
        self.state = match std::mem::replace(&mut self.state, Terminated) {
            Trying { e, f } | Proceeding { e, f } => {
                out.events.push_back(Event::Response {
                    key: self.key.clone(),
                    response,
                });
                if code < 200 {
                    Proceeding { e, f }
                } else {
                    let k = cfg.timer_k(self.peer.reliable());
                    if k.is_zero() {
                        Terminated
                    } else {
                        Completed { k: now + k }
                    }
                }
            }
            // Completed absorbs retransmitted responses.
            other => other,
        };
    }

    fn handle_timeout(&mut self, now: Duration, cfg: &Config, out: &mut Out) {
        use ClientNonInviteState::*;
        self.state = match std::mem::replace(&mut self.state, Terminated) {
            Trying { f, .. } | Proceeding { f, .. } if f <= now => {
                out.events.push_back(Event::Timeout {
                    key: self.key.clone(),
                    timer: TimeoutTimer::F,
                });
                Terminated
            }
            Trying { e, f } if Retransmit::due(e, now) => {
                self.peer.send(out, &self.contents);
                // Timer E doubles up to T2 (§17.1.2.2): 0.5, 1.5, 3.5, 7.5, 11.5, ... s.
                Trying {
                    e: e.map(|e| e.backoff(now, Some(cfg.t2))),
                    f,
                }
            }
            Proceeding { e, f } if Retransmit::due(e, now) => {
                self.peer.send(out, &self.contents);
                // In Proceeding, timer E is reset to T2 (§17.1.2.2).
                Proceeding {
                    e: Retransmit::arm(now, cfg.t2, self.peer.reliable()),
                    f,
                }
            }
            Completed { k } if k <= now => Terminated,
            other => other,
        };
    }

    fn poll_timeout(&self) -> Option<Duration> {
        match &self.state {
            ClientNonInviteState::Trying { e, f } | ClientNonInviteState::Proceeding { e, f } => {
                earliest(&[e.map(|e| e.at), Some(*f)])
            }
            ClientNonInviteState::Completed { k } => Some(*k),
            ClientNonInviteState::Terminated => None,
        }
    }

    fn state(&self) -> State {
        match self.state {
            ClientNonInviteState::Trying { .. } => State::Trying,
            ClientNonInviteState::Proceeding { .. } => State::Proceeding,
            ClientNonInviteState::Completed { .. } => State::Completed,
            ClientNonInviteState::Terminated => State::Terminated,
        }
    }
}

/// INVITE server transaction, RFC 3261 §17.2.1 (Figure 7) as amended by RFC 6026 §7.1.
///
/// ```text
///                                |INVITE
///                                |pass INV to TU
///             INVITE             V send 100 if TU won't in 200 ms
///             send response+------------+
///                 +--------|            |--------+ 101-199 from TU
///                 |        |            |        | send response
///                 +------->|            |<-------+
///                          | Proceeding |
///                          |            |--------+ Transport Err.
///                          |            |        | Inform TU
///                          |            |<-------+
///                          +------------+
///             300-699 from TU |    |2xx from TU
///             send response   |    |send response
///              +--------------+    +------------+
///              |                                |
///  INVITE      V          Timer G fires         |
///  send response+-----------+ send response     |
///       +--------|           |--------+         |
///       |        | Completed |        |         |       INVITE  -
///       +------->|           |<-------+         V        +------+
///                +-----------+             +----------+  |      |
///                 |    |  Timer H fires    |          |<-+      |
///             ACK |    |  Inform TU        | Accepted |  2xx from TU
///             -   |    +------------------>|          |  send response
///                 V                   |    +----------+  ACK: to TU
///                +-----------+        |         |
///                | Confirmed |        |         | Timer L fires
///                +-----------+        |         | -
///                      |Timer I fires |         |
///                      V              V         V
///                +-----------------------------------+
///                |            Terminated             |
///                +-----------------------------------+
/// ```
#[derive(Debug)]
struct ServerInvite {
    key: TransactionKey,
    peer: Peer,
    /// The 100 Trying to send if the TU stays silent; `None` once anything was sent.
    trying: Option<Response>,
    last_response: Option<Arc<[u8]>>,
    state: ServerInviteState,
}

#[derive(Debug)]
enum ServerInviteState {
    Proceeding { trying_at: Option<Duration> },
    Completed { g: Option<Retransmit>, h: Duration },
    Confirmed { i: Duration },
    Accepted { l: Duration },
    Terminated,
}

/// What the caller must do after an ACK reached an INVITE server transaction.
enum AckOutcome {
    Absorbed,
    ToTu,
}

impl ServerInvite {
    fn start(
        now: Duration,
        cfg: &Config,
        key: TransactionKey,
        peer: Peer,
        request: &Request,
        out: &mut Out<'_>,
    ) -> Self {
        let mut this = Self {
            key,
            peer,
            trying: None,
            last_response: None,
            state: ServerInviteState::Proceeding { trying_at: None },
        };
        match cfg.trying {
            TryingPolicy::Never => {}
            TryingPolicy::Immediate => {
                this.trying = Some(trying_for(request));
                this.send_trying(out);
            }
            TryingPolicy::After(delay) => {
                this.trying = Some(trying_for(request));
                this.state = ServerInviteState::Proceeding {
                    trying_at: Some(now + delay),
                };
            }
        }
        this
    }

    fn send_trying(&mut self, out: &mut Out) {
        if let Some(trying) = self.trying.take() {
            let contents = serialize(&trying);
            self.peer.send(out, &contents);
            self.last_response = Some(contents);
        }
    }

    /// A retransmitted INVITE: re-send the last response (§17.2.1), absorb in Accepted.
    fn handle_retransmission(&mut self, out: &mut Out) {
        use ServerInviteState::*;
        match self.state {
            Proceeding { .. } => {
                if self.last_response.is_none() {
                    // The UAC is retransmitting and the TU is still silent: 100 Trying now.
                    self.send_trying(out);
                    self.state = Proceeding { trying_at: None };
                } else if let Some(last) = &self.last_response {
                    self.peer.send(out, last);
                }
            }
            Completed { .. } => {
                if let Some(last) = &self.last_response {
                    self.peer.send(out, last);
                }
            }
            Confirmed { .. } | Accepted { .. } | Terminated => {}
        }
    }

    fn handle_ack(&mut self, now: Duration, cfg: &Config) -> AckOutcome {
        use ServerInviteState::*;
        let (next, outcome) = match std::mem::replace(&mut self.state, Terminated) {
            Completed { .. } => {
                let i = cfg.timer_i(self.peer.reliable());
                if i.is_zero() {
                    (Terminated, AckOutcome::Absorbed)
                } else {
                    (Confirmed { i: now + i }, AckOutcome::Absorbed)
                }
            }
            Accepted { l } => (Accepted { l }, AckOutcome::ToTu),
            other => (other, AckOutcome::Absorbed),
        };
        self.state = next;
        outcome
    }

    fn send_response(
        &mut self,
        now: Duration,
        cfg: &Config,
        response: Response,
        code: u16,
        out: &mut Out,
    ) -> Result<(), Error> {
        use ServerInviteState::*;
        let state = self.state();
        let next = match (std::mem::replace(&mut self.state, Terminated), code) {
            (Proceeding { .. }, 100..=199) => Proceeding { trying_at: None },
            (Proceeding { .. }, 200..=299) => Accepted {
                l: now + cfg.sixty_four_t1(),
            },
            (Accepted { l }, 200..=299) => Accepted { l },
            (Proceeding { .. }, _) => Completed {
                g: Retransmit::arm(now, cfg.t1, self.peer.reliable()),
                h: now + cfg.sixty_four_t1(),
            },
            (other, status) => {
                self.state = other;
                return Err(Error::InvalidState {
                    key: self.key.clone(),
                    state,
                    status,
                });
            }
        };
        self.trying = None;
        let contents = serialize(&response);
        self.peer.send(out, &contents);
        self.last_response = Some(contents);
        self.state = next;
        Ok(())
    }

    fn handle_timeout(&mut self, now: Duration, cfg: &Config, out: &mut Out) {
        use ServerInviteState::*;
        self.state = match std::mem::replace(&mut self.state, Terminated) {
            Proceeding {
                trying_at: Some(at),
            } if at <= now => {
                self.send_trying(out);
                Proceeding { trying_at: None }
            }
            Completed { h, .. } if h <= now => {
                out.events.push_back(Event::Timeout {
                    key: self.key.clone(),
                    timer: TimeoutTimer::H,
                });
                Terminated
            }
            Completed { g, h } if Retransmit::due(g, now) => {
                if let Some(last) = &self.last_response {
                    self.peer.send(out, last);
                }
                // Timer G doubles up to T2 (§17.2.1).
                Completed {
                    g: g.map(|g| g.backoff(now, Some(cfg.t2))),
                    h,
                }
            }
            Confirmed { i } if i <= now => Terminated,
            Accepted { l } if l <= now => Terminated,
            other => other,
        };
    }

    fn poll_timeout(&self) -> Option<Duration> {
        match &self.state {
            ServerInviteState::Proceeding { trying_at } => *trying_at,
            ServerInviteState::Completed { g, h } => earliest(&[g.map(|g| g.at), Some(*h)]),
            ServerInviteState::Confirmed { i } => Some(*i),
            ServerInviteState::Accepted { l } => Some(*l),
            ServerInviteState::Terminated => None,
        }
    }

    fn state(&self) -> State {
        match self.state {
            ServerInviteState::Proceeding { .. } => State::Proceeding,
            ServerInviteState::Completed { .. } => State::Completed,
            ServerInviteState::Confirmed { .. } => State::Confirmed,
            ServerInviteState::Accepted { .. } => State::Accepted,
            ServerInviteState::Terminated => State::Terminated,
        }
    }
}

/// Non-INVITE server transaction, RFC 3261 §17.2.2 (Figure 8).
///
/// ```text
///                                   |Request received
///                                   |pass to TU
///                                   V
///                             +-----------+
///                             |           |
///                             | Trying    |-------------+
///                             |           |             |
///                             +-----------+             |200-699 from TU
///                                   |                   |send response
///                                   |1xx from TU        |
///                                   |send response      |
///                                   |                   |
///                Request            V      1xx from TU  |
///                send response+-----------+send response|
///                    +--------|           |--------+    |
///                    |        | Proceeding|        |    |
///                    +------->|           |<-------+    |
///             +<--------------|           |             |
///             |Trnsprt Err    +-----------+             |
///             |Inform TU            |                   |
///             |                     |                   |
///             |                     |200-699 from TU    |
///             |                     |send response      |
///             |  Request            V                   |
///             |  send response+-----------+             |
///             |      +--------|           |             |
///             |      |        | Completed |<------------+
///             |      +------->|           |
///             +<--------------|           |
///             |Trnsprt Err    +-----------+
///             |Inform TU            |
///             |                     |Timer J fires
///             |                     |-
///             |                     |
///             |                     V
///             |               +-----------+
///             |               |           |
///             +-------------->| Terminated|
///                             |           |
///                             +-----------+
/// ```
#[derive(Debug)]
struct ServerNonInvite {
    key: TransactionKey,
    peer: Peer,
    last_response: Option<Arc<[u8]>>,
    state: ServerNonInviteState,
}

#[derive(Debug)]
enum ServerNonInviteState {
    Trying,
    Proceeding,
    Completed { j: Duration },
    Terminated,
}

impl ServerNonInvite {
    fn handle_retransmission(&mut self, out: &mut Out) {
        // Trying absorbs; Proceeding and Completed re-send the last response.
        if let Some(last) = &self.last_response {
            self.peer.send(out, last);
        }
    }

    fn send_response(
        &mut self,
        now: Duration,
        cfg: &Config,
        response: Response,
        code: u16,
        out: &mut Out,
    ) -> Result<(), Error> {
        use ServerNonInviteState::*;
        let next = match (&self.state, code) {
            (Trying | Proceeding, 100..=199) => Proceeding,
            (Trying | Proceeding, _) => {
                let j = cfg.timer_j(self.peer.reliable());
                if j.is_zero() {
                    Terminated
                } else {
                    Completed { j: now + j }
                }
            }
            (_, status) => {
                return Err(Error::InvalidState {
                    key: self.key.clone(),
                    state: self.state(),
                    status,
                })
            }
        };
        let contents = serialize(&response);
        self.peer.send(out, &contents);
        self.last_response = Some(contents);
        self.state = next;
        Ok(())
    }

    fn handle_timeout(&mut self, now: Duration) {
        if let ServerNonInviteState::Completed { j } = self.state {
            if j <= now {
                self.state = ServerNonInviteState::Terminated;
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        match self.state {
            ServerNonInviteState::Completed { j } => Some(j),
            _ => None,
        }
    }

    fn state(&self) -> State {
        match self.state {
            ServerNonInviteState::Trying => State::Trying,
            ServerNonInviteState::Proceeding => State::Proceeding,
            ServerNonInviteState::Completed { .. } => State::Completed,
            ServerNonInviteState::Terminated => State::Terminated,
        }
    }
}

#[derive(Debug)]
enum Transaction {
    InviteClient(ClientInvite),
    NonInviteClient(ClientNonInvite),
    InviteServer(ServerInvite),
    NonInviteServer(ServerNonInvite),
}

impl Transaction {
    fn state(&self) -> State {
        match self {
            Self::InviteClient(t) => t.state(),
            Self::NonInviteClient(t) => t.state(),
            Self::InviteServer(t) => t.state(),
            Self::NonInviteServer(t) => t.state(),
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        match self {
            Self::InviteClient(t) => t.poll_timeout(),
            Self::NonInviteClient(t) => t.poll_timeout(),
            Self::InviteServer(t) => t.poll_timeout(),
            Self::NonInviteServer(t) => t.poll_timeout(),
        }
    }

    fn handle_timeout(&mut self, now: Duration, cfg: &Config, out: &mut Out) {
        match self {
            Self::InviteClient(t) => t.handle_timeout(now, out),
            Self::NonInviteClient(t) => t.handle_timeout(now, cfg, out),
            Self::InviteServer(t) => t.handle_timeout(now, cfg, out),
            Self::NonInviteServer(t) => t.handle_timeout(now),
        }
    }

    fn terminate(&mut self) {
        match self {
            Self::InviteClient(t) => t.state = ClientInviteState::Terminated,
            Self::NonInviteClient(t) => t.state = ClientNonInviteState::Terminated,
            Self::InviteServer(t) => t.state = ServerInviteState::Terminated,
            Self::NonInviteServer(t) => t.state = ServerNonInviteState::Terminated,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The transaction layer
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Entry {
    key: TransactionKey,
    /// The deadline under which this entry sits in `Transactions::timers`.
    deadline: Option<Duration>,
    transaction: Transaction,
}

/// The transaction layer: every client and server transaction of one SIP element.
///
/// See the [module documentation](self) for the driving loop. Transactions are removed as soon as
/// they terminate ([`Event::Terminated`]), so `len()` counts live ones only.
#[derive(Debug)]
pub struct Transactions {
    config: Config,
    index: HashMap<TransactionKey, u64>,
    /// By creation order, so that outputs of simultaneous timers come out deterministically.
    entries: BTreeMap<u64, Entry>,
    /// `(deadline, id)` of every armed transaction: `poll_timeout` is its first element.
    timers: BTreeSet<(Duration, u64)>,
    next_id: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Default for Transactions {
    fn default() -> Self {
        Self::new(Config::default())
    }
}

impl Transactions {
    /// An empty transaction layer.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            index: HashMap::new(),
            entries: BTreeMap::new(),
            timers: BTreeSet::new(),
            next_id: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Live transactions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no transaction is live.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The state of a live transaction.
    pub fn state(&self, key: &TransactionKey) -> Option<State> {
        let id = self.index.get(key)?;
        self.entries.get(id).map(|e| e.transaction.state())
    }

    /// A message received from `source` on `transport`.
    ///
    /// A request creates a server transaction ([`Event::Request`], [`Event::Cancel`]) or is a
    /// retransmission the matching one absorbs; an ACK is absorbed or reported as
    /// [`Event::Ack`]. A response goes to its client transaction ([`Event::Response`]) or is
    /// reported as [`Event::StrayResponse`].
    ///
    /// # Errors
    ///
    /// The message lacks a usable Via, branch or CSeq, uses an RFC 2543 branch, or a response's
    /// status is outside 100..=699. Nothing is changed then; the driver drops the message (or
    /// answers a request statelessly).
    pub fn handle_incoming(
        &mut self,
        now: Duration,
        source: SocketAddr,
        transport: Transport,
        message: SipMessage,
    ) -> Result<(), Error> {
        match message {
            SipMessage::Request(request) => self.handle_request(now, source, transport, request),
            SipMessage::Response(response) => {
                self.handle_response(now, source, transport, response)
            }
        }
    }

    fn handle_request(
        &mut self,
        now: Duration,
        source: SocketAddr,
        transport: Transport,
        request: Request,
    ) -> Result<(), Error> {
        let via = top_via(&request.headers)?;
        let branch = branch_of(&via)?;
        let cseq = cseq_method(&request.headers)?;
        if cseq != request.method {
            return Err(Error::CSeqMethodMismatch {
                request: request.method,
                cseq,
            });
        }
        let sent_by = sent_by_of(&via);
        let key_for = |method| TransactionKey {
            role: Role::Server,
            branch: branch.clone(),
            method,
            sent_by: Some(sent_by.clone()),
        };
        let peer = Peer {
            address: source,
            transport,
        };

        if request.method.is(rsip::Method::Ack) {
            // §17.2.3: the ACK matches the INVITE server transaction it acknowledges.
            let key = key_for(method(rsip::Method::Invite));
            // No match: the end-to-end ACK for a 2xx, for the TU to forward.
            let mut outcome = AckOutcome::ToTu;
            let mut matched = None;
            if let Some(&id) = self.index.get(&key) {
                if let Some(Entry {
                    transaction: Transaction::InviteServer(t),
                    ..
                }) = self.entries.get_mut(&id)
                {
                    outcome = t.handle_ack(now, &self.config);
                    matched = Some(key);
                }
                self.settle(id);
            }
            if let AckOutcome::ToTu = outcome {
                self.events.push_back(Event::Ack {
                    key: matched,
                    source,
                    transport,
                    request,
                });
            }
            return Ok(());
        }

        let key = key_for(request.method.clone());
        if let Some(&id) = self.index.get(&key) {
            let mut out = Out {
                transmits: &mut self.transmits,
                events: &mut self.events,
            };
            match self.entries.get_mut(&id).map(|e| &mut e.transaction) {
                Some(Transaction::InviteServer(t)) => t.handle_retransmission(&mut out),
                Some(Transaction::NonInviteServer(t)) => t.handle_retransmission(&mut out),
                _ => {}
            }
            self.settle(id);
            return Ok(());
        }

        let mut out = Out {
            transmits: &mut self.transmits,
            events: &mut self.events,
        };
        let transaction = if request.method.is(rsip::Method::Invite) {
            Transaction::InviteServer(ServerInvite::start(
                now,
                &self.config,
                key.clone(),
                peer,
                &request,
                &mut out,
            ))
        } else {
            Transaction::NonInviteServer(ServerNonInvite {
                key: key.clone(),
                peer,
                last_response: None,
                state: ServerNonInviteState::Trying,
            })
        };
        let event = if request.method.is(rsip::Method::Cancel) {
            let invite = key_for(method(rsip::Method::Invite));
            Event::Cancel {
                key: key.clone(),
                invite: self.index.contains_key(&invite).then_some(invite),
                source,
                transport,
                request,
            }
        } else {
            Event::Request {
                key: key.clone(),
                source,
                transport,
                request,
            }
        };
        // The TU hears of the request before any 100 Trying leaves; both are queued already.
        self.events.push_back(event);
        self.insert(key, transaction);
        Ok(())
    }

    fn handle_response(
        &mut self,
        now: Duration,
        source: SocketAddr,
        transport: Transport,
        response: Response,
    ) -> Result<(), Error> {
        status_of(&response)?;
        let via = top_via(&response.headers)?;
        let branch = branch_of(&via)?;
        let method = cseq_method(&response.headers)?;
        let key = TransactionKey {
            role: Role::Client,
            branch,
            method,
            sent_by: None,
        };
        let Some(&id) = self.index.get(&key) else {
            self.events.push_back(Event::StrayResponse {
                source,
                transport,
                response,
            });
            return Ok(());
        };
        let mut out = Out {
            transmits: &mut self.transmits,
            events: &mut self.events,
        };
        match self.entries.get_mut(&id).map(|e| &mut e.transaction) {
            Some(Transaction::InviteClient(t)) => {
                t.handle_response(now, &self.config, response, &mut out)
            }
            Some(Transaction::NonInviteClient(t)) => {
                t.handle_response(now, &self.config, response, &mut out)
            }
            _ => {}
        }
        self.settle(id);
        Ok(())
    }

    /// Starts a client transaction: sends `request` to `destination` on `transport` and
    /// retransmits it as needed. The request must carry its own top Via with an RFC 3261 branch
    /// (a proxy adds its Via before forwarding, §16.6 step 8). A CANCEL is its own transaction
    /// (same branch as the INVITE it cancels, §9.1).
    ///
    /// # Errors
    ///
    /// No Via, branch or CSeq; an RFC 2543 branch; CSeq method differing from the method; an ACK
    /// ([`Error::AckTransaction`]); or a live client transaction with the same key.
    pub fn send_request(
        &mut self,
        now: Duration,
        destination: SocketAddr,
        transport: Transport,
        request: Request,
    ) -> Result<TransactionKey, Error> {
        if request.method.is(rsip::Method::Ack) {
            return Err(Error::AckTransaction);
        }
        let via = top_via(&request.headers)?;
        let branch = branch_of(&via)?;
        let cseq = cseq_method(&request.headers)?;
        if cseq != request.method {
            return Err(Error::CSeqMethodMismatch {
                request: request.method,
                cseq,
            });
        }
        let key = TransactionKey {
            role: Role::Client,
            branch,
            method: request.method.clone(),
            sent_by: None,
        };
        if self.index.contains_key(&key) {
            return Err(Error::DuplicateTransaction(key));
        }
        let peer = Peer {
            address: destination,
            transport,
        };
        let mut out = Out {
            transmits: &mut self.transmits,
            events: &mut self.events,
        };
        let transaction = if request.method.is(rsip::Method::Invite) {
            Transaction::InviteClient(ClientInvite::start(
                now,
                &self.config,
                key.clone(),
                peer,
                request,
                &mut out,
            ))
        } else {
            Transaction::NonInviteClient(ClientNonInvite::start(
                now,
                &self.config,
                key.clone(),
                peer,
                request,
                &mut out,
            ))
        };
        self.insert(key.clone(), transaction);
        Ok(key)
    }

    /// Sends a response on a server transaction, to the request's source.
    ///
    /// # Errors
    ///
    /// The key is unknown or a client's; the status is outside 100..=699; or the state forbids
    /// it (a second final; a non-2xx after a 2xx).
    pub fn send_response(
        &mut self,
        now: Duration,
        key: &TransactionKey,
        response: Response,
    ) -> Result<(), Error> {
        if key.role == Role::Client {
            return Err(Error::NotServer(key.clone()));
        }
        let code = status_of(&response)?;
        let id = *self
            .index
            .get(key)
            .ok_or_else(|| Error::UnknownTransaction(key.clone()))?;
        let mut out = Out {
            transmits: &mut self.transmits,
            events: &mut self.events,
        };
        let result = match self.entries.get_mut(&id).map(|e| &mut e.transaction) {
            Some(Transaction::InviteServer(t)) => {
                t.send_response(now, &self.config, response, code, &mut out)
            }
            Some(Transaction::NonInviteServer(t)) => {
                t.send_response(now, &self.config, response, code, &mut out)
            }
            _ => Err(Error::UnknownTransaction(key.clone())),
        };
        self.settle(id);
        result
    }

    /// Queues a message outside any transaction: a proxy's stateless forwarding of a 2xx ACK or a
    /// stray response, or a stateless reply.
    pub fn send_stateless(
        &mut self,
        destination: SocketAddr,
        transport: Transport,
        message: SipMessage,
    ) {
        self.transmits.push_back(Transmit {
            destination,
            transport,
            contents: serialize(&message),
        });
    }

    /// The driver failed to send for `key` (RFC 3261 §17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2,
    /// "Transport Err."): the TU is told with [`Event::TransportError`] and the transaction
    /// terminates.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTransaction`] if it has terminated already.
    pub fn handle_transport_error(
        &mut self,
        _now: Duration,
        key: &TransactionKey,
    ) -> Result<(), Error> {
        let id = *self
            .index
            .get(key)
            .ok_or_else(|| Error::UnknownTransaction(key.clone()))?;
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.transaction.terminate();
        }
        self.events
            .push_back(Event::TransportError { key: key.clone() });
        self.settle(id);
        Ok(())
    }

    /// The TU gives up on a transaction (RFC 3261 §9.1: an INVITE client transaction with no
    /// final response 64·T1 after its CANCEL "SHOULD" be destroyed): it terminates at once,
    /// without [`Event::Timeout`]; only [`Event::Terminated`] follows. Responses for it arrive
    /// as [`Event::StrayResponse`] from then on.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTransaction`] if it has terminated already.
    pub fn terminate(&mut self, key: &TransactionKey) -> Result<(), Error> {
        let id = *self
            .index
            .get(key)
            .ok_or_else(|| Error::UnknownTransaction(key.clone()))?;
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.transaction.terminate();
        }
        self.settle(id);
        Ok(())
    }

    /// Fires every timer due at `now`. Call it when `now` reaches [`Self::poll_timeout`];
    /// calling it early or twice is harmless.
    pub fn handle_timeout(&mut self, now: Duration) {
        while let Some(&(deadline, id)) = self.timers.first() {
            if deadline > now {
                break;
            }
            // Unindex first: `settle` re-inserts it under its next deadline.
            self.timers.remove(&(deadline, id));
            if let Some(entry) = self.entries.get_mut(&id) {
                entry.deadline = None;
                let mut out = Out {
                    transmits: &mut self.transmits,
                    events: &mut self.events,
                };
                entry
                    .transaction
                    .handle_timeout(now, &self.config, &mut out);
            }
            self.settle(id);
        }
    }

    /// The next message to send, if any. Drain it after every call that takes `now`.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the TU, if any. Drain it after every call that takes `now`.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] must next be called; `None` if no timer is armed. Re-read it
    /// after every call that takes `now`.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.timers.first().map(|&(deadline, _)| deadline)
    }

    fn insert(&mut self, key: TransactionKey, transaction: Transaction) {
        let id = self.next_id;
        self.next_id += 1;
        self.index.insert(key.clone(), id);
        self.entries.insert(
            id,
            Entry {
                key,
                deadline: None,
                transaction,
            },
        );
        self.settle(id);
    }

    /// After any input to transaction `id`: remove it if it terminated, else re-index its timer.
    fn settle(&mut self, id: u64) {
        let Some(entry) = self.entries.get_mut(&id) else {
            return;
        };
        if entry.transaction.state() == State::Terminated {
            if let Some(deadline) = entry.deadline {
                self.timers.remove(&(deadline, id));
            }
            if let Some(entry) = self.entries.remove(&id) {
                self.index.remove(&entry.key);
                self.events.push_back(Event::Terminated { key: entry.key });
            }
            return;
        }
        let next = entry.transaction.poll_timeout();
        if next != entry.deadline {
            if let Some(old) = entry.deadline {
                self.timers.remove(&(old, id));
            }
            if let Some(new) = next {
                self.timers.insert((new, id));
            }
            entry.deadline = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_table_4() {
        let cfg = Config::default();
        assert_eq!(cfg.sixty_four_t1(), TIMER_B);
        assert_eq!(cfg.sixty_four_t1(), TIMER_F);
        assert_eq!(cfg.sixty_four_t1(), TIMER_H);
        assert_eq!(cfg.sixty_four_t1(), TIMER_J);
        assert_eq!(cfg.sixty_four_t1(), TIMER_L);
        assert_eq!(cfg.timer_d(true), Duration::ZERO);
        assert_eq!(cfg.timer_i(true), Duration::ZERO);
        assert_eq!(cfg.timer_j(true), Duration::ZERO);
        assert_eq!(cfg.timer_k(true), Duration::ZERO);
        assert_eq!(cfg.timer_k(false), T4);
    }

    #[test]
    fn reliability() {
        assert!(!is_reliable(Transport::Udp));
        assert!(is_reliable(Transport::Tcp));
        assert!(is_reliable(Transport::Tls));
        assert!(is_reliable(Transport::Ws));
    }
}
