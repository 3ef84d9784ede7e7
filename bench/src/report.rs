//! The `sluice-bench streams` result, as JSON and as a short text table.
//!
//! Key names are a stable interface: benchmark scripts parse them, so rename
//! nothing; add new keys instead.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::receiver::LatencySummary;
use crate::session::SessionOutcome;

/// Counters read from the relay under test, if the backend exposes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RelayCounters {
    /// Packets the relay forwarded during the run.
    pub packets: u64,
    /// UDP payload bytes the relay forwarded during the run.
    pub bytes: u64,
    /// Relay processing cost per packet in nanoseconds (e.g. XDP run time
    /// from BPF stats divided by packets), if measured.
    pub ns_per_packet: Option<f64>,
    /// The part of `ns_per_packet` spent in the kernel's relay program (BPF run time), if any.
    pub kernel_ns_per_packet: Option<f64>,
    /// The part of `ns_per_packet` spent in the relay's userspace threads (their CPU time,
    /// system calls included), if any.
    pub user_ns_per_packet: Option<f64>,
}

/// Result of one `streams` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamsReport {
    /// Relay backend under test, e.g. `"xdp"`.
    pub backend: String,
    /// Test topology, e.g. `"two-arm"` or `"one-arm"`.
    pub topology: String,
    /// Packet generator: `"xdp"` (live frames) or `"sockets"` (`sendmmsg`).
    pub generator: String,
    /// Number of concurrent RTP streams (call legs).
    pub streams: u64,
    /// Requested send duration in seconds.
    pub duration_s: f64,
    /// Packets the relay program dropped during the run, for any reason (null when the backend
    /// does not count drops).
    pub relay_drops: Option<u64>,
    /// Packets the generator handed to the kernel.
    pub sent: u64,
    /// Distinct intact packets received (unique stream and sequence);
    /// duplicates and corrupted packets are excluded, so
    /// `sent == received + lost` on a clean run.
    pub received: u64,
    /// `sent - received`, summed per stream (never negative per stream).
    pub lost: u64,
    /// Extra copies of already-received packets.
    pub duplicated: u64,
    /// First arrivals whose sequence is below the highest already seen on
    /// their stream.
    pub reordered: u64,
    /// Packets attributed to a stream whose bytes differ from what was sent
    /// (including truncation or a changed RTP header).
    pub corrupted: u64,
    /// Packets whose source address/port differs from the expected relay
    /// source of their stream (0 when no expectation was given).
    pub source_mismatch: u64,
    /// Datagrams that could not be attributed to any stream.
    pub unknown: u64,
    /// `lost / sent`, 0 when nothing was sent.
    pub loss_ratio: f64,
    /// One-way latency (generator send stamp to receiver wake-up) in
    /// microseconds: `p50`, `p99`, `p999`, `max`, `samples`.
    pub latency_us: LatencySummary,
    /// UDP payload bytes received, all datagrams included.
    pub bytes_received: u64,
    /// Relay cost per forwarded packet in nanoseconds, or `null` if the
    /// backend does not measure it.
    pub relay_ns_per_packet: Option<f64>,
    /// The kernel program's part of `relay_ns_per_packet` (BPF run time per run: the whole
    /// relay for `xdp`, the hand-off to the workers for `afxdp`), `null` for `sockets`.
    #[serde(default)]
    pub relay_kernel_ns_per_packet: Option<f64>,
    /// The userspace threads' part of `relay_ns_per_packet` (their CPU time, user and system,
    /// per forwarded packet: the `afxdp-q*` workers or the `sluice-sockets` worker), `null` for
    /// `xdp`.
    #[serde(default)]
    pub relay_user_ns_per_packet: Option<f64>,
    /// Packets the relay reports forwarding, or `null` if unavailable.
    pub relay_packets: Option<u64>,
    /// Bytes the relay reports forwarding, or `null` if unavailable.
    pub relay_bytes: Option<u64>,
    /// `true` when relay counters are available and agree with what the
    /// receiver saw: `relay_packets` equals all received datagrams and
    /// `relay_bytes` equals `bytes_received`. `false` when unavailable.
    pub counters_match: bool,
    /// Aggregate send rate requested, packets per second.
    pub requested_pps: f64,
    /// Aggregate send rate achieved over `duration_s`, packets per second.
    pub achieved_pps: f64,
    /// The generator fell behind schedule (see `GeneratorReport::saturated`);
    /// if `true`, numbers measure the generator, not the relay.
    pub generator_saturated: bool,
    /// CPU seconds consumed by the generator thread, to separate load
    /// generation cost from relay cost.
    pub generator_cpu_s: f64,
    /// Packets the generator sent more than its lateness threshold (20 ms) after their due time.
    pub generator_late: u64,
    /// The generator's worst lateness, in milliseconds.
    pub generator_max_lateness_ms: f64,
    /// CPU seconds consumed by the receiver thread.
    pub receiver_cpu_s: f64,
    /// Which relay: `"sluice"`, `"rtpengine"`, or `"none"` (the kernel routes, the baseline).
    #[serde(default)]
    pub relay: String,
    /// How the streams were set up: `"direct"` (rules installed in-process through the
    /// forwarder API), `"ng"` (a relay process, one ng offer/answer per stream) or `"none"`.
    #[serde(default)]
    pub setup: String,
    /// Seconds taken to set the streams up (all the offers and answers, for `ng`).
    #[serde(default)]
    pub setup_s: f64,
    /// The relay's CPU seconds during the session: its process (or, in-process, its worker
    /// threads) plus the run time of its BPF programs; separate from `generator_cpu_s`.
    #[serde(default)]
    pub relay_cpu_s: Option<f64>,
    /// Whose memory the `relay_rss_*` keys are: `"relay process"`, or `"bench process"` when
    /// the relay runs inside `sluice-bench` (then the generator and receiver are included).
    #[serde(default)]
    pub memory_of: String,
    /// Resident memory (VmRSS) after the streams were set up and the session ran, bytes.
    #[serde(default)]
    pub relay_rss_bytes: Option<u64>,
    /// Resident memory with the relay started and no streams yet, bytes.
    #[serde(default)]
    pub relay_rss_idle_bytes: Option<u64>,
    /// `(relay_rss_bytes - relay_rss_idle_bytes) / streams`.
    #[serde(default)]
    pub rss_per_call_bytes: Option<f64>,
    /// Memory of the BPF maps the relay holds (sum of `memlock` over its map fds), bytes.
    #[serde(default)]
    pub bpf_map_bytes: Option<u64>,
    /// `bpf_map_bytes / streams` (the maps are sized when loaded, not per call).
    #[serde(default)]
    pub bpf_map_per_call_bytes: Option<f64>,
}

impl StreamsReport {
    /// Builds the report from a finished session.
    pub fn from_outcome(
        backend: &str,
        topology: &str,
        outcome: &SessionOutcome,
        relay: Option<RelayCounters>,
    ) -> Self {
        let g = &outcome.generator;
        let r = &outcome.receiver;
        let lost = r.lost(&g.per_stream_sent);
        let loss_ratio = if g.sent > 0 {
            lost as f64 / g.sent as f64
        } else {
            0.0
        };
        let counters_match = relay.is_some_and(|c| c.packets == r.datagrams && c.bytes == r.bytes);
        Self {
            backend: backend.to_owned(),
            topology: topology.to_owned(),
            generator: "sockets".to_owned(),
            relay_drops: None,
            streams: g.per_stream_sent.len() as u64,
            duration_s: outcome.duration.as_secs_f64(),
            sent: g.sent,
            received: r.distinct(),
            lost,
            duplicated: r.duplicated(),
            reordered: r.reordered(),
            corrupted: r.corrupted(),
            source_mismatch: r.source_mismatch(),
            unknown: r.unknown,
            loss_ratio,
            latency_us: r.latency_summary(),
            bytes_received: r.bytes,
            relay_ns_per_packet: relay.and_then(|c| c.ns_per_packet),
            relay_kernel_ns_per_packet: relay.and_then(|c| c.kernel_ns_per_packet),
            relay_user_ns_per_packet: relay.and_then(|c| c.user_ns_per_packet),
            relay_packets: relay.map(|c| c.packets),
            relay_bytes: relay.map(|c| c.bytes),
            counters_match,
            requested_pps: g.requested_pps,
            achieved_pps: g.achieved_pps,
            generator_saturated: g.saturated,
            generator_cpu_s: g.cpu_time.as_secs_f64(),
            generator_late: g.late,
            generator_max_lateness_ms: g.max_lateness.as_secs_f64() * 1e3,
            receiver_cpu_s: r.cpu_time.as_secs_f64(),
            relay: "sluice".to_owned(),
            setup: "direct".to_owned(),
            setup_s: 0.0,
            relay_cpu_s: None,
            memory_of: String::new(),
            relay_rss_bytes: None,
            relay_rss_idle_bytes: None,
            rss_per_call_bytes: None,
            bpf_map_bytes: None,
            bpf_map_per_call_bytes: None,
        }
    }

    /// Fills the memory keys from readings of the relay.
    pub fn set_memory(&mut self, of: &str, idle: Option<u64>, rss: Option<u64>, maps: u64) {
        self.memory_of = of.to_owned();
        self.relay_rss_idle_bytes = idle;
        self.relay_rss_bytes = rss;
        let calls = self.streams.max(1) as f64;
        self.rss_per_call_bytes = match (rss, idle) {
            (Some(r), Some(i)) => Some(r.saturating_sub(i) as f64 / calls),
            _ => None,
        };
        self.bpf_map_bytes = Some(maps);
        self.bpf_map_per_call_bytes = Some(maps as f64 / calls);
    }

    /// Pretty JSON rendering.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}

fn opt<T: fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| v.to_string())
}

/// Nanoseconds with one decimal, or `n/a`.
pub(crate) fn ns(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}"))
}

/// A float with `digits` decimals, or `n/a`.
pub(crate) fn opt_f(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
}

/// Bytes as MiB with one decimal, or `n/a`.
pub(crate) fn mib(v: Option<u64>) -> String {
    v.map_or_else(
        || "n/a".to_owned(),
        |v| format!("{:.1}", v as f64 / 1048576.0),
    )
}

impl fmt::Display for StreamsReport {
    /// A short human-readable table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.latency_us;
        writeln!(
            f,
            "backend {}  topology {}  streams {}  duration {:.1}s",
            self.backend, self.topology, self.streams, self.duration_s
        )?;
        if !self.relay.is_empty() {
            writeln!(
                f,
                "  relay {}  setup {}  ({:.2}s)",
                self.relay, self.setup, self.setup_s
            )?;
        }
        writeln!(f, "  {:<22}{:>14}", "sent", self.sent)?;
        writeln!(f, "  {:<22}{:>14}", "received", self.received)?;
        writeln!(
            f,
            "  {:<22}{:>14}  ({:.4}%)",
            "lost",
            self.lost,
            self.loss_ratio * 100.0
        )?;
        writeln!(f, "  {:<22}{:>14}", "duplicated", self.duplicated)?;
        writeln!(f, "  {:<22}{:>14}", "reordered", self.reordered)?;
        writeln!(f, "  {:<22}{:>14}", "corrupted", self.corrupted)?;
        writeln!(f, "  {:<22}{:>14}", "source mismatch", self.source_mismatch)?;
        writeln!(
            f,
            "  {:<22}{:>14}",
            "latency us p50/p99",
            format!("{}/{}", l.p50, l.p99)
        )?;
        writeln!(
            f,
            "  {:<22}{:>14}",
            "latency us p99.9/max",
            format!("{}/{}", l.p999, l.max)
        )?;
        writeln!(
            f,
            "  {:<22}{:>14}",
            "rate pps ach/req",
            format!("{:.0}/{:.0}", self.achieved_pps, self.requested_pps)
        )?;
        writeln!(
            f,
            "  {:<22}{:>14}",
            "relay ns/packet",
            ns(self.relay_ns_per_packet)
        )?;
        writeln!(
            f,
            "  {:<22}{:>14}",
            "  kernel/user",
            format!(
                "{}/{}",
                ns(self.relay_kernel_ns_per_packet),
                ns(self.relay_user_ns_per_packet)
            )
        )?;
        writeln!(
            f,
            "  {:<22}{:>14}",
            "relay packets/bytes",
            format!("{}/{}", opt(self.relay_packets), opt(self.relay_bytes))
        )?;
        writeln!(f, "  {:<22}{:>14}", "counters match", self.counters_match)?;
        writeln!(
            f,
            "  {:<22}{:>14}",
            "generator cpu s",
            format!("{:.3}", self.generator_cpu_s)
        )?;
        writeln!(
            f,
            "  {:<22}{:>14}",
            "relay cpu s",
            opt_f(self.relay_cpu_s, 3)
        )?;
        writeln!(
            f,
            "  {:<22}{:>14}",
            "rss/maps MiB",
            format!("{}/{}", mib(self.relay_rss_bytes), mib(self.bpf_map_bytes))
        )?;
        write!(
            f,
            "  {:<22}{:>14}",
            "generator saturated", self.generator_saturated
        )?;
        if self.generator_saturated {
            write!(f, "  <- results are load-generator bound")?;
        }
        writeln!(f)
    }
}

/// Reports of several backends measured one after the other, as a table with one column each.
pub fn side_by_side(reports: &[StreamsReport]) -> String {
    type Row = (&'static str, fn(&StreamsReport) -> String);
    let rows: [Row; 22] = [
        ("topology", |r| r.topology.clone()),
        ("generator", |r| r.generator.clone()),
        ("streams", |r| r.streams.to_string()),
        ("sent", |r| r.sent.to_string()),
        ("received", |r| r.received.to_string()),
        ("lost", |r| r.lost.to_string()),
        ("relay drops", |r| opt(r.relay_drops)),
        ("counters match", |r| r.counters_match.to_string()),
        ("relay ns/packet", |r| ns(r.relay_ns_per_packet)),
        ("  kernel (BPF)", |r| ns(r.relay_kernel_ns_per_packet)),
        ("  user (threads)", |r| ns(r.relay_user_ns_per_packet)),
        ("latency us p50", |r| r.latency_us.p50.to_string()),
        ("latency us p99", |r| r.latency_us.p99.to_string()),
        ("latency us p99.9", |r| r.latency_us.p999.to_string()),
        ("latency us max", |r| r.latency_us.max.to_string()),
        ("rate pps achieved", |r| format!("{:.0}", r.achieved_pps)),
        ("generator cpu s", |r| format!("{:.3}", r.generator_cpu_s)),
        ("generator saturated", |r| r.generator_saturated.to_string()),
        ("relay cpu s", |r| opt_f(r.relay_cpu_s, 3)),
        ("relay rss MiB", |r| mib(r.relay_rss_bytes)),
        ("bpf maps MiB", |r| mib(r.bpf_map_bytes)),
        ("rss B/call", |r| opt_f(r.rss_per_call_bytes, 0)),
    ];
    let mut out = format!("{:<22}", "backend");
    for r in reports {
        out.push_str(&format!("{:>14}", r.backend));
    }
    out.push('\n');
    for (name, value) in rows {
        out.push_str(&format!("{name:<22}"));
        for r in reports {
            out.push_str(&format!("{:>14}", value(r)));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StreamsReport {
        StreamsReport {
            backend: "xdp".into(),
            topology: "two-arm".into(),
            generator: "sockets".into(),
            relay_drops: Some(0),
            streams: 20,
            duration_s: 1.0,
            sent: 1000,
            received: 999,
            lost: 1,
            duplicated: 0,
            reordered: 0,
            corrupted: 0,
            source_mismatch: 0,
            unknown: 0,
            loss_ratio: 0.001,
            latency_us: LatencySummary {
                p50: 10,
                p99: 20,
                p999: 30,
                max: 40,
                samples: 999,
            },
            bytes_received: 999 * 172,
            relay_ns_per_packet: None,
            relay_kernel_ns_per_packet: None,
            relay_user_ns_per_packet: None,
            relay_packets: None,
            relay_bytes: None,
            counters_match: false,
            requested_pps: 1000.0,
            achieved_pps: 1000.0,
            generator_saturated: false,
            generator_cpu_s: 0.01,
            generator_late: 0,
            generator_max_lateness_ms: 0.5,
            receiver_cpu_s: 0.01,
            relay: "sluice".into(),
            setup: "direct".into(),
            setup_s: 0.0,
            relay_cpu_s: None,
            memory_of: "bench process".into(),
            relay_rss_bytes: None,
            relay_rss_idle_bytes: None,
            rss_per_call_bytes: None,
            bpf_map_bytes: None,
            bpf_map_per_call_bytes: None,
        }
    }

    #[test]
    fn stable_keys_present() {
        let v = serde_json::to_value(sample()).expect("json");
        for key in [
            "backend",
            "streams",
            "duration_s",
            "sent",
            "received",
            "lost",
            "duplicated",
            "reordered",
            "loss_ratio",
            "latency_us",
            "relay_ns_per_packet",
            "relay_kernel_ns_per_packet",
            "relay_user_ns_per_packet",
            "relay_drops",
            "counters_match",
            "generator_saturated",
            "generator_cpu_s",
            "corrupted",
            "source_mismatch",
            "relay_packets",
            "relay_bytes",
            "topology",
        ] {
            assert!(v.get(key).is_some(), "missing key {key}");
        }
        for key in ["p50", "p99", "p999", "max"] {
            assert!(v["latency_us"].get(key).is_some(), "missing latency {key}");
        }
        assert!(v["relay_ns_per_packet"].is_null());
    }

    #[test]
    fn json_roundtrip() {
        let r = sample();
        let s = r.to_json().expect("json");
        let back: StreamsReport = serde_json::from_str(&s).expect("parse");
        assert_eq!(back, r);
    }

    #[test]
    fn side_by_side_has_a_column_per_backend() {
        let mut afxdp = sample();
        afxdp.backend = "afxdp".into();
        afxdp.relay_user_ns_per_packet = Some(812.25);
        let t = side_by_side(&[sample(), afxdp]);
        let header = t.lines().next().expect("header");
        assert!(header.contains("xdp") && header.contains("afxdp"), "{t}");
        assert!(t.contains("812.2") || t.contains("812.3"), "{t}");
        assert!(t.lines().all(|l| l.len() == 22 + 2 * 14), "{t}");
    }

    #[test]
    fn text_table_mentions_key_numbers() {
        let t = sample().to_string();
        assert!(t.contains("backend xdp"));
        assert!(t.contains("999"));
        assert!(t.contains("n/a"));
    }
}
