//! `sluice demo`: real calls through `sluice run`, between two phones behind two NATs, in
//! network namespaces built for the occasion.
//!
//! ```text
//! [alice] 192.168.1.2 ── 192.168.1.1 [NAT a] 10.80.1.2 ── 10.80.1.1 ┐
//!                                                                  [sluice run]  domain demo.sluice
//! [bob]   192.168.2.2 ── 192.168.2.1 [NAT b] 10.80.2.2 ── 10.80.2.1 ┘
//! ```
//!
//! Each NAT masquerades (nftables or iptables, see [`NatPair`]). `sluice run` (this binary) runs
//! in the middle namespace with an embedded configuration: SIP and a relay interface on each
//! side, the accounts alice and bob, a 3 s media timeout, the CDRs in a scratch directory. The
//! phones are SIPp with the scenarios in `src/demo/sipp/`:
//!
//! 1. alice and bob REGISTER with digest from behind their NATs; Sluice binds each private
//!    Contact to the NAT's public address the REGISTER came from.
//! 2. alice calls bob (`sip:bob@demo.sluice`; the INVITE is challenged with 407 and sent again
//!    with credentials), both play the A-law recording sip-tester ships (about 7 s) through the
//!    relay, which learns each phone's NAT public address from its first packet; alice hangs up.
//! 3. bob calls alice the same way but never hangs up: when the recordings are over no media
//!    flows, and after the media timeout Sluice sends a BYE to both phones.
//!
//! Then it prints each call's streams from the management API (`GET /ended`: packets and bytes
//! each way, the address each sender's SDP gave and the one the relay latched) and the CDRs
//! (as `sluice cdrs` does), checks them, and removes everything it made. About 25 s.
//!
//! `sluice demo --relay-only` is the earlier demo: RTP between namespaces through the relay's
//! forwarding path alone, without SIP ([`relay_only`]).

mod relay_only;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::Value;
use sluice_dataplane::netns::{NatPair, NatTool, NetNs};
use sluice_dataplane::testbed::{NatTestbed, TopologyKind};
use sluice_dataplane::BackendChoice;

use crate::cdr::{CdrStore, SqliteCdrStore};

/// Options of `sluice demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The earlier demo: two calls' RTP through the relay between namespaces, without SIP.
    #[arg(long)]
    relay_only: bool,
    /// With --relay-only: how long each stream sends, in seconds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=60), requires = "relay_only")]
    seconds: u64,
    /// With --relay-only: `two-arm` (XDP_REDIRECT between two interfaces) or `one-arm` (XDP_TX
    /// on one).
    #[arg(long, default_value = "two-arm", requires = "relay_only")]
    topology: TopologyKind,
    /// Forwarding path: `auto`, `xdp`, `afxdp` or `sockets`.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: String,
}

fn parse_backend(s: &str) -> Result<String, String> {
    s.parse::<BackendChoice>()
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// The recording SIPp plays (Debian package sip-tester).
pub const RECORDING: &str = "/usr/share/sip-tester/g711a.pcap";
/// The SIP domain of the demo.
pub const DOMAIN: &str = "demo.sluice";
/// Seconds without media before Sluice ends a call.
pub const MEDIA_TIMEOUT_S: u64 = 3;
const ACCOUNTS: [(&str, &str); 2] = [("alice", "alice-secret"), ("bob", "bob-secret")];
const SIP_PORT: u16 = 5060;
const API: &str = "127.0.0.1:8089";
const ALICE_MEDIA_PORT: u16 = 6000;
const BOB_MEDIA_PORT: u16 = 7000;
/// Longest wait for one step (a registration, a call).
const STEP_LIMIT: Duration = Duration::from_secs(40);

const SCENARIO_REGISTER: &str = include_str!("demo/sipp/register.xml");
const SCENARIO_CALL: &str = include_str!("demo/sipp/call.xml");
const SCENARIO_CALL_NO_BYE: &str = include_str!("demo/sipp/call_no_bye.xml");
const SCENARIO_ANSWER: &str = include_str!("demo/sipp/answer.xml");

pub fn run(args: &DemoArgs) -> Result<()> {
    let backend: BackendChoice = args.backend.parse().map_err(|e| anyhow!("{e}"))?;
    if args.relay_only {
        return relay_only::run(&relay_only::RelayOnlyArgs {
            seconds: args.seconds,
            topology: args.topology,
            backend,
        });
    }
    calls(&args.backend)
}

/// What the demo needs from the host, with what to do when it is missing.
fn preflight() -> Result<(PathBuf, NatTool)> {
    sluice_dataplane::netns::can_create_netns()
        .map_err(|why| anyhow!("the demo builds network namespaces (run it as root): {why}"))?;
    let sipp = in_path("sipp").ok_or_else(|| {
        anyhow!(
            "the demo's phones are SIPp, and `sipp` is not installed: run `bash .ci/setup` \
             (Debian package sip-tester)"
        )
    })?;
    if !Path::new(RECORDING).is_file() {
        bail!("{RECORDING} is missing: run `bash .ci/setup` (Debian package sip-tester)");
    }
    let nat = NatTool::find().map_err(|why| anyhow!("the demo's NATs: {why}"))?;
    Ok((sipp, nat))
}

fn in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A scratch directory, removed at the end unless the demo failed.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    fn new() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("sluice-demo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, keep: true })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("logs kept in {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A process started in a namespace with `ip netns exec` (which execs it: the pid is the
/// program's own), its output in a log file. Dropping it ends it, by its pid.
struct Proc {
    what: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    fn spawn(ns: &NetNs, what: &str, program: &Path, args: &[String], dir: &Path) -> Result<Self> {
        let log = dir.join(format!("{what}.log"));
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(program)
            .args(args)
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Proc {
            what: what.to_owned(),
            child,
            log,
            status: None,
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits for the process to exit; `Err` when interrupted or past `limit`.
    fn wait(&mut self, limit: Duration, stop: &AtomicBool) -> Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            interrupted(stop)?;
            if start.elapsed() > limit {
                bail!("{} did not finish within {limit:?}", self.what);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for a successful exit; the error carries the end of its log.
    fn succeed(&mut self, limit: Duration, stop: &AtomicBool) -> Result<()> {
        let status = self.wait(limit, stop)?;
        if !status.success() {
            bail!(
                "{} failed ({status}):\n{}",
                self.what,
                tail(&self.log(), 30)
            );
        }
        Ok(())
    }

    fn check_running(&mut self) -> Result<()> {
        match self.exited() {
            Some(status) => bail!(
                "{} exited early ({status}):\n{}",
                self.what,
                tail(&self.log(), 30)
            ),
            None => Ok(()),
        }
    }

    /// SIGTERM, then SIGKILL if it is still there after 5 s.
    fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn interrupted(stop: &AtomicBool) -> Result<()> {
    if stop.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

/// `GET path` on the management API from the server namespace: the body, if the status is 200.
fn api_get(ns: &NetNs, path: &str) -> Result<String> {
    let path = path.to_owned();
    let response = ns.run(move || -> std::io::Result<String> {
        let addr: SocketAddr = API.parse().expect("API is an address");
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {API}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    })??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("the API's answer has no body"))?;
    if head.split_whitespace().nth(1) != Some("200") {
        bail!(
            "the API answered {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body.to_owned())
}

fn api_json(ns: &NetNs, path: &str) -> Result<Value> {
    serde_json::from_str(&api_get(ns, path)?).with_context(|| format!("the API's {path}"))
}

fn udp_listening(ns: &NetNs, port: u16) -> bool {
    let filter = format!("sport = :{port}");
    ns.exec(&["ss", "-H", "-u", "-l", "-n", &filter])
        .is_ok_and(|out| !out.trim().is_empty())
}

fn wait_for_udp_listener(ns: &NetNs, port: u16, proc: &mut Proc, stop: &AtomicBool) -> Result<()> {
    let start = Instant::now();
    while !udp_listening(ns, port) {
        proc.check_running()?;
        interrupted(stop)?;
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{} does not listen on UDP port {port}", proc.what);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The demo's `sluice run` configuration.
fn config(dir: &Path) -> String {
    let mut text = format!(
        "# sluice demo: the appliance between two NATs\n\
         [sip]\n\
         listen = [\"{a}:{SIP_PORT}\", \"{b}:{SIP_PORT}\"]\n\
         domains = [\"{DOMAIN}\"]\n\
         # SIPp answers only the first challenge, and only MD5\n\
         digest_algorithms = [\"MD5\"]\n\
         \n\
         [relay]\n\
         port_min = 30000\n\
         port_max = 30999\n\
         \n\
         [[relay.interface]]\n\
         name = \"nat-a\"\n\
         address = \"{a}\"\n\
         \n\
         [[relay.interface]]\n\
         name = \"nat-b\"\n\
         address = \"{b}\"\n\
         \n\
         [timeouts]\n\
         media = {MEDIA_TIMEOUT_S}\n\
         \n\
         [api]\n\
         listen = \"{API}\"\n\
         \n\
         [cdr]\n\
         db = \"{db}\"\n\
         node = \"sluice-demo\"\n",
        a = NatPair::SERVER_A_ADDR,
        b = NatPair::SERVER_B_ADDR,
        db = dir.join("cdr.sqlite").display(),
    );
    for (user, password) in ACCOUNTS {
        text.push_str(&format!(
            "\n[[account]]\nuser = \"{user}\"\ndomain = \"{DOMAIN}\"\npassword = \"{password}\"\n"
        ));
    }
    text
}

/// One phone: a party behind its NAT.
struct Phone {
    user: &'static str,
    password: &'static str,
    addr: Ipv4Addr,
    public: Ipv4Addr,
    media_port: u16,
    /// Sluice's address on the phone's side: its outbound proxy.
    proxy: Ipv4Addr,
}

impl Phone {
    fn alice() -> Self {
        Phone {
            user: ACCOUNTS[0].0,
            password: ACCOUNTS[0].1,
            addr: NatPair::ALICE_ADDR,
            public: NatPair::NAT_A_PUBLIC_ADDR,
            media_port: ALICE_MEDIA_PORT,
            proxy: NatPair::SERVER_A_ADDR,
        }
    }

    fn bob() -> Self {
        Phone {
            user: ACCOUNTS[1].0,
            password: ACCOUNTS[1].1,
            addr: NatPair::BOB_ADDR,
            public: NatPair::NAT_B_PUBLIC_ADDR,
            media_port: BOB_MEDIA_PORT,
            proxy: NatPair::SERVER_B_ADDR,
        }
    }
}

/// Starts SIPp as `phone` in its namespace with one of the scenarios.
fn sipp(
    sipp: &Path,
    ns: &NetNs,
    dir: &Path,
    phone: &Phone,
    step: &str,
    scenario: &str,
    extra: &[String],
) -> Result<Proc> {
    let name = format!("{step}-{}", phone.user);
    let mut args = vec![
        s(format!("{}:{SIP_PORT}", phone.proxy)),
        s("-sf"),
        dir.join(scenario).display().to_string(),
        s("-m"),
        s(1),
        s("-s"),
        s(phone.user),
        s("-au"),
        s(phone.user),
        s("-ap"),
        s(phone.password),
        s("-key"),
        s("domain"),
        s(DOMAIN),
        s("-i"),
        s(phone.addr),
        s("-p"),
        s(SIP_PORT),
        s("-mi"),
        s(phone.addr),
        s("-mp"),
        s(phone.media_port),
        s("-timeout"),
        s("40s"),
        s("-timeout_error"),
        s("-nostdin"),
        s("-trace_msg"),
        s("-message_file"),
        dir.join(format!("{name}-messages.log"))
            .display()
            .to_string(),
        s("-trace_err"),
        s("-error_file"),
        dir.join(format!("{name}-errors.log")).display().to_string(),
    ];
    args.extend_from_slice(extra);
    Proc::spawn(ns, &format!("sipp-{name}"), sipp, &args, dir)
}

/// What the registrar answered: the Contact it bound and where it saw the REGISTER come from
/// (`received` and `rport` in the 200 OK's Via).
fn registration(messages: &str) -> Option<(String, String)> {
    let at = messages.rfind("SIP/2.0 200")?;
    let reply = &messages[at..];
    let header = |name: &str| {
        reply
            .lines()
            .map(str::trim)
            .take_while(|l| !l.is_empty())
            .find(|l| {
                l.split(':')
                    .next()
                    .is_some_and(|h| h.trim().eq_ignore_ascii_case(name))
            })
            .map(|l| l.split_once(':').map_or("", |(_, v)| v.trim()).to_owned())
    };
    let via = header("Via")?;
    let param = |p: &str| {
        via.split(';').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k.trim() == p).then(|| v.trim().to_owned())
        })
    };
    let seen = format!("{}:{}", param("received")?, param("rport")?);
    Some((header("Contact").unwrap_or_default(), seen))
}

/// One call of the demo, as `/ended` reports it.
struct CallSummary {
    caller: &'static str,
    callee: &'static str,
    call_id: String,
    cause: String,
    duration_s: f64,
    /// Per direction (caller's first): RTP packets and bytes the relay forwarded.
    rtp: [(u64, u64); 2],
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Prints a call's streams from `/ended` and checks the latched addresses.
fn print_call(
    n: usize,
    ended: &Value,
    caller: &Phone,
    callee: &Phone,
    problems: &mut Vec<String>,
) -> CallSummary {
    let report = &ended["report"];
    let call_id = report["call_id"].as_str().unwrap_or_default().to_owned();
    let cause = ended["cause"].as_str().unwrap_or_default().to_owned();
    let duration_s = report["duration_s"].as_f64().unwrap_or(0.0);
    let rtp = [0, 1].map(|i| {
        (
            u(&report["rtp"][i]["packets"]),
            u(&report["rtp"][i]["bytes"]),
        )
    });
    println!(
        "call {n}: {} -> {}, Call-ID {call_id}, answered for {duration_s:.1} s, relay ended it: {cause}",
        caller.user, callee.user
    );
    println!(
        "  {:<16} {:<5} {:<18} {:<20} {:<20} {:>8} {:>9}",
        "direction",
        "kind",
        "relay receives on",
        "sender's SDP said",
        "latched (NAT)",
        "packets",
        "bytes"
    );
    let streams = report["streams"].as_array().cloned().unwrap_or_default();
    for stream in &streams {
        // Side a made the first offer: the caller.
        let (from, to) = if stream["from"] == "a" {
            (caller, callee)
        } else {
            (callee, caller)
        };
        let kind = if stream["rtcp"].as_bool().unwrap_or(false) {
            "rtcp"
        } else {
            "rtp"
        };
        let latched = stream["latched_peer"].as_str().unwrap_or("-");
        let packets = u(&stream["packets"]);
        println!(
            "  {:<16} {:<5} {:<18} {:<20} {:<20} {:>8} {:>9}",
            format!("{} -> {}", from.user, to.user),
            kind,
            stream["relay"].as_str().unwrap_or("-"),
            stream["sdp_peer"].as_str().unwrap_or("-"),
            latched,
            packets,
            u(&stream["bytes"]),
        );
        if packets > 0 {
            let ip = latched.parse::<SocketAddrV4>().ok().map(|a| *a.ip());
            if ip != Some(from.public) {
                problems.push(format!(
                    "call {n}: the relay latched {} for {}, not her/his NAT's public address {}",
                    latched, from.user, from.public
                ));
            }
        }
    }
    for (i, (packets, bytes)) in rtp.iter().enumerate() {
        if *packets == 0 || *bytes == 0 {
            let from = if i == 0 { caller.user } else { callee.user };
            problems.push(format!("call {n}: no RTP from {from} through the relay"));
        }
    }
    CallSummary {
        caller: if caller.user == "alice" {
            "alice"
        } else {
            "bob"
        },
        callee: if callee.user == "alice" {
            "alice"
        } else {
            "bob"
        },
        call_id,
        cause,
        duration_s,
        rtp,
    }
}

/// The demo with SIP: registrations and two calls through `sluice run` between two NATs.
fn calls(backend: &str) -> Result<()> {
    let started = Instant::now();
    let (sipp_bin, nat_tool) = preflight()?;
    let stop = crate::relay::stop_on_signals()?;
    let mut work = WorkDir::new()?;
    let dir = work.path.clone();
    let result = calls_in(backend, &sipp_bin, nat_tool, &dir, &stop);
    if result.is_ok() {
        work.keep = false;
        println!("demo done in {:.1} s", started.elapsed().as_secs_f64());
    }
    result
}

fn calls_in(
    backend: &str,
    sipp_bin: &Path,
    nat_tool: NatTool,
    dir: &Path,
    stop: &Arc<AtomicBool>,
) -> Result<()> {
    let bed = NatTestbed::build("demo").context("building the demo namespaces")?;
    let t = bed.topology();
    let (alice, bob) = (Phone::alice(), Phone::bob());
    println!(
        "sluice demo: two phones behind two NATs ({}) call each other through `sluice run`",
        nat_tool.name()
    );
    println!();
    println!(
        "  [alice] {} -- [NAT a] {} -- {} [sluice run] {} -- {} [NAT b] -- {} [bob]",
        alice.addr,
        alice.public,
        NatPair::SERVER_A_ADDR,
        NatPair::SERVER_B_ADDR,
        bob.public,
        bob.addr
    );
    println!(
        "  domain {DOMAIN}, accounts alice and bob (digest), media timeout {MEDIA_TIMEOUT_S} s, backend {backend}"
    );
    println!();

    std::fs::write(dir.join("sluice.toml"), config(dir))?;
    for (name, text) in [
        ("register.xml", SCENARIO_REGISTER),
        ("call.xml", SCENARIO_CALL),
        ("call_no_bye.xml", SCENARIO_CALL_NO_BYE),
        ("answer.xml", SCENARIO_ANSWER),
    ] {
        // SIPp reads the recording when it loads the scenario.
        std::fs::write(dir.join(name), text.replace("[recording]", RECORDING))?;
    }

    let exe = std::env::current_exe().context("finding this program")?;
    let mut sluice = Proc::spawn(
        t.server(),
        "sluice-run",
        &exe,
        &[
            s("run"),
            s("--config"),
            dir.join("sluice.toml").display().to_string(),
            s("--backend"),
            s(backend),
        ],
        dir,
    )?;
    let start = Instant::now();
    while api_get(t.server(), "/healthz").is_err() || !udp_listening(t.server(), SIP_PORT) {
        sluice.check_running()?;
        interrupted(stop)?;
        if start.elapsed() > Duration::from_secs(20) {
            bail!("sluice run did not come up:\n{}", tail(&sluice.log(), 30));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Some(line) = sluice.log().lines().find(|l| l.contains("sluice run:")) {
        println!("{}", line.trim());
    }
    println!();

    // 1. Registrations, both at once.
    println!("registrations (REGISTER, 401, REGISTER with digest, 200):");
    let mut regs = Vec::new();
    for (phone, ns) in [(&alice, t.alice()), (&bob, t.bob())] {
        // SIPp's digest `uri` is the remote address unless told: the Request-URI.
        let auth_uri = [s("-auth_uri"), s(DOMAIN)];
        regs.push(sipp(
            sipp_bin,
            ns,
            dir,
            phone,
            "register",
            "register.xml",
            &auth_uri,
        )?);
    }
    for (reg, phone) in regs.iter_mut().zip([&alice, &bob]) {
        if let Err(e) = reg.succeed(STEP_LIMIT, stop) {
            let errors =
                std::fs::read_to_string(dir.join(format!("register-{}-errors.log", phone.user)))
                    .unwrap_or_default();
            if errors.contains("must use MD5") {
                bail!(
                    "{} registering: SIPp answers digest challenges with MD5 only, and Sluice \
                     offered another algorithm first: {e:#}",
                    phone.user
                );
            }
            return Err(e.context(format!("{} registering", phone.user)));
        }
        let messages =
            std::fs::read_to_string(dir.join(format!("register-{}-messages.log", phone.user)))
                .unwrap_or_default();
        let (contact, seen) = registration(&messages)
            .ok_or_else(|| anyhow!("{}: no 200 OK to the REGISTER in SIPp's trace", phone.user))?;
        println!(
            "  sip:{}@{DOMAIN}  contact {contact}  seen by Sluice from {seen} (NAT {})",
            phone.user,
            if phone.user == "alice" { "a" } else { "b" }
        );
        if !seen.starts_with(&format!("{}:", phone.public)) {
            bail!(
                "{}'s REGISTER reached Sluice from {seen}, not from her/his NAT {}",
                phone.user,
                phone.public
            );
        }
    }
    println!();

    // 2. alice calls bob, they talk, alice hangs up.
    let media = |phone: &Phone| {
        vec![
            s("-key"),
            s("callee_user"),
            s(phone.user),
            s("-auth_uri"),
            format!("{}@{DOMAIN}", phone.user),
        ]
    };
    println!(
        "call 1: alice calls sip:bob@{DOMAIN} (407, INVITE with digest), both play {RECORDING}, alice hangs up"
    );
    run_call(
        sipp_bin,
        t,
        dir,
        &bob,
        &alice,
        "call.xml",
        "call1",
        &media(&bob),
        stop,
        &mut sluice,
    )?;

    // 3. bob calls alice and never hangs up: the media timeout ends it.
    println!(
        "call 2: bob calls sip:alice@{DOMAIN}, both play the recording, nobody hangs up: Sluice ends the call {MEDIA_TIMEOUT_S} s after the media stops"
    );
    run_call(
        sipp_bin,
        t,
        dir,
        &alice,
        &bob,
        "call_no_bye.xml",
        "call2",
        &media(&alice),
        stop,
        &mut sluice,
    )?;
    println!();

    // The calls as the relay saw them.
    let ended = api_json(t.server(), "/ended")?;
    let ended: Vec<Value> = ended["ended"].as_array().cloned().unwrap_or_default();
    let find = |ip: Ipv4Addr| {
        // SIPp's Call-IDs end with the caller's address; /ended is newest first.
        ended
            .iter()
            .find(|e| {
                e["report"]["call_id"]
                    .as_str()
                    .is_some_and(|id| id.ends_with(&format!("@{ip}")))
            })
            .cloned()
    };
    let mut problems = Vec::new();
    println!("per-call streams (management API, GET /ended):");
    let mut summaries = Vec::new();
    for (n, caller, callee) in [(1, &alice, &bob), (2, &bob, &alice)] {
        match find(caller.addr) {
            Some(e) => summaries.push(print_call(n, &e, caller, callee, &mut problems)),
            None => problems.push(format!("call {n}: not in /ended")),
        }
    }
    println!();
    sluice.stop();

    // The CDRs, as `sluice cdrs` prints them.
    let db = dir.join("cdr.sqlite");
    let store = SqliteCdrStore::open_read_only(&db)?;
    let cdrs = store.list(None, None)?;
    println!(
        "CDRs ({}, as `sluice cdrs --db FILE` prints them):",
        db.display()
    );
    print!("{}", crate::cli_cdrs::table(&cdrs));
    println!();
    for (summary, expected) in summaries.iter().zip(["bye:caller", "media-timeout"]) {
        match cdrs.iter().find(|c| c.call.call_id == summary.call_id) {
            Some(cdr) => {
                let cause = cdr.cause.to_string();
                if cause != expected {
                    problems.push(format!(
                        "{} -> {}: CDR cause {cause}, expected {expected}",
                        summary.caller, summary.callee
                    ));
                }
                let c = cdr.counters;
                if c.from_caller.bytes == 0 || c.from_callee.bytes == 0 {
                    problems.push(format!(
                        "{} -> {}: the CDR has no media in one direction",
                        summary.caller, summary.callee
                    ));
                }
            }
            None => problems.push(format!(
                "{} -> {}: no CDR for Call-ID {}",
                summary.caller, summary.callee, summary.call_id
            )),
        }
    }
    if cdrs.len() != 2 {
        problems.push(format!("{} CDRs, expected 2", cdrs.len()));
    }
    if !problems.is_empty() {
        bail!(
            "the demo's checks failed:\n  {}\nsluice run's log ends with:\n{}",
            problems.join("\n  "),
            tail(&sluice.log(), 30)
        );
    }
    for c in &summaries {
        println!(
            "ok: {} -> {}: {:.1} s, RTP {} packets / {} bytes {} -> {} and {} / {} back, ended by {}",
            c.caller,
            c.callee,
            c.duration_s,
            c.rtp[0].0,
            c.rtp[0].1,
            c.caller,
            c.callee,
            c.rtp[1].0,
            c.rtp[1].1,
            if c.cause == "media-timeout" {
                "the media timeout (BYE from Sluice to both)"
            } else {
                "the caller's BYE"
            }
        );
    }
    println!("ok: each stream latched on its sender's NAT public address, one CDR per call");
    Ok(())
}

/// One call: `callee` answers (SIPp waiting on its registered port), `caller` calls. While they
/// talk, one look at `/calls`.
#[allow(clippy::too_many_arguments)]
fn run_call(
    sipp_bin: &Path,
    t: &NatPair,
    dir: &Path,
    callee: &Phone,
    caller: &Phone,
    scenario: &str,
    step: &str,
    extra: &[String],
    stop: &AtomicBool,
    sluice: &mut Proc,
) -> Result<()> {
    let ns_of = |p: &Phone| {
        if p.user == "alice" {
            t.alice()
        } else {
            t.bob()
        }
    };
    let mut answer = sipp(
        sipp_bin,
        ns_of(callee),
        dir,
        callee,
        step,
        "answer.xml",
        &[],
    )?;
    wait_for_udp_listener(ns_of(callee), SIP_PORT, &mut answer, stop)?;
    let mut call = sipp(sipp_bin, ns_of(caller), dir, caller, step, scenario, extra)?;
    let start = Instant::now();
    let mut looked = false;
    while call.exited().is_none() {
        interrupted(stop)?;
        sluice.check_running()?;
        if start.elapsed() > STEP_LIMIT {
            bail!("{step} did not finish within {STEP_LIMIT:?}");
        }
        if !looked && start.elapsed() > Duration::from_secs(4) {
            looked = true;
            if let Ok(calls) = api_json(t.server(), "/calls?summary=1") {
                if let Some(c) = calls["calls"].as_array().and_then(|a| a.first()) {
                    println!(
                        "  while they talk, GET /calls: {} call up for {:.1} s, {} -> {} {} RTP packets, {} -> {} {}",
                        calls["count"],
                        c["duration_s"].as_f64().unwrap_or(0.0),
                        caller.user,
                        callee.user,
                        u(&c["rtp"][0]["packets"]),
                        callee.user,
                        caller.user,
                        u(&c["rtp"][1]["packets"]),
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    call.succeed(Duration::ZERO, stop)
        .with_context(|| format!("{step}: {}'s call", caller.user))?;
    answer
        .succeed(Duration::from_secs(10), stop)
        .with_context(|| format!("{step}: {}'s answer", callee.user))?;
    println!(
        "  done in {:.1} s: SIPp reports the call successful on both phones",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_valid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("demo.toml");
        std::fs::write(&path, config(dir.path())).expect("write");
        let file: crate::run::RunFile = crate::relay::read_toml(&path).expect("valid");
        assert_eq!(file.account.len(), 2);
        assert_eq!(file.sip.domains, vec![DOMAIN.to_owned()]);
        assert_eq!(file.timeouts.media, MEDIA_TIMEOUT_S);
    }

    #[test]
    fn registrations_are_read_from_the_200() {
        let trace = "----- x\nUDP message received [300] bytes :\n\n\
            SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 192.168.1.2:5060;branch=z9hG4bK-1;received=10.80.1.2;rport=5060\r\n\r\n\
            ----- y\nUDP message received [300] bytes :\n\n\
            SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.168.1.2:5060;branch=z9hG4bK-2;received=10.80.1.2;rport=5061\r\n\
            Contact: <sip:alice@192.168.1.2:5060>;expires=300\r\nContent-Length: 0\r\n\r\n";
        let (contact, seen) = registration(trace).expect("found");
        assert_eq!(seen, "10.80.1.2:5061");
        assert_eq!(contact, "<sip:alice@192.168.1.2:5060>;expires=300");
    }
}
