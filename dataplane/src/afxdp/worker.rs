//! The thin half of the AF_XDP worker: one UMEM, one socket per interface on one queue, and the
//! ring loop around [`process_batch`](super::batch::process_batch).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, MapData};
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use sluice_ebpf::abi::{Counter, FlowKey, FlowRule};
use tracing::{debug, info, warn};
use xdpilone::xdp::XdpDesc;
use xdpilone::{
    DeviceQueue, Errno, IfInfo, RingRx, RingTx, Socket, SocketConfig, Umem, UmemConfig, User,
};

use super::batch::{process_batch, FrameRef, KernelRules, RuleTable, Verdict, WorkerRule};
use super::{AfXdpConfig, XskMode};
use crate::{monotonic_now, DataplaneError};

/// What the control plane tells a worker.
pub(crate) enum Command {
    Upsert(FlowKey, Box<WorkerRule>),
    Remove(FlowKey),
    Stop,
}

/// One socket as the worker reports it after binding.
#[derive(Clone, Debug)]
pub(crate) struct Bound {
    pub iface: String,
    pub ifindex: u32,
    pub fd: RawFd,
    pub mode: XskMode,
}

/// The error of an AF_XDP step on an interface and queue.
pub(crate) fn xsk_error(what: String, errno: i32) -> DataplaneError {
    DataplaneError::AfXdp {
        what,
        source: io::Error::from_raw_os_error(errno.abs()),
    }
}

fn errno(e: Errno) -> i32 {
    e.get_raw()
}

/// Anonymous, page-aligned memory for the UMEM, unmapped on drop.
struct Area {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the area is plain memory owned by one worker; the kernel writes into it only the
// frames the worker hands it through the rings.
unsafe impl Send for Area {}

impl Area {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous private mapping; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(Self { ptr, len })
    }

    fn as_slice_ptr(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; every socket using it is gone first
        // (the worker drops its sockets before the area).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One AF_XDP socket: its own fill/completion rings (a device queue) and RX/TX rings.
struct Xsk {
    iface: String,
    ifindex: u32,
    device: DeviceQueue,
    rx: RingRx,
    tx: RingTx,
    _user: User,
    mode: XskMode,
    /// Rewritten frames waiting for room in the TX ring.
    backlog: Vec<XdpDesc>,
}

/// Everything bound to the UMEM; dropped before the area.
struct Bindings {
    socks: Vec<Xsk>,
    _umem: Umem,
}

/// Reads the kernel's rules through a duplicate of the `flows` map's descriptor.
pub(crate) struct FlowsReader(BpfHashMap<MapData, FlowKey, FlowRule>);

impl FlowsReader {
    pub(crate) fn new(fd: OwnedFd) -> Result<Self, DataplaneError> {
        let data = MapData::from_fd(fd)
            .map_err(|e| DataplaneError::map("flows", "opening for an AF_XDP worker", e))?;
        let map = BpfHashMap::try_from(aya::maps::Map::HashMap(data))
            .map_err(|e| DataplaneError::map("flows", "opening for an AF_XDP worker", e))?;
        Ok(Self(map))
    }
}

impl KernelRules for FlowsReader {
    fn rule(&mut self, key: &FlowKey) -> Option<FlowRule> {
        self.0.get(key, 0).ok()
    }
}

/// The mode a bound socket got (XDP_OPTIONS).
fn bound_mode(fd: RawFd) -> XskMode {
    const SOL_XDP: libc::c_int = 283;
    const XDP_OPTIONS: libc::c_int = 8;
    const XDP_OPTIONS_ZEROCOPY: u32 = 1;
    let mut flags: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `flags`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            SOL_XDP,
            XDP_OPTIONS,
            (&mut flags as *mut u32).cast(),
            &mut len,
        )
    };
    if rc == 0 && flags & XDP_OPTIONS_ZEROCOPY != 0 {
        XskMode::ZeroCopy
    } else {
        XskMode::Copy
    }
}

/// Creates the UMEM over `area` and binds one socket per interface on `queue`; the first owns
/// the UMEM and is bound with `flags`, the others share it (bind flags 0: the kernel refuses
/// XDP_COPY or NEED_WAKEUP with SHARED_UMEM; they inherit the owner's mode).
fn bind_all(
    area: &Area,
    ifaces: &[(String, u32)],
    queue: u32,
    config: &AfXdpConfig,
    flags: u16,
) -> Result<Bindings, DataplaneError> {
    let umem_config = UmemConfig {
        fill_size: config.ring_size,
        complete_size: config.ring_size,
        frame_size: config.frame_size,
        headroom: 0,
        flags: 0,
    };
    let first = ifaces.first().map_or("?", |(n, _)| n.as_str());
    // SAFETY: the area is page aligned, `frames * frame_size` long, and outlives the UMEM (the
    // worker drops its Bindings before the Area).
    let umem = unsafe { Umem::new(umem_config, area.as_slice_ptr()) }.map_err(|e| {
        xsk_error(
            format!("AF_XDP UMEM registration {first} queue {queue}"),
            errno(e),
        )
    })?;
    let ring = std::num::NonZeroU32::new(config.ring_size);
    let mut socks = Vec::new();
    for (i, (iface, ifindex)) in ifaces.iter().enumerate() {
        let step = |what: &str, e: Errno| {
            xsk_error(format!("AF_XDP {what} {iface} queue {queue}"), errno(e))
        };
        let mut info = IfInfo::invalid();
        info.from_ifindex(*ifindex)
            .map_err(|e| step("interface lookup", e))?;
        info.set_queue(queue);
        let sock = if i == 0 {
            Socket::with_shared(&info, &umem)
        } else {
            Socket::new(&info)
        }
        .map_err(|e| step("socket", e))?;
        let device = umem
            .fq_cq(&sock)
            .map_err(|e| step("fill/completion rings", e))?;
        let socket_config = SocketConfig {
            rx_size: ring,
            tx_size: ring,
            bind_flags: if i == 0 { flags } else { 0 },
        };
        let user = umem
            .rx_tx(&sock, &socket_config)
            .map_err(|e| step("rx/tx rings", e))?;
        let rx = user.map_rx().map_err(|e| step("rx ring mmap", e))?;
        let tx = user.map_tx().map_err(|e| step("tx ring mmap", e))?;
        umem.bind(&user).map_err(|e| step("bind", e))?;
        let mode = bound_mode(user.as_raw_fd());
        socks.push(Xsk {
            iface: iface.clone(),
            ifindex: *ifindex,
            device,
            rx,
            tx,
            _user: user,
            mode,
            backlog: Vec::new(),
        });
    }
    Ok(Bindings { socks, _umem: umem })
}

/// Everything a worker thread needs.
pub(crate) struct WorkerSetup {
    pub queue: u32,
    pub ifaces: Vec<(String, u32)>,
    pub config: AfXdpConfig,
    pub core: Option<usize>,
    pub commands: Receiver<Command>,
    pub acks: Sender<()>,
    pub wake: Arc<OwnedFd>,
    pub table: RuleTable,
    pub ready: Sender<Result<Vec<Bound>, DataplaneError>>,
}

/// The worker thread's body: set up, report, loop until told to stop.
pub(crate) fn run(setup: WorkerSetup) {
    let WorkerSetup {
        queue,
        ifaces,
        config,
        core,
        commands,
        acks,
        wake,
        mut table,
        ready,
    } = setup;
    match core {
        Some(id) if core_affinity::set_for_current(core_affinity::CoreId { id }) => {
            info!(queue, core = id, "AF_XDP worker pinned")
        }
        Some(id) => warn!(
            queue,
            core = id,
            "AF_XDP worker could not be pinned; running unpinned"
        ),
        None => info!(queue, "AF_XDP worker not pinned (no core given)"),
    }
    let frames = config.frames;
    let area = match Area::new(frames as usize * config.frame_size as usize) {
        Ok(area) => area,
        Err(source) => {
            let _ = ready.send(Err(DataplaneError::AfXdp {
                what: format!("AF_XDP UMEM allocation for queue {queue}"),
                source,
            }));
            return;
        }
    };
    let attempts: &[(u16, &str)] = if config.force_copy {
        &[
            (
                SocketConfig::XDP_BIND_COPY | SocketConfig::XDP_BIND_NEED_WAKEUP,
                "copy",
            ),
            (SocketConfig::XDP_BIND_COPY, "copy without need-wakeup"),
        ]
    } else {
        &[
            (
                SocketConfig::XDP_BIND_ZEROCOPY | SocketConfig::XDP_BIND_NEED_WAKEUP,
                "zero-copy",
            ),
            (
                SocketConfig::XDP_BIND_COPY | SocketConfig::XDP_BIND_NEED_WAKEUP,
                "copy",
            ),
            (SocketConfig::XDP_BIND_COPY, "copy without need-wakeup"),
        ]
    };
    let mut bindings = None;
    let mut last_error = None;
    for (flags, name) in attempts {
        match bind_all(&area, &ifaces, queue, &config, *flags) {
            Ok(b) => {
                bindings = Some(b);
                break;
            }
            Err(e) => {
                debug!(queue, mode = name, error = %e, "AF_XDP bind attempt failed");
                last_error = Some(e);
            }
        }
    }
    let Some(mut bindings) = bindings else {
        let e =
            last_error.unwrap_or_else(|| DataplaneError::InvalidConfig("no bind attempt".into()));
        let _ = ready.send(Err(e));
        return;
    };
    let bound: Vec<Bound> = bindings
        .socks
        .iter()
        .map(|s| Bound {
            iface: s.iface.clone(),
            ifindex: s.ifindex,
            fd: s._user.as_raw_fd(),
            mode: s.mode,
        })
        .collect();
    info!(
        queue,
        interfaces = ?bound.iter().map(|b| (b.iface.as_str(), b.mode.name())).collect::<Vec<_>>(),
        frames,
        "AF_XDP worker bound (one UMEM shared by all its interfaces)"
    );
    if ready.send(Ok(bound)).is_err() {
        return;
    }
    let mut ring = Ring::new(&area, &config, bindings.socks.len());
    ring.run(&mut bindings.socks, &mut table, &commands, &acks, &wake);
    drop(bindings);
    drop(area);
    debug!(queue, "AF_XDP worker stopped");
}

/// The loop's state: the free-frame list and reusable buffers.
struct Ring {
    base: NonNull<u8>,
    area_len: u64,
    frame_size: u64,
    free: Vec<u64>,
    fill_target: u32,
    ring_size: u32,
    batch: u32,
    poll_timeout: Duration,
    descs: Vec<XdpDesc>,
}

impl Ring {
    fn new(area: &Area, config: &AfXdpConfig, sockets: usize) -> Self {
        let frame_size = u64::from(config.frame_size);
        let free = (0..u64::from(config.frames))
            .map(|i| i * frame_size)
            .collect();
        // Half the frames wait in the fill rings; the rest are in flight or free.
        let per_socket = config.frames / (2 * sockets.max(1) as u32);
        Self {
            base: area.ptr,
            area_len: area.len as u64,
            frame_size,
            free,
            fill_target: per_socket.min(config.ring_size).max(1),
            ring_size: config.ring_size,
            batch: config.batch.clamp(1, config.ring_size),
            poll_timeout: config.poll_timeout,
            descs: Vec::with_capacity(config.batch as usize),
        }
    }

    fn run(
        &mut self,
        socks: &mut [Xsk],
        table: &mut RuleTable,
        commands: &Receiver<Command>,
        acks: &Sender<()>,
        wake: &OwnedFd,
    ) {
        loop {
            loop {
                match commands.try_recv() {
                    Ok(Command::Upsert(key, rule)) => {
                        table.upsert(key, *rule);
                        let _ = acks.send(());
                    }
                    Ok(Command::Remove(key)) => {
                        table.remove(&key);
                        let _ = acks.send(());
                    }
                    Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return,
                    Err(TryRecvError::Empty) => break,
                }
            }
            let mut progress = self.reclaim(socks) > 0;
            self.refill(socks);
            for i in 0..socks.len() {
                progress |= self.receive(i, socks, table) > 0;
            }
            let mut tx_pending = false;
            for s in socks.iter_mut() {
                progress |= self.flush_backlog(s) > 0;
                progress |= self.kick(s);
                tx_pending |= s.tx.pending() > 0 || !s.backlog.is_empty();
            }
            if !progress {
                let timeout = if tx_pending {
                    Duration::from_millis(1)
                } else {
                    self.poll_timeout
                };
                wait(socks, wake, timeout);
            }
        }
    }

    /// Completion rings -> free list.
    fn reclaim(&mut self, socks: &mut [Xsk]) -> u32 {
        let mask = !(self.frame_size - 1);
        let mut n = 0;
        for s in socks.iter_mut() {
            let mut done = s.device.complete(self.ring_size);
            while let Some(addr) = done.read() {
                self.free.push(addr & mask);
                n += 1;
            }
            done.release();
        }
        n
    }

    /// Free list -> fill rings, up to each ring's share.
    fn refill(&mut self, socks: &mut [Xsk]) {
        for s in socks.iter_mut() {
            let want = self.fill_target.saturating_sub(s.device.pending());
            let give = (want as usize).min(self.free.len());
            if give == 0 {
                continue;
            }
            {
                let mut fill = s.device.fill(give as u32);
                let start = self.free.len() - (fill.capacity() as usize).min(give);
                let n = fill.insert(self.free[start..].iter().copied()) as usize;
                fill.commit();
                self.free.drain(start..start + n);
            }
            if s.device.needs_wakeup() {
                s.device.wake();
            }
        }
    }

    /// One RX batch of socket `i`: peek, release, process, queue for TX.
    fn receive(&mut self, i: usize, socks: &mut [Xsk], table: &mut RuleTable) -> u32 {
        // Take no more than every TX ring can accept, so a frame never waits for lack of room
        // (the RX ring backs up instead, and the kernel counts what it cannot deliver).
        let room = socks
            .iter()
            .map(|s| {
                self.ring_size
                    .saturating_sub(s.tx.pending())
                    .saturating_sub(s.backlog.len() as u32)
            })
            .min()
            .unwrap_or(0);
        let budget = self.batch.min(room);
        let Some(sock) = socks.get_mut(i) else {
            return 0;
        };
        if budget == 0 || sock.rx.available() == 0 {
            return 0;
        }
        self.descs.clear();
        {
            let mut rx = sock.rx.receive(budget);
            while let Some(desc) = rx.read() {
                self.descs.push(desc);
            }
            rx.release();
        }
        let received = self.descs.len() as u32;
        if received == 0 {
            return 0;
        }
        let mask = !(self.frame_size - 1);
        let mut frames: Vec<FrameRef<'_>> = Vec::with_capacity(self.descs.len());
        let mut addrs: Vec<(u64, u64)> = Vec::with_capacity(self.descs.len());
        for desc in &self.descs {
            let chunk = desc.addr & mask;
            let offset = desc.addr - chunk;
            if chunk + self.frame_size > self.area_len {
                // Not ours: never hand it back to the kernel.
                table.counters().add(Counter::DropMalformed, 1);
                continue;
            }
            // SAFETY: `chunk` lies within the area (checked above). The kernel hands each chunk
            // to userspace once, through the RX ring, and does not touch it until the worker
            // gives it back through a fill or TX ring, so the chunks of one batch are distinct
            // and nothing else aliases them while `frames` lives.
            let buf = unsafe {
                std::slice::from_raw_parts_mut(
                    self.base.as_ptr().add(chunk as usize),
                    self.frame_size as usize,
                )
            };
            frames.push(FrameRef::new(buf, offset as usize, desc.len as usize));
            addrs.push((chunk, desc.addr));
        }
        process_batch(table, &mut frames, monotonic_now().as_nanos() as u64);
        for (frame, (chunk, addr)) in frames.iter().zip(&addrs) {
            match frame.verdict {
                Verdict::Forward { socket } => match socks.get_mut(socket) {
                    Some(out) => out.backlog.push(XdpDesc {
                        addr: *addr,
                        len: frame.len as u32,
                        options: 0,
                    }),
                    None => self.free.push(*chunk),
                },
                Verdict::Drop(_) | Verdict::Pending => self.free.push(*chunk),
            }
        }
        received
    }

    /// Backlog -> TX ring; returns how many went.
    fn flush_backlog(&mut self, s: &mut Xsk) -> u32 {
        if s.backlog.is_empty() {
            return 0;
        }
        let mut tx = s.tx.transmit(s.backlog.len() as u32);
        let take = (tx.capacity() as usize).min(s.backlog.len());
        let n = tx.insert(s.backlog[..take].iter().copied());
        tx.commit();
        s.backlog.drain(..n as usize);
        n
    }

    /// Makes the kernel transmit: in copy mode TX moves only inside sendto(), at most 32
    /// descriptors a call, so call it until nothing is pending. Returns whether anything moved.
    fn kick(&mut self, s: &mut Xsk) -> bool {
        let start = s.tx.pending();
        if start == 0 {
            return false;
        }
        // Enough rounds for a full ring, plus slack for completion-ring pressure.
        for _ in 0..(self.ring_size / 32 + 8) {
            if s.tx.pending() == 0 {
                break;
            }
            // SAFETY: a zero-length sendto on our own socket: no buffer is read.
            let rc = unsafe {
                libc::sendto(
                    s.tx.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // More to do, or the completion ring is full: free it and go on.
                    Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS) => {
                        let mask = !(self.frame_size - 1);
                        let mut done = s.device.complete(self.ring_size);
                        while let Some(addr) = done.read() {
                            self.free.push(addr & mask);
                        }
                        done.release();
                    }
                    _ => {
                        warn!(iface = %s.iface, error = %e, "AF_XDP transmit wake-up failed");
                        break;
                    }
                }
            }
        }
        s.tx.pending() < start
    }
}

/// Blocks until a socket has something to receive, the control plane writes the eventfd, or the
/// timeout passes. Never spins: the worker shares its machine with the kernel's softirqs.
fn wait(socks: &[Xsk], wake: &OwnedFd, timeout: Duration) {
    let mut fds: Vec<libc::pollfd> = socks
        .iter()
        .map(|s| libc::pollfd {
            fd: s.rx.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    fds.push(libc::pollfd {
        fd: wake.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: poll reads and writes the array we own, of the length we pass.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if rc > 0 && fds.last().is_some_and(|p| p.revents & libc::POLLIN != 0) {
        let mut value = 0u64;
        // SAFETY: reading 8 bytes from our non-blocking eventfd into a u64.
        unsafe { libc::read(wake.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
    }
}

/// A non-blocking eventfd that wakes a worker out of poll().
pub(crate) fn eventfd() -> Result<OwnedFd, DataplaneError> {
    // SAFETY: eventfd returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(DataplaneError::Syscall {
            call: "eventfd for an AF_XDP worker",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Wakes a worker blocked in poll().
pub(crate) fn notify(fd: &OwnedFd) {
    let one = 1u64;
    // SAFETY: writing 8 bytes from a u64 to our eventfd.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Receive queues of `iface` (combined + rx-only channels) from ETHTOOL_GCHANNELS in the calling
/// thread's namespace; `None` if the driver does not say. (sysfs would show the queues of the
/// namespace sysfs was mounted in, not necessarily the calling thread's.)
pub(crate) fn rx_queues(iface: &str) -> Option<u32> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    #[repr(C)]
    #[derive(Default)]
    struct Channels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx_count: u32,
        tx_count: u32,
        other_count: u32,
        combined_count: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }
    let bytes = iface.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return None;
    }
    let mut channels = Channels {
        cmd: ETHTOOL_GCHANNELS,
        ..Channels::default()
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: (&mut channels as *mut Channels).cast(),
        _pad: [0; 16],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: a datagram socket for the ioctl, closed by OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is fresh and ours.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCETHTOOL reads the name and writes `channels` through the pointer, both live.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req as *mut IfReq) };
    if rc != 0 {
        return None;
    }
    let queues = channels.combined_count + channels.rx_count;
    (queues > 0).then_some(queues)
}
