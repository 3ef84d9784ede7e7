//! Splitting a body into lines and building the typed view.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{
    AddrType, Address, Attribute, Connection, Direction, Eol, IceAttributes, Line, LineEnding,
    MediaKind, MediaSection, Origin, Proto, Rtcp, Sdp, SdpError, MAX_SDP_LEN,
};

/// Splits on `\n` (a `\r` right before it is part of the terminator) and checks every line is text.
pub(crate) fn split_lines(input: &[u8]) -> Result<Vec<Line>, SdpError> {
    if input.len() > MAX_SDP_LEN {
        return Err(SdpError::TooLarge {
            len: input.len(),
            limit: MAX_SDP_LEN,
        });
    }
    if input.is_empty() {
        return Err(SdpError::Empty);
    }
    let mut lines = Vec::new();
    let mut rest = input;
    let mut number = 0;
    while !rest.is_empty() {
        number += 1;
        let (body, eol, next): (&[u8], Eol, &[u8]) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let (line, after) = rest.split_at(i);
                let after = after.get(1..).unwrap_or(&[]);
                match line.strip_suffix(b"\r") {
                    Some(body) => (body, Eol::CrLf, after),
                    None => (line, Eol::Lf, after),
                }
            }
            None => (rest, Eol::None, &[]),
        };
        for &b in body {
            if b == b'\r' {
                return Err(SdpError::InvalidBytes {
                    line: number,
                    reason: "carriage return that does not end the line",
                });
            }
            if (b < 0x20 && b != b'\t') || b == 0x7f {
                return Err(SdpError::InvalidBytes {
                    line: number,
                    reason: "control character in line",
                });
            }
        }
        let text = std::str::from_utf8(body).map_err(|_| SdpError::InvalidBytes {
            line: number,
            reason: "line is not valid UTF-8",
        })?;
        lines.push(Line {
            text: text.to_owned(),
            eol,
        });
        rest = next;
    }
    Ok(lines)
}

fn is_blank(text: &str) -> bool {
    text.bytes().all(|b| b == b' ' || b == b'\t')
}

/// `(type letter, value without trailing whitespace)` of a non-blank line, checked to be `x=...`.
fn type_value(text: &str, line: usize) -> Result<(u8, &str), SdpError> {
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.get(1)) {
        (Some(&t), Some(b'=')) if t.is_ascii_alphabetic() => {
            // Both bytes are ASCII, so index 2 is a char boundary.
            let value = text.get(2..).unwrap_or("");
            Ok((t, value.trim_end_matches([' ', '\t'])))
        }
        _ => Err(SdpError::NotTypeValue { line }),
    }
}

fn tokens(value: &str) -> impl Iterator<Item = &str> {
    value.split([' ', '\t']).filter(|t| !t.is_empty())
}

/// A port: ASCII digits only (no sign), in range.
pub(crate) fn parse_port(token: &str) -> Option<u16> {
    if token.is_empty() || token.len() > 5 || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && s.bytes().any(|b| b.is_ascii_alphabetic())
}

/// Parses `IN IP4 addr[/ttl[/n]]` from the tokens after `c=` (or after the `a=rtcp:` port).
pub(crate) fn parse_connection(toks: &[&str], line: usize) -> Result<Connection, SdpError> {
    let bad = |reason: String| SdpError::BadConnection { line, reason };
    let [nettype, addrtype, addr] = toks else {
        return Err(bad(format!(
            "expected `IN <IP4|IP6> <address>`, found {} fields",
            toks.len()
        )));
    };
    if !nettype.eq_ignore_ascii_case("IN") {
        return Err(bad(format!("unknown network type `{nettype}`")));
    }
    let addr_type = if addrtype.eq_ignore_ascii_case("IP4") {
        AddrType::Ip4
    } else if addrtype.eq_ignore_ascii_case("IP6") {
        AddrType::Ip6
    } else {
        return Err(bad(format!("unknown address type `{addrtype}`")));
    };
    let (host, suffix) = match addr.split_once('/') {
        Some((host, suffix)) => (host, Some(suffix)),
        None => (*addr, None),
    };
    if let Some(suffix) = suffix {
        let parts: Vec<&str> = suffix.split('/').collect();
        let max = if addr_type == AddrType::Ip4 { 2 } else { 1 };
        if parts.len() > max
            || parts
                .iter()
                .any(|p| p.is_empty() || p.len() > 10 || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad(format!("bad multicast suffix `/{suffix}`")));
        }
    }
    let address = match addr_type {
        AddrType::Ip4 => {
            if let Ok(ip) = host.parse::<Ipv4Addr>() {
                Address::Ip(IpAddr::V4(ip))
            } else if host.parse::<Ipv6Addr>().is_ok() {
                return Err(bad(format!(
                    "`{host}` is an IPv6 address but the type is IP4"
                )));
            } else if is_hostname(host) {
                Address::Fqdn(host.to_owned())
            } else {
                return Err(bad(format!("`{host}` is not an IPv4 address or host name")));
            }
        }
        AddrType::Ip6 => {
            if let Ok(ip) = host.parse::<Ipv6Addr>() {
                Address::Ip(IpAddr::V6(ip))
            } else if host.parse::<Ipv4Addr>().is_ok() {
                return Err(bad(format!(
                    "`{host}` is an IPv4 address but the type is IP6"
                )));
            } else if is_hostname(host) {
                Address::Fqdn(host.to_owned())
            } else {
                return Err(bad(format!("`{host}` is not an IPv6 address or host name")));
            }
        }
    };
    Ok(Connection {
        addr_type,
        address,
        suffix: suffix.map(str::to_owned),
    })
}

/// Parses the value of `a=rtcp:` (RFC 3605): `port [IN IP4 addr]`.
pub(crate) fn parse_rtcp(value: &str, line: usize) -> Result<Rtcp, SdpError> {
    let toks: Vec<&str> = tokens(value).collect();
    let Some((port, rest)) = toks.split_first() else {
        return Err(SdpError::Malformed {
            line,
            reason: "a=rtcp: without a port".to_owned(),
        });
    };
    let port = parse_port(port).ok_or_else(|| SdpError::Malformed {
        line,
        reason: format!("a=rtcp: port `{port}` is not a number in 0..=65535"),
    })?;
    let connection = if rest.is_empty() {
        None
    } else {
        Some(parse_connection(rest, line)?)
    };
    Ok(Rtcp { port, connection })
}

/// Parses the value of an `a=` line.
pub(crate) fn parse_attribute(value: &str) -> Attribute {
    match value.split_once(':') {
        Some((name, v)) => Attribute {
            name: name.trim().to_owned(),
            value: Some(v.trim().to_owned()),
        },
        None => Attribute {
            name: value.trim().to_owned(),
            value: None,
        },
    }
}

/// Whether a line's text is an ICE attribute ([`super::ICE_ATTRIBUTES`]).
pub(crate) fn is_ice_line(text: &str) -> bool {
    match type_value(text, 0) {
        Ok((b'a', value)) => {
            let attr = parse_attribute(value);
            super::ICE_ATTRIBUTES.contains(&attr.name.to_ascii_lowercase().as_str())
        }
        _ => false,
    }
}

/// The line type letter of a non-blank line (`0` for a blank line).
pub(crate) fn line_type(text: &str) -> u8 {
    match type_value(text, 0) {
        Ok((t, _)) => t,
        Err(_) => 0,
    }
}

/// The value of an `x=` line, without trailing whitespace.
pub(crate) fn line_value(text: &str) -> &str {
    match type_value(text, 0) {
        Ok((_, v)) => v,
        Err(_) => "",
    }
}

fn record_ice(ice: &mut IceAttributes, name: &str) {
    match name {
        "candidate" => ice.candidates += 1,
        "ice-ufrag" => ice.ufrag = true,
        "ice-pwd" => ice.pwd = true,
        "ice-options" => ice.options = true,
        "end-of-candidates" => ice.end_of_candidates = true,
        "remote-candidates" => ice.remote_candidates = true,
        "ice-lite" => ice.lite = true,
        _ => {}
    }
}

struct MediaBuilder {
    section: MediaSection,
    /// Line number of the first media-level `c=`.
    connection_line: Option<usize>,
}

fn parse_media_line(value: &str, line: usize, index: usize) -> Result<MediaBuilder, SdpError> {
    let toks: Vec<&str> = tokens(value).collect();
    let [kind, port_field, proto, formats @ ..] = toks.as_slice() else {
        return Err(SdpError::Malformed {
            line,
            reason: "m= line needs <media> <port> <proto> [<fmt> ...]".to_owned(),
        });
    };
    let bad_port = || SdpError::BadMediaPort {
        line,
        port: (*port_field).to_owned(),
    };
    let (port, port_count) = match port_field.split_once('/') {
        Some((p, n)) => (
            parse_port(p).ok_or_else(bad_port)?,
            Some(parse_port(n).ok_or_else(bad_port)?),
        ),
        None => (parse_port(port_field).ok_or_else(bad_port)?, None),
    };
    Ok(MediaBuilder {
        section: MediaSection {
            kind: MediaKind::parse(kind),
            port,
            port_count,
            proto: Proto::parse(proto),
            formats: formats.iter().map(|f| (*f).to_owned()).collect(),
            connections: Vec::new(),
            effective_connection: None,
            attributes: Vec::new(),
            rtcp: None,
            rtcp_mux: false,
            explicit_direction: None,
            direction: Direction::SendRecv,
            ice: IceAttributes::default(),
            crypto: 0,
            line,
            start: index,
            end: index + 1,
            effective_connection_line: None,
        },
        connection_line: None,
    })
}

/// Builds the typed view over already split lines.
pub(crate) fn build(lines: Vec<Line>) -> Result<Sdp, SdpError> {
    let Some(first) = lines.first() else {
        return Err(SdpError::Empty);
    };
    if first.text.trim_end_matches([' ', '\t']) != "v=0" {
        return Err(SdpError::MissingVersion { line: 1 });
    }
    let ending = match first.eol {
        Eol::Lf => LineEnding::Lf,
        Eol::CrLf | Eol::None => LineEnding::CrLf,
    };
    // Empty lines are tolerated only after the last SDP line.
    let last_content = lines.iter().rposition(|l| !is_blank(&l.text)).unwrap_or(0);

    let mut origin: Option<(Origin, usize)> = None;
    let mut session_connection: Option<(Connection, usize)> = None;
    let mut session_attributes = Vec::new();
    let mut session_direction = None;
    let mut session_ice = IceAttributes::default();
    let mut media: Vec<MediaBuilder> = Vec::new();

    for (index, line) in lines.iter().enumerate() {
        let number = index + 1;
        if is_blank(&line.text) {
            if index < last_content {
                return Err(SdpError::NotTypeValue { line: number });
            }
            continue;
        }
        let (kind, value) = type_value(&line.text, number)?;
        if kind != b'm' {
            if let Some(current) = media.last_mut() {
                current.section.end = index + 1;
            }
        }
        match kind {
            b'm' => media.push(parse_media_line(value, number, index)?),
            b'o' if media.is_empty() => {
                if origin.is_some() {
                    return Err(SdpError::Malformed {
                        line: number,
                        reason: "more than one o= line".to_owned(),
                    });
                }
                let toks: Vec<&str> = tokens(value).collect();
                let [username, session_id, session_version, nettype, addrtype, address] =
                    toks.as_slice()
                else {
                    return Err(SdpError::Malformed {
                        line: number,
                        reason: format!("o= line needs 6 fields, found {}", toks.len()),
                    });
                };
                origin = Some((
                    Origin {
                        username: (*username).to_owned(),
                        session_id: (*session_id).to_owned(),
                        session_version: (*session_version).to_owned(),
                        nettype: (*nettype).to_owned(),
                        addrtype: (*addrtype).to_owned(),
                        address: (*address).to_owned(),
                    },
                    number,
                ));
            }
            b'c' => {
                let toks: Vec<&str> = tokens(value).collect();
                let connection = parse_connection(&toks, number)?;
                match media.last_mut() {
                    Some(current) => {
                        if current.connection_line.is_none() {
                            current.connection_line = Some(number);
                        }
                        current.section.connections.push(connection);
                    }
                    None => {
                        if session_connection.is_some() {
                            return Err(SdpError::Malformed {
                                line: number,
                                reason: "more than one session-level c= line".to_owned(),
                            });
                        }
                        session_connection = Some((connection, number));
                    }
                }
            }
            b'a' => {
                let attribute = parse_attribute(value);
                let name = attribute.name.to_ascii_lowercase();
                match media.last_mut() {
                    Some(current) => {
                        let section = &mut current.section;
                        match name.as_str() {
                            "rtcp" => {
                                let rtcp =
                                    parse_rtcp(attribute.value.as_deref().unwrap_or(""), number)?;
                                if section.rtcp.is_none() {
                                    section.rtcp = Some(rtcp);
                                }
                            }
                            "rtcp-mux" => section.rtcp_mux = true,
                            "crypto" => section.crypto += 1,
                            other => {
                                if let Some(d) = Direction::from_attribute(other) {
                                    section.explicit_direction.get_or_insert(d);
                                }
                                record_ice(&mut section.ice, other);
                            }
                        }
                        section.attributes.push(attribute);
                    }
                    None => {
                        if let Some(d) = Direction::from_attribute(&name) {
                            session_direction.get_or_insert(d);
                        }
                        record_ice(&mut session_ice, &name);
                        session_attributes.push(attribute);
                    }
                }
            }
            _ => {}
        }
    }

    let Some((origin, origin_line)) = origin else {
        return Err(SdpError::MissingOrigin);
    };
    // Trailing empty lines belong to the last section.
    if let Some(last) = media.last_mut() {
        last.section.end = lines.len();
    }
    let media = media
        .into_iter()
        .map(|builder| {
            let mut section = builder.section;
            section.direction = section
                .explicit_direction
                .or(session_direction)
                .unwrap_or(Direction::SendRecv);
            match (section.connections.first(), &session_connection) {
                (Some(own), _) => {
                    section.effective_connection = Some(own.clone());
                    section.effective_connection_line = builder.connection_line;
                }
                (None, Some((session, line))) => {
                    section.effective_connection = Some(session.clone());
                    section.effective_connection_line = Some(*line);
                }
                (None, None) => {}
            }
            section
        })
        .collect();
    let (session_connection, session_connection_line) = match session_connection {
        Some((c, line)) => (Some(c), Some(line)),
        None => (None, None),
    };
    Ok(Sdp {
        lines,
        ending,
        origin,
        origin_line,
        session_connection,
        session_connection_line,
        session_attributes,
        session_direction,
        session_ice,
        media,
    })
}
