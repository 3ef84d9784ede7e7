//! Small, lossless parsers for the parts of header values the proxy has to look inside: Via,
//! name-addr (From, To, Route, Record-Route) and SIP URIs.
//!
//! rsip 0.4's typed parsers drop or mangle parts of these (IPv6 sent-by, URI user parameters,
//! display names in Route, `tel:` plus signs), so everything the proxy rewrites or compares goes
//! through these instead; values are kept as text and printed back in the same order.

use std::fmt;

use thiserror::Error;

/// A header value that does not match the grammar the proxy needs.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed {what}: {detail}")]
pub struct GrammarError {
    /// What was being parsed (`Via`, `name-addr`, `SIP URI`).
    pub what: &'static str,
    /// What was wrong.
    pub detail: &'static str,
}

fn err(what: &'static str, detail: &'static str) -> GrammarError {
    GrammarError { what, detail }
}

/// RFC 3261 `token` character.
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// True when `s` is a non-empty RFC 3261 `token`.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

fn is_ws(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn trim_ws(s: &str) -> &str {
    s.trim_matches(is_ws)
}

/// Splits `s` at every `sep` that is outside a quoted string and outside `<...>`.
pub fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    let mut angle = 0usize;
    for (i, c) in s.char_indices() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '<' => angle += 1,
            '>' => angle = angle.saturating_sub(1),
            c if c == sep && angle == 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// A generic `;name[=value]` parameter, kept as written (name case preserved).
pub type Param = (String, Option<String>);

/// Parses `;a=b;c` style parameters (the text after the first `;`).
fn parse_params(pieces: &[&str], what: &'static str) -> Result<Vec<Param>, GrammarError> {
    let mut params = Vec::with_capacity(pieces.len());
    for piece in pieces {
        let piece = trim_ws(piece);
        let (name, value) = match piece.split_once('=') {
            Some((n, v)) => (trim_ws(n), Some(trim_ws(v))),
            None => (piece, None),
        };
        if !is_token(name) {
            return Err(err(what, "bad parameter name"));
        }
        if let Some(v) = value {
            let quoted = v.len() >= 2 && v.starts_with('"') && v.ends_with('"');
            if v.is_empty() || (!quoted && v.chars().any(|c| is_ws(c) || c == '"')) {
                return Err(err(what, "bad parameter value"));
            }
        }
        params.push((name.to_owned(), value.map(str::to_owned)));
    }
    Ok(params)
}

fn write_params(f: &mut fmt::Formatter<'_>, params: &[Param]) -> fmt::Result {
    for (name, value) in params {
        match value {
            Some(v) => write!(f, ";{name}={v}")?,
            None => write!(f, ";{name}")?,
        }
    }
    Ok(())
}

fn find_param<'a>(params: &'a [Param], name: &str) -> Option<&'a Option<String>> {
    params
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Parses `host[:port]`, host being a hostname, IPv4 address or bracketed IPv6 reference.
/// Returns the host as written (brackets kept) and the port.
fn parse_hostport(s: &str, what: &'static str) -> Result<(String, Option<u16>), GrammarError> {
    let (host, rest) = if s.starts_with('[') {
        let end = s
            .find(']')
            .ok_or(err(what, "unterminated IPv6 reference"))?;
        let inner = &s[1..end];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(err(what, "bad IPv6 reference"));
        }
        (&s[..=end], &s[end + 1..])
    } else {
        match s.find(':') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        }
    };
    let host = trim_ws(host);
    if host.is_empty() {
        return Err(err(what, "empty host"));
    }
    if !host.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return Err(err(what, "bad host"));
    }
    let rest = trim_ws(rest);
    let port = if rest.is_empty() {
        None
    } else {
        let digits = trim_ws(rest.strip_prefix(':').ok_or(err(what, "junk after host"))?);
        Some(parse_port(digits).ok_or(err(what, "bad port"))?)
    };
    Ok((host.to_owned(), port))
}

fn parse_port(digits: &str) -> Option<u16> {
    if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse::<u32>()
        .ok()
        .and_then(|p| u16::try_from(p).ok())
}

/// Hosts compare case-insensitively; IPv6 references compare as addresses.
pub fn same_host(a: &str, b: &str) -> bool {
    let strip = |h: &str| h.trim_start_matches('[').trim_end_matches(']').to_owned();
    let (sa, sb) = (strip(a), strip(b));
    match (
        sa.parse::<std::net::IpAddr>(),
        sb.parse::<std::net::IpAddr>(),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => sa.eq_ignore_ascii_case(&sb),
    }
}

/// One Via header field value (RFC 3261 §20.42), e.g.
/// `SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776;rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Protocol name and version, normally `SIP/2.0` (whitespace around `/` removed).
    pub protocol: String,
    /// Transport, e.g. `UDP`, `TCP`, `TLS`, `WSS` (as written).
    pub transport: String,
    /// sent-by host as written (IPv6 keeps its brackets).
    pub host: String,
    /// sent-by port, if written.
    pub port: Option<u16>,
    /// Parameters in order, as written.
    pub params: Vec<Param>,
}

impl Via {
    /// Parses one Via value (no commas).
    pub fn parse(s: &str) -> Result<Self, GrammarError> {
        const W: &str = "Via";
        let pieces = split_outside_quotes(s, ';');
        let head = trim_ws(pieces.first().copied().unwrap_or(""));
        // sent-protocol = name SLASH version SLASH transport, SLASH allows LWS around it.
        let mut parts = head.splitn(3, '/');
        let name = trim_ws(parts.next().unwrap_or(""));
        let version = trim_ws(parts.next().ok_or(err(W, "bad sent-protocol"))?);
        let rest = trim_ws(parts.next().ok_or(err(W, "bad sent-protocol"))?);
        let split_at = rest.find(is_ws).ok_or(err(W, "missing sent-by"))?;
        let transport = &rest[..split_at];
        let sent_by = trim_ws(&rest[split_at..]);
        if !is_token(name) || !is_token(version) || !is_token(transport) {
            return Err(err(W, "bad sent-protocol"));
        }
        let (host, port) = parse_hostport(sent_by, W)?;
        let params = parse_params(&pieces[1..], W)?;
        Ok(Self {
            protocol: format!("{name}/{version}"),
            transport: transport.to_owned(),
            host,
            port,
            params,
        })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&str> {
        self.param("branch").flatten()
    }

    /// A parameter: `None` when absent, `Some(None)` when present without value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name).map(Option::as_deref)
    }

    /// Sets (replacing in place, or appending) a parameter.
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        match self
            .params
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value,
            None => self.params.push((name.to_owned(), value)),
        }
    }

    /// The port a response goes to by default (RFC 3261 §18.2.2): the sent-by port, or 5060 /
    /// 5061 for TLS.
    pub fn port_or_default(&self) -> u16 {
        self.port
            .unwrap_or(if self.transport.eq_ignore_ascii_case("TLS") {
                5061
            } else {
                5060
            })
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.protocol, self.transport, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write_params(f, &self.params)
    }
}

/// A `name-addr` or `addr-spec` with header parameters (From, To, Contact, Route,
/// Record-Route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name as written (quotes kept), if any.
    pub display: Option<String>,
    /// The URI, as written, without the angle brackets.
    pub uri: String,
    /// Whether the URI was in angle brackets.
    pub angle: bool,
    /// Header parameters (after the URI), in order.
    pub params: Vec<Param>,
}

impl NameAddr {
    /// Parses one value (no top-level commas).
    pub fn parse(s: &str) -> Result<Self, GrammarError> {
        const W: &str = "name-addr";
        let s = trim_ws(s);
        let (display, after_display) = if let Some(rest) = s.strip_prefix('"') {
            let mut escaped = false;
            let mut end = None;
            for (i, c) in rest.char_indices() {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    end = Some(i);
                    break;
                }
            }
            let end = end.ok_or(err(W, "unterminated quoted string"))?;
            (
                Some(format!("\"{}\"", &rest[..end])),
                trim_ws(&rest[end + 1..]),
            )
        } else {
            match s.find('<') {
                Some(i) => {
                    let d = trim_ws(&s[..i]);
                    if !d.split(is_ws).filter(|w| !w.is_empty()).all(is_token) {
                        return Err(err(W, "bad display name"));
                    }
                    ((!d.is_empty()).then(|| d.to_owned()), &s[i..])
                }
                None => (None, s),
            }
        };
        if let Some(inner) = after_display.strip_prefix('<') {
            let end = inner.find('>').ok_or(err(W, "missing '>'"))?;
            let uri = &inner[..end];
            check_uri_text(uri, W)?;
            let rest = trim_ws(&inner[end + 1..]);
            let params = if rest.is_empty() {
                Vec::new()
            } else {
                let pieces = split_outside_quotes(
                    rest.strip_prefix(';').ok_or(err(W, "junk after '>'"))?,
                    ';',
                );
                parse_params(&pieces, W)?
            };
            Ok(Self {
                display,
                uri: uri.to_owned(),
                angle: true,
                params,
            })
        } else {
            if display.is_some() {
                return Err(err(W, "display name without '<'"));
            }
            let pieces = split_outside_quotes(after_display, ';');
            let uri = trim_ws(pieces.first().copied().unwrap_or(""));
            check_uri_text(uri, W)?;
            Ok(Self {
                display: None,
                uri: uri.to_owned(),
                angle: false,
                params: parse_params(&pieces[1..], W)?,
            })
        }
    }

    /// A header parameter: `None` when absent, `Some(None)` when present without value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name).map(Option::as_deref)
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        self.param("tag").flatten()
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.display {
            write!(f, "{d} ")?;
        }
        if self.angle {
            write!(f, "<{}>", self.uri)?;
        } else {
            f.write_str(&self.uri)?;
        }
        write_params(f, &self.params)
    }
}

/// A URI must have a scheme and consist of visible ASCII without `<>"` and whitespace.
pub fn check_uri_text(uri: &str, what: &'static str) -> Result<(), GrammarError> {
    let (scheme, rest) = uri.split_once(':').ok_or(err(what, "URI without scheme"))?;
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.');
    if !scheme_ok || rest.is_empty() {
        return Err(err(what, "bad URI scheme"));
    }
    if !uri
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"<>\"".contains(&b))
    {
        return Err(err(what, "bad character in URI"));
    }
    if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
        SipUri::parse(uri)?;
    }
    Ok(())
}

/// The parts of a `sip:`/`sips:` URI a proxy routes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sip` or `sips` (lower-cased).
    pub scheme: String,
    /// userinfo (user and password) as written, if any.
    pub userinfo: Option<String>,
    /// Host as written (IPv6 keeps its brackets).
    pub host: String,
    /// Port, if written.
    pub port: Option<u16>,
    /// URI parameters, in order.
    pub params: Vec<Param>,
    /// The `?headers` part, as written, if any.
    pub headers: Option<String>,
}

impl SipUri {
    /// Parses a `sip:` or `sips:` URI.
    pub fn parse(s: &str) -> Result<Self, GrammarError> {
        const W: &str = "SIP URI";
        let (scheme, rest) = s.split_once(':').ok_or(err(W, "no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "sip" && scheme != "sips" {
            return Err(err(W, "not sip or sips"));
        }
        let (userinfo, rest) = match rest.split_once('@') {
            Some((u, r)) if !u.is_empty() => (Some(u.to_owned()), r),
            Some(_) => return Err(err(W, "empty userinfo")),
            None => (None, rest),
        };
        let (rest, headers) = match rest.split_once('?') {
            Some((r, h)) => (r, Some(h.to_owned())),
            None => (rest, None),
        };
        let pieces: Vec<&str> = rest.split(';').collect();
        let (host, port) = parse_hostport(pieces.first().copied().unwrap_or(""), W)?;
        let mut params = Vec::new();
        for piece in &pieces[1..] {
            let (name, value) = match piece.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (*piece, None),
            };
            if name.is_empty() {
                return Err(err(W, "empty parameter"));
            }
            params.push((name.to_owned(), value));
        }
        Ok(Self {
            scheme,
            userinfo,
            host,
            port,
            params,
            headers,
        })
    }

    /// A URI parameter: `None` when absent, `Some(None)` when present without value.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name).map(Option::as_deref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_lws_and_ipv6() {
        let v = Via::parse("SIP / 2.0 / UDP [2001:db8::1]:05061 ;branch=z9hG4bKa; rport").unwrap();
        assert_eq!(v.protocol, "SIP/2.0");
        assert_eq!(v.host, "[2001:db8::1]");
        assert_eq!(v.port, Some(5061));
        assert_eq!(v.branch(), Some("z9hG4bKa"));
        assert_eq!(v.param("rport"), Some(None));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP [2001:db8::1]:5061;branch=z9hG4bKa;rport"
        );
        assert!(Via::parse("SIP/2.0/UDP").is_err());
        assert!(Via::parse("SIP/2.0/UDP host:99999").is_err());
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse("\"Bob, \\\"Jr\\\"\" <sip:bob@b.com;lr>;tag=1;foo").unwrap();
        assert_eq!(n.display.as_deref(), Some("\"Bob, \\\"Jr\\\"\""));
        assert_eq!(n.uri, "sip:bob@b.com;lr");
        assert_eq!(n.tag(), Some("1"));
        let a = NameAddr::parse("sip:bob@b.com;tag=abc").unwrap();
        assert_eq!(a.uri, "sip:bob@b.com");
        assert_eq!(a.tag(), Some("abc"));
        assert_eq!(a.to_string(), "sip:bob@b.com;tag=abc");
        assert!(NameAddr::parse("<sip:bob@b.com").is_err());
        assert!(NameAddr::parse("nonsense").is_err());
    }

    #[test]
    fn sip_uri_parts() {
        let u = SipUri::parse("sip:user;par=u%40example.net@example.com:5070;lr;transport=tcp?x=y")
            .unwrap();
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(u.headers.as_deref(), Some("x=y"));
        assert!(same_host("[2001:DB8::1]", "2001:db8:0::1"));
        assert!(same_host("Example.COM", "example.com"));
    }

    #[test]
    fn commas_split_outside_quotes_and_angles() {
        assert_eq!(
            split_outside_quotes("\"a,b\" <sip:x,y@h>, <sip:z>", ','),
            vec!["\"a,b\" <sip:x,y@h>", " <sip:z>"]
        );
    }
}
