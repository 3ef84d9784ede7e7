//! A small client of rtpengine's "ng" control protocol: bencode, the `<cookie> <dict>` framing
//! over UDP, and retransmission with the same cookie when a reply is late. `sluice-bench streams
//! --setup ng` and `--against rtpengine` set every stream up through it with an offer and an
//! answer, as a SIP proxy would, so Sluice and rtpengine get the very same signalling; the
//! end-to-end tests drive `sluice relay` with it too.
//!
//! It is written from the protocol, not from Sluice's own codec (`controlplane/src/ng/`), so
//! that a mistake shared by Sluice's encoder and decoder cannot hide from the tests or the bench.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// A bencoded value.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// `i<n>e`
    Int(i64),
    /// `<len>:<bytes>`
    Bytes(Vec<u8>),
    /// `l...e`
    List(Vec<Value>),
    /// `d...e`, keys sorted.
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

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
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

    /// The string this is, if it is UTF-8 bytes.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The integer this is.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The items of this list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// The entries of this dictionary.
    pub fn as_dict(&self) -> Option<&BTreeMap<Vec<u8>, Value>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Bencode.
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

    /// Decodes one value that fills `data` exactly.
    pub fn decode(data: &[u8]) -> Result<Value> {
        let (v, used) = decode_at(data, 0, 0)?;
        if used != data.len() {
            bail!("{} bytes after the value", data.len() - used);
        }
        Ok(v)
    }
}

fn decode_at(data: &[u8], at: usize, depth: usize) -> Result<(Value, usize)> {
    if depth > 32 {
        bail!("nested too deeply");
    }
    let until = |from: usize, end: u8| -> Result<(&str, usize)> {
        let stop = data
            .get(from..)
            .and_then(|d| d.iter().position(|&b| b == end))
            .ok_or_else(|| anyhow!("no `{}` after offset {from}", end as char))?;
        let text = std::str::from_utf8(&data[from..from + stop])?;
        Ok((text, from + stop + 1))
    };
    match data.get(at) {
        None => bail!("truncated at offset {at}"),
        Some(b'i') => {
            let (text, next) = until(at + 1, b'e')?;
            Ok((Value::Int(text.parse().context("an integer")?), next))
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
                    bail!("a dictionary key at offset {pos} is not a string");
                };
                let (v, next) = decode_at(data, next, depth + 1)?;
                map.insert(k, v);
                pos = next;
            }
            Ok((Value::Dict(map), pos + 1))
        }
        Some(b'0'..=b'9') => {
            let (text, start) = until(at, b':')?;
            let len: usize = text.parse().context("a string length")?;
            let bytes = data
                .get(start..start + len)
                .ok_or_else(|| anyhow!("string at offset {at} is truncated"))?;
            Ok((Value::Bytes(bytes.to_vec()), start + len))
        }
        Some(b) => bail!("unexpected byte {b:#04x} at offset {at}"),
    }
}

/// Cookies unique in this process, so that clients sharing a server never take each other's
/// replies for their own.
static COOKIES: AtomicU64 = AtomicU64::new(1);

/// An ng client on a UDP socket (bound in the namespace the server listens in).
pub struct NgClient {
    socket: UdpSocket,
    server: SocketAddr,
    /// How long to wait for each reply before sending the request again.
    pub wait: Duration,
    /// How many times a request is sent before giving up.
    pub attempts: u32,
}

impl NgClient {
    /// A client of `server` on `socket`.
    pub fn new(socket: UdpSocket, server: SocketAddr) -> NgClient {
        NgClient {
            socket,
            server,
            wait: Duration::from_millis(2000),
            attempts: 3,
        }
    }

    /// Sends `request` and returns the reply dictionary; late replies to earlier cookies are
    /// skipped, a missing reply is sent again with the same cookie (as Kamailio's rtpengine
    /// module does).
    pub fn request(&self, request: &Value) -> Result<Value> {
        self.request_with(request, self.wait, self.attempts)
    }

    fn request_with(&self, request: &Value, wait: Duration, attempts: u32) -> Result<Value> {
        let cookie = format!(
            "{}_{}",
            std::process::id(),
            COOKIES.fetch_add(1, Ordering::Relaxed)
        );
        let mut datagram = format!("{cookie} ").into_bytes();
        datagram.extend_from_slice(&request.encode());
        self.socket.set_read_timeout(Some(wait))?;
        let mut buf = vec![0u8; 65_535];
        for _ in 0..attempts {
            self.socket
                .send_to(&datagram, self.server)
                .with_context(|| format!("sending to {}", self.server))?;
            loop {
                let n = match self.socket.recv_from(&mut buf) {
                    Ok((n, _)) => n,
                    // Timed out, or a previous send's ICMP unreachable (the server is not up).
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::ConnectionRefused
                        ) =>
                    {
                        break
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("receiving from {}", self.server))
                    }
                };
                let reply = &buf[..n];
                let Some(space) = reply.iter().position(|&b| b == b' ') else {
                    bail!(
                        "a reply without a cookie: {:?}",
                        String::from_utf8_lossy(reply)
                    );
                };
                if &reply[..space] != cookie.as_bytes() {
                    continue; // the late reply to an earlier request
                }
                return Value::decode(&reply[space + 1..]).with_context(|| {
                    format!(
                        "the reply to {cookie} is not bencode: {:?}",
                        String::from_utf8_lossy(reply)
                    )
                });
            }
        }
        bail!(
            "no reply from {} after {attempts} attempts of {wait:?}",
            self.server
        )
    }

    /// Like [`request`](Self::request), and the reply's `result` must be `ok` (or `pong`).
    pub fn ok(&self, request: &Value) -> Result<Value> {
        let reply = self.request(request)?;
        match reply.get("result").and_then(Value::as_str) {
            Some("ok" | "pong") => Ok(reply),
            _ => bail!("ng request {request:?} failed: {reply:?}"),
        }
    }

    /// `ping` until `pong`, at most `within`.
    pub fn wait_for_pong(&self, within: Duration) -> Result<()> {
        let started = std::time::Instant::now();
        let ping = dict(vec![("command", "ping".into())]);
        loop {
            let last = match self.request_with(&ping, Duration::from_millis(100), 1) {
                Ok(r) if r.get("result").and_then(Value::as_str) == Some("pong") => return Ok(()),
                Ok(r) => format!("{r:?}"),
                Err(e) => e.to_string(),
            };
            if started.elapsed() > within {
                bail!("no pong from {} within {within:?} ({last})", self.server)
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One audio stream of PCMU at `addr:port`: the SDP both endpoints of every call offer.
pub fn sdp(addr: Ipv4Addr, port: u16) -> String {
    format!(
        "v=0\r\no=- 1545997027 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )
}

/// The address and port an SDP advertises for its (first) audio stream.
pub fn advertised(sdp: &str) -> Result<SocketAddrV4> {
    let mut addr: Option<Ipv4Addr> = None;
    let mut port: Option<u16> = None;
    for line in sdp.lines() {
        if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            addr = Some(c.trim().parse().context("the c= address")?);
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            if port.is_none() {
                port = m.split_whitespace().next().and_then(|p| p.parse().ok());
            }
        }
    }
    match (addr, port) {
        (Some(a), Some(p)) => Ok(SocketAddrV4::new(a, p)),
        _ => bail!("no c= or m=audio line in:\n{sdp}"),
    }
}

/// The relay's two ends of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchors {
    /// Where the caller sends (the address in the answer the relay returns).
    pub caller_side: SocketAddrV4,
    /// Where the relay sends to the callee from (the address in the offer it returns).
    pub callee_side: SocketAddrV4,
}

/// Sets up one call: the caller's offer (from `caller`) and the callee's answer (from `callee`),
/// with the interface direction `caller` → `callee`.
pub fn offer_answer(
    ng: &NgClient,
    call_id: &str,
    caller: SocketAddrV4,
    callee: SocketAddrV4,
) -> Result<Anchors> {
    let reply = ng.ok(&dict(vec![
        ("command", "offer".into()),
        ("call-id", call_id.into()),
        ("from-tag", "tag-a".into()),
        ("sdp", sdp(*caller.ip(), caller.port()).into()),
        ("direction", vec!["caller", "callee"].into()),
        ("flags", vec!["trust-address"].into()),
        ("replace", vec!["origin"].into()),
        ("ICE", "remove".into()),
    ]))?;
    let callee_side = advertised(
        reply
            .get("sdp")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("no SDP in the offer's reply: {reply:?}"))?,
    )?;
    let reply = ng.ok(&dict(vec![
        ("command", "answer".into()),
        ("call-id", call_id.into()),
        ("from-tag", "tag-a".into()),
        ("to-tag", "tag-b".into()),
        ("sdp", sdp(*callee.ip(), callee.port()).into()),
        ("flags", vec!["trust-address"].into()),
        ("replace", vec!["origin"].into()),
        ("ICE", "remove".into()),
    ]))?;
    let caller_side = advertised(
        reply
            .get("sdp")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("no SDP in the answer's reply: {reply:?}"))?,
    )?;
    Ok(Anchors {
        caller_side,
        callee_side,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bencode_roundtrip() {
        let v = dict(vec![
            ("command", "offer".into()),
            ("flags", vec!["a", "bc"].into()),
            ("n", Value::Int(-12)),
        ]);
        let e = v.encode();
        assert_eq!(
            std::str::from_utf8(&e).unwrap(),
            "d7:command5:offer5:flagsl1:a2:bce1:ni-12ee"
        );
        assert_eq!(Value::decode(&e).unwrap(), v);
        assert!(Value::decode(b"d3:abc").is_err());
        assert!(Value::decode(b"i1ex").is_err());
        assert!(Value::decode(b"5:ab").is_err());
        assert!(Value::decode(b"i1ei2e").is_err());
        let nested = dict(vec![("a", dict(vec![("b", Value::Int(7))]))]);
        assert_eq!(nested.path(&["a", "b"]).and_then(Value::as_int), Some(7));
        assert_eq!(format!("{nested:?}"), r#"{"a": {"b": 7}}"#);
    }

    #[test]
    fn sdp_roundtrip() {
        let s = sdp(Ipv4Addr::new(10, 77, 1, 2), 4000);
        assert_eq!(
            advertised(&s).unwrap(),
            SocketAddrV4::new(Ipv4Addr::new(10, 77, 1, 2), 4000)
        );
        assert!(advertised("v=0\r\n").is_err());
    }
}
