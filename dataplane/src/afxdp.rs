//! The AF_XDP forwarding path: the XDP program checks and latches as usual, then hands a
//! userspace stream's packets, unchanged, to an AF_XDP socket with the next hop in front of them
//! ([`XskMeta`](sluice_ebpf::abi::XskMeta)); pinned worker threads rewrite, count and transmit.
//!
//! # Design
//!
//! * **Workers and queues.** One worker thread per receive-queue index `q` (named `afxdp-q{q}`),
//!   owning one AF_XDP socket per relay interface bound to `(interface, q)`. A stream's packets
//!   arrive on one interface and usually leave on the other, and an AF_XDP socket transmits
//!   only on the device it is bound to; giving one worker every interface of its queue lets it
//!   receive on A and transmit on B itself, with no hand-off between threads.
//! * **Shared UMEM.** A worker's sockets all share ONE UMEM: the first socket owns it (bound
//!   zero-copy if the driver offers it, else copy mode, with need-wakeup), the others bind with
//!   `XDP_SHARED_UMEM` (flags 0: they inherit the owner's mode) and their own fill and
//!   completion rings. A frame received on A is transmitted on B from the very same chunk, no
//!   copy. Completions of every socket return chunks to one free list that refills every fill
//!   ring.
//! * **XSKMAP.** A socket serves one `(interface, queue)`, so the program must redirect by both:
//!   with the `xsk_slots` map (ifindex -> slot) the key is `slot * MAX_QUEUES + queue`
//!   ([`Dataplane::register_xsk_on`]).
//! * **Thin ring loop, pure batch function.** The loop only moves descriptors: completion ring ->
//!   free list -> fill ring, RX peek/release, [`process_batch`] (parsing, lookup, rewrite and
//!   counting, a pure function unit-tested and benchmarked without sockets), TX submit and the
//!   `sendto()` wake-up, repeated while descriptors are pending (copy mode moves at most 32 per
//!   call). It takes from RX no more than every TX ring can accept, so a full TX ring backs up
//!   into the RX ring instead of dropping after the fact.
//! * **poll() when idle.** When a round moves nothing the worker blocks in `poll()` on its RX
//!   sockets and an eventfd (timeout [`AfXdpConfig::poll_timeout`]). Busy-polling would take a
//!   core from the kernel's softirqs, which do half of the work in copy mode.
//! * **Control over a channel.** Each worker owns its rule table (a `HashMap` keyed like the
//!   kernel's `flows`). `install`, `update` and `remove` send the change to every worker over a
//!   crossbeam channel, wake it through its eventfd and wait for its acknowledgement, so the
//!   packet right after `install` returns is handled.
//! * **Latched destinations.** A latch rewrites the reverse rule's destination in the kernel map
//!   only. The worker knows which rule teaches which (from [`StreamRule::teach`]); for a taught
//!   rule it has not settled yet, it reads the teacher's kernel rule per packet and, once that
//!   one has latched, reads the taught rule's destination back from the kernel and keeps it
//!   (two map lookups, once per stream; before the latch, one lookup per packet, and only while
//!   the caller has not spoken). It never goes stale: a replaced rule starts over, as the
//!   kernel's latch does.
//! * **Counters.** Per stream and worker, an `Arc` of atomics written by that worker alone
//!   (relaxed load + store, no locked instruction) and read by the control plane at any time;
//!   likewise one array of verdict counters per worker. [`Forwarder::stream_counters`] adds the
//!   kernel's counters of the stream (packets the kernel forwarded itself, e.g. through the
//!   stack while a neighbour was unresolved) to the workers'. [`Forwarder::counters`] adds the
//!   workers' counters to the kernel's: the kernel's [`Counter::Userspace`] is the hand-off,
//!   the workers' forwarded packets count as [`Counter::Tx`], and their drops under the
//!   program's reasons (`DropMalformed`, `DropUnknownPort`, `DropDstPending`, `DropNoTxPort`).

mod batch;
mod worker;

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use sluice_ebpf::abi::{Counter, FlowKey};
use tracing::{info, warn};

pub use batch::{
    process_batch, BatchSummary, FrameRef, KernelRules, NoKernel, RuleTable, StreamCell, Verdict,
    WorkerCounters, WorkerRule, META_LEN,
};
use worker::{Bound, Command, WorkerSetup};

use crate::{
    BackendKind, CounterSnapshot, Dataplane, DataplaneError, Forwarder, StreamCounters, StreamId,
    StreamRule,
};

/// How long the control plane waits for a worker to apply a rule or to stop.
const WORKER_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of the AF_XDP workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfXdpConfig {
    /// Receive queues to serve per interface (one worker each). `None`: what the drivers report
    /// (ETHTOOL_GCHANNELS, the largest over the interfaces), 1 if they do not say (veth).
    pub queues: Option<u32>,
    /// The core to pin worker `q` to, by index; missing or `None`: not pinned.
    pub cores: Vec<Option<usize>>,
    /// UMEM frames per worker.
    pub frames: u32,
    /// Bytes per frame: a power of two, 2048 or 4096.
    pub frame_size: u32,
    /// Entries of every fill, completion, RX and TX ring: a power of two.
    pub ring_size: u32,
    /// Most frames taken from an RX ring at once.
    pub batch: u32,
    /// Never try zero-copy.
    pub force_copy: bool,
    /// How long an idle worker blocks in poll() before it looks at its channel again.
    pub poll_timeout: Duration,
}

impl Default for AfXdpConfig {
    fn default() -> Self {
        Self {
            queues: None,
            cores: Vec::new(),
            // 16 MiB of UMEM per worker; RX rings of 4096 hold 40 ms at 100 kpps, so a worker
            // that loses its core for a scheduling slice loses no packet.
            frames: 8192,
            frame_size: 2048,
            ring_size: 4096,
            batch: 64,
            force_copy: false,
            poll_timeout: Duration::from_millis(100),
        }
    }
}

impl AfXdpConfig {
    fn check(&self) -> Result<(), DataplaneError> {
        let bad = |why: String| Err(DataplaneError::InvalidConfig(why));
        if !matches!(self.frame_size, 2048 | 4096) {
            return bad(format!(
                "AF_XDP frame_size {}: 2048 or 4096",
                self.frame_size
            ));
        }
        if !self.ring_size.is_power_of_two() || self.ring_size < 64 {
            return bad(format!(
                "AF_XDP ring_size {}: a power of two >= 64",
                self.ring_size
            ));
        }
        if self.frames < 2 * self.ring_size.min(1024) {
            return bad(format!(
                "AF_XDP frames {}: too few for the rings",
                self.frames
            ));
        }
        if self.batch == 0 {
            return bad("AF_XDP batch must be above 0".into());
        }
        if self.queues == Some(0) {
            return bad("AF_XDP queues must be above 0".into());
        }
        Ok(())
    }
}

/// How an AF_XDP socket moves frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum XskMode {
    /// The driver DMAs into the UMEM.
    ZeroCopy,
    /// The kernel copies between its buffers and the UMEM (veth, drivers without AF_XDP support).
    Copy,
}

impl XskMode {
    /// `zero-copy` or `copy`.
    pub fn name(self) -> &'static str {
        match self {
            XskMode::ZeroCopy => "zero-copy",
            XskMode::Copy => "copy",
        }
    }
}

/// One AF_XDP socket of the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XskSocket {
    /// The queue, and the worker (`afxdp-q{queue}`) that owns the socket.
    pub queue: u32,
    pub iface: String,
    pub ifindex: u32,
    pub mode: XskMode,
    /// The socket, owned by its worker; read here only for its drop statistics.
    fd: std::os::fd::RawFd,
}

struct WorkerHandle {
    queue: u32,
    commands: Sender<Command>,
    acks: Receiver<()>,
    wake: Arc<OwnedFd>,
    counters: Arc<WorkerCounters>,
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Sends a command and waits until the worker applied it.
    fn apply(&self, command: Command) -> Result<(), DataplaneError> {
        let dead = |why: &str| DataplaneError::AfXdp {
            what: format!("AF_XDP worker afxdp-q{}: {why}", self.queue),
            source: std::io::Error::from(std::io::ErrorKind::BrokenPipe),
        };
        self.commands
            .send(command)
            .map_err(|_| dead("sending a rule"))?;
        worker::notify(&self.wake);
        self.acks
            .recv_timeout(WORKER_TIMEOUT)
            .map_err(|_| dead("waiting for the rule to be applied"))
    }
}

struct Stream {
    key: FlowKey,
    rule: StreamRule,
    /// One per worker, in worker order.
    cells: Vec<Arc<StreamCell>>,
}

/// The relay forwarding in userspace through AF_XDP (see the [module docs](self)).
pub struct AfXdpRelay {
    workers: Vec<WorkerHandle>,
    sockets: Vec<XskSocket>,
    streams: HashMap<StreamId, Stream>,
    by_key: HashMap<FlowKey, StreamId>,
    /// Dropped after the workers stopped (see `Drop`), which closes their sockets first.
    dataplane: Dataplane,
}

impl AfXdpRelay {
    /// Starts one worker per receive queue on the interfaces `dataplane` is attached to, and
    /// registers their sockets. Call it from a thread in the relay's network namespace: the
    /// workers are spawned from it and inherit it.
    pub fn start(dataplane: Dataplane, config: AfXdpConfig) -> Result<Self, DataplaneError> {
        config.check()?;
        let ifaces: Vec<(String, u32)> = dataplane
            .attachments()
            .map(|a| (a.iface.clone(), a.ifindex))
            .collect();
        if ifaces.is_empty() {
            return Err(DataplaneError::InvalidConfig(
                "AF_XDP: the dataplane is attached to no interface".into(),
            ));
        }
        let queue_counts: Vec<u32> = ifaces
            .iter()
            .map(|(name, _)| worker::rx_queues(name).unwrap_or(1))
            .collect();
        let queues = config
            .queues
            .unwrap_or_else(|| queue_counts.iter().copied().max().unwrap_or(1))
            .min(sluice_ebpf::abi::MAX_QUEUES);

        // `relay` owns the workers from the first one on: on an error, dropping it stops those
        // already started before the dataplane detaches.
        let mut relay = Self {
            workers: Vec::new(),
            sockets: Vec::new(),
            streams: HashMap::new(),
            by_key: HashMap::new(),
            dataplane,
        };
        for q in 0..queues {
            // An interface with fewer queues has no socket on the others.
            let on_queue: Vec<(String, u32)> = ifaces
                .iter()
                .zip(&queue_counts)
                .filter(|(_, count)| config.queues.is_some() || q < **count)
                .map(|(iface, _)| iface.clone())
                .collect();
            relay.spawn_worker(q, on_queue, &config)?;
        }
        Ok(relay)
    }

    fn spawn_worker(
        &mut self,
        queue: u32,
        ifaces: Vec<(String, u32)>,
        config: &AfXdpConfig,
    ) -> Result<(), DataplaneError> {
        let (commands_tx, commands_rx) = unbounded();
        let (acks_tx, acks_rx) = unbounded();
        let (ready_tx, ready_rx) = bounded(1);
        let (done_tx, done_rx) = bounded::<()>(1);
        let wake = Arc::new(worker::eventfd()?);
        let counters = Arc::new(WorkerCounters::default());
        let kernel = worker::FlowsReader::new(self.dataplane.flows_fd()?)?;
        let mut table = RuleTable::new(
            ifaces.iter().map(|(_, i)| *i).collect(),
            counters.clone(),
            Box::new(kernel),
        );
        // A worker started while streams exist learns them before it forwards anything.
        let mut cells = Vec::new();
        for (id, stream) in &self.streams {
            let cell = Arc::new(StreamCell::default());
            table.upsert(stream.key, WorkerRule::new(&stream.rule, cell.clone()));
            cells.push((*id, cell));
        }
        let setup = WorkerSetup {
            queue,
            ifaces,
            config: config.clone(),
            core: config.cores.get(queue as usize).copied().flatten(),
            commands: commands_rx,
            acks: acks_tx,
            wake: wake.clone(),
            table,
            ready: ready_tx,
        };
        let thread = std::thread::Builder::new()
            .name(format!("afxdp-q{queue}"))
            .spawn(move || {
                worker::run(setup);
                drop(done_tx);
            })
            .map_err(|source| DataplaneError::AfXdp {
                what: format!("spawning AF_XDP worker afxdp-q{queue}"),
                source,
            })?;
        let handle = WorkerHandle {
            queue,
            commands: commands_tx,
            acks: acks_rx,
            wake,
            counters,
            done: done_rx,
            thread: Some(thread),
        };
        let bound = match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(bound)) => bound,
            Ok(Err(e)) => {
                stop_worker(handle);
                return Err(e);
            }
            Err(_) => {
                stop_worker(handle);
                return Err(DataplaneError::AfXdp {
                    what: format!("starting AF_XDP worker afxdp-q{queue}"),
                    source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                });
            }
        };
        for (id, cell) in cells {
            if let Some(stream) = self.streams.get_mut(&id) {
                stream.cells.push(cell);
            }
        }
        self.workers.push(handle);
        self.register(queue, &bound)
    }

    fn register(&mut self, queue: u32, bound: &[Bound]) -> Result<(), DataplaneError> {
        for b in bound {
            self.dataplane.register_xsk_on(b.ifindex, queue, b.fd)?;
            info!(
                queue,
                iface = %b.iface,
                mode = b.mode.name(),
                "AF_XDP socket registered"
            );
            self.sockets.push(XskSocket {
                queue,
                iface: b.iface.clone(),
                ifindex: b.ifindex,
                mode: b.mode,
                fd: b.fd,
            });
        }
        Ok(())
    }

    /// Every socket with its queue, interface and mode (zero-copy or copy).
    pub fn mode(&self) -> &[XskSocket] {
        &self.sockets
    }

    /// The XDP dataplane underneath (its kernel-side counters and rules).
    pub fn dataplane(&self) -> &Dataplane {
        &self.dataplane
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// The workers' own verdict counters, summed (without the kernel's).
    pub fn worker_counters(&self) -> CounterSnapshot {
        CounterSnapshot::from_fn(|c| self.workers.iter().map(|w| w.counters.get(c)).sum())
    }

    fn broadcast(&self, command: impl Fn() -> Command) -> Result<(), DataplaneError> {
        for w in &self.workers {
            w.apply(command())?;
        }
        Ok(())
    }

    fn worker_counters_of(stream: &Stream) -> (u64, u64, u64) {
        stream.cells.iter().fold((0, 0, 0), |(p, b, l), cell| {
            let (cp, cb, cl) = cell.read();
            (p + cp, b + cb, l.max(cl))
        })
    }

    fn combine(kernel: StreamCounters, workers: (u64, u64, u64)) -> StreamCounters {
        let (packets, bytes, last_ns) = workers;
        let worker_seen = (last_ns > 0).then(|| Duration::from_nanos(last_ns));
        StreamCounters {
            packets: kernel.packets + packets,
            bytes: kernel.bytes + bytes,
            last_seen: kernel.last_seen.max(worker_seen),
        }
    }
}

/// Signals a worker to stop and joins it, waiting at most [`WORKER_TIMEOUT`].
fn stop_worker(mut handle: WorkerHandle) {
    let _ = handle.commands.send(Command::Stop);
    worker::notify(&handle.wake);
    // `done` disconnects when the thread's closure ends.
    let finished = matches!(
        handle.done.recv_timeout(WORKER_TIMEOUT),
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) | Ok(())
    );
    if let Some(thread) = handle.thread.take() {
        if finished {
            let _ = thread.join();
        } else {
            warn!(
                queue = handle.queue,
                "AF_XDP worker did not stop in time; left running"
            );
        }
    }
}

impl Drop for AfXdpRelay {
    fn drop(&mut self) {
        // Close every socket before the Dataplane (a later field) detaches the program.
        for handle in self.workers.drain(..) {
            stop_worker(handle);
        }
    }
}

impl Forwarder for AfXdpRelay {
    fn kind(&self) -> BackendKind {
        BackendKind::AfXdp
    }

    fn install(&mut self, rule: &StreamRule) -> Result<StreamId, DataplaneError> {
        let key = FlowKey::new(rule.local);
        if self.by_key.contains_key(&key) {
            return Err(DataplaneError::AlreadyInstalled(rule.local));
        }
        rule.encode(0, 0)?;
        // Workers first: the kernel hands nothing over before they know the stream.
        let cells: Vec<Arc<StreamCell>> = self
            .workers
            .iter()
            .map(|_| Arc::new(StreamCell::default()))
            .collect();
        let mut sent = 0;
        for (w, cell) in self.workers.iter().zip(&cells) {
            let upsert = Command::Upsert(key, Box::new(WorkerRule::new(rule, cell.clone())));
            if let Err(e) = w.apply(upsert) {
                self.rollback_workers(key, sent);
                return Err(e);
            }
            sent += 1;
        }
        match self.dataplane.install_in_userspace(rule) {
            Ok(id) => {
                self.streams.insert(
                    id,
                    Stream {
                        key,
                        rule: *rule,
                        cells,
                    },
                );
                self.by_key.insert(key, id);
                Ok(id)
            }
            Err(e) => {
                self.rollback_workers(key, sent);
                Err(e)
            }
        }
    }

    fn update(&mut self, id: StreamId, rule: &StreamRule) -> Result<(), DataplaneError> {
        let stream = self
            .streams
            .get(&id)
            .ok_or(DataplaneError::UnknownStream(id))?;
        self.dataplane.update(id, rule)?;
        let key = stream.key;
        for (w, cell) in self.workers.iter().zip(&stream.cells) {
            w.apply(Command::Upsert(
                key,
                Box::new(WorkerRule::new(rule, cell.clone())),
            ))?;
        }
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.rule = *rule;
        }
        Ok(())
    }

    fn remove(&mut self, id: StreamId) -> Result<StreamCounters, DataplaneError> {
        let key = self
            .streams
            .get(&id)
            .ok_or(DataplaneError::UnknownStream(id))?
            .key;
        // The kernel stops handing packets over; then the workers forget the stream.
        let kernel = self.dataplane.remove(id)?;
        let result = self.broadcast(|| Command::Remove(key));
        let stream = self.streams.remove(&id);
        self.by_key.remove(&key);
        result?;
        let workers = stream.as_ref().map_or((0, 0, 0), Self::worker_counters_of);
        Ok(Self::combine(kernel, workers))
    }

    fn stream_counters(&self, id: StreamId) -> Result<StreamCounters, DataplaneError> {
        let stream = self
            .streams
            .get(&id)
            .ok_or(DataplaneError::UnknownStream(id))?;
        let kernel = self.dataplane.stream_counters(id)?;
        Ok(Self::combine(kernel, Self::worker_counters_of(stream)))
    }

    fn latched_peer(&self, id: StreamId) -> Result<Option<SocketAddrV4>, DataplaneError> {
        self.dataplane.latched_peer(id)
    }

    fn counters(&self) -> Result<CounterSnapshot, DataplaneError> {
        let kernel = self.dataplane.counters()?;
        let workers = self.worker_counters();
        let rings = self.ring_drops();
        Ok(CounterSnapshot::from_fn(|c: Counter| {
            kernel.get(c) + workers.get(c) + if c == Counter::DropXskRing { rings } else { 0 }
        }))
    }
}

impl AfXdpRelay {
    /// Packets the sockets dropped before a worker saw them: the RX ring was full, or there was
    /// no free frame to copy into (`XDP_STATISTICS`: `rx_dropped` and `rx_ring_full`).
    fn ring_drops(&self) -> u64 {
        const SOL_XDP: libc::c_int = 283;
        const XDP_STATISTICS: libc::c_int = 7;
        #[repr(C)]
        #[derive(Default)]
        struct Stats {
            rx_dropped: u64,
            rx_invalid_descs: u64,
            tx_invalid_descs: u64,
            rx_ring_full: u64,
            rx_fill_ring_empty_descs: u64,
            tx_ring_empty_descs: u64,
        }
        self.sockets
            .iter()
            .map(|s| {
                let mut stats = Stats::default();
                let mut len = std::mem::size_of::<Stats>() as libc::socklen_t;
                // SAFETY: getsockopt writes at most `len` bytes into `stats`, which we own; the fd
                // stays open while the worker that owns it runs, which is as long as `self`.
                let rc = unsafe {
                    libc::getsockopt(
                        s.fd,
                        SOL_XDP,
                        XDP_STATISTICS,
                        (&mut stats as *mut Stats).cast(),
                        &mut len,
                    )
                };
                if rc == 0 {
                    stats.rx_dropped + stats.rx_ring_full
                } else {
                    0
                }
            })
            .sum()
    }

    fn rollback_workers(&self, key: FlowKey, sent: usize) {
        for w in self.workers.iter().take(sent) {
            let _ = w.apply(Command::Remove(key));
        }
    }
}

/// The core of each AF_XDP worker (by queue index) from this host's core plan with the
/// `default` profile (`sluice hw plan`): the plan's core for that queue of one of `ifaces`. An
/// interface the plan does not cover (a veth in a test network) takes the plan's core for the same
/// queue of the host's first port, which it stands in for. Empty (unpinned) when the plan has no
/// workers.
pub fn planned_cores(ifaces: &[String]) -> Vec<Option<usize>> {
    let host = match sluice_hardware::Host::read() {
        Ok(host) => host,
        Err(e) => {
            tracing::warn!(error = %e, "cannot describe this host; AF_XDP workers unpinned");
            return Vec::new();
        }
    };
    let profile = match sluice_hardware::Profile::builtin("default") {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "no `default` profile; AF_XDP workers unpinned");
            return Vec::new();
        }
    };
    let plan = sluice_hardware::plan(&host, &profile);
    let workers: Vec<String> = plan
        .workers
        .iter()
        .map(|w| {
            format!(
                "{} q{} -> CPU {} ({:?})",
                w.iface, w.queue, w.core, w.placement
            )
        })
        .collect();
    tracing::info!(
        cpus = plan.host.cpus,
        ?workers,
        control_cores = ?plan.control_cores,
        os_cores = ?plan.os_cores,
        warnings = ?plan.warnings,
        notes = ?plan.notes,
        "core plan of this host (profile `default`)"
    );
    let cores: Vec<Option<usize>> = (0..sluice_ebpf::abi::MAX_QUEUES)
        .map(|q| {
            ifaces
                .iter()
                .find_map(|iface| sluice_hardware::worker_core(&plan, iface, q))
                .or_else(|| {
                    let first = plan.workers.first()?;
                    plan.workers
                        .iter()
                        .find(|w| w.iface == first.iface && w.queue == q)
                        .map(|w| w.core)
                })
        })
        .collect();
    if cores.iter().all(Option::is_none) {
        tracing::info!("the core plan gives no worker core; AF_XDP workers unpinned");
        return Vec::new();
    }
    cores
}
