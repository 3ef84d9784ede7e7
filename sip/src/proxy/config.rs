//! Proxy configuration: plain structs the composing layer fills (from TOML, say).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use rsip::Transport;
use thiserror::Error;

use crate::auth::Secret;
use crate::message::proxy::LocalAddr;
use crate::registrar::RegistrarConfig;

/// An IP network in CIDR notation (`192.0.2.0/24`, `2001:db8::/32`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits are ignored when matching).
    pub addr: IpAddr,
    /// The prefix length, 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix: u8,
}

/// Why a [`Cidr`] did not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("bad CIDR {0:?}")]
pub struct CidrError(pub String);

impl Cidr {
    /// Parses `addr/prefix` or a bare address (a host route).
    pub fn parse(s: &str) -> Result<Self, CidrError> {
        let bad = || CidrError(s.to_owned());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }

    /// Whether `ip` lies in this network (an IPv4-mapped IPv6 address matches IPv4 networks).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A local SIP account: digest credentials and the numbers/names it also answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user part of the address-of-record, and the digest username.
    pub user: String,
    /// The domain (one of [`ProxyConfig::domains`]); also the digest realm.
    pub domain: String,
    /// The password or provisioned HA1 values.
    pub secret: Secret,
    /// Other user parts that reach this account (e.g. its DID), and that it may register as.
    pub aliases: Vec<String>,
}

impl Account {
    /// Whether `user` names this account (its user or one of its aliases).
    pub fn answers_to(&self, user: &str) -> bool {
        self.user == user || self.aliases.iter().any(|a| a == user)
    }

    /// The canonical address-of-record, `sip:user@domain`.
    pub fn aor(&self) -> String {
        format!("sip:{}@{}", self.user, self.domain.to_ascii_lowercase())
    }
}

/// A PSTN gateway (no DNS in a sans-IO core: an address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gateway {
    /// Where to send.
    pub addr: SocketAddr,
    /// Over which transport.
    pub transport: Transport,
}

/// Calls to numbers starting with `prefix` go to `gateways`, tried in order: the next one is
/// tried when a gateway answers 5xx or 408, or does not answer at all (timer B).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PstnRoute {
    /// Digits the dialled number (without a leading `+`) starts with; empty matches everything.
    pub prefix: String,
    /// Gateways in order of preference.
    pub gateways: Vec<Gateway>,
}

/// One of our interfaces: the socket the composing layer binds and what we advertise in Via and
/// Record-Route for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The local socket address (what `handle_datagram`'s `local` names, and
    /// [`super::Transmit::local`]).
    pub bind: SocketAddr,
    /// Host advertised in Via and Record-Route (an IP address or a name).
    pub host: String,
    /// Port advertised.
    pub port: u16,
    /// Destinations reached through this interface; the first interface whose networks hold the
    /// destination is used, else the first interface. When a request crosses interfaces, both are
    /// record-routed (RFC 5658).
    pub networks: Vec<Cidr>,
}

impl Interface {
    /// An interface advertising its bind address and reaching everything.
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            bind,
            host: bind.ip().to_string(),
            port: bind.port(),
            networks: Vec::new(),
        }
    }

    /// The advertised address for `transport`.
    pub fn local_addr(&self, transport: Transport) -> LocalAddr {
        LocalAddr::new(&transport.to_string(), &self.host, self.port)
    }
}

/// Everything [`super::ProxyCore`] needs to know.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Our interfaces (at least one).
    pub interfaces: Vec<Interface>,
    /// The SIP domains we are responsible for (registrar and location service).
    pub domains: Vec<String>,
    /// Local accounts.
    pub accounts: Vec<Account>,
    /// Peers trusted by source address: no authentication, may call numbers and transit.
    pub trusted: Vec<Cidr>,
    /// PSTN routes, matched by longest prefix.
    pub pstn: Vec<PstnRoute>,
    /// Registrar limits.
    pub registrar: RegistrarConfig,
    /// Transaction timers (the proxy forces [`crate::transaction::TryingPolicy::Immediate`]).
    pub transactions: crate::transaction::Config,
    /// Digest algorithms offered in challenges, in order of preference; empty = the
    /// authenticator's default (SHA-256, then MD5). Many phones (and SIPp) read only the first
    /// challenge and know only MD5, so a carrier may need `[MD5]`.
    pub digest_algorithms: Vec<crate::auth::Algorithm>,
    /// Timer C (RFC 3261 §16.6 step 11): how long an INVITE branch may go without a final
    /// response, restarted by each provisional but 100 (§16.7 step 2). When it fires, a branch
    /// that has had a provisional is CANCELled and the caller gets a 408 (§16.8). The RFC asks
    /// for more than 3 minutes; [`DEFAULT_TIMER_C`] by default.
    pub timer_c: std::time::Duration,
}

/// The default timer C: 3 minutes, the least RFC 3261 §16.6 allows (what Kamailio and
/// OpenSIPS use by default too).
pub const DEFAULT_TIMER_C: std::time::Duration = std::time::Duration::from_secs(180);

impl ProxyConfig {
    /// A configuration with one interface and defaults elsewhere.
    pub fn new(interface: Interface) -> Self {
        Self {
            interfaces: vec![interface],
            domains: Vec::new(),
            accounts: Vec::new(),
            trusted: Vec::new(),
            pstn: Vec::new(),
            registrar: RegistrarConfig::default(),
            transactions: crate::transaction::Config::default(),
            digest_algorithms: Vec::new(),
            timer_c: DEFAULT_TIMER_C,
        }
    }

    /// Whether `host` is one of our domains.
    pub fn is_local_domain(&self, host: &str) -> bool {
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(host))
    }

    /// The account `user` (or alias) of `domain`.
    pub fn account(&self, user: &str, domain: &str) -> Option<&Account> {
        self.accounts
            .iter()
            .find(|a| a.domain.eq_ignore_ascii_case(domain) && a.answers_to(user))
    }

    /// The account whose digest username is `user` in `domain`.
    pub fn account_by_username(&self, user: &str, domain: &str) -> Option<&Account> {
        self.accounts
            .iter()
            .find(|a| a.domain.eq_ignore_ascii_case(domain) && a.user == user)
    }

    /// Whether `ip` is a trusted peer.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The PSTN route with the longest prefix matching `number` (a leading `+` is ignored).
    pub fn pstn_route(&self, number: &str) -> Option<&PstnRoute> {
        let digits = number.strip_prefix('+').unwrap_or(number);
        self.pstn
            .iter()
            .filter(|r| digits.starts_with(&r.prefix) && !r.gateways.is_empty())
            .max_by_key(|r| r.prefix.len())
    }

    /// The interface `local` names, else the first.
    pub(crate) fn interface_at(&self, local: SocketAddr) -> Option<&Interface> {
        self.interfaces
            .iter()
            .find(|i| i.bind == local)
            .or_else(|| self.interfaces.first())
    }

    /// The interface to reach `dest` through.
    pub(crate) fn interface_for(&self, dest: IpAddr) -> Option<&Interface> {
        self.interfaces
            .iter()
            .find(|i| i.networks.iter().any(|n| n.contains(dest)))
            .or_else(|| self.interfaces.first())
    }
}

/// The accounts of a [`ProxyConfig`] by domain and name: every REGISTER and authenticated INVITE
/// looks one up, and with thousands of accounts a scan of the list was a sixth of the SIP
/// thread's time. Built once with the core (its configuration does not change afterwards).
#[derive(Debug, Clone, Default)]
pub(crate) struct AccountIndex {
    /// Per domain (a handful: found by a case-insensitive scan, without allocating a key).
    domains: Vec<DomainAccounts>,
}

#[derive(Debug, Clone)]
struct DomainAccounts {
    domain: String,
    /// Digest username → index in [`ProxyConfig::accounts`].
    by_username: HashMap<String, usize>,
    /// User or alias → index; the first account in order wins, as in [`ProxyConfig::account`].
    by_name: HashMap<String, usize>,
}

impl AccountIndex {
    pub(crate) fn new(accounts: &[Account]) -> Self {
        let mut index = Self::default();
        for (i, a) in accounts.iter().enumerate() {
            let pos = match index
                .domains
                .iter()
                .position(|d| d.domain.eq_ignore_ascii_case(&a.domain))
            {
                Some(pos) => pos,
                None => {
                    index.domains.push(DomainAccounts {
                        domain: a.domain.clone(),
                        by_username: HashMap::new(),
                        by_name: HashMap::new(),
                    });
                    index.domains.len() - 1
                }
            };
            let d = &mut index.domains[pos];
            d.by_username.entry(a.user.clone()).or_insert(i);
            d.by_name.entry(a.user.clone()).or_insert(i);
            for alias in &a.aliases {
                d.by_name.entry(alias.clone()).or_insert(i);
            }
        }
        index
    }

    fn domain(&self, domain: &str) -> Option<&DomainAccounts> {
        self.domains
            .iter()
            .find(|d| d.domain.eq_ignore_ascii_case(domain))
    }

    /// As [`ProxyConfig::account_by_username`], as an index into the accounts.
    pub(crate) fn by_username(&self, user: &str, domain: &str) -> Option<usize> {
        self.domain(domain)?.by_username.get(user).copied()
    }

    /// As [`ProxyConfig::account`], as an index into the accounts.
    pub(crate) fn by_name(&self, user: &str, domain: &str) -> Option<usize> {
        self.domain(domain)?.by_name.get(user).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(user: &str, domain: &str, aliases: &[&str]) -> Account {
        Account {
            user: user.into(),
            domain: domain.into(),
            secret: Secret::Password("pw".into()),
            aliases: aliases.iter().map(|&a| a.into()).collect(),
        }
    }

    #[test]
    fn the_account_index_finds_what_the_linear_lookups_find() {
        let mut config = ProxyConfig::new(Interface::new("192.0.2.1:5060".parse().unwrap()));
        config.accounts = vec![
            account("alice", "Example.com", &["+15551230001", "bob"]),
            account("bob", "example.com", &["+15551230002"]),
            account("alice", "other.example", &[]),
            account("carol", "EXAMPLE.COM", &["+15551230001"]),
        ];
        let index = AccountIndex::new(&config.accounts);
        let position = |a: Option<&Account>| {
            a.map(|a| {
                config
                    .accounts
                    .iter()
                    .position(|b| std::ptr::eq(a, b))
                    .unwrap()
            })
        };
        for domain in [
            "example.com",
            "EXAMPLE.com",
            "other.example",
            "nowhere.example",
        ] {
            for user in [
                "alice",
                "bob",
                "carol",
                "+15551230001",
                "+15551230002",
                "dave",
                "",
            ] {
                assert_eq!(
                    index.by_username(user, domain),
                    position(config.account_by_username(user, domain)),
                    "username {user}@{domain}"
                );
                assert_eq!(
                    index.by_name(user, domain),
                    position(config.account(user, domain)),
                    "name {user}@{domain}"
                );
            }
        }
        assert_eq!(
            index.by_name("bob", "example.com"),
            Some(0),
            "alice's alias comes first"
        );
        assert_eq!(index.by_username("bob", "example.com"), Some(1));
    }

    #[test]
    fn cidr_matching() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("2001:db8::/32")
            .unwrap()
            .contains("2001:db8:1::1".parse().unwrap()));
        assert!(Cidr::parse("192.0.2.7")
            .unwrap()
            .contains("192.0.2.7".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nonsense").is_err());
    }
}
