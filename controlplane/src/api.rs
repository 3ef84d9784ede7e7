//! The management API: a small JSON-over-HTTP server for NOC staff and for Prometheus.
//!
//! It listens on [`DEFAULT_API_ADDR`] (localhost) unless configured otherwise. On an address
//! that is not a loopback address an access token is required ([`ApiConfig::token`]): the
//! server refuses to start without one. When a token is configured every request must carry
//! `Authorization: Bearer <token>` (compared in constant time), or gets `401`.
//!
//! | Request | Answer |
//! | --- | --- |
//! | `GET /calls` | `{"calls": [CallReport...], "count": N}`: the active calls, oldest first, each with its streams; `?summary=1` leaves the streams out |
//! | `GET /calls/<call-id>` | one call with its streams; the call-id is percent-decoded (`%40` for `@`, `%2F` for `/`...); `404 {"error": ...}` if unknown |
//! | `GET /ended` | `{"ended": [{"cause": ..., "report": CallReport}...], "count": N}`: the calls that ended lately, newest first, with their termination cause and final counters; `?limit=N`, `?summary=1` |
//! | `GET /metrics` | Prometheus / OpenMetrics text: totals, relay counters, and per-call series for at most [`ApiConfig::max_call_series`] calls (the busiest) |
//! | `GET /healthz` | `200 ok` |
//! | `GET /` (`/index.html`) | the NOC page ([`noc`]): live calls in a browser, reading the routes above |
//!
//! Any other path is `404`, any other method `405`; errors are JSON `{"error": "..."}`. The NOC
//! page holds no data, so it is the one answer served without the token; it is given the token
//! in its URL fragment (`/#token=...`) and sends it on its own requests.
//!
//! The HTTP layer is a deliberately small HTTP/1.1 server (one request per connection,
//! `Connection: close`) on `std::net` with [`httparse`] for parsing, so that every buffer and
//! every wait is bounded: the request head is at most [`MAX_HEAD`] bytes and must arrive
//! within [`REQUEST_TIMEOUT`], whoever sends it (before authentication). The request logic is
//! the pure function [`Api::handle`] over a [`CallSource`], tested without sockets.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use percent_encoding::percent_decode_str;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

// Everything this module needs from the session manager.
use crate::session::manager::{CallReport, Ended, SessionManager};

#[path = "web/noc.rs"]
pub mod noc;

/// Where the API listens by default, and where `sluice calls` looks for it.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:8089";
/// Default bound on the calls that get per-call series in `/metrics`.
pub const DEFAULT_MAX_CALL_SERIES: usize = 500;
/// Longest request head (request line and headers) the server reads.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers in a request.
pub const MAX_HEADERS: usize = 64;
/// Time a client has to send its request head, and to read the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a connection that sends nothing looks whether the server is stopping.
const IDLE_STOP_CHECK: Duration = Duration::from_millis(200);
/// `/ended` answers at most this many calls unless `?limit=` says otherwise.
pub const DEFAULT_ENDED_LIMIT: usize = 1000;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Settings of the management API (the daemon's `[api]` table).
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Where to listen; [`DEFAULT_API_ADDR`] by default.
    pub listen: SocketAddr,
    /// The access token. Required when `listen` is not a loopback address; when set, every
    /// request must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// At most this many calls get per-call series in `/metrics` (the busiest ones).
    pub max_call_series: usize,
    /// Threads serving requests (one request at a time each).
    pub workers: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_API_ADDR
                .parse()
                .expect("DEFAULT_API_ADDR is an address"),
            token: None,
            max_call_series: DEFAULT_MAX_CALL_SERIES,
            workers: 2,
        }
    }
}

impl fmt::Debug for ApiConfig {
    // Never print the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_call_series", &self.max_call_series)
            .field("workers", &self.workers)
            .finish()
    }
}

impl ApiConfig {
    /// Checks the settings: an address that is not loopback needs a token, and a token must
    /// not be empty.
    pub fn validate(&self) -> Result<(), ApiError> {
        match &self.token {
            Some(token) if token.trim().is_empty() => Err(ApiError::EmptyToken),
            Some(_) => Ok(()),
            None if self.listen.ip().is_loopback() => Ok(()),
            None => Err(ApiError::TokenRequired(self.listen)),
        }
    }
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "the management API would listen on {0}, which is not a loopback address: \
         set an access token (api.token) or listen on 127.0.0.1"
    )]
    TokenRequired(SocketAddr),
    #[error("the management API's access token is empty")]
    EmptyToken,
    #[error("the management API cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("the management API cannot start its threads: {0}")]
    Spawn(io::Error),
}

/// What the API reads: the session manager, or a fake in tests.
pub trait CallSource: Send + Sync {
    /// Every active call, oldest first.
    fn calls(&self, now: Duration) -> Vec<CallReport>;
    /// One call; `Ok(None)` if there is no such call, `Err` if its counters cannot be read.
    fn call(&self, now: Duration, call_id: &str) -> Result<Option<CallReport>, String>;
    /// The calls that ended lately, newest first, at most `limit`.
    fn ended(&self, limit: usize) -> Vec<Ended>;
    /// How many of the lately ended calls ended for each cause.
    fn ended_by_cause(&self) -> Vec<(&'static str, u64)>;
    /// The forwarding path's verdict and drop counters, by name.
    fn relay_counters(&self) -> Result<Vec<(&'static str, u64)>, String>;
    /// The forwarding path's name (`xdp`, `afxdp`, `sockets`).
    fn backend(&self) -> &'static str;
}

fn lock(m: &Mutex<SessionManager>) -> std::sync::MutexGuard<'_, SessionManager> {
    // A panic elsewhere while holding the lock leaves the manager readable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CallSource for Mutex<SessionManager> {
    fn calls(&self, now: Duration) -> Vec<CallReport> {
        lock(self).reports(now)
    }

    fn call(&self, now: Duration, call_id: &str) -> Result<Option<CallReport>, String> {
        let manager = lock(self);
        match manager.report(now, call_id) {
            Ok(report) => Ok(Some(report)),
            Err(crate::session::manager::SessionError::UnknownCall(_)) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    fn ended(&self, limit: usize) -> Vec<Ended> {
        let manager = lock(self);
        let all: Vec<&Ended> = manager.recently_ended().collect();
        all.into_iter().rev().take(limit).cloned().collect()
    }

    fn ended_by_cause(&self) -> Vec<(&'static str, u64)> {
        count_causes(lock(self).recently_ended())
    }

    fn relay_counters(&self) -> Result<Vec<(&'static str, u64)>, String> {
        let manager = lock(self);
        let snapshot = manager.forwarder().counters().map_err(|e| e.to_string())?;
        Ok(snapshot.iter().map(|(c, v)| (c.name(), v)).collect())
    }

    fn backend(&self) -> &'static str {
        lock(self).backend().name()
    }
}

/// Counts ended calls by the name of their termination cause, in first-seen order.
pub fn count_causes<'a>(ended: impl Iterator<Item = &'a Ended>) -> Vec<(&'static str, u64)> {
    let mut counts: Vec<(&'static str, u64)> = Vec::new();
    for e in ended {
        let name = e.cause.name();
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count += 1,
            None => counts.push((name, 1)),
        }
    }
    counts
}

/// An HTTP request, as far as the API cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: String,
    /// The request target: path and query, still percent-encoded.
    pub target: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

impl ApiRequest {
    /// A `GET` of `target` with no credentials.
    #[cfg(test)]
    pub fn get(target: &str) -> Self {
        Self {
            method: "GET".into(),
            target: target.into(),
            authorization: None,
        }
    }
}

/// An HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: u16,
    pub content_type: &'static str,
    /// Headers beyond `Content-Type`, `Content-Length` and `Connection`.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl ApiResponse {
    fn json(status: u16, value: &impl serde::Serialize) -> Self {
        match serde_json::to_vec_pretty(value) {
            Ok(mut body) => {
                body.push(b'\n');
                Self {
                    status,
                    content_type: JSON,
                    headers: Vec::new(),
                    body,
                }
            }
            Err(e) => Self::error(500, &format!("encoding the answer: {e}")),
        }
    }

    fn error(status: u16, message: &str) -> Self {
        let mut body = serde_json::json!({ "error": message })
            .to_string()
            .into_bytes();
        body.push(b'\n');
        Self {
            status,
            content_type: JSON,
            headers: Vec::new(),
            body,
        }
    }

    fn text(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    /// The body as text.
    #[cfg(test)]
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The request logic: authentication, routing, and the answers.
#[derive(Clone, Debug, Default)]
pub struct Api {
    token: Option<String>,
    max_call_series: usize,
}

impl Api {
    /// The API as `config` sets it (the token and the series bound; not the address).
    pub fn new(config: &ApiConfig) -> Self {
        Self {
            token: config.token.clone(),
            max_call_series: config.max_call_series,
        }
    }

    /// Answers one request. Never panics, whatever the request.
    pub fn handle(&self, req: &ApiRequest, source: &dyn CallSource, now: Duration) -> ApiResponse {
        let page = req.target.split('?').next().unwrap_or_default();
        if matches!(page, "/" | "/index.html") {
            return noc_page(&req.method);
        }
        if !self.authorized(req.authorization.as_deref()) {
            return ApiResponse::error(401, "missing or wrong access token")
                .with_header("WWW-Authenticate", "Bearer realm=\"sluice\"");
        }
        let (path, query) = match req.target.split_once('?') {
            Some((path, query)) => (path, query),
            None => (req.target.as_str(), ""),
        };
        let known = matches!(
            path,
            "/calls" | "/calls/" | "/ended" | "/metrics" | "/healthz"
        ) || path.starts_with("/calls/");
        if !known {
            return ApiResponse::error(404, "no such resource");
        }
        if req.method != "GET" {
            return ApiResponse::error(405, "only GET is supported").with_header("Allow", "GET");
        }
        let query = Query::parse(query);
        match path {
            "/healthz" => ApiResponse::text(200, TEXT, "ok\n"),
            "/calls" | "/calls/" => {
                let calls = source.calls(now);
                let count = calls.len();
                let calls = if query.summary {
                    summarize(&calls)
                } else {
                    to_values(&calls)
                };
                ApiResponse::json(200, &serde_json::json!({ "calls": calls, "count": count }))
            }
            "/ended" => {
                let ended = source.ended(query.limit.unwrap_or(DEFAULT_ENDED_LIMIT));
                let count = ended.len();
                let mut values = to_values(&ended);
                if query.summary {
                    for v in &mut values {
                        if let Some(report) = v.get_mut("report").and_then(|r| r.as_object_mut()) {
                            report.remove("streams");
                        }
                    }
                }
                ApiResponse::json(200, &serde_json::json!({ "ended": values, "count": count }))
            }
            "/metrics" => match render_metrics(source, now, self.max_call_series) {
                Ok(text) => ApiResponse::text(200, OPENMETRICS, text),
                Err(e) => ApiResponse::error(500, &e),
            },
            _ => {
                let raw = path.strip_prefix("/calls/").unwrap_or_default();
                let Ok(call_id) = percent_decode_str(raw).decode_utf8() else {
                    return ApiResponse::error(
                        400,
                        "the call-id is not UTF-8 once percent-decoded",
                    );
                };
                match source.call(now, &call_id) {
                    Ok(Some(report)) => ApiResponse::json(200, &report),
                    Ok(None) => ApiResponse::error(404, &format!("unknown call-id `{call_id}`")),
                    Err(e) => ApiResponse::error(500, &e),
                }
            }
        }
    }

    fn authorized(&self, authorization: Option<&str>) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let Some(given) = authorization.and_then(bearer) else {
            return false;
        };
        constant_time_eq(given.as_bytes(), expected.as_bytes())
    }
}

/// The NOC page: the same for everybody and without data, so served without the token.
fn noc_page(method: &str) -> ApiResponse {
    if method != "GET" {
        return ApiResponse::error(405, "only GET is supported").with_header("Allow", "GET");
    }
    ApiResponse {
        status: 200,
        content_type: noc::CONTENT_TYPE,
        headers: noc::headers(),
        body: noc::PAGE.as_bytes().to_vec(),
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
fn bearer(header: &str) -> Option<&str> {
    let header = header.trim();
    let (scheme, token) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares `given` with `expected` in a time that depends only on `expected`'s length.
pub fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(0) ^ e;
    }
    std::hint::black_box(diff) == 0
}

/// The query parameters the API knows.
#[derive(Debug, Default, PartialEq, Eq)]
struct Query {
    summary: bool,
    limit: Option<usize>,
}

impl Query {
    fn parse(query: &str) -> Self {
        let mut q = Query::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode_str(value).decode_utf8_lossy();
            match key {
                "summary" => q.summary = matches!(&*value, "" | "1" | "true" | "yes"),
                "limit" => q.limit = value.parse().ok(),
                _ => {}
            }
        }
        q
    }
}

fn to_values<T: serde::Serialize>(items: &[T]) -> Vec<serde_json::Value> {
    items
        .iter()
        .filter_map(|i| serde_json::to_value(i).ok())
        .collect()
}

/// Calls without their streams.
fn summarize(calls: &[CallReport]) -> Vec<serde_json::Value> {
    let mut values = to_values(calls);
    for v in &mut values {
        if let Some(object) = v.as_object_mut() {
            object.remove("streams");
        }
    }
    values
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallPacketLabels {
    call_id: String,
    direction: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    call_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CounterLabels {
    counter: &'static str,
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn call_packets(call: &CallReport) -> u64 {
    call.rtp
        .iter()
        .chain(&call.rtcp)
        .map(|t| t.packets)
        .fold(0, u64::saturating_add)
}

/// The `/metrics` exposition (OpenMetrics text).
///
/// Per-call series go to the `max_call_series` calls with the most packets (ties by call-id),
/// so that a scrape stays bounded however many calls there are; `sluice_call_series_truncated`
/// is 1 when some calls were left out.
pub fn render_metrics(
    source: &dyn CallSource,
    now: Duration,
    max_call_series: usize,
) -> Result<String, String> {
    let calls = source.calls(now);
    let mut registry = Registry::with_prefix("sluice");

    registry.register(
        "backend",
        "The forwarding path",
        Info::new(vec![("backend", source.backend())]),
    );

    let active = Gauge::<i64>::default();
    active.set(saturating_i64(calls.len() as u64));
    registry.register("active_calls", "Calls in progress", active);

    let ended = Family::<CauseLabels, Gauge>::default();
    for (cause, count) in source.ended_by_cause() {
        ended
            .get_or_create(&CauseLabels { cause })
            .set(saturating_i64(count));
    }
    registry.register(
        "recently_ended_calls",
        "Calls among the last ones kept that ended, by termination cause",
        ended,
    );

    let active_packets = Family::<KindLabels, Gauge>::default();
    let active_bytes = Family::<KindLabels, Gauge>::default();
    for kind in ["rtp", "rtcp"] {
        let (mut packets, mut bytes) = (0u64, 0u64);
        for c in &calls {
            for t in if kind == "rtp" { &c.rtp } else { &c.rtcp } {
                packets = packets.saturating_add(t.packets);
                bytes = bytes.saturating_add(t.bytes);
            }
        }
        active_packets
            .get_or_create(&KindLabels { kind })
            .set(saturating_i64(packets));
        active_bytes
            .get_or_create(&KindLabels { kind })
            .set(saturating_i64(bytes));
    }
    registry.register(
        "active_calls_packets",
        "Packets relayed for the calls in progress",
        active_packets,
    );
    registry.register(
        "active_calls_bytes",
        "Bytes relayed for the calls in progress",
        active_bytes,
    );

    match source.relay_counters() {
        Ok(counters) => {
            let family = Family::<CounterLabels, Counter>::default();
            for (counter, value) in counters {
                family
                    .get_or_create(&CounterLabels { counter })
                    .inc_by(value);
            }
            registry.register(
                "relay_packets",
                "Relay verdicts and drop reasons since start",
                family,
            );
        }
        Err(e) => tracing::warn!(error = %e, "reading the relay counters for /metrics"),
    }

    let mut selected: Vec<&CallReport> = calls.iter().collect();
    selected.sort_by(|a, b| {
        call_packets(b)
            .cmp(&call_packets(a))
            .then_with(|| a.call_id.cmp(&b.call_id))
    });
    let truncated = selected.len() > max_call_series;
    selected.truncate(max_call_series);

    let truncated_gauge = Gauge::<i64>::default();
    truncated_gauge.set(i64::from(truncated));
    registry.register(
        "call_series_truncated",
        "1 when some calls have no per-call series (more calls than max_call_series)",
        truncated_gauge,
    );

    let packets = Family::<CallPacketLabels, Gauge>::default();
    let bytes = Family::<CallPacketLabels, Gauge>::default();
    let last_packet_age = Family::<CallLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let age = Family::<CallLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for call in selected {
        for (side, direction) in [(0, "a_to_b"), (1, "b_to_a")] {
            for (kind, totals) in [("rtp", &call.rtp), ("rtcp", &call.rtcp)] {
                let labels = CallPacketLabels {
                    call_id: call.call_id.clone(),
                    direction,
                    kind,
                };
                packets
                    .get_or_create(&labels)
                    .set(saturating_i64(totals[side].packets));
                bytes
                    .get_or_create(&labels)
                    .set(saturating_i64(totals[side].bytes));
            }
        }
        let labels = CallLabels {
            call_id: call.call_id.clone(),
        };
        if let Some(seconds) = call.last_packet_age_s {
            last_packet_age.get_or_create(&labels).set(seconds);
        }
        age.get_or_create(&labels).set(call.age_s);
    }
    registry.register("call_packets", "Packets relayed for one call", packets);
    registry.register("call_bytes", "Bytes relayed for one call", bytes);
    registry.register(
        "call_last_packet_age_seconds",
        "Seconds since the last packet of one call, either way",
        last_packet_age,
    );
    registry.register(
        "call_age_seconds",
        "Seconds since one call was offered",
        age,
    );

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .map_err(|e| format!("encoding the metrics: {e}"))?;
    Ok(text)
}

/// A running management API. Dropping it stops accepting, lets the requests in progress
/// finish, and joins its threads.
pub struct ApiServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Starts the API on `config.listen`, answering from `source` with `clock` as `now`.
    ///
    /// The daemon calls it as
    /// `ApiServer::start(&config.api, manager.clone(), sluice_dataplane::monotonic_now)` with
    /// its `Arc<Mutex<SessionManager>>`.
    pub fn start(
        config: &ApiConfig,
        source: Arc<dyn CallSource>,
        clock: fn() -> Duration,
    ) -> Result<Self, ApiError> {
        config.validate()?;
        let listener = TcpListener::bind(config.listen).map_err(|source| ApiError::Bind {
            addr: config.listen,
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| ApiError::Bind {
            addr: config.listen,
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let api = Arc::new(Api::new(config));
        let mut server = Self {
            addr,
            stop: stop.clone(),
            workers: Vec::new(),
        };
        for index in 0..config.workers.max(1) {
            let listener = listener.try_clone().map_err(ApiError::Spawn)?;
            let (stop, api, source) = (stop.clone(), api.clone(), source.clone());
            let worker = std::thread::Builder::new()
                .name(format!("sluice-api-{index}"))
                .spawn(move || accept_loop(&listener, &stop, &api, source.as_ref(), clock))
                .map_err(ApiError::Spawn)?;
            // On an error here, `server` drops and stops the workers started so far.
            server.workers.push(worker);
        }
        tracing::info!(%addr, token = config.token.is_some(), "management API listening");
        Ok(server)
    }

    /// The address the API listens on (with the actual port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn stop_workers(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake each worker blocked in accept() with a connection of our own.
        let wake = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), self.addr.port())
            }
            _ => self.addr,
        };
        for _ in &self.workers {
            let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

fn accept_loop(
    listener: &TcpListener,
    stop: &AtomicBool,
    api: &Api,
    source: &dyn CallSource,
    clock: fn() -> Duration,
) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, peer)) => {
                if let Err(e) = serve(stream, stop, api, source, clock) {
                    tracing::debug!(%peer, error = %e, "management API connection");
                }
            }
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(error = %e, "management API accept");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// What reading a request head gave.
enum Head {
    Request(ApiRequest),
    Reject(ApiResponse),
}

/// Parses a complete or partial request head; `None` while more bytes are needed.
fn parse_head(buf: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {
            let authorization = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .map(str::to_owned);
            Some(Head::Request(ApiRequest {
                method: req.method.unwrap_or_default().to_owned(),
                target: req.path.unwrap_or_default().to_owned(),
                authorization,
            }))
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => Some(Head::Reject(
            ApiResponse::error(431, "request head too large"),
        )),
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => {
            Some(Head::Reject(ApiResponse::error(431, "too many headers")))
        }
        Err(e) => Some(Head::Reject(ApiResponse::error(
            400,
            &format!("bad request: {e}"),
        ))),
    }
}

fn serve(
    mut stream: TcpStream,
    stop: &AtomicBool,
    api: &Api,
    source: &dyn CallSource,
    clock: fn() -> Duration,
) -> io::Result<()> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let _ = stream.set_nodelay(true);
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break Head::Reject(ApiResponse::error(408, "request timeout"));
        }
        // A browser opens connections ahead of its requests and may leave one idle: wait in
        // slices, so that stopping the server is not held up by such a connection.
        stream.set_read_timeout(Some(remaining.min(IDLE_STOP_CHECK)))?;
        let room = MAX_HEAD.saturating_sub(buf.len()).clamp(1, chunk.len());
        let n = match stream.read(&mut chunk[..room]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head) = parse_head(&buf) {
            break head;
        }
    };
    let response = match head {
        Head::Request(req) => {
            let response = api.handle(&req, source, clock());
            tracing::debug!(method = %req.method, target = %req.target.escape_debug(), status = response.status, "management API");
            response
        }
        Head::Reject(response) => response,
    };
    write_response(&mut stream, &response)?;
    stream.flush()?;
    // Read what the client may still send (a body we ignore) so that closing does not reset
    // the connection before it has read the answer.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let drain_until = Instant::now() + Duration::from_secs(1);
    let mut drained = 0;
    while drained < 1024 * 1024 {
        let remaining = drain_until.saturating_duration_since(Instant::now());
        if remaining.is_zero() || stream.set_read_timeout(Some(remaining)).is_err() {
            break;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    Ok(())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "",
    }
}

fn write_response(out: &mut impl Write, response: &ApiResponse) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    for (name, value) in &response.headers {
        // Values are ours, but never let one end the head early.
        let value: String = value.chars().filter(|c| !c.is_control()).collect();
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(&response.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::manager::{CallState, StreamReport, Totals};
    use crate::session::model::{Side, TerminationCause};

    fn report(call_id: &str, packets: u64) -> CallReport {
        let t = |p: u64| Totals {
            packets: p,
            bytes: p * 172,
        };
        CallReport {
            call_id: call_id.into(),
            label: None,
            state: CallState::Established,
            backend: "sockets",
            from_tag: Some("ft".into()),
            to_tag: Some("tt".into()),
            age_s: 12.5,
            duration_s: Some(10.0),
            created_s: 100.0,
            last_signal_s: 102.5,
            rtp: [t(packets), t(packets / 2)],
            rtcp: [t(1), t(1)],
            last_packet_age_s: (packets > 0).then_some(0.25),
            streams: vec![StreamReport {
                media: 0,
                kind: "audio".into(),
                from: Side::A,
                rtcp: false,
                relay: "203.0.113.1:30000".parse().expect("addr"),
                sdp_peer: "192.168.1.10:4000".parse().expect("addr"),
                latched_peer: Some("198.51.100.7:61234".parse().expect("addr")),
                packets,
                bytes: packets * 172,
                last_packet_age_s: Some(0.25),
            }],
        }
    }

    #[derive(Default)]
    struct Fake {
        calls: Vec<CallReport>,
        ended: Vec<Ended>,
    }

    impl CallSource for Fake {
        fn calls(&self, _now: Duration) -> Vec<CallReport> {
            self.calls.clone()
        }
        fn call(&self, _now: Duration, call_id: &str) -> Result<Option<CallReport>, String> {
            Ok(self.calls.iter().find(|c| c.call_id == call_id).cloned())
        }
        fn ended(&self, limit: usize) -> Vec<Ended> {
            self.ended.iter().rev().take(limit).cloned().collect()
        }
        fn ended_by_cause(&self) -> Vec<(&'static str, u64)> {
            count_causes(self.ended.iter())
        }
        fn relay_counters(&self) -> Result<Vec<(&'static str, u64)>, String> {
            Ok(vec![("tx", 1000), ("drop_source_mismatch", 3)])
        }
        fn backend(&self) -> &'static str {
            "sockets"
        }
    }

    fn fake() -> Fake {
        Fake {
            calls: vec![report("abc@host", 100), report("x%y/z", 5)],
            ended: vec![
                Ended {
                    cause: TerminationCause::Deleted,
                    report: report("old-1", 10),
                },
                Ended {
                    cause: TerminationCause::MediaTimeout,
                    report: report("old-2", 0),
                },
                Ended {
                    cause: TerminationCause::Deleted,
                    report: report("old-3", 7),
                },
            ],
        }
    }

    const NOW: Duration = Duration::from_secs(1000);

    fn get(api: &Api, source: &dyn CallSource, target: &str) -> ApiResponse {
        api.handle(&ApiRequest::get(target), source, NOW)
    }

    fn json(response: &ApiResponse) -> serde_json::Value {
        assert_eq!(response.content_type, JSON);
        serde_json::from_slice(&response.body).expect("JSON body")
    }

    fn with_token(token: &str) -> Api {
        Api::new(&ApiConfig {
            token: Some(token.into()),
            ..ApiConfig::default()
        })
    }

    #[test]
    fn routes() {
        let api = Api::new(&ApiConfig::default());
        let source = fake();
        let r = get(&api, &source, "/healthz");
        assert_eq!((r.status, r.body_text().as_str()), (200, "ok\n"));
        for target in [
            "/index.htm",
            "/call",
            "/callsx",
            "/metrics/x",
            "/healthz/",
            "",
            "*",
            "//calls",
        ] {
            assert_eq!(get(&api, &source, target).status, 404, "{target}");
        }
        let mut post = ApiRequest::get("/calls");
        post.method = "POST".into();
        let r = api.handle(&post, &source, NOW);
        assert_eq!(r.status, 405);
        assert!(r.headers.contains(&("Allow", "GET".into())));
        post.target = "/nowhere".into();
        assert_eq!(api.handle(&post, &source, NOW).status, 404);
    }

    #[test]
    fn calls_list_and_summary() {
        let api = Api::default();
        let source = fake();
        let body = json(&get(&api, &source, "/calls"));
        assert_eq!(body["count"], 2);
        let first = &body["calls"][0];
        assert_eq!(first["call_id"], "abc@host");
        assert_eq!(first["state"], "established");
        assert_eq!(first["backend"], "sockets");
        assert_eq!(first["rtp"][0]["packets"], 100);
        assert_eq!(first["streams"][0]["latched_peer"], "198.51.100.7:61234");
        assert_eq!(first["streams"][0]["from"], "a");
        let body = json(&get(&api, &source, "/calls?summary=1"));
        assert_eq!(body["count"], 2);
        assert!(body["calls"][0].get("streams").is_none());
        assert_eq!(body["calls"][0]["rtp"][1]["packets"], 50);
        let empty = Fake::default();
        let body = json(&get(&api, &empty, "/calls/"));
        assert_eq!(body, serde_json::json!({ "calls": [], "count": 0 }));
    }

    #[test]
    fn one_call_is_percent_decoded() {
        let api = Api::default();
        let source = fake();
        let r = get(&api, &source, "/calls/abc%40host");
        assert_eq!(r.status, 200);
        assert_eq!(json(&r)["call_id"], "abc@host");
        assert_eq!(
            json(&get(&api, &source, "/calls/abc@host"))["call_id"],
            "abc@host"
        );
        let r = get(&api, &source, "/calls/x%25y%2Fz?ignored=1");
        assert_eq!(json(&r)["call_id"], "x%y/z");
        assert_eq!(
            json(&get(&api, &source, "/calls/x%25y/z"))["call_id"],
            "x%y/z"
        );
        let r = get(&api, &source, "/calls/nope%20here");
        assert_eq!(r.status, 404);
        assert_eq!(json(&r)["error"], "unknown call-id `nope here`");
        let r = get(&api, &source, "/calls/%FF%FE");
        assert_eq!(r.status, 400);
        // A lone `%` or a truncated escape stays as it is.
        assert_eq!(get(&api, &source, "/calls/%").status, 404);
        assert_eq!(get(&api, &source, "/calls/%4").status, 404);
    }

    #[test]
    fn ended_newest_first() {
        let api = Api::default();
        let source = fake();
        let body = json(&get(&api, &source, "/ended"));
        assert_eq!(body["count"], 3);
        assert_eq!(body["ended"][0]["report"]["call_id"], "old-3");
        assert_eq!(body["ended"][1]["cause"], "media-timeout");
        assert!(body["ended"][0]["report"]["streams"].is_array());
        let body = json(&get(&api, &source, "/ended?limit=1&summary=1"));
        assert_eq!(body["count"], 1);
        assert!(body["ended"][0]["report"].get("streams").is_none());
        assert_eq!(body["ended"][0]["report"]["rtp"][0]["packets"], 7);
    }

    #[test]
    fn tokens() {
        let source = fake();
        let api = with_token("s3cret");
        let r = get(&api, &source, "/calls");
        assert_eq!(r.status, 401);
        assert!(r.headers.iter().any(|(n, _)| *n == "WWW-Authenticate"));
        // Unknown paths and other methods do not tell anything without the token either.
        assert_eq!(get(&api, &source, "/nowhere").status, 401);
        let ok = |auth: &str| {
            let req = ApiRequest {
                authorization: Some(auth.into()),
                ..ApiRequest::get("/healthz")
            };
            api.handle(&req, &source, NOW).status
        };
        assert_eq!(ok("Bearer s3cret"), 200);
        assert_eq!(ok("bearer   s3cret "), 200);
        assert_eq!(ok("Bearer s3cre"), 401);
        assert_eq!(ok("Bearer s3crett"), 401);
        assert_eq!(ok("Bearer "), 401);
        assert_eq!(ok("Basic s3cret"), 401);
        assert_eq!(ok("s3cret"), 401);
        // Without a configured token (loopback), anything goes.
        assert_eq!(get(&Api::default(), &source, "/healthz").status, 200);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"", b"abc"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
    }

    #[test]
    fn config_needs_a_token_off_loopback() {
        let config = |listen: &str, token: Option<&str>| ApiConfig {
            listen: listen.parse().expect("addr"),
            token: token.map(str::to_owned),
            ..ApiConfig::default()
        };
        assert_eq!(ApiConfig::default().listen.to_string(), DEFAULT_API_ADDR);
        assert!(config("127.0.0.1:8089", None).validate().is_ok());
        assert!(config("[::1]:8089", None).validate().is_ok());
        assert!(config("127.0.0.1:8089", Some("t")).validate().is_ok());
        assert!(config("192.0.2.1:8089", Some("t")).validate().is_ok());
        for listen in ["0.0.0.0:8089", "192.0.2.1:8089", "[::]:8089"] {
            let err = config(listen, None).validate().expect_err(listen);
            assert!(matches!(err, ApiError::TokenRequired(_)));
            assert!(err.to_string().contains("not a loopback address"), "{err}");
        }
        assert!(matches!(
            config("0.0.0.0:8089", Some("  ")).validate(),
            Err(ApiError::EmptyToken)
        ));
        // The server itself refuses, before binding anything.
        let source: Arc<dyn CallSource> = Arc::new(fake());
        let err =
            ApiServer::start(&config("0.0.0.0:0", None), source, || NOW).expect_err("refused");
        assert!(matches!(err, ApiError::TokenRequired(_)));
        let printed = format!("{:?}", config("0.0.0.0:0", Some("hunter2")));
        assert!(!printed.contains("hunter2"), "{printed}");
        let parsed: ApiConfig =
            serde_json::from_str(r#"{"listen": "0.0.0.0:9000", "token": "t"}"#).expect("config");
        assert_eq!(parsed.max_call_series, DEFAULT_MAX_CALL_SERIES);
        assert_eq!(parsed.listen.port(), 9000);
    }

    #[test]
    fn never_panics_on_odd_targets() {
        let api = Api::default();
        let source = fake();
        let long = format!("/calls/{}", "%".repeat(100_000));
        let targets = [
            long.as_str(),
            "/calls/\u{0}\u{ffff}",
            "/calls/%C3%28",
            "/calls?summary",
            "/calls?&&==&summary=%ZZ",
            "/ended?limit=-1",
            "/ended?limit=99999999999999999999999",
            "?",
            "/calls/?",
            "/métrics",
        ];
        for target in targets {
            let r = get(&api, &source, target);
            assert!(
                [200, 400, 404].contains(&r.status),
                "{target}: {}",
                r.status
            );
        }
        let mut req = ApiRequest::get("/calls");
        req.method = "\u{0}GET".into();
        assert_eq!(api.handle(&req, &source, NOW).status, 405);
    }

    #[test]
    fn metrics_totals_and_per_call_series() {
        let source = fake();
        let text = render_metrics(&source, NOW, 500).expect("metrics");
        for line in [
            "sluice_active_calls 2",
            "sluice_backend_info{backend=\"sockets\"} 1",
            "sluice_recently_ended_calls{cause=\"deleted\"} 2",
            "sluice_recently_ended_calls{cause=\"media-timeout\"} 1",
            "sluice_relay_packets_total{counter=\"tx\"} 1000",
            "sluice_relay_packets_total{counter=\"drop_source_mismatch\"} 3",
            "sluice_active_calls_packets{kind=\"rtp\"} 157",
            "sluice_active_calls_packets{kind=\"rtcp\"} 4",
            "sluice_call_series_truncated 0",
            "sluice_call_packets{call_id=\"abc@host\",direction=\"a_to_b\",kind=\"rtp\"} 100",
            "sluice_call_packets{call_id=\"abc@host\",direction=\"b_to_a\",kind=\"rtp\"} 50",
            "sluice_call_bytes{call_id=\"x%y/z\",direction=\"a_to_b\",kind=\"rtcp\"} 172",
            "sluice_call_last_packet_age_seconds{call_id=\"abc@host\"} 0.25",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in\n{text}"
            );
        }
        let r = get(&Api::default(), &source, "/metrics");
        assert_eq!((r.status, r.content_type), (200, OPENMETRICS));
    }

    #[test]
    fn metrics_are_bounded_to_the_busiest_calls() {
        let source = Fake {
            calls: (0..50)
                .map(|i| report(&format!("call-{i:02}"), i))
                .collect(),
            ended: Vec::new(),
        };
        let text = render_metrics(&source, NOW, 3).expect("metrics");
        assert!(
            text.lines().any(|l| l == "sluice_call_series_truncated 1"),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l == "sluice_active_calls 50"),
            "{text}"
        );
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("sluice_call_age_seconds{"))
            .collect();
        assert_eq!(series.len(), 3, "{text}");
        for busy in ["call-49", "call-48", "call-47"] {
            assert!(
                series.iter().any(|l| l.contains(&format!("\"{busy}\""))),
                "{busy} in {series:?}"
            );
        }
        let packets = text
            .lines()
            .filter(|l| l.starts_with("sluice_call_packets{"))
            .count();
        assert_eq!(packets, 3 * 4);
        let none = render_metrics(&source, NOW, 0).expect("metrics");
        assert!(!none.contains("call_id="));
        assert!(none.lines().any(|l| l == "sluice_call_series_truncated 1"));
    }

    #[test]
    fn metrics_escape_label_values() {
        let source = Fake {
            calls: vec![report("a\"b\nc\\d} 1\nevil 2", 1)],
            ended: Vec::new(),
        };
        let text = render_metrics(&source, NOW, 10).expect("metrics");
        assert!(
            text.contains(r#"call_id="a\"b\nc\\d} 1\nevil 2""#),
            "{text}"
        );
        assert!(!text.lines().any(|l| l.starts_with("evil")), "{text}");
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("sluice_"), "stray line `{line}`");
        }
    }

    struct NullForwarder;

    impl sluice_dataplane::Forwarder for NullForwarder {
        fn kind(&self) -> sluice_dataplane::BackendKind {
            sluice_dataplane::BackendKind::Sockets
        }
        fn install(
            &mut self,
            _rule: &sluice_dataplane::StreamRule,
        ) -> Result<sluice_dataplane::StreamId, sluice_dataplane::DataplaneError> {
            unimplemented!("no streams in these tests")
        }
        fn update(
            &mut self,
            _id: sluice_dataplane::StreamId,
            _rule: &sluice_dataplane::StreamRule,
        ) -> Result<(), sluice_dataplane::DataplaneError> {
            unimplemented!("no streams in these tests")
        }
        fn remove(
            &mut self,
            _id: sluice_dataplane::StreamId,
        ) -> Result<sluice_dataplane::StreamCounters, sluice_dataplane::DataplaneError> {
            unimplemented!("no streams in these tests")
        }
        fn stream_counters(
            &self,
            _id: sluice_dataplane::StreamId,
        ) -> Result<sluice_dataplane::StreamCounters, sluice_dataplane::DataplaneError> {
            unimplemented!("no streams in these tests")
        }
        fn latched_peer(
            &self,
            _id: sluice_dataplane::StreamId,
        ) -> Result<Option<std::net::SocketAddrV4>, sluice_dataplane::DataplaneError> {
            Ok(None)
        }
        fn counters(
            &self,
        ) -> Result<sluice_dataplane::CounterSnapshot, sluice_dataplane::DataplaneError> {
            Ok(sluice_dataplane::CounterSnapshot::from_fn(|c| {
                u64::from(c == sluice_dataplane::Counter::Tx) * 42
            }))
        }
    }

    #[test]
    fn the_session_manager_is_a_call_source() {
        use crate::session::manager::{RelayInterface, SessionConfig};
        let config = SessionConfig {
            interfaces: vec![RelayInterface {
                name: "pub".into(),
                addr: Ipv4Addr::new(203, 0, 113, 1),
                advertised: Ipv4Addr::new(203, 0, 113, 1),
                ports: 30000..=30099,
            }],
            timeouts: Default::default(),
        };
        let manager = SessionManager::new(config, Box::new(NullForwarder)).expect("manager");
        let source = Mutex::new(manager);
        assert_eq!(source.backend(), "sockets");
        assert!(source.calls(NOW).is_empty());
        assert_eq!(source.call(NOW, "nope").expect("no error"), None);
        assert!(source.ended(10).is_empty());
        let counters = source.relay_counters().expect("counters");
        assert!(counters.contains(&("tx", 42)));
        let text = render_metrics(&source, NOW, 10).expect("metrics");
        assert!(
            text.lines()
                .any(|l| l == "sluice_relay_packets_total{counter=\"tx\"} 42"),
            "{text}"
        );
        let r = get(&Api::default(), &source, "/calls/nope");
        assert_eq!(r.status, 404);
    }

    /// One raw HTTP exchange with the server; returns the status and the body.
    fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        stream.write_all(request).expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("read");
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    fn start(token: Option<&str>) -> ApiServer {
        let config = ApiConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            token: token.map(str::to_owned),
            ..ApiConfig::default()
        };
        ApiServer::start(&config, Arc::new(fake()), || NOW).expect("start")
    }

    #[test]
    fn serves_over_a_real_socket() {
        let server = start(None);
        let addr = server.local_addr();
        assert!(addr.ip().is_loopback() && addr.port() != 0);
        let (status, body) = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        let (status, body) = exchange(addr, b"GET /calls/abc%40host HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, 200);
        let value: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(value["call_id"], "abc@host");
        let (status, _) = exchange(
            addr,
            b"DELETE /calls HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        );
        assert_eq!(status, 405);
        let (status, _) = exchange(addr, b"GET /calls/\xff\xfe HTTP/1.1\r\n\r\n");
        assert_eq!(status, 400);
        let (status, _) = exchange(addr, b"garbage\r\n\r\n");
        assert_eq!(status, 400);
        let mut huge = b"GET /calls/".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 100_000));
        let (status, _) = exchange(addr, &huge);
        assert_eq!(status, 431);
        let mut many = b"GET /healthz HTTP/1.1\r\n".to_vec();
        for i in 0..(MAX_HEADERS + 1) {
            many.extend(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(exchange(addr, &many).0, 431);
        // Still serving after all that.
        assert_eq!(exchange(addr, b"GET /metrics HTTP/1.0\r\n\r\n").0, 200);
        drop(server);
        assert!(TcpStream::connect(addr).is_err(), "stopped listening");
    }

    #[test]
    fn a_token_is_enforced_over_a_real_socket() {
        let server = start(Some("s3cret"));
        let addr = server.local_addr();
        assert_eq!(exchange(addr, b"GET /calls HTTP/1.1\r\n\r\n").0, 401);
        assert_eq!(
            exchange(
                addr,
                b"GET /calls HTTP/1.1\r\nAuthorization: Bearer nope\r\n\r\n"
            )
            .0,
            401
        );
        let (status, body) = exchange(
            addr,
            b"GET /calls HTTP/1.1\r\nauthorization: Bearer s3cret\r\n\r\n",
        );
        assert_eq!(status, 200, "{body}");
        drop(server);
    }

    #[test]
    fn an_idle_connection_does_not_hold_up_stopping() {
        // As a browser's preconnection: connected, nothing sent.
        let server = start(None);
        let idle = TcpStream::connect(server.local_addr()).expect("connect");
        std::thread::sleep(Duration::from_millis(100));
        let stopping = Instant::now();
        drop(server);
        assert!(
            stopping.elapsed() < REQUEST_TIMEOUT / 2,
            "stopping took {:?}",
            stopping.elapsed()
        );
        drop(idle);
    }

    #[test]
    fn the_noc_page_is_served_without_the_token() {
        let source = fake();
        let api = with_token("s3cret");
        for target in ["/", "/index.html", "/?refresh=1"] {
            let r = get(&api, &source, target);
            assert_eq!(
                (r.status, r.content_type),
                (200, noc::CONTENT_TYPE),
                "{target}"
            );
            assert!(r.body_text().contains("<title>Sluice NOC"), "{target}");
            let policy = r
                .headers
                .iter()
                .find(|(name, _)| *name == "Content-Security-Policy")
                .map(|(_, value)| value.as_str())
                .unwrap_or_default();
            assert!(policy.contains("script-src 'sha256-"), "{policy}");
        }
        // The data behind it still needs the token, and so does any other path.
        assert_eq!(get(&api, &source, "/calls").status, 401);
        assert_eq!(get(&api, &source, "/index.htm").status, 401);
        let mut post = ApiRequest::get("/");
        post.method = "POST".into();
        let r = api.handle(&post, &source, NOW);
        assert_eq!(r.status, 405);
        assert!(r.headers.contains(&("Allow", "GET".into())));
    }

    #[test]
    fn the_noc_page_over_a_real_socket() {
        let server = start(Some("s3cret"));
        let mut stream = TcpStream::connect(server.local_addr()).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("read");
        let answer = String::from_utf8(answer).expect("UTF-8");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        for line in [
            "Content-Type: text/html; charset=utf-8",
            "Cache-Control: no-store",
            "X-Content-Type-Options: nosniff",
            &format!("Content-Length: {}", noc::PAGE.len()),
            &format!(
                "Content-Security-Policy: {}",
                noc::content_security_policy(noc::PAGE)
            ),
        ] {
            assert!(head.lines().any(|l| l == line), "no `{line}` in\n{head}");
        }
        assert_eq!(body, noc::PAGE);
        drop(server);
    }
}
