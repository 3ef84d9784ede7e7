//! `sluice-bench calls` and `sluice-bench register`: the signalling benchmarks. SIPp drives a
//! proxy in the middle namespace of a two-arm testbed:
//!
//! ```text
//! [caller ns] SIPp UAC 10.77.1.2 ── 10.77.1.1 [proxy ns] 10.77.2.1 ── 10.77.2.2 SIPp UAS [callee ns]
//! ```
//!
//! - `calls`: short calls (INVITE with SDP, 200, ACK, a hold of `--hold-ms`, BYE) at `--rate`
//!   calls a second for `--duration` seconds, the media anchored on the proxy's relay for every
//!   call; with media (the default) the caller plays SIPp's A-law recording through the relay
//!   during the hold and the callee echoes it (`-rtp_echo`). Sluice is `sluice run` (SIP, relay
//!   and CDRs in SQLite in one process); the caller's network is trusted, as Kamailio's script
//!   authenticates no INVITE either.
//! - `register`: a pool of `--users` users registering with digest (401, then the authenticated
//!   REGISTER, 200), one after the other from an injection file, against Sluice's registrar
//!   (an `[[account]]` per user, MD5 offered: SIPp 3.6 answers only MD5) or Kamailio's
//!   (`registrar`, `auth` with `pv_auth_check`, usrloc in memory).
//! - `--against kamailio`: the same steps, topology and scenarios through Kamailio with its
//!   rtpengine module and a real rtpengine (userspace) in the proxy namespace, after Sluice in
//!   the same invocation.
//! - `--sweep`: the rate steps upward until a step has `--max-failed-ratio` or more of its calls
//!   failed (or SIPp could not keep the rate, or the last step); `max_clean_rate` is the highest
//!   rate below the threshold.
//!
//! Per step: calls attempted (created by SIPp), succeeded, failed (attempted minus succeeded:
//! calls still unfinished when SIPp gave up count as failed), SIPp's retransmissions, the
//! response time (INVITE to 200, or first REGISTER to the 200) p50/p99 from `-trace_rtt` (whole
//! milliseconds), the CPU time of the proxy's processes (Sluice by thread plus its BPF programs'
//! run time; Kamailio's processes and rtpengine) per successful call, and for Sluice the CDRs
//! written in the step (`sluice cdrs --csv`). SIPp runs on the same machine: on a small host its
//! own CPU is part of the limit, and the report says when it could not keep the rate.
//!
//! With `--json` the last line of stdout is `{"sluice": CallsReport}` or, with `--against`,
//! `{"sluice": ..., "kamailio": ...}` (see [`CallsReport`]); `sluice-bench report` reads it.

mod process;
mod proxy;
mod sipp;

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use sluice_dataplane::testbed::{Testbed, TopologyKind};

use process::{wait_for_udp_listener, NsProcess, WorkDir};
pub use proxy::Target;
use proxy::{find_binary, sluice_binary, Proxy};

/// The SIP port of every party.
const SIP_PORT: u16 = 5060;
/// The registrar's domain.
const DOMAIN: &str = "bench.test";
const CALLER_MEDIA_PORT: u16 = 6000;
const CALLEE_MEDIA_PORT: u16 = 7000;
/// SIPp's A-law recording (Debian's sip-tester), played by the caller with media on.
const RECORDING: &str = "/usr/share/sip-tester/g711a.pcap";
/// The rate steps of a sweep, each bounded by `--max-rate`.
const CALL_RATES: &[u32] = &[
    50, 100, 200, 300, 400, 600, 800, 1000, 1200, 1600, 2000, 2400, 3200,
];
const REGISTER_RATES: &[u32] = &[
    100, 200, 400, 600, 800, 1200, 1600, 2400, 3200, 4800, 6400, 9600,
];
/// A step where SIPp took this much longer than `--duration` to create its calls did not run
/// at the rate asked for.
const GENERATOR_SLACK: f64 = 1.15;

const UAC_CALL_XML: &str = include_str!("../scenarios/uac_call.xml");
const UAS_XML: &str = include_str!("../scenarios/uas.xml");
const REGISTER_XML: &str = include_str!("../scenarios/register.xml");

/// The reference proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Reference {
    /// Debian's Kamailio with its rtpengine module, and rtpengine (userspace) as the relay.
    Kamailio,
}

/// The programs the signalling benchmarks run, and how.
#[derive(Debug, Clone, Args)]
pub struct ToolArgs {
    /// The `sluice` binary (default: `$SLUICE_BIN`, else `sluice` next to this binary).
    #[arg(long, alias = "sluice-bin")]
    pub sluice: Option<PathBuf>,
    /// Sluice's media forwarding path.
    #[arg(long, default_value = "xdp", value_parser = ["auto", "xdp", "afxdp", "sockets"])]
    pub backend: String,
    /// The SIPp binary.
    #[arg(long, default_value = "sipp")]
    pub sipp: PathBuf,
    /// The Kamailio binary, for `--against kamailio`.
    #[arg(long, default_value = "kamailio")]
    pub kamailio: PathBuf,
    /// The rtpengine binary, beside Kamailio.
    #[arg(long, default_value = "rtpengine")]
    pub rtpengine: PathBuf,
    /// Kamailio's SIP worker processes per listening socket (it listens on two addresses).
    #[arg(long, default_value_t = 2)]
    pub kamailio_children: u32,
    /// Where Sluice's CDR database goes (default: the work directory, on the disk of `$TMPDIR`).
    /// Each answered call costs two durable commits (an fsync each) on the SIP thread: a
    /// directory on tmpfs (`/dev/shm`) shows what the disk costs.
    #[arg(long)]
    pub cdr_dir: Option<PathBuf>,
    /// Keep the work directory (configurations, logs, SIPp's statistics) and say where it is.
    #[arg(long)]
    pub keep: bool,
}

/// `sluice-bench calls`.
#[derive(Debug, Clone, Args)]
pub struct CallsArgs {
    /// New calls a second (without --sweep).
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Seconds of new calls per step.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Step the rate upward until a step fails too many calls.
    #[arg(long)]
    pub sweep: bool,
    /// The highest rate a sweep tries.
    #[arg(long, default_value_t = 2000)]
    pub max_rate: u32,
    /// Share of failed calls from which a step is not clean (0.001 is 0.1%).
    #[arg(long, default_value_t = 0.001)]
    pub max_failed_ratio: f64,
    /// Measure the same steps through another proxy after Sluice.
    #[arg(long, value_enum)]
    pub against: Option<Reference>,
    /// One JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Media during the hold: the caller plays A-law through the relay, the callee echoes it
    /// (the default).
    #[arg(long, overrides_with = "no_media")]
    pub media: bool,
    /// No media: signalling and relay set-up only.
    #[arg(long, overrides_with = "media")]
    pub no_media: bool,
    /// How long each call stays up, ms.
    #[arg(long, default_value_t = 1000)]
    pub hold_ms: u64,
    #[command(flatten)]
    pub tools: ToolArgs,
}

/// `sluice-bench register`.
#[derive(Debug, Clone, Args)]
pub struct RegisterArgs {
    /// Registrations (each a challenged and an authenticated REGISTER) a second, without --sweep.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Seconds of new registrations per step.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Step the rate upward until a step fails too many registrations.
    #[arg(long)]
    pub sweep: bool,
    /// The highest rate a sweep tries.
    #[arg(long, default_value_t = 9600)]
    pub max_rate: u32,
    /// Share of failed registrations from which a step is not clean.
    #[arg(long, default_value_t = 0.001)]
    pub max_failed_ratio: f64,
    /// Measure the same steps through another registrar after Sluice.
    #[arg(long, value_enum)]
    pub against: Option<Reference>,
    /// One JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Users in the pool (each has an account; SIPp takes them in turn).
    #[arg(long, default_value_t = 2000)]
    pub users: u32,
    #[command(flatten)]
    pub tools: ToolArgs,
}

/// What SIPp does in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Calls { media: bool, hold_ms: u64 },
    Register { users: u32 },
}

impl Workload {
    fn scenario(self) -> String {
        match self {
            Workload::Calls { media, hold_ms } => format!(
                "calls: INVITE with SDP (relay engaged), 200, ACK, {hold_ms} ms hold{}, BYE",
                if media {
                    ", A-law from the caller echoed by the callee"
                } else {
                    ", no media"
                }
            ),
            Workload::Register { users } => format!(
                "register: REGISTER, 401 (digest MD5, qop=auth), REGISTER with credentials, 200; \
                 {users} users in turn"
            ),
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Workload::Calls { .. } => "calls",
            Workload::Register { .. } => "registrations",
        }
    }
}

/// One step: a rate for a duration.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Asked for, a second.
    pub rate: u32,
    /// rate × duration.
    pub planned: u64,
    /// Created by SIPp.
    pub attempted: u64,
    pub succeeded: u64,
    /// attempted − succeeded.
    pub failed: u64,
    pub failed_ratio: f64,
    /// SIPp's retransmissions (its requests and, for the UAC, nothing else).
    pub retransmissions: u64,
    pub response_time_p50_ms: Option<f64>,
    pub response_time_p99_ms: Option<f64>,
    /// Seconds SIPp took to create its calls (whole seconds; `duration` when it kept the rate).
    pub generation_s: Option<f64>,
    /// SIPp could not create the calls at the rate asked for (SIPp, not the proxy, was late).
    pub generator_behind: bool,
    /// CPU time of the proxy's processes during the step.
    pub cpu_seconds: Option<f64>,
    /// cpu_seconds per successful call, µs.
    pub cpu_per_call_us: Option<f64>,
    /// cpu_seconds by part: Sluice's threads and BPF programs, Kamailio's processes and rtpengine.
    pub cpu_split: BTreeMap<String, f64>,
    /// CDRs Sluice wrote during the step (null for Kamailio, which keeps none here).
    pub cdrs: Option<u64>,
    /// The 1-minute load average when the step ended (the machine may be shared).
    pub load_average: Option<f64>,
    /// Resident memory of the proxy's processes when the step ended, summed.
    pub proxy_rss_bytes: Option<u64>,
}

impl Step {
    fn clean(&self, threshold: f64) -> bool {
        self.attempted > 0 && self.failed_ratio < threshold && !self.generator_behind
    }
}

/// Why a sweep stopped.
pub mod stopped {
    pub const SINGLE: &str = "single";
    pub const FAILURES: &str = "failures";
    pub const GENERATOR: &str = "generator";
    pub const LAST_STEP: &str = "last-step";
}

/// One proxy's measurement.
#[derive(Debug, Clone, Serialize)]
pub struct CallsReport {
    /// `sluice` or `kamailio`.
    pub target: String,
    pub scenario: String,
    pub duration_s: u64,
    pub max_failed_ratio: f64,
    pub steps: Vec<Step>,
    /// The highest rate of a step with fewer failures than `max_failed_ratio` (and SIPp on time).
    pub max_clean_rate: Option<u32>,
    /// Resident memory of the proxy's processes after the last step, summed (shared pages in
    /// each).
    pub proxy_rss_bytes: Option<u64>,
    /// The same before the first step.
    pub proxy_rss_start_bytes: Option<u64>,
    /// The same, shared pages split between the processes (PSS).
    pub proxy_pss_bytes: Option<u64>,
    /// How the proxy was set up.
    pub setup: String,
    /// `single`, `failures`, `generator` (SIPp could not keep the rate) or `last-step`.
    pub stopped: String,
}

impl fmt::Display for CallsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} — {}", self.target, self.scenario)?;
        writeln!(f, "  {}", self.setup)?;
        writeln!(
            f,
            "  {:>6} {:>7} {:>7} {:>6} {:>8} {:>6} {:>8} {:>8} {:>7} {:>9} {:>6} {:>5}",
            "rate",
            "tried",
            "ok",
            "failed",
            "failed%",
            "retx",
            "p50 ms",
            "p99 ms",
            "cpu s",
            "µs/call",
            "cdrs",
            "load"
        )?;
        let opt = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
        };
        for s in &self.steps {
            writeln!(
                f,
                "  {:>6} {:>7} {:>7} {:>6} {:>8.3} {:>6} {:>8} {:>8} {:>7} {:>9} {:>6} {:>5}{}",
                s.rate,
                s.attempted,
                s.succeeded,
                s.failed,
                s.failed_ratio * 100.0,
                s.retransmissions,
                opt(s.response_time_p50_ms, 0),
                opt(s.response_time_p99_ms, 0),
                opt(s.cpu_seconds, 2),
                opt(s.cpu_per_call_us, 0),
                s.cdrs.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                opt(s.load_average, 2),
                if s.generator_behind {
                    "  (SIPp behind)"
                } else {
                    ""
                }
            )?;
        }
        writeln!(
            f,
            "  max clean rate: {} /s (failed < {}%), stopped: {}; memory: RSS {} MiB before, {} MiB after, PSS {} MiB after",
            self.max_clean_rate
                .map_or_else(|| "none".to_owned(), |r| r.to_string()),
            self.max_failed_ratio * 100.0,
            self.stopped,
            opt(self.proxy_rss_start_bytes.map(|b| b as f64 / 1048576.0), 1),
            opt(self.proxy_rss_bytes.map(|b| b as f64 / 1048576.0), 1),
            opt(self.proxy_pss_bytes.map(|b| b as f64 / 1048576.0), 1),
        )
    }
}

/// The steps of a run.
#[derive(Debug, Clone)]
struct Plan {
    rates: Vec<u32>,
    duration: u64,
    max_failed_ratio: f64,
    sweep: bool,
}

impl Plan {
    /// `rate` alone, or with `sweep` the steps of `ladder` up to `max_rate`.
    fn new(
        rate: u32,
        duration: u64,
        max_failed_ratio: f64,
        sweep: Option<(&[u32], u32)>,
    ) -> Result<Self> {
        if duration == 0 {
            bail!("--duration: at least one second");
        }
        if !(0.0..=1.0).contains(&max_failed_ratio) {
            bail!("--max-failed-ratio: a share between 0 and 1");
        }
        let rates = match sweep {
            Some((steps, max_rate)) => {
                let rates: Vec<u32> = steps.iter().copied().filter(|&r| r <= max_rate).collect();
                if rates.is_empty() {
                    bail!("--max-rate {max_rate} is below the sweep's first step");
                }
                rates
            }
            None if rate == 0 => bail!("--rate: at least one a second"),
            None => vec![rate],
        };
        Ok(Self {
            rates,
            duration,
            max_failed_ratio,
            sweep: sweep.is_some(),
        })
    }
}

/// `sluice-bench calls`.
pub fn run_calls(args: &CallsArgs) -> Result<()> {
    let plan = Plan::new(
        args.rate,
        args.duration,
        args.max_failed_ratio,
        args.sweep.then_some((CALL_RATES, args.max_rate)),
    )?;
    let workload = Workload::Calls {
        media: !args.no_media,
        hold_ms: args.hold_ms,
    };
    run_sides(&args.tools, args.against, workload, &plan, args.json)
}

/// `sluice-bench register`.
pub fn run_register(args: &RegisterArgs) -> Result<()> {
    if args.users == 0 || args.users > 99_999 {
        bail!("--users: 1 to 99999");
    }
    let plan = Plan::new(
        args.rate,
        args.duration,
        args.max_failed_ratio,
        args.sweep.then_some((REGISTER_RATES, args.max_rate)),
    )?;
    let workload = Workload::Register { users: args.users };
    run_sides(&args.tools, args.against, workload, &plan, args.json)
}

fn run_sides(
    tools: &ToolArgs,
    against: Option<Reference>,
    workload: Workload,
    plan: &Plan,
    json: bool,
) -> Result<()> {
    // Everything is looked for before anything runs.
    sluice_dataplane::netns::can_create_netns()
        .map_err(|why| anyhow::anyhow!("the benchmark builds network namespaces: {why}"))?;
    let sipp = find_binary(&tools.sipp, "sip-tester")?;
    sluice_binary(tools)?;
    if let Workload::Calls { media: true, .. } = workload {
        if !Path::new(RECORDING).is_file() {
            bail!("{RECORDING} is missing (Debian's sip-tester ships it); or run with --no-media");
        }
    }
    let mut targets = vec![Target::Sluice];
    if let Some(Reference::Kamailio) = against {
        find_binary(&tools.kamailio, "kamailio")?;
        find_binary(&tools.rtpengine, "rtpengine-daemon")?;
        targets.push(Target::Kamailio);
    }
    crate::relay_backend::raise_fd_limit(16_384);
    let mut reports = Vec::new();
    for target in targets {
        if !reports.is_empty() {
            // Let the previous proxy's namespaces and sockets go.
            std::thread::sleep(Duration::from_secs(2));
        }
        tracing::info!(target = target.name(), "measuring");
        let report = measure(target, tools, &sipp, workload, plan)?;
        if json {
            eprint!("{report}");
        } else {
            print!("{report}");
        }
        reports.push(report);
    }
    if reports.len() == 2 {
        let text = versus(&reports[0], &reports[1], workload);
        if json {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }
    if json {
        let all: serde_json::Map<String, serde_json::Value> = reports
            .iter()
            .map(|r| Ok((r.target.clone(), serde_json::to_value(r)?)))
            .collect::<Result<_, serde_json::Error>>()?;
        println!("{}", serde_json::Value::Object(all));
    }
    Ok(())
}

/// Sluice against the reference, step by step.
fn versus(sluice: &CallsReport, other: &CallsReport, workload: Workload) -> String {
    let mut text = format!(
        "side by side ({}): max clean rate sluice {} /s, {} {} /s\n",
        workload.noun(),
        sluice
            .max_clean_rate
            .map_or_else(|| "none".to_owned(), |r| r.to_string()),
        other.target,
        other
            .max_clean_rate
            .map_or_else(|| "none".to_owned(), |r| r.to_string()),
    );
    for s in &sluice.steps {
        let Some(o) = other.steps.iter().find(|o| o.rate == s.rate) else {
            continue;
        };
        let _ = writeln!(
            text,
            "  {:>6}/s: CPU µs per call sluice {} vs {} {}; p99 {} vs {} ms; failed {} vs {}",
            s.rate,
            s.cpu_per_call_us.map_or("-".into(), |v| format!("{v:.0}")),
            other.target,
            o.cpu_per_call_us.map_or("-".into(), |v| format!("{v:.0}")),
            s.response_time_p99_ms
                .map_or("-".into(), |v| format!("{v:.0}")),
            o.response_time_p99_ms
                .map_or("-".into(), |v| format!("{v:.0}")),
            s.failed,
            o.failed
        );
    }
    text
}

/// Everything one proxy's measurement runs, dropped in this order: SIPp, the proxy, then the
/// namespaces, then the work directory.
struct Run {
    uas: Option<NsProcess>,
    proxy: Proxy,
    bed: Testbed,
    work: WorkDir,
    sipp: PathBuf,
}

fn s(v: &str) -> String {
    v.to_owned()
}

/// Every step of `plan` through `target`.
fn measure(
    target: Target,
    tools: &ToolArgs,
    sipp: &Path,
    workload: Workload,
    plan: &Plan,
) -> Result<CallsReport> {
    let tag = match (workload, target) {
        (Workload::Calls { .. }, Target::Sluice) => "bcs",
        (Workload::Calls { .. }, Target::Kamailio) => "bck",
        (Workload::Register { .. }, Target::Sluice) => "brs",
        (Workload::Register { .. }, Target::Kamailio) => "brk",
    };
    let work = WorkDir::new(tag, tools.keep)?;
    let bed = Testbed::build(TopologyKind::TwoArm, tag).context("building the namespaces")?;
    write_scenarios(&work.path, workload)?;
    let proxy = Proxy::start(target, &bed, tools, workload, &work.path)
        .with_context(|| format!("starting {}", target.name()))?;
    let mut run = Run {
        uas: None,
        proxy,
        bed,
        work,
        sipp: sipp.to_owned(),
    };
    if let Workload::Calls { media, .. } = workload {
        run.uas = Some(start_uas(&run, media)?);
    }
    let rss_start = run.proxy.rss_bytes();
    let mut steps: Vec<Step> = Vec::new();
    let mut stopped = if plan.sweep {
        stopped::LAST_STEP
    } else {
        stopped::SINGLE
    };
    for (i, &rate) in plan.rates.iter().enumerate() {
        if i > 0 {
            // The previous step's transactions and the UAS's wait after each BYE run out.
            std::thread::sleep(Duration::from_secs(2));
        }
        let step = run_step(&mut run, workload, rate, plan.duration, i)
            .with_context(|| format!("{} at {rate}/s", target.name()))?;
        tracing::info!(
            target = target.name(),
            rate,
            attempted = step.attempted,
            failed = step.failed,
            "step done"
        );
        let failed = step.failed_ratio >= plan.max_failed_ratio;
        let behind = step.generator_behind;
        steps.push(step);
        if plan.sweep && failed {
            stopped = stopped::FAILURES;
            break;
        }
        if plan.sweep && behind {
            stopped = stopped::GENERATOR;
            break;
        }
    }
    let max_clean_rate = steps
        .iter()
        .filter(|s| s.clean(plan.max_failed_ratio))
        .map(|s| s.rate)
        .max();
    let report = CallsReport {
        target: target.name().to_owned(),
        scenario: workload.scenario(),
        duration_s: plan.duration,
        max_failed_ratio: plan.max_failed_ratio,
        steps,
        max_clean_rate,
        proxy_rss_bytes: run.proxy.rss_bytes(),
        proxy_rss_start_bytes: rss_start,
        proxy_pss_bytes: run.proxy.pss_bytes(),
        setup: run.proxy.setup.clone(),
        stopped: stopped.to_owned(),
    };
    drop(run);
    Ok(report)
}

/// The scenarios, written where SIPp reads them: the caller's call scenario from its template.
fn write_scenarios(dir: &Path, workload: Workload) -> Result<()> {
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).with_context(|| format!("writing {name}"))
    };
    match workload {
        Workload::Calls { media, hold_ms } => {
            let play = if media {
                format!(
                    "  <nop>\n    <action>\n      <exec play_pcap_audio=\"{RECORDING}\"/>\n    </action>\n  </nop>\n"
                )
            } else {
                String::new()
            };
            write(
                "uac_call.xml",
                &UAC_CALL_XML
                    .replace("@MEDIA@\n", &play)
                    .replace("@HOLD_MS@", &hold_ms.to_string()),
            )?;
            write("uas.xml", UAS_XML)?;
        }
        Workload::Register { users } => {
            write("register.xml", REGISTER_XML)?;
            let mut csv = String::from("SEQUENTIAL\n");
            for i in 0..users {
                let (user, password) = proxy::account(i);
                let _ = writeln!(
                    csv,
                    "{user};{DOMAIN};[authentication username={user} password={password}]"
                );
            }
            write("users.csv", &csv)?;
        }
    }
    Ok(())
}

/// SIPp's options common to both ends: no keyboard, errors to a file.
fn sipp_common(dir: &Path, role: &str) -> Vec<String> {
    vec![
        s("-nostdin"),
        s("-trace_err"),
        s("-error_file"),
        dir.join(format!("{role}-errors.log")).display().to_string(),
    ]
}

/// The callee: answers every call, echoing media with `media`, until stopped.
fn start_uas(run: &Run, media: bool) -> Result<NsProcess> {
    let dir = &run.work.path;
    let callee = run.bed.callee_addr().to_string();
    let mut args = vec![
        s("-sf"),
        dir.join("uas.xml").display().to_string(),
        s("-i"),
        callee.clone(),
        s("-p"),
        SIP_PORT.to_string(),
        s("-mi"),
        callee.clone(),
        s("-mp"),
        CALLEE_MEDIA_PORT.to_string(),
        // Until stopped.
        s("-timeout"),
        s("0"),
    ];
    if media {
        args.push(s("-rtp_echo"));
    }
    args.extend(sipp_common(dir, "uas"));
    let mut uas = NsProcess::spawn(run.bed.callee(), "sipp-uas", &run.sipp, &args, dir, &[])?;
    wait_for_udp_listener(
        run.bed.callee(),
        &callee,
        SIP_PORT,
        &mut uas,
        Duration::from_secs(10),
    )?;
    Ok(uas)
}

/// One step: SIPp's client at `rate` for `duration` seconds, and what it and the proxy show.
fn run_step(
    run: &mut Run,
    workload: Workload,
    rate: u32,
    duration: u64,
    index: usize,
) -> Result<Step> {
    let dir = run.work.path.join(format!("step{index}-{rate}"));
    std::fs::create_dir_all(&dir)?;
    let planned = u64::from(rate) * duration;
    let hold_s = match workload {
        Workload::Calls { hold_ms, .. } => hold_ms as f64 / 1000.0,
        Workload::Register { .. } => 0.0,
    };
    let caller = run.bed.caller_addr().to_string();
    let mut args = vec![
        format!("{}:{SIP_PORT}", run.bed.relay_caller_addr()),
        s("-i"),
        caller.clone(),
        s("-p"),
        SIP_PORT.to_string(),
        s("-m"),
        planned.to_string(),
        s("-r"),
        rate.to_string(),
        // No more at once than a few seconds' worth: an overloaded proxy shows as failures
        // rather than as an ever longer queue.
        s("-l"),
        ((f64::from(rate) * (hold_s + 5.0)).ceil() as u64).to_string(),
        // A call without an answer for 10 s has failed.
        s("-recv_timeout"),
        s("10000"),
        s("-timeout"),
        format!("{}s", duration + hold_s.ceil() as u64 + 30),
        s("-trace_stat"),
        s("-stf"),
        dir.join("stat.csv").display().to_string(),
        s("-fd"),
        s("1"),
        s("-trace_rtt"),
        s("-rtt_freq"),
        s("1"),
        // A 180 may arrive after the 200 (Kamailio's worker processes forward them in parallel,
        // and UDP keeps no order): a UA ignores such a late provisional, and so does SIPp here,
        // instead of aborting the call.
        s("-default_behaviors"),
        s("all,-abortunexp"),
    ];
    match workload {
        Workload::Calls { .. } => args.extend([
            s("-sf"),
            run.work.path.join("uac_call.xml").display().to_string(),
            s("-s"),
            s("bench"),
            s("-key"),
            s("callee"),
            format!("{}:{SIP_PORT}", run.bed.callee_addr()),
            s("-mi"),
            caller,
            s("-mp"),
            CALLER_MEDIA_PORT.to_string(),
        ]),
        Workload::Register { .. } => args.extend([
            s("-sf"),
            run.work.path.join("register.xml").display().to_string(),
            s("-inf"),
            run.work.path.join("users.csv").display().to_string(),
            // The digest's uri is the Request-URI (SIPp's default: the remote address).
            s("-auth_uri"),
            s(DOMAIN),
        ]),
    }
    args.extend(sipp_common(&dir, "uac"));

    run.proxy.check_alive()?;
    let cdrs_before = run.proxy.cdr_count()?;
    let cpu_before = run.proxy.cpu();
    let limit = Duration::from_secs(duration + hold_s.ceil() as u64 + 45);
    let mut uac = NsProcess::spawn(run.bed.caller(), "sipp-uac", &run.sipp, &args, &dir, &[])?;
    let started = Instant::now();
    if uac.wait(limit).is_none() {
        tracing::warn!(
            rate,
            "SIPp's client still runs after {limit:?}; stopping it"
        );
        uac.stop();
    }
    let wall = started.elapsed();
    let cpu_after = run.proxy.cpu();
    run.proxy.check_alive()?;
    if let Some(uas) = run.uas.as_mut() {
        uas.check_alive()?;
    }
    let stats = sipp::Stats::read(&dir.join("stat.csv")).with_context(|| {
        format!(
            "SIPp's client left no statistics; its log:\n{}",
            uac.log_tail(20)
        )
    })?;
    let attempted = stats.last("TotalCallCreated").unwrap_or(0);
    let succeeded = stats.last("SuccessfulCall(C)").unwrap_or(0);
    let failed = attempted.saturating_sub(succeeded);
    let generation_s = stats.seconds_to_create_all();
    let generator_behind = attempted < planned
        || generation_s.is_some_and(|g| g > duration as f64 * GENERATOR_SLACK + 1.0);
    let mut rtt = sipp::response_times_ms(&dir);
    if failed > 0 {
        tracing::warn!(
            rate,
            failed,
            "failures; SIPp's errors are in {}; the end of the proxy's logs:\n{}",
            dir.join("uac-errors.log").display(),
            run.proxy.log_tail()
        );
    }

    // The CDRs of the step's calls: the last BYEs may still be in flight.
    let cdrs = match cdrs_before.filter(|_| matches!(workload, Workload::Calls { .. })) {
        Some(before) => {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let now = run.proxy.cdr_count()?.unwrap_or(before);
                if now.saturating_sub(before) >= succeeded || Instant::now() >= deadline {
                    break Some(now.saturating_sub(before));
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        None => None,
    };

    let cpu_split = cpu_after.since(&cpu_before);
    let cpu_seconds = cpu_after.total_ns().saturating_sub(cpu_before.total_ns()) as f64 / 1e9;
    tracing::debug!(?wall, "step wall time");
    Ok(Step {
        rate,
        planned,
        attempted,
        succeeded,
        failed,
        failed_ratio: if attempted > 0 {
            failed as f64 / attempted as f64
        } else {
            1.0
        },
        retransmissions: stats.last("Retransmissions(C)").unwrap_or(0),
        response_time_p50_ms: sipp::quantile(&mut rtt, 0.5),
        response_time_p99_ms: sipp::quantile(&mut rtt, 0.99),
        generation_s,
        generator_behind,
        cpu_seconds: Some(cpu_seconds),
        cpu_per_call_us: (succeeded > 0).then(|| cpu_seconds * 1e6 / succeeded as f64),
        cpu_split,
        cdrs,
        load_average: load_average(),
        proxy_rss_bytes: run.proxy.rss_bytes(),
    })
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_stop_at_the_max_rate() {
        let plan = Plan::new(7, 10, 0.001, Some((CALL_RATES, 300))).expect("plan");
        assert_eq!(plan.rates, [50, 100, 200, 300]);
        assert!(plan.sweep);
        assert!(Plan::new(7, 10, 0.001, Some((CALL_RATES, 10))).is_err());
        assert_eq!(Plan::new(7, 10, 0.001, None).expect("plan").rates, [7]);
        assert!(Plan::new(0, 10, 0.001, None).is_err());
        assert!(Plan::new(7, 0, 0.001, None).is_err());
        assert!(Plan::new(7, 10, 2.0, None).is_err());
    }

    #[test]
    fn scenarios_are_written_from_their_templates() {
        let dir = std::env::temp_dir().join(format!("calls-scenarios-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        write_scenarios(
            &dir,
            Workload::Calls {
                media: true,
                hold_ms: 1500,
            },
        )
        .expect("write");
        let uac = std::fs::read_to_string(dir.join("uac_call.xml")).expect("uac");
        assert!(uac.contains("<pause milliseconds=\"1500\"/>"), "{uac}");
        assert!(
            uac.contains(&format!("play_pcap_audio=\"{RECORDING}\"")),
            "{uac}"
        );
        assert!(
            !uac.contains("@MEDIA@") && !uac.contains("@HOLD_MS@"),
            "{uac}"
        );
        write_scenarios(&dir, Workload::Register { users: 2 }).expect("write");
        let csv = std::fs::read_to_string(dir.join("users.csv")).expect("csv");
        assert_eq!(
            csv,
            "SEQUENTIAL\nu00000;bench.test;[authentication username=u00000 password=pw-u00000]\n\
             u00001;bench.test;[authentication username=u00001 password=pw-u00001]\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_step_is_clean_below_the_threshold_with_sipp_on_time() {
        let mut step = Step {
            rate: 100,
            planned: 1000,
            attempted: 1000,
            succeeded: 999,
            failed: 1,
            failed_ratio: 0.001,
            retransmissions: 0,
            response_time_p50_ms: None,
            response_time_p99_ms: None,
            generation_s: Some(10.0),
            generator_behind: false,
            cpu_seconds: None,
            cpu_per_call_us: None,
            cpu_split: BTreeMap::new(),
            cdrs: None,
            load_average: None,
            proxy_rss_bytes: None,
        };
        assert!(!step.clean(0.001));
        step.failed_ratio = 0.0;
        assert!(step.clean(0.001));
        step.generator_behind = true;
        assert!(!step.clean(0.001));
    }
}
