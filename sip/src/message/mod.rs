//! SIP messages (RFC 3261): parsing with a size limit and a three-way verdict on bad input,
//! lossless-enough printing, TCP stream framing, and the pure helpers a proxy needs.
//!
//! # The sans-IO contract
//!
//! Nothing here owns a socket, reads a clock or spawns a task. The caller reads a datagram (or a
//! TCP stream), hands the bytes to [`parse`] (after [`frame_stream`] for streams), acts on the
//! verdict, rewrites the message with the helpers in [`proxy`], prints it with
//! [`SipMessage::to_bytes`] and sends it. Randomness (the branch secret) comes in as an argument,
//! so every function is a pure function of its inputs and the same input always gives the same
//! output; stateless retransmissions therefore map to the same branch.
//!
//! # Verdicts on bad input
//!
//! [`parse`] returns a [`ParseError`] that tells the caller what to do:
//!
//! - [`ParseError::Empty`], [`ParseError::TooLarge`], [`ParseError::Garbage`]: not SIP (or
//!   nothing); drop it and count it.
//! - [`ParseError::BadRequest`]: a request we can answer: [`ParseError::response`] gives the
//!   `400 <what is wrong>` (or `505`) to send back along the request's top Via.
//! - [`ParseError::Unanswerable`]: a malformed request we cannot answer (no usable Via, or an
//!   ACK, which is never answered); drop it.
//! - [`ParseError::BadResponse`]: a malformed response; drop it.
//!
//! # On rsip
//!
//! Headers are [`rsip::Headers`] of [`rsip::Header`], so rsip's `HeadersExt` accessors work on
//! [`Request`], [`Response`] and [`SipMessage`] for the header fields in [`TYPED_HEADERS`]
//! (the others are `Header::Other`, see [`make_header`]). rsip 0.4 cannot express several things a proxy
//! must carry through unchanged, so this module does its own framing and line parsing and keeps
//! these outside rsip: extension methods and method case ([`Method`]), the Request-URI as written
//! (rsip's `Uri` drops IPv6 hosts, user parameters and `+` in `tel:`), the reason phrase of known
//! status codes, binary bodies (rsip prints bodies through `from_utf8_lossy`), header folding,
//! whitespace before the colon, compact header names, and comma-combined Via / Route /
//! Record-Route values (split into one rsip header each, which RFC 3261 §7.3.1 makes
//! equivalent). Every header field outside [`TYPED_HEADERS`] is kept as
//! `Header::Other(name, value)` with its name and value as received, and prints back
//! unchanged; typed ones print with their RFC 3261 name (`call-id:` becomes `Call-ID:`).

pub mod grammar;
pub mod proxy;
mod stream;

use std::fmt::Write as _;

use rsip::headers::UntypedHeader;
use rsip::{Header, Headers};
use thiserror::Error;

pub use grammar::{GrammarError, NameAddr, SipUri, Via};
pub use stream::{frame_stream, Frame, FrameError};

/// Size limits applied by [`parse`] and [`frame_stream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole message accepted, in bytes.
    pub max_message_len: usize,
    /// Most header field values accepted (after splitting comma-combined Via/Route/
    /// Record-Route values).
    pub max_headers: usize,
}

impl Limits {
    /// For UDP datagrams: 64 KiB, 256 header values.
    pub const UDP: Self = Self {
        max_message_len: 64 * 1024,
        max_headers: 256,
    };
    /// For TCP/TLS streams: 256 KiB, 256 header values.
    pub const STREAM: Self = Self {
        max_message_len: 256 * 1024,
        max_headers: 256,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::UDP
    }
}

/// A request method, case-sensitive as RFC 3261 §7.1 requires, including extension methods
/// rsip 0.4 has no variant for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Method(String);

impl Method {
    /// A method from its token. Returns `None` when `token` is not an RFC 3261 token.
    pub fn new(token: &str) -> Option<Self> {
        grammar::is_token(token).then(|| Self(token.to_owned()))
    }

    /// The method as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The rsip method, when this is one of the methods rsip knows (exact, upper-case match).
    pub fn rsip(&self) -> Option<rsip::Method> {
        rsip::Method::all()
            .into_iter()
            .find(|m| m.to_string() == self.0)
    }

    /// True when this is exactly `method`.
    pub fn is(&self, method: rsip::Method) -> bool {
        self.0 == method.to_string()
    }
}

impl From<rsip::Method> for Method {
    fn from(m: rsip::Method) -> Self {
        Self(m.to_string())
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The Request-URI as written (validated: scheme, visible ASCII; SIP URIs parse as
    /// [`SipUri`]).
    pub uri: String,
    /// Header fields, in order.
    pub headers: Headers,
    /// The body (exactly Content-Length bytes when Content-Length is present).
    pub body: Vec<u8>,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, 100..=699.
    pub status: u16,
    /// Reason phrase as written.
    pub reason: String,
    /// Header fields, in order.
    pub headers: Headers,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The status as an rsip status code.
    pub fn status_code(&self) -> rsip::StatusCode {
        rsip::StatusCode::from(self.status)
    }
}

/// A SIP request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipMessage {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

impl rsip::message::HasHeaders for Request {
    fn headers(&self) -> &Headers {
        &self.headers
    }
    fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }
}

impl rsip::message::HasHeaders for Response {
    fn headers(&self) -> &Headers {
        &self.headers
    }
    fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }
}

impl rsip::message::HasHeaders for SipMessage {
    fn headers(&self) -> &Headers {
        match self {
            Self::Request(r) => &r.headers,
            Self::Response(r) => &r.headers,
        }
    }
    fn headers_mut(&mut self) -> &mut Headers {
        match self {
            Self::Request(r) => &mut r.headers,
            Self::Response(r) => &mut r.headers,
        }
    }
}

impl rsip::message::HeadersExt for Request {}
impl rsip::message::HeadersExt for Response {}
impl rsip::message::HeadersExt for SipMessage {}

fn write_headers(out: &mut String, headers: &Headers) {
    for h in headers.iter() {
        let _ = write!(out, "{h}\r\n");
    }
}

impl Request {
    /// Prints the request: request line, one line per header, empty line, body bytes as is.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("{} {} SIP/2.0\r\n", self.method, self.uri);
        write_headers(&mut head, &self.headers);
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    /// The request as an rsip request, when rsip can express it (a method rsip knows and a
    /// Request-URI rsip parses). rsip's own printing is lossy; print with [`Self::to_bytes`].
    pub fn to_rsip(&self) -> Option<rsip::Request> {
        Some(rsip::Request {
            method: self.method.rsip()?,
            uri: rsip::Uri::try_from(self.uri.as_str()).ok()?,
            version: rsip::Version::V2,
            headers: self.headers.clone(),
            body: self.body.clone(),
        })
    }
}

impl Response {
    /// Prints the response: status line, one line per header, empty line, body bytes as is.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("SIP/2.0 {} {}\r\n", self.status, self.reason);
        write_headers(&mut head, &self.headers);
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

impl From<Request> for SipMessage {
    fn from(r: Request) -> Self {
        Self::Request(r)
    }
}

impl From<Response> for SipMessage {
    fn from(r: Response) -> Self {
        Self::Response(r)
    }
}

impl SipMessage {
    /// Prints the message (see [`Request::to_bytes`], [`Response::to_bytes`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Request(r) => r.to_bytes(),
            Self::Response(r) => r.to_bytes(),
        }
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        rsip::message::HasHeaders::headers(self)
    }
}

/// What is wrong with a malformed message; its `Display` is the reason phrase we send.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Problem {
    /// The request line does not have the shape `Method SP Request-URI SP SIP/2.0`.
    #[error("Bad Request-Line")]
    BadRequestLine,
    /// The Request-URI is not a URI we can forward.
    #[error("Bad Request-URI")]
    BadRequestUri,
    /// A well-formed version other than SIP/2.0 (answered with 505).
    #[error("Version Not Supported")]
    VersionNotSupported,
    /// The status line does not have the shape `SIP/2.0 SP 3DIGIT SP Reason-Phrase`.
    #[error("Bad Status-Line")]
    BadStatusLine,
    /// A header line without a colon, with a bad name, with control characters or invalid
    /// UTF-8, or a folded line with nothing to continue.
    #[error("Bad header line")]
    BadHeaderLine,
    /// More header values than [`Limits::max_headers`].
    #[error("Too many header fields")]
    TooManyHeaders,
    /// A mandatory header field is missing.
    #[error("Missing {0} header field")]
    MissingHeader(&'static str),
    /// A single-valued header field appears more than once.
    #[error("Multiple {0} header fields")]
    DuplicateHeader(&'static str),
    /// A header field value does not parse.
    #[error("Bad {0} header field")]
    BadHeader(&'static str),
    /// The CSeq method differs from the request method.
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    /// Content-Length is larger than the body received (a truncated datagram).
    #[error("Content-Length larger than the body")]
    BodyTruncated,
}

impl Problem {
    /// The status code to answer a request with this problem: 505 for an unsupported version,
    /// 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            Self::VersionNotSupported => 505,
            _ => 400,
        }
    }
}

/// A malformed request that can be answered: the problem plus what parsed of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    /// What is wrong.
    pub problem: Problem,
    /// The request method.
    pub method: Method,
    /// The header fields that parsed (at least one Via, whose top value parses).
    pub headers: Headers,
}

impl BadRequest {
    /// The response to send: status from [`Problem::status`], reason phrase naming the
    /// problem, Via/From/To/Call-ID/CSeq copied, Content-Length 0.
    pub fn response(&self) -> Response {
        proxy::response_from_headers(
            &self.headers,
            self.problem.status(),
            &self.problem.to_string(),
            None,
        )
    }
}

/// Why [`parse`] did not return a message, and so what to do with the input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// Nothing but CRLFs (a keep-alive): drop silently.
    #[error("empty message")]
    Empty,
    /// Larger than [`Limits::max_message_len`]: drop.
    #[error("message of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// The input length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Not SIP at all: drop and count.
    #[error("not SIP: {0}")]
    Garbage(&'static str),
    /// A malformed request to answer with [`ParseError::response`].
    #[error("malformed request: {}", .0.problem)]
    BadRequest(Box<BadRequest>),
    /// A malformed request that cannot (or must not) be answered: drop.
    #[error("malformed request, not answerable: {0}")]
    Unanswerable(Problem),
    /// A malformed response: drop.
    #[error("malformed response: {0}")]
    BadResponse(Problem),
}

impl ParseError {
    /// The response to send back, for [`ParseError::BadRequest`]; `None` means drop.
    pub fn response(&self) -> Option<Response> {
        match self {
            Self::BadRequest(bad) => Some(bad.response()),
            _ => None,
        }
    }

    /// The problem, for malformed requests and responses.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::BadRequest(bad) => Some(&bad.problem),
            Self::Unanswerable(p) | Self::BadResponse(p) => Some(p),
            _ => None,
        }
    }
}

/// Long names of the compact forms (RFC 3261 §7.3.3 and later RFCs).
const COMPACT: &[(&str, &str)] = &[
    ("i", "Call-ID"),
    ("m", "Contact"),
    ("e", "Content-Encoding"),
    ("l", "Content-Length"),
    ("c", "Content-Type"),
    ("f", "From"),
    ("s", "Subject"),
    ("k", "Supported"),
    ("t", "To"),
    ("v", "Via"),
    ("o", "Event"),
];

/// The long name for a compact header name, or the name itself.
pub fn expand_compact(name: &str) -> &str {
    COMPACT
        .iter()
        .find(|(short, _)| short.eq_ignore_ascii_case(name))
        .map_or(name, |(_, long)| long)
}

/// The header fields that get their rsip variant: the ones parsing, transactions and the proxy
/// look inside (RFC 3261 §8.1.1, §16, §17). rsip prints each with its canonical name, which
/// for these is the RFC's spelling.
pub const TYPED_HEADERS: &[&str] = &[
    "Via",
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Max-Forwards",
    "Content-Length",
    "Route",
    "Record-Route",
    "Timestamp",
    "Proxy-Require",
    "Proxy-Authorization",
];

/// Makes an rsip header from a name and value: the [`TYPED_HEADERS`] get their rsip variant
/// (printing with rsip's canonical name), all others are `Header::Other` with the name as
/// received, so that they print back byte for byte (rsip would print `MIME-Version` as
/// `Mime-Version`). Compact names are expanded.
pub fn make_header(name: &str, value: &str) -> Header {
    let name = expand_compact(name);
    if !TYPED_HEADERS.iter().any(|t| t.eq_ignore_ascii_case(name)) {
        return Header::Other(name.to_owned(), value.to_owned());
    }
    let tokenizer = rsip::headers::header::Tokenizer::from((name.as_bytes(), value.as_bytes()));
    tokenizer
        .try_into()
        .unwrap_or_else(|_| Header::Other(name.to_owned(), value.to_owned()))
}

/// Name and value of any rsip header.
pub fn header_name_value(header: &Header) -> (String, String) {
    if let Header::Other(n, v) = header {
        return (n.clone(), v.clone());
    }
    let text = header.to_string();
    match text.split_once(':') {
        Some((n, v)) => (n.to_owned(), v.strip_prefix(' ').unwrap_or(v).to_owned()),
        None => (text, String::new()),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split_crlf(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some(i) = find(data, b"\r\n") {
        out.push(&data[..i]);
        data = &data[i + 2..];
    }
    out.push(data);
    out
}

fn trim_ws(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// Start-line text: valid UTF-8 without control characters other than HT.
fn clean_text(bytes: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(bytes).ok()?;
    (!s.chars().any(|c| c.is_control() && c != '\t')).then_some(s)
}

/// Header-line text: valid UTF-8; control characters other than HT only as a quoted-pair
/// (`\` followed by the character, RFC 3261 §25.1), which RFC 4475 §3.1.1.2 exercises.
fn clean_header_text(bytes: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(bytes).ok()?;
    let mut escaped = false;
    for c in s.chars() {
        if c.is_control() && c != '\t' && !escaped {
            return None;
        }
        escaped = !escaped && c == '\\';
    }
    Some(s)
}

fn is_version(s: &str) -> bool {
    let Some(rest) = s.get(..4).filter(|p| p.eq_ignore_ascii_case("SIP/")) else {
        return false;
    };
    let rest = &s[rest.len()..];
    match rest.split_once('.') {
        Some((a, b)) => {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        }
        None => false,
    }
}

fn is_v2(s: &str) -> bool {
    let v = &s[4..];
    let (a, b) = v.split_once('.').unwrap_or((v, ""));
    a.trim_start_matches('0') == "2" && b.trim_start_matches('0').is_empty()
}

enum StartLine {
    Request {
        method: Method,
        uri: String,
        problem: Option<Problem>,
    },
    Response {
        status: u16,
        reason: String,
    },
}

fn parse_start_line(line: &[u8]) -> Result<StartLine, ParseError> {
    let Some(text) = clean_text(line) else {
        return Err(ParseError::Garbage("start line is not text"));
    };
    if text
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        return parse_status_line(text).map_err(ParseError::BadResponse);
    }
    let Some((method, rest)) = text.split_once(' ') else {
        return Err(ParseError::Garbage("no request line"));
    };
    let Some(method) = Method::new(method) else {
        return Err(ParseError::Garbage("no method token"));
    };
    if !text.to_ascii_uppercase().contains("SIP/") {
        return Err(ParseError::Garbage("no SIP version"));
    }
    let parts: Vec<&str> = rest.split(' ').collect();
    let (uri, problem) = match parts.as_slice() {
        [uri, version] if !uri.is_empty() && is_version(version) => {
            let problem = if !is_v2(version) {
                Some(Problem::VersionNotSupported)
            } else if grammar::check_uri_text(uri, "Request-URI").is_err() {
                Some(Problem::BadRequestUri)
            } else {
                None
            };
            ((*uri).to_owned(), problem)
        }
        _ => (String::new(), Some(Problem::BadRequestLine)),
    };
    Ok(StartLine::Request {
        method,
        uri,
        problem,
    })
}

fn parse_status_line(text: &str) -> Result<StartLine, Problem> {
    let (version, rest) = text.split_once(' ').ok_or(Problem::BadStatusLine)?;
    if !is_version(version) {
        return Err(Problem::BadStatusLine);
    }
    if !is_v2(version) {
        return Err(Problem::VersionNotSupported);
    }
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::BadStatusLine);
    }
    let status: u16 = code.parse().map_err(|_| Problem::BadStatusLine)?;
    if !(100..=699).contains(&status) {
        return Err(Problem::BadStatusLine);
    }
    Ok(StartLine::Response {
        status,
        reason: trim_ws(reason).to_owned(),
    })
}

/// Header lines unfolded, compact names expanded, Via/Route/Record-Route split at commas.
fn parse_header_lines(lines: &[&[u8]], limits: &Limits) -> (Vec<Header>, Option<Problem>) {
    let mut raw: Vec<(String, String)> = Vec::new();
    let mut problem = None;
    let mut last_ok = false;
    for line in lines {
        let Some(text) = clean_header_text(line) else {
            problem.get_or_insert(Problem::BadHeaderLine);
            last_ok = false;
            continue;
        };
        if text.starts_with([' ', '\t']) {
            // Folded continuation (RFC 3261 §7.3.1): LWS is one SP.
            match raw.last_mut() {
                Some((_, value)) if last_ok => {
                    let more = trim_ws(text);
                    if !more.is_empty() {
                        if !value.is_empty() {
                            value.push(' ');
                        }
                        value.push_str(more);
                    }
                }
                _ => {
                    problem.get_or_insert(Problem::BadHeaderLine);
                }
            }
            continue;
        }
        let Some((name, value)) = text.split_once(':') else {
            problem.get_or_insert(Problem::BadHeaderLine);
            last_ok = false;
            continue;
        };
        let name = trim_ws(name);
        if !grammar::is_token(name) {
            problem.get_or_insert(Problem::BadHeaderLine);
            last_ok = false;
            continue;
        }
        raw.push((name.to_owned(), trim_ws(value).to_owned()));
        last_ok = true;
    }
    let mut headers = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let long = expand_compact(&name);
        let splits = ["Via", "Route", "Record-Route"]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(long));
        if splits {
            for piece in grammar::split_outside_quotes(&value, ',') {
                headers.push(make_header(&name, trim_ws(piece)));
            }
        } else {
            headers.push(make_header(&name, &value));
        }
    }
    if headers.len() > limits.max_headers {
        problem.get_or_insert(Problem::TooManyHeaders);
    }
    (headers, problem)
}

/// Values of all headers of one kind.
fn values<'a>(headers: &'a [Header], pick: fn(&'a Header) -> Option<&'a str>) -> Vec<&'a str> {
    headers.iter().filter_map(pick).collect()
}

fn single<'a>(
    headers: &'a [Header],
    pick: fn(&'a Header) -> Option<&'a str>,
    name: &'static str,
) -> Result<Option<&'a str>, Problem> {
    match values(headers, pick).as_slice() {
        [] => Ok(None),
        [v] => Ok(Some(v)),
        _ => Err(Problem::DuplicateHeader(name)),
    }
}

fn required<'a>(
    headers: &'a [Header],
    pick: fn(&'a Header) -> Option<&'a str>,
    name: &'static str,
) -> Result<&'a str, Problem> {
    single(headers, pick, name)?.ok_or(Problem::MissingHeader(name))
}

/// Parses a decimal that may have leading zeros; `None` when not all digits or above `max`.
fn parse_decimal(s: &str, max: u64) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = s.trim_start_matches('0');
    if digits.len() > 19 {
        return None;
    }
    let v = if digits.is_empty() {
        0
    } else {
        digits.parse::<u64>().ok()?
    };
    (v <= max).then_some(v)
}

/// `(sequence number, method)` of a CSeq value.
pub fn parse_cseq(value: &str) -> Option<(u32, Method)> {
    let mut it = value.split([' ', '\t']).filter(|s| !s.is_empty());
    let num = parse_decimal(it.next()?, (1 << 31) - 1)?;
    let method = Method::new(it.next()?)?;
    if it.next().is_some() {
        return None;
    }
    Some((u32::try_from(num).ok()?, method))
}

/// The Max-Forwards value (0..=255; leading zeros allowed).
pub fn parse_max_forwards(value: &str) -> Option<u8> {
    parse_decimal(value, 255).and_then(|v| u8::try_from(v).ok())
}

/// Checks the headers common to requests and responses; returns the Content-Length.
fn check_common(headers: &[Header], is_request: bool) -> Result<Option<usize>, Problem> {
    let from = required(
        headers,
        |h| match h {
            Header::From(v) => Some(v.value()),
            _ => None,
        },
        "From",
    )?;
    let to = required(
        headers,
        |h| match h {
            Header::To(v) => Some(v.value()),
            _ => None,
        },
        "To",
    )?;
    let call_id = required(
        headers,
        |h| match h {
            Header::CallId(v) => Some(v.value()),
            _ => None,
        },
        "Call-ID",
    )?;
    let cseq = required(
        headers,
        |h| match h {
            Header::CSeq(v) => Some(v.value()),
            _ => None,
        },
        "CSeq",
    )?;
    let max_forwards = single(
        headers,
        |h| match h {
            Header::MaxForwards(v) => Some(v.value()),
            _ => None,
        },
        "Max-Forwards",
    )?;
    let content_length = single(
        headers,
        |h| match h {
            Header::ContentLength(v) => Some(v.value()),
            _ => None,
        },
        "Content-Length",
    )?;
    for via in values(headers, |h| match h {
        Header::Via(v) => Some(v.value()),
        _ => None,
    }) {
        Via::parse(via).map_err(|_| Problem::BadHeader("Via"))?;
    }
    NameAddr::parse(from).map_err(|_| Problem::BadHeader("From"))?;
    NameAddr::parse(to).map_err(|_| Problem::BadHeader("To"))?;
    if call_id.is_empty() || call_id.contains([' ', '\t']) {
        return Err(Problem::BadHeader("Call-ID"));
    }
    parse_cseq(cseq).ok_or(Problem::BadHeader("CSeq"))?;
    if is_request {
        if let Some(mf) = max_forwards {
            parse_max_forwards(mf).ok_or(Problem::BadHeader("Max-Forwards"))?;
        }
    }
    for rr in values(headers, |h| match h {
        Header::Route(v) => Some(v.value()),
        Header::RecordRoute(v) => Some(v.value()),
        _ => None,
    }) {
        let n = NameAddr::parse(rr).map_err(|_| Problem::BadHeader("Route"))?;
        if !n.angle {
            return Err(Problem::BadHeader("Route"));
        }
    }
    content_length
        .map(|cl| {
            parse_decimal(cl, u64::from(u32::MAX))
                .and_then(|v| usize::try_from(v).ok())
                .ok_or(Problem::BadHeader("Content-Length"))
        })
        .transpose()
}

/// Parses one SIP message from a datagram (or one message cut from a stream by
/// [`frame_stream`]). See the module docs for what each error means to the caller.
///
/// Content-Length, when present, must not exceed the body (else `400`); a longer body is
/// truncated to it (RFC 3261 §18.3). Without Content-Length the body is the rest of the input.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<SipMessage, ParseError> {
    if bytes.len() > limits.max_message_len {
        return Err(ParseError::TooLarge {
            len: bytes.len(),
            limit: limits.max_message_len,
        });
    }
    let mut data = bytes;
    while let Some(rest) = data.strip_prefix(b"\r\n") {
        data = rest;
    }
    if data.is_empty() {
        return Err(ParseError::Empty);
    }
    let (head, body) = match find(data, b"\r\n\r\n") {
        Some(i) => (&data[..i], &data[i + 4..]),
        None => (
            data.strip_suffix(b"\r\n").unwrap_or(data),
            &data[data.len()..],
        ),
    };
    let lines = split_crlf(head);
    let start = parse_start_line(lines.first().copied().unwrap_or_default())?;
    let (headers, line_problem) = parse_header_lines(&lines[1..], limits);
    match start {
        StartLine::Response { status, reason } => {
            if let Some(p) = line_problem {
                return Err(ParseError::BadResponse(p));
            }
            if !headers.iter().any(|h| matches!(h, Header::Via(_))) {
                return Err(ParseError::BadResponse(Problem::MissingHeader("Via")));
            }
            let cl = check_common(&headers, false).map_err(ParseError::BadResponse)?;
            let body = cut_body(body, cl).map_err(ParseError::BadResponse)?;
            Ok(SipMessage::Response(Response {
                status,
                reason,
                headers: headers.into(),
                body,
            }))
        }
        StartLine::Request {
            method,
            uri,
            problem,
        } => {
            let checked = problem
                .map_or(Ok(()), Err)
                .and_then(|()| line_problem.map_or(Ok(()), Err))
                .and_then(|()| check_common(&headers, true))
                .and_then(|cl| {
                    let body = cut_body(body, cl)?;
                    check_cseq_method(&headers, &method)?;
                    Ok(body)
                });
            match checked {
                Ok(body) => {
                    if !headers.iter().any(|h| matches!(h, Header::Via(_))) {
                        return Err(ParseError::Unanswerable(Problem::MissingHeader("Via")));
                    }
                    Ok(SipMessage::Request(Request {
                        method,
                        uri,
                        headers: headers.into(),
                        body,
                    }))
                }
                Err(problem) => Err(reject_request(problem, method, headers)),
            }
        }
    }
}

fn check_cseq_method(headers: &[Header], method: &Method) -> Result<(), Problem> {
    let cseq = headers.iter().find_map(|h| match h {
        Header::CSeq(v) => parse_cseq(v.value()),
        _ => None,
    });
    match cseq {
        Some((_, m)) if &m != method => Err(Problem::CSeqMethodMismatch),
        _ => Ok(()),
    }
}

fn cut_body(body: &[u8], content_length: Option<usize>) -> Result<Vec<u8>, Problem> {
    match content_length {
        None => Ok(body.to_vec()),
        Some(n) if n > body.len() => Err(Problem::BodyTruncated),
        Some(n) => Ok(body[..n].to_vec()),
    }
}

/// A malformed request becomes answerable when its top Via parses and it is not an ACK.
fn reject_request(problem: Problem, method: Method, headers: Vec<Header>) -> ParseError {
    let top_via_ok = headers
        .iter()
        .find_map(|h| match h {
            Header::Via(v) => Some(v.value()),
            _ => None,
        })
        .is_some_and(|v| Via::parse(v).is_ok());
    if !top_via_ok || method.is(rsip::Method::Ack) {
        return ParseError::Unanswerable(problem);
    }
    ParseError::BadRequest(Box::new(BadRequest {
        problem,
        method,
        headers: headers.into(),
    }))
}
