//! Pure proxy helpers over [`rsip::Headers`] and this module's [`Request`] / [`Response`]
//! (RFC 3261 §16, RFC 3581). None of them does I/O; randomness comes in as `secret`.

use std::net::{IpAddr, SocketAddr};

use rsip::headers::UntypedHeader;
use rsip::{Header, Headers};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::grammar::{same_host, GrammarError, NameAddr, SipUri, Via};
use super::{make_header, parse_cseq, parse_max_forwards, Request, Response};

/// The RFC 3261 branch magic cookie.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// The Max-Forwards value a proxy adds when a request has none (RFC 3261 §16.6 item 3).
pub const DEFAULT_MAX_FORWARDS: u8 = 70;

/// Why a proxy helper could not do its job.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProxyError {
    /// The message has no Via.
    #[error("no Via header field")]
    NoVia,
    /// A Via value does not parse.
    #[error(transparent)]
    BadVia(#[from] GrammarError),
    /// The top Via of a response is not ours: the response is not for us, drop it.
    #[error("top Via is not ours")]
    NotOurVia,
    /// Max-Forwards is 0: answer `483 Too Many Hops`.
    #[error("Max-Forwards reached zero")]
    TooManyHops,
    /// Max-Forwards is not a number in 0..=255.
    #[error("bad Max-Forwards")]
    BadMaxForwards,
    /// A Route value does not parse.
    #[error("bad Route header field")]
    BadRoute,
}

/// One of our listening addresses: what we put in Via and Record-Route, and what we recognise
/// as ours in Via, Route and the Request-URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAddr {
    /// Transport as it appears in Via: `UDP`, `TCP`, `TLS`, ...
    pub transport: String,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl LocalAddr {
    /// A local address.
    pub fn new(transport: &str, host: &str, port: u16) -> Self {
        Self {
            transport: transport.to_ascii_uppercase(),
            host: host.to_owned(),
            port,
        }
    }

    fn host_text(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    fn is(&self, host: &str, port: u16) -> bool {
        same_host(host, &self.host) && port == self.port
    }

    /// Our Record-Route / Route URI: `sip:host:port;transport=tcp;lr` (no transport for UDP).
    pub fn route_uri(&self) -> String {
        let transport = if self.transport.eq_ignore_ascii_case("UDP") {
            String::new()
        } else {
            format!(";transport={}", self.transport.to_ascii_lowercase())
        };
        format!("sip:{}:{}{transport};lr", self.host_text(), self.port)
    }
}

fn with_vec(headers: &mut Headers, f: impl FnOnce(&mut Vec<Header>)) {
    let mut v: Vec<Header> = std::mem::take(headers).into();
    f(&mut v);
    *headers = v.into();
}

fn via_values(headers: &Headers) -> impl Iterator<Item = &str> {
    headers.iter().filter_map(|h| match h {
        Header::Via(v) => Some(v.value()),
        _ => None,
    })
}

fn is_ours_uri(uri: &SipUri, ours: &[LocalAddr]) -> bool {
    let default = if uri.scheme == "sips" { 5061 } else { 5060 };
    ours.iter()
        .any(|l| l.is(&uri.host, uri.port.unwrap_or(default)))
}

/// The top Via, parsed.
pub fn top_via(headers: &Headers) -> Result<Via, ProxyError> {
    let v = via_values(headers).next().ok_or(ProxyError::NoVia)?;
    Ok(Via::parse(v)?)
}

/// The branch of the top Via, if any.
pub fn top_via_branch(headers: &Headers) -> Option<String> {
    top_via(headers).ok()?.branch().map(str::to_owned)
}

/// RFC 3261 §18.2.1 and RFC 3581 §4 on a received request: adds `received=<source IP>` to the
/// top Via when its sent-by host differs from the source (or when `rport` is present), and fills
/// an `rport` parameter with the source port. Returns whether the top Via changed.
pub fn apply_received_rport(headers: &mut Headers, source: SocketAddr) -> Result<bool, ProxyError> {
    let mut via = top_via(headers)?;
    let has_rport = via.param("rport").is_some();
    let host = via.host.trim_start_matches('[').trim_end_matches(']');
    let same = host.parse::<IpAddr>().is_ok_and(|ip| ip == source.ip());
    let mut changed = false;
    if !same || has_rport {
        via.set_param("received", Some(source.ip().to_string()));
        changed = true;
    }
    if has_rport {
        via.set_param("rport", Some(source.port().to_string()));
        changed = true;
    }
    if changed {
        replace_top_via(headers, &via);
    }
    Ok(changed)
}

fn replace_top_via(headers: &mut Headers, via: &Via) {
    if let Some(slot) = headers.iter_mut().find(|h| matches!(h, Header::Via(_))) {
        *slot = Header::Via(rsip::headers::Via::new(via.to_string()));
    }
}

/// Where a response to this request goes (RFC 3261 §18.2.2, RFC 3581 §4): `received` (else
/// the sent-by host) and `rport` (else the sent-by port). `None` when that is not an IP
/// address (a name to resolve, which is the caller's job).
pub fn response_target(headers: &Headers) -> Option<SocketAddr> {
    let via = top_via(headers).ok()?;
    let host = via
        .param("received")
        .flatten()
        .map(str::to_owned)
        .unwrap_or_else(|| {
            via.host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        });
    let port = via
        .param("rport")
        .flatten()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| via.port_or_default());
    Some(SocketAddr::new(host.parse().ok()?, port))
}

fn hex8(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn keyed_hash(secret: &[u8], parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update((secret.len() as u64).to_be_bytes());
    h.update(secret);
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    hex8(&h.finalize())
}

fn tag_of(headers: &Headers, to: bool) -> String {
    headers
        .iter()
        .find_map(|h| match h {
            Header::To(v) if to => Some(v.value()),
            Header::From(v) if !to => Some(v.value()),
            _ => None,
        })
        .and_then(|v| NameAddr::parse(v).ok())
        .and_then(|n| n.tag().map(str::to_owned))
        .unwrap_or_default()
}

fn call_id(headers: &Headers) -> &str {
    headers
        .iter()
        .find_map(|h| match h {
            Header::CallId(v) => Some(v.value()),
            _ => None,
        })
        .unwrap_or_default()
}

fn cseq_number(headers: &Headers) -> String {
    headers
        .iter()
        .find_map(|h| match h {
            Header::CSeq(v) => parse_cseq(v.value()),
            _ => None,
        })
        .map(|(n, _)| n.to_string())
        .unwrap_or_default()
}

/// The loop-detection half of our branch (RFC 3261 §16.6 item 8): a keyed hash of the fields a
/// looping request keeps (Request-URI, From/To tags, Call-ID, CSeq number, Proxy-Require,
/// Proxy-Authorization, Route), computed on the request as received.
fn loop_part(req: &Request, secret: &[u8]) -> String {
    let (from_tag, to_tag) = (tag_of(&req.headers, false), tag_of(&req.headers, true));
    let cseq = cseq_number(&req.headers);
    let mut parts = vec![
        "loop",
        req.uri.as_str(),
        &from_tag,
        &to_tag,
        call_id(&req.headers),
        &cseq,
    ];
    for h in req.headers.iter() {
        match h {
            Header::ProxyRequire(v) => parts.push(v.value()),
            Header::ProxyAuthorization(v) => parts.push(v.value()),
            Header::Route(v) => parts.push(v.value()),
            _ => {}
        }
    }
    keyed_hash(secret, &parts)
}

/// The branch for the Via we add when forwarding `req` (computed on the request as received).
///
/// `z9hG4bK` + a transaction part + `.` + a loop-detection part, both keyed hashes under
/// `secret`. The transaction part hashes the incoming top Via's branch and sent-by when that
/// branch has the magic cookie, else the RFC 2543 fields (Request-URI, tags, Call-ID, CSeq
/// number, top Via) as RFC 3261 §16.11 asks; the method is left out so CANCEL and ACK for a
/// non-2xx map to the INVITE's branch. The same request always gives the same branch, so a
/// stateless proxy forwards retransmissions on the same branch.
pub fn compute_branch(req: &Request, secret: &[u8]) -> String {
    let top = via_values(&req.headers).next().unwrap_or_default();
    let parsed = Via::parse(top).ok();
    let rfc3261 = parsed
        .as_ref()
        .and_then(|v| v.branch())
        .filter(|b| b.starts_with(MAGIC_COOKIE));
    let tx = match (rfc3261, parsed.as_ref()) {
        (Some(branch), Some(via)) => {
            let port = via.port_or_default().to_string();
            keyed_hash(
                secret,
                &["3261", branch, &via.host.to_ascii_lowercase(), &port],
            )
        }
        _ => {
            let (from_tag, to_tag) = (tag_of(&req.headers, false), tag_of(&req.headers, true));
            let cseq = cseq_number(&req.headers);
            let call = call_id(&req.headers);
            keyed_hash(
                secret,
                &["2543", &req.uri, &from_tag, &to_tag, call, &cseq, top],
            )
        }
    };
    format!("{MAGIC_COOKIE}{tx}.{}", loop_part(req, secret))
}

/// RFC 3261 §16.3 item 4: true when a Via carries one of our sent-by addresses with the branch
/// we would compute for this request now (a loop, answer `482 Loop Detected`); a Via of ours
/// with another branch is a spiral and fine.
pub fn is_loop(req: &Request, ours: &[LocalAddr], secret: &[u8]) -> bool {
    let expected = loop_part(req, secret);
    via_values(&req.headers)
        .filter_map(|v| Via::parse(v).ok())
        .filter(|v| ours.iter().any(|l| l.is(&v.host, v.port_or_default())))
        .filter_map(|v| v.branch().map(str::to_owned))
        .any(|b| {
            b.strip_prefix(MAGIC_COOKIE)
                .and_then(|rest| rest.split_once('.'))
                .is_some_and(|(_, lp)| lp == expected)
        })
}

/// Adds our Via on top: `SIP/2.0/<transport> <host>:<port>;branch=<branch>;rport`.
pub fn push_via(headers: &mut Headers, local: &LocalAddr, branch: &str) {
    let value = format!(
        "SIP/2.0/{} {}:{};branch={branch};rport",
        local.transport,
        local.host_text(),
        local.port
    );
    with_vec(headers, |v| {
        let at = v
            .iter()
            .position(|h| matches!(h, Header::Via(_)))
            .unwrap_or(0);
        v.insert(at, Header::Via(rsip::headers::Via::new(value)));
    });
}

/// RFC 3261 §16.7 item 3 on a response: removes the top Via, which must be ours (else
/// [`ProxyError::NotOurVia`]: drop the response). Returns how many Vias remain; 0 means the
/// response was for us and is not forwarded.
pub fn pop_own_via(headers: &mut Headers, ours: &[LocalAddr]) -> Result<usize, ProxyError> {
    let via = top_via(headers)?;
    if !ours.iter().any(|l| l.is(&via.host, via.port_or_default())) {
        return Err(ProxyError::NotOurVia);
    }
    let mut remaining = 0;
    with_vec(headers, |v| {
        if let Some(at) = v.iter().position(|h| matches!(h, Header::Via(_))) {
            v.remove(at);
        }
        remaining = v.iter().filter(|h| matches!(h, Header::Via(_))).count();
    });
    Ok(remaining)
}

/// RFC 3261 §16.3 item 3 and §16.6 item 3: decrements Max-Forwards (adding `70` when absent)
/// and returns the new value; [`ProxyError::TooManyHops`] when it is already 0 (answer `483`).
pub fn decrement_max_forwards(headers: &mut Headers) -> Result<u8, ProxyError> {
    let current = headers.iter().find_map(|h| match h {
        Header::MaxForwards(v) => Some(v.value().to_owned()),
        _ => None,
    });
    let Some(current) = current else {
        headers.push(make_header(
            "Max-Forwards",
            &DEFAULT_MAX_FORWARDS.to_string(),
        ));
        return Ok(DEFAULT_MAX_FORWARDS);
    };
    let value = parse_max_forwards(&current).ok_or(ProxyError::BadMaxForwards)?;
    let next = value.checked_sub(1).ok_or(ProxyError::TooManyHops)?;
    for h in headers.iter_mut() {
        if let Header::MaxForwards(v) = h {
            v.replace(next.to_string());
        }
    }
    Ok(next)
}

/// True when Max-Forwards is present and 0 (the request must not be forwarded: `483`).
pub fn too_many_hops(headers: &Headers) -> bool {
    headers.iter().any(|h| match h {
        Header::MaxForwards(v) => parse_max_forwards(v.value()) == Some(0),
        _ => false,
    })
}

/// RFC 3261 §16.6 item 4: adds our Record-Route on top of the Record-Route list. When the
/// request crosses interfaces (`outbound != inbound`), adds two entries (RFC 5658): the
/// outbound one on top (used by the callee's side), the inbound one below it; both with `lr`.
pub fn record_route(headers: &mut Headers, inbound: &LocalAddr, outbound: &LocalAddr) {
    let mut entries = Vec::new();
    if outbound != inbound {
        entries.push(outbound.route_uri());
    }
    entries.push(inbound.route_uri());
    with_vec(headers, |v| {
        let at = v
            .iter()
            .position(|h| matches!(h, Header::RecordRoute(_)))
            .or_else(|| {
                v.iter()
                    .rposition(|h| matches!(h, Header::Via(_)))
                    .map(|i| i + 1)
            })
            .unwrap_or(0);
        for (i, uri) in entries.into_iter().enumerate() {
            v.insert(
                at + i,
                Header::RecordRoute(rsip::headers::RecordRoute::new(format!("<{uri}>"))),
            );
        }
    });
}

/// What [`preprocess_route`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePreprocess {
    /// The Request-URI was ours (the previous hop is a strict router) and was replaced by the
    /// last Route value, which was removed.
    pub strict_route_fixed: bool,
    /// How many of our own Route values were removed from the top.
    pub removed: usize,
}

fn route_uri(value: &str) -> Result<String, ProxyError> {
    Ok(NameAddr::parse(value)
        .map_err(|_| ProxyError::BadRoute)?
        .uri)
}

/// RFC 3261 §16.4 route information preprocessing:
///
/// 1. If the Request-URI is a URI we put in a Record-Route (ours, no user part) and there is a
///    Route set, the previous hop was a strict router: replace the Request-URI with the last
///    Route value and remove that value.
/// 2. Remove Route values that are ours from the top (two when we double-record-routed).
pub fn preprocess_route(
    req: &mut Request,
    ours: &[LocalAddr],
) -> Result<RoutePreprocess, ProxyError> {
    let mut out = RoutePreprocess::default();
    let ruri_ours =
        SipUri::parse(&req.uri).is_ok_and(|u| u.userinfo.is_none() && is_ours_uri(&u, ours));
    let last_route = req
        .headers
        .iter()
        .filter_map(|h| match h {
            Header::Route(v) => Some(v.value().to_owned()),
            _ => None,
        })
        .last();
    if let (true, Some(last)) = (ruri_ours, last_route) {
        req.uri = route_uri(&last)?;
        with_vec(&mut req.headers, |v| {
            if let Some(at) = v.iter().rposition(|h| matches!(h, Header::Route(_))) {
                v.remove(at);
            }
        });
        out.strict_route_fixed = true;
    }
    loop {
        let first = req.headers.iter().find_map(|h| match h {
            Header::Route(v) => Some(v.value().to_owned()),
            _ => None,
        });
        let Some(first) = first else { break };
        let uri = route_uri(&first)?;
        if !SipUri::parse(&uri).is_ok_and(|u| is_ours_uri(&u, ours)) {
            break;
        }
        with_vec(&mut req.headers, |v| {
            if let Some(at) = v.iter().position(|h| matches!(h, Header::Route(_))) {
                v.remove(at);
            }
        });
        out.removed += 1;
    }
    Ok(out)
}

/// True when the request is within a dialog (RFC 3261 §12.2: the To header has a tag).
pub fn is_in_dialog(headers: &Headers) -> bool {
    !tag_of(headers, true).is_empty()
}

/// A response to `req` (RFC 3261 §8.2.6): all Vias in order, From, To (with `to_tag` added when
/// given, the To has no tag and the status is not 100), Call-ID, CSeq, `Content-Length: 0`.
pub fn build_response(req: &Request, status: u16, reason: &str, to_tag: Option<&str>) -> Response {
    response_from_headers(&req.headers, status, reason, to_tag)
}

/// [`build_response`] from the request's headers alone (used for malformed requests).
pub(crate) fn response_from_headers(
    headers: &Headers,
    status: u16,
    reason: &str,
    to_tag: Option<&str>,
) -> Response {
    let mut out: Vec<Header> = Vec::new();
    out.extend(
        headers
            .iter()
            .filter(|h| matches!(h, Header::Via(_)))
            .cloned(),
    );
    for want in 0..4 {
        let found = headers.iter().find(|h| {
            matches!(
                (want, h),
                (0, Header::From(_))
                    | (1, Header::To(_))
                    | (2, Header::CallId(_))
                    | (3, Header::CSeq(_))
            )
        });
        let Some(h) = found else { continue };
        match (h, to_tag) {
            (Header::To(to), Some(tag))
                if status > 100
                    && !tag.is_empty()
                    && NameAddr::parse(to.value()).is_ok_and(|n| n.tag().is_none()) =>
            {
                out.push(Header::To(rsip::headers::To::new(format!(
                    "{};tag={tag}",
                    to.value()
                ))));
            }
            _ => out.push(h.clone()),
        }
    }
    out.push(make_header("Content-Length", "0"));
    Response {
        status,
        reason: reason.replace(['\r', '\n'], " "),
        headers: out.into(),
        body: Vec::new(),
    }
}
