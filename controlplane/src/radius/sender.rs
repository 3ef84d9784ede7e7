//! The RADIUS sender: its own thread, woken through a crossbeam channel whenever a call's
//! record may have been queued, sending the outbox in order and removing what a server
//! acknowledged.
//!
//! Per batch (up to [`WINDOW`] records, at most one per call so that a call's Start is
//! acknowledged before its Stop goes out), per server starting with the last one that
//! answered: every unacknowledged record is sent with a fresh Identifier and Acct-Delay-Time
//! (RFC 5080 §2.2.1: a changed attribute is a new request), then answers are awaited for the
//! timeout, doubled on each retry, `retries` times. A server that does not answer them all is
//! left for the next one (failover); a server refusing the datagrams (ICMP port unreachable)
//! is left at once. When every server failed, the batch waits for a backoff (1 s doubling to
//! 60 s) and tries again, from the head of the outbox: nothing is skipped and nothing lost.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::attributes::{attributes, AcctRecord, Nas};
use super::outbox::Outbox;
use super::packet;

/// Records in flight at once.
pub const WINDOW: usize = 32;
/// The most retries: [`WINDOW`] × (retries + 1) identifiers must stay under 256.
pub const MAX_RETRIES: u32 = 5;
/// How often an idle sender looks at the outbox without being woken.
pub const IDLE_POLL: Duration = Duration::from_secs(5);
/// The first and the longest wait after every server failed.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The wait before the next try after `failures` rounds in a row in which every server failed.
pub fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// The timeout of try `attempt` (0 first): doubled each time.
pub fn attempt_timeout(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1 << attempt.min(16))
}

/// How the sender reaches its servers: UDP in `sluice run`, a script in the tests.
pub trait Link {
    /// Sends a datagram to server `server`.
    fn send(&mut self, server: usize, packet: &[u8]) -> io::Result<()>;
    /// The next datagram from server `server`, waiting until `deadline` at most; `Ok(None)` if
    /// none came.
    fn recv(&mut self, server: usize, deadline: Instant) -> io::Result<Option<Vec<u8>>>;
    /// The local address requests to `server` leave from (NAS-IP-Address by default).
    fn source(&self, server: usize) -> Option<IpAddr>;
}

/// Wall-clock and monotonic time (a fake one in the tests).
pub trait Clock {
    fn now(&self) -> SystemTime;
    fn instant(&self) -> Instant;
}

/// The real clocks.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// One connected UDP socket per server: a server with nothing listening shows up as
/// ECONNREFUSED at once instead of after every timeout.
pub struct UdpLink {
    sockets: Vec<UdpSocket>,
}

impl UdpLink {
    pub fn connect(servers: &[SocketAddr]) -> io::Result<Self> {
        let sockets = servers
            .iter()
            .map(|server| {
                let any: SocketAddr = if server.is_ipv4() {
                    (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let socket = UdpSocket::bind(any)?;
                socket.connect(server)?;
                Ok(socket)
            })
            .collect::<io::Result<_>>()?;
        Ok(Self { sockets })
    }
}

impl Link for UdpLink {
    fn send(&mut self, server: usize, packet: &[u8]) -> io::Result<()> {
        self.sockets[server].send(packet).map(drop)
    }

    fn recv(&mut self, server: usize, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        let socket = &self.sockets[server];
        let mut buf = [0u8; packet::MAX_PACKET_LEN];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            socket.set_read_timeout(Some(left))?;
            match socket.recv(&mut buf) {
                Ok(n) => return Ok(Some(buf[..n].to_vec())),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn source(&self, server: usize) -> Option<IpAddr> {
        self.sockets[server].local_addr().ok().map(|a| a.ip())
    }
}

/// What the sender needs to know.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    pub servers: Vec<SocketAddr>,
    pub secret: Vec<u8>,
    pub nas: Nas,
    pub timeout: Duration,
    pub retries: u32,
}

/// What became of a batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Acknowledged: remove from the outbox.
    pub acked: Vec<i64>,
    /// Records that cannot be encoded (never happens with the attributes we make; dropped
    /// rather than blocking the outbox for ever).
    pub unsendable: Vec<i64>,
}

/// Sends batches of records to the servers, with retries and failover.
pub struct Delivery<L, C> {
    config: SenderConfig,
    link: L,
    clock: C,
    /// The server tried first: the last one that answered.
    current: usize,
    next_id: u8,
}

fn refused(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    )
}

impl<L: Link, C: Clock> Delivery<L, C> {
    pub fn new(config: SenderConfig, link: L, clock: C) -> Self {
        // Identifiers start anywhere, so that a restarted sender's first requests do not look
        // like retransmissions of the last run's (servers keep a duplicate cache by identifier
        // and source).
        let next_id = (SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos()
            % 256) as u8;
        Self {
            config,
            link,
            clock,
            current: 0,
            next_id,
        }
    }

    /// The server tried first.
    pub fn current(&self) -> SocketAddr {
        self.config.servers[self.current]
    }

    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Delivers `batch` (distinct calls) to the first server that acknowledges it all.
    pub fn deliver(&mut self, batch: &[AcctRecord]) -> Delivered {
        let mut out = Delivered::default();
        let mut done: HashSet<i64> = HashSet::new();
        let n = self.config.servers.len();
        for k in 0..n {
            let server = (self.current + k) % n;
            let addr = self.config.servers[server];
            // Every request sent to this server for this batch, by identifier: a late answer to
            // an earlier try still acknowledges its record.
            let mut sent: HashMap<u8, (i64, Vec<u8>)> = HashMap::new();
            let mut why = None;
            let mut bad_answers = 0usize;
            let mut tries = 0;
            for attempt in 0..=self.config.retries {
                tries = attempt + 1;
                let source = self.link.source(server);
                let unacked: Vec<&AcctRecord> =
                    batch.iter().filter(|r| !done.contains(&r.seq)).collect();
                for record in unacked {
                    let id = self.next_id;
                    self.next_id = self.next_id.wrapping_add(1);
                    let attrs = attributes(record, &self.config.nas, source, self.clock.now());
                    let request = match packet::accounting_request(id, &attrs, &self.config.secret)
                    {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::error!(seq = record.seq, call_id = %record.call.call_id, error = %e, "an accounting record cannot be sent; dropped");
                            done.insert(record.seq);
                            out.unsendable.push(record.seq);
                            continue;
                        }
                    };
                    if let Err(e) = self.link.send(server, &request) {
                        why = Some(e);
                        break;
                    }
                    sent.insert(id, (record.seq, request));
                }
                if why.is_some() {
                    break;
                }
                let deadline = self.clock.instant() + attempt_timeout(self.config.timeout, attempt);
                while batch.iter().any(|r| !done.contains(&r.seq)) {
                    match self.link.recv(server, deadline) {
                        Ok(Some(answer)) => {
                            let Some((seq, request)) =
                                packet::identifier(&answer).and_then(|id| sent.get(&id))
                            else {
                                bad_answers += 1;
                                continue;
                            };
                            match packet::check_response(&answer, request, &self.config.secret) {
                                Ok(()) => {
                                    if done.insert(*seq) {
                                        out.acked.push(*seq);
                                    }
                                }
                                Err(e) => {
                                    bad_answers += 1;
                                    tracing::debug!(server = %addr, error = %e, "a RADIUS answer ignored");
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            why = Some(e);
                            break;
                        }
                    }
                }
                if batch.iter().all(|r| done.contains(&r.seq)) {
                    if k > 0 {
                        tracing::info!(server = %addr, "RADIUS accounting fails over to this server");
                    }
                    self.current = server;
                    return out;
                }
                if why.is_some() {
                    break;
                }
            }
            let left = batch.iter().filter(|r| !done.contains(&r.seq)).count();
            match why {
                Some(e) if refused(&e) => tracing::warn!(
                    server = %addr,
                    unanswered = left,
                    "RADIUS server refuses accounting requests (nothing listens there?)"
                ),
                Some(e) => {
                    tracing::warn!(server = %addr, unanswered = left, error = %e, "RADIUS server unreachable")
                }
                None if bad_answers > 0 => tracing::warn!(
                    server = %addr,
                    unanswered = left,
                    tries,
                    bad_answers,
                    "RADIUS server answers do not check out with our shared secret (wrong secret?)"
                ),
                None => tracing::warn!(
                    server = %addr,
                    unanswered = left,
                    tries,
                    "no answer from the RADIUS server to accounting requests (down, or a wrong shared secret?)"
                ),
            }
        }
        out
    }
}

/// The sender's loop state: the outbox, the delivery and the backoff.
pub struct Sender<L, C> {
    pub outbox: Outbox,
    pub delivery: Delivery<L, C>,
    failures: u32,
    /// Every record up to this one has left the outbox, sent or dropped by its bound.
    last_seq: Option<i64>,
    /// Records past `last_seq` that were sent (a batch can succeed in part).
    sent_ahead: HashSet<i64>,
    /// How many records the outbox's bound dropped before they could be sent.
    pub dropped: u64,
}

/// What one pass over the outbox did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pass {
    /// The outbox is empty.
    Empty,
    /// Told to stop.
    Stopped,
    /// Every server failed; try again after this.
    Failed(Duration),
}

impl<L: Link, C: Clock> Sender<L, C> {
    pub fn new(outbox: Outbox, delivery: Delivery<L, C>) -> Self {
        Self {
            outbox,
            delivery,
            failures: 0,
            last_seq: None,
            sent_ahead: HashSet::new(),
            dropped: 0,
        }
    }

    /// Sends batches until the outbox is empty, a batch fails, or `stop` says so.
    pub fn pass(&mut self, stop: &dyn Fn() -> bool) -> Pass {
        loop {
            if stop() {
                return Pass::Stopped;
            }
            let mut batch = match self.outbox.head(WINDOW) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "reading the RADIUS outbox");
                    self.failures += 1;
                    return Pass::Failed(backoff(self.failures));
                }
            };
            if batch.is_empty() {
                return Pass::Empty;
            }
            // One record per call in flight: a call's next record waits for the batch after.
            let mut calls = HashSet::new();
            let first_repeat = batch
                .iter()
                .position(|r| !calls.insert((r.call.call_id.clone(), r.call.from_tag.clone())));
            if let Some(i) = first_repeat {
                batch.truncate(i);
            }
            // Sequence numbers only grow and rows leave only when sent or dropped by the bound:
            // what is missing before the head, and was not sent, was dropped.
            let head = batch[0].seq;
            if let Some(last) = self.last_seq {
                let sent = self
                    .sent_ahead
                    .iter()
                    .filter(|&&s| s > last && s < head)
                    .count() as i64;
                let dropped = (head - last - 1 - sent).max(0);
                if dropped > 0 {
                    self.dropped += dropped as u64;
                    tracing::warn!(
                        dropped,
                        "accounting records dropped from the full RADIUS outbox (their CDRs are in the database)"
                    );
                }
            }
            self.last_seq = Some(head - 1);
            self.sent_ahead.retain(|&s| s >= head);
            let delivered = self.delivery.deliver(&batch);
            let removed: Vec<i64> = delivered
                .acked
                .iter()
                .chain(&delivered.unsendable)
                .copied()
                .collect();
            if let Err(e) = self.outbox.remove(&removed) {
                tracing::error!(error = %e, "removing sent records from the RADIUS outbox");
            }
            self.sent_ahead.extend(&removed);
            if removed.len() == batch.len() {
                if self.failures > 0 {
                    tracing::info!(
                        server = %self.delivery.current(),
                        "RADIUS accounting caught up with a server again"
                    );
                }
                self.failures = 0;
            } else {
                self.failures += 1;
                let wait = backoff(self.failures);
                tracing::warn!(
                    queued = self.outbox.len().unwrap_or(0),
                    retry_in = ?wait,
                    "RADIUS accounting records stay queued: no server acknowledged them"
                );
                return Pass::Failed(wait);
            }
        }
    }

    /// Runs until the channel closes, woken by a message on it or every [`IDLE_POLL`].
    pub fn run(mut self, wake: Receiver<()>) {
        let mut next_try: Option<Instant> = None;
        match self.outbox.len() {
            Ok(0) => {}
            Ok(n) => tracing::info!(queued = n, "RADIUS accounting records left from before"),
            Err(e) => tracing::error!(error = %e, "reading the RADIUS outbox"),
        }
        loop {
            // Honour the backoff even when woken: a new call does not make a dead server live.
            let now = self.delivery.clock().instant();
            let wait = next_try.map_or(Duration::ZERO, |at| at.saturating_duration_since(now));
            let woke = if wait.is_zero() && next_try.is_some() {
                Ok(())
            } else {
                wake.recv_timeout(if wait.is_zero() { IDLE_POLL } else { wait })
            };
            if let Err(RecvTimeoutError::Disconnected) = woke {
                return;
            }
            if next_try.is_some_and(|at| self.delivery.clock().instant() < at) {
                continue;
            }
            let stopping = || matches!(wake.try_recv(), Err(TryRecvError::Disconnected));
            next_try = match self.pass(&stopping) {
                Pass::Stopped => return,
                Pass::Empty => None,
                Pass::Failed(wait) => Some(self.delivery.clock().instant() + wait),
            };
        }
    }
}
