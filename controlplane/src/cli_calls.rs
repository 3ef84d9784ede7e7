//! `sluice calls` and `sluice call <id>`: the active calls of a running instance, read from its
//! management API (see [`crate::api`]).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{bail, Context};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::api::DEFAULT_API_ADDR;

/// Where the instance's API is, and how to get in.
#[derive(clap::Args, Clone)]
pub struct ApiClientArgs {
    /// The instance's management API: `http://HOST:PORT` or `HOST:PORT`.
    #[arg(long, value_name = "URL", default_value = DEFAULT_API_ADDR)]
    pub api: String,
    /// The API's access token; by default `$SLUICE_API_TOKEN` (better than the command line,
    /// where other users see it).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
}

impl ApiClientArgs {
    /// The same, with the token from [`TOKEN_ENV`] when `--token` was not given.
    fn resolved(&self) -> Self {
        let from_env = || std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
        Self {
            api: self.api.clone(),
            token: self.token.clone().or_else(from_env),
        }
    }
}

impl std::fmt::Debug for ApiClientArgs {
    // Never print the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClientArgs")
            .field("api", &self.api)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `sluice calls`: the active calls.
#[derive(clap::Args, Debug, Clone)]
pub struct CallsArgs {
    #[command(flatten)]
    pub client: ApiClientArgs,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `sluice call <id>`: one call with its streams.
#[derive(clap::Args, Debug, Clone)]
pub struct CallArgs {
    /// The call's SIP Call-ID.
    pub call_id: String,
    #[command(flatten)]
    pub client: ApiClientArgs,
    /// Print the API's JSON instead of a readable layout.
    #[arg(long)]
    pub json: bool,
}

/// Prints the active calls of a running instance.
pub fn run_calls(args: &CallsArgs) -> anyhow::Result<()> {
    let body = get(&args.client.resolved(), "/calls?summary=1")?;
    if args.json {
        println!("{}", body.trim_end());
        return Ok(());
    }
    let list: CallList = serde_json::from_str(&body).context("the API's answer to /calls")?;
    print!("{}", calls_table(&list.calls));
    Ok(())
}

/// Prints one call of a running instance with its streams.
pub fn run_call(args: &CallArgs) -> anyhow::Result<()> {
    let path = format!(
        "/calls/{}",
        utf8_percent_encode(&args.call_id, PATH_SEGMENT)
    );
    let body = get(&args.client.resolved(), &path)?;
    if args.json {
        println!("{}", body.trim_end());
        return Ok(());
    }
    let call: CallView = serde_json::from_str(&body).context("the API's answer to /calls/<id>")?;
    print!("{}", call_details(&call));
    Ok(())
}

/// The environment variable the token is read from when `--token` is not given.
pub const TOKEN_ENV: &str = "SLUICE_API_TOKEN";

/// Everything but the unreserved characters of RFC 3986 is percent-encoded in a call-id.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `http://HOST:PORT` from what the user gave, without a trailing slash.
pub fn base_url(api: &str) -> String {
    let api = api.trim().trim_end_matches('/');
    if api.contains("://") {
        api.to_owned()
    } else {
        format!("http://{api}")
    }
}

/// GETs `path` from the API and returns the body of a `200`; anything else is an error that
/// says what went wrong in words.
fn get(client: &ApiClientArgs, path: &str) -> anyhow::Result<String> {
    let base = base_url(&client.api);
    let url = format!("{base}{path}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut request = agent.get(&url);
    if let Some(token) = &client.token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request.call().map_err(|e| unreachable_error(&base, e))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(512 * 1024 * 1024)
        .read_to_string()
        .with_context(|| format!("reading the answer of {url}"))?;
    match status {
        200 => Ok(body),
        401 if client.token.is_none() => {
            bail!("the Sluice API at {base} wants an access token: set {TOKEN_ENV} or pass --token")
        }
        401 => bail!("the Sluice API at {base} refused the access token"),
        _ => {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| body.trim().to_owned());
            bail!("{} (HTTP {status} from {base})", printable(&message))
        }
    }
}

fn unreachable_error(base: &str, e: ureq::Error) -> anyhow::Error {
    let why = match &e {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused".to_owned()
        }
        ureq::Error::Io(io) => io.to_string(),
        ureq::Error::HostNotFound => "host not found".to_owned(),
        ureq::Error::Timeout(_) => "timed out".to_owned(),
        ureq::Error::ConnectionFailed => "connection failed".to_owned(),
        other => other.to_string(),
    };
    anyhow::anyhow!("no Sluice API at {base}: {why}")
}

/// The summary of a call the API gives; only the fields the CLI shows.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct CallView {
    call_id: String,
    label: Option<String>,
    state: String,
    backend: String,
    from_tag: Option<String>,
    to_tag: Option<String>,
    age_s: f64,
    duration_s: Option<f64>,
    rtp: [TotalsView; 2],
    rtcp: [TotalsView; 2],
    last_packet_age_s: Option<f64>,
    streams: Vec<StreamView>,
}

#[derive(Clone, Copy, Debug, Default, serde::Deserialize)]
#[serde(default)]
struct TotalsView {
    packets: u64,
    bytes: u64,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct StreamView {
    media: usize,
    kind: String,
    from: String,
    rtcp: bool,
    relay: String,
    sdp_peer: String,
    latched_peer: Option<String>,
    packets: u64,
    bytes: u64,
    last_packet_age_s: Option<f64>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct CallList {
    calls: Vec<CallView>,
}

impl CallView {
    /// Packets and bytes sent by side `side` (index 0 = A), RTP and RTCP together.
    fn sent(&self, side: usize) -> (u64, u64) {
        let (rtp, rtcp) = (self.rtp[side], self.rtcp[side]);
        (
            rtp.packets.saturating_add(rtcp.packets),
            rtp.bytes.saturating_add(rtcp.bytes),
        )
    }
}

/// Control characters and the like from the network are shown escaped, never sent to the
/// terminal as they are.
fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escape =
                c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}');
            let shown: Vec<char> = if escape {
                c.escape_unicode().collect()
            } else {
                vec![c]
            };
            shown
        })
        .collect()
}

/// `1h02m03s`, `4m05s`, `12.3s`.
fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".into();
    }
    if seconds < 60.0 {
        return format!("{seconds:.1}s");
    }
    let total = seconds as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else {
        format!("{m}m{s:02}s")
    }
}

fn optional_duration(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "-".into(), duration)
}

/// `512 B`, `1.5 KiB`, `3.2 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The table `sluice calls` prints.
fn calls_table(calls: &[CallView]) -> String {
    if calls.is_empty() {
        return "no active calls\n".into();
    }
    let header = [
        "CALL-ID",
        "STATE",
        "BACKEND",
        "AGE",
        "ANSWERED",
        "A->B PKTS",
        "A->B BYTES",
        "B->A PKTS",
        "B->A BYTES",
        "LAST PKT",
    ];
    let rows: Vec<[String; 10]> = calls
        .iter()
        .map(|c| {
            let ((ap, ab), (bp, bb)) = (c.sent(0), c.sent(1));
            [
                printable(&c.call_id),
                printable(&c.state),
                printable(&c.backend),
                duration(c.age_s),
                optional_duration(c.duration_s),
                ap.to_string(),
                bytes(ab),
                bp.to_string(),
                bytes(bb),
                optional_duration(c.last_packet_age_s),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // Text left-aligned, numbers right-aligned.
            let pad = w.saturating_sub(cell.chars().count());
            if i == 0 {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            } else if i < 3 {
                text.push_str("  ");
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            } else {
                text.push_str("  ");
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header.map(str::to_owned));
    for row in &rows {
        line(row);
    }
    let _ = writeln!(
        out,
        "{} active call{}",
        calls.len(),
        if calls.len() == 1 { "" } else { "s" }
    );
    out
}

/// The layout `sluice call <id>` prints.
fn call_details(c: &CallView) -> String {
    let mut out = String::new();
    let opt = |s: &Option<String>| s.as_deref().map_or_else(|| "-".into(), printable);
    let _ = writeln!(out, "Call-ID:      {}", printable(&c.call_id));
    if c.label.is_some() {
        let _ = writeln!(out, "Label:        {}", opt(&c.label));
    }
    let _ = writeln!(out, "State:        {}", printable(&c.state));
    let _ = writeln!(out, "Backend:      {}", printable(&c.backend));
    let _ = writeln!(
        out,
        "Tags:         from {}  to {}",
        opt(&c.from_tag),
        opt(&c.to_tag)
    );
    let _ = writeln!(
        out,
        "Age:          {}   answered for {}",
        duration(c.age_s),
        optional_duration(c.duration_s)
    );
    let _ = writeln!(
        out,
        "Last packet:  {} ago",
        optional_duration(c.last_packet_age_s)
    );
    for (side, name) in [(0, "A -> B"), (1, "B -> A")] {
        let (rtp, rtcp) = (c.rtp[side], c.rtcp[side]);
        let _ = writeln!(
            out,
            "{name}:       RTP {} pkts / {}   RTCP {} pkts / {}",
            rtp.packets,
            bytes(rtp.bytes),
            rtcp.packets,
            bytes(rtcp.bytes)
        );
    }
    if c.streams.is_empty() {
        let _ = writeln!(out, "Streams:      none");
        return out;
    }
    let _ = writeln!(out, "Streams:");
    for s in &c.streams {
        let latched = s.latched_peer.as_deref().map_or_else(
            || "not latched".into(),
            |p| format!("latched {}", printable(p)),
        );
        let _ = writeln!(
            out,
            "  media {} {} {} from {}: relay {}  SDP peer {}  {}",
            s.media,
            printable(&s.kind),
            if s.rtcp { "RTCP" } else { "RTP" },
            printable(&s.from).to_uppercase(),
            printable(&s.relay),
            printable(&s.sdp_peer),
            latched
        );
        let _ = writeln!(
            out,
            "      {} pkts  {}  last packet {} ago",
            s.packets,
            bytes(s.bytes),
            optional_duration(s.last_packet_age_s)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::api::{Api, ApiConfig, ApiRequest, ApiServer, CallSource};
    use crate::session::manager::{CallReport, CallState, Ended, StreamReport, Totals};
    use crate::session::model::Side;

    fn report(call_id: &str) -> CallReport {
        CallReport {
            call_id: call_id.into(),
            label: Some("trunk-7".into()),
            state: CallState::Established,
            backend: "xdp",
            from_tag: Some("ft".into()),
            to_tag: None,
            age_s: 3725.0,
            duration_s: Some(3700.0),
            created_s: 1.0,
            last_signal_s: 2.0,
            rtp: [
                Totals {
                    packets: 1000,
                    bytes: 172_000,
                },
                Totals {
                    packets: 990,
                    bytes: 170_280,
                },
            ],
            rtcp: [
                Totals {
                    packets: 5,
                    bytes: 400,
                },
                Totals::default(),
            ],
            last_packet_age_s: Some(0.02),
            streams: vec![StreamReport {
                media: 0,
                kind: "audio".into(),
                from: Side::B,
                rtcp: false,
                relay: "203.0.113.1:30002".parse().expect("addr"),
                sdp_peer: "10.0.0.5:4000".parse().expect("addr"),
                latched_peer: Some("198.51.100.9:40000".parse().expect("addr")),
                packets: 990,
                bytes: 170_280,
                last_packet_age_s: Some(0.02),
            }],
        }
    }

    struct One(CallReport);

    impl CallSource for One {
        fn calls(&self, _now: Duration) -> Vec<CallReport> {
            vec![self.0.clone()]
        }
        fn call(&self, _now: Duration, call_id: &str) -> Result<Option<CallReport>, String> {
            Ok((call_id == self.0.call_id).then(|| self.0.clone()))
        }
        fn ended(&self, _limit: usize) -> Vec<Ended> {
            Vec::new()
        }
        fn ended_by_cause(&self) -> Vec<(&'static str, u64)> {
            Vec::new()
        }
        fn relay_counters(&self) -> Result<Vec<(&'static str, u64)>, String> {
            Ok(Vec::new())
        }
        fn backend(&self) -> &'static str {
            "xdp"
        }
    }

    #[test]
    fn the_api_json_reads_back_and_prints() {
        let source = One(report("a@b\u{1b}[31m"));
        let r = Api::default().handle(
            &ApiRequest::get("/calls/a%40b%1B%5B31m"),
            &source,
            Duration::ZERO,
        );
        let call: CallView = serde_json::from_slice(&r.body).expect("call");
        assert_eq!(call.sent(0), (1005, 172_400));
        let text = call_details(&call);
        assert!(text.contains("Call-ID:      a@b\\u{1b}[31m"), "{text}");
        assert!(
            !text.contains('\u{1b}'),
            "no raw escape reaches the terminal"
        );
        assert!(text.contains("media 0 audio RTP from B: relay 203.0.113.1:30002  SDP peer 10.0.0.5:4000  latched 198.51.100.9:40000"), "{text}");
        assert!(text.contains("Age:          1h02m05s"), "{text}");
        let r = Api::default().handle(
            &ApiRequest::get("/calls?summary=1"),
            &source,
            Duration::ZERO,
        );
        let list: CallList = serde_json::from_slice(&r.body).expect("list");
        let table = calls_table(&list.calls);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("CALL-ID"), "{table}");
        assert!(
            lines[1].contains("established")
                && lines[1].contains("1005")
                && lines[1].contains("168.4 KiB"),
            "{table}"
        );
        assert_eq!(lines[2], "1 active call");
        assert_eq!(calls_table(&[]), "no active calls\n");
    }

    #[test]
    fn formats() {
        assert_eq!(duration(12.34), "12.3s");
        assert_eq!(duration(65.0), "1m05s");
        assert_eq!(duration(f64::NAN), "-");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(base_url("127.0.0.1:8089/"), "http://127.0.0.1:8089");
        assert_eq!(base_url("http://[::1]:9"), "http://[::1]:9");
        assert_eq!(
            utf8_percent_encode("a@b/c d%", PATH_SEGMENT).to_string(),
            "a%40b%2Fc%20d%25"
        );
    }

    fn client(addr: std::net::SocketAddr, token: Option<&str>) -> ApiClientArgs {
        ApiClientArgs {
            api: addr.to_string(),
            token: token.map(str::to_owned),
        }
    }

    #[test]
    fn talks_to_a_running_api() {
        let config = ApiConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            token: Some("t0k".into()),
            ..ApiConfig::default()
        };
        let server = ApiServer::start(&config, Arc::new(One(report("x/y@z"))), || Duration::ZERO)
            .expect("start");
        let addr = server.local_addr();
        let path = format!("/calls/{}", utf8_percent_encode("x/y@z", PATH_SEGMENT));
        let body = get(&client(addr, Some("t0k")), &path).expect("call");
        let call: CallView = serde_json::from_str(&body).expect("json");
        assert_eq!(call.call_id, "x/y@z");
        let err = get(&client(addr, Some("t0k")), "/calls/nope").expect_err("404");
        assert_eq!(
            err.to_string(),
            format!("unknown call-id `nope` (HTTP 404 from http://{addr})")
        );
        let err = get(&client(addr, None), "/calls").expect_err("401");
        assert!(err.to_string().contains("wants an access token"), "{err}");
        let err = get(&client(addr, Some("bad")), "/calls").expect_err("401");
        assert!(
            err.to_string().contains("refused the access token"),
            "{err}"
        );
        drop(server);
        let err = get(&client(addr, None), "/calls").expect_err("gone");
        assert_eq!(
            err.to_string(),
            format!("no Sluice API at http://{addr}: connection refused")
        );
        let printed = format!("{:?}", client(addr, Some("t0k")));
        assert!(!printed.contains("t0k"), "{printed}");
    }
}
