//! `sluice run`: the whole appliance. The SIP proxy (`sluice_sip::proxy::ProxyCore`) on the SIP
//! transports, its media anchored on the relay through the session manager
//! ([`crate::media_bridge`]), the management API, and a CDR for every call in the CDR database.
//!
//! ```text
//! sluice run --listen 127.0.0.1:5070 --trust 127.0.0.0/8
//! ```
//!
//! is a transit proxy on loopback: requests from trusted peers go to their Request-URI, and
//! every SDP they carry is anchored on the relay (relay interface = the listen address).
//!
//! # Configuration
//!
//! A TOML file (`--config`), with `sluice relay`'s `[relay]`, `[timeouts]` and `[api]` sections
//! and:
//!
//! ```toml
//! [sip]
//! listen = ["192.0.2.1:5060"]        # UDP and TCP on each
//! domains = ["example.com"]          # registrar and local users
//! trusted = ["198.51.100.0/24"]      # peers that need no authentication and may transit
//!
//! [[account]]
//! user = "alice"
//! domain = "example.com"
//! password = "secret"
//! aliases = ["+15551230001"]
//!
//! [[pstn]]
//! prefix = "1"                       # longest prefix wins; "" matches every number
//! gateways = ["203.0.113.10:5060", "tcp:203.0.113.11:5060"]
//!
//! [cdr]
//! db = "/var/lib/sluice/cdr.sqlite"  # also holds the registrations (crate::location_db)
//! node = "sbc-1"                     # NodeName in the CDRs; the host name by default
//! durability = "process"            # or "power": see crate::cdr::Durability
//! sync_interval_ms = 1000            # "process": how often the database is synced to disk
//!
//! [radius]                           # RADIUS accounting of every call: see crate::radius
//! servers = ["127.0.0.1:1813"]
//! secret_file = "/etc/sluice/radius.secret"
//! ```
//!
//! Options override the file: `--listen` and `--trust` (repeatable) replace `sip.listen` and
//! `sip.trusted`, `--interface` the relay interfaces, `--media-timeout` `timeouts.media`,
//! `--api` `api.listen`, `--backend` `relay.backend`, `--cdr-db` `cdr.db`, `--radius`
//! `radius.servers` (the secret: `--radius-secret-file` or `$SLUICE_RADIUS_SECRET`). With neither file nor
//! options it listens on 127.0.0.1:5060. Without relay interfaces, each IPv4 listen address is
//! one (`default`, then `sip1`, `sip2`, ...). Each SIP interface reaches the subnet of the host
//! interface that holds its address; the relay interface facing each side of a call is chosen
//! the same way. `sluice run` has no ng control socket: `relay.listen_ng` and `relay.b2b_url`
//! are ignored.
//!
//! Without `cdr.db` the CDRs go to [`DEFAULT_CDR_DB`], or to `./sluice-cdr.sqlite` if that
//! cannot be opened (not root, say).
//!
//! # Accounting
//!
//! On start, calls the last run left active are closed with cause `restart`
//! ([`CdrStore::recover`]). A call is journalled when answered ([`CdrStore::begin`]); its
//! counters are stored every [`COUNTER_INTERVAL`]; when it ends, its CDR is written with the
//! relay's final counters (input = from the caller, output = from the callee) and the proxy's
//! cause (`bye:caller`, `failed:486`, `cancel`, ...). Every [`POLL_INTERVAL`] the session
//! manager's timeouts are checked: a call without media for the media timeout (or past its
//! maximum duration) is ended by the proxy with a BYE to both sides and gets the CDR cause
//! `media-timeout` (`max-duration`).

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use sluice_dataplane::{monotonic_now, BackendChoice};
use sluice_sip::auth::Secret;
use sluice_sip::proxy::{
    Account, Cidr, EndCause, EndReason, Gateway, Interface, ProxyConfig, ProxyCore, ProxyEvent,
    PstnRoute,
};

use crate::api::ApiConfig;
use crate::cdr::{
    CallInfo, Cdr, CdrStore, DirectionCounters, Durability, MediaCounters, Party, SqliteCdrStore,
    TerminationCause as CdrCause, WalSyncer, DEFAULT_CDR_DB, DEFAULT_SYNC_INTERVAL,
};
use crate::location_db::SqliteLocationStore;
use crate::media_bridge::{BridgeCall, BridgeInterface, MediaBridge};
use crate::radius::{self, Radius, RadiusArgs, RadiusSection, RadiusSettings};
use crate::relay::{self, RelayArgs, RelayFile, RelaySection, RelaySettings, TimeoutSection};
use crate::session::manager::Ended;
use crate::session::model::TerminationCause as SessionCause;
use crate::session::SessionManager;
use crate::transport::{OutgoingMessage, SipCore, SipTransports, TransportConfig};

/// Where `sluice run` listens without `--listen` or `sip.listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5060";
/// The CDR database when [`DEFAULT_CDR_DB`] cannot be opened.
pub const FALLBACK_CDR_DB: &str = "sluice-cdr.sqlite";
/// How often the session manager's timeouts are checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often active calls' counters are stored for restart recovery.
pub const COUNTER_INTERVAL: Duration = Duration::from_secs(10);

/// Options of `sluice run`.
#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where SIP listens, UDP and TCP (repeatable; default 127.0.0.1:5060).
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// A trusted peer network: no authentication, may transit (repeatable).
    #[arg(long = "trust", value_name = "CIDR")]
    trust: Vec<String>,
    /// The CDR database.
    #[arg(long, value_name = "PATH")]
    cdr_db: Option<PathBuf>,
    /// Seconds without media before a call is ended (BYE to both sides).
    #[arg(long, value_name = "SECONDS")]
    media_timeout: Option<u64>,
    /// Where the management API listens.
    #[arg(long, value_name = "ADDR:PORT")]
    api: Option<SocketAddr>,
    /// A relay interface, `NAME/ADDRESS[!ADVERTISED]` or `ADDRESS` (repeatable).
    #[arg(long = "interface", short = 'i', value_name = "NAME/ADDR")]
    interfaces: Vec<String>,
    /// Forwarding path: auto, xdp, afxdp or sockets.
    #[arg(long)]
    backend: Option<BackendChoice>,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    radius: RadiusArgs,
}

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFile {
    #[serde(default)]
    pub sip: SipSection,
    #[serde(default)]
    pub account: Vec<AccountSection>,
    #[serde(default)]
    pub pstn: Vec<PstnSection>,
    #[serde(default)]
    pub relay: RelaySection,
    #[serde(default)]
    pub timeouts: TimeoutSection,
    pub api: Option<ApiConfig>,
    #[serde(default)]
    pub cdr: CdrSection,
    pub radius: Option<RadiusSection>,
}

/// `[sip]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipSection {
    pub listen: Vec<SocketAddr>,
    pub domains: Vec<String>,
    pub trusted: Vec<String>,
    /// Digest algorithms offered in challenges, in order of preference (`SHA-256`, `MD5`, ...).
    pub digest_algorithms: Vec<String>,
}

/// `[[account]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSection {
    pub user: String,
    pub domain: String,
    pub password: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// `[[pstn]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PstnSection {
    #[serde(default)]
    pub prefix: String,
    pub gateways: Vec<String>,
}

/// `[cdr]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdrSection {
    pub db: Option<PathBuf>,
    pub node: Option<String>,
    pub durability: Durability,
    /// Milliseconds between syncs of the database to disk.
    pub sync_interval_ms: Option<u64>,
}

/// What `sluice run` runs with.
#[derive(Debug)]
pub struct RunSettings {
    pub listen: Vec<SocketAddr>,
    /// Without interfaces yet: they are made from the bound addresses.
    pub proxy: ProxyConfig,
    pub relay: RelaySettings,
    /// `None`: the default with its fallback.
    pub cdr_db: Option<PathBuf>,
    pub node: String,
    pub durability: Durability,
    /// How often the CDR database (with the registrations and the RADIUS outbox) is synced.
    pub sync_interval: Duration,
    /// `None`: no RADIUS accounting.
    pub radius: Option<RadiusSettings>,
}

fn parse_gateway(spec: &str) -> Result<Gateway> {
    let (transport, addr) = match spec.split_once(':') {
        Some(("udp", rest)) => (rsip::Transport::Udp, rest),
        Some(("tcp", rest)) => (rsip::Transport::Tcp, rest),
        _ => (rsip::Transport::Udp, spec),
    };
    let addr: SocketAddr = addr.parse().with_context(|| {
        format!("pstn.gateways: `{spec}` is not `[udp:|tcp:]ADDRESS:PORT` (no DNS names)")
    })?;
    Ok(Gateway { addr, transport })
}

/// The host's name, for the CDRs' NodeName.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "sluice".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The subnet of the host interface that holds `ip` (`127.0.0.0/8` for 127.0.0.1), if any.
pub fn local_subnet(ip: Ipv4Addr) -> Option<Cidr> {
    let mut found = None;
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we walk read-only and free with freeifaddrs; every
    // pointer is checked for null and sockaddrs are read as sockaddr_in only for AF_INET.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut cur = list;
        while !cur.is_null() {
            let entry = &*cur;
            cur = entry.ifa_next;
            if entry.ifa_addr.is_null() || entry.ifa_netmask.is_null() {
                continue;
            }
            if i32::from((*entry.ifa_addr).sa_family) != libc::AF_INET {
                continue;
            }
            let addr = &*(entry.ifa_addr as *const libc::sockaddr_in);
            let mask = &*(entry.ifa_netmask as *const libc::sockaddr_in);
            if Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)) != ip {
                continue;
            }
            let mask = u32::from_be(mask.sin_addr.s_addr);
            found = Some(Cidr {
                addr: IpAddr::V4(ip),
                prefix: mask.count_ones() as u8,
            });
            break;
        }
        libc::freeifaddrs(list);
    }
    found
}

/// Merges the file and the options, and checks the result.
pub fn settings(args: &RunArgs) -> Result<RunSettings> {
    let file: RunFile = match &args.config {
        Some(path) => relay::read_toml(path)?,
        None => RunFile::default(),
    };
    let listen = if !args.listen.is_empty() {
        args.listen.clone()
    } else if !file.sip.listen.is_empty() {
        file.sip.listen.clone()
    } else {
        vec![DEFAULT_LISTEN
            .parse()
            .expect("DEFAULT_LISTEN is an address")]
    };
    for l in &listen {
        if l.ip().is_unspecified() {
            bail!("sip.listen: {l} cannot be advertised in Via and Record-Route; give the address");
        }
    }
    let trusted_specs = if args.trust.is_empty() {
        &file.sip.trusted
    } else {
        &args.trust
    };
    let trusted = trusted_specs
        .iter()
        .map(|c| Cidr::parse(c).map_err(|e| anyhow::anyhow!("sip.trusted: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let mut accounts = Vec::new();
    for a in &file.account {
        if !file
            .sip
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&a.domain))
        {
            bail!(
                "account.domain: `{}` (account `{}`) is not one of sip.domains",
                a.domain,
                a.user
            );
        }
        if a.user.is_empty() || a.password.is_empty() {
            bail!("account.user/password: an account needs both");
        }
        accounts.push(Account {
            user: a.user.clone(),
            domain: a.domain.clone(),
            secret: Secret::Password(a.password.clone()),
            aliases: a.aliases.clone(),
        });
    }
    let mut pstn = Vec::new();
    for p in &file.pstn {
        if !p.prefix.bytes().all(|b| b.is_ascii_digit()) {
            bail!("pstn.prefix: `{}` is not digits", p.prefix);
        }
        if p.gateways.is_empty() {
            bail!("pstn.gateways: the route `{}` has no gateway", p.prefix);
        }
        pstn.push(PstnRoute {
            prefix: p.prefix.clone(),
            gateways: p
                .gateways
                .iter()
                .map(|g| parse_gateway(g))
                .collect::<Result<_>>()?,
        });
    }
    // The proxy's interfaces come from the bound sockets; a placeholder until then.
    let mut proxy = ProxyConfig::new(Interface::new(listen[0]));
    proxy.interfaces.clear();
    proxy.domains = file.sip.domains.clone();
    proxy.accounts = accounts;
    proxy.trusted = trusted;
    proxy.pstn = pstn;
    proxy.digest_algorithms = file
        .sip
        .digest_algorithms
        .iter()
        .map(|name| {
            sluice_sip::auth::Algorithm::from_name(name).ok_or_else(|| {
                anyhow::anyhow!(
                    "sip.digest_algorithms: `{name}` is not a digest algorithm (MD5, SHA-256, ...)"
                )
            })
        })
        .collect::<Result<_>>()?;

    let mut relay_args = RelayArgs {
        interfaces: args.interfaces.clone(),
        timeout: args.media_timeout,
        backend: args.backend,
        api_listen: args.api,
        ..RelayArgs::default()
    };
    if relay_args.interfaces.is_empty() && file.relay.interface.is_empty() {
        let mut n = 0;
        for l in &listen {
            if let IpAddr::V4(ip) = l.ip() {
                let name = if n == 0 {
                    "default".to_owned()
                } else {
                    format!("sip{n}")
                };
                if !relay_args
                    .interfaces
                    .iter()
                    .any(|i| i.ends_with(&format!("/{ip}")))
                {
                    relay_args.interfaces.push(format!("{name}/{ip}"));
                    n += 1;
                }
            }
        }
    }
    let radius = radius::settings(
        file.radius.as_ref(),
        &args.radius,
        std::env::var_os(radius::SECRET_ENV),
    )?;
    let relay = relay::merge(
        RelayFile {
            relay: file.relay,
            timeouts: file.timeouts,
            api: file.api,
        },
        &relay_args,
    )?;
    let sync_interval = match file.cdr.sync_interval_ms {
        None => DEFAULT_SYNC_INTERVAL,
        Some(0) => bail!("cdr.sync_interval_ms: must be at least 1"),
        Some(ms) => Duration::from_millis(ms),
    };
    Ok(RunSettings {
        listen,
        proxy,
        relay,
        cdr_db: args.cdr_db.clone().or(file.cdr.db),
        node: file.cdr.node.unwrap_or_else(host_name),
        durability: file.cdr.durability,
        sync_interval,
        radius,
    })
}

/// Opens the CDR database: the one configured, else the default, else `./sluice-cdr.sqlite`.
fn open_cdrs(
    configured: Option<&Path>,
    durability: Durability,
) -> Result<(SqliteCdrStore, PathBuf)> {
    if let Some(path) = configured {
        let store = SqliteCdrStore::open_with(path, durability)
            .with_context(|| format!("cdr.db: opening {}", path.display()))?;
        return Ok((store, path.to_owned()));
    }
    match SqliteCdrStore::open_with(DEFAULT_CDR_DB, durability) {
        Ok(store) => Ok((store, DEFAULT_CDR_DB.into())),
        Err(e) => {
            tracing::warn!(error = %e, fallback = FALLBACK_CDR_DB, "the default CDR database cannot be opened");
            let store = SqliteCdrStore::open_with(FALLBACK_CDR_DB, durability)
                .with_context(|| format!("cdr.db: opening {FALLBACK_CDR_DB}"))?;
            Ok((store, FALLBACK_CDR_DB.into()))
        }
    }
}

fn seed() -> Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("reading /dev/urandom for the proxy's secret")?;
    Ok(seed)
}

/// Runs the appliance until SIGINT or SIGTERM.
pub fn run(args: &RunArgs) -> Result<()> {
    let settings = settings(args)?;
    if args.check {
        println!("configuration ok: {settings:#?}");
        return Ok(());
    }
    let (mut cdrs, cdr_path) = open_cdrs(settings.cdr_db.as_deref(), settings.durability)?;
    // The SIP thread's commits do not wait on the disk (with "process"); this bounds what a
    // power cut can lose of them, the registrations' and the RADIUS outbox's. Dropped (a last
    // sync) when `run` returns.
    let _wal_syncer = WalSyncer::start(&cdr_path, settings.sync_interval)
        .with_context(|| format!("syncing {}", cdr_path.display()))?;
    // Before the recovery, so that the calls it closes are accounted too.
    let radius = match &settings.radius {
        Some(r) => {
            let started = Radius::start(r, &cdr_path, &settings.node)
                .context("starting RADIUS accounting")?;
            tracing::info!(servers = ?r.servers, "RADIUS accounting on");
            Some(started)
        }
        None => {
            radius::disable(&cdr_path);
            None
        }
    };
    let recovered = cdrs
        .recover(SystemTime::now())
        .context("closing the calls the last run left active")?;
    tracing::info!(
        closed = recovered.len(),
        db = %cdr_path.display(),
        "CDR store open; calls left active by the last run closed with cause restart"
    );

    let media = relay::start_media(&settings.relay)?;
    let mut transports = SipTransports::bind(&settings.listen, TransportConfig::default())
        .context("binding the SIP sockets")?;
    let mut proxy = settings.proxy.clone();
    for &bound in transports.local_addrs() {
        let mut interface = Interface::new(bound);
        if let IpAddr::V4(ip) = bound.ip() {
            interface.networks.extend(local_subnet(ip));
        }
        proxy.interfaces.push(interface);
    }
    let bridge_interfaces = settings
        .relay
        .interfaces
        .iter()
        .map(|i| BridgeInterface {
            name: i.name.clone(),
            networks: local_subnet(i.addr).into_iter().collect(),
        })
        .collect();
    let bridge = MediaBridge::new(media.manager.clone(), monotonic_now, bridge_interfaces);
    // Registrations live next to the CDRs, so that a restart keeps them.
    let locations = SqliteLocationStore::open(&cdr_path, monotonic_now(), SystemTime::now())
        .with_context(|| format!("opening the registrations in {}", cdr_path.display()))?;
    tracing::info!(
        bindings = locations.count().unwrap_or(0),
        "registrations restored"
    );
    let core = ProxyCore::with_store(proxy, bridge, locations, &seed()?)
        .context("starting the SIP proxy")?;
    let mut appliance = Appliance::new(core, media.manager.clone(), cdrs, settings.node.clone());
    if let Some(radius) = &radius {
        radius.kick();
    }
    appliance.radius = radius;

    let stop = relay::stop_on_signals()?;
    println!(
        "sluice run: SIP on {}, relay {} on {}, API on {}, CDRs in {}",
        transports
            .local_addrs()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" "),
        settings
            .relay
            .interfaces
            .iter()
            .map(|i| format!("{}/{}", i.name, i.addr))
            .collect::<Vec<_>>()
            .join(" "),
        settings.relay.backend_name(),
        media.api.local_addr(),
        cdr_path.display()
    );
    transports
        .run(&mut appliance, &stop, monotonic_now)
        .context("the SIP transports")?;
    tracing::info!(
        active = appliance.calls.len(),
        "stopping; active calls are closed with cause restart on the next start"
    );
    Ok(())
}

/// What the accounting knows of a call the proxy started.
#[derive(Debug)]
struct CallRecord {
    caller: String,
    callee: String,
    source: SocketAddr,
    answered: Option<SystemTime>,
    billing_party: Option<String>,
    caller_agent: Option<String>,
    callee_agent: Option<String>,
}

/// `SipUserAgents`: `caller + callee`, `- + callee` when the caller sent none, the caller's alone
/// when the callee's is unknown (never answered, or no `User-Agent` / `Server`).
fn user_agents(caller: Option<&str>, callee: Option<&str>) -> Option<String> {
    match (caller, callee) {
        (None, None) => None,
        (Some(a), None) => Some(a.to_owned()),
        (a, Some(b)) => Some(format!("{} + {b}", a.unwrap_or("-"))),
    }
}

/// The proxy as the transports drive it, with the accounting and the media timeouts around it.
struct Appliance {
    core: ProxyCore<MediaBridge, SqliteLocationStore>,
    manager: Arc<Mutex<SessionManager>>,
    cdrs: SqliteCdrStore,
    node: String,
    calls: HashMap<String, CallRecord>,
    next_poll: Duration,
    next_update: Duration,
    /// RADIUS accounting, if configured: woken when the CDR store may have queued a record.
    radius: Option<Radius>,
}

/// The Request-URI host of a request, if it is an IP address: where a transit request goes.
fn request_target(bytes: &[u8]) -> Option<IpAddr> {
    let line = bytes.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    let _method = parts.next()?;
    let uri = parts.next()?;
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host = host.split([';', '?', '>']).next()?;
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split(']').next()?.parse().ok();
    }
    host.split(':').next()?.parse().ok()
}

fn counters(call: &BridgeCall, ended: &crate::session::CallReport) -> MediaCounters {
    let side = |i: usize| DirectionCounters {
        packets: ended.rtp[i].packets + ended.rtcp[i].packets,
        bytes: ended.rtp[i].bytes + ended.rtcp[i].bytes,
    };
    let (caller, callee) = if call.caller_is_a { (0, 1) } else { (1, 0) };
    MediaCounters {
        from_caller: side(caller),
        from_callee: side(callee),
    }
}

fn cdr_cause(cause: EndCause) -> CdrCause {
    match cause {
        EndCause::ByeCaller => CdrCause::Bye { by: Party::Caller },
        EndCause::ByeCallee => CdrCause::Bye { by: Party::Callee },
        EndCause::Cancel => CdrCause::Cancel,
        EndCause::Failed(code) => CdrCause::Failed(code),
        EndCause::Ended(EndReason::MediaTimeout) => CdrCause::MediaTimeout,
        EndCause::Ended(EndReason::MaxDuration) => CdrCause::MaxDuration,
        // `sluice run` does not end calls for operators yet; the nearest cause.
        EndCause::Ended(EndReason::Operator) => CdrCause::SignallingLost,
    }
}

impl Appliance {
    fn new(
        core: ProxyCore<MediaBridge, SqliteLocationStore>,
        manager: Arc<Mutex<SessionManager>>,
        cdrs: SqliteCdrStore,
        node: String,
    ) -> Self {
        let now = monotonic_now();
        Self {
            core,
            manager,
            cdrs,
            node,
            calls: HashMap::new(),
            next_poll: now + POLL_INTERVAL,
            next_update: now + COUNTER_INTERVAL,
            radius: None,
        }
    }

    fn call_info(&self, call_id: &str, record: &CallRecord, bridge: &BridgeCall) -> CallInfo {
        CallInfo {
            call_id: call_id.to_owned(),
            from_uri: record.caller.clone(),
            to_uri: record.callee.clone(),
            from_tag: bridge.from_tag.clone(),
            to_tag: bridge.to_tag.clone(),
            source_ip: record.source.ip(),
            billing_party: record.billing_party.clone(),
            user_agents: user_agents(
                record.caller_agent.as_deref(),
                record.callee_agent.as_deref(),
            ),
            canonical_uri: record.callee.clone(),
            sip_method: "INVITE".into(),
            gateway: None,
            carrier: None,
            node: self.node.clone(),
        }
    }

    /// Wakes the RADIUS sender, if any (never blocks).
    fn kick_radius(&self) {
        if let Some(radius) = &self.radius {
            radius.kick();
        }
    }

    /// Acts on the proxy's events: CDRs and logs.
    fn after(&mut self) {
        while let Some(event) = self.core.poll_event() {
            match event {
                ProxyEvent::CallStarted {
                    call_id,
                    caller,
                    callee,
                    source,
                    billing_party,
                    user_agent,
                    ..
                } => {
                    tracing::info!(%call_id, %caller, %callee, %source, ?billing_party, "call started");
                    self.calls.insert(
                        call_id,
                        CallRecord {
                            caller,
                            callee,
                            source,
                            answered: None,
                            billing_party,
                            caller_agent: user_agent,
                            callee_agent: None,
                        },
                    );
                }
                ProxyEvent::CallAnswered {
                    call_id,
                    user_agent,
                    ..
                } => {
                    tracing::info!(%call_id, "call answered");
                    let at = SystemTime::now();
                    let bridge = self.core.relay().call(&call_id).cloned();
                    if let Some(record) = self.calls.get_mut(&call_id) {
                        record.answered = Some(at);
                        record.callee_agent = user_agent;
                    }
                    if let Some(record) = self.calls.get(&call_id) {
                        let info = self.call_info(&call_id, record, &bridge.unwrap_or_default());
                        match self.cdrs.begin(&info, at) {
                            Ok(()) => self.kick_radius(),
                            Err(e) => {
                                tracing::error!(%call_id, error = %e, "journalling an answered call")
                            }
                        }
                    }
                }
                ProxyEvent::CallEnded { call_id, cause } => self.finish(&call_id, cause),
                ProxyEvent::Registered {
                    aor,
                    source,
                    contacts,
                } => tracing::info!(%aor, %source, contacts, "registered"),
                ProxyEvent::Dropped { source, reason } => {
                    tracing::debug!(%source, %reason, "SIP message dropped")
                }
                ProxyEvent::Error { call_id, error } => {
                    tracing::warn!(call_id = ?call_id, %error, "SIP proxy")
                }
                other => tracing::debug!(event = ?other, "SIP proxy event"),
            }
        }
    }

    /// Writes the CDR of an ended call.
    fn finish(&mut self, call_id: &str, cause: EndCause) {
        let bridge = self.core.relay_mut();
        let (bridge_call, ended) = match bridge.take_ended(call_id) {
            Some((c, e)) => (c, Some(e)),
            None => {
                let c = bridge.call(call_id).cloned().unwrap_or_default();
                bridge.forget(call_id);
                (c, None)
            }
        };
        let Some(record) = self.calls.remove(call_id) else {
            tracing::info!(%call_id, %cause, "call refused before it started");
            return;
        };
        let counters = ended
            .as_ref()
            .map(|e| counters(&bridge_call, &e.report))
            .unwrap_or_default();
        let code = match cause {
            EndCause::Failed(code) => code,
            EndCause::Cancel => 487,
            _ => 200,
        };
        let cdr = Cdr {
            call: self.call_info(call_id, &record, &bridge_call),
            sip_response_code: code,
            start: record.answered,
            stop: SystemTime::now(),
            cause: cdr_cause(cause),
            counters,
        };
        tracing::info!(
            %call_id,
            %cause,
            from_caller_bytes = counters.from_caller.bytes,
            from_callee_bytes = counters.from_callee.bytes,
            "call ended"
        );
        match self.cdrs.finish(&cdr) {
            Ok(_) => self.kick_radius(),
            Err(e) => tracing::error!(%call_id, error = %e, "writing a CDR"),
        }
    }

    /// The session manager's timeouts, and the counters of active calls for the journal.
    fn housekeeping(&mut self, now: Duration) {
        self.next_poll = now + POLL_INTERVAL;
        let ended: Vec<Ended> = self
            .manager
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .poll(now);
        for e in ended {
            let call_id = e.report.call_id.clone();
            let reason = match e.cause {
                SessionCause::MediaTimeout => EndReason::MediaTimeout,
                SessionCause::MaxDuration => EndReason::MaxDuration,
                ref other => {
                    tracing::warn!(%call_id, cause = other.name(), "the relay dropped a call's media");
                    continue;
                }
            };
            self.core.relay_mut().keep_ended(e);
            match self.core.end_call(now, &call_id, reason) {
                Ok(()) => tracing::info!(%call_id, cause = reason.cause(), "ending the call"),
                Err(err) => {
                    tracing::warn!(%call_id, cause = reason.cause(), error = %err, "ending the call")
                }
            }
            self.after();
        }
        if now >= self.next_update {
            self.next_update = now + COUNTER_INTERVAL;
            self.store_counters(now);
            if let Err(e) = self.core.registrar_mut().purge_expired(now) {
                tracing::warn!(error = %e, "purging expired registrations");
            }
        }
    }

    fn store_counters(&mut self, now: Duration) {
        let mut updates = Vec::new();
        {
            let manager = self.manager.lock().unwrap_or_else(PoisonError::into_inner);
            for (call_id, record) in &self.calls {
                if record.answered.is_none() {
                    continue;
                }
                let Some(bridge) = self.core.relay().call(call_id) else {
                    continue;
                };
                if let Ok(report) = manager.report(now, call_id) {
                    updates.push((
                        call_id.as_str(),
                        bridge.from_tag.as_str(),
                        counters(bridge, &report),
                    ));
                }
            }
        }
        let keys: Vec<_> = updates
            .iter()
            .map(|(call_id, from_tag, c)| (crate::cdr::CallKey { call_id, from_tag }, *c))
            .collect();
        match self.cdrs.update_counters(SystemTime::now(), &keys) {
            // An Interim-Update may have been queued.
            Ok(n) if n > 0 => self.kick_radius(),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "storing the counters of active calls"),
        }
    }
}

impl SipCore for Appliance {
    fn handle_message(
        &mut self,
        now: Duration,
        local: SocketAddr,
        source: SocketAddr,
        transport: rsip::Transport,
        bytes: &[u8],
    ) {
        let target = if bytes.starts_with(b"SIP/") {
            None
        } else {
            request_target(bytes)
        };
        self.core.relay_mut().set_target(target);
        self.core
            .handle_datagram(now, local, source, transport, bytes);
        self.core.relay_mut().set_target(None);
        self.after();
    }

    fn handle_timeout(&mut self, now: Duration) {
        if self.core.poll_timeout().is_some_and(|at| at <= now) {
            self.core.handle_timeout(now);
            self.after();
        }
        if now >= self.next_poll {
            self.housekeeping(now);
        }
    }

    fn poll_transmit(&mut self) -> Option<OutgoingMessage> {
        self.core.poll_transmit().map(|t| OutgoingMessage {
            destination: t.destination,
            transport: t.transport,
            local: Some(t.local),
            contents: t.contents,
        })
    }

    fn poll_timeout(&self) -> Option<Duration> {
        Some(match self.core.poll_timeout() {
            Some(at) => at.min(self.next_poll),
            None => self.next_poll,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> Result<RunSettings> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("run.toml");
        std::fs::write(&path, text)?;
        settings(&RunArgs {
            config: Some(path),
            ..RunArgs::default()
        })
    }

    #[test]
    fn defaults_work_on_one_machine() {
        let s = settings(&RunArgs::default()).expect("defaults");
        assert_eq!(s.listen, vec![DEFAULT_LISTEN.parse().unwrap()]);
        assert_eq!(s.relay.interfaces.len(), 1);
        assert_eq!(s.relay.interfaces[0].addr, Ipv4Addr::LOCALHOST);
        assert!(s.cdr_db.is_none());
        assert_eq!(s.durability, Durability::Process);
        assert_eq!(s.sync_interval, DEFAULT_SYNC_INTERVAL);
    }

    #[test]
    fn the_issue_example() {
        let s = settings(&RunArgs {
            listen: vec!["127.0.0.1:5070".parse().unwrap()],
            trust: vec!["127.0.0.0/8".into()],
            ..RunArgs::default()
        })
        .expect("valid");
        assert!(s.proxy.is_trusted("127.0.0.2".parse().unwrap()));
        assert_eq!(s.relay.interfaces[0].name, "default");
    }

    #[test]
    fn a_good_file_gives_settings() {
        let s = from_toml(
            r#"
            [sip]
            listen = ["127.0.0.1:5080"]
            domains = ["example.com"]
            trusted = ["10.0.0.0/8"]
            [[account]]
            user = "alice"
            domain = "example.com"
            password = "pw"
            [[pstn]]
            prefix = "1"
            gateways = ["192.0.2.10:5060", "tcp:192.0.2.11:5060"]
            [timeouts]
            media = 20
            [cdr]
            db = "/tmp/x.sqlite"
            node = "n1"
            durability = "power"
            sync_interval_ms = 250
            "#,
        )
        .expect("valid");
        assert_eq!(s.durability, Durability::Power);
        assert_eq!(s.sync_interval, Duration::from_millis(250));
        assert_eq!(s.proxy.accounts[0].user, "alice");
        assert_eq!(s.proxy.pstn[0].gateways[1].transport, rsip::Transport::Tcp);
        assert_eq!(s.relay.timeouts.media, Duration::from_secs(20));
        assert_eq!(s.node, "n1");
    }

    #[test]
    fn bad_files_name_the_field() {
        let err = |text: &str| format!("{:#}", from_toml(text).expect_err("invalid"));
        let e = err("[sip]\nlisten = [\"nonsense\"]\n");
        assert!(e.contains("listen"), "{e}");
        let e = err("[sip]\ntrusted = [\"10.0.0.0/40\"]\n");
        assert!(e.contains("sip.trusted"), "{e}");
        let e = err("[[account]]\nuser = \"a\"\ndomain = \"x.org\"\npassword = \"p\"\n");
        assert!(e.contains("account.domain"), "{e}");
        let e = err("[[pstn]]\nprefix = \"1\"\ngateways = [\"gw.example.com\"]\n");
        assert!(e.contains("pstn.gateways"), "{e}");
        let e = err("[cdr]\nbogus = 1\n");
        assert!(e.contains("bogus"), "{e}");
        let e = err("[cdr]\ndurability = \"disk\"\n");
        assert!(e.contains("durability"), "{e}");
        let e = err("[cdr]\nsync_interval_ms = 0\n");
        assert!(e.contains("cdr.sync_interval_ms"), "{e}");
        let e = err("[sip]\nlisten = [\"0.0.0.0:5060\"]\n");
        assert!(e.contains("sip.listen"), "{e}");
    }

    #[test]
    fn a_radius_section_is_read_and_checked() {
        let s =
            from_toml("[radius]\nservers = [\"127.0.0.1:1813\"]\nsecret = \"x\"\n").expect("valid");
        let radius = s.radius.expect("RADIUS on");
        assert_eq!(radius.servers, ["127.0.0.1:1813".parse().unwrap()]);
        assert!(from_toml("").expect("valid").radius.is_none());
        let e = format!("{:#}", from_toml("[radius]\nsecret = \"x\"\n").unwrap_err());
        assert!(e.contains("radius.servers"), "{e}");
        let e = format!("{:#}", from_toml("[radius]\nbogus = 1\n").unwrap_err());
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn request_targets() {
        let t = |s: &str| request_target(s.as_bytes());
        assert_eq!(
            t("INVITE sip:service@10.77.2.2:5060 SIP/2.0\r\n"),
            Some("10.77.2.2".parse().unwrap())
        );
        assert_eq!(
            t("INVITE sip:10.0.0.1;transport=tcp SIP/2.0\r\n"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(t("INVITE sip:bob@example.com SIP/2.0\r\n"), None);
        assert_eq!(
            t("INVITE sip:[::1]:5060 SIP/2.0\r\n"),
            Some("::1".parse().unwrap())
        );
    }

    #[test]
    fn user_agents_name_both_sides_in_order() {
        assert_eq!(user_agents(None, None), None);
        assert_eq!(user_agents(Some("a/1"), None).as_deref(), Some("a/1"));
        assert_eq!(
            user_agents(Some("a/1"), Some("b/2")).as_deref(),
            Some("a/1 + b/2")
        );
        assert_eq!(user_agents(None, Some("b/2")).as_deref(), Some("- + b/2"));
    }

    #[test]
    fn loopback_has_a_subnet() {
        let c = local_subnet(Ipv4Addr::LOCALHOST).expect("lo");
        assert!(c.contains("127.0.0.2".parse().unwrap()));
    }
}
