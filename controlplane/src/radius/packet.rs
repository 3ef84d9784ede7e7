//! RADIUS packets as accounting needs them (RFC 2865 §3 and §5, RFC 2866 §3): encoding an
//! Accounting-Request with its Request Authenticator, and checking the Response Authenticator of
//! an Accounting-Response.
//!
//! Written here rather than taken from a crate: the one maintained Rust RADIUS crate, `radius`
//! (moznion/radius-rs), is an async client and server that pulls in tokio with every feature,
//! chrono, rand and async-trait for what is, on the accounting side, a header, a list of
//! type-length-value attributes and two MD5 sums. The sender here is one plain thread, so the
//! encoder is the ~150 lines below, checked against a packet captured from FreeRADIUS's
//! `radclient` and a response from `freeradius` itself (see the tests).

use std::net::{Ipv4Addr, Ipv6Addr};

use md5::{Digest, Md5};

/// Accounting-Request (RFC 2866 §4.1).
pub const ACCOUNTING_REQUEST: u8 = 4;
/// Accounting-Response (RFC 2866 §4.2).
pub const ACCOUNTING_RESPONSE: u8 = 5;
/// The fixed header: code, identifier, length, authenticator.
pub const HEADER_LEN: usize = 20;
/// The largest packet RFC 2865 §3 allows.
pub const MAX_PACKET_LEN: usize = 4096;
/// Vendor-Specific (RFC 2865 §5.26).
const VENDOR_SPECIFIC: u8 = 26;
/// The longest value of a standard attribute (255 minus type and length).
const MAX_VALUE_LEN: usize = 253;
/// The longest value of a vendor attribute: less the Vendor-Id and the vendor type and length.
const MAX_VENDOR_VALUE_LEN: usize = MAX_VALUE_LEN - 6;

/// What an attribute is: a standard type, or a vendor's type inside Vendor-Specific.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrType {
    Standard(u8),
    Vendor { vendor: u32, kind: u8 },
}

/// An attribute's value, in the RFC 2865 §5 data types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `text` / `string`: at most 253 bytes (247 for a vendor attribute); longer values are cut
    /// at a character boundary, since a record with a truncated URI is worth more than none.
    Text(String),
    /// `integer`: 32 bits, network order.
    Integer(u32),
    /// `date`: UNIX seconds, 32 bits.
    Date(u32),
    /// `address`.
    Ipv4(Ipv4Addr),
    /// `ipv6addr` (RFC 3162).
    Ipv6(Ipv6Addr),
}

/// One attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    pub kind: AttrType,
    pub value: Value,
}

impl Attribute {
    pub fn standard(kind: u8, value: Value) -> Self {
        Self {
            kind: AttrType::Standard(kind),
            value,
        }
    }

    pub fn vendor(vendor: u32, kind: u8, value: Value) -> Self {
        Self {
            kind: AttrType::Vendor { vendor, kind },
            value,
        }
    }
}

/// Why a packet could not be made or a response is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("the request would be {0} bytes, over RADIUS's 4096")]
    TooLong(usize),
    #[error("the response is {0} bytes, shorter than a RADIUS header")]
    Short(usize),
    #[error("the response's length field says {field} bytes but {got} arrived")]
    BadLength { field: usize, got: usize },
    #[error("the response has code {0}, not Accounting-Response (5)")]
    NotAResponse(u8),
    #[error("the response's authenticator does not match (a wrong shared secret?)")]
    BadAuthenticator,
    #[cfg(test)]
    #[error("a malformed attribute at offset {0}")]
    BadAttribute(usize),
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut(s: &str, max: usize) -> &[u8] {
    if s.len() <= max {
        return s.as_bytes();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s.as_bytes()[..end]
}

fn value_bytes(value: &Value, max: usize) -> Vec<u8> {
    match value {
        Value::Text(s) => cut(s, max).to_vec(),
        Value::Integer(n) | Value::Date(n) => n.to_be_bytes().to_vec(),
        Value::Ipv4(ip) => ip.octets().to_vec(),
        Value::Ipv6(ip) => ip.octets().to_vec(),
    }
}

/// Appends one attribute. An empty text is left out: RFC 2865 §5 gives text attributes at
/// least one byte.
fn push_attribute(out: &mut Vec<u8>, attribute: &Attribute) {
    match attribute.kind {
        AttrType::Standard(kind) => {
            let value = value_bytes(&attribute.value, MAX_VALUE_LEN);
            if value.is_empty() {
                return;
            }
            out.push(kind);
            out.push((value.len() + 2) as u8);
            out.extend_from_slice(&value);
        }
        AttrType::Vendor { vendor, kind } => {
            let value = value_bytes(&attribute.value, MAX_VENDOR_VALUE_LEN);
            if value.is_empty() {
                return;
            }
            // RFC 2865 §5.26: Vendor-Id, then the vendor's own type-length-value.
            out.push(VENDOR_SPECIFIC);
            out.push((value.len() + 8) as u8);
            out.extend_from_slice(&vendor.to_be_bytes());
            out.push(kind);
            out.push((value.len() + 2) as u8);
            out.extend_from_slice(&value);
        }
    }
}

/// An Accounting-Request with `identifier` and `attributes`, its Request Authenticator made with
/// `secret` (RFC 2866 §3: MD5 over the packet with a zero authenticator, then the secret).
pub fn accounting_request(
    identifier: u8,
    attributes: &[Attribute],
    secret: &[u8],
) -> Result<Vec<u8>, PacketError> {
    let mut packet = Vec::with_capacity(512);
    packet.extend_from_slice(&[ACCOUNTING_REQUEST, identifier, 0, 0]);
    packet.extend_from_slice(&[0; 16]);
    for attribute in attributes {
        push_attribute(&mut packet, attribute);
    }
    if packet.len() > MAX_PACKET_LEN {
        return Err(PacketError::TooLong(packet.len()));
    }
    let len = packet.len() as u16;
    packet[2..4].copy_from_slice(&len.to_be_bytes());
    let mut md5 = Md5::new();
    md5.update(&packet);
    md5.update(secret);
    let authenticator = md5.finalize();
    packet[4..HEADER_LEN].copy_from_slice(&authenticator);
    Ok(packet)
}

/// The identifier of a response, if it has a header at all (to find its request).
pub fn identifier(response: &[u8]) -> Option<u8> {
    response.get(1).copied()
}

/// Checks that `response` is an Accounting-Response to `request` signed with `secret` (RFC 2866
/// §3: MD5 over code, identifier, length, the request's authenticator, the response's
/// attributes and the secret). Bytes past the length field are padding and ignored (RFC 2865
/// §3).
pub fn check_response(response: &[u8], request: &[u8], secret: &[u8]) -> Result<(), PacketError> {
    if response.len() < HEADER_LEN {
        return Err(PacketError::Short(response.len()));
    }
    let field = usize::from(u16::from_be_bytes([response[2], response[3]]));
    if !(HEADER_LEN..=response.len()).contains(&field) {
        return Err(PacketError::BadLength {
            field,
            got: response.len(),
        });
    }
    if response[0] != ACCOUNTING_RESPONSE {
        return Err(PacketError::NotAResponse(response[0]));
    }
    let response = &response[..field];
    let mut md5 = Md5::new();
    md5.update(&response[..4]);
    md5.update(request.get(4..HEADER_LEN).unwrap_or(&[0; 16]));
    md5.update(&response[HEADER_LEN..]);
    md5.update(secret);
    if md5.finalize().as_slice() != &response[4..HEADER_LEN] {
        return Err(PacketError::BadAuthenticator);
    }
    Ok(())
}

/// The attributes of a packet as (type, value bytes), vendor attributes split out: what the
/// tests read requests back with.
#[cfg(test)]
pub fn attributes(packet: &[u8]) -> Result<Vec<(AttrType, Vec<u8>)>, PacketError> {
    let len = packet
        .get(2..4)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or(PacketError::Short(packet.len()))?;
    let body = packet.get(HEADER_LEN..len).ok_or(PacketError::BadLength {
        field: len,
        got: packet.len(),
    })?;
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let kind = body[at];
        let alen = usize::from(*body.get(at + 1).ok_or(PacketError::BadAttribute(at))?);
        let value = body
            .get(at + 2..at + alen)
            .filter(|_| alen >= 2)
            .ok_or(PacketError::BadAttribute(at + HEADER_LEN))?;
        if kind == VENDOR_SPECIFIC && value.len() >= 6 {
            let vendor = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
            let vlen = usize::from(value[5]);
            if vlen < 2 || vlen != value.len() - 4 {
                return Err(PacketError::BadAttribute(at + HEADER_LEN));
            }
            out.push((
                AttrType::Vendor {
                    vendor,
                    kind: value[4],
                },
                value[6..].to_vec(),
            ));
        } else {
            out.push((AttrType::Standard(kind), value.to_vec()));
        }
        at += alen;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Captured from FreeRADIUS 3.2.1's radclient (identifier 33, secret `testing123`):
    ///
    /// ```text
    /// Acct-Status-Type = Stop, Acct-Session-Id = "a84b4c76e66710@pc33.example.com",
    /// Acct-Session-Time = 62, Acct-Input-Octets = 8600, Acct-Output-Octets = 8431,
    /// Acct-Input-Packets = 50, Acct-Output-Packets = 50, Acct-Terminate-Cause = User-Request,
    /// NAS-IP-Address = 192.0.2.1, NAS-Identifier = "sbc-1", Event-Timestamp = 1717000062,
    /// Sluice-Termination-Cause = "bye:caller", Sluice-Sip-Response-Code = 200
    /// ```
    const RADCLIENT_STOP: &str = "042100902fe420fc3ef3bca7a18378349d3b42de2806000000022c216138\
        34623463373665363637313040706333332e6578616d706c652e636f6d2e060000003e2a06000021982b06\
        000020ef2f06000000323006000000323106000000010406c000020120077362632d313706665757\
        7e1a1200007ed9010c6279653a63616c6c65721a0c00007ed90506000000c8";

    /// FreeRADIUS 3.2.1's answer to that request.
    const FREERADIUS_RESPONSE: &str = "05210014bac93e4703838e21c46924feb2153bb3";

    fn radclient_attributes() -> Vec<Attribute> {
        use Value::*;
        vec![
            Attribute::standard(40, Integer(2)),
            Attribute::standard(44, Text("a84b4c76e66710@pc33.example.com".into())),
            Attribute::standard(46, Integer(62)),
            Attribute::standard(42, Integer(8600)),
            Attribute::standard(43, Integer(8431)),
            Attribute::standard(47, Integer(50)),
            Attribute::standard(48, Integer(50)),
            Attribute::standard(49, Integer(1)),
            Attribute::standard(4, Ipv4("192.0.2.1".parse().unwrap())),
            Attribute::standard(32, Text("sbc-1".into())),
            Attribute::standard(55, Date(1_717_000_062)),
            Attribute::vendor(32473, 1, Text("bye:caller".into())),
            Attribute::vendor(32473, 5, Integer(200)),
        ]
    }

    #[test]
    fn the_request_is_byte_for_byte_radclients() {
        let packet = accounting_request(33, &radclient_attributes(), b"testing123").unwrap();
        assert_eq!(packet, hex(RADCLIENT_STOP));
    }

    #[test]
    fn freeradius_response_checks_out_only_with_the_secret() {
        let request = hex(RADCLIENT_STOP);
        let response = hex(FREERADIUS_RESPONSE);
        assert_eq!(check_response(&response, &request, b"testing123"), Ok(()));
        assert_eq!(
            check_response(&response, &request, b"testing124"),
            Err(PacketError::BadAuthenticator)
        );
        // Another request's authenticator (a stale or forged answer).
        let mut other = request.clone();
        other[4] ^= 1;
        assert_eq!(
            check_response(&response, &other, b"testing123"),
            Err(PacketError::BadAuthenticator)
        );
        // Padding after the length is ignored; a length beyond the datagram is not.
        let mut padded = response.clone();
        padded.extend_from_slice(&[0; 7]);
        assert_eq!(check_response(&padded, &request, b"testing123"), Ok(()));
        let mut long = response.clone();
        long[3] = 40;
        assert!(matches!(
            check_response(&long, &request, b"testing123"),
            Err(PacketError::BadLength { field: 40, .. })
        ));
        assert_eq!(
            check_response(&response[..10], &request, b"testing123"),
            Err(PacketError::Short(10))
        );
        let mut access_accept = response;
        access_accept[0] = 2;
        assert_eq!(
            check_response(&access_accept, &request, b"testing123"),
            Err(PacketError::NotAResponse(2))
        );
    }

    #[test]
    fn attributes_round_trip_through_the_decoder() {
        let packet = accounting_request(7, &radclient_attributes(), b"s").unwrap();
        let decoded = attributes(&packet).unwrap();
        assert_eq!(decoded.len(), radclient_attributes().len());
        assert_eq!(
            decoded[1],
            (
                AttrType::Standard(44),
                b"a84b4c76e66710@pc33.example.com".to_vec()
            )
        );
        assert_eq!(
            decoded[11],
            (
                AttrType::Vendor {
                    vendor: 32473,
                    kind: 1
                },
                b"bye:caller".to_vec()
            )
        );
        assert_eq!(identifier(&packet), Some(7));
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary_and_empty_ones_left_out() {
        let long = "é".repeat(200); // 400 bytes
        let packet = accounting_request(
            1,
            &[
                Attribute::standard(31, Value::Text(long.clone())),
                Attribute::vendor(9, 7, Value::Text(long)),
                Attribute::standard(1, Value::Text(String::new())),
            ],
            b"s",
        )
        .unwrap();
        let decoded = attributes(&packet).unwrap();
        assert_eq!(decoded.len(), 2, "the empty User-Name is left out");
        assert_eq!(decoded[0].1.len(), 252, "253 would split a character");
        assert!(std::str::from_utf8(&decoded[0].1).is_ok());
        assert_eq!(decoded[1].1.len(), 246);
        assert!(std::str::from_utf8(&decoded[1].1).is_ok());
    }

    #[test]
    fn a_request_over_4096_bytes_is_refused() {
        let many: Vec<_> = (0..20)
            .map(|_| Attribute::standard(31, Value::Text("x".repeat(253))))
            .collect();
        assert!(matches!(
            accounting_request(1, &many, b"s"),
            Err(PacketError::TooLong(_))
        ));
    }

    #[test]
    fn the_decoder_refuses_garbage() {
        let mut packet = accounting_request(1, &radclient_attributes()[..2], b"s").unwrap();
        // An attribute whose length runs past the end.
        packet[HEADER_LEN + 1] = 200;
        assert!(attributes(&packet).is_err());
        // An attribute of length 0 (would loop forever if taken at face value).
        packet[HEADER_LEN + 1] = 0;
        assert!(attributes(&packet).is_err());
        assert!(attributes(&[4, 1]).is_err());
    }
}
