//! The pure half of the AF_XDP worker: a batch of received frames in, rewritten frames and
//! verdicts out. No socket, no system call on the fast path; unit-tested and benchmarked alone.

use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sluice_ebpf::abi::{self, Counter, FlowKey, FlowRule};

use crate::StreamRule;

/// Bytes of [`XskMeta`](sluice_ebpf::abi::XskMeta) the kernel puts in front of each packet.
pub const META_LEN: usize = 16;

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;
const UDP_HLEN: usize = 8;
const IPV4_MF: u16 = 0x2000;
const IPV4_OFFSET_MASK: u16 = 0x1fff;

/// Bumps an atomic that only one thread writes: a plain load and store, no locked instruction.
#[inline]
fn bump(cell: &AtomicU64, by: u64) {
    cell.store(
        cell.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// One stream's counters as one worker sees them: written by that worker only, read by the
/// control plane at any time.
#[derive(Debug, Default)]
pub struct StreamCell {
    packets: AtomicU64,
    bytes: AtomicU64,
    last_seen_ns: AtomicU64,
}

impl StreamCell {
    /// Packets, UDP payload bytes and the last `CLOCK_MONOTONIC` time (0 = none).
    pub fn read(&self) -> (u64, u64, u64) {
        (
            self.packets.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.last_seen_ns.load(Ordering::Relaxed),
        )
    }

    #[inline]
    fn count(&self, bytes: u64, now_ns: u64) {
        bump(&self.packets, 1);
        bump(&self.bytes, bytes);
        self.last_seen_ns.store(now_ns, Ordering::Relaxed);
    }
}

/// A worker's verdict counters, indexed like the XDP program's ([`Counter`]); written by that
/// worker only.
#[derive(Debug)]
pub struct WorkerCounters {
    values: [AtomicU64; abi::COUNTER_MAX as usize],
}

impl Default for WorkerCounters {
    fn default() -> Self {
        Self {
            values: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl WorkerCounters {
    /// One counter.
    pub fn get(&self, counter: Counter) -> u64 {
        self.values
            .get(counter.index() as usize)
            .map_or(0, |v| v.load(Ordering::Relaxed))
    }

    #[inline]
    pub(crate) fn add(&self, counter: Counter, by: u64) {
        if let Some(cell) = self.values.get(counter.index() as usize) {
            bump(cell, by);
        }
    }
}

/// FxHash over the key's fields: the table's keys are chosen by the control plane (the kernel
/// drops unknown ports before they get here), so a keyed hash buys nothing and costs ~20 ns.
#[derive(Clone, Copy, Debug, Default)]
pub struct FlowHasher(u64);

impl std::hash::Hasher for FlowHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FlowMap<V> = HashMap<FlowKey, V, std::hash::BuildHasherDefault<FlowHasher>>;

/// Reads rules as the XDP program sees them now: the destination a latch taught lives only in
/// the kernel's `flows` map.
pub trait KernelRules {
    /// The kernel's rule at `key`, if any.
    fn rule(&mut self, key: &FlowKey) -> Option<FlowRule>;
}

/// No kernel to ask: a taught destination is never learned (for tests and benchmarks).
#[derive(Debug, Default)]
pub struct NoKernel;

impl KernelRules for NoKernel {
    fn rule(&mut self, _key: &FlowKey) -> Option<FlowRule> {
        None
    }
}

/// A stream rule in a worker's table.
#[derive(Debug, Clone)]
pub struct WorkerRule {
    /// New source address and port, as on the wire.
    src_addr: [u8; 4],
    src_port: [u8; 2],
    /// The destination as the control plane stated it (`None`: pending).
    destination: Option<([u8; 4], [u8; 2])>,
    /// The destination a latch taught, once read back from the kernel.
    learned: Option<([u8; 4], [u8; 2])>,
    /// The reverse rule this (latching) rule teaches.
    teaches: Option<FlowKey>,
    /// Some rule in the table teaches this one.
    taught: bool,
    counters: Arc<StreamCell>,
}

impl WorkerRule {
    /// The worker's copy of `rule`, counting into `counters`.
    pub fn new(rule: &StreamRule, counters: Arc<StreamCell>) -> Self {
        let wire = |a: SocketAddrV4| (a.ip().octets(), a.port().to_be_bytes());
        let (src_addr, src_port) = wire(rule.source);
        Self {
            src_addr,
            src_port,
            destination: rule.destination.map(wire),
            learned: None,
            teaches: rule.teach.filter(|_| rule.latch).map(FlowKey::new),
            taught: false,
            counters,
        }
    }

    /// The stream's counters in this worker.
    pub fn counters(&self) -> &Arc<StreamCell> {
        &self.counters
    }
}

/// What the worker does with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not processed yet.
    Pending,
    /// Rewritten: transmit on the socket of this index in the table's egress list.
    Forward { socket: usize },
    /// Dropped, counted under this counter.
    Drop(Counter),
}

/// One received frame: a UMEM chunk (or any buffer) with the packet at `offset` and the kernel's
/// metadata in the [`META_LEN`] bytes before it.
#[derive(Debug)]
pub struct FrameRef<'a> {
    /// The whole chunk.
    pub buf: &'a mut [u8],
    /// Where the Ethernet header starts in `buf`.
    pub offset: usize,
    /// Length of the frame from `offset`.
    pub len: usize,
    /// Set by [`process_batch`].
    pub verdict: Verdict,
}

impl<'a> FrameRef<'a> {
    /// A frame to process.
    pub fn new(buf: &'a mut [u8], offset: usize, len: usize) -> Self {
        Self {
            buf,
            offset,
            len,
            verdict: Verdict::Pending,
        }
    }
}

/// What a batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchSummary {
    pub forwarded: u32,
    pub dropped: u32,
}

/// A worker's rules, keyed like the kernel's `flows` map, with the worker's counters and the
/// interfaces it can transmit on.
pub struct RuleTable {
    rules: FlowMap<WorkerRule>,
    /// Taught rule -> the latching rule that teaches it.
    teachers: FlowMap<FlowKey>,
    egress: Vec<u32>,
    counters: Arc<WorkerCounters>,
    kernel: Box<dyn KernelRules + Send>,
}

impl std::fmt::Debug for RuleTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleTable")
            .field("rules", &self.rules.len())
            .field("egress", &self.egress)
            .finish_non_exhaustive()
    }
}

impl RuleTable {
    /// An empty table for a worker that transmits on the interfaces `egress` (ifindexes, in the
    /// order of its sockets).
    pub fn new(
        egress: Vec<u32>,
        counters: Arc<WorkerCounters>,
        kernel: Box<dyn KernelRules + Send>,
    ) -> Self {
        Self {
            rules: FlowMap::default(),
            teachers: FlowMap::default(),
            egress,
            counters,
            kernel,
        }
    }

    /// The worker's verdict counters.
    pub fn counters(&self) -> &Arc<WorkerCounters> {
        &self.counters
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Adds or replaces the rule at `key`. A replaced rule forgets what it learned, as the
    /// kernel's latch starts anew; so does the rule a replaced latching rule teaches.
    pub fn upsert(&mut self, key: FlowKey, rule: WorkerRule) {
        if let Some(old) = self.rules.get(&key) {
            if let Some(taught) = old.teaches {
                self.forget_teacher(taught, key);
            }
        }
        if let Some(taught) = rule.teaches {
            self.teachers.insert(taught, key);
            if let Some(t) = self.rules.get_mut(&taught) {
                t.learned = None;
                t.taught = true;
            }
        }
        let mut rule = rule;
        rule.taught = self.teachers.contains_key(&key);
        self.rules.insert(key, rule);
    }

    /// Removes the rule at `key`; returns it.
    pub fn remove(&mut self, key: &FlowKey) -> Option<WorkerRule> {
        let rule = self.rules.remove(key)?;
        if let Some(taught) = rule.teaches {
            self.forget_teacher(taught, *key);
        }
        Some(rule)
    }

    fn forget_teacher(&mut self, taught: FlowKey, teacher: FlowKey) {
        if self.teachers.get(&taught) == Some(&teacher) {
            self.teachers.remove(&taught);
        }
        let still_taught = self.teachers.contains_key(&taught);
        if let Some(t) = self.rules.get_mut(&taught) {
            t.learned = None;
            t.taught = still_taught;
        }
    }

    /// The destination of the rule at `key` now, asking the kernel when a latch may have taught
    /// it. `None`: still pending.
    fn destination(&mut self, key: &FlowKey) -> Option<([u8; 4], [u8; 2])> {
        let rule = self.rules.get(key)?;
        if rule.learned.is_some() {
            return rule.learned;
        }
        let fallback = rule.destination;
        // While the teacher has not latched, the kernel routed towards the stated destination
        // (or dropped the packet as pending), so the stated one is right. Once it has latched,
        // the kernel's copy of this rule holds the taught destination: read it once, keep it.
        let may_learn = match self.teachers.get(key) {
            Some(teacher) => self.kernel.rule(teacher).is_some_and(|t| {
                t.flags & abi::RULE_LATCH != 0 && t.latch_state == abi::LATCH_LEARNED
            }),
            // Pending with no known teacher: whatever cleared the kernel's flag taught it.
            None => fallback.is_none(),
        };
        if !may_learn {
            return fallback;
        }
        let learned = self
            .kernel
            .rule(key)
            .filter(|k| k.flags & abi::RULE_DST_PENDING == 0 && k.new_dst_port != 0)
            .map(|k| (k.new_dst_addr.to_ne_bytes(), k.new_dst_port.to_ne_bytes()));
        match learned {
            Some(dst) => {
                if let Some(rule) = self.rules.get_mut(key) {
                    rule.learned = Some(dst);
                }
                Some(dst)
            }
            None => fallback,
        }
    }
}

/// Where the headers of a well-formed frame are, relative to its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    ip: usize,
    ihl: usize,
    udp_payload: u64,
}

#[inline]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parses Ethernet (+ one VLAN tag), IPv4 (+ options) and UDP within `pkt`.
fn parse(pkt: &[u8]) -> Option<Layout> {
    let mut ip = ETH_HLEN;
    let mut proto = be16(pkt, 12)?;
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        proto = be16(pkt, ETH_HLEN + 2)?;
        ip += VLAN_HLEN;
    }
    if proto != ETH_P_IP {
        return None;
    }
    let vihl = *pkt.get(ip)?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return None;
    }
    let tot_len = usize::from(be16(pkt, ip + 2)?);
    if tot_len < ihl + UDP_HLEN || ip + tot_len > pkt.len() {
        return None;
    }
    if *pkt.get(ip + 9)? != IPPROTO_UDP {
        return None;
    }
    let frag = be16(pkt, ip + 6)?;
    if frag & (IPV4_MF | IPV4_OFFSET_MASK) != 0 {
        return None;
    }
    let udp_len = usize::from(be16(pkt, ip + ihl + 4)?);
    if udp_len < UDP_HLEN || udp_len > tot_len - ihl {
        return None;
    }
    Some(Layout {
        ip,
        ihl,
        udp_payload: (udp_len - UDP_HLEN) as u64,
    })
}

/// RFC 1624 incremental update of a one's complement checksum: `old` words become `new` words.
#[inline]
fn csum_replace(check: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut sum = u32::from(!check);
    for w in old.chunks_exact(2) {
        sum += u32::from(!u16::from_be_bytes([w[0], w[1]]));
    }
    for w in new.chunks_exact(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Rewrites one well-formed packet towards `dst`; returns nothing, the bounds were checked.
fn rewrite(
    pkt: &mut [u8],
    l: Layout,
    meta: &[u8; META_LEN],
    src: ([u8; 4], [u8; 2]),
    dst: ([u8; 4], [u8; 2]),
) -> Option<()> {
    let ip = l.ip;
    let udp = ip + l.ihl;
    // Everything written below lies before ip + tot_len, which parse() checked.
    let mut old = [0u8; 12];
    old[..8].copy_from_slice(pkt.get(ip + 12..ip + 20)?);
    old[8..12].copy_from_slice(pkt.get(udp..udp + 4)?);
    let mut new = [0u8; 12];
    new[..4].copy_from_slice(&src.0);
    new[4..8].copy_from_slice(&dst.0);
    new[8..10].copy_from_slice(&src.1);
    new[10..12].copy_from_slice(&dst.1);

    // IPv4: addresses and the TTL word.
    let old_ttl = [*pkt.get(ip + 8)?, *pkt.get(ip + 9)?];
    let new_ttl = [abi::RELAY_TTL, old_ttl[1]];
    let check = be16(pkt, ip + 10)?;
    let check = csum_replace(check, &old[..8], &new[..8]);
    let check = csum_replace(check, &old_ttl, &new_ttl);
    pkt.get_mut(ip + 8..ip + 12)?.copy_from_slice(&[
        new_ttl[0],
        new_ttl[1],
        (check >> 8) as u8,
        check as u8,
    ]);
    pkt.get_mut(ip + 12..ip + 20)?.copy_from_slice(&new[..8]);

    // UDP: the pseudo-header's addresses and the ports. Zero means "no checksum" and stays.
    let ucheck = be16(pkt, udp + 6)?;
    if ucheck != 0 {
        let mut c = csum_replace(ucheck, &old, &new);
        if c == 0 {
            c = 0xffff;
        }
        pkt.get_mut(udp + 6..udp + 8)?
            .copy_from_slice(&c.to_be_bytes());
    }
    pkt.get_mut(udp..udp + 4)?.copy_from_slice(&new[8..12]);

    // Ethernet: the next hop the kernel's route lookup found.
    pkt.get_mut(0..12)?.copy_from_slice(&meta[..12]);
    Some(())
}

/// Processes one frame; returns its verdict.
fn process_one(table: &mut RuleTable, frame: &mut FrameRef<'_>, now_ns: u64) -> Verdict {
    let Some(meta_start) = frame.offset.checked_sub(META_LEN) else {
        return Verdict::Drop(Counter::DropMalformed);
    };
    let end = frame.offset.saturating_add(frame.len);
    if end > frame.buf.len() {
        return Verdict::Drop(Counter::DropMalformed);
    }
    let (head, rest) = frame.buf.split_at_mut(frame.offset);
    let mut meta = [0u8; META_LEN];
    meta.copy_from_slice(&head[meta_start..]);
    let pkt = &mut rest[..frame.len];
    let Some(layout) = parse(pkt) else {
        return Verdict::Drop(Counter::DropMalformed);
    };
    let egress_ifindex = u32::from_ne_bytes([meta[12], meta[13], meta[14], meta[15]]);
    let daddr = [
        pkt[layout.ip + 16],
        pkt[layout.ip + 17],
        pkt[layout.ip + 18],
        pkt[layout.ip + 19],
    ];
    let dport = [
        pkt[layout.ip + layout.ihl + 2],
        pkt[layout.ip + layout.ihl + 3],
    ];
    let key = FlowKey {
        local_addr: u32::from_ne_bytes(daddr),
        local_port: u16::from_ne_bytes(dport),
        _pad: 0,
    };
    let Some(rule) = table.rules.get(&key) else {
        return Verdict::Drop(Counter::DropUnknownPort);
    };
    let Some(socket) = table.egress.iter().position(|i| *i == egress_ifindex) else {
        return Verdict::Drop(Counter::DropNoTxPort);
    };
    let src = (rule.src_addr, rule.src_port);
    // Fast path, one lookup: a destination that no latch can change, or one already learned.
    let settled = rule
        .learned
        .or(if rule.taught { None } else { rule.destination });
    if let Some(dst) = settled {
        if rewrite(pkt, layout, &meta, src, dst).is_none() {
            return Verdict::Drop(Counter::DropMalformed);
        }
        rule.counters.count(layout.udp_payload, now_ns);
        return Verdict::Forward { socket };
    }
    // A destination a latch may have taught: ask the kernel.
    let Some(dst) = table.destination(&key) else {
        return Verdict::Drop(Counter::DropDstPending);
    };
    if rewrite(pkt, layout, &meta, src, dst).is_none() {
        return Verdict::Drop(Counter::DropMalformed);
    }
    if let Some(rule) = table.rules.get(&key) {
        rule.counters.count(layout.udp_payload, now_ns);
    }
    Verdict::Forward { socket }
}

/// Processes a batch of received frames in place: parses each within bounds, looks its
/// destination up in `table`, rewrites addresses, ports, TTL and checksums, sets the MACs from
/// the kernel's metadata, counts, and sets each frame's [`Verdict`]. Never panics, whatever the
/// bytes.
pub fn process_batch(
    table: &mut RuleTable,
    frames: &mut [FrameRef<'_>],
    now_ns: u64,
) -> BatchSummary {
    let mut summary = BatchSummary::default();
    for frame in frames.iter_mut() {
        let verdict = process_one(table, frame, now_ns);
        frame.verdict = verdict;
        match verdict {
            Verdict::Forward { .. } => summary.forwarded += 1,
            Verdict::Drop(counter) => {
                summary.dropped += 1;
                table.counters.add(counter, 1);
            }
            Verdict::Pending => {}
        }
    }
    table
        .counters
        .add(Counter::Tx, u64::from(summary.forwarded));
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const OFF: usize = 256;

    fn sa(s: &str) -> SocketAddrV4 {
        s.parse().expect("address")
    }

    fn ip_checksum(h: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for w in h.chunks(2) {
            sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    fn udp_checksum(src: [u8; 4], dst: [u8; 4], udp: &[u8]) -> u16 {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src);
        pseudo.extend_from_slice(&dst);
        pseudo.extend_from_slice(&[0, IPPROTO_UDP]);
        pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(udp);
        let c = ip_checksum(&pseudo);
        if c == 0 {
            0xffff
        } else {
            c
        }
    }

    /// A frame buffer with the metadata and an Ethernet/IPv4/UDP packet at OFF.
    fn frame(
        src: SocketAddrV4,
        dst: SocketAddrV4,
        payload: &[u8],
        vlan: bool,
        csum: bool,
    ) -> (Vec<u8>, usize) {
        let mut pkt = vec![0xaa; 6];
        pkt.extend_from_slice(&[0xbb; 6]);
        if vlan {
            pkt.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
        }
        pkt.extend_from_slice(&[0x08, 0x00]);
        let ip_at = pkt.len();
        let tot = (20 + 8 + payload.len()) as u16;
        pkt.extend_from_slice(&[0x45, 0xb8]);
        pkt.extend_from_slice(&tot.to_be_bytes());
        pkt.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 61, IPPROTO_UDP, 0, 0]);
        pkt.extend_from_slice(&src.ip().octets());
        pkt.extend_from_slice(&dst.ip().octets());
        let c = ip_checksum(&pkt[ip_at..ip_at + 20]);
        pkt[ip_at + 10..ip_at + 12].copy_from_slice(&c.to_be_bytes());
        let udp_at = pkt.len();
        pkt.extend_from_slice(&src.port().to_be_bytes());
        pkt.extend_from_slice(&dst.port().to_be_bytes());
        pkt.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        pkt.extend_from_slice(&[0, 0]);
        pkt.extend_from_slice(payload);
        if csum {
            let c = udp_checksum(src.ip().octets(), dst.ip().octets(), &pkt[udp_at..]);
            pkt[udp_at + 6..udp_at + 8].copy_from_slice(&c.to_be_bytes());
        }
        let mut buf = vec![0u8; 4096];
        buf[OFF - META_LEN..OFF - 4].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        buf[OFF - 4..OFF].copy_from_slice(&7u32.to_ne_bytes());
        let len = pkt.len();
        buf[OFF..OFF + len].copy_from_slice(&pkt);
        (buf, len)
    }

    fn table_with(
        rules: &[StreamRule],
        kernel: Box<dyn KernelRules + Send>,
    ) -> (RuleTable, Vec<Arc<StreamCell>>) {
        let mut table = RuleTable::new(vec![3, 7], Arc::default(), kernel);
        let mut cells = Vec::new();
        for r in rules {
            let cell = Arc::new(StreamCell::default());
            table.upsert(FlowKey::new(r.local), WorkerRule::new(r, cell.clone()));
            cells.push(cell);
        }
        (table, cells)
    }

    fn check_rewritten(
        buf: &[u8],
        len: usize,
        vlan: bool,
        from: SocketAddrV4,
        to: SocketAddrV4,
        payload: &[u8],
    ) {
        let pkt = &buf[OFF..OFF + len];
        assert_eq!(
            &pkt[..12],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            "MACs from the metadata"
        );
        let ip = if vlan { 18 } else { 14 };
        assert_eq!(pkt[ip + 8], 64, "TTL");
        assert_eq!(ip_checksum(&pkt[ip..ip + 20]), 0, "IPv4 checksum verifies");
        assert_eq!(&pkt[ip + 12..ip + 16], &from.ip().octets());
        assert_eq!(&pkt[ip + 16..ip + 20], &to.ip().octets());
        let udp = &pkt[ip + 20..];
        assert_eq!(&udp[0..2], &from.port().to_be_bytes());
        assert_eq!(&udp[2..4], &to.port().to_be_bytes());
        assert_eq!(&udp[8..], payload);
        let stored = u16::from_be_bytes([udp[6], udp[7]]);
        if stored != 0 {
            let mut zeroed = udp.to_vec();
            zeroed[6] = 0;
            zeroed[7] = 0;
            assert_eq!(
                stored,
                udp_checksum(from.ip().octets(), to.ip().octets(), &zeroed),
                "UDP checksum"
            );
        }
    }

    #[test]
    fn rewrites_counts_and_picks_the_egress() {
        let rule = StreamRule::fixed(
            sa("10.0.0.1:30000"),
            sa("10.0.1.1:30002"),
            sa("10.0.1.2:5000"),
        );
        let (mut table, cells) = table_with(&[rule], Box::new(NoKernel));
        let payload: Vec<u8> = (0..172u8).collect();
        for vlan in [false, true] {
            for csum in [true, false] {
                let (mut buf, len) = frame(sa("10.0.0.2:4000"), rule.local, &payload, vlan, csum);
                let mut frames = [FrameRef::new(&mut buf, OFF, len)];
                let s = process_batch(&mut table, &mut frames, 42);
                assert_eq!(
                    s,
                    BatchSummary {
                        forwarded: 1,
                        dropped: 0
                    }
                );
                assert_eq!(frames[0].verdict, Verdict::Forward { socket: 1 });
                check_rewritten(&buf, len, vlan, rule.source, sa("10.0.1.2:5000"), &payload);
                if !csum {
                    let ip = if vlan { 18 } else { 14 };
                    assert_eq!(
                        &buf[OFF + ip + 26..OFF + ip + 28],
                        &[0, 0],
                        "zero stays zero"
                    );
                }
            }
        }
        assert_eq!(cells[0].read(), (4, 4 * 172, 42));
        assert_eq!(table.counters().get(Counter::Tx), 4);
    }

    #[test]
    fn unknown_malformed_and_pending_are_dropped_and_counted() {
        let mut pending = StreamRule::fixed(
            sa("10.0.0.1:30004"),
            sa("10.0.1.1:30006"),
            sa("10.0.1.2:5000"),
        );
        pending.destination = None;
        let (mut table, _) = table_with(&[pending], Box::new(NoKernel));
        let (mut unknown, len) =
            frame(sa("10.0.0.2:4000"), sa("10.0.0.1:30100"), b"x", false, true);
        let (mut pend, plen) = frame(sa("10.0.0.2:4000"), pending.local, b"x", false, true);
        let (mut short, _) = frame(sa("10.0.0.2:4000"), pending.local, b"x", false, true);
        let mut nometa = vec![0u8; 64];
        let mut frames = [
            FrameRef::new(&mut unknown, OFF, len),
            FrameRef::new(&mut pend, OFF, plen),
            FrameRef::new(&mut short, OFF, 30),
            FrameRef::new(&mut nometa, 4, 40),
        ];
        let s = process_batch(&mut table, &mut frames, 1);
        assert_eq!(
            s,
            BatchSummary {
                forwarded: 0,
                dropped: 4
            }
        );
        assert_eq!(frames[0].verdict, Verdict::Drop(Counter::DropUnknownPort));
        assert_eq!(frames[1].verdict, Verdict::Drop(Counter::DropDstPending));
        assert_eq!(frames[2].verdict, Verdict::Drop(Counter::DropMalformed));
        assert_eq!(frames[3].verdict, Verdict::Drop(Counter::DropMalformed));
        let c = table.counters();
        assert_eq!(
            (
                c.get(Counter::DropUnknownPort),
                c.get(Counter::DropDstPending),
                c.get(Counter::DropMalformed)
            ),
            (1, 1, 2)
        );
    }

    #[test]
    fn computed_zero_udp_checksum_becomes_ffff() {
        // Find a payload whose rewritten checksum is 0: vary two payload bytes.
        let rule = StreamRule::fixed(
            sa("10.0.0.1:30000"),
            sa("10.0.1.1:30002"),
            sa("10.0.1.2:5000"),
        );
        let (mut table, _) = table_with(&[rule], Box::new(NoKernel));
        let mut seen = false;
        'search: for a in 0..=255u8 {
            for b in 0..=255u8 {
                let payload = [a, b, 1, 2];
                let (mut buf, len) = frame(sa("10.0.0.2:4000"), rule.local, &payload, false, true);
                let mut frames = [FrameRef::new(&mut buf, OFF, len)];
                process_batch(&mut table, &mut frames, 0);
                let c = [buf[OFF + 40], buf[OFF + 41]];
                assert_ne!(c, [0, 0], "a computed zero must not be sent as zero");
                if c == [0xff, 0xff] {
                    check_rewritten(&buf, len, false, rule.source, sa("10.0.1.2:5000"), &payload);
                    seen = true;
                    break 'search;
                }
            }
        }
        assert!(seen, "some payload has a zero checksum");
    }

    struct FakeKernel(HashMap<FlowKey, FlowRule>, Arc<AtomicU64>);

    impl KernelRules for FakeKernel {
        fn rule(&mut self, key: &FlowKey) -> Option<FlowRule> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.get(key).copied()
        }
    }

    #[test]
    fn a_taught_destination_is_read_back_from_the_kernel_once() {
        use crate::{bidirectional, Leg, Peer};
        let caller_guess = sa("10.0.0.9:4000");
        let [a_to_b, b_to_a] = bidirectional(
            Leg {
                relay: sa("10.0.0.1:30000"),
                peer: Peer::Latch(Some(caller_guess)),
            },
            Leg {
                relay: sa("10.0.1.1:30002"),
                peer: Peer::Known(sa("10.0.1.2:5000")),
            },
            true,
        );
        let (_, mut teacher) = a_to_b.encode(0, 0).expect("valid");
        let (_, mut taught) = b_to_a.encode(1, 0).expect("valid");
        let lookups = Arc::new(AtomicU64::new(0));
        let mut kernel = HashMap::new();
        kernel.insert(FlowKey::new(a_to_b.local), teacher);
        kernel.insert(FlowKey::new(b_to_a.local), taught);
        let (mut table, _) = table_with(
            &[a_to_b, b_to_a],
            Box::new(FakeKernel(kernel.clone(), lookups.clone())),
        );

        // Not latched yet: the signalled guess.
        let (mut buf, len) = frame(sa("10.0.1.2:5000"), b_to_a.local, b"early", false, true);
        process_batch(&mut table, &mut [FrameRef::new(&mut buf, OFF, len)], 0);
        check_rewritten(&buf, len, false, b_to_a.source, caller_guess, b"early");

        // The kernel latches the caller's real address and teaches the reverse rule.
        let real = sa("10.0.0.2:4100");
        teacher.latch_state = abi::LATCH_LEARNED;
        teacher.peer_addr = abi::addr_to_wire(*real.ip());
        teacher.peer_port = real.port().to_be();
        taught.new_dst_addr = abi::addr_to_wire(*real.ip());
        taught.new_dst_port = real.port().to_be();
        kernel.insert(FlowKey::new(a_to_b.local), teacher);
        kernel.insert(FlowKey::new(b_to_a.local), taught);
        table.kernel = Box::new(FakeKernel(kernel, lookups.clone()));
        for _ in 0..3 {
            let (mut buf, len) = frame(sa("10.0.1.2:5000"), b_to_a.local, b"late", false, true);
            process_batch(&mut table, &mut [FrameRef::new(&mut buf, OFF, len)], 0);
            check_rewritten(&buf, len, false, b_to_a.source, real, b"late");
        }
        assert_eq!(
            lookups.load(Ordering::Relaxed),
            1 + 2,
            "read once, then kept"
        );

        // Replacing the latching rule starts over.
        table.upsert(
            FlowKey::new(a_to_b.local),
            WorkerRule::new(&a_to_b, Arc::default()),
        );
        assert_eq!(table.rules[&FlowKey::new(b_to_a.local)].learned, None);
        let _ = Ipv4Addr::UNSPECIFIED;
    }

    /// xorshift64*: deterministic and dependency-free.
    fn rng(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn never_panics_on_any_bytes() {
        let rule = StreamRule::fixed(
            sa("10.0.0.1:30000"),
            sa("10.0.1.1:30002"),
            sa("10.0.1.2:5000"),
        );
        let (mut table, _) = table_with(&[rule], Box::new(NoKernel));
        let (template, tlen) = frame(sa("10.0.0.2:4000"), rule.local, &[7u8; 40], true, true);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..200_000u32 {
            let mut buf = if round % 2 == 0 {
                // Mutations of a valid frame reach deep into the parser.
                let mut b = template.clone();
                for _ in 0..(rng(&mut state) % 4 + 1) {
                    let at = OFF + (rng(&mut state) as usize % (tlen + 8));
                    b[at] = rng(&mut state) as u8;
                }
                b
            } else {
                let n = rng(&mut state) as usize % 300;
                (0..n).map(|_| rng(&mut state) as u8).collect()
            };
            let offset = if round % 2 == 0 {
                OFF
            } else {
                rng(&mut state) as usize % 40
            };
            let len = if round % 2 == 0 {
                tlen.saturating_sub(rng(&mut state) as usize % 3)
            } else {
                rng(&mut state) as usize % 320
            };
            let mut frames = [FrameRef::new(&mut buf, offset, len)];
            process_batch(&mut table, &mut frames, 0);
            assert_ne!(frames[0].verdict, Verdict::Pending);
        }
    }

    #[test]
    fn incremental_checksums_match_recomputation() {
        let mut state = 7u64;
        for _ in 0..2000 {
            let r = |s: &mut u64| rng(s);
            let ip = |s: &mut u64| Ipv4Addr::from(r(s) as u32);
            let port = |s: &mut u64| (r(s) as u16).max(1);
            let local = SocketAddrV4::new(ip(&mut state), port(&mut state));
            let rule = StreamRule::fixed(
                local,
                SocketAddrV4::new(ip(&mut state), port(&mut state)),
                SocketAddrV4::new(ip(&mut state), port(&mut state)),
            );
            let (mut table, _) = table_with(&[rule], Box::new(NoKernel));
            let payload: Vec<u8> = (0..(r(&mut state) % 64) as usize)
                .map(|_| r(&mut state) as u8)
                .collect();
            let from = SocketAddrV4::new(ip(&mut state), port(&mut state));
            let (mut buf, len) = frame(from, local, &payload, false, true);
            let mut frames = [FrameRef::new(&mut buf, OFF, len)];
            process_batch(&mut table, &mut frames, 0);
            assert_eq!(frames[0].verdict, Verdict::Forward { socket: 1 });
            check_rewritten(
                &buf,
                len,
                false,
                rule.source,
                rule.destination.expect("set"),
                &payload,
            );
        }
    }
}
