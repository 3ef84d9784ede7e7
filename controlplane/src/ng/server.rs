//! The ng UDP server, its retransmission cache and the call-timeout notifier.
//!
//! [`NgServer`] owns a bound [`UdpSocket`] and an [`NgHandler`]. For each datagram it
//!
//! 1. drops it (and counts it in [`ServerStats::garbage`]) if it has no cookie;
//! 2. resends the cached reply if the same source sent the same cookie recently (the SIP
//!    proxy retransmits when a reply is lost; the command must not run twice, or an offer
//!    would allocate new ports) — see [`ReplyCache`];
//! 3. answers `{"result":"error",...}` if the document is malformed;
//! 4. otherwise calls [`NgHandler::handle`], adds the parse warnings to the reply, caches
//!    the encoded reply and sends it.
//!
//! The server runs on a blocking socket with a read timeout so that [`NgServer::run`] can
//! check its stop flag; [`NgServer::spawn`] runs it in its own thread.
//!
//! # How ng users learn that a call ended
//!
//! The ng protocol has no push channel: Kamailio only ever asks. rtpengine tells the SIP
//! side about calls it tore down for lack of media (`--timeout`, `--silent-timeout`,
//! `--final-timeout`) through an XML-RPC callback, enabled by `--b2b-url` and shaped by
//! `--xmlrpc-format` (`0` SEMS, `1` call-id only, `2` Kamailio). With format 2 it calls
//! Kamailio's dialog-module RPC `dlg.terminate_dlg(call-id, from-tag, to-tag)` through
//! Kamailio's `xmlrpc` module, which sends BYEs to both ends. In the URL, `%%` stands for
//! the address the call's ng requests came from (or the request's `xmlrpc-callback`).
//!
//! Sluice does the same, so an existing Kamailio configuration (`loadmodule "xmlrpc.so"`,
//! `dialog`, an `xmlrpc` route) works unchanged: [`XmlRpcNotifier`] posts that XML-RPC call
//! over plain HTTP (`http://host[:port]/path`, no TLS), with a short timeout, one attempt,
//! a `<fault>` answer mentioning "dialog not found" counting as success. The session
//! manager calls [`TimeoutNotifier::notify`] with a [`CallTimeout`] when it expires a call;
//! it should do so off the ng thread (the call blocks for up to the configured timeout).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::protocol::{finish_reply, parse_datagram, Reply, Request};

/// The largest UDP payload over IPv4.
const MAX_UDP_PAYLOAD: usize = 65_507;

/// Largest datagram read (the UDP maximum).
pub const MAX_DATAGRAM: usize = 65_535;

/// What serves the parsed requests: the session manager.
pub trait NgHandler {
    /// Handles one request (never a retransmission) and returns its reply. Parse warnings
    /// in `req.warnings` are added to the reply by the server. `Command::Other` commands
    /// the handler does not implement should get `Reply::error("Unrecognized command")`.
    fn handle(&mut self, req: &Request) -> Reply;
}

impl<F: FnMut(&Request) -> Reply> NgHandler for F {
    fn handle(&mut self, req: &Request) -> Reply {
        self(req)
    }
}

/// Server settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// How long a reply stays cached for retransmissions (rtpengine keeps 30 s).
    pub cache_ttl: Duration,
    /// Most replies cached; the oldest go first.
    pub cache_capacity: usize,
    /// Socket read timeout: how often [`NgServer::run`] checks its stop flag.
    pub poll_interval: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            cache_ttl: Duration::from_secs(30),
            cache_capacity: 16_384,
            poll_interval: Duration::from_millis(100),
        }
    }
}

/// Counters of an [`NgServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerStats {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams dropped because they had no cookie.
    pub garbage: u64,
    /// Retransmissions answered from the cache.
    pub retransmissions: u64,
    /// Malformed requests answered with an error.
    pub malformed: u64,
    /// Requests passed to the handler.
    pub handled: u64,
    /// Replies that could not be sent.
    pub send_errors: u64,
}

/// (source, cookie)
type CacheKey = (SocketAddr, String);

/// A time- and size-bounded map of (source, cookie) -> encoded reply.
///
/// rtpengine keys its cache by cookie alone; the source address is added here so that two
/// SIP proxies that happen to pick the same cookie cannot receive each other's replies
/// (Kamailio retransmits from the socket it sent from, so retransmissions still match).
#[derive(Debug)]
pub struct ReplyCache {
    ttl: Duration,
    capacity: usize,
    map: HashMap<CacheKey, (Instant, Arc<[u8]>)>,
    order: VecDeque<(Instant, SocketAddr, String)>,
}

impl ReplyCache {
    /// A cache keeping replies for `ttl`, at most `capacity` of them.
    pub fn new(ttl: Duration, capacity: usize) -> ReplyCache {
        ReplyCache {
            ttl,
            capacity: capacity.max(1),
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The cached reply for (`src`, `cookie`), if still fresh at `now`.
    pub fn get(&mut self, src: SocketAddr, cookie: &str, now: Instant) -> Option<Arc<[u8]>> {
        self.expire(now);
        self.map
            .get(&(src, cookie.to_string()))
            .map(|(_, r)| Arc::clone(r))
    }

    /// Caches `reply` for (`src`, `cookie`) from `now`.
    pub fn insert(&mut self, src: SocketAddr, cookie: &str, reply: Arc<[u8]>, now: Instant) {
        self.expire(now);
        while self.map.len() >= self.capacity {
            let Some((t, s, c)) = self.order.pop_front() else {
                break;
            };
            self.remove_if_at(s, c, t);
        }
        let key = (src, cookie.to_string());
        self.order.push_back((now, src, key.1.clone()));
        self.map.insert(key, (now, reply));
    }

    /// Number of cached replies.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((t, _, _)) = self.order.front() {
            if now.saturating_duration_since(*t) < self.ttl {
                break;
            }
            if let Some((t, s, c)) = self.order.pop_front() {
                self.remove_if_at(s, c, t);
            }
        }
    }

    /// Removes the entry only if it is the one inserted at `t` (a re-insert of the same key
    /// leaves an older order entry behind).
    fn remove_if_at(&mut self, src: SocketAddr, cookie: String, t: Instant) {
        let key = (src, cookie);
        if self.map.get(&key).is_some_and(|(at, _)| *at == t) {
            self.map.remove(&key);
        }
    }
}

/// The ng UDP server.
pub struct NgServer<H> {
    socket: UdpSocket,
    handler: H,
    cache: ReplyCache,
    stats: ServerStats,
    config: ServerConfig,
}

impl<H: NgHandler> NgServer<H> {
    /// A server on an already bound socket (its read timeout is set to
    /// `config.poll_interval`).
    pub fn new(socket: UdpSocket, handler: H, config: ServerConfig) -> io::Result<Self> {
        socket.set_read_timeout(Some(config.poll_interval.max(Duration::from_millis(1))))?;
        Ok(NgServer {
            socket,
            handler,
            cache: ReplyCache::new(config.cache_ttl, config.cache_capacity),
            stats: ServerStats::default(),
            config,
        })
    }

    /// Binds `addr` (e.g. the `listen-ng` address) and makes a server on it.
    pub fn bind(addr: impl ToSocketAddrs, handler: H, config: ServerConfig) -> io::Result<Self> {
        NgServer::new(UdpSocket::bind(addr)?, handler, config)
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The counters so far.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// The settings.
    pub fn config(&self) -> ServerConfig {
        self.config
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Processes one datagram from `src` without any I/O; returns the reply to send, if
    /// any. This is the whole protocol logic of the server.
    pub fn process(&mut self, datagram: &[u8], src: SocketAddr, now: Instant) -> Option<Arc<[u8]>> {
        self.stats.received += 1;
        let Some(parsed) = parse_datagram(datagram) else {
            self.stats.garbage += 1;
            return None;
        };
        let cookie = match &parsed {
            Ok(r) => r.cookie.as_str(),
            Err(e) => e.cookie.as_str(),
        };
        if let Some(cached) = self.cache.get(src, cookie, now) {
            self.stats.retransmissions += 1;
            return Some(cached);
        }
        let (cookie, reply) = match parsed {
            Ok(mut req) => {
                req.source = Some(src);
                self.stats.handled += 1;
                let reply = self.handler.handle(&req);
                (req.cookie.clone(), finish_reply(&req, reply))
            }
            Err(e) => {
                self.stats.malformed += 1;
                (e.cookie.clone(), e.reply())
            }
        };
        let reply: Arc<[u8]> = reply.into();
        self.cache.insert(src, &cookie, Arc::clone(&reply), now);
        Some(reply)
    }

    /// Waits up to the poll interval for one datagram and answers it. `Ok(false)` if none
    /// arrived.
    pub fn serve_one(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let (n, src) = match self.socket.recv_from(buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(false)
            }
            Err(e) => return Err(e),
        };
        if let Some(reply) = self.process(&buf[..n], src, Instant::now()) {
            if self.socket.send_to(&reply, src).is_err() {
                self.stats.send_errors += 1;
                // Most often a reply over the UDP maximum: say so rather than stay silent.
                if reply.len() > MAX_UDP_PAYLOAD {
                    if let Some((cookie, _)) = crate::ng::protocol::split_cookie(&buf[..n]) {
                        let error = Reply::error("reply too large for one datagram")
                            .encode(cookie, crate::ng::protocol::Format::Bencode);
                        let _ = self.socket.send_to(&error, src);
                    }
                }
            }
        }
        Ok(true)
    }

    /// Serves until `stop` is set (checked at least every poll interval).
    pub fn run(&mut self, stop: &AtomicBool) -> io::Result<()> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while !stop.load(Ordering::Relaxed) {
            match self.serve_one(&mut buf) {
                Ok(_) => {}
                // An ICMP port unreachable from an earlier reply surfaces here on Linux.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<H: NgHandler + Send + 'static> NgServer<H> {
    /// Runs the server in a thread named `ng-server`.
    pub fn spawn(mut self) -> io::Result<ServerHandle<H>> {
        let stop = Arc::new(AtomicBool::new(false));
        let local_addr = self.local_addr()?;
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("ng-server".into())
            .spawn(move || {
                let r = self.run(&flag);
                (self, r)
            })?;
        Ok(ServerHandle {
            stop,
            local_addr,
            thread,
        })
    }
}

/// A server running in its own thread.
pub struct ServerHandle<H> {
    stop: Arc<AtomicBool>,
    local_addr: SocketAddr,
    thread: JoinHandle<(NgServer<H>, io::Result<()>)>,
}

impl<H> ServerHandle<H> {
    /// The server's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the server (within one poll interval) and returns it with how `run` ended.
    pub fn stop(self) -> (NgServer<H>, io::Result<()>) {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.join() {
            Ok(x) => x,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Timeout notification

/// A call that Sluice tore down on its own (media timeout, final timeout), to be reported
/// to the SIP side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallTimeout {
    /// The call's Call-ID.
    pub call_id: String,
    /// The From tag of the dialogue.
    pub from_tag: String,
    /// The To tag (empty if the call was never answered).
    pub to_tag: String,
    /// Where the call's ng requests came from ([`Request::source`]), for `%%` in the URL.
    pub ng_source: Option<IpAddr>,
    /// The `xmlrpc-callback` given in the call's requests, which overrides `ng_source`.
    pub xmlrpc_callback: Option<IpAddr>,
}

/// Something that tells the SIP side about a call that timed out.
pub trait TimeoutNotifier: Send + Sync {
    /// Sends the notification; blocks for at most the notifier's timeout.
    fn notify(&self, call: &CallTimeout) -> io::Result<()>;
}

/// The body of the XML-RPC callback (rtpengine's `--xmlrpc-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XmlRpcFormat {
    /// `2`: Kamailio, `dlg.terminate_dlg(call-id, from-tag, to-tag)`.
    #[default]
    Kamailio,
    /// `1`: generic, `teardown(call-id)`.
    CallId,
    /// `0`: SEMS, `di("sbc", "postControlCmd", from-tag, "teardown")`.
    Sems,
}

/// Posts rtpengine-compatible XML-RPC timeout callbacks (`--b2b-url`) over plain HTTP.
#[derive(Debug, Clone)]
pub struct XmlRpcNotifier {
    url: String,
    format: XmlRpcFormat,
    timeout: Duration,
}

impl XmlRpcNotifier {
    /// A notifier posting to `url` (`http://host[:port][/path]`; `%%` as host stands for
    /// the call's ng source or `xmlrpc-callback` address) with a 5 s timeout, as rtpengine.
    pub fn new(url: &str, format: XmlRpcFormat) -> io::Result<XmlRpcNotifier> {
        let n = XmlRpcNotifier {
            url: url.to_string(),
            format,
            timeout: Duration::from_secs(5),
        };
        n.target(Some(IpAddr::from([127, 0, 0, 1])))?;
        Ok(n)
    }

    /// Changes the connect/read/write timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> XmlRpcNotifier {
        self.timeout = timeout;
        self
    }

    /// The XML-RPC request body for `call`.
    pub fn body(&self, call: &CallTimeout) -> String {
        let (method, params): (&str, Vec<&str>) = match self.format {
            XmlRpcFormat::Kamailio => (
                "dlg.terminate_dlg",
                vec![&call.call_id, &call.from_tag, &call.to_tag],
            ),
            XmlRpcFormat::CallId => ("teardown", vec![&call.call_id]),
            XmlRpcFormat::Sems => (
                "di",
                vec!["sbc", "postControlCmd", &call.from_tag, "teardown"],
            ),
        };
        let mut b =
            String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><methodCall><methodName>");
        b.push_str(method);
        b.push_str("</methodName><params>");
        for p in params {
            b.push_str("<param><value><string>");
            b.push_str(&xml_escape(p));
            b.push_str("</string></value></param>");
        }
        b.push_str("</params></methodCall>");
        b
    }

    /// (socket address, host header, path) for a call whose ng peer is `peer`.
    fn target(&self, peer: Option<IpAddr>) -> io::Result<(SocketAddr, String, String)> {
        let bad = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("b2b url {:?}: {why}", self.url),
            )
        };
        let rest = self
            .url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// is supported"))?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && !p.contains(']') && !h.is_empty() => {
                (h, p.parse::<u16>().map_err(|_| bad("bad port"))?)
            }
            _ => (hostport, 80),
        };
        let host = if host == "%%" {
            let ip = peer.ok_or_else(|| bad("%% used but the call's ng source is unknown"))?;
            match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            }
        } else {
            host.to_string()
        };
        let addr = (host.trim_start_matches('[').trim_end_matches(']'), port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| bad("host does not resolve"))?;
        Ok((addr, format!("{host}:{port}"), path.to_string()))
    }
}

impl TimeoutNotifier for XmlRpcNotifier {
    fn notify(&self, call: &CallTimeout) -> io::Result<()> {
        let (addr, host, path) = self.target(call.xmlrpc_callback.or(call.ng_source))?;
        let body = self.body(call);
        let mut s = TcpStream::connect_timeout(&addr, self.timeout)?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        let req = format!(
            "POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes())?;
        let mut resp = Vec::new();
        s.take(1 << 20).read_to_end(&mut resp)?;
        let resp = String::from_utf8_lossy(&resp).to_ascii_lowercase();
        let ok_status = resp
            .split_whitespace()
            .nth(1)
            .is_some_and(|code| code.starts_with('2'));
        if !ok_status {
            return Err(io::Error::other(format!(
                "xmlrpc callback: HTTP status line {:?}",
                resp.lines().next().unwrap_or("")
            )));
        }
        if resp.contains("<fault>") && !resp.contains("dialog not found") {
            return Err(io::Error::other("xmlrpc callback answered with a fault"));
        }
        Ok(())
    }
}

fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}
