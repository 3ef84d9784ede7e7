//! A small rtpengine "ng" client for the end-to-end tests: bencode, the `<cookie> <dict>`
//! framing over UDP, and retransmission with the same cookie when a reply is late (as
//! Kamailio's rtpengine module does).
//!
//! It is written from the protocol, not from Sluice's own codec, so that a mistake shared by
//! Sluice's encoder and decoder cannot hide from the tests.

#![allow(dead_code)] // each test file uses a different part

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A bencoded value.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Dict(BTreeMap<Vec<u8>, Value>),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Bytes(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Value::List(l) => f.debug_list().entries(l).finish(),
            Value::Dict(d) => f
                .debug_map()
                .entries(d.iter().map(|(k, v)| (String::from_utf8_lossy(k), v)))
                .finish(),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Bytes(s.as_bytes().to_vec())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Bytes(s.into_bytes())
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl<V: Into<Value>> From<Vec<V>> for Value {
    fn from(l: Vec<V>) -> Self {
        Value::List(l.into_iter().map(Into::into).collect())
    }
}

/// A dictionary from `(key, value)` pairs.
pub fn dict(pairs: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        pairs
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect(),
    )
}

impl Value {
    /// The value of `key` in a dictionary.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }

    /// Follows a path of dictionary keys.
    pub fn path(&self, keys: &[&str]) -> Option<&Value> {
        keys.iter().try_fold(self, |v, k| v.get(k))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    pub fn as_dict(&self) -> Option<&BTreeMap<Vec<u8>, Value>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// The string at `key`, or a panic that shows the whole value.
    pub fn str_at(&self, key: &str) -> &str {
        self.get(key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no string `{key}` in {self:?}"))
    }

    /// The integer at a path of keys, or a panic that shows the whole value.
    pub fn int_at(&self, keys: &[&str]) -> i64 {
        self.path(keys)
            .and_then(Value::as_int)
            .unwrap_or_else(|| panic!("no integer at {keys:?} in {self:?}"))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Value::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Value::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode_into(out);
                }
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    Value::Bytes(k.clone()).encode_into(out);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }

    /// Decodes one value that must fill `data` exactly.
    pub fn decode(data: &[u8]) -> Result<Value, String> {
        let (v, used) = decode_at(data, 0, 0)?;
        if used != data.len() {
            return Err(format!("{} bytes after the value", data.len() - used));
        }
        Ok(v)
    }
}

fn decode_at(data: &[u8], at: usize, depth: usize) -> Result<(Value, usize), String> {
    if depth > 32 {
        return Err("nested too deeply".into());
    }
    let digits_until = |from: usize, end: u8| -> Result<(&str, usize), String> {
        let stop = data[from..]
            .iter()
            .position(|&b| b == end)
            .ok_or_else(|| format!("no `{}` after offset {from}", end as char))?;
        let text = std::str::from_utf8(&data[from..from + stop]).map_err(|e| e.to_string())?;
        Ok((text, from + stop + 1))
    };
    match data.get(at) {
        None => Err(format!("truncated at offset {at}")),
        Some(b'i') => {
            let (text, next) = digits_until(at + 1, b'e')?;
            let i = text
                .parse()
                .map_err(|_| format!("bad integer {text:?} at offset {at}"))?;
            Ok((Value::Int(i), next))
        }
        Some(b'l') => {
            let mut items = Vec::new();
            let mut pos = at + 1;
            while data.get(pos) != Some(&b'e') {
                let (v, next) = decode_at(data, pos, depth + 1)?;
                items.push(v);
                pos = next;
            }
            Ok((Value::List(items), pos + 1))
        }
        Some(b'd') => {
            let mut map = BTreeMap::new();
            let mut pos = at + 1;
            while data.get(pos) != Some(&b'e') {
                let (k, next) = decode_at(data, pos, depth + 1)?;
                let Value::Bytes(k) = k else {
                    return Err(format!("a dictionary key at offset {pos} is not a string"));
                };
                let (v, next) = decode_at(data, next, depth + 1)?;
                map.insert(k, v);
                pos = next;
            }
            Ok((Value::Dict(map), pos + 1))
        }
        Some(b'0'..=b'9') => {
            let (text, start) = digits_until(at, b':')?;
            let len: usize = text
                .parse()
                .map_err(|_| format!("bad length {text:?} at offset {at}"))?;
            let bytes = data
                .get(start..start + len)
                .ok_or_else(|| format!("string at offset {at} is truncated"))?;
            Ok((Value::Bytes(bytes.to_vec()), start + len))
        }
        Some(b) => Err(format!("unexpected byte {b:#04x} at offset {at}")),
    }
}

static COOKIES: AtomicU64 = AtomicU64::new(1);

/// An ng client on a UDP socket (create the socket in the namespace the server listens in).
pub struct NgClient {
    socket: UdpSocket,
    server: SocketAddr,
    /// How long to wait for each reply before sending the request again.
    pub wait: Duration,
    /// How many times a request is sent before giving up.
    pub attempts: u32,
}

impl NgClient {
    /// A client of `server` on `socket` (already bound).
    pub fn new(socket: UdpSocket, server: SocketAddr) -> NgClient {
        NgClient {
            socket,
            server,
            wait: Duration::from_millis(1000),
            attempts: 3,
        }
    }

    /// Sends `request` (a dictionary) and returns the reply dictionary. Late replies to
    /// earlier cookies are skipped; a missing reply is retransmitted with the same cookie.
    pub fn request(&self, request: &Value) -> Result<Value, String> {
        let cookie = format!(
            "{}_{}",
            std::process::id(),
            COOKIES.fetch_add(1, Ordering::Relaxed)
        );
        let mut datagram = format!("{cookie} ").into_bytes();
        datagram.extend_from_slice(&request.encode());
        self.socket
            .set_read_timeout(Some(self.wait))
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 65_535];
        for _ in 0..self.attempts {
            self.socket
                .send_to(&datagram, self.server)
                .map_err(|e| format!("sending to {}: {e}", self.server))?;
            loop {
                let n = match self.socket.recv_from(&mut buf) {
                    Ok((n, _)) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    // A previous send's ICMP unreachable (the server is not up yet).
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
                    Err(e) => return Err(format!("receiving from {}: {e}", self.server)),
                };
                let reply = &buf[..n];
                let Some(space) = reply.iter().position(|&b| b == b' ') else {
                    return Err(format!(
                        "a reply without a cookie: {:?}",
                        String::from_utf8_lossy(reply)
                    ));
                };
                if &reply[..space] != cookie.as_bytes() {
                    continue; // the late reply to an earlier request
                }
                return Value::decode(&reply[space + 1..]).map_err(|e| {
                    format!(
                        "the reply to {cookie} is not bencode ({e}): {:?}",
                        String::from_utf8_lossy(reply)
                    )
                });
            }
        }
        Err(format!(
            "no reply from {} after {} attempts of {:?}",
            self.server, self.attempts, self.wait
        ))
    }

    /// Like [`request`](Self::request), but the reply's `result` must be `ok` (or `pong`).
    pub fn ok(&self, request: &Value) -> Value {
        let reply = self
            .request(request)
            .unwrap_or_else(|e| panic!("{e}; request {request:?}"));
        let result = reply.get("result").and_then(Value::as_str);
        assert!(
            matches!(result, Some("ok" | "pong")),
            "request {request:?} failed: {reply:?}"
        );
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bencode_round_trip() {
        let v = dict(vec![
            ("command", "offer".into()),
            ("flags", vec!["trust-address", "symmetric"].into()),
            ("n", Value::Int(-12)),
            ("nested", dict(vec![("a", Value::List(Vec::new()))])),
        ]);
        let enc = v.encode();
        assert_eq!(Value::decode(&enc).expect("decodes"), v);
        assert_eq!(
            String::from_utf8(dict(vec![("result", "pong".into())]).encode()).expect("utf8"),
            "d6:result4:ponge"
        );
        assert!(Value::decode(b"d3:abc").is_err());
        assert!(Value::decode(b"5:ab").is_err());
        assert!(Value::decode(b"i1ei2e").is_err());
    }
}
