//! `sluice relay`: the media relay on its own, driven over the rtpengine ng protocol.
//!
//! It reads a TOML file (`--config`), and also takes rtpengine's main options with their meaning,
//! so a carrier's start line keeps working:
//! `sluice relay --interface caller/10.77.1.1 --interface callee/10.77.2.1 --listen-ng
//! 127.0.0.1:2223 --port-min 30000 --port-max 40000`. Options given on the command line override
//! the file.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use sluice_dataplane::{
    iface_with_addr, monotonic_now, start_forwarder, BackendChoice, DataplaneConfig,
    ForwarderConfig,
};

use crate::api::{ApiConfig, ApiServer, CallSource};
use crate::ng::server::{NgServer, ServerConfig, TimeoutNotifier, XmlRpcFormat, XmlRpcNotifier};
use crate::ng_handler::{call_timeout, NgOrigin, SessionNgHandler};
use crate::session::{RelayInterface, SessionConfig, SessionManager, Timeouts};

/// Options of `sluice relay` (rtpengine's names where rtpengine has one).
#[derive(Args, Debug, Default)]
pub struct RelayArgs {
    /// TOML configuration file.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// A relay interface, `NAME/ADDRESS[!ADVERTISED]` or `ADDRESS` (repeatable).
    #[arg(long = "interface", short = 'i')]
    pub(crate) interfaces: Vec<String>,
    /// Where the ng control socket listens (UDP).
    #[arg(long)]
    pub(crate) listen_ng: Option<SocketAddr>,
    /// First relay port.
    #[arg(long)]
    pub(crate) port_min: Option<u16>,
    /// Last relay port.
    #[arg(long)]
    pub(crate) port_max: Option<u16>,
    /// Seconds without media before a call is ended.
    #[arg(long)]
    pub(crate) timeout: Option<u64>,
    /// Seconds without media before a call on hold is ended.
    #[arg(long)]
    pub(crate) silent_timeout: Option<u64>,
    /// Longest call in seconds (0: unlimited).
    #[arg(long)]
    pub(crate) final_timeout: Option<u64>,
    /// Stay in the foreground (Sluice always does; accepted for rtpengine's start lines).
    #[arg(long, short = 'f')]
    pub(crate) foreground: bool,
    /// Forwarding path: auto, xdp, afxdp or sockets.
    #[arg(long)]
    pub(crate) backend: Option<BackendChoice>,
    /// Where the management API listens.
    #[arg(long)]
    pub(crate) api_listen: Option<SocketAddr>,
    /// XML-RPC URL told about calls the relay ends (rtpengine's `--b2b-url`; `%%` is the
    /// proxy's address).
    #[arg(long)]
    pub(crate) b2b_url: Option<String>,
    /// Check the configuration and exit.
    #[arg(long)]
    pub(crate) check: bool,
}

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFile {
    #[serde(default)]
    pub relay: RelaySection,
    #[serde(default)]
    pub timeouts: TimeoutSection,
    pub api: Option<ApiConfig>,
}

/// `[relay]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySection {
    pub backend: String,
    pub listen_ng: SocketAddr,
    pub port_min: u16,
    pub port_max: u16,
    pub interface: Vec<InterfaceSection>,
    pub b2b_url: Option<String>,
}

impl Default for RelaySection {
    fn default() -> Self {
        Self {
            backend: "auto".into(),
            listen_ng: SocketAddr::from(([127, 0, 0, 1], 2223)),
            port_min: 30000,
            port_max: 40000,
            interface: Vec::new(),
            b2b_url: None,
        }
    }
}

/// `[[relay.interface]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSection {
    pub name: String,
    pub address: Ipv4Addr,
    pub advertised: Option<Ipv4Addr>,
}

/// `[timeouts]`, in seconds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutSection {
    pub media: u64,
    pub hold: u64,
    pub max_duration: u64,
    pub offer: u64,
}

impl Default for TimeoutSection {
    fn default() -> Self {
        let t = Timeouts::default();
        Self {
            media: t.media.as_secs(),
            hold: t.hold.as_secs(),
            max_duration: 0,
            offer: t.offer.as_secs(),
        }
    }
}

/// The settings `sluice relay` runs with, from the file and the command line.
#[derive(Debug)]
pub struct RelaySettings {
    pub backend: BackendChoice,
    pub listen_ng: SocketAddr,
    pub ports: std::ops::RangeInclusive<u16>,
    pub interfaces: Vec<RelayInterface>,
    pub timeouts: Timeouts,
    pub api: ApiConfig,
    pub b2b_url: Option<String>,
}

/// Parses rtpengine's `--interface` value: `NAME/ADDRESS[!ADVERTISED]` or `ADDRESS`.
pub fn parse_interface(spec: &str) -> Result<(String, Ipv4Addr, Option<Ipv4Addr>)> {
    let (name, rest) = match spec.split_once('/') {
        Some((name, rest)) if !name.is_empty() => (name.to_owned(), rest),
        Some(_) => bail!("--interface {spec}: the name before `/` is empty"),
        None => ("default".to_owned(), spec),
    };
    let (addr, advertised) = match rest.split_once('!') {
        Some((a, adv)) => (a, Some(adv)),
        None => (rest, None),
    };
    let addr: Ipv4Addr = addr
        .parse()
        .with_context(|| format!("--interface {spec}: `{addr}` is not an IPv4 address"))?;
    let advertised = advertised
        .map(|a| a.parse::<Ipv4Addr>())
        .transpose()
        .with_context(|| format!("--interface {spec}: the advertised address is not IPv4"))?;
    Ok((name, addr, advertised))
}

/// Merges the file and the options, and checks the result.
pub fn settings(args: &RelayArgs) -> Result<RelaySettings> {
    let file: RelayFile = match &args.config {
        Some(path) => read_toml(path)?,
        None => RelayFile::default(),
    };
    merge(file, args)
}

/// Reads and parses a TOML file; errors name the file, and the field that is wrong.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("in {}", path.display()))
}

/// Merges the `[relay]`, `[timeouts]` and `[api]` sections of a file with the options (which
/// win), and checks the result. `sluice run` shares it.
pub fn merge(file: RelayFile, args: &RelayArgs) -> Result<RelaySettings> {
    let relay = &file.relay;
    let backend = match args.backend {
        Some(b) => b,
        None => relay
            .backend
            .parse()
            .map_err(|e| anyhow::anyhow!("relay.backend: {e}"))?,
    };
    let port_min = args.port_min.unwrap_or(relay.port_min);
    let port_max = args.port_max.unwrap_or(relay.port_max);
    if port_min == 0 || port_max <= port_min {
        bail!("relay.port_min/port_max: {port_min}..{port_max} is not a range of ports (need 0 < min < max)");
    }
    let mut interfaces: Vec<RelayInterface> = Vec::new();
    let mut add = |name: String, addr: Ipv4Addr, advertised: Option<Ipv4Addr>| -> Result<()> {
        if interfaces.iter().any(|i| i.name == name) {
            bail!("relay.interface: the name `{name}` is used twice");
        }
        if addr.is_unspecified() {
            bail!("relay.interface `{name}`: 0.0.0.0 cannot be advertised to phones; give the address");
        }
        interfaces.push(RelayInterface {
            name,
            addr,
            advertised: advertised.unwrap_or(addr),
            ports: port_min..=port_max,
        });
        Ok(())
    };
    if args.interfaces.is_empty() {
        for i in &relay.interface {
            add(i.name.clone(), i.address, i.advertised)?;
        }
    } else {
        for spec in &args.interfaces {
            let (name, addr, advertised) = parse_interface(spec)?;
            add(name, addr, advertised)?;
        }
    }
    if interfaces.is_empty() {
        bail!("relay.interface: at least one relay interface is needed (--interface NAME/ADDRESS)");
    }
    let t = &file.timeouts;
    let secs = |flag: Option<u64>, file: u64, what: &str| -> Result<Duration> {
        let v = flag.unwrap_or(file);
        if v == 0 && what != "max_duration" {
            bail!("timeouts.{what}: must be above 0 seconds");
        }
        Ok(Duration::from_secs(v))
    };
    let max = secs(args.final_timeout, t.max_duration, "max_duration")?;
    let timeouts = Timeouts {
        media: secs(args.timeout, t.media, "media")?,
        hold: secs(args.silent_timeout, t.hold, "hold")?,
        max_duration: (!max.is_zero()).then_some(max),
        offer: secs(None, t.offer, "offer")?,
    };
    let mut api = file.api.unwrap_or_default();
    if let Some(listen) = args.api_listen {
        api.listen = listen;
    }
    Ok(RelaySettings {
        backend,
        listen_ng: args.listen_ng.unwrap_or(relay.listen_ng),
        ports: port_min..=port_max,
        interfaces,
        timeouts,
        api,
        b2b_url: args.b2b_url.clone().or_else(|| relay.b2b_url.clone()),
    })
}

/// Runs the relay until SIGINT or SIGTERM.
pub fn run(args: &RelayArgs) -> Result<()> {
    let settings = settings(args)?;
    if args.check {
        println!("configuration ok: {settings:#?}");
        return Ok(());
    }
    let _ = args.foreground;
    let media = start_media(&settings)?;
    let MediaPlane { manager, api } = media;
    let origins: Arc<Mutex<HashMap<String, NgOrigin>>> = Arc::default();

    let handler = SessionNgHandler {
        manager: manager.clone(),
        origins: origins.clone(),
    };
    let server = NgServer::bind(settings.listen_ng, handler, ServerConfig::default())
        .with_context(|| format!("binding the ng socket on {}", settings.listen_ng))?;
    let ng = server.spawn().context("starting the ng server")?;
    tracing::info!(listen = %ng.local_addr(), "ng control socket up");
    let notifier = settings
        .b2b_url
        .as_deref()
        .map(|url| XmlRpcNotifier::new(url, XmlRpcFormat::Kamailio))
        .transpose()
        .context("--b2b-url")?;

    let stop = stop_on_signals()?;
    println!(
        "sluice relay: {} on {}, ng on {}, API on {}",
        settings
            .interfaces
            .iter()
            .map(|i| format!("{}/{}", i.name, i.addr))
            .collect::<Vec<_>>()
            .join(" "),
        settings.backend_name(),
        ng.local_addr(),
        api.local_addr()
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let ended = match manager.lock() {
            Ok(mut m) => m.poll(monotonic_now()),
            Err(_) => bail!("the session manager lock is poisoned"),
        };
        for e in ended {
            let origin = origins
                .lock()
                .ok()
                .and_then(|mut o| o.remove(&e.report.call_id))
                .unwrap_or_default();
            tracing::info!(call_id = %e.report.call_id, cause = e.cause.name(), "call ended");
            if let Some(notifier) = &notifier {
                let timeout = call_timeout(&e.report, &origin);
                let notifier = notifier.clone();
                // The proxy may be slow to answer; the timeout loop must not wait for it.
                std::thread::spawn(move || {
                    if let Err(err) = notifier.notify(&timeout) {
                        tracing::warn!(call_id = %timeout.call_id, error = %err, "notifying the proxy");
                    }
                });
            }
        }
    }
    tracing::info!("stopping");
    let (_server, result) = ng.stop();
    result.context("the ng server")?;
    Ok(())
}

/// The media side of the appliance: the forwarding path, the session manager over it, and the
/// management API reading the manager. `sluice relay` and `sluice run` both start it.
pub struct MediaPlane {
    pub manager: Arc<Mutex<SessionManager>>,
    pub api: ApiServer,
}

/// Starts the forwarding path on the relay interfaces, the session manager and the API.
pub fn start_media(settings: &RelaySettings) -> Result<MediaPlane> {
    raise_open_files_limit(settings);
    let mut ifaces: Vec<String> = Vec::new();
    for i in &settings.interfaces {
        match iface_with_addr(i.addr)? {
            Some(name) if !ifaces.contains(&name) => ifaces.push(name),
            Some(_) => {}
            None => bail!(
                "relay.interface `{}`: no network interface here has the address {}",
                i.name,
                i.addr
            ),
        }
    }
    let started = start_forwarder(
        settings.backend,
        &ForwarderConfig {
            ifaces,
            xdp: DataplaneConfig {
                relay_ports: settings.ports.clone(),
                ..DataplaneConfig::default()
            },
            ..ForwarderConfig::default()
        },
    )
    .context("starting the forwarding path")?;
    tracing::info!(backend = started.kind.name(), reason = %started.reason, "relay up");
    for i in &settings.interfaces {
        tracing::info!(interface = %i.name, addr = %i.addr, advertised = %i.advertised, ports = ?i.ports, "relay interface");
    }
    let manager = SessionManager::new(
        SessionConfig {
            interfaces: settings.interfaces.clone(),
            timeouts: settings.timeouts,
        },
        started.forwarder,
    )?;
    let manager = Arc::new(Mutex::new(manager));
    let source: Arc<dyn CallSource> = manager.clone();
    let api = ApiServer::start(&settings.api, source, monotonic_now)
        .context("starting the management API")?;
    tracing::info!(listen = %api.local_addr(), "management API up");
    Ok(MediaPlane { manager, api })
}

/// A flag that SIGINT and SIGTERM set.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}

/// The socket path holds four sockets per call, more than the usual soft limit of 1024 open
/// files allows for a carrier's load: raise it to the hard limit, and say when that is short.
fn raise_open_files_limit(settings: &RelaySettings) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the rlimit we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return;
            }
        }
    }
    let pairs = (usize::from(*settings.ports.end()) - usize::from(*settings.ports.start())) / 2;
    let wanted = 2 * pairs * settings.interfaces.len() + 64;
    if (limit.rlim_cur as usize) < wanted {
        tracing::warn!(
            open_files = limit.rlim_cur,
            wanted,
            "the open-files limit is below what the socket path needs for every relay port"
        );
    }
}

impl RelaySettings {
    pub fn backend_name(&self) -> String {
        format!("{:?}", self.backend).to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtpengine_interface_syntax() {
        let (name, addr, adv) = parse_interface("caller/10.77.1.1").expect("parse");
        assert_eq!(
            (name.as_str(), addr, adv),
            ("caller", Ipv4Addr::new(10, 77, 1, 1), None)
        );
        let (_, _, adv) = parse_interface("pub/10.0.0.1!203.0.113.9").expect("parse");
        assert_eq!(adv, Some(Ipv4Addr::new(203, 0, 113, 9)));
        let (name, ..) = parse_interface("192.0.2.1").expect("parse");
        assert_eq!(name, "default");
        assert!(parse_interface("x/not-an-ip").is_err());
        assert!(parse_interface("/10.0.0.1").is_err());
    }

    fn from_toml(text: &str) -> Result<RelaySettings> {
        let dir = std::env::temp_dir().join(format!("sluice-relay-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{:x}.toml", text.len() ^ text.as_ptr() as usize));
        std::fs::write(&path, text)?;
        let result = settings(&RelayArgs {
            config: Some(path.clone()),
            ..RelayArgs::default()
        });
        let _ = std::fs::remove_file(path);
        result
    }

    #[test]
    fn a_good_file_gives_settings() {
        let s = from_toml(
            r#"
            [relay]
            backend = "sockets"
            listen_ng = "127.0.0.1:2223"
            port_min = 30000
            port_max = 30999
            [[relay.interface]]
            name = "public"
            address = "192.0.2.1"
            advertised = "203.0.113.1"
            [timeouts]
            media = 30
            "#,
        )
        .expect("valid");
        assert_eq!(s.interfaces[0].advertised, Ipv4Addr::new(203, 0, 113, 1));
        assert_eq!(s.timeouts.media, Duration::from_secs(30));
        assert_eq!(s.timeouts.max_duration, None);
    }

    #[test]
    fn bad_files_name_the_field_and_the_reason() {
        let err = |text: &str| format!("{:#}", from_toml(text).expect_err("invalid"));
        let e = err("[relay]\nport_min = \"thirty\"\n");
        assert!(e.contains("port_min"), "{e}");
        let e = err("[relay]\nbogus = 1\n");
        assert!(e.contains("bogus"), "{e}");
        let e = err("[relay]\nport_min = 40000\nport_max = 30000\n[[relay.interface]]\nname = \"a\"\naddress = \"192.0.2.1\"\n");
        assert!(e.contains("port_min"), "{e}");
        let e = err("[relay]\n");
        assert!(e.contains("relay.interface"), "{e}");
        let e = err("[[relay.interface]]\nname = \"a\"\naddress = \"300.1.1.1\"\n");
        assert!(e.contains("address"), "{e}");
        let e = err("[relay]\nbackend = \"dpdk\"\n[[relay.interface]]\nname = \"a\"\naddress = \"192.0.2.1\"\n");
        assert!(e.contains("relay.backend"), "{e}");
        let e = err(
            "[timeouts]\nmedia = 0\n[[relay.interface]]\nname = \"a\"\naddress = \"192.0.2.1\"\n",
        );
        assert!(e.contains("timeouts.media"), "{e}");
    }
}
