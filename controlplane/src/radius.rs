//! RADIUS accounting (RFC 2866) of every call `sluice run` handles, to one or more RADIUS
//! servers (FreeRADIUS, say), next to the CDRs in SQLite.
//!
//! # Records
//!
//! * **Start** (Acct-Status-Type 1) when a call is answered;
//! * **Interim-Update** (3) every `interim_interval` seconds of an answered call, when set (read
//!   from the journal of active calls, which stores counters every 10 s: that is the
//!   granularity);
//! * **Stop** (2) when an answered call ends, whatever ended it (BYE, media timeout, maximum
//!   duration, a restart of Sluice: the same causes as the CDR);
//! * **Failed** (15, as FreeRADIUS's dictionary and the OpenSIPS platforms name it) for a call
//!   that was never answered (cancelled, refused), with no Start before it.
//!
//! # Attributes
//!
//! Standard (RFC 2865, 2866, 2869, 3162), in every record: Acct-Status-Type, Acct-Session-Id
//! (the SIP Call-ID), Event-Timestamp, Acct-Delay-Time (seconds from the event to this
//! transmission: grows on retransmissions and when a record is sent late after an outage),
//! NAS-Identifier (`nas_identifier`, by default the CDRs' node name), NAS-IP-Address or
//! NAS-IPv6-Address (`nas_ip`, by default the address the request leaves from),
//! Calling-Station-Id (the From URI), Called-Station-Id (the To URI), User-Name (the billing
//! party: `user@domain` of an authenticated caller, a trusted peer's address; none for a
//! foreign caller). Stop and Interim-Update add Acct-Session-Time (whole seconds since the
//! answer), Acct-Input-Octets, Acct-Input-Gigawords and Acct-Input-Packets (media received from
//! the caller, RTP and RTCP, as the CDR's AcctInput* columns), Acct-Output-Octets,
//! Acct-Output-Gigawords, Acct-Output-Packets (from the callee). Stop adds
//! Acct-Terminate-Cause, mapped from our cause by [`attributes::terminate_cause`]:
//!
//! | our cause | Acct-Terminate-Cause |
//! |---|---|
//! | `bye:caller`, `bye:callee` | User-Request (1) |
//! | `media-timeout` | Idle-Timeout (4) |
//! | `max-duration` | Session-Timeout (5) |
//! | `signalling-lost` | Lost-Service (3) |
//! | `restart` | NAS-Reboot (11) |
//!
//! Vendor-specific (vendor 32473, `radius/dictionary.sluice`, which says why they are not the
//! MSP / OpenSER `Sip-*` attributes nor RFC 5090's): Sluice-Termination-Cause (our cause as the
//! CDR spells it; Stop and Failed), Sluice-Sip-From-Tag, Sluice-Sip-To-Tag, Sluice-Sip-Method,
//! Sluice-Sip-Response-Code, Sluice-Source-IP, Sluice-Canonical-URI, Sluice-Gateway,
//! Sluice-Carrier, Sluice-Node, Sluice-Sip-User-Agents (`caller + callee`), Sluice-Start-Time
//! (answered calls).
//!
//! # Delivery
//!
//! Nothing is lost to a RADIUS server that is down: every record goes first into an outbox
//! table in the CDR database, in the same transaction as the CDR or journal row it comes from
//! ([`outbox`]), and leaves it only when a server acknowledged it with an Accounting-Response
//! whose Response Authenticator checks out with the shared secret. The sender
//! ([`sender`]) runs on its own thread, woken through a crossbeam channel, so the SIP event loop
//! never waits for RADIUS: retransmissions with a doubling timeout, failover between servers,
//! a backoff when all are down, and catching up in order, after a restart too. The outbox is
//! bounded (`queue_limit`); past it the oldest records are dropped and counted in the log (the
//! CDRs stay in SQLite). Delivery is at least once: a record whose answer was lost is sent again.
//!
//! # Configuration
//!
//! ```toml
//! [radius]
//! servers = ["127.0.0.1:1813", "radius2.example.net"]  # HOST[:PORT], port 1813 by default
//! secret_file = "/etc/sluice/radius.secret"  # or `secret = "..."`
//! nas_identifier = "sbc-1"    # default: cdr.node
//! nas_ip = "192.0.2.1"        # default: the source address of the requests
//! timeout_ms = 1000           # first wait for an answer, doubled on each retry
//! retries = 2                 # per server, at most 5
//! queue_limit = 100000        # records kept for servers that are down
//! interim_interval = 0        # seconds between Interim-Updates; 0: none
//! vendor_id = 32473           # of Sluice's vendor attributes
//! ```
//!
//! `--radius HOST:PORT` (repeatable) replaces `servers`; the secret comes from
//! `--radius-secret-file`, else the environment variable `SLUICE_RADIUS_SECRET`, else the
//! file's `secret_file` or `secret`: never from the command line, where `ps` would show it.

pub mod attributes;
pub mod outbox;
pub mod packet;
pub mod sender;

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use clap::Args;
use crossbeam_channel::Sender as ChannelSender;
use serde::Deserialize;

use attributes::{Nas, DEFAULT_VENDOR_ID};
use outbox::Outbox;
use sender::{Delivery, SenderConfig, SystemClock, UdpLink, MAX_RETRIES};

/// The RADIUS accounting port (RFC 2866).
pub const DEFAULT_PORT: u16 = 1813;
/// The environment variable with the shared secret.
pub const SECRET_ENV: &str = "SLUICE_RADIUS_SECRET";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(1000);
pub const DEFAULT_RETRIES: u32 = 2;
pub const DEFAULT_QUEUE_LIMIT: u64 = 100_000;
/// How long stopping waits for a batch in flight.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// `[radius]` in `sluice run`'s configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RadiusSection {
    #[serde(default)]
    pub servers: Vec<String>,
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub nas_identifier: Option<String>,
    pub nas_ip: Option<IpAddr>,
    pub timeout_ms: Option<u64>,
    pub retries: Option<u32>,
    pub queue_limit: Option<u64>,
    pub interim_interval: Option<u64>,
    pub vendor_id: Option<u32>,
}

/// `sluice run`'s RADIUS options.
#[derive(Args, Debug, Default)]
pub struct RadiusArgs {
    /// A RADIUS accounting server, `HOST[:PORT]` (repeatable, in order of preference; replaces
    /// radius.servers).
    #[arg(long = "radius", value_name = "HOST:PORT")]
    pub servers: Vec<String>,
    /// A file holding the RADIUS shared secret (else $SLUICE_RADIUS_SECRET, else
    /// radius.secret_file / radius.secret).
    #[arg(long, value_name = "PATH")]
    pub radius_secret_file: Option<PathBuf>,
}

/// A shared secret, which `Debug` does not show.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

/// RADIUS accounting as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RadiusSettings {
    pub servers: Vec<SocketAddr>,
    pub secret: Secret,
    /// `None`: the CDRs' node name.
    pub nas_identifier: Option<String>,
    pub nas_ip: Option<IpAddr>,
    pub timeout: Duration,
    pub retries: u32,
    pub queue_limit: u64,
    pub interim: Option<Duration>,
    pub vendor_id: u32,
}

/// A bad `[radius]` setting: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("radius.{field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

fn bad(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        reason: reason.into(),
    }
}

/// `HOST[:PORT]` (an IPv6 address in brackets when a port follows) to an address, resolved
/// once, now.
pub fn parse_server(spec: &str) -> Result<SocketAddr, ConfigError> {
    let spec = spec.trim();
    if let Ok(addr) = spec.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bare = spec
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(spec);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_PORT));
    }
    if spec.is_empty() || spec.contains(['/', ' ', '[', ']']) || spec.matches(':').count() > 1 {
        return Err(bad(
            "servers",
            format!("`{spec}` is not HOST[:PORT] (IPv6: [ADDRESS]:PORT)"),
        ));
    }
    let with_port = if spec.contains(':') {
        spec.to_owned()
    } else {
        format!("{spec}:{DEFAULT_PORT}")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| bad("servers", format!("`{spec}`: {e}")))?
        .next()
        .ok_or_else(|| bad("servers", format!("`{spec}` has no address")))
}

fn read_secret(path: &Path, field: &'static str) -> Result<Vec<u8>, ConfigError> {
    let bytes =
        std::fs::read(path).map_err(|e| bad(field, format!("reading {}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o004 != 0 {
                tracing::warn!(path = %path.display(), "the RADIUS secret file is readable by everyone");
            }
        }
    }
    let mut secret = bytes;
    while secret.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
        secret.pop();
    }
    Ok(secret)
}

/// The RADIUS settings from the file's `[radius]`, the options and `env_secret` (the value of
/// [`SECRET_ENV`]); `None` when RADIUS is not configured (no section and no `--radius`).
pub fn settings(
    file: Option<&RadiusSection>,
    args: &RadiusArgs,
    env_secret: Option<OsString>,
) -> Result<Option<RadiusSettings>, ConfigError> {
    if file.is_none() && args.servers.is_empty() {
        if args.radius_secret_file.is_some() {
            return Err(bad(
                "servers",
                "--radius-secret-file is given but no server (--radius or radius.servers)",
            ));
        }
        return Ok(None);
    }
    let empty = RadiusSection::default();
    let file = file.unwrap_or(&empty);
    let specs = if args.servers.is_empty() {
        &file.servers
    } else {
        &args.servers
    };
    if specs.is_empty() {
        return Err(bad("servers", "no server: give at least one HOST[:PORT]"));
    }
    let servers = specs
        .iter()
        .map(|s| parse_server(s))
        .collect::<Result<Vec<_>, _>>()?;
    if file.secret.is_some() && file.secret_file.is_some() {
        return Err(bad("secret", "give secret or secret_file, not both"));
    }
    let secret = if let Some(path) = &args.radius_secret_file {
        read_secret(path, "secret_file")?
    } else if let Some(value) = env_secret {
        use std::os::unix::ffi::OsStringExt;
        value.into_vec()
    } else if let Some(path) = &file.secret_file {
        read_secret(path, "secret_file")?
    } else if let Some(secret) = &file.secret {
        secret.as_bytes().to_vec()
    } else {
        return Err(bad(
            "secret",
            format!("no shared secret: give --radius-secret-file, ${SECRET_ENV}, radius.secret_file or radius.secret"),
        ));
    };
    if secret.is_empty() {
        return Err(bad("secret", "the shared secret is empty"));
    }
    if let Some(id) = &file.nas_identifier {
        if id.is_empty() || id.len() > 253 {
            return Err(bad("nas_identifier", "must be 1 to 253 bytes"));
        }
    }
    let timeout = Duration::from_millis(
        file.timeout_ms
            .unwrap_or(DEFAULT_TIMEOUT.as_millis() as u64),
    );
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        return Err(bad("timeout_ms", "must be 1 to 60000 milliseconds"));
    }
    let retries = file.retries.unwrap_or(DEFAULT_RETRIES);
    if retries > MAX_RETRIES {
        return Err(bad("retries", format!("at most {MAX_RETRIES}")));
    }
    let queue_limit = file.queue_limit.unwrap_or(DEFAULT_QUEUE_LIMIT);
    if queue_limit == 0 || queue_limit > i64::MAX as u64 {
        return Err(bad("queue_limit", "must be at least 1"));
    }
    let vendor_id = file.vendor_id.unwrap_or(DEFAULT_VENDOR_ID);
    if vendor_id == 0 || vendor_id > 0x00ff_ffff {
        return Err(bad(
            "vendor_id",
            "must be an IANA enterprise number, 1 to 16777215",
        ));
    }
    Ok(Some(RadiusSettings {
        servers,
        secret: Secret(secret),
        nas_identifier: file.nas_identifier.clone(),
        nas_ip: file.nas_ip,
        timeout,
        retries,
        queue_limit,
        interim: file
            .interim_interval
            .filter(|&s| s > 0)
            .map(Duration::from_secs),
        vendor_id,
    }))
}

/// What went wrong starting RADIUS accounting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Outbox(#[from] outbox::OutboxError),
    #[error("opening the UDP sockets to the RADIUS servers: {0}")]
    Socket(std::io::Error),
    #[error("starting the RADIUS sender thread: {0}")]
    Thread(std::io::Error),
}

/// The running RADIUS sender. Dropping it stops the thread (waiting a little for a batch in
/// flight; what is unacknowledged stays in the outbox for the next start).
pub struct Radius {
    wake: Option<ChannelSender<()>>,
    done: crossbeam_channel::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Radius {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Radius").finish_non_exhaustive()
    }
}

impl Radius {
    /// Opens the outbox of the CDR database at `db` (so that from now on every answered or
    /// ended call queues its records) and starts the sender. `node` is the NAS-Identifier
    /// unless configured.
    pub fn start(settings: &RadiusSettings, db: &Path, node: &str) -> Result<Self, StartError> {
        let outbox = Outbox::open(db, settings.queue_limit, settings.interim)?;
        let link = UdpLink::connect(&settings.servers).map_err(StartError::Socket)?;
        let config = SenderConfig {
            servers: settings.servers.clone(),
            secret: settings.secret.0.clone(),
            nas: Nas {
                identifier: settings
                    .nas_identifier
                    .clone()
                    .unwrap_or_else(|| node.to_owned()),
                ip: settings.nas_ip,
                vendor: settings.vendor_id,
            },
            timeout: settings.timeout,
            retries: settings.retries,
        };
        let sender = sender::Sender::new(outbox, Delivery::new(config, link, SystemClock));
        // One pending wake-up is enough: the sender reads the whole outbox when it wakes.
        let (wake, wake_rx) = crossbeam_channel::bounded(1);
        let (done_tx, done) = crossbeam_channel::bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("sluice-radius".into())
            .spawn(move || {
                let _done = done_tx;
                sender.run(wake_rx);
            })
            .map_err(StartError::Thread)?;
        let radius = Self {
            wake: Some(wake),
            done,
            thread: Some(thread),
        };
        // Whatever an earlier run left queued.
        radius.kick();
        Ok(radius)
    }

    /// Tells the sender a record may have been queued. Never blocks.
    pub fn kick(&self) {
        if let Some(wake) = &self.wake {
            let _ = wake.try_send(());
        }
    }
}

impl Drop for Radius {
    fn drop(&mut self) {
        // Closing the channel stops the sender at its next look.
        self.wake = None;
        if self.done.recv_timeout(STOP_WAIT).is_err() {
            if let Some(thread) = self.thread.take() {
                if thread.is_finished() {
                    let _ = thread.join();
                } else {
                    tracing::info!(
                        "the RADIUS sender is still busy; its unacknowledged records stay queued"
                    );
                }
            }
        }
    }
}

/// `sluice run` without RADIUS: stops queueing records in the CDR database at `db`, and says if
/// records from an earlier run with RADIUS are left unsent.
pub fn disable(db: &Path) {
    match Outbox::disable(db) {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            queued = n,
            "RADIUS accounting records of an earlier run stay unsent: RADIUS is not configured"
        ),
        Err(e) => tracing::warn!(error = %e, "turning RADIUS accounting off in the CDR database"),
    }
}

#[cfg(test)]
mod tests;
