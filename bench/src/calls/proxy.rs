//! The proxies under test, each in the proxy namespace of a two-arm testbed with SIP on both of
//! its addresses: `sluice run` (SIP, relay and CDRs in one process), or Kamailio with its
//! rtpengine module and a real rtpengine (userspace forwarding) beside it. Both are read the same
//! way: CPU time of every process (and, for Sluice's XDP path, the run time of its BPF programs),
//! and memory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use sluice_dataplane::testbed::Testbed;

use super::process::{wait_for_udp_listener, NsProcess};
use super::{ToolArgs, Workload, DOMAIN, SIP_PORT};
use crate::procstat;

/// Where rtpengine's ng socket listens, on the proxy namespace's loopback.
const NG_ADDR: &str = "127.0.0.1:22222";
/// Sluice's management API, on the same loopback.
const API_ADDR: &str = "127.0.0.1:8089";
/// The relay ports of either relay: four a call, far more than the longest sweep holds at once.
const PORT_MIN: u16 = 20_000;
const PORT_MAX: u16 = 60_000;
/// Kamailio's shared and per-process memory, MiB.
const KAMAILIO_SHM_MB: u32 = 256;
const KAMAILIO_PKG_MB: u32 = 16;

const KAMAILIO_CFG: &str = include_str!("../../scenarios/kamailio.cfg");

/// Which proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Sluice,
    Kamailio,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Sluice => "sluice",
            Target::Kamailio => "kamailio",
        }
    }
}

/// A binary by name in `PATH` (or `/usr/sbin`, `/usr/bin`, `/sbin`), or a path as given.
pub fn find_binary(given: &Path, package: &str) -> Result<PathBuf> {
    let found = if given.components().count() > 1 {
        given.is_file().then(|| given.to_owned())
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
            .map(|d| d.join(given))
            .find(|p| p.is_file())
    };
    found.ok_or_else(|| {
        anyhow!(
            "no `{}` binary; install Debian's {package} (`.ci/setup` does) or give its path",
            given.display()
        )
    })
}

/// The `sluice` binary: `--sluice`, `$SLUICE_BIN`, or `sluice` next to this binary.
pub fn sluice_binary(tools: &ToolArgs) -> Result<PathBuf> {
    let path = match (&tools.sluice, std::env::var_os("SLUICE_BIN")) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => PathBuf::from(p),
        (None, None) => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow!("this binary has no directory"))?
            .join("sluice"),
    };
    if !path.is_file() {
        bail!(
            "no sluice binary at {} (build it with `cargo build --release -p sluice`, the same \
             profile as sluice-bench, or pass --sluice)",
            path.display()
        );
    }
    Ok(path)
}

/// One reading of the proxy's processes.
#[derive(Clone, Debug, Default)]
pub struct CpuSample {
    /// CPU time by part (a thread name for Sluice, a process for Kamailio), ns.
    pub parts: BTreeMap<String, u64>,
}

impl CpuSample {
    pub fn total_ns(&self) -> u64 {
        self.parts.values().sum()
    }

    /// What each part used since `before`, s.
    pub fn since(&self, before: &CpuSample) -> BTreeMap<String, f64> {
        self.parts
            .iter()
            .map(|(k, v)| {
                let was = before.parts.get(k).copied().unwrap_or(0);
                (k.clone(), v.saturating_sub(was) as f64 / 1e9)
            })
            .collect()
    }
}

/// A running proxy.
pub struct Proxy {
    pub target: Target,
    /// Sluice, or Kamailio's main process.
    main: NsProcess,
    /// rtpengine beside Kamailio.
    relay: Option<NsProcess>,
    /// Kamailio's processes (its main one and the ones it forked).
    kamailio_pids: Vec<u32>,
    cdr_db: Option<PathBuf>,
    /// A CDR database outside the work directory (`--cdr-dir`), removed with the proxy.
    scratch_cdr_db: Option<PathBuf>,
    sluice_bin: Option<PathBuf>,
    /// How it is set up, for the report.
    pub setup: String,
    /// The kernel's run-time statistics of BPF programs, while this lives (Sluice's XDP path).
    bpf_stats: Option<std::os::fd::OwnedFd>,
}

impl Proxy {
    /// Starts `target` in the proxy namespace of `bed` for `workload`, once it listens.
    pub fn start(
        target: Target,
        bed: &Testbed,
        tools: &ToolArgs,
        workload: Workload,
        dir: &Path,
    ) -> Result<Self> {
        match target {
            Target::Sluice => start_sluice(bed, tools, workload, dir),
            Target::Kamailio => start_kamailio(bed, tools, workload, dir),
        }
    }

    /// Fails with the log of whichever process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        self.main.check_alive()?;
        if let Some(relay) = self.relay.as_mut() {
            relay.check_alive()?;
        }
        Ok(())
    }

    /// CPU time so far, by part.
    pub fn cpu(&self) -> CpuSample {
        let mut parts = BTreeMap::new();
        match self.target {
            Target::Sluice => {
                let pid = self.main.pid();
                for (name, ns) in thread_cpu_ns(pid) {
                    *parts.entry(format!("thread {name}")).or_insert(0) += ns;
                }
                let (bpf_ns, _) = procstat::bpf_prog_runtime(pid);
                if bpf_ns > 0 || self.bpf_stats.is_some() {
                    parts.insert("bpf programs".to_owned(), bpf_ns);
                }
            }
            Target::Kamailio => {
                let kamailio: u64 = self
                    .kamailio_pids
                    .iter()
                    .filter_map(|&p| procstat::process_cpu_ns(p))
                    .sum();
                parts.insert("kamailio".to_owned(), kamailio);
                if let Some(relay) = &self.relay {
                    parts.insert(
                        "rtpengine".to_owned(),
                        procstat::process_cpu_ns(relay.pid()).unwrap_or(0),
                    );
                }
            }
        }
        CpuSample { parts }
    }

    fn pids(&self) -> Vec<u32> {
        match self.target {
            Target::Sluice => vec![self.main.pid()],
            Target::Kamailio => self
                .kamailio_pids
                .iter()
                .copied()
                .chain(self.relay.as_ref().map(NsProcess::pid))
                .collect(),
        }
    }

    /// Resident memory summed over the processes (shared pages counted in each), bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.pids()
            .iter()
            .map(|&p| procstat::rss_bytes(p))
            .sum::<Option<u64>>()
    }

    /// Proportional set size summed over the processes (shared pages split between them), bytes.
    pub fn pss_bytes(&self) -> Option<u64> {
        self.pids()
            .iter()
            .map(|&p| pss_bytes(p))
            .sum::<Option<u64>>()
    }

    /// The CDRs in Sluice's database (`sluice cdrs --csv`); `None` for Kamailio, which writes none.
    pub fn cdr_count(&self) -> Result<Option<u64>> {
        let (Some(db), Some(bin)) = (&self.cdr_db, &self.sluice_bin) else {
            return Ok(None);
        };
        let out = Command::new(bin)
            .args(["cdrs", "--csv", "--limit", "0", "--db"])
            .arg(db)
            .output()
            .context("running sluice cdrs")?;
        if !out.status.success() {
            bail!(
                "sluice cdrs --db {}: {}",
                db.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let rows = text.lines().filter(|l| !l.trim().is_empty()).count();
        Ok(Some(rows.saturating_sub(1) as u64))
    }

    /// The end of the proxy's logs, for an error.
    pub fn log_tail(&self) -> String {
        let mut text = format!("{}:\n{}", self.main.what, self.main.log_tail(20));
        if let Some(relay) = &self.relay {
            let _ = write!(text, "\n{}:\n{}", relay.what, relay.log_tail(20));
        }
        text
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Kamailio first: it would otherwise retry a vanished rtpengine for each call it holds.
        self.main.stop();
        if let Some(relay) = self.relay.as_mut() {
            relay.stop();
        }
        if let Some(db) = &self.scratch_cdr_db {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
            }
        }
    }
}

fn s(v: &str) -> String {
    v.to_owned()
}

/// The caller's /24: trusted by Sluice for calls (Kamailio's script authenticates no INVITE).
fn caller_network(bed: &Testbed) -> String {
    let [a, b, c, _] = bed.caller_addr().octets();
    format!("{a}.{b}.{c}.0/24")
}

/// The account of pool member `i`: user and password (Kamailio derives the same password from
/// the user).
pub fn account(i: u32) -> (String, String) {
    let user = format!("u{i:05}");
    let password = format!("pw-{user}");
    (user, password)
}

fn sluice_config(workload: Workload) -> String {
    let mut config = format!("[relay]\nport_min = {PORT_MIN}\nport_max = {PORT_MAX}\n");
    if let Workload::Register { users } = workload {
        // SIPp 3.6 answers only the first challenge, and only MD5: Sluice offers SHA-256 first
        // unless told otherwise.
        let _ = write!(
            config,
            "\n[sip]\ndomains = [\"{DOMAIN}\"]\ndigest_algorithms = [\"MD5\"]\n"
        );
        for i in 0..users {
            let (user, password) = account(i);
            let _ = write!(
                config,
                "\n[[account]]\nuser = \"{user}\"\ndomain = \"{DOMAIN}\"\npassword = \"{password}\"\n"
            );
        }
    }
    config
}

fn start_sluice(bed: &Testbed, tools: &ToolArgs, workload: Workload, dir: &Path) -> Result<Proxy> {
    let binary = sluice_binary(tools)?;
    let config = dir.join("run.toml");
    std::fs::write(&config, sluice_config(workload))
        .with_context(|| format!("writing {}", config.display()))?;
    let cdr_db = match &tools.cdr_dir {
        Some(cdr_dir) => {
            std::fs::create_dir_all(cdr_dir)
                .with_context(|| format!("creating {}", cdr_dir.display()))?;
            let db = cdr_dir.join(format!("sluice-bench-cdr-{}.sqlite", std::process::id()));
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
            }
            db
        }
        None => dir.join("cdr.sqlite"),
    };
    let mut args = vec![
        s("run"),
        s("--config"),
        config.display().to_string(),
        s("--listen"),
        format!("{}:{SIP_PORT}", bed.relay_caller_addr()),
        s("--listen"),
        format!("{}:{SIP_PORT}", bed.relay_callee_addr()),
        s("--interface"),
        format!("caller/{}", bed.relay_caller_addr()),
        s("--interface"),
        format!("callee/{}", bed.relay_callee_addr()),
        s("--cdr-db"),
        cdr_db.display().to_string(),
        // Longer than any call here: a media timeout would be a failure of the benchmark.
        s("--media-timeout"),
        s("60"),
        s("--api"),
        s(API_ADDR),
        s("--backend"),
        tools.backend.clone(),
    ];
    if matches!(workload, Workload::Calls { .. }) {
        args.extend([s("--trust"), caller_network(bed)]);
    }
    let bpf_stats = match tools.backend.as_str() {
        "sockets" => None,
        _ => Some(
            aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .map_err(|e| anyhow!("BPF_ENABLE_STATS: {}", e.io_error))?,
        ),
    };
    let mut main = NsProcess::spawn(
        bed.relay(),
        "sluice-run",
        &binary,
        &args,
        dir,
        &[("RUST_LOG", "warn")],
    )?;
    for addr in [bed.relay_caller_addr(), bed.relay_callee_addr()] {
        wait_for_udp_listener(
            bed.relay(),
            &addr.to_string(),
            SIP_PORT,
            &mut main,
            Duration::from_secs(30),
        )?;
    }
    let setup = format!(
        "sluice run: SIP, relay ({} backend) and CDRs (SQLite in {}) in one process; calls from \
         the caller's network trusted, REGISTER with digest (MD5)",
        tools.backend,
        cdr_db.parent().unwrap_or(dir).display()
    );
    Ok(Proxy {
        target: Target::Sluice,
        main,
        relay: None,
        kamailio_pids: Vec::new(),
        scratch_cdr_db: (tools.cdr_dir.is_some() && !tools.keep).then(|| cdr_db.clone()),
        cdr_db: Some(cdr_db),
        sluice_bin: Some(binary),
        setup,
        bpf_stats,
    })
}

fn kamailio_config(bed: &Testbed, children: u32) -> String {
    KAMAILIO_CFG
        .replace("@PROXY_CALLER@", &bed.relay_caller_addr().to_string())
        .replace("@PROXY_CALLEE@", &bed.relay_callee_addr().to_string())
        .replace(
            "@CALLEE_URI@",
            &format!("sip:{}:{SIP_PORT}", bed.callee_addr()),
        )
        .replace("@NG@", NG_ADDR)
        .replace("@CHILDREN@", &children.to_string())
        .replace("@DOMAIN@", DOMAIN)
}

fn start_kamailio(
    bed: &Testbed,
    tools: &ToolArgs,
    _workload: Workload,
    dir: &Path,
) -> Result<Proxy> {
    let kamailio = find_binary(&tools.kamailio, "kamailio")?;
    let rtpengine = find_binary(&tools.rtpengine, "rtpengine-daemon")?;
    let caller_if = format!("caller/{}", bed.relay_caller_addr());
    let callee_if = format!("callee/{}", bed.relay_callee_addr());
    let relay_args: Vec<String> = vec![
        s("--config-file=none"),
        s("--foreground"),
        s("--log-stderr"),
        s("--log-level=4"),
        // No kernel forwarding: its module is not built here.
        s("--table=-1"),
        format!("--interface={caller_if}"),
        format!("--interface={callee_if}"),
        format!("--listen-ng={NG_ADDR}"),
        format!("--port-min={PORT_MIN}"),
        format!("--port-max={PORT_MAX}"),
        s("--timeout=60"),
        s("--delete-delay=0"),
    ];
    let mut relay = NsProcess::spawn(bed.relay(), "rtpengine", &rtpengine, &relay_args, dir, &[])?;
    let (ng_host, ng_port) = NG_ADDR.split_once(':').expect("host:port");
    wait_for_udp_listener(
        bed.relay(),
        ng_host,
        ng_port.parse()?,
        &mut relay,
        Duration::from_secs(20),
    )?;

    let cfg = dir.join("kamailio.cfg");
    std::fs::write(&cfg, kamailio_config(bed, tools.kamailio_children))
        .with_context(|| format!("writing {}", cfg.display()))?;
    let args = vec![
        s("-f"),
        cfg.display().to_string(),
        s("-P"),
        dir.join("kamailio.pid").display().to_string(),
        s("-w"),
        dir.display().to_string(),
        s("-DD"),
        s("-E"),
        s("-m"),
        KAMAILIO_SHM_MB.to_string(),
        s("-M"),
        KAMAILIO_PKG_MB.to_string(),
    ];
    let mut main = NsProcess::spawn(bed.relay(), "kamailio", &kamailio, &args, dir, &[])?;
    for addr in [bed.relay_caller_addr(), bed.relay_callee_addr()] {
        wait_for_udp_listener(
            bed.relay(),
            &addr.to_string(),
            SIP_PORT,
            &mut main,
            Duration::from_secs(30),
        )?;
    }
    // The listeners are bound before the workers are forked: give them a moment, then count
    // them.
    std::thread::sleep(Duration::from_millis(1000));
    main.check_alive()?;
    let mut kamailio_pids = vec![main.pid()];
    kamailio_pids.extend(children_of(main.pid()));
    Ok(Proxy {
        target: Target::Kamailio,
        setup: format!(
            "kamailio (children={children} per listening socket, two sockets: {workers} SIP \
             workers; {procs} processes in all) with its rtpengine module; rtpengine \
             (userspace forwarding, --table=-1) beside it; calls not authenticated, REGISTER \
             with digest (MD5, pv_auth_check), usrloc in memory; no accounting",
            children = tools.kamailio_children,
            workers = 2 * tools.kamailio_children,
            procs = kamailio_pids.len(),
        ),
        main,
        relay: Some(relay),
        kamailio_pids,
        cdr_db: None,
        scratch_cdr_db: None,
        sluice_bin: None,
        bpf_stats: None,
    })
}

/// The PIDs whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|t| stat_field(&t, 1)?.parse::<u32>().ok())
                == Some(parent)
        })
        .collect()
}

/// Field `i` after `(comm)` in a `/proc/.../stat` text (0 is the state, 1 the parent PID).
fn stat_field(text: &str, i: usize) -> Option<&str> {
    text[text.rfind(')')? + 1..].split_whitespace().nth(i)
}

/// CPU time of each thread of `pid`, by thread name, ns.
fn thread_cpu_ns(pid: u32) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|&h| h > 0)
        .unwrap_or(100);
    entries
        .flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let name = text[text.find('(')? + 1..text.rfind(')')?].to_owned();
            let utime: u64 = stat_field(&text, 11)?.parse().ok()?;
            let stime: u64 = stat_field(&text, 12)?.parse().ok()?;
            Some((name, (utime + stime) * 1_000_000_000 / hz))
        })
        .collect()
}

/// `Pss:` of `/proc/<pid>/smaps_rollup`, bytes.
fn pss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(!thread_cpu_ns(pid).is_empty());
        assert!(pss_bytes(pid).is_some_and(|b| b > 0));
        assert_eq!(
            stat_field("1 (a b) S 7 1 1", 1).and_then(|p| p.parse().ok()),
            Some(7)
        );
    }

    #[test]
    fn register_config_has_an_md5_account_per_user() {
        let config = sluice_config(Workload::Register { users: 3 });
        assert!(config.contains("digest_algorithms = [\"MD5\"]"), "{config}");
        assert_eq!(config.matches("[[account]]").count(), 3, "{config}");
        assert!(config.contains("password = \"pw-u00002\""), "{config}");
        let calls = sluice_config(Workload::Calls {
            media: true,
            hold_ms: 1000,
        });
        assert!(!calls.contains("[[account]]"), "{calls}");
    }
}
