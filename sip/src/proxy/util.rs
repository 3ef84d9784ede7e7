//! Header helpers, transport names, and the deterministic randomness the core derives from its
//! seed.

use std::net::{IpAddr, SocketAddr};

use rsip::{Header, Headers, Transport};
use sha2::{Digest, Sha256};

use crate::message::{expand_compact, header_name_value, make_header, NameAddr, SipUri};
use crate::registrar;

/// Values of every header called `name` (compact forms expanded, case-insensitive), in order.
pub(crate) fn values(headers: &Headers, name: &str) -> Vec<String> {
    headers
        .iter()
        .filter_map(|h| {
            let (n, v) = header_name_value(h);
            expand_compact(&n).eq_ignore_ascii_case(name).then_some(v)
        })
        .collect()
}

/// The first value of header `name`.
pub(crate) fn value(headers: &Headers, name: &str) -> Option<String> {
    values(headers, name).into_iter().next()
}

/// Removes every header called `name`.
pub(crate) fn remove(headers: &mut Headers, name: &str) {
    let kept: Vec<Header> = std::mem::take(headers)
        .into_iter()
        .filter(|h| {
            let (n, _) = header_name_value(h);
            !expand_compact(&n).eq_ignore_ascii_case(name)
        })
        .collect();
    *headers = kept.into();
}

/// The `realm` parameter of an `Authorization` / `Proxy-Authorization` value (any scheme),
/// unquoted; `None` when it has none.
pub(crate) fn credential_realm(value: &str) -> Option<String> {
    let params = value.trim_start().split_once(char::is_whitespace)?.1;
    crate::message::grammar::split_outside_quotes(params, ',')
        .into_iter()
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("realm"))
        .map(|(_, v)| {
            let v = v.trim();
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
                .to_owned()
        })
}

/// Removes the `Authorization` and `Proxy-Authorization` values whose realm `is_ours` accepts,
/// keeping those for other realms (RFC 3261 §22.3) and those that name none.
pub(crate) fn remove_credentials_for(headers: &mut Headers, is_ours: impl Fn(&str) -> bool) {
    let kept: Vec<Header> = std::mem::take(headers)
        .into_iter()
        .filter(|h| {
            let (n, v) = header_name_value(h);
            let is_credential = n.eq_ignore_ascii_case("Proxy-Authorization")
                || n.eq_ignore_ascii_case("Authorization");
            !(is_credential && credential_realm(&v).is_some_and(|r| is_ours(&r)))
        })
        .collect();
    *headers = kept.into();
}

/// Replaces every header called `name` by one with `value` (at the first one's place, else at the
/// end).
pub(crate) fn set(headers: &mut Headers, name: &str, value: &str) {
    let mut out: Vec<Header> = Vec::new();
    let mut done = false;
    for h in std::mem::take(headers) {
        let (n, _) = header_name_value(&h);
        if expand_compact(&n).eq_ignore_ascii_case(name) {
            if !done {
                out.push(make_header(name, value));
                done = true;
            }
        } else {
            out.push(h);
        }
    }
    if !done {
        out.push(make_header(name, value));
    }
    *headers = out.into();
}

/// Replaces a message's body and its Content-Length.
pub(crate) fn set_body(headers: &mut Headers, body: &mut Vec<u8>, new: Vec<u8>) {
    set(headers, "Content-Length", &new.len().to_string());
    *body = new;
}

/// Whether the message carries an SDP body.
pub(crate) fn has_sdp(headers: &Headers, body: &[u8]) -> bool {
    if body.iter().all(u8::is_ascii_whitespace) {
        return false;
    }
    value(headers, "Content-Type").is_none_or(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"))
    })
}

/// The From (`to == false`) or To header, parsed.
pub(crate) fn party(headers: &Headers, to: bool) -> Option<NameAddr> {
    let v = value(headers, if to { "To" } else { "From" })?;
    NameAddr::parse(&v).ok()
}

/// The tag of the From or To header, if any.
pub(crate) fn tag(headers: &Headers, to: bool) -> Option<String> {
    party(headers, to).and_then(|n| n.tag().map(str::to_owned))
}

/// `(user, host)` of a SIP URI (the user without any password), if it parses.
pub(crate) fn user_host(uri: &str) -> Option<(Option<String>, String)> {
    let u = SipUri::parse(uri).ok()?;
    let user = u
        .userinfo
        .map(|ui| ui.split(':').next().unwrap_or_default().to_owned());
    let host = u
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    Some((user, host))
}

/// Where a SIP URI points, when its host is an IP address: `(address, transport)`.
pub(crate) fn uri_target(uri: &str) -> Option<(SocketAddr, Transport)> {
    let u = SipUri::parse(uri).ok()?;
    let ip: IpAddr = u
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    let transport = match u.param("transport").flatten() {
        Some(t) if t.eq_ignore_ascii_case("tcp") => Transport::Tcp,
        Some(t) if t.eq_ignore_ascii_case("tls") => Transport::Tls,
        Some(t) if t.eq_ignore_ascii_case("ws") => Transport::Ws,
        Some(t) if t.eq_ignore_ascii_case("wss") => Transport::Wss,
        Some(t) if t.eq_ignore_ascii_case("sctp") => Transport::Sctp,
        _ if u.scheme == "sips" => Transport::Tls,
        _ => Transport::Udp,
    };
    let default = if transport == Transport::Tls {
        5061
    } else {
        5060
    };
    Some((SocketAddr::new(ip, u.port.unwrap_or(default)), transport))
}

/// The CSeq number.
pub(crate) fn cseq(headers: &Headers) -> Option<u32> {
    value(headers, "CSeq")
        .and_then(|v| crate::message::parse_cseq(&v))
        .map(|(n, _)| n)
}

/// The Call-ID.
pub(crate) fn call_id(headers: &Headers) -> String {
    value(headers, "Call-ID").unwrap_or_default()
}

/// The URI of the first Contact.
pub(crate) fn contact_uri(headers: &Headers) -> Option<String> {
    let v = value(headers, "Contact")?;
    let first = crate::message::grammar::split_outside_quotes(&v, ',')
        .first()
        .map(|s| s.trim().to_owned())?;
    NameAddr::parse(&first).ok().map(|n| n.uri)
}

/// The transport as the registrar names it.
pub(crate) fn registrar_transport(t: Transport) -> registrar::Transport {
    match t {
        Transport::Udp => registrar::Transport::Udp,
        Transport::Tcp => registrar::Transport::Tcp,
        Transport::Tls | Transport::TlsSctp => registrar::Transport::Tls,
        Transport::Sctp => registrar::Transport::Sctp,
        Transport::Ws => registrar::Transport::Ws,
        Transport::Wss => registrar::Transport::Wss,
    }
}

/// The transport back from the registrar's naming.
pub(crate) fn rsip_transport(t: registrar::Transport) -> Transport {
    match t {
        registrar::Transport::Udp => Transport::Udp,
        registrar::Transport::Tcp => Transport::Tcp,
        registrar::Transport::Tls => Transport::Tls,
        registrar::Transport::Sctp => Transport::Sctp,
        registrar::Transport::Ws => Transport::Ws,
        registrar::Transport::Wss => Transport::Wss,
    }
}

/// Deterministic randomness from the seed the caller gave: SHA-256 of seed and a counter.
#[derive(Debug, Clone)]
pub(crate) struct Drbg {
    seed: Vec<u8>,
    counter: u64,
}

impl Drbg {
    pub(crate) fn new(seed: &[u8]) -> Self {
        Self {
            seed: seed.to_vec(),
            counter: 0,
        }
    }

    fn block(&mut self) -> [u8; 32] {
        self.counter += 1;
        let mut h = Sha256::new();
        h.update(b"sluice-proxy-drbg");
        h.update(&self.seed);
        h.update(self.counter.to_be_bytes());
        h.finalize().into()
    }

    /// 16 fresh bytes (digest nonces).
    pub(crate) fn bytes16(&mut self) -> [u8; 16] {
        let b = self.block();
        let mut out = [0u8; 16];
        out.copy_from_slice(&b[..16]);
        out
    }

    /// A fresh token for tags, Call-IDs and branches (16 hex digits).
    pub(crate) fn token(&mut self) -> String {
        self.block()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_realms() {
        assert_eq!(
            credential_realm(r#"Digest username="a", realm="Example.COM", nonce="n,x""#).as_deref(),
            Some("Example.COM")
        );
        assert_eq!(
            credential_realm("Digest realm=bare,username=a").as_deref(),
            Some("bare")
        );
        assert_eq!(credential_realm(r#"Digest username="realm=x""#), None);
        assert_eq!(credential_realm("Basic"), None);
    }

    #[test]
    fn only_credentials_for_our_realms_are_removed() {
        let mut headers: Headers = vec![
            make_header(
                "Proxy-Authorization",
                r#"Digest username="a", realm="ours.net""#,
            ),
            make_header(
                "Proxy-Authorization",
                r#"Digest username="a", realm="theirs.org""#,
            ),
            make_header("Authorization", r#"Digest username="a", realm="OURS.net""#),
            make_header(
                "Authorization",
                r#"Digest username="a", realm="pbx.theirs.org""#,
            ),
            make_header("X-Other", r#"realm="ours.net""#),
        ]
        .into();
        remove_credentials_for(&mut headers, |r| r.eq_ignore_ascii_case("ours.net"));
        let left: Vec<String> = headers
            .iter()
            .map(|h| {
                let (n, v) = header_name_value(h);
                format!("{n}: {v}")
            })
            .collect();
        assert_eq!(
            left,
            [
                r#"Proxy-Authorization: Digest username="a", realm="theirs.org""#,
                r#"Authorization: Digest username="a", realm="pbx.theirs.org""#,
                r#"X-Other: realm="ours.net""#,
            ]
        );
    }
}
