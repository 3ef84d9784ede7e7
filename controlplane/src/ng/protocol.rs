//! ng message framing, typed requests and reply builders.
//!
//! A datagram is `<cookie> <document>`: the cookie is every byte before the first space and
//! the document is a bencoded (or, as rtpengine also accepts, JSON) dictionary. The reply
//! is `<same cookie> <document>` in the same format as the request.
//!
//! [`parse_datagram`] turns a datagram into a [`Request`]: the command, the SIP identifiers
//! (`call-id`, `from-tag`, `to-tag`, `via-branch`), the SDP body as raw bytes and the
//! [`Flags`] that Kamailio's and OpenSIPS' rtpengine modules send for ordinary calls. Keys and
//! flag names are matched the way rtpengine matches them: case-insensitively, with spaces,
//! hyphens and underscores interchangeable (`received from` = `received-from`,
//! `strict source` = `strict-source`). Everything that is not understood is kept in
//! [`Request::warnings`], and [`finish_reply`] reports those back in the reply's `warning`
//! key (rtpengine's key for non-fatal problems), so a Kamailio operator sees what Sluice
//! ignored.
//!
//! [`Reply`] builds the reply dictionaries: `pong`, `ok` with `sdp`, the `delete`/`query`
//! statistics (from the typed [`CallStats`]), `list`, `error` and `load limit`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use super::bencode::{self, Value};

/// Longest cookie accepted; longer ones are treated as garbage.
pub const MAX_COOKIE_LEN: usize = 256;

/// How the request's document was encoded; the reply uses the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Bencode (what Kamailio and OpenSIPS send).
    #[default]
    Bencode,
    /// JSON, which rtpengine also accepts (documents starting with `{`).
    Json,
}

/// The ng command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `ping`: liveness check; answered with `pong`.
    Ping,
    /// `offer`: SDP offer; needs `call-id`, `from-tag`, `sdp`.
    Offer,
    /// `answer`: SDP answer; needs `call-id`, `from-tag`, `to-tag`, `sdp`.
    Answer,
    /// `delete`: tear down a call or a branch; needs `call-id`, `from-tag`.
    Delete,
    /// `query`: statistics of a call; needs `call-id`.
    Query,
    /// `list`: the active call-ids.
    List,
    /// Any other command (`start recording`, `statistics`, ...), as sent.
    Other(String),
}

impl Command {
    /// Parses the `command` value (case-insensitive, like rtpengine).
    pub fn parse(s: &str) -> Command {
        match canon(s).as_str() {
            "ping" => Command::Ping,
            "offer" => Command::Offer,
            "answer" => Command::Answer,
            "delete" => Command::Delete,
            "query" => Command::Query,
            "list" => Command::List,
            _ => Command::Other(s.to_string()),
        }
    }

    /// The command's protocol name.
    pub fn as_str(&self) -> &str {
        match self {
            Command::Ping => "ping",
            Command::Offer => "offer",
            Command::Answer => "answer",
            Command::Delete => "delete",
            Command::Query => "query",
            Command::List => "list",
            Command::Other(s) => s,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An address family as named in the ng protocol (`IP4`/`IP6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressFamily {
    /// `IP4`
    Ip4,
    /// `IP6`
    Ip6,
}

impl AddressFamily {
    fn parse(s: &str) -> Option<AddressFamily> {
        match s.to_ascii_uppercase().as_str() {
            "IP4" | "IPV4" => Some(AddressFamily::Ip4),
            "IP6" | "IPV6" => Some(AddressFamily::Ip6),
            _ => None,
        }
    }
}

/// `ICE` handling requested for the SDP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceMode {
    /// `remove`: strip ICE attributes.
    Remove,
    /// `force`: strip and insert our own candidates only.
    Force,
    /// `default`: like `force` if the SDP had ICE, else nothing.
    Default,
    /// `force-relay`: insert ourselves as a relay candidate.
    ForceRelay,
    /// `optional`: add ourselves as a low-priority candidate.
    Optional,
}

impl IceMode {
    fn parse(s: &str) -> Option<IceMode> {
        match canon(s).as_str() {
            "remove" => Some(IceMode::Remove),
            "force" => Some(IceMode::Force),
            "default" => Some(IceMode::Default),
            "force-relay" => Some(IceMode::ForceRelay),
            "optional" => Some(IceMode::Optional),
            _ => None,
        }
    }
}

/// `DTLS` handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsMode {
    /// `off`/`no`/`disable`
    Off,
    /// `passive`
    Passive,
    /// `active`
    Active,
}

/// `transport-protocol` override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportProtocol {
    /// `RTP/AVP`
    RtpAvp,
    /// `RTP/AVPF`
    RtpAvpf,
    /// `RTP/SAVP`
    RtpSavp,
    /// `RTP/SAVPF`
    RtpSavpf,
    /// `accept` (answers only): go along with the answerer's protocol.
    Accept,
}

impl TransportProtocol {
    fn parse(s: &str) -> Option<TransportProtocol> {
        match s.to_ascii_uppercase().as_str() {
            "RTP/AVP" => Some(TransportProtocol::RtpAvp),
            "RTP/AVPF" => Some(TransportProtocol::RtpAvpf),
            "RTP/SAVP" => Some(TransportProtocol::RtpSavp),
            "RTP/SAVPF" => Some(TransportProtocol::RtpSavpf),
            "ACCEPT" => Some(TransportProtocol::Accept),
            _ => None,
        }
    }

    /// The SDP name (`RTP/AVP`, ...; `accept` for [`TransportProtocol::Accept`]).
    pub fn as_str(self) -> &'static str {
        match self {
            TransportProtocol::RtpAvp => "RTP/AVP",
            TransportProtocol::RtpAvpf => "RTP/AVPF",
            TransportProtocol::RtpSavp => "RTP/SAVP",
            TransportProtocol::RtpSavpf => "RTP/SAVPF",
            TransportProtocol::Accept => "accept",
        }
    }
}

/// `replace` list: which SDP parts to rewrite besides the media addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Replace {
    /// `origin`: the address in `o=`.
    pub origin: bool,
    /// `origin-full`: the whole `o=` line.
    pub origin_full: bool,
    /// `session-connection` (legacy; rtpengine always rewrites `c=` now).
    pub session_connection: bool,
    /// `username`: keep the `o=` username stable.
    pub username: bool,
    /// `session-name`: keep `s=` stable.
    pub session_name: bool,
    /// `sdp-version`: manage the `o=` version.
    pub sdp_version: bool,
    /// `force-increment-sdp-ver`
    pub force_increment_sdp_ver: bool,
    /// `zero-address`: replace a `0.0.0.0` connection address.
    pub zero_address: bool,
}

/// `rtcp-mux` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtcpMux {
    /// `offer`
    pub offer: bool,
    /// `require`
    pub require: bool,
    /// `demux`
    pub demux: bool,
    /// `accept`
    pub accept: bool,
    /// `reject`
    pub reject: bool,
}

/// `received-from`: the SIP message's source address, as `[family, address]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedFrom {
    /// The declared family.
    pub family: AddressFamily,
    /// The address.
    pub address: IpAddr,
}

/// The options of an ng request that Sluice understands. Flags absent from the request are
/// `false`/`None`/empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Flags {
    /// `direction` (or `from-interface`/`to-interface`): logical interface names, the
    /// message's originator's first.
    pub direction: Vec<String>,
    /// `ICE`
    pub ice: Option<IceMode>,
    /// `ICE` list extras (`trickle`, `lite-*`, `ice2`) and `trickle ICE`, as given.
    pub ice_options: Vec<String>,
    /// `replace` list and `replace-*` flags.
    pub replace: Replace,
    /// `symmetric` (Some(true)) or `asymmetric` (Some(false)).
    pub symmetric: Option<bool>,
    /// `strict-source`: drop media not from the learned endpoint.
    pub strict_source: bool,
    /// `trust-address`: trust SDP addresses over `received-from`.
    pub trust_address: bool,
    /// `SIP-source-address`: use `received-from` instead of SDP addresses.
    pub sip_source_address: bool,
    /// `port-latching`
    pub port_latching: bool,
    /// `no-port-latching`
    pub no_port_latching: bool,
    /// `loop-protect`
    pub loop_protect: bool,
    /// `media-handover`
    pub media_handover: bool,
    /// `reset`
    pub reset: bool,
    /// `record-call` flag or `record call` = `yes`/`on` (Some(true)) / `no`/`off`.
    pub record_call: Option<bool>,
    /// `label` / `from-label`
    pub label: Option<String>,
    /// `to-label`
    pub to_label: Option<String>,
    /// `set-label`
    pub set_label: Option<String>,
    /// `from-tags` list and `from-tags-*` flags.
    pub from_tags: Vec<String>,
    /// `received-from`
    pub received_from: Option<ReceivedFrom>,
    /// `transport-protocol` (also a bare `RTP/AVP`-style flag).
    pub transport_protocol: Option<TransportProtocol>,
    /// `rtcp-mux` list and `rtcp-mux-*` flags.
    pub rtcp_mux: RtcpMux,
    /// `SDES` list and `SDES-*` flags, as given (`off`, `no-<suite>`, `only-<suite>`, ...).
    pub sdes: Vec<String>,
    /// `DTLS`
    pub dtls: Option<DtlsMode>,
    /// `OSRTP` list and `OSRTP-*` flags, as given.
    pub osrtp: Vec<String>,
    /// `media-address`
    pub media_address: Option<IpAddr>,
    /// `address-family`
    pub address_family: Option<AddressFamily>,
    /// `codec` dictionary and `codec-<op>-<codec>` flags: op (`strip`, `mask`, `offer`,
    /// `transcode`, `accept`, `consume`, `except`, `set`, `ignore`) -> codecs, in order.
    pub codec: BTreeMap<String, Vec<String>>,
    /// `supports` contains `load limit`.
    pub supports_load_limit: bool,
    /// `xmlrpc-callback`: where to send the timeout callback for this call.
    pub xmlrpc_callback: Option<IpAddr>,
    /// `delete` flag `fatal`: unknown call is an error, not a warning.
    pub fatal: bool,
    /// `delete` flag `fast`: no statistics in the reply.
    pub fast: bool,
    /// `delete` flag `to-tag`: honour the to-tag.
    pub to_tag_flag: bool,
    /// `delete delay` in seconds.
    pub delete_delay: Option<i64>,
    /// `list` `limit` (rtpengine's default is 32).
    pub limit: Option<u32>,
}

/// A parsed ng request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The cookie, echoed in the reply.
    pub cookie: String,
    /// The command.
    pub command: Command,
    /// `call-id`; always `Some` for offer, answer, delete and query.
    pub call_id: Option<String>,
    /// `from-tag`; always `Some` for offer, answer and delete.
    pub from_tag: Option<String>,
    /// `to-tag`; always `Some` for answer.
    pub to_tag: Option<String>,
    /// `via-branch`
    pub via_branch: Option<String>,
    /// `sdp`, raw; always `Some` for offer and answer.
    pub sdp: Option<Vec<u8>>,
    /// The typed options.
    pub flags: Flags,
    /// Keys, flags and values that were not understood, one message each; reported back in
    /// the reply's `warning`.
    pub warnings: Vec<String>,
    /// The whole request dictionary, for commands or keys this module does not type.
    pub raw: Value,
    /// The document format, used for the reply.
    pub format: Format,
    /// Where the datagram came from (set by the server; `None` when parsed standalone).
    pub source: Option<SocketAddr>,
}

/// A request whose cookie was readable but whose document was not acceptable; it is
/// answered with an `error` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    /// The cookie to answer with.
    pub cookie: String,
    /// The `error-reason`.
    pub reason: String,
    /// The format to answer in.
    pub format: Format,
}

impl RequestError {
    /// The error reply, encoded with the cookie.
    pub fn reply(&self) -> Vec<u8> {
        Reply::error(&self.reason).encode(&self.cookie, self.format)
    }
}

/// Splits a datagram into cookie and document. `None` if there is no usable cookie (no
/// space, empty, longer than [`MAX_COOKIE_LEN`], not printable ASCII): such datagrams are
/// dropped unanswered, as rtpengine does.
pub fn split_cookie(datagram: &[u8]) -> Option<(&str, &[u8])> {
    let sp = datagram.iter().position(|&b| b == b' ')?;
    let (cookie, rest) = (&datagram[..sp], &datagram[sp + 1..]);
    if cookie.is_empty()
        || cookie.len() > MAX_COOKIE_LEN
        || !cookie.iter().all(|b| b.is_ascii_graphic())
    {
        return None;
    }
    // All bytes are ASCII graphic, so this cannot fail.
    let cookie = std::str::from_utf8(cookie).ok()?;
    Some((cookie, rest))
}

/// Parses one datagram. `None`: garbage without a cookie (drop it, count it).
/// `Some(Err(_))`: answer with [`RequestError::reply`]. `Some(Ok(_))`: a request.
pub fn parse_datagram(datagram: &[u8]) -> Option<Result<Request, RequestError>> {
    let (cookie, doc) = split_cookie(datagram)?;
    Some(parse_document(cookie, doc))
}

/// Parses the document part of a request for `cookie`.
pub fn parse_document(cookie: &str, doc: &[u8]) -> Result<Request, RequestError> {
    let fail = |format: Format, reason: String| RequestError {
        cookie: cookie.to_string(),
        reason,
        format,
    };
    let first = doc.iter().position(|b| !b.is_ascii_whitespace());
    let (format, raw) = match first.map(|i| doc[i]) {
        None => return Err(fail(Format::Bencode, "Invalid data (no payload)".into())),
        Some(b'{') => match serde_json::from_slice::<serde_json::Value>(doc) {
            Ok(j) => (Format::Json, json_to_value(&j, 0)),
            Err(_) => return Err(fail(Format::Json, "Failed to parse JSON document".into())),
        },
        Some(_) => match bencode::decode(doc) {
            Ok((v, _)) => (Format::Bencode, v),
            Err(e) => {
                return Err(fail(
                    Format::Bencode,
                    format!("Could not decode bencode dictionary: {e}"),
                ))
            }
        },
    };
    let Some(dict) = raw.as_dict() else {
        return Err(fail(
            format,
            format!("Could not decode dictionary: got a {}", raw.kind()),
        ));
    };
    let mut p = Parser {
        flags: Flags::default(),
        warnings: Vec::new(),
    };
    let mut command = None;
    let mut ids: [Option<String>; 4] = Default::default();
    let mut sdp = None;
    for (k, v) in dict {
        let key = String::from_utf8_lossy(k);
        let ck = canon(&key);
        let slot = match ck.as_str() {
            "command" => {
                let s = v
                    .as_str()
                    .ok_or_else(|| fail(format, "Value of \"command\" is not a string".into()))?;
                command = Some(Command::parse(s));
                continue;
            }
            "sdp" => {
                let b = v
                    .as_bytes()
                    .ok_or_else(|| fail(format, "Value of \"sdp\" is not a string".into()))?;
                sdp = Some(b.to_vec());
                continue;
            }
            "call-id" => 0,
            "from-tag" => 1,
            "to-tag" => 2,
            "via-branch" => 3,
            _ => {
                p.key(&key, v, 0).map_err(|r| fail(format, r))?;
                continue;
            }
        };
        let s = v
            .as_str()
            .ok_or_else(|| fail(format, format!("Value of \"{key}\" is not a string")))?;
        ids[slot] = Some(s.to_string());
    }
    let Some(command) = command else {
        return Err(fail(
            format,
            "Dictionary contains no key \"command\"".into(),
        ));
    };
    let [call_id, from_tag, to_tag, via_branch] = ids;
    let missing = |what: &str| fail(format, format!("No {what} in message"));
    match command {
        Command::Offer | Command::Answer => {
            if call_id.is_none() {
                return Err(missing("call-id"));
            }
            if from_tag.is_none() {
                return Err(missing("from-tag"));
            }
            if command == Command::Answer && to_tag.is_none() {
                return Err(missing("to-tag"));
            }
            if sdp.is_none() {
                return Err(missing("SDP body"));
            }
        }
        Command::Delete => {
            if call_id.is_none() {
                return Err(missing("call-id"));
            }
            if from_tag.is_none() {
                return Err(missing("from-tag"));
            }
        }
        Command::Query if call_id.is_none() => return Err(missing("call-id")),
        _ => {}
    }
    Ok(Request {
        cookie: cookie.to_string(),
        command,
        call_id,
        from_tag,
        to_tag,
        via_branch,
        sdp,
        flags: p.flags,
        warnings: p.warnings,
        raw,
        format,
        source: None,
    })
}

/// Canonical spelling of a key or flag: lower case, `-` for spaces and underscores.
pub fn canon(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| match c {
            ' ' | '_' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Deepest nesting followed inside `rtpp-flags` and flag values.
const MAX_FLAG_DEPTH: usize = 4;

struct Parser {
    flags: Flags,
    warnings: Vec<String>,
}

/// A string or the strings of a list (a single string counts as a one-element list, which
/// is what `key=value` flag syntax produces).
fn strings<'a>(key: &str, v: &'a Value) -> Result<Vec<&'a str>, String> {
    match v {
        Value::Bytes(_) => Ok(vec![str_of(key, v)?]),
        Value::List(l) => l.iter().map(|i| str_of(key, i)).collect(),
        other => Err(format!(
            "Value of \"{key}\" must be a string or a list, not a {}",
            other.kind()
        )),
    }
}

fn str_of<'a>(key: &str, v: &'a Value) -> Result<&'a str, String> {
    match v {
        Value::Bytes(b) => {
            std::str::from_utf8(b).map_err(|_| format!("Value of \"{key}\" is not valid UTF-8"))
        }
        other => Err(format!(
            "Value of \"{key}\" must be a string, not a {}",
            other.kind()
        )),
    }
}

fn int_of(key: &str, v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Bytes(_) => str_of(key, v)?
            .trim()
            .parse()
            .map_err(|_| format!("Value of \"{key}\" is not an integer")),
        other => Err(format!(
            "Value of \"{key}\" must be an integer, not a {}",
            other.kind()
        )),
    }
}

fn ip_of(key: &str, s: &str) -> Result<IpAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("Value of \"{key}\" is not an IP address: {s:?}"))
}

fn yes_no(s: &str) -> Option<bool> {
    match canon(s).as_str() {
        "yes" | "on" | "true" | "1" => Some(true),
        "no" | "off" | "false" | "0" => Some(false),
        _ => None,
    }
}

impl Parser {
    fn warn(&mut self, msg: String) {
        self.warnings.push(msg);
    }

    /// Handles one dictionary key (or a `key=value` flag). Type errors are fatal (error
    /// reply); unknown keys and values are warnings.
    fn key(&mut self, key: &str, v: &Value, depth: usize) -> Result<(), String> {
        let f = &mut self.flags;
        match canon(key).as_str() {
            "flags" => {
                for s in strings(key, v)? {
                    self.flag(s, depth)?;
                }
            }
            "replace" => {
                for s in strings(key, v)? {
                    self.replace(s);
                }
            }
            "direction" => f
                .direction
                .extend(strings(key, v)?.into_iter().map(String::from)),
            "from-interface" => {
                let s = str_of(key, v)?.to_string();
                f.direction.insert(0, s);
            }
            "to-interface" => f.direction.push(str_of(key, v)?.to_string()),
            "ice" => {
                for s in strings(key, v)? {
                    match IceMode::parse(s) {
                        Some(m) => self.flags.ice = Some(m),
                        None => match canon(s).as_str() {
                            "trickle" | "ice2" | "lite-forward" | "lite-backward" | "lite-both"
                            | "lite-off" => self.flags.ice_options.push(s.to_string()),
                            _ => self.warn(format!("Unknown ICE value '{s}'")),
                        },
                    }
                }
            }
            "received-from" => {
                let l = strings(key, v)?;
                let [fam, addr] = l.as_slice() else {
                    return Err(format!("Value of \"{key}\" must be a list of two strings"));
                };
                let family = AddressFamily::parse(fam)
                    .ok_or_else(|| format!("Unknown address family in \"{key}\": {fam:?}"))?;
                f.received_from = Some(ReceivedFrom {
                    family,
                    address: ip_of(key, addr)?,
                });
            }
            "transport-protocol" => {
                let s = str_of(key, v)?;
                match TransportProtocol::parse(s) {
                    Some(t) => f.transport_protocol = Some(t),
                    None => self.warn(format!("Unknown transport protocol '{s}'")),
                }
            }
            "rtcp-mux" => {
                for s in strings(key, v)? {
                    self.rtcp_mux(s);
                }
            }
            "sdes" => f
                .sdes
                .extend(strings(key, v)?.into_iter().map(String::from)),
            "osrtp" => f
                .osrtp
                .extend(strings(key, v)?.into_iter().map(String::from)),
            "dtls" => {
                let s = str_of(key, v)?;
                match canon(s).as_str() {
                    "off" | "no" | "disable" => f.dtls = Some(DtlsMode::Off),
                    "passive" => f.dtls = Some(DtlsMode::Passive),
                    "active" => f.dtls = Some(DtlsMode::Active),
                    _ => self.warn(format!("Unknown DTLS value '{s}'")),
                }
            }
            "media-address" => f.media_address = Some(ip_of(key, str_of(key, v)?)?),
            "address-family" => {
                let s = str_of(key, v)?;
                match AddressFamily::parse(s) {
                    Some(a) => f.address_family = Some(a),
                    None => self.warn(format!("Unknown address family '{s}'")),
                }
            }
            "label" | "from-label" => f.label = Some(str_of(key, v)?.to_string()),
            "to-label" => f.to_label = Some(str_of(key, v)?.to_string()),
            "set-label" => f.set_label = Some(str_of(key, v)?.to_string()),
            "from-tags" => f
                .from_tags
                .extend(strings(key, v)?.into_iter().map(String::from)),
            "record-call" => {
                let s = str_of(key, v)?;
                match yes_no(s) {
                    Some(b) => f.record_call = Some(b),
                    None => self.warn(format!("Unknown record-call value '{s}'")),
                }
            }
            "supports" => {
                for s in strings(key, v)? {
                    if canon(s) == "load-limit" {
                        self.flags.supports_load_limit = true;
                    } else {
                        self.warn(format!("Unknown supports value '{s}'"));
                    }
                }
            }
            "xmlrpc-callback" => f.xmlrpc_callback = Some(ip_of(key, str_of(key, v)?)?),
            "delete-delay" => f.delete_delay = Some(int_of(key, v)?),
            "limit" => {
                let n = int_of(key, v)?;
                f.limit = Some(
                    u32::try_from(n)
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| format!("Value of \"{key}\" must be > 0"))?,
                );
            }
            "codec" => {
                let Some(d) = v.as_dict() else {
                    return Err(format!(
                        "Value of \"{key}\" must be a dictionary, not a {}",
                        v.kind()
                    ));
                };
                for (op, codecs) in d {
                    let op = canon(&String::from_utf8_lossy(op));
                    let list = strings(&op, codecs)?;
                    self.codec(&op, list.into_iter().map(String::from));
                }
            }
            "rtpp-flags" => {
                let s = str_of(key, v)?;
                if depth >= MAX_FLAG_DEPTH {
                    return Err("rtpp-flags nested too deeply".into());
                }
                for item in parse_rtpp_flags(s)? {
                    match item {
                        (k, Some(v)) => self.key(&k, &v, depth + 1)?,
                        (k, None) => self.flag(&k, depth + 1)?,
                    }
                }
            }
            _ => self.warn(format!("Unknown key '{key}'")),
        }
        Ok(())
    }

    /// Handles one item of the `flags` list.
    fn flag(&mut self, item: &str, depth: usize) -> Result<(), String> {
        if let Some((k, v)) = item.split_once('=') {
            if depth >= MAX_FLAG_DEPTH {
                return Err("flags nested too deeply".into());
            }
            return self.key(k, &Value::bytes(v), depth + 1);
        }
        if let Some(t) = TransportProtocol::parse(item) {
            if t != TransportProtocol::Accept {
                self.flags.transport_protocol = Some(t);
                return Ok(());
            }
        }
        let c = canon(item);
        let f = &mut self.flags;
        match c.as_str() {
            "symmetric" => f.symmetric = Some(true),
            "asymmetric" => f.symmetric = Some(false),
            "strict-source" => f.strict_source = true,
            "trust-address" => f.trust_address = true,
            "sip-source-address" => f.sip_source_address = true,
            "port-latching" => f.port_latching = true,
            "no-port-latching" => f.no_port_latching = true,
            "loop-protect" => f.loop_protect = true,
            "media-handover" => f.media_handover = true,
            "reset" => f.reset = true,
            "record-call" => f.record_call = Some(true),
            "fatal" => f.fatal = true,
            "fast" => f.fast = true,
            "to-tag" => f.to_tag_flag = true,
            "trickle-ice" => f.ice_options.push("trickle".into()),
            _ => {
                if let Some(r) = c.strip_prefix("replace-") {
                    self.replace(r);
                } else if let Some(r) = c.strip_prefix("rtcp-mux-") {
                    self.rtcp_mux(r);
                } else if let Some(r) = prefix_ci(item, "SDES-") {
                    f.sdes.push(r.to_string());
                } else if let Some(r) = prefix_ci(item, "OSRTP-") {
                    f.osrtp.push(r.to_string());
                } else if let Some(r) = prefix_ci(item, "from-tags-") {
                    f.from_tags.push(r.to_string());
                } else if let Some(r) = prefix_ci(item, "codec-") {
                    match r.split_once('-') {
                        Some((op, codec)) if !codec.is_empty() => {
                            self.codec(&canon(op), std::iter::once(codec.to_string()))
                        }
                        _ => self.warn(format!("Unknown flag '{item}'")),
                    }
                } else {
                    self.warn(format!("Unknown flag '{item}'"));
                }
            }
        }
        Ok(())
    }

    fn replace(&mut self, s: &str) {
        let r = &mut self.flags.replace;
        match canon(s).as_str() {
            "origin" => r.origin = true,
            "origin-full" => r.origin_full = true,
            "session-connection" => r.session_connection = true,
            "username" => r.username = true,
            "session-name" => r.session_name = true,
            "sdp-version" => r.sdp_version = true,
            "force-increment-sdp-ver" => r.force_increment_sdp_ver = true,
            "zero-address" => r.zero_address = true,
            _ => self.warn(format!("Unknown replace value '{s}'")),
        }
    }

    fn rtcp_mux(&mut self, s: &str) {
        let m = &mut self.flags.rtcp_mux;
        match canon(s).as_str() {
            "offer" => m.offer = true,
            "require" => m.require = true,
            "demux" => m.demux = true,
            "accept" => m.accept = true,
            "reject" => m.reject = true,
            _ => self.warn(format!("Unknown rtcp-mux value '{s}'")),
        }
    }

    fn codec(&mut self, op: &str, codecs: impl Iterator<Item = String>) {
        const OPS: [&str; 9] = [
            "strip",
            "mask",
            "offer",
            "transcode",
            "accept",
            "consume",
            "except",
            "set",
            "ignore",
        ];
        if OPS.contains(&op) {
            self.flags
                .codec
                .entry(op.to_string())
                .or_default()
                .extend(codecs);
        } else {
            self.warn(format!("Unknown codec operation '{op}'"));
        }
    }
}

fn prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    (canon(head) == canon(prefix)).then(|| &s[prefix.len()..])
}

/// Parses rtpengine's `rtpp-flags` string syntax: whitespace-separated `flag`,
/// `key=value` and `key=[item item ...]` items (brackets nest; inside brackets `k=v` items
/// make a dictionary, bare items a list). Returns `(key, Some(value))` for assignments and
/// `(flag, None)` for bare flags.
pub fn parse_rtpp_flags(s: &str) -> Result<Vec<(String, Option<Value>)>, String> {
    let mut toks = tokenize_rtpp(s)?.into_iter().peekable();
    let mut out = Vec::new();
    while let Some(t) = toks.next() {
        match t {
            Tok::Word(w) => {
                if let Some(k) = w.strip_suffix('=') {
                    if toks.peek() == Some(&Tok::Open) {
                        toks.next();
                        let v = rtpp_group(&mut toks, 1)?;
                        out.push((k.to_string(), Some(v)));
                        continue;
                    }
                }
                match w.split_once('=') {
                    Some((k, v)) => out.push((k.to_string(), Some(Value::bytes(v)))),
                    None => out.push((w, None)),
                }
            }
            Tok::Open | Tok::Close => return Err("Unbalanced brackets in rtpp-flags".into()),
        }
    }
    Ok(out)
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    Open,
    Close,
}

fn tokenize_rtpp(s: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '[' if cur.ends_with('=') || cur.is_empty() => {
                if !cur.is_empty() {
                    toks.push(Tok::Word(std::mem::take(&mut cur)));
                }
                toks.push(Tok::Open);
            }
            ']' => {
                if !cur.is_empty() {
                    toks.push(Tok::Word(std::mem::take(&mut cur)));
                }
                toks.push(Tok::Close);
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    toks.push(Tok::Word(std::mem::take(&mut cur)));
                }
            }
            c => cur.push(c),
        }
        if toks.len() > 10_000 {
            return Err("rtpp-flags too long".into());
        }
    }
    if !cur.is_empty() {
        toks.push(Tok::Word(cur));
    }
    Ok(toks)
}

fn rtpp_group(
    toks: &mut std::iter::Peekable<std::vec::IntoIter<Tok>>,
    depth: usize,
) -> Result<Value, String> {
    if depth > MAX_FLAG_DEPTH {
        return Err("rtpp-flags nested too deeply".into());
    }
    let mut list = Vec::new();
    let mut dict = BTreeMap::new();
    loop {
        match toks.next() {
            None => return Err("Unbalanced brackets in rtpp-flags".into()),
            Some(Tok::Close) => break,
            Some(Tok::Open) => list.push(rtpp_group(toks, depth + 1)?),
            Some(Tok::Word(w)) => {
                if let Some(k) = w.strip_suffix('=') {
                    if toks.peek() == Some(&Tok::Open) {
                        toks.next();
                        dict.insert(k.as_bytes().to_vec(), rtpp_group(toks, depth + 1)?);
                        continue;
                    }
                }
                match w.split_once('=') {
                    Some((k, v)) => {
                        dict.insert(k.as_bytes().to_vec(), Value::bytes(v));
                    }
                    None => list.push(Value::bytes(w)),
                }
            }
        }
    }
    if dict.is_empty() {
        Ok(Value::List(list))
    } else {
        for v in list {
            if let Value::Bytes(b) = v {
                dict.insert(b, Value::List(Vec::new()));
            }
        }
        Ok(Value::Dict(dict))
    }
}

fn json_to_value(j: &serde_json::Value, depth: usize) -> Value {
    use serde_json::Value as J;
    if depth > bencode::Limits::DEFAULT.max_depth {
        return Value::List(Vec::new());
    }
    match j {
        J::Null => Value::bytes(""),
        J::Bool(b) => Value::Int(i64::from(*b)),
        J::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .unwrap_or_else(|| Value::bytes(n.to_string())),
        J::String(s) => Value::bytes(s.as_str()),
        J::Array(a) => Value::List(a.iter().map(|v| json_to_value(v, depth + 1)).collect()),
        J::Object(o) => Value::Dict(
            o.iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), json_to_value(v, depth + 1)))
                .collect(),
        ),
    }
}

fn value_to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Int(i) => J::from(*i),
        Value::Bytes(b) => J::String(String::from_utf8_lossy(b).into_owned()),
        Value::List(l) => J::Array(l.iter().map(value_to_json).collect()),
        Value::Dict(d) => J::Object(
            d.iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), value_to_json(v)))
                .collect(),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Replies

/// A reply dictionary. Build one with the constructors, then [`Reply::encode`] it with the
/// request's cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    dict: BTreeMap<Vec<u8>, Value>,
}

impl Reply {
    fn result(result: &str) -> Reply {
        let mut dict = BTreeMap::new();
        dict.insert(b"result".to_vec(), Value::bytes(result));
        Reply { dict }
    }

    /// `{"result": "pong"}`
    pub fn pong() -> Reply {
        Reply::result("pong")
    }

    /// `{"result": "ok"}`
    pub fn ok() -> Reply {
        Reply::result("ok")
    }

    /// `{"result": "ok", "sdp": <sdp>}`: the reply to offer and answer.
    pub fn sdp(sdp: impl Into<Vec<u8>>) -> Reply {
        Reply::ok().with("sdp", Value::Bytes(sdp.into()))
    }

    /// `{"result": "error", "error-reason": <reason>}`. No other key may be added.
    pub fn error(reason: &str) -> Reply {
        Reply::result("error").with_raw("error-reason", Value::bytes(reason))
    }

    /// `{"result": "load limit", "message": <message>}`: the answer to an offer over the
    /// session limit when the request had `supports: ["load limit"]`.
    pub fn load_limit(message: &str) -> Reply {
        Reply::result("load limit").with_raw("message", Value::bytes(message))
    }

    /// The reply to `delete` and `query`: `result: ok` plus `created`, `last signal`,
    /// `totals` and `tags`, shaped as rtpengine's `query` reply.
    pub fn call_stats(stats: &CallStats) -> Reply {
        let mut r = Reply::ok();
        for (k, v) in stats.to_dict() {
            r.dict.insert(k, v);
        }
        r
    }

    /// `{"result": "ok", "calls": [<call-id>...]}`: the reply to `list`.
    pub fn list<S: AsRef<str>>(calls: &[S]) -> Reply {
        Reply::ok().with(
            "calls",
            Value::List(calls.iter().map(|c| Value::bytes(c.as_ref())).collect()),
        )
    }

    fn with_raw(mut self, key: &str, value: Value) -> Reply {
        self.dict.insert(key.as_bytes().to_vec(), value);
        self
    }

    /// Adds a key (ignored on an error reply, which carries `error-reason` only).
    pub fn with(self, key: &str, value: impl Into<Value>) -> Reply {
        if self.is_error() {
            return self;
        }
        self.with_raw(key, value.into())
    }

    /// Appends to the `warning` string (`; `-separated); ignored on an error reply.
    pub fn with_warning(mut self, warning: &str) -> Reply {
        if self.is_error() || warning.is_empty() {
            return self;
        }
        let text = match self.dict.get(&b"warning"[..]).and_then(Value::as_str) {
            Some(old) if !old.is_empty() => format!("{old}; {warning}"),
            _ => warning.to_string(),
        };
        self.dict.insert(b"warning".to_vec(), Value::bytes(text));
        self
    }

    /// The `result` value.
    pub fn result_str(&self) -> &str {
        self.dict
            .get(&b"result"[..])
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// Whether `result` is `error`.
    pub fn is_error(&self) -> bool {
        self.result_str() == "error"
    }

    /// The reply as a bencode value.
    pub fn to_value(&self) -> Value {
        Value::Dict(self.dict.clone())
    }

    /// `<cookie> <document>` in `format`.
    pub fn encode(&self, cookie: &str, format: Format) -> Vec<u8> {
        let mut out = Vec::with_capacity(cookie.len() + 64);
        out.extend_from_slice(cookie.as_bytes());
        out.push(b' ');
        match format {
            Format::Bencode => bencode::encode_into(&self.to_value(), &mut out),
            Format::Json => {
                out.extend_from_slice(value_to_json(&self.to_value()).to_string().as_bytes())
            }
        }
        out
    }
}

/// Adds the request's parse warnings to the handler's reply and encodes it with the
/// request's cookie and format.
pub fn finish_reply(req: &Request, reply: Reply) -> Vec<u8> {
    let mut reply = reply;
    if !req.warnings.is_empty() {
        reply = reply.with_warning(&req.warnings.join("; "));
    }
    reply.encode(&req.cookie, req.format)
}

/// Packet counters of a stream, or totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketStats {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
    /// Errors (dropped, malformed, ...).
    pub errors: u64,
}

impl PacketStats {
    fn to_value(self) -> Value {
        Value::dict()
            .with("packets", self.packets)
            .with("bytes", self.bytes)
            .with("errors", self.errors)
    }
}

/// Call-wide `totals`: `RTP` and `RTCP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallTotals {
    /// RTP counters.
    pub rtp: PacketStats,
    /// RTCP counters.
    pub rtcp: PacketStats,
}

/// One packet stream (usually one for RTP and one for RTCP per media).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamStats {
    /// `local port`; `None` for an inactive stream.
    pub local_port: Option<u16>,
    /// `endpoint`: where packets are forwarded to (learned).
    pub endpoint: Option<SocketAddr>,
    /// `advertised endpoint`: the address in the SDP.
    pub advertised_endpoint: Option<SocketAddr>,
    /// `crypto suite`, if SRTP is in effect.
    pub crypto_suite: Option<String>,
    /// `last packet`: UNIX time (seconds) of the last packet received.
    pub last_packet: Option<u64>,
    /// `flags`: `RTP`, `RTCP`, `filled`, `confirmed`, `kernelized`, ...
    pub flags: Vec<String>,
    /// `stats`
    pub stats: PacketStats,
}

/// One SDP media section of a tag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MediaStats {
    /// `index`, from 1.
    pub index: u32,
    /// `type`: `audio`, `video`, ...
    pub media_type: String,
    /// `protocol`: `RTP/AVP`, ...
    pub protocol: Option<String>,
    /// `flags`: `initialized`, `rtcp-mux`, `DTLS-SRTP`, `SDES`, `passthrough`, `ICE`.
    pub flags: Vec<String>,
    /// `streams`
    pub streams: Vec<StreamStats>,
}

/// One SIP tag (call participant).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TagStats {
    /// The tag; may be empty for a side that has not signalled its tag yet.
    pub tag: String,
    /// `label`
    pub label: Option<String>,
    /// `created`: UNIX time in seconds.
    pub created: u64,
    /// `in dialogue with`: the other side's tag.
    pub in_dialogue_with: Option<String>,
    /// `medias`
    pub medias: Vec<MediaStats>,
}

/// Everything the `query` and `delete` replies report about a call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallStats {
    /// `created`: UNIX time in seconds.
    pub created: u64,
    /// `last signal`: UNIX time in seconds of the last offer/answer/...
    pub last_signal: u64,
    /// `tags`, keyed by tag in the reply.
    pub tags: Vec<TagStats>,
    /// `totals`
    pub totals: CallTotals,
}

fn endpoint_value(a: SocketAddr) -> Value {
    Value::dict()
        .with("family", if a.is_ipv4() { "IPv4" } else { "IPv6" })
        .with("address", a.ip().to_string())
        .with("port", a.port())
}

fn strings_value(l: &[String]) -> Value {
    Value::List(l.iter().map(|s| Value::bytes(s.as_str())).collect())
}

impl StreamStats {
    /// The stream's dictionary.
    pub fn to_value(&self) -> Value {
        let mut v = Value::dict()
            .with("stats", self.stats.to_value())
            .with("flags", strings_value(&self.flags));
        if let Some(p) = self.local_port {
            v = v.with("local port", p);
        }
        if let Some(e) = self.endpoint {
            v = v.with("endpoint", endpoint_value(e));
        }
        if let Some(e) = self.advertised_endpoint {
            v = v.with("advertised endpoint", endpoint_value(e));
        }
        if let Some(c) = &self.crypto_suite {
            v = v.with("crypto suite", c.as_str());
        }
        if let Some(t) = self.last_packet {
            v = v.with("last packet", t);
        }
        v
    }
}

impl MediaStats {
    /// The media's dictionary.
    pub fn to_value(&self) -> Value {
        let mut v = Value::dict()
            .with("index", self.index)
            .with("type", self.media_type.as_str())
            .with("flags", strings_value(&self.flags))
            .with(
                "streams",
                Value::List(self.streams.iter().map(StreamStats::to_value).collect()),
            );
        if let Some(p) = &self.protocol {
            v = v.with("protocol", p.as_str());
        }
        v
    }
}

impl TagStats {
    /// The tag's dictionary.
    pub fn to_value(&self) -> Value {
        let mut v = Value::dict()
            .with("tag", self.tag.as_str())
            .with("created", self.created)
            .with(
                "medias",
                Value::List(self.medias.iter().map(MediaStats::to_value).collect()),
            );
        if let Some(l) = &self.label {
            v = v.with("label", l.as_str());
        }
        if let Some(o) = &self.in_dialogue_with {
            v = v.with("in dialogue with", o.as_str());
        }
        v
    }
}

impl CallStats {
    /// The keys this adds to a reply: `created`, `last signal`, `totals`, `tags`.
    pub fn to_dict(&self) -> BTreeMap<Vec<u8>, Value> {
        let tags: BTreeMap<Vec<u8>, Value> = self
            .tags
            .iter()
            .map(|t| (t.tag.as_bytes().to_vec(), t.to_value()))
            .collect();
        let totals = Value::dict()
            .with("RTP", self.totals.rtp.to_value())
            .with("RTCP", self.totals.rtcp.to_value());
        let mut d = BTreeMap::new();
        d.insert(b"created".to_vec(), Value::from(self.created));
        d.insert(b"last signal".to_vec(), Value::from(self.last_signal));
        d.insert(b"totals".to_vec(), totals);
        d.insert(b"tags".to_vec(), Value::Dict(tags));
        d
    }
}
