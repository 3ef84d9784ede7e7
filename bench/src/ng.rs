//! A small client of rtpengine's "ng" control protocol: bencode, the `<cookie> <dict>` framing
//! over UDP, and retransmission with the same cookie when a reply is late. `sluice-bench streams
//! --setup ng` and `--against rtpengine` set every stream up through it with an offer and an
//! answer, as a SIP proxy would, so Sluice and rtpengine get the very same signalling.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// A bencoded value.
#[derive(Clone, Debug, PartialEq, Eq)]
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

    /// The string this is, if it is UTF-8 bytes.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
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

/// An ng client on a UDP socket (bound in the namespace the server listens in).
pub struct NgClient {
    socket: UdpSocket,
    server: SocketAddr,
    cookie: u64,
    /// How long to wait for each reply before sending the request again.
    pub wait: Duration,
    /// How many times a request is sent before giving up.
    pub attempts: u32,
    buf: Vec<u8>,
}

impl NgClient {
    /// A client of `server` on `socket`.
    pub fn new(socket: UdpSocket, server: SocketAddr) -> NgClient {
        NgClient {
            socket,
            server,
            cookie: 0,
            wait: Duration::from_millis(2000),
            attempts: 3,
            buf: vec![0; 65_535],
        }
    }

    /// Sends `request` and returns the reply dictionary; late replies to earlier cookies are
    /// skipped, a missing reply is sent again with the same cookie.
    pub fn request(&mut self, request: &Value) -> Result<Value> {
        self.cookie += 1;
        let cookie = format!("{}_{}", std::process::id(), self.cookie);
        let mut datagram = format!("{cookie} ").into_bytes();
        datagram.extend_from_slice(&request.encode());
        self.socket.set_read_timeout(Some(self.wait))?;
        for _ in 0..self.attempts {
            self.socket
                .send_to(&datagram, self.server)
                .with_context(|| format!("sending to {}", self.server))?;
            loop {
                let n = match self.socket.recv_from(&mut self.buf) {
                    Ok((n, _)) => n,
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
                    Err(e) => return Err(e).context("receiving an ng reply"),
                };
                let reply = &self.buf[..n];
                let Some(space) = reply.iter().position(|&b| b == b' ') else {
                    bail!("a reply without a cookie");
                };
                if &reply[..space] != cookie.as_bytes() {
                    continue;
                }
                return Value::decode(&reply[space + 1..]).context("the ng reply");
            }
        }
        bail!(
            "no reply from {} after {} attempts",
            self.server,
            self.attempts
        )
    }

    /// Like [`request`](Self::request), and the reply's `result` must be `ok`.
    pub fn ok(&mut self, request: &Value) -> Result<Value> {
        let reply = self.request(request)?;
        match reply.get("result").and_then(Value::as_str) {
            Some("ok") => Ok(reply),
            _ => bail!("ng request failed: {reply:?}"),
        }
    }

    /// `ping` until `pong`, at most `within`.
    pub fn wait_for_pong(&mut self, within: Duration) -> Result<()> {
        let (wait, attempts) = (self.wait, self.attempts);
        self.wait = Duration::from_millis(100);
        self.attempts = 1;
        let started = std::time::Instant::now();
        let ping = dict(vec![("command", "ping".into())]);
        let mut last = String::new();
        let up = loop {
            match self.request(&ping) {
                Ok(r) if r.get("result").and_then(Value::as_str) == Some("pong") => break true,
                Ok(r) => last = format!("{r:?}"),
                Err(e) => last = e.to_string(),
            }
            if started.elapsed() > within {
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.wait = wait;
        self.attempts = attempts;
        if up {
            Ok(())
        } else {
            bail!("no pong from {} within {within:?} ({last})", self.server)
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
    ng: &mut NgClient,
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
