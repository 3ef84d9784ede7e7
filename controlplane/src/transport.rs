//! SIP transports on mio: UDP sockets, TCP listeners and TCP connections driving a sans-IO SIP
//! core.
//!
//! The proxy core (`sluice_sip::proxy`) owns no socket and reads no clock: it is fed
//! `(now, local, source, transport, bytes)` and yields transmits and its next timeout, the
//! quinn-proto / str0m pattern. This module is the driver around it, behind the [`SipCore`]
//! trait so that it can be tested with a fake core and does not depend on the proxy itself.
//!
//! # The loop
//!
//! [`SipTransports::bind`] opens, for each listen address, a UDP socket and a TCP listener on the
//! same port (with port 0 both get the same ephemeral port), all registered in one mio
//! [`Poll`]. [`SipTransports::run`] then turns until `stop` is set:
//!
//! 1. fire the core's timeout if it is due ([`SipCore::handle_timeout`]) and close TCP
//!    connections that were idle (or connecting) too long;
//! 2. wait for socket events until the core's next timeout, at most
//!    [`TransportConfig::max_wait`] (so that `stop` is seen; [`TransportWaker`] ends the wait at
//!    once);
//! 3. read every ready source: UDP datagrams until `WouldBlock`, new TCP connections, TCP bytes
//!    split into messages with [`frame_stream`]; each datagram or framed message goes to
//!    [`SipCore::handle_message`];
//! 4. after each source, drain [`SipCore::poll_transmit`] and send.
//!
//! Sources are read with a budget (datagrams, bytes, accepts per turn), so that one flooding peer
//! cannot starve the others or the timers; a source whose budget ran out is read again in the
//! next turn without waiting.
//!
//! # Where messages go (RFC 3261 §18)
//!
//! - UDP goes out of the socket bound to [`OutgoingMessage::local`] if that names one, else the
//!   first socket of the destination's address family. Datagrams that cannot be sent at once
//!   (full socket buffer) are dropped: UDP transactions retransmit.
//! - TCP goes over the open connection to the destination if there is one: a response goes back
//!   over the connection its request came in on, because the core sends it to the request's
//!   source address (§18.2.2). Otherwise a non-blocking connection is opened and the message is
//!   queued until it is established. Outbound connections are bound to the IP of `local` (or of
//!   the first listener of the same family and scope) so that peers see the proxy's address.
//! - Other transports (TLS, WebSocket, SCTP) are not served here: the message is dropped,
//!   counted and reported to the core as a transport failure.
//!
//! A message that cannot be delivered (connection refused or timed out, write error, connection
//! closed with bytes unsent, write queue full, no socket for the family) is reported with
//! [`SipCore::handle_transport_failure`], the "Transport Err." of the RFC 3261 §17 state machines.
//!
//! # TCP framing and keep-alives
//!
//! Each connection has its own input buffer, capped at the stream limit
//! ([`TransportConfig::stream_limits`], [`Limits::STREAM`] by default): [`frame_stream`] reports
//! an error before the buffer grows past it. A double-CRLF ping is answered with a CRLF pong
//! (RFC 5626 §4.4.1); single CRLFs are consumed. A framing error (not SIP, message too large,
//! missing or bad Content-Length) closes the connection, since there is no way to find the next
//! message boundary; the other connections are not affected.
//!
//! # Limits and hostile input
//!
//! Nothing here panics on input. Datagrams larger than [`TransportConfig::max_datagram_len`] are
//! dropped; datagrams of only CR/LF (NAT keep-alives) are not passed on. At most
//! [`TransportConfig::max_connections`] connections are open; connections beyond are accepted
//! and closed at once, with a warning at most once a second. Idle connections are closed after
//! [`TransportConfig::idle_timeout`]. Each TCP write queue holds at most
//! [`TransportConfig::max_write_buffer`] bytes. Everything dropped or refused is counted in
//! [`TransportStats`], atomics that other threads (metrics, the API) read.
//!
//! # Not here
//!
//! The local address of a datagram received on a wildcard socket (`0.0.0.0`) is the wildcard
//! address: `IP_PKTINFO` is not used. TLS and WebSocket transports come later.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::event::Event;
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use rsip::Transport;
use sluice_sip::message::{frame_stream, Frame, FrameError, Limits};
use sluice_sip::transaction::Transmit;
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;

/// Default for [`TransportConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default for [`TransportConfig::idle_timeout`]: five minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default for [`TransportConfig::connect_timeout`]; well inside timers B and F (32 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`TransportConfig::socket_buffer`]: 4 MiB (the kernel caps it at
/// `net.core.rmem_max` / `wmem_max`).
pub const DEFAULT_SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// Default for [`TransportConfig::max_write_buffer`]: 1 MiB per connection.
pub const DEFAULT_MAX_WRITE_BUFFER: usize = 1024 * 1024;
/// Default for [`TransportConfig::max_wait`]: how often `stop` is checked.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(100);
/// Largest UDP payload there is (IPv6 without jumbograms is 65 527, IPv4 65 507); larger
/// [`TransportConfig::max_datagram_len`] values are lowered to this.
pub const MAX_UDP_PAYLOAD: usize = 65_535;
/// Backlog of each TCP listener.
pub const LISTEN_BACKLOG: i32 = 1024;

/// The waker's token; UDP sockets, listeners and connections follow.
const WAKER: Token = Token(0);
/// Datagrams read from one UDP socket per turn.
const UDP_BUDGET: usize = 256;
/// Bytes read from one connection per turn.
const TCP_READ_BUDGET: usize = 256 * 1024;
/// Connections accepted on one listener per turn.
const ACCEPT_BUDGET: usize = 64;
/// Largest single `read` on a connection.
const READ_CHUNK: usize = 64 * 1024;
/// Written bytes kept at the front of a write queue before it is compacted.
const COMPACT_AT: usize = 64 * 1024;
/// Most `handle_timeout` calls per turn (a core whose timeout stays in the past cannot hang us).
const TIMEOUT_ROUNDS: usize = 64;
/// Most rounds of transmit draining and failure reporting per call.
const DRAIN_ROUNDS: usize = 16;
/// Events taken from the poll per turn.
const EVENT_CAPACITY: usize = 1024;
/// At most one warning per this interval about refused connections.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// Attempts at finding an ephemeral port free for both UDP and TCP.
const SAME_PORT_ATTEMPTS: usize = 16;

/// The sans-IO SIP core the transports drive (the proxy; a fake one in tests).
///
/// All calls come from the thread running [`SipTransports::run`]; `now` is the run's clock.
pub trait SipCore {
    /// A datagram (UDP) or one framed message (TCP) arrived on `local` from `source`.
    fn handle_message(
        &mut self,
        now: Duration,
        local: SocketAddr,
        source: SocketAddr,
        transport: Transport,
        bytes: &[u8],
    );

    /// The time returned by [`SipCore::poll_timeout`] has come.
    fn handle_timeout(&mut self, now: Duration);

    /// The next message to send; called until `None` after every input and timeout.
    fn poll_transmit(&mut self) -> Option<OutgoingMessage>;

    /// When [`SipCore::handle_timeout`] is due, if ever.
    fn poll_timeout(&self) -> Option<Duration>;

    /// A message to `destination` over `transport` could not be delivered (RFC 3261 §17
    /// "Transport Err."; [`sluice_sip::transaction::Transactions::handle_transport_error`]).
    /// Does nothing by default: the transaction then ends by its timer.
    fn handle_transport_failure(
        &mut self,
        _now: Duration,
        _destination: SocketAddr,
        _transport: Transport,
    ) {
    }
}

/// A message the core wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Where to: the next hop for requests, the request's source for responses.
    pub destination: SocketAddr,
    /// Over which transport.
    pub transport: Transport,
    /// From which local address, if it matters (e.g. the address the request came in on);
    /// `None` lets the transports choose.
    pub local: Option<SocketAddr>,
    /// One whole SIP message.
    pub contents: Arc<[u8]>,
}

impl From<Transmit> for OutgoingMessage {
    fn from(transmit: Transmit) -> Self {
        Self {
            destination: transmit.destination,
            transport: transmit.transport,
            local: None,
            contents: transmit.contents,
        }
    }
}

/// Settings of the SIP transports.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Most TCP connections open at once, inbound and outbound together.
    pub max_connections: usize,
    /// An established connection with no bytes read or written for this long is closed.
    pub idle_timeout: Duration,
    /// An outbound connection not established within this is given up.
    pub connect_timeout: Duration,
    /// `SO_RCVBUF` and `SO_SNDBUF` of the UDP sockets (best effort).
    pub socket_buffer: usize,
    /// Largest UDP datagram passed to the core; larger ones are dropped and counted. At most
    /// [`MAX_UDP_PAYLOAD`].
    pub max_datagram_len: usize,
    /// Framing limits of TCP streams; the input buffer of a connection never holds more than
    /// `max_message_len + 1` bytes.
    pub stream_limits: Limits,
    /// Most bytes queued for writing on one connection; a message that would exceed it is
    /// dropped (unless the queue is empty).
    pub max_write_buffer: usize,
    /// Longest wait for events, which bounds how late `stop` is seen.
    pub max_wait: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            socket_buffer: DEFAULT_SOCKET_BUFFER,
            max_datagram_len: Limits::UDP.max_message_len.min(MAX_UDP_PAYLOAD),
            stream_limits: Limits::STREAM,
            max_write_buffer: DEFAULT_MAX_WRITE_BUFFER,
            max_wait: DEFAULT_MAX_WAIT,
        }
    }
}

/// Errors of the transports themselves; a peer's faults are counted, not returned.
#[derive(Debug, Error)]
pub enum TransportError {
    /// [`SipTransports::bind`] got no address.
    #[error("no SIP listen address given")]
    NoListenAddress,
    /// The event poll (epoll) could not be created.
    #[error("creating the event poll: {0}")]
    Poll(#[source] io::Error),
    /// A UDP socket could not be opened or bound.
    #[error("binding SIP UDP {addr}: {source}")]
    BindUdp {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A TCP listener could not be opened or bound.
    #[error("listening on SIP TCP {addr}: {source}")]
    BindTcp {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A socket could not be registered with the event poll.
    #[error("registering SIP socket {addr} with the event poll: {source}")]
    Register {
        /// The socket's address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Waiting for events failed.
    #[error("waiting for SIP socket events: {0}")]
    Wait(#[source] io::Error),
}

macro_rules! stats {
    ($( $(#[doc = $doc:literal])* $name:ident, )*) => {
        /// Counters of the transports, updated by the run loop and readable from any thread
        /// (relaxed atomics: each is exact, they are not a consistent snapshot together).
        #[derive(Debug, Default)]
        pub struct TransportStats {
            $( $(#[doc = $doc])* pub $name: AtomicU64, )*
        }

        /// The values of [`TransportStats`] at one moment.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct TransportStatsSnapshot {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        impl TransportStats {
            /// Reads every counter.
            pub fn snapshot(&self) -> TransportStatsSnapshot {
                TransportStatsSnapshot {
                    $( $name: self.$name.load(Ordering::Relaxed), )*
                }
            }
        }
    };
}

stats! {
    /// UDP datagrams passed to the core.
    udp_received,
    /// UDP datagrams of only CR/LF (NAT keep-alives), not passed on.
    udp_keepalives,
    /// UDP datagrams dropped for being larger than `max_datagram_len`.
    udp_oversize,
    /// Errors receiving on a UDP socket.
    udp_recv_errors,
    /// UDP datagrams sent.
    udp_sent,
    /// UDP datagrams not sent (socket buffer full, send error, no socket of the family).
    udp_send_errors,
    /// TCP connections accepted.
    tcp_accepted,
    /// TCP connections refused (closed at once) because `max_connections` were open.
    tcp_refused,
    /// Errors accepting TCP connections (e.g. out of file descriptors).
    tcp_accept_errors,
    /// Outbound TCP connections attempted.
    tcp_connects,
    /// Outbound TCP connections that failed, timed out or were not attempted (limit reached).
    tcp_connect_failures,
    /// TCP connections open now (a gauge).
    tcp_open,
    /// TCP connections closed, for any reason.
    tcp_closed,
    /// TCP connections closed for being idle.
    tcp_idle_closed,
    /// SIP messages framed on TCP and passed to the core.
    tcp_received,
    /// CRLF keep-alives received on TCP (pings and pongs).
    tcp_keepalives,
    /// TCP connections closed because the stream could not be framed (garbage, too large,
    /// bad Content-Length).
    tcp_framing_errors,
    /// TCP connections closed by a read or write error (reset, broken pipe).
    tcp_io_errors,
    /// SIP messages queued on TCP connections.
    tcp_sent,
    /// SIP messages not sent on TCP (write queue full, connection failed before sending).
    tcp_send_dropped,
    /// Messages for a transport served elsewhere or not at all (TLS, WebSocket, SCTP).
    unsupported_transport,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Ends the wait of a running [`SipTransports::run`] from another thread (after setting its
/// `stop` flag, say).
#[derive(Clone, Debug)]
pub struct TransportWaker(Arc<Waker>);

impl TransportWaker {
    /// Wakes the loop.
    ///
    /// # Errors
    ///
    /// The eventfd write failed (which does not happen on a live poll).
    pub fn wake(&self) -> io::Result<()> {
        self.0.wake()
    }
}

/// A UDP socket and the address it is bound to.
struct UdpEndpoint {
    socket: UdpSocket,
    local: SocketAddr,
}

/// A TCP listener and the address it is bound to.
struct ListenEndpoint {
    listener: TcpListener,
    local: SocketAddr,
}

/// Where a TCP connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnState {
    /// Outbound, connect in progress since the time given.
    Connecting { since: Duration },
    /// Established.
    Open,
}

/// One TCP connection, inbound or outbound.
struct Connection {
    stream: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    state: ConnState,
    /// Bytes read and not yet framed (at most `max_message_len + 1`).
    input: Vec<u8>,
    /// Bytes to write; `output[written..]` is pending.
    output: Vec<u8>,
    written: usize,
    /// Last time bytes were read or written (or the connection was established).
    last_activity: Duration,
}

impl Connection {
    fn unsent(&self) -> usize {
        self.output.len().saturating_sub(self.written)
    }
}

/// Why a connection is closed.
#[derive(Debug)]
enum CloseReason {
    PeerClosed,
    Idle,
    Framing(FrameError),
    Read(io::Error),
    Write(io::Error),
    ConnectFailed(io::Error),
    ConnectTimeout,
}

/// What a token stands for.
#[derive(Clone, Copy, Debug)]
enum Source {
    Waker,
    Udp(usize),
    Listener(usize),
    Connection,
}

/// Rate limit of the refusal warning.
#[derive(Default)]
struct RefusalLog {
    last: Option<Duration>,
    unreported: u64,
}

/// The SIP sockets and connections, and the loop that drives a [`SipCore`] with them.
pub struct SipTransports {
    poll: Poll,
    waker: Arc<Waker>,
    config: TransportConfig,
    udp: Vec<UdpEndpoint>,
    listeners: Vec<ListenEndpoint>,
    locals: Vec<SocketAddr>,
    connections: HashMap<Token, Connection>,
    /// The connection to use for each peer address (the latest one).
    by_peer: HashMap<SocketAddr, Token>,
    /// Tokens are never reused, so a stale event cannot reach a new connection.
    next_token: usize,
    /// Sources to read in the next turn (readable, or budget ran out).
    ready: Vec<Token>,
    /// Connections whose peer closed, to flush and close after the core answered.
    closing: Vec<Token>,
    /// Undeliverable messages to report to the core.
    failed: Vec<(SocketAddr, Transport)>,
    /// Receive buffer for datagrams and TCP reads.
    scratch: Vec<u8>,
    stats: Arc<TransportStats>,
    refusals: RefusalLog,
    next_sweep: Duration,
}

impl SipTransports {
    /// Opens a UDP socket and a TCP listener on each of `listen` (the same port for both;
    /// with port 0, the same ephemeral port) and registers them in one poll.
    ///
    /// # Errors
    ///
    /// No address, or a socket could not be opened, bound or registered.
    pub fn bind(listen: &[SocketAddr], config: TransportConfig) -> Result<Self, TransportError> {
        if listen.is_empty() {
            return Err(TransportError::NoListenAddress);
        }
        let mut config = config;
        config.max_datagram_len = config.max_datagram_len.min(MAX_UDP_PAYLOAD);
        let poll = Poll::new().map_err(TransportError::Poll)?;
        let waker = Waker::new(poll.registry(), WAKER).map_err(TransportError::Poll)?;
        let count = listen.len();
        let mut udp = Vec::with_capacity(count);
        let mut listeners = Vec::with_capacity(count);
        let mut locals = Vec::with_capacity(count);
        for (index, &addr) in listen.iter().enumerate() {
            let (socket, listener, local) = bind_pair(addr, config.socket_buffer)?;
            let mut socket = UdpSocket::from_std(socket);
            let mut listener = TcpListener::from_std(listener);
            let register = |source: io::Error| TransportError::Register {
                addr: local,
                source,
            };
            poll.registry()
                .register(&mut socket, Token(1 + index), Interest::READABLE)
                .map_err(register)?;
            poll.registry()
                .register(&mut listener, Token(1 + count + index), Interest::READABLE)
                .map_err(register)?;
            tracing::info!(%local, "SIP listening on UDP and TCP");
            udp.push(UdpEndpoint { socket, local });
            listeners.push(ListenEndpoint { listener, local });
            locals.push(local);
        }
        let scratch = vec![0; (config.max_datagram_len + 1).max(READ_CHUNK)];
        Ok(Self {
            poll,
            waker: Arc::new(waker),
            config,
            udp,
            listeners,
            locals,
            connections: HashMap::new(),
            by_peer: HashMap::new(),
            next_token: 1 + 2 * count,
            ready: Vec::new(),
            closing: Vec::new(),
            failed: Vec::new(),
            scratch,
            stats: Arc::new(TransportStats::default()),
            refusals: RefusalLog::default(),
            next_sweep: Duration::ZERO,
        })
    }

    /// The bound addresses, one per listen address in order (UDP and TCP share each).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.locals
    }

    /// The counters, shared with the loop.
    pub fn stats(&self) -> Arc<TransportStats> {
        Arc::clone(&self.stats)
    }

    /// A handle that ends the loop's current wait.
    pub fn waker(&self) -> TransportWaker {
        TransportWaker(Arc::clone(&self.waker))
    }

    /// Drives `core` until `stop` is set (checked at least every
    /// [`TransportConfig::max_wait`], at once after a [`TransportWaker::wake`]). `clock` is the
    /// monotonic `now` given to the core (e.g. `sluice_dataplane::monotonic_now`).
    ///
    /// Connections stay open when it returns; calling it again resumes.
    ///
    /// # Errors
    ///
    /// Only if waiting for events fails (not on `EINTR`); peers' faults are counted instead.
    pub fn run<C, F>(
        &mut self,
        core: &mut C,
        stop: &AtomicBool,
        clock: F,
    ) -> Result<(), TransportError>
    where
        C: SipCore + ?Sized,
        F: Fn() -> Duration,
    {
        let mut events = Events::with_capacity(EVENT_CAPACITY);
        loop {
            if stop.load(Ordering::Acquire) {
                return Ok(());
            }
            let now = clock();
            self.drain(core, now);
            self.fire_timeouts(core, now);
            if now >= self.next_sweep {
                self.sweep(now);
                self.next_sweep = now + self.sweep_interval();
                self.drain(core, now);
            }
            let wait = self.wait(core, now);
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(TransportError::Wait(e));
            }
            let now = clock();
            for event in events.iter() {
                self.on_event(event, now);
            }
            self.read_ready(core, now);
        }
    }

    // ---- the turn -----------------------------------------------------------------------

    /// Calls `handle_timeout` while the core's timeout is due.
    fn fire_timeouts<C: SipCore + ?Sized>(&mut self, core: &mut C, now: Duration) {
        for _ in 0..TIMEOUT_ROUNDS {
            match core.poll_timeout() {
                Some(at) if at <= now => {
                    core.handle_timeout(now);
                    self.drain(core, now);
                }
                _ => return,
            }
        }
    }

    /// How long to wait for events.
    fn wait<C: SipCore + ?Sized>(&self, core: &C, now: Duration) -> Duration {
        if !self.ready.is_empty() || !self.closing.is_empty() {
            return Duration::ZERO;
        }
        let mut wait = self
            .config
            .max_wait
            .min(self.next_sweep.saturating_sub(now));
        if let Some(at) = core.poll_timeout() {
            // A timeout still due after TIMEOUT_ROUNDS calls: do not spin on it.
            let until = at.saturating_sub(now).max(Duration::from_millis(1));
            wait = wait.min(until);
        }
        wait
    }

    /// How often idle and connect timeouts are checked.
    fn sweep_interval(&self) -> Duration {
        (self.config.idle_timeout.min(self.config.connect_timeout) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    fn source(&self, token: Token) -> Source {
        let n = self.udp.len();
        match token.0 {
            0 => Source::Waker,
            t if t <= n => Source::Udp(t - 1),
            t if t <= 2 * n => Source::Listener(t - 1 - n),
            _ => Source::Connection,
        }
    }

    /// Notes what an event makes ready; completes connects and flushes writes at once.
    fn on_event(&mut self, event: &Event, now: Duration) {
        let token = event.token();
        match self.source(token) {
            Source::Waker => {}
            Source::Udp(_) | Source::Listener(_) => self.ready.push(token),
            Source::Connection => {
                // Connect completion and write space; a no-op on anything else.
                self.on_writable(token, now);
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.ready.push(token);
                }
            }
        }
    }

    /// Reads each ready source within its budget, draining the core after each.
    fn read_ready<C: SipCore + ?Sized>(&mut self, core: &mut C, now: Duration) {
        let batch = std::mem::take(&mut self.ready);
        for token in batch {
            let more = match self.source(token) {
                Source::Waker => false,
                Source::Udp(index) => self.read_udp(index, core, now),
                Source::Listener(index) => self.accept(index, now),
                Source::Connection => self.read_connection(token, core, now),
            };
            if more {
                self.ready.push(token);
            }
            self.drain(core, now);
        }
    }

    /// Sends what the core has to send, closes connections whose peer left, and reports
    /// failures (which may make the core send more).
    fn drain<C: SipCore + ?Sized>(&mut self, core: &mut C, now: Duration) {
        for _ in 0..DRAIN_ROUNDS {
            while let Some(message) = core.poll_transmit() {
                self.send(message, now);
            }
            for token in std::mem::take(&mut self.closing) {
                self.flush(token, now);
                self.close(token, CloseReason::PeerClosed);
            }
            if self.failed.is_empty() {
                return;
            }
            for (destination, transport) in std::mem::take(&mut self.failed) {
                core.handle_transport_failure(now, destination, transport);
            }
        }
    }

    // ---- UDP ----------------------------------------------------------------------------

    /// Reads datagrams until `WouldBlock`; true if the budget ran out first.
    fn read_udp<C: SipCore + ?Sized>(&mut self, index: usize, core: &mut C, now: Duration) -> bool {
        let Some(endpoint) = self.udp.get(index) else {
            return false;
        };
        let max = self.config.max_datagram_len;
        // One byte more than the limit: a datagram that fills it was truncated, so too large.
        let Some(buffer) = self.scratch.get_mut(..max + 1) else {
            return false;
        };
        for _ in 0..UDP_BUDGET {
            match endpoint.socket.recv_from(buffer) {
                Ok((len, source)) => {
                    if len > max {
                        bump(&self.stats.udp_oversize);
                        tracing::debug!(%source, local = %endpoint.local, max, "SIP datagram too large, dropped");
                        continue;
                    }
                    let bytes = &buffer[..len];
                    if bytes.iter().all(|&b| b == b'\r' || b == b'\n') {
                        bump(&self.stats.udp_keepalives);
                        continue;
                    }
                    bump(&self.stats.udp_received);
                    core.handle_message(now, endpoint.local, source, Transport::Udp, bytes);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    bump(&self.stats.udp_recv_errors);
                    tracing::debug!(local = %endpoint.local, error = %e, "SIP UDP receive");
                }
            }
        }
        true
    }

    /// Sends a datagram from the socket `local` names, else the first of the family.
    fn send_udp(&mut self, message: &OutgoingMessage) {
        let destination = message.destination;
        let endpoint = message
            .local
            .and_then(|local| self.udp.iter().find(|e| e.local == local))
            .or_else(|| {
                self.udp
                    .iter()
                    .find(|e| e.local.is_ipv4() == destination.is_ipv4())
            });
        let Some(endpoint) = endpoint else {
            bump(&self.stats.udp_send_errors);
            tracing::debug!(%destination, "no SIP UDP socket of this address family");
            self.failed.push((destination, Transport::Udp));
            return;
        };
        match endpoint.socket.send_to(&message.contents, destination) {
            Ok(n) if n == message.contents.len() => bump(&self.stats.udp_sent),
            Ok(n) => {
                bump(&self.stats.udp_send_errors);
                tracing::debug!(%destination, sent = n, len = message.contents.len(), "SIP datagram truncated");
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // The socket buffer is full; UDP transactions retransmit.
                bump(&self.stats.udp_send_errors);
            }
            Err(e) => {
                bump(&self.stats.udp_send_errors);
                tracing::debug!(%destination, local = %endpoint.local, error = %e, "SIP UDP send");
                self.failed.push((destination, Transport::Udp));
            }
        }
    }

    // ---- TCP: connections ---------------------------------------------------------------

    /// Accepts connections until `WouldBlock`; true if the budget ran out first.
    fn accept(&mut self, index: usize, now: Duration) -> bool {
        for _ in 0..ACCEPT_BUDGET {
            let Some(endpoint) = self.listeners.get(index) else {
                return false;
            };
            let listen_local = endpoint.local;
            match endpoint.listener.accept() {
                Ok((stream, peer)) => {
                    if self.connections.len() >= self.config.max_connections {
                        self.refuse(peer, now);
                        drop(stream);
                        continue;
                    }
                    let local = stream.local_addr().unwrap_or(listen_local);
                    if self
                        .adopt(stream, local, peer, ConnState::Open, now)
                        .is_some()
                    {
                        bump(&self.stats.tcp_accepted);
                        tracing::debug!(%peer, %local, "SIP TCP connection accepted");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // E.g. EMFILE: the connection stays in the backlog until the next event.
                    bump(&self.stats.tcp_accept_errors);
                    tracing::warn!(local = %listen_local, error = %e, "accepting a SIP TCP connection");
                    return false;
                }
            }
        }
        true
    }

    /// Counts a refused connection and warns, at most once per [`REFUSAL_LOG_INTERVAL`].
    fn refuse(&mut self, peer: SocketAddr, now: Duration) {
        bump(&self.stats.tcp_refused);
        self.refusals.unreported += 1;
        let due = self
            .refusals
            .last
            .is_none_or(|last| now.saturating_sub(last) >= REFUSAL_LOG_INTERVAL);
        if due {
            tracing::warn!(
                %peer,
                open = self.connections.len(),
                max_connections = self.config.max_connections,
                refused = self.refusals.unreported,
                "refusing SIP TCP connections: the connection limit is reached"
            );
            self.refusals.last = Some(now);
            self.refusals.unreported = 0;
        }
    }

    /// Registers a connection; `None` (and the stream closed) if registration fails.
    fn adopt(
        &mut self,
        mut stream: TcpStream,
        local: SocketAddr,
        peer: SocketAddr,
        state: ConnState,
        now: Duration,
    ) -> Option<Token> {
        let token = Token(self.next_token);
        self.next_token += 1;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "TCP_NODELAY");
        }
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(%peer, error = %e, "registering a SIP TCP connection");
            return None;
        }
        self.connections.insert(
            token,
            Connection {
                stream,
                local,
                peer,
                state,
                input: Vec::new(),
                output: Vec::new(),
                written: 0,
                last_activity: now,
            },
        );
        self.by_peer.insert(peer, token);
        self.update_open();
        Some(token)
    }

    /// Opens an outbound connection to `destination`.
    fn connect(
        &mut self,
        destination: SocketAddr,
        local: Option<SocketAddr>,
        now: Duration,
    ) -> Option<Token> {
        if self.connections.len() >= self.config.max_connections {
            bump(&self.stats.tcp_connect_failures);
            tracing::warn!(
                %destination,
                max_connections = self.config.max_connections,
                "not connecting over SIP TCP: the connection limit is reached"
            );
            return None;
        }
        bump(&self.stats.tcp_connects);
        let source = self.outbound_source(destination, local);
        match open_stream(destination, source) {
            Ok(stream) => {
                let local = stream
                    .local_addr()
                    .unwrap_or_else(|_| unspecified_like(destination));
                tracing::debug!(%destination, ?source, "SIP TCP connecting");
                self.adopt(
                    stream,
                    local,
                    destination,
                    ConnState::Connecting { since: now },
                    now,
                )
            }
            Err(e) => {
                bump(&self.stats.tcp_connect_failures);
                tracing::debug!(%destination, error = %e, "SIP TCP connect");
                None
            }
        }
    }

    /// The IP an outbound connection binds to: `local`'s, else a listener's of the same family
    /// and scope (loopback or not), else the kernel's choice.
    fn outbound_source(
        &self,
        destination: SocketAddr,
        local: Option<SocketAddr>,
    ) -> Option<IpAddr> {
        let fits = |ip: &IpAddr| !ip.is_unspecified() && ip.is_ipv4() == destination.is_ipv4();
        local.map(|l| l.ip()).filter(fits).or_else(|| {
            self.locals
                .iter()
                .map(SocketAddr::ip)
                .filter(fits)
                .find(|ip| ip.is_loopback() == destination.ip().is_loopback())
        })
    }

    /// Completes a connect, then writes what is queued.
    fn on_writable(&mut self, token: Token, now: Duration) {
        let Some(conn) = self.connections.get_mut(&token) else {
            return;
        };
        if let ConnState::Connecting { .. } = conn.state {
            match connect_result(&conn.stream) {
                None => return,
                Some(Err(e)) => {
                    self.close(token, CloseReason::ConnectFailed(e));
                    return;
                }
                Some(Ok(())) => {
                    conn.state = ConnState::Open;
                    conn.last_activity = now;
                    if let Ok(local) = conn.stream.local_addr() {
                        conn.local = local;
                    }
                    tracing::debug!(peer = %conn.peer, local = %conn.local, "SIP TCP connected");
                }
            }
        }
        self.flush(token, now);
    }

    /// Queues a message on the connection to its destination, connecting if there is none.
    fn send_tcp(&mut self, message: &OutgoingMessage, now: Duration) {
        let destination = message.destination;
        let existing = self
            .by_peer
            .get(&destination)
            .copied()
            .filter(|token| self.connections.contains_key(token));
        let token = match existing {
            Some(token) => token,
            None => match self.connect(destination, message.local, now) {
                Some(token) => token,
                None => {
                    bump(&self.stats.tcp_send_dropped);
                    self.failed.push((destination, Transport::Tcp));
                    return;
                }
            },
        };
        let Some(conn) = self.connections.get_mut(&token) else {
            return;
        };
        let queued = conn.unsent();
        if queued > 0 && queued + message.contents.len() > self.config.max_write_buffer {
            bump(&self.stats.tcp_send_dropped);
            tracing::debug!(%destination, queued, "SIP TCP write queue full, message dropped");
            self.failed.push((destination, Transport::Tcp));
            return;
        }
        conn.output.extend_from_slice(&message.contents);
        bump(&self.stats.tcp_sent);
        if conn.state == ConnState::Open {
            self.flush(token, now);
        }
    }

    /// Writes queued bytes until done or `WouldBlock`; closes the connection on errors.
    fn flush(&mut self, token: Token, now: Duration) {
        let Some(conn) = self.connections.get_mut(&token) else {
            return;
        };
        if conn.state != ConnState::Open {
            return;
        }
        let error = loop {
            let pending = conn.output.get(conn.written..).unwrap_or_default();
            if pending.is_empty() {
                break None;
            }
            match conn.stream.write(pending) {
                Ok(0) => break Some(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    conn.written += n;
                    conn.last_activity = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e),
            }
        };
        if conn.written >= conn.output.len() {
            conn.output.clear();
            conn.written = 0;
        } else if conn.written >= COMPACT_AT {
            conn.output.drain(..conn.written);
            conn.written = 0;
        }
        if let Some(e) = error {
            self.close(token, CloseReason::Write(e));
        }
    }

    /// Reads and frames until `WouldBlock`; true if the budget ran out first.
    fn read_connection<C: SipCore + ?Sized>(
        &mut self,
        token: Token,
        core: &mut C,
        now: Duration,
    ) -> bool {
        let limits = self.config.stream_limits;
        // frame_stream fails once the buffer holds more than the limit without a whole
        // message, so after framing it holds at most max_message_len bytes and there is room.
        let cap = limits.max_message_len.saturating_add(1);
        let mut budget = TCP_READ_BUDGET;
        let reason = loop {
            let Some(conn) = self.connections.get_mut(&token) else {
                return false;
            };
            if conn.state != ConnState::Open {
                return false;
            }
            let room = cap.saturating_sub(conn.input.len()).clamp(1, READ_CHUNK);
            let Some(buffer) = self.scratch.get_mut(..room) else {
                return false;
            };
            match conn.stream.read(buffer) {
                Ok(0) => {
                    conn.last_activity = now;
                    // Flushed and closed after the core has answered what came before.
                    self.closing.push(token);
                    return false;
                }
                Ok(n) => {
                    conn.input.extend_from_slice(&buffer[..n]);
                    conn.last_activity = now;
                    if let Err(e) = frame_input(conn, core, now, &limits, &self.stats) {
                        break CloseReason::Framing(e);
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        self.flush(token, now);
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.flush(token, now);
                    return false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break CloseReason::Read(e),
            }
        };
        self.close(token, reason);
        false
    }

    /// Closes idle connections and connects that take too long.
    fn sweep(&mut self, now: Duration) {
        let idle = self.config.idle_timeout;
        let connect = self.config.connect_timeout;
        let expired: Vec<(Token, bool)> = self
            .connections
            .iter()
            .filter_map(|(&token, conn)| match conn.state {
                ConnState::Connecting { since } if now.saturating_sub(since) >= connect => {
                    Some((token, false))
                }
                ConnState::Open if now.saturating_sub(conn.last_activity) >= idle => {
                    Some((token, true))
                }
                _ => None,
            })
            .collect();
        for (token, is_idle) in expired {
            let reason = if is_idle {
                CloseReason::Idle
            } else {
                CloseReason::ConnectTimeout
            };
            self.close(token, reason);
        }
    }

    /// Removes a connection, counts why, and reports unsent bytes as a failure.
    fn close(&mut self, token: Token, reason: CloseReason) {
        let Some(mut conn) = self.connections.remove(&token) else {
            return;
        };
        if let Err(e) = self.poll.registry().deregister(&mut conn.stream) {
            tracing::debug!(peer = %conn.peer, error = %e, "deregistering a SIP TCP connection");
        }
        if self.by_peer.get(&conn.peer) == Some(&token) {
            self.by_peer.remove(&conn.peer);
        }
        bump(&self.stats.tcp_closed);
        let peer = conn.peer;
        match &reason {
            CloseReason::PeerClosed => {}
            CloseReason::Idle => bump(&self.stats.tcp_idle_closed),
            CloseReason::Framing(_) => bump(&self.stats.tcp_framing_errors),
            CloseReason::Read(_) | CloseReason::Write(_) => bump(&self.stats.tcp_io_errors),
            CloseReason::ConnectFailed(_) | CloseReason::ConnectTimeout => {
                bump(&self.stats.tcp_connect_failures);
            }
        }
        tracing::debug!(%peer, local = %conn.local, ?reason, "SIP TCP connection closed");
        if conn.unsent() > 0 {
            bump(&self.stats.tcp_send_dropped);
            self.failed.push((peer, Transport::Tcp));
        }
        self.update_open();
    }

    fn update_open(&self) {
        let open = u64::try_from(self.connections.len()).unwrap_or(u64::MAX);
        self.stats.tcp_open.store(open, Ordering::Relaxed);
    }

    /// Sends one message of the core.
    fn send(&mut self, message: OutgoingMessage, now: Duration) {
        match message.transport {
            Transport::Udp => self.send_udp(&message),
            Transport::Tcp => self.send_tcp(&message, now),
            other => {
                bump(&self.stats.unsupported_transport);
                tracing::debug!(destination = %message.destination, transport = ?other, "SIP transport not served, message dropped");
                self.failed.push((message.destination, other));
            }
        }
    }
}

/// Splits a connection's input into keep-alives and messages, passing messages to the core and
/// queueing pongs. Consumes what it framed, also when it fails.
fn frame_input<C: SipCore + ?Sized>(
    conn: &mut Connection,
    core: &mut C,
    now: Duration,
    limits: &Limits,
    stats: &TransportStats,
) -> Result<(), FrameError> {
    let mut consumed = 0;
    let result = loop {
        let rest = conn.input.get(consumed..).unwrap_or_default();
        match frame_stream(rest, limits) {
            Ok(None) => break Ok(()),
            Ok(Some(Frame::KeepAlive { len, pong })) => {
                bump(&stats.tcp_keepalives);
                if pong {
                    conn.output.extend_from_slice(b"\r\n");
                }
                consumed += len.max(1);
            }
            Ok(Some(Frame::Message { len })) => {
                let Some(message) = rest.get(..len) else {
                    break Ok(());
                };
                bump(&stats.tcp_received);
                core.handle_message(now, conn.local, conn.peer, Transport::Tcp, message);
                consumed += len.max(1);
            }
            Err(e) => break Err(e),
        }
    };
    conn.input.drain(..consumed.min(conn.input.len()));
    result
}

/// Whether a non-blocking connect finished: `None` while in progress.
fn connect_result(stream: &TcpStream) -> Option<io::Result<()>> {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => return Some(Err(e)),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => Some(Ok(())),
        Err(e)
            if e.kind() == io::ErrorKind::NotConnected
                || e.raw_os_error() == Some(libc::EINPROGRESS) =>
        {
            None
        }
        Err(e) => Some(Err(e)),
    }
}

/// `0.0.0.0:0` or `[::]:0`, matching `addr`'s family.
fn unspecified_like(addr: SocketAddr) -> SocketAddr {
    let ip = if addr.is_ipv4() {
        IpAddr::from([0u8; 4])
    } else {
        IpAddr::from([0u16; 8])
    };
    SocketAddr::new(ip, 0)
}

/// Starts a non-blocking connect, from `source` if given.
fn open_stream(destination: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(destination),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&destination.into()) {
        Ok(()) => {}
        Err(e)
            if e.raw_os_error() == Some(libc::EINPROGRESS)
                || e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// A UDP socket and a TCP listener on the same address; with port 0, on the same ephemeral port.
fn bind_pair(
    addr: SocketAddr,
    buffer: usize,
) -> Result<(std::net::UdpSocket, std::net::TcpListener, SocketAddr), TransportError> {
    let bind_udp = |addr: SocketAddr| {
        let socket =
            udp_socket(addr, buffer).map_err(|source| TransportError::BindUdp { addr, source })?;
        let local = socket
            .local_addr()
            .map_err(|source| TransportError::BindUdp { addr, source })?;
        Ok::<_, TransportError>((socket, local))
    };
    if addr.port() != 0 {
        let (socket, local) = bind_udp(addr)?;
        let listener =
            tcp_listener(addr).map_err(|source| TransportError::BindTcp { addr, source })?;
        return Ok((socket, listener, local));
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (socket, local) = bind_udp(addr)?;
        match tcp_listener(local) {
            Ok(listener) => return Ok((socket, listener, local)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && attempt < SAME_PORT_ATTEMPTS => {}
            Err(source) => {
                return Err(TransportError::BindTcp {
                    addr: local,
                    source,
                })
            }
        }
    }
}

/// A non-blocking UDP socket with `SO_REUSEADDR` and big buffers (IPv6 sockets are v6-only, so
/// `0.0.0.0` and `[::]` can both be listed).
fn udp_socket(addr: SocketAddr, buffer: usize) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    // Best effort: without CAP_NET_ADMIN the kernel caps these at rmem_max / wmem_max.
    if let Err(e) = socket.set_recv_buffer_size(buffer) {
        tracing::debug!(%addr, error = %e, "SO_RCVBUF");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer) {
        tracing::debug!(%addr, error = %e, "SO_SNDBUF");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A non-blocking TCP listener with `SO_REUSEADDR`.
fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests;
