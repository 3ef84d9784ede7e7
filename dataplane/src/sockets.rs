//! The portable forwarding path: plain UDP sockets, `recvmmsg`/`sendmmsg`, no privileges.
//!
//! # Design
//!
//! * **One thin mio loop.** [`SocketRelay::start`] spawns one worker thread, `sluice-sockets`,
//!   that owns every relay socket and the rule table. It blocks in `epoll_wait` (mio's `Poll`)
//!   while idle; there is no busy loop. The control plane talks to it over a crossbeam channel
//!   and wakes it with a [`mio::Waker`]; each command carries its own reply channel.
//! * **A pure per-datagram function.** Everything the XDP program decides per packet (latching
//!   and teaching the reverse rule, strict source, pending destination, unknown port, counting)
//!   lives in [`process`], which touches no socket and is unit-tested and benchmarked on its own.
//!   The loop around it only moves bytes.
//! * **Atomics for counters.** Per-stream counters are an `Arc<`[`StreamCells`]`>` of relaxed
//!   `AtomicU64`s and the global ones a [`RelayCounters`] array indexed like [`Counter`]. Only the
//!   worker writes them; the control plane reads them at any time without stopping it. A stream's
//!   cells are created at install, so its counters start at zero and, as with XDP, never go back.
//!   The latched peer is an atomic too, written only when a leg latches.
//! * **Why `recvmmsg`/`sendmmsg`.** At RTP rates the cost is in system calls, not in copying 200
//!   bytes. One `recvmmsg` drains up to `batch` datagrams from a socket and the forwarded ones
//!   leave in one `sendmmsg` per source socket, straight from the receive buffers (each message
//!   carries its own destination). A quiet socket costs one `recvmmsg` and one `sendmmsg` per
//!   wake-up; a busy one amortises both over the batch.
//!
//! # Sockets and namespaces
//!
//! Each rule needs a socket bound exactly to its `local` address (where its packets arrive) and
//! one bound to its `source` (where the relay sends them from; normally the reverse rule's
//! `local`). Sockets are shared per address with a reference count, so a bidirectional stream
//! uses two sockets; a one-way stream still binds its source, and a datagram arriving there is
//! dropped as [`Counter::DropUnknownPort`], as XDP drops a packet to a relay port with no rule.
//!
//! **Sockets are created and bound in the thread that calls [`Forwarder::install`] or
//! [`Forwarder::update`]**, then handed to the worker. So they belong to the caller's network
//! namespace: a test can call `install` from inside [`NetNs::run`](crate::netns::NetNs::run)
//! while the worker thread lives in the namespace the relay was started in.
//!
//! # Where this path differs from XDP
//!
//! * Forwarded packets are counted as [`Counter::Tx`] once `sendmmsg` has taken them. Per-stream
//!   counters count the packets [`process`] accepted for forwarding (XDP counts them at its
//!   verdict too); a send that fails afterwards shows in the global drop counters only.
//! * When a source socket's send buffer is full (`EAGAIN`), the rest of the batch goes to a small
//!   per-socket backlog (at most [`SocketRelayConfig::backlog`] datagrams) and the socket is
//!   registered for writability; packets beyond the backlog are dropped and counted as
//!   [`Counter::DropNoTxPort`] (the socket analogue of "cannot transmit"). Other send errors count
//!   as [`Counter::DropTooBig`] (`EMSGSIZE`) or [`Counter::DropNoRoute`] (anything else).
//! * A datagram larger than [`SocketRelayConfig::max_datagram`] is truncated by the kernel; it
//!   is dropped as [`Counter::DropTooBig`].

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{debug, info, warn};

use crate::{
    monotonic_now, BackendKind, Counter, CounterSnapshot, DataplaneError, Forwarder,
    StreamCounters, StreamId, StreamRule,
};

const COUNTERS: usize = Counter::ALL.len();
const WAKER: Token = Token(usize::MAX);
/// How long the control plane waits for the worker to answer a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long dropping a [`SocketRelay`] waits for its worker to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// `recvmmsg` calls per socket per turn before the next ready socket gets its turn.
const DRAIN_BUDGET: usize = 16;
/// The kernel's limit on messages per `recvmmsg`/`sendmmsg` (`UIO_MAXIOV`).
const MAX_BATCH: usize = 1024;

/// Configuration of a [`SocketRelay`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketRelayConfig {
    /// Worker threads. Only 1 is supported: a latching leg teaches its reverse rule, which
    /// sharding by port would put on another thread.
    pub workers: usize,
    /// Datagrams per `recvmmsg`/`sendmmsg` (1 to 1024).
    pub batch: usize,
    /// Receive buffer of every relay socket in bytes (0: the system default). As root the
    /// relay uses `SO_RCVBUFFORCE`, otherwise `SO_RCVBUF`, which `net.core.rmem_max` caps.
    pub recv_buffer: usize,
    /// Send buffer of every relay socket in bytes (0: the system default); as `recv_buffer`.
    pub send_buffer: usize,
    /// Largest datagram relayed, in bytes; a larger one is dropped as [`Counter::DropTooBig`].
    pub max_datagram: usize,
    /// Datagrams kept per source socket while its send buffer is full; beyond them, drops.
    pub backlog: usize,
}

impl Default for SocketRelayConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            batch: 32,
            recv_buffer: 4 << 20,
            send_buffer: 4 << 20,
            max_datagram: 2048,
            backlog: 1024,
        }
    }
}

/// One stream's counters, written only by the worker, read by anyone (relaxed).
#[derive(Debug, Default)]
pub struct StreamCells {
    packets: AtomicU64,
    bytes: AtomicU64,
    /// `CLOCK_MONOTONIC` nanoseconds of the last packet; 0 = none yet.
    last_seen_ns: AtomicU64,
    /// The latched peer, packed by [`pack_peer`]; 0 = none yet.
    latched: AtomicU64,
}

impl StreamCells {
    /// The counters now.
    pub fn snapshot(&self) -> StreamCounters {
        let last = self.last_seen_ns.load(Ordering::Relaxed);
        StreamCounters {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            last_seen: (last != 0).then(|| Duration::from_nanos(last)),
        }
    }

    /// The source a latching leg learned from its first packet, once it has.
    pub fn latched_peer(&self) -> Option<SocketAddrV4> {
        unpack_peer(self.latched.load(Ordering::Relaxed))
    }

    /// Counts one packet. Single writer: a load and a store, no locked instruction.
    fn count(&self, bytes: usize, now_ns: u64) {
        bump(&self.packets, 1);
        bump(&self.bytes, bytes as u64);
        self.last_seen_ns.store(now_ns, Ordering::Relaxed);
    }

    fn set_latched(&self, peer: Option<SocketAddrV4>) {
        self.latched
            .store(peer.map_or(0, pack_peer), Ordering::Relaxed);
    }
}

/// Adds to a counter that only one thread writes.
fn bump(cell: &AtomicU64, n: u64) {
    cell.store(
        cell.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// Packs an address into 49 bits: bit 48 says "set", so 0.0.0.0:0 stays distinguishable.
fn pack_peer(addr: SocketAddrV4) -> u64 {
    1 << 48 | u64::from(u32::from(*addr.ip())) << 16 | u64::from(addr.port())
}

fn unpack_peer(packed: u64) -> Option<SocketAddrV4> {
    (packed & 1 << 48 != 0).then(|| {
        SocketAddrV4::new(
            Ipv4Addr::from((packed >> 16) as u32),
            (packed & 0xffff) as u16,
        )
    })
}

/// The relay's global verdict and drop counters, indexed like [`Counter`]; written only by the
/// worker (or whoever owns the [`RuleTable`]), read by anyone.
#[derive(Debug)]
pub struct RelayCounters {
    values: [AtomicU64; COUNTERS],
}

impl Default for RelayCounters {
    fn default() -> Self {
        Self {
            values: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl RelayCounters {
    /// One counter now.
    pub fn get(&self, counter: Counter) -> u64 {
        self.values[counter.index() as usize].load(Ordering::Relaxed)
    }

    /// Every counter now.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot::from_fn(|c| self.get(c))
    }

    /// Adds `n` to a counter (single writer).
    fn add(&self, counter: Counter, n: u64) {
        bump(&self.values[counter.index() as usize], n);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Latch {
    /// Not a latching leg.
    Off,
    /// Waiting for the first packet.
    Waiting,
    /// The peer is known.
    Learned,
}

/// One installed rule as the worker keeps it.
#[derive(Debug)]
struct RuleState {
    /// The rule as the control plane stated it.
    rule: StreamRule,
    /// Where forwarded packets go: the taught destination, else the rule's; `None` = pending.
    destination: Option<SocketAddrV4>,
    /// What the reverse leg's latch taught, which overrides `rule.destination`.
    taught: Option<SocketAddrV4>,
    /// The expected or learned source; strict source compares against it.
    peer: Option<SocketAddrV4>,
    latch: Latch,
    cells: Arc<StreamCells>,
}

impl RuleState {
    fn new(rule: &StreamRule, cells: Arc<StreamCells>) -> Self {
        Self {
            rule: *rule,
            destination: rule.destination,
            taught: None,
            // A latching leg starts with no peer: strict source applies once it is learned.
            peer: if rule.latch { None } else { rule.expected_peer },
            latch: if rule.latch {
                Latch::Waiting
            } else {
                Latch::Off
            },
            cells,
        }
    }
}

/// What [`process`] decided for one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the payload from the socket bound to `via` to `to`.
    Forward {
        /// The rule's `source`: the relay socket to send from.
        via: SocketAddrV4,
        /// The destination.
        to: SocketAddrV4,
    },
    /// Drop it; the reason has been counted.
    Drop(Counter),
}

/// A multiplicative hash for relay addresses. The keys are the relay's own addresses, chosen by
/// the control plane, never by a sender, so SipHash's flooding resistance buys nothing here and
/// costs a third of [`process`].
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u16(&mut self, n: u16) {
        self.0 = self.0.rotate_left(16) ^ u64::from(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = self.0.rotate_left(8) ^ n as u64;
    }

    fn finish(&self) -> u64 {
        let m = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        m ^ m >> 32
    }
}

type AddrMap<V> = HashMap<SocketAddrV4, V, BuildHasherDefault<AddrHasher>>;

/// The rules by relay address, with the counters [`process`] writes. Owned by the worker.
#[derive(Debug)]
pub struct RuleTable {
    rules: AddrMap<RuleState>,
    counters: Arc<RelayCounters>,
}

impl RuleTable {
    /// An empty table counting into `counters`.
    pub fn new(counters: Arc<RelayCounters>) -> Self {
        Self {
            rules: AddrMap::default(),
            counters,
        }
    }

    /// The global counters this table counts into.
    pub fn counters(&self) -> &Arc<RelayCounters> {
        &self.counters
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Adds a rule whose stream counts into `cells`.
    ///
    /// If the rule that teaches this one (normally at its `source`) has already latched, the
    /// destination it learned is taken over, so installing the two directions in either order
    /// loses nothing.
    pub fn insert(
        &mut self,
        rule: &StreamRule,
        cells: Arc<StreamCells>,
    ) -> Result<(), DataplaneError> {
        validate(rule)?;
        if self.rules.contains_key(&rule.local) {
            return Err(DataplaneError::AlreadyInstalled(rule.local));
        }
        let mut state = RuleState::new(rule, cells);
        if let Some(teacher) = self.rules.get(&rule.source) {
            if teacher.rule.teach == Some(rule.local) && teacher.latch == Latch::Learned {
                state.taught = teacher.peer;
                state.destination = teacher.peer;
            }
        }
        self.rules.insert(rule.local, state);
        Ok(())
    }

    /// Replaces the rule at `rule.local`, keeping its counters.
    ///
    /// A learned latch is kept when the rule still latches with the same expected peer; any
    /// other change of `latch` or `expected_peer` starts latching afresh (and forgets what the
    /// old latch taught its reverse rule). A destination this rule was taught by its reverse
    /// leg's latch is kept: the latching party still sends from there.
    pub fn update(&mut self, rule: &StreamRule) -> Result<(), DataplaneError> {
        validate(rule)?;
        let Some(state) = self.rules.get_mut(&rule.local) else {
            return Err(DataplaneError::InvalidRule(format!(
                "no rule at {} to update",
                rule.local
            )));
        };
        let old = state.rule;
        let keep_latch = rule.latch
            && old.latch
            && rule.expected_peer == old.expected_peer
            && state.latch == Latch::Learned;
        let forget_teaching = (state.latch == Latch::Learned && !keep_latch)
            .then_some(old.teach)
            .flatten();
        state.rule = *rule;
        if !keep_latch {
            state.peer = if rule.latch { None } else { rule.expected_peer };
            state.latch = if rule.latch {
                Latch::Waiting
            } else {
                Latch::Off
            };
            state.cells.set_latched(None);
        }
        state.destination = state.taught.or(rule.destination);
        if let Some(reverse) = forget_teaching.and_then(|t| self.rules.get_mut(&t)) {
            reverse.taught = None;
            reverse.destination = reverse.rule.destination;
        }
        Ok(())
    }

    /// Removes the rule at `local` and returns its counters' cells.
    pub fn remove(&mut self, local: SocketAddrV4) -> Option<Arc<StreamCells>> {
        self.rules.remove(&local).map(|s| s.cells)
    }

    /// Where the rule at `local` sends now (`None`: no rule, or its destination is pending).
    pub fn destination(&self, local: SocketAddrV4) -> Option<SocketAddrV4> {
        self.rules.get(&local).and_then(|s| s.destination)
    }
}

/// The checks the XDP path applies when it encodes a rule.
fn validate(rule: &StreamRule) -> Result<(), DataplaneError> {
    rule.encode(0, 0).map(|_| ())
}

/// Decides what to do with one datagram of `len` UDP payload bytes that arrived at the relay
/// address `local` from `from`, as the XDP program does:
///
/// 1. no rule at `local`: drop, [`Counter::DropUnknownPort`];
/// 2. a latching leg's first packet sets its peer to `from`, teaches the reverse rule (at the
///    rule's `teach`) its destination, and counts [`Counter::Latched`];
/// 3. strict source, once the peer is known, drops other sources: [`Counter::DropSourceMismatch`];
/// 4. a pending destination drops: [`Counter::DropDstPending`];
/// 5. otherwise the stream's packets, bytes and last-seen time (`now_ns`) count and the datagram
///    goes from the rule's `source` to its destination.
///
/// Drops and latches are counted here; [`Counter::Tx`] is counted by whoever sends.
pub fn process(
    rules: &mut RuleTable,
    local: SocketAddrV4,
    from: SocketAddrV4,
    len: usize,
    now_ns: u64,
) -> Verdict {
    let Some(state) = rules.rules.get_mut(&local) else {
        return drop_as(&rules.counters, Counter::DropUnknownPort);
    };
    if state.latch != Latch::Waiting {
        // The fast path: one lookup.
        if state.rule.strict_source && state.peer.is_some_and(|p| p != from) {
            return drop_as(&rules.counters, Counter::DropSourceMismatch);
        }
        let Some(to) = state.destination else {
            return drop_as(&rules.counters, Counter::DropDstPending);
        };
        state.cells.count(len, now_ns);
        return Verdict::Forward {
            via: state.rule.source,
            to,
        };
    }
    // The first packet of a latching leg.
    state.latch = Latch::Learned;
    state.peer = Some(from);
    state.cells.set_latched(Some(from));
    let teach = state.rule.teach;
    if let Some(reverse) = teach.and_then(|t| rules.rules.get_mut(&t)) {
        reverse.taught = Some(from);
        reverse.destination = Some(from);
    }
    rules.counters.add(Counter::Latched, 1);
    let Some(state) = rules.rules.get(&local) else {
        return drop_as(&rules.counters, Counter::DropUnknownPort);
    };
    let Some(to) = state.destination else {
        return drop_as(&rules.counters, Counter::DropDstPending);
    };
    state.cells.count(len, now_ns);
    Verdict::Forward {
        via: state.rule.source,
        to,
    }
}

fn drop_as(counters: &RelayCounters, reason: Counter) -> Verdict {
    counters.add(reason, 1);
    Verdict::Drop(reason)
}

/// An `io::Error` that names the address it is about, keeping the errno underneath.
#[derive(Debug)]
struct AtAddr {
    addr: SocketAddrV4,
    source: io::Error,
}

impl fmt::Display for AtAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.addr, self.source)
    }
}

impl std::error::Error for AtAddr {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn syscall_at(call: &'static str, addr: SocketAddrV4, source: io::Error) -> DataplaneError {
    DataplaneError::Syscall {
        call,
        source: io::Error::new(source.kind(), AtAddr { addr, source }),
    }
}

fn worker_gone(what: &str) -> DataplaneError {
    DataplaneError::Syscall {
        call: "talking to the sluice-sockets worker",
        source: io::Error::new(io::ErrorKind::BrokenPipe, what.to_owned()),
    }
}

/// Creates a non-blocking UDP socket bound exactly to `addr` in the calling thread's network
/// namespace, with enlarged buffers.
fn bind_socket(
    addr: SocketAddrV4,
    config: &SocketRelayConfig,
) -> Result<UdpSocket, DataplaneError> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| syscall_at("socket", addr, e))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| syscall_at("fcntl(O_NONBLOCK)", addr, e))?;
    enlarge_buffer(
        &socket,
        libc::SO_RCVBUFFORCE,
        config.recv_buffer,
        addr,
        |s, n| s.set_recv_buffer_size(n),
    );
    enlarge_buffer(
        &socket,
        libc::SO_SNDBUFFORCE,
        config.send_buffer,
        addr,
        |s, n| s.set_send_buffer_size(n),
    );
    socket
        .bind(&SocketAddr::V4(addr).into())
        .map_err(|e| syscall_at("bind", addr, e))?;
    Ok(socket.into())
}

/// Sets a socket buffer: the `*FORCE` option where allowed (root), else the capped one. A
/// failure only costs headroom, so it is logged, not returned.
fn enlarge_buffer(
    socket: &Socket,
    force: libc::c_int,
    size: usize,
    addr: SocketAddrV4,
    fallback: impl Fn(&Socket, usize) -> io::Result<()>,
) {
    if size == 0 {
        return;
    }
    let value = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: the fd is open for the call; the option value is a c_int we own, of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            force,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        return;
    }
    if let Err(e) = fallback(socket, size) {
        debug!(%addr, size, error = %e, "could not enlarge a socket buffer");
    }
}

enum Command {
    Install {
        rule: StreamRule,
        cells: Arc<StreamCells>,
        sockets: Vec<(SocketAddrV4, UdpSocket)>,
        reply: Sender<Result<(), DataplaneError>>,
    },
    Update {
        rule: StreamRule,
        sockets: Vec<(SocketAddrV4, UdpSocket)>,
        release: Vec<SocketAddrV4>,
        reply: Sender<Result<(), DataplaneError>>,
    },
    Remove {
        local: SocketAddrV4,
        release: Vec<SocketAddrV4>,
        reply: Sender<Result<(), DataplaneError>>,
    },
    Stop,
}

struct Installed {
    rule: StreamRule,
    cells: Arc<StreamCells>,
}

/// The socket forwarding path: one worker thread relaying UDP between plain sockets.
///
/// Sockets are bound in the thread that calls [`install`](Forwarder::install) or
/// [`update`](Forwarder::update), so in its network namespace. Dropping the relay stops the
/// worker (waiting at most two seconds) and closes every socket.
pub struct SocketRelay {
    config: SocketRelayConfig,
    commands: Sender<Command>,
    waker: Arc<Waker>,
    worker: Option<JoinHandle<()>>,
    /// Disconnects when the worker exits.
    stopped: Receiver<()>,
    counters: Arc<RelayCounters>,
    streams: HashMap<StreamId, Installed>,
    by_local: HashMap<SocketAddrV4, StreamId>,
    /// Rules using each bound address, as `local` or `source`.
    refs: HashMap<SocketAddrV4, usize>,
    free_ids: Vec<u32>,
    next_id: u32,
}

impl fmt::Debug for SocketRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketRelay")
            .field("config", &self.config)
            .field("streams", &self.streams.len())
            .field("sockets", &self.refs.len())
            .finish_non_exhaustive()
    }
}

impl SocketRelay {
    /// Starts the worker thread `sluice-sockets`. No socket is bound until a stream is installed.
    pub fn start(config: SocketRelayConfig) -> Result<Self, DataplaneError> {
        if config.workers != 1 {
            return Err(DataplaneError::InvalidConfig(format!(
                "workers = {}: the socket relay runs exactly one worker",
                config.workers
            )));
        }
        if config.batch == 0 || config.batch > MAX_BATCH {
            return Err(DataplaneError::InvalidConfig(format!(
                "batch = {}: need 1 to {MAX_BATCH}",
                config.batch
            )));
        }
        if config.max_datagram == 0 || config.max_datagram > 65_535 {
            return Err(DataplaneError::InvalidConfig(format!(
                "max_datagram = {}: need 1 to 65535",
                config.max_datagram
            )));
        }
        let poll = Poll::new().map_err(|source| DataplaneError::Syscall {
            call: "epoll_create",
            source,
        })?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(|source| {
            DataplaneError::Syscall {
                call: "eventfd",
                source,
            }
        })?);
        let (commands, inbox) = crossbeam_channel::unbounded();
        let (stop_guard, stopped) = crossbeam_channel::bounded::<()>(0);
        let counters = Arc::new(RelayCounters::default());
        let worker = Worker::new(poll, inbox, RuleTable::new(counters.clone()), &config);
        let handle = thread::Builder::new()
            .name("sluice-sockets".into())
            .spawn(move || {
                let _guard = stop_guard;
                worker.run();
            })
            .map_err(|source| DataplaneError::Syscall {
                call: "spawning the sluice-sockets thread",
                source,
            })?;
        info!(batch = config.batch, "socket relay started");
        Ok(Self {
            config,
            commands,
            waker,
            worker: Some(handle),
            stopped,
            counters,
            streams: HashMap::new(),
            by_local: HashMap::new(),
            refs: HashMap::new(),
            free_ids: Vec::new(),
            next_id: 0,
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &SocketRelayConfig {
        &self.config
    }

    /// The streams installed now, with their relay addresses.
    pub fn streams(&self) -> impl Iterator<Item = (StreamId, SocketAddrV4)> + '_ {
        self.streams.iter().map(|(id, s)| (*id, s.rule.local))
    }

    /// The rule a stream was installed or last updated with.
    pub fn rule(&self, id: StreamId) -> Result<StreamRule, DataplaneError> {
        self.streams
            .get(&id)
            .map(|s| s.rule)
            .ok_or(DataplaneError::UnknownStream(id))
    }

    /// Sends a command and waits for the worker's answer.
    fn call(
        &self,
        command: impl FnOnce(Sender<Result<(), DataplaneError>>) -> Command,
    ) -> Result<(), DataplaneError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.commands
            .send(command(reply))
            .map_err(|_| worker_gone("the worker has stopped"))?;
        self.waker
            .wake()
            .map_err(|source| DataplaneError::Syscall {
                call: "waking the sluice-sockets worker",
                source,
            })?;
        match answer.recv_timeout(COMMAND_TIMEOUT) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(worker_gone("no answer within 5 s")),
            Err(RecvTimeoutError::Disconnected) => Err(worker_gone("the worker has stopped")),
        }
    }

    /// Binds, in this thread, the addresses of `addrs` that have no socket yet.
    fn bind_missing(
        &self,
        addrs: &[SocketAddrV4],
    ) -> Result<Vec<(SocketAddrV4, UdpSocket)>, DataplaneError> {
        let mut sockets = Vec::new();
        for &addr in addrs {
            if self.refs.get(&addr).copied().unwrap_or(0) == 0 {
                sockets.push((addr, bind_socket(addr, &self.config)?));
            }
        }
        Ok(sockets)
    }

    fn retain(&mut self, addrs: &[SocketAddrV4]) {
        for &addr in addrs {
            *self.refs.entry(addr).or_insert(0) += 1;
        }
    }

    /// Drops one reference to each address; returns those no rule uses any more.
    fn release(&mut self, addrs: &[SocketAddrV4]) -> Vec<SocketAddrV4> {
        let mut closed = Vec::new();
        for &addr in addrs {
            if let Some(n) = self.refs.get_mut(&addr) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.refs.remove(&addr);
                    closed.push(addr);
                }
            }
        }
        closed
    }

    fn installed(&self, id: StreamId) -> Result<&Installed, DataplaneError> {
        self.streams
            .get(&id)
            .ok_or(DataplaneError::UnknownStream(id))
    }
}

/// The addresses a rule needs sockets for, without repeats.
fn addresses(rule: &StreamRule) -> Vec<SocketAddrV4> {
    if rule.local == rule.source {
        vec![rule.local]
    } else {
        vec![rule.local, rule.source]
    }
}

impl Forwarder for SocketRelay {
    fn kind(&self) -> BackendKind {
        BackendKind::Sockets
    }

    /// Installs one direction of a stream, binding its `local` and `source` sockets in the
    /// calling thread's network namespace if no installed rule uses them yet.
    fn install(&mut self, rule: &StreamRule) -> Result<StreamId, DataplaneError> {
        validate(rule)?;
        if self.by_local.contains_key(&rule.local) {
            return Err(DataplaneError::AlreadyInstalled(rule.local));
        }
        if self.free_ids.is_empty() && self.next_id == u32::MAX {
            return Err(DataplaneError::Full(u32::MAX));
        }
        let addrs = addresses(rule);
        let sockets = self.bind_missing(&addrs)?;
        let cells = Arc::new(StreamCells::default());
        self.call(|reply| Command::Install {
            rule: *rule,
            cells: cells.clone(),
            sockets,
            reply,
        })?;
        self.retain(&addrs);
        let id = StreamId(self.free_ids.pop().unwrap_or_else(|| {
            self.next_id += 1;
            self.next_id - 1
        }));
        self.streams.insert(id, Installed { rule: *rule, cells });
        self.by_local.insert(rule.local, id);
        Ok(id)
    }

    /// Replaces a stream's rule, keeping its counters; the relay address may not change.
    ///
    /// A learned latch survives when the new rule still latches with the same expected peer, and
    /// so does a destination taught by the reverse leg's latch (see [`RuleTable::update`]). A
    /// new `source` is bound in the calling thread's namespace; the old one is closed when no
    /// rule uses it any more.
    fn update(&mut self, id: StreamId, rule: &StreamRule) -> Result<(), DataplaneError> {
        validate(rule)?;
        let old = self.installed(id)?.rule;
        if old.local != rule.local {
            return Err(DataplaneError::InvalidRule(format!(
                "stream {id} is at {}, not {}",
                old.local, rule.local
            )));
        }
        let old_addrs = addresses(&old);
        let new_addrs = addresses(rule);
        let sockets = self.bind_missing(&new_addrs)?;
        // Count the new references before releasing the old ones, so a shared address stays.
        self.retain(&new_addrs);
        let release = self.release(&old_addrs);
        let result = self.call(|reply| Command::Update {
            rule: *rule,
            sockets,
            release: release.clone(),
            reply,
        });
        if let Err(e) = result {
            // The worker kept the old rule: restore the references as they were.
            self.retain(&old_addrs);
            self.release(&new_addrs);
            return Err(e);
        }
        if let Some(installed) = self.streams.get_mut(&id) {
            installed.rule = *rule;
        }
        Ok(())
    }

    /// Removes a stream and returns its final counters; sockets no rule uses any more close.
    fn remove(&mut self, id: StreamId) -> Result<StreamCounters, DataplaneError> {
        let rule = self.installed(id)?.rule;
        let addrs = addresses(&rule);
        let release = self.release(&addrs);
        if let Err(e) = self.call(|reply| Command::Remove {
            local: rule.local,
            release: release.clone(),
            reply,
        }) {
            self.retain(&addrs);
            return Err(e);
        }
        let installed = self
            .streams
            .remove(&id)
            .ok_or(DataplaneError::UnknownStream(id))?;
        self.by_local.remove(&rule.local);
        self.free_ids.push(id.0);
        Ok(installed.cells.snapshot())
    }

    fn stream_counters(&self, id: StreamId) -> Result<StreamCounters, DataplaneError> {
        Ok(self.installed(id)?.cells.snapshot())
    }

    fn latched_peer(&self, id: StreamId) -> Result<Option<SocketAddrV4>, DataplaneError> {
        Ok(self.installed(id)?.cells.latched_peer())
    }

    fn counters(&self) -> Result<CounterSnapshot, DataplaneError> {
        Ok(self.counters.snapshot())
    }
}

impl Drop for SocketRelay {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        let _ = self.waker.wake();
        // The worker drops its end of `stopped` when it exits: join only then, so a wedged
        // worker cannot hang the caller.
        match self.stopped.recv_timeout(STOP_TIMEOUT) {
            Err(RecvTimeoutError::Timeout) => {
                warn!("the sluice-sockets worker did not stop within 2 s; leaving it behind");
            }
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if let Some(handle) = self.worker.take() {
                    if handle.join().is_err() {
                        warn!("the sluice-sockets worker panicked");
                    }
                }
            }
        }
    }
}

/// A datagram waiting for its source socket's send buffer to drain.
struct Pending {
    to: SocketAddrV4,
    data: Vec<u8>,
}

/// A relay socket as the worker owns it.
struct Sock {
    addr: SocketAddrV4,
    token: usize,
    io: mio::net::UdpSocket,
    backlog: VecDeque<Pending>,
    /// Registered for writability (because `backlog` is not empty).
    writable: bool,
    /// Queued in `Worker::ready`.
    ready: bool,
}

/// `recvmmsg`/`sendmmsg` buffers, allocated once.
struct Buffers {
    slot: usize,
    data: Vec<u8>,
    recv_iov: Vec<libc::iovec>,
    recv_names: Vec<libc::sockaddr_in>,
    recv_msgs: Vec<libc::mmsghdr>,
    send_iov: Vec<libc::iovec>,
    send_names: Vec<libc::sockaddr_in>,
    send_msgs: Vec<libc::mmsghdr>,
    /// Per received message: where it goes, if forwarded.
    out: Vec<Option<(SocketAddrV4, SocketAddrV4)>>,
    /// Per prepared send: the received message it carries.
    send_index: Vec<usize>,
}

// SAFETY: the raw pointers inside the iovec and mmsghdr arrays only ever point into this
// struct's own heap buffers, and they are rebuilt before every system call.
unsafe impl Send for Buffers {}

fn zeroed_sockaddr() -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain integers; all zeros is a valid value.
    unsafe { mem::zeroed() }
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is integers and nullable pointers; all zeros is a valid (empty) value.
    unsafe { mem::zeroed() }
}

fn empty_iovec() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

impl Buffers {
    fn new(batch: usize, slot: usize) -> Self {
        Self {
            slot,
            data: vec![0; batch * slot],
            recv_iov: vec![empty_iovec(); batch],
            recv_names: vec![zeroed_sockaddr(); batch],
            recv_msgs: vec![zeroed_mmsghdr(); batch],
            send_iov: vec![empty_iovec(); batch],
            send_names: vec![zeroed_sockaddr(); batch],
            send_msgs: vec![zeroed_mmsghdr(); batch],
            out: vec![None; batch],
            send_index: vec![0; batch],
        }
    }

    /// Receives up to a batch from `fd`: the number of messages, or the error.
    fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let batch = self.recv_msgs.len();
        let base = self.data.as_mut_ptr();
        for i in 0..batch {
            self.recv_iov[i] = libc::iovec {
                // SAFETY: i * slot is within `data`, which holds batch * slot bytes.
                iov_base: unsafe { base.add(i * self.slot) }.cast(),
                iov_len: self.slot,
            };
            let hdr = &mut self.recv_msgs[i].msg_hdr;
            hdr.msg_name = (&mut self.recv_names[i] as *mut libc::sockaddr_in).cast();
            hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_iov = &mut self.recv_iov[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
            self.recv_msgs[i].msg_len = 0;
        }
        loop {
            // SAFETY: every header points at live buffers of the sizes it states, owned by self
            // and not touched until the call returns.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.recv_msgs.as_mut_ptr(),
                    batch as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// The sender and payload length of received message `i`; `None` if it is not IPv4.
    fn received(&self, i: usize) -> (Option<SocketAddrV4>, usize, bool) {
        let msg = &self.recv_msgs[i];
        let name = &self.recv_names[i];
        let from = (msg.msg_hdr.msg_namelen as usize >= mem::size_of::<libc::sockaddr_in>()
            && name.sin_family == libc::AF_INET as libc::sa_family_t)
            .then(|| sockaddr_to_v4(name));
        let truncated = msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        (from, msg.msg_len as usize, truncated)
    }

    /// Sends the received messages whose `out` is `via` from `fd`, starting at index `first`
    /// (the earliest such message). Returns how many went and, if it stopped early, the errno
    /// with the received indices that did not go.
    fn send_group(&mut self, fd: RawFd, via: SocketAddrV4, first: usize, n: usize) -> SendOutcome {
        let mut count = 0;
        for i in first..n {
            let Some((v, to)) = self.out[i] else { continue };
            if v != via {
                continue;
            }
            let (_, len, _) = self.received(i);
            let base = self.data.as_mut_ptr();
            self.send_iov[count] = libc::iovec {
                // SAFETY: i * slot is within `data`.
                iov_base: unsafe { base.add(i * self.slot) }.cast(),
                iov_len: len,
            };
            self.send_names[count] = v4_to_sockaddr(to);
            self.send_index[count] = i;
            count += 1;
        }
        let mut sent = 0;
        let mut dropped = Vec::new();
        while sent < count {
            match self.sendmmsg(fd, sent, count) {
                Ok(k) if k > 0 => sent += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Nothing went (0 only in theory): wait for writability rather than spin.
                Ok(_) => {
                    return SendOutcome {
                        sent_ok: sent_total(&dropped, sent),
                        failed: dropped,
                        blocked: self.send_index[sent..count].to_vec(),
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return SendOutcome {
                        sent_ok: sent_total(&dropped, sent),
                        failed: dropped,
                        blocked: self.send_index[sent..count].to_vec(),
                    };
                }
                Err(e) => {
                    // sendmmsg reports the error of the first message that failed: skip it.
                    dropped.push(send_error_counter(&e));
                    debug!(%via, error = %e, "sendmmsg failed for one datagram");
                    sent += 1;
                }
            }
        }
        SendOutcome {
            sent_ok: sent_total(&dropped, sent),
            failed: dropped,
            blocked: Vec::new(),
        }
    }

    /// One `sendmmsg` of the prepared messages `from..to`.
    fn sendmmsg(&mut self, fd: RawFd, from: usize, to: usize) -> io::Result<usize> {
        for j in from..to {
            let hdr = &mut self.send_msgs[j].msg_hdr;
            hdr.msg_name = (&mut self.send_names[j] as *mut libc::sockaddr_in).cast();
            hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            hdr.msg_iov = &mut self.send_iov[j];
            hdr.msg_iovlen = 1;
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
            hdr.msg_flags = 0;
        }
        // SAFETY: headers from..to point at live names and iovecs owned by self, whose iovecs
        // point into `data`; nothing else touches them during the call.
        let rc = unsafe {
            libc::sendmmsg(
                fd,
                self.send_msgs[from..].as_mut_ptr(),
                (to - from) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    }

    fn payload(&self, i: usize, len: usize) -> &[u8] {
        let start = i * self.slot;
        &self.data[start..start + len.min(self.slot)]
    }
}

fn sent_total(failed: &[Counter], attempted: usize) -> usize {
    attempted.saturating_sub(failed.len())
}

struct SendOutcome {
    /// Datagrams the kernel took.
    sent_ok: usize,
    /// Drop reasons of datagrams the kernel refused.
    failed: Vec<Counter>,
    /// Received indices not sent because the socket's buffer is full.
    blocked: Vec<usize>,
}

fn send_error_counter(e: &io::Error) -> Counter {
    match e.raw_os_error() {
        Some(libc::EMSGSIZE) => Counter::DropTooBig,
        _ => Counter::DropNoRoute,
    }
}

fn sockaddr_to_v4(name: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr)),
        u16::from_be(name.sin_port),
    )
}

fn v4_to_sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    let mut name = zeroed_sockaddr();
    name.sin_family = libc::AF_INET as libc::sa_family_t;
    name.sin_port = addr.port().to_be();
    name.sin_addr.s_addr = u32::from(*addr.ip()).to_be();
    name
}

/// The worker: the poll loop, the sockets, the rules.
struct Worker {
    poll: Poll,
    inbox: Receiver<Command>,
    table: RuleTable,
    counters: Arc<RelayCounters>,
    /// Sockets by token.
    sockets: Vec<Option<Sock>>,
    free_tokens: Vec<usize>,
    by_addr: HashMap<SocketAddrV4, usize>,
    /// Tokens with datagrams possibly left to read, in turn order.
    ready: VecDeque<usize>,
    buffers: Buffers,
    backlog_limit: usize,
}

impl Worker {
    fn new(
        poll: Poll,
        inbox: Receiver<Command>,
        table: RuleTable,
        config: &SocketRelayConfig,
    ) -> Self {
        Self {
            poll,
            inbox,
            counters: table.counters().clone(),
            table,
            sockets: Vec::new(),
            free_tokens: Vec::new(),
            by_addr: HashMap::new(),
            ready: VecDeque::new(),
            buffers: Buffers::new(config.batch, config.max_datagram),
            backlog_limit: config.backlog,
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = (!self.ready.is_empty()).then_some(Duration::ZERO);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                warn!(error = %e, "epoll_wait failed; the socket relay stops");
                return;
            }
            let mut commands = false;
            for event in events.iter() {
                let token = event.token();
                if token == WAKER {
                    commands = true;
                    continue;
                }
                if event.is_writable() {
                    self.flush_backlog(token.0);
                }
                if event.is_readable() {
                    if let Some(Some(sock)) = self.sockets.get_mut(token.0) {
                        if !sock.ready {
                            sock.ready = true;
                            self.ready.push_back(token.0);
                        }
                    }
                }
            }
            if commands && !self.handle_commands() {
                debug!("socket relay worker stopping");
                return;
            }
            self.serve_ready();
        }
    }

    /// Applies every queued command; false when the relay is being dropped.
    fn handle_commands(&mut self) -> bool {
        loop {
            match self.inbox.try_recv() {
                Ok(Command::Install {
                    rule,
                    cells,
                    sockets,
                    reply,
                }) => {
                    let result = self.install(&rule, cells, sockets);
                    let _ = reply.send(result);
                }
                Ok(Command::Update {
                    rule,
                    sockets,
                    release,
                    reply,
                }) => {
                    let result = self.update(&rule, sockets, &release);
                    let _ = reply.send(result);
                }
                Ok(Command::Remove {
                    local,
                    release,
                    reply,
                }) => {
                    self.table.remove(local);
                    self.close(&release);
                    let _ = reply.send(Ok(()));
                }
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn install(
        &mut self,
        rule: &StreamRule,
        cells: Arc<StreamCells>,
        sockets: Vec<(SocketAddrV4, UdpSocket)>,
    ) -> Result<(), DataplaneError> {
        let added = self.adopt(sockets)?;
        if let Err(e) = self.table.insert(rule, cells) {
            self.close(&added);
            return Err(e);
        }
        Ok(())
    }

    fn update(
        &mut self,
        rule: &StreamRule,
        sockets: Vec<(SocketAddrV4, UdpSocket)>,
        release: &[SocketAddrV4],
    ) -> Result<(), DataplaneError> {
        let added = self.adopt(sockets)?;
        if let Err(e) = self.table.update(rule) {
            self.close(&added);
            return Err(e);
        }
        self.close(release);
        Ok(())
    }

    /// Registers new sockets; all or none.
    fn adopt(
        &mut self,
        sockets: Vec<(SocketAddrV4, UdpSocket)>,
    ) -> Result<Vec<SocketAddrV4>, DataplaneError> {
        let mut added = Vec::new();
        for (addr, socket) in sockets {
            let mut io = mio::net::UdpSocket::from_std(socket);
            let token = self.free_tokens.pop().unwrap_or(self.sockets.len());
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut io, Token(token), Interest::READABLE)
            {
                self.close(&added);
                return Err(syscall_at("epoll_ctl(ADD)", addr, e));
            }
            let sock = Sock {
                addr,
                token,
                io,
                backlog: VecDeque::new(),
                writable: false,
                // Datagrams may have arrived between bind and registration: read once.
                ready: true,
            };
            match self.sockets.get_mut(token) {
                Some(slot) => *slot = Some(sock),
                None => self.sockets.push(Some(sock)),
            }
            self.ready.push_back(token);
            self.by_addr.insert(addr, token);
            added.push(addr);
        }
        Ok(added)
    }

    /// Deregisters and closes the sockets bound to `addrs`.
    fn close(&mut self, addrs: &[SocketAddrV4]) {
        for addr in addrs {
            let Some(token) = self.by_addr.remove(addr) else {
                continue;
            };
            if let Some(mut sock) = self.sockets.get_mut(token).and_then(Option::take) {
                if let Err(e) = self.poll.registry().deregister(&mut sock.io) {
                    debug!(%addr, error = %e, "epoll_ctl(DEL) failed");
                }
                if !sock.backlog.is_empty() {
                    self.counters
                        .add(Counter::DropNoTxPort, sock.backlog.len() as u64);
                }
                self.free_tokens.push(token);
            }
            self.ready.retain(|t| *t != token);
        }
    }

    /// Gives every ready socket a turn of at most [`DRAIN_BUDGET`] batches.
    fn serve_ready(&mut self) {
        for _ in 0..self.ready.len() {
            let Some(token) = self.ready.pop_front() else {
                break;
            };
            if self.drain(token) {
                if let Some(Some(sock)) = self.sockets.get_mut(token) {
                    sock.ready = false;
                }
            } else {
                self.ready.push_back(token);
            }
        }
    }

    /// Reads and forwards batches from one socket; true when it is empty.
    fn drain(&mut self, token: usize) -> bool {
        let batch = self.buffers.recv_msgs.len();
        for _ in 0..DRAIN_BUDGET {
            let Some(Some(sock)) = self.sockets.get(token) else {
                return true;
            };
            let (fd, local) = (sock.io.as_raw_fd(), sock.addr);
            let n = match self.buffers.recv(fd) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) => {
                    // Edge-triggered: the next datagram brings the socket back.
                    debug!(%local, error = %e, "recvmmsg failed");
                    return true;
                }
            };
            if n == 0 {
                return true;
            }
            self.forward_batch(local, n);
            // A short batch means the queue was empty when the kernel looked; epoll reports
            // any datagram that arrives after that, so there is no need for an extra recvmmsg
            // just to see EAGAIN.
            if n < batch {
                return true;
            }
        }
        false
    }

    /// Decides on `n` received datagrams and sends the forwarded ones, grouped by source.
    fn forward_batch(&mut self, local: SocketAddrV4, n: usize) {
        let now_ns = u64::try_from(monotonic_now().as_nanos()).unwrap_or(u64::MAX);
        for i in 0..n {
            let (from, len, truncated) = self.buffers.received(i);
            self.buffers.out[i] = None;
            let Some(from) = from else {
                self.counters.add(Counter::DropMalformed, 1);
                continue;
            };
            if truncated {
                self.counters.add(Counter::DropTooBig, 1);
                continue;
            }
            if let Verdict::Forward { via, to } = process(&mut self.table, local, from, len, now_ns)
            {
                self.buffers.out[i] = Some((via, to));
            }
        }
        // Almost always one group: every datagram of a batch came through the same rule.
        let mut first = 0;
        while first < n {
            let Some((via, _)) = self.buffers.out[first] else {
                first += 1;
                continue;
            };
            self.send_via(via, first, n);
            for slot in &mut self.buffers.out[first..n] {
                if slot.is_some_and(|(v, _)| v == via) {
                    *slot = None;
                }
            }
            first += 1;
        }
    }

    /// Sends the batch's datagrams bound for `via`, or queues them behind its backlog.
    fn send_via(&mut self, via: SocketAddrV4, first: usize, n: usize) {
        let Some(token) = self.by_addr.get(&via).copied() else {
            let count = self.buffers.out[first..n]
                .iter()
                .filter(|o| o.is_some_and(|(v, _)| v == via))
                .count();
            self.counters.add(Counter::DropNoTxPort, count as u64);
            return;
        };
        let Some(Some(sock)) = self.sockets.get(token) else {
            return;
        };
        let blocked: Vec<usize> = if sock.backlog.is_empty() {
            let outcome = self.buffers.send_group(sock.io.as_raw_fd(), via, first, n);
            self.counters.add(Counter::Tx, outcome.sent_ok as u64);
            for reason in outcome.failed {
                self.counters.add(reason, 1);
            }
            outcome.blocked
        } else {
            // Keep the order: behind what is already waiting.
            (first..n)
                .filter(|&i| self.buffers.out[i].is_some_and(|(v, _)| v == via))
                .collect()
        };
        if !blocked.is_empty() {
            self.queue(token, &blocked);
        }
    }

    /// Copies received datagrams into a socket's backlog, drops beyond its limit, and asks for
    /// writability.
    fn queue(&mut self, token: usize, indices: &[usize]) {
        let Some(Some(sock)) = self.sockets.get_mut(token) else {
            return;
        };
        let mut overflow = 0u64;
        for &i in indices {
            let Some((_, to)) = self.buffers.out[i] else {
                continue;
            };
            if sock.backlog.len() >= self.backlog_limit {
                overflow += 1;
                continue;
            }
            let (_, len, _) = self.buffers.received(i);
            sock.backlog.push_back(Pending {
                to,
                data: self.buffers.payload(i, len).to_vec(),
            });
        }
        if overflow > 0 {
            self.counters.add(Counter::DropNoTxPort, overflow);
        }
        if !sock.backlog.is_empty() && !sock.writable {
            set_interest(self.poll.registry(), sock, true);
        }
    }

    /// Sends what waits in a socket's backlog; stops asking for writability once it is empty.
    fn flush_backlog(&mut self, token: usize) {
        let Some(Some(sock)) = self.sockets.get_mut(token) else {
            return;
        };
        let fd = sock.io.as_raw_fd();
        while let Some(pending) = sock.backlog.front() {
            let to = v4_to_sockaddr(pending.to);
            // SAFETY: the buffer and address are live for the call and of the lengths given.
            let rc = unsafe {
                libc::sendto(
                    fd,
                    pending.data.as_ptr().cast(),
                    pending.data.len(),
                    libc::MSG_DONTWAIT,
                    (&to as *const libc::sockaddr_in).cast(),
                    mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if rc >= 0 {
                self.counters.add(Counter::Tx, 1);
                sock.backlog.pop_front();
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => return,
                _ => {
                    self.counters.add(send_error_counter(&e), 1);
                    sock.backlog.pop_front();
                }
            }
        }
        if sock.writable {
            set_interest(self.poll.registry(), sock, false);
        }
    }
}

fn set_interest(registry: &Registry, sock: &mut Sock, writable: bool) {
    let interest = if writable {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    match registry.reregister(&mut sock.io, Token(sock.token), interest) {
        Ok(()) => sock.writable = writable,
        Err(e) => debug!(addr = %sock.addr, error = %e, "epoll_ctl(MOD) failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{bidirectional, Leg, Peer};
    use std::time::Instant;

    fn sa(s: &str) -> SocketAddrV4 {
        s.parse().expect("test address")
    }

    fn table() -> RuleTable {
        RuleTable::new(Arc::new(RelayCounters::default()))
    }

    fn insert(table: &mut RuleTable, rule: &StreamRule) -> Arc<StreamCells> {
        let cells = Arc::new(StreamCells::default());
        table.insert(rule, cells.clone()).expect("insert");
        cells
    }

    const A: &str = "10.0.0.1:30000";
    const B: &str = "10.0.1.1:30002";
    const CALLER: &str = "192.0.2.10:5000";
    const CALLEE: &str = "10.0.1.2:4000";
    const INTRUDER: &str = "203.0.113.66:6666";

    fn latching_pair(strict: bool) -> [StreamRule; 2] {
        bidirectional(
            Leg {
                relay: sa(A),
                peer: Peer::Latch(None),
            },
            Leg {
                relay: sa(B),
                peer: Peer::Known(sa(CALLEE)),
            },
            strict,
        )
    }

    #[test]
    fn peers_pack_and_unpack() {
        for addr in [sa("0.0.0.0:0"), sa("255.255.255.255:65535"), sa(CALLER)] {
            assert_eq!(unpack_peer(pack_peer(addr)), Some(addr));
        }
        assert_eq!(unpack_peer(0), None);
    }

    #[test]
    fn unknown_port_drops() {
        let mut t = table();
        let v = process(&mut t, sa(A), sa(CALLER), 100, 1);
        assert_eq!(v, Verdict::Drop(Counter::DropUnknownPort));
        assert_eq!(t.counters().get(Counter::DropUnknownPort), 1);
    }

    #[test]
    fn fixed_rule_forwards_and_counts() {
        let mut t = table();
        let cells = insert(&mut t, &StreamRule::fixed(sa(A), sa(B), sa(CALLEE)));
        for now in [10, 20] {
            assert_eq!(
                process(&mut t, sa(A), sa(CALLER), 160, now),
                Verdict::Forward {
                    via: sa(B),
                    to: sa(CALLEE)
                }
            );
        }
        let c = cells.snapshot();
        assert_eq!((c.packets, c.bytes), (2, 320));
        assert_eq!(c.last_seen, Some(Duration::from_nanos(20)));
        assert_eq!(cells.latched_peer(), None);
        // Tx is counted by the sender, not here.
        assert_eq!(t.counters().snapshot().drops(), 0);
        assert_eq!(t.counters().get(Counter::Tx), 0);
        // The source-only address of a one-way stream has no rule.
        assert_eq!(
            process(&mut t, sa(B), sa(CALLEE), 10, 30),
            Verdict::Drop(Counter::DropUnknownPort)
        );
    }

    #[test]
    fn latch_teaches_the_reverse_and_strict_drops_intruders() {
        let mut t = table();
        let [a_to_b, b_to_a] = latching_pair(true);
        let a_cells = insert(&mut t, &a_to_b);
        let b_cells = insert(&mut t, &b_to_a);

        // The callee speaks first: nowhere to send yet.
        assert_eq!(
            process(&mut t, sa(B), sa(CALLEE), 100, 1),
            Verdict::Drop(Counter::DropDstPending)
        );
        // The caller's first packet latches and teaches.
        assert_eq!(
            process(&mut t, sa(A), sa(CALLER), 100, 2),
            Verdict::Forward {
                via: sa(B),
                to: sa(CALLEE)
            }
        );
        assert_eq!(a_cells.latched_peer(), Some(sa(CALLER)));
        assert_eq!(t.destination(sa(B)), Some(sa(CALLER)));
        assert_eq!(
            process(&mut t, sa(B), sa(CALLEE), 50, 3),
            Verdict::Forward {
                via: sa(A),
                to: sa(CALLER)
            }
        );
        // Strict source: the learned peer on A, the expected one on B.
        assert_eq!(
            process(&mut t, sa(A), sa(INTRUDER), 100, 4),
            Verdict::Drop(Counter::DropSourceMismatch)
        );
        assert_eq!(
            process(&mut t, sa(B), sa(INTRUDER), 100, 5),
            Verdict::Drop(Counter::DropSourceMismatch)
        );
        // Latching happens once.
        assert_eq!(a_cells.latched_peer(), Some(sa(CALLER)));

        let counters = t.counters().snapshot();
        assert_eq!(counters.get(Counter::Latched), 1);
        assert_eq!(counters.get(Counter::DropDstPending), 1);
        assert_eq!(counters.get(Counter::DropSourceMismatch), 2);
        assert_eq!(a_cells.snapshot().packets, 1);
        assert_eq!(
            (b_cells.snapshot().packets, b_cells.snapshot().bytes),
            (1, 50)
        );
    }

    #[test]
    fn without_strict_source_others_pass_and_do_not_relatch() {
        let mut t = table();
        let [a_to_b, b_to_a] = latching_pair(false);
        insert(&mut t, &a_to_b);
        insert(&mut t, &b_to_a);
        process(&mut t, sa(A), sa(CALLER), 10, 1);
        assert!(matches!(
            process(&mut t, sa(A), sa(INTRUDER), 10, 2),
            Verdict::Forward { .. }
        ));
        assert_eq!(t.destination(sa(B)), Some(sa(CALLER)));
        assert_eq!(t.counters().get(Counter::Latched), 1);
    }

    #[test]
    fn first_guess_is_used_until_the_latch() {
        let guess = sa("192.0.2.99:7000");
        let [a_to_b, b_to_a] = bidirectional(
            Leg {
                relay: sa(A),
                peer: Peer::Latch(Some(guess)),
            },
            Leg {
                relay: sa(B),
                peer: Peer::Known(sa(CALLEE)),
            },
            true,
        );
        let mut t = table();
        insert(&mut t, &a_to_b);
        insert(&mut t, &b_to_a);
        assert_eq!(t.destination(sa(B)), Some(guess));
        // The guess is not enforced: the first packet, from elsewhere, latches.
        assert!(matches!(
            process(&mut t, sa(A), sa(CALLER), 10, 1),
            Verdict::Forward { .. }
        ));
        assert_eq!(t.destination(sa(B)), Some(sa(CALLER)));
    }

    #[test]
    fn reverse_installed_after_the_latch_is_taught() {
        let mut t = table();
        let [a_to_b, b_to_a] = latching_pair(true);
        insert(&mut t, &a_to_b);
        process(&mut t, sa(A), sa(CALLER), 10, 1);
        insert(&mut t, &b_to_a);
        assert_eq!(t.destination(sa(B)), Some(sa(CALLER)));
    }

    #[test]
    fn update_keeps_or_resets_the_latch() {
        let mut t = table();
        let [a_to_b, b_to_a] = latching_pair(true);
        let a_cells = insert(&mut t, &a_to_b);
        insert(&mut t, &b_to_a);
        process(&mut t, sa(A), sa(CALLER), 10, 1);

        // Same latching and expected peer (here: a hold on the other side): the latch stays,
        // and so does the destination the latch taught B.
        let mut moved = a_to_b;
        moved.destination = Some(sa("10.0.1.3:4002"));
        t.update(&moved).expect("update");
        t.update(&b_to_a).expect("update");
        assert_eq!(a_cells.latched_peer(), Some(sa(CALLER)));
        assert_eq!(t.destination(sa(B)), Some(sa(CALLER)));
        assert_eq!(
            process(&mut t, sa(A), sa(CALLER), 10, 2),
            Verdict::Forward {
                via: sa(B),
                to: sa("10.0.1.3:4002")
            }
        );
        assert_eq!(a_cells.snapshot().packets, 2, "counters survive updates");

        // A new expected peer: latch afresh; B forgets what the old latch taught.
        moved.expected_peer = Some(sa("192.0.2.11:5000"));
        t.update(&moved).expect("update");
        assert_eq!(a_cells.latched_peer(), None);
        assert_eq!(t.destination(sa(B)), None);
        assert!(matches!(
            process(&mut t, sa(A), sa(INTRUDER), 10, 3),
            Verdict::Forward { .. }
        ));
        assert_eq!(a_cells.latched_peer(), Some(sa(INTRUDER)));
        assert_eq!(t.destination(sa(B)), Some(sa(INTRUDER)));
        assert_eq!(t.counters().get(Counter::Latched), 2);
    }

    #[test]
    fn table_refuses_duplicates_and_bad_rules() {
        let mut t = table();
        let rule = StreamRule::fixed(sa(A), sa(B), sa(CALLEE));
        insert(&mut t, &rule);
        assert!(matches!(
            t.insert(&rule, Arc::default()),
            Err(DataplaneError::AlreadyInstalled(addr)) if addr == sa(A)
        ));
        let mut bad = StreamRule::fixed(sa("10.0.0.1:30004"), sa(B), sa(CALLEE));
        bad.strict_source = true;
        assert!(matches!(
            t.insert(&bad, Arc::default()),
            Err(DataplaneError::InvalidRule(_))
        ));
        assert_eq!(t.len(), 1);
        assert!(t.remove(sa(A)).is_some());
        assert!(t.is_empty());
    }

    // ---- Over loopback: all of 127.0.0.0/8 is local on Linux. Each test has its own /24. ----

    const TIMEOUT: Duration = Duration::from_secs(2);

    fn party(addr: &str) -> UdpSocket {
        let socket = UdpSocket::bind(addr).expect("bind a party");
        socket.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        socket
    }

    fn addr_of(socket: &UdpSocket) -> SocketAddrV4 {
        match socket.local_addr().expect("local address") {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(a) => panic!("IPv6 address {a}"),
        }
    }

    fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddrV4) {
        let mut buf = [0u8; 2048];
        let (n, from) = socket.recv_from(&mut buf).expect("a datagram in time");
        let SocketAddr::V4(from) = from else {
            panic!("IPv6 sender {from}")
        };
        (buf[..n].to_vec(), from)
    }

    fn relay() -> SocketRelay {
        SocketRelay::start(SocketRelayConfig::default()).expect("start the relay")
    }

    /// Waits until `counter` reaches `value` (the worker counts asynchronously).
    fn wait_counter(relay: &SocketRelay, counter: Counter, value: u64) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let now = relay.counters().expect("counters").get(counter);
            if now >= value {
                assert_eq!(now, value, "{}", counter.name());
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} stuck at {now}",
                counter.name()
            );
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn legs(net: &str, caller: Peer, callee: Peer) -> (Leg, Leg) {
        (
            Leg {
                relay: sa(&format!("{net}.2:20000")),
                peer: caller,
            },
            Leg {
                relay: sa(&format!("{net}.3:20002")),
                peer: callee,
            },
        )
    }

    #[test]
    fn relays_both_ways_with_the_source_rewritten() {
        let net = "127.77.1";
        let caller = party(&format!("{net}.10:0"));
        let callee = party(&format!("{net}.11:0"));
        let (a, b) = legs(
            net,
            Peer::Known(addr_of(&caller)),
            Peer::Known(addr_of(&callee)),
        );
        let mut relay = relay();
        assert_eq!(relay.kind(), BackendKind::Sockets);
        let [a_to_b, b_to_a] = bidirectional(a, b, false);
        let forward = relay.install(&a_to_b).expect("install");
        let backward = relay.install(&b_to_a).expect("install");

        let mut bytes = [0u64; 2];
        for i in 0..5u8 {
            let payload = vec![i; 100 + usize::from(i)];
            caller.send_to(&payload, a.relay).expect("send");
            let (got, from) = recv(&callee);
            assert_eq!((got, from), (payload.clone(), b.relay));
            bytes[0] += payload.len() as u64;

            let reply = vec![0x80 | i; 40];
            callee.send_to(&reply, b.relay).expect("send");
            let (got, from) = recv(&caller);
            assert_eq!((got, from), (reply.clone(), a.relay));
            bytes[1] += reply.len() as u64;
        }
        let f = relay.stream_counters(forward).expect("counters");
        let r = relay.stream_counters(backward).expect("counters");
        assert_eq!((f.packets, f.bytes), (5, bytes[0]));
        assert_eq!((r.packets, r.bytes), (5, bytes[1]));
        assert!(f.last_seen.is_some_and(|t| t <= monotonic_now()));
        // Tx counts once sendmmsg returns, which can be after the datagram arrived.
        wait_counter(&relay, Counter::Tx, 10);
        assert_eq!(relay.counters().expect("counters").drops(), 0);
        assert_eq!(relay.latched_peer(forward).expect("peer"), None);
        assert!(matches!(
            relay.install(&a_to_b),
            Err(DataplaneError::AlreadyInstalled(addr)) if addr == a.relay
        ));
    }

    #[test]
    fn latching_caller_unblocks_the_callee() {
        let net = "127.77.2";
        let caller = party(&format!("{net}.10:0"));
        let callee = party(&format!("{net}.11:0"));
        let intruder = party(&format!("{net}.66:0"));
        let (a, b) = legs(net, Peer::Latch(None), Peer::Known(addr_of(&callee)));
        let mut relay = relay();
        let [a_to_b, b_to_a] = bidirectional(a, b, true);
        let forward = relay.install(&a_to_b).expect("install");
        let backward = relay.install(&b_to_a).expect("install");

        callee.send_to(b"early", b.relay).expect("send");
        wait_counter(&relay, Counter::DropDstPending, 1);
        assert_eq!(relay.latched_peer(forward).expect("peer"), None);

        caller.send_to(b"hello", a.relay).expect("send");
        assert_eq!(recv(&callee), (b"hello".to_vec(), b.relay));
        assert_eq!(
            relay.latched_peer(forward).expect("peer"),
            Some(addr_of(&caller))
        );
        callee.send_to(b"welcome", b.relay).expect("send");
        assert_eq!(recv(&caller), (b"welcome".to_vec(), a.relay));

        // Once latched, strict source holds the leg to the caller.
        intruder.send_to(b"spoof", a.relay).expect("send");
        wait_counter(&relay, Counter::DropSourceMismatch, 1);
        caller.send_to(b"again", a.relay).expect("send");
        assert_eq!(recv(&callee), (b"again".to_vec(), b.relay));

        wait_counter(&relay, Counter::Tx, 3);
        let counters = relay.counters().expect("counters");
        assert_eq!(counters.get(Counter::Latched), 1);
        assert_eq!(relay.stream_counters(forward).expect("c").packets, 2);
        assert_eq!(relay.stream_counters(backward).expect("c").bytes, 7);
    }

    #[test]
    fn strict_source_drops_an_intruder() {
        let net = "127.77.3";
        let caller = party(&format!("{net}.10:0"));
        let callee = party(&format!("{net}.11:0"));
        let intruder = party(&format!("{net}.66:0"));
        let (a, b) = legs(
            net,
            Peer::Known(addr_of(&caller)),
            Peer::Known(addr_of(&callee)),
        );
        let mut relay = relay();
        let [a_to_b, b_to_a] = bidirectional(a, b, true);
        let forward = relay.install(&a_to_b).expect("install");
        relay.install(&b_to_a).expect("install");

        intruder.send_to(b"spoof", a.relay).expect("send");
        wait_counter(&relay, Counter::DropSourceMismatch, 1);
        caller.send_to(b"real", a.relay).expect("send");
        // The first datagram the callee sees is the real one.
        assert_eq!(recv(&callee), (b"real".to_vec(), b.relay));
        assert_eq!(relay.stream_counters(forward).expect("c").packets, 1);
    }

    #[test]
    fn remove_stops_forwarding_and_frees_the_ports() {
        let net = "127.77.4";
        let caller = party(&format!("{net}.10:0"));
        let callee = party(&format!("{net}.11:0"));
        let (a, b) = legs(
            net,
            Peer::Known(addr_of(&caller)),
            Peer::Known(addr_of(&callee)),
        );
        let mut relay = relay();
        let [a_to_b, b_to_a] = bidirectional(a, b, false);
        let forward = relay.install(&a_to_b).expect("install");
        let backward = relay.install(&b_to_a).expect("install");
        caller.send_to(b"one", a.relay).expect("send");
        assert_eq!(recv(&callee).0, b"one");

        let last = relay.remove(forward).expect("remove");
        assert_eq!((last.packets, last.bytes), (1, 3));
        assert!(matches!(
            relay.stream_counters(forward),
            Err(DataplaneError::UnknownStream(_))
        ));
        // A's socket stays open (the backward rule sends from it) but has no rule now.
        caller.send_to(b"two", a.relay).expect("send");
        wait_counter(&relay, Counter::DropUnknownPort, 1);
        relay.remove(backward).expect("remove");
        assert!(matches!(
            relay.remove(backward),
            Err(DataplaneError::UnknownStream(_))
        ));

        // Both ports are free again, for anyone.
        drop(UdpSocket::bind(a.relay).expect("A is free"));
        drop(UdpSocket::bind(b.relay).expect("B is free"));
        let forward = relay.install(&a_to_b).expect("re-install");
        relay.install(&b_to_a).expect("re-install");
        caller.send_to(b"three", a.relay).expect("send");
        assert_eq!(recv(&callee), (b"three".to_vec(), b.relay));
        assert_eq!(relay.stream_counters(forward).expect("c").packets, 1);
    }

    #[test]
    fn bind_failure_is_a_typed_error_and_leaves_nothing_behind() {
        let net = "127.77.5";
        let squatter = UdpSocket::bind(format!("{net}.3:20002")).expect("squat B");
        let rule = StreamRule::fixed(
            sa(&format!("{net}.2:20000")),
            sa(&format!("{net}.3:20002")),
            sa(&format!("{net}.11:4000")),
        );
        let mut relay = relay();
        match relay.install(&rule) {
            Err(e @ DataplaneError::Syscall { call: "bind", .. }) => {
                assert!(e.to_string().contains("127.77.5.3:20002"), "{e}");
                assert_eq!(
                    crate::error::errno_of(&e),
                    Some(libc::EADDRINUSE),
                    "the errno survives"
                );
            }
            other => panic!("expected a bind error, got {other:?}"),
        }
        // A was not left bound.
        drop(UdpSocket::bind(rule.local).expect("A is free"));
        drop(squatter);
        relay.install(&rule).expect("install once B is free");
        let mut bad = rule;
        bad.local = sa(&format!("{net}.2:0"));
        assert!(matches!(
            relay.install(&bad),
            Err(DataplaneError::InvalidRule(_))
        ));
        assert!(matches!(
            SocketRelay::start(SocketRelayConfig {
                workers: 2,
                ..SocketRelayConfig::default()
            }),
            Err(DataplaneError::InvalidConfig(_))
        ));
    }

    #[test]
    fn update_moves_the_source_and_keeps_counters() {
        let net = "127.77.6";
        let caller = party(&format!("{net}.10:0"));
        let callee = party(&format!("{net}.11:0"));
        let one_way = StreamRule::fixed(
            sa(&format!("{net}.2:20000")),
            sa(&format!("{net}.3:20002")),
            addr_of(&callee),
        );
        let mut relay = relay();
        let id = relay.install(&one_way).expect("install");
        caller.send_to(b"x", one_way.local).expect("send");
        assert_eq!(recv(&callee).1, one_way.source);

        let mut moved = one_way;
        moved.source = sa(&format!("{net}.3:20004"));
        relay.update(id, &moved).expect("update");
        caller.send_to(b"y", one_way.local).expect("send");
        assert_eq!(recv(&callee), (b"y".to_vec(), moved.source));
        assert_eq!(relay.stream_counters(id).expect("c").packets, 2);
        // The old source closed.
        drop(UdpSocket::bind(one_way.source).expect("old source is free"));
        let mut elsewhere = moved;
        elsewhere.local = sa(&format!("{net}.2:20010"));
        assert!(matches!(
            relay.update(id, &elsewhere),
            Err(DataplaneError::InvalidRule(_))
        ));
    }

    #[test]
    fn two_hundred_streams_through_one_worker() {
        const STREAMS: u16 = 200;
        const PACKETS: usize = 20;
        const CHUNK: u16 = 10;
        let net = "127.77.7";
        let caller = party(&format!("{net}.10:0"));
        let callee = party(&format!("{net}.11:0"));
        let mut relay = relay();
        let mut ids = Vec::new();
        let mut legs_of = Vec::new();
        for s in 0..STREAMS {
            let (a, b) = (
                Leg {
                    relay: sa(&format!("{net}.2:{}", 30000 + 2 * s)),
                    peer: Peer::Known(addr_of(&caller)),
                },
                Leg {
                    relay: sa(&format!("{net}.3:{}", 30000 + 2 * s)),
                    peer: Peer::Known(addr_of(&callee)),
                },
            );
            let [a_to_b, b_to_a] = bidirectional(a, b, true);
            ids.push((
                relay.install(&a_to_b).expect("install"),
                relay.install(&b_to_a).expect("install"),
            ));
            legs_of.push((a, b));
        }
        let started = Instant::now();
        let mut seen_fwd = vec![0usize; usize::from(STREAMS)];
        let mut seen_back = vec![0usize; usize::from(STREAMS)];
        for chunk in (0..STREAMS).step_by(usize::from(CHUNK)) {
            // Each relay socket gets 20 datagrams queued at once: recvmmsg takes them together.
            for s in chunk..chunk + CHUNK {
                let (a, b) = legs_of[usize::from(s)];
                for p in 0..PACKETS {
                    let payload = [s.to_be_bytes().as_slice(), &[p as u8; 30]].concat();
                    caller.send_to(&payload, a.relay).expect("send");
                    callee.send_to(&payload[..20], b.relay).expect("send");
                }
            }
            for _ in 0..usize::from(CHUNK) * PACKETS {
                let (got, from) = recv(&callee);
                let s = usize::from(u16::from_be_bytes([got[0], got[1]]));
                assert_eq!(from, legs_of[s].1.relay);
                assert_eq!(got.len(), 32);
                seen_fwd[s] += 1;
                let (got, from) = recv(&caller);
                let s = usize::from(u16::from_be_bytes([got[0], got[1]]));
                assert_eq!(from, legs_of[s].0.relay);
                seen_back[s] += 1;
            }
        }
        let elapsed = started.elapsed();
        assert!(seen_fwd.iter().chain(&seen_back).all(|&n| n == PACKETS));
        for (forward, backward) in ids {
            let f = relay.stream_counters(forward).expect("c");
            let b = relay.stream_counters(backward).expect("c");
            assert_eq!((f.packets, f.bytes), (PACKETS as u64, 32 * PACKETS as u64));
            assert_eq!((b.packets, b.bytes), (PACKETS as u64, 20 * PACKETS as u64));
        }
        wait_counter(&relay, Counter::Tx, 2 * u64::from(STREAMS) * PACKETS as u64);
        assert_eq!(relay.counters().expect("counters").drops(), 0);
        assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    }
}
