//! `sluice cdrs`: the call detail records in the CDR database (see [`crate::cdr`]), as a table
//! or as CSV.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

use crate::cdr::{to_unix, Cdr, CdrStore, SqliteCdrStore, DEFAULT_CDR_DB};

/// `sluice cdrs`: the CDRs of ended calls, the most recent last.
#[derive(clap::Args, Debug, Clone)]
pub struct CdrsArgs {
    /// The CDR database (SQLite).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CDR_DB)]
    pub db: PathBuf,
    /// Only calls that ended at or after this time: RFC 3339 (`2024-05-01T12:00:00Z`,
    /// `2024-05-01T14:00:00+02:00`, `2024-05-01`), UNIX seconds, or an age (`90s`, `15m`, `1h`,
    /// `2d`, `1w`, `1h30m`).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Print CSV with a header line, the columns named as in the database, times in RFC 3339 (UTC).
    #[arg(long)]
    pub csv: bool,
    /// At most this many, the most recent; 0 for all.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: usize,
}

/// Prints the CDRs.
pub fn run(args: &CdrsArgs) -> anyhow::Result<()> {
    let since = args
        .since
        .as_deref()
        .map(|s| parse_since(s, SystemTime::now()))
        .transpose()?;
    let store = SqliteCdrStore::open_read_only(&args.db)?;
    // One more than asked, to tell whether there were more.
    let limit = (args.limit > 0).then(|| args.limit.saturating_add(1));
    let mut cdrs = store
        .list(since, limit)
        .with_context(|| format!("reading {}", args.db.display()))?;
    let truncated = limit.is_some_and(|l| cdrs.len() == l);
    if truncated {
        cdrs.remove(0);
    }
    let stdout = std::io::stdout();
    let result = if args.csv {
        write_csv(&cdrs, stdout.lock())
    } else {
        let mut out = stdout.lock();
        out.write_all(table(&cdrs).as_bytes())
            .and_then(|()| out.flush())
            .map_err(anyhow::Error::from)
    };
    match result {
        Err(e) if is_broken_pipe(&e) => return Ok(()), // `sluice cdrs | head`
        other => other?,
    }
    if truncated {
        eprintln!(
            "(the {} most recent; --limit N or --limit 0 for more)",
            args.limit
        );
    }
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause.downcast_ref::<csv::Error>().is_some_and(|c| {
                matches!(c.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe)
            })
    })
}

/// The CSV columns: the database's.
pub const CSV_HEADER: [&str; 22] = [
    "AcctSessionId",
    "SipFromTag",
    "SipToTag",
    "SipFromURI",
    "SipToURI",
    "CanonicalURI",
    "SourceIP",
    "BillingParty",
    "SipMethod",
    "SipResponseCode",
    "AcctStartTime",
    "AcctStopTime",
    "AcctSessionTime",
    "AcctTerminateCause",
    "AcctInputOctets",
    "AcctOutputOctets",
    "AcctInputPackets",
    "AcctOutputPackets",
    "Gateway",
    "Carrier",
    "NodeName",
    "SipUserAgents",
];

/// Writes the CDRs as CSV with a header line. Values are written as they are (quoted where CSV
/// needs it); empty for absent ones.
pub fn write_csv(cdrs: &[Cdr], out: impl Write) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(CSV_HEADER)?;
    for c in cdrs {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        w.write_record([
            c.call.call_id.clone(),
            c.call.from_tag.clone(),
            opt(&c.call.to_tag),
            c.call.from_uri.clone(),
            c.call.to_uri.clone(),
            c.call.canonical_uri.clone(),
            c.call.source_ip.to_string(),
            opt(&c.call.billing_party),
            c.call.sip_method.clone(),
            c.sip_response_code.to_string(),
            c.start.map(rfc3339).unwrap_or_default(),
            rfc3339(c.stop),
            format!("{:.3}", c.duration().as_secs_f64()),
            c.cause.to_string(),
            c.counters.from_caller.bytes.to_string(),
            c.counters.from_callee.bytes.to_string(),
            c.counters.from_caller.packets.to_string(),
            c.counters.from_callee.packets.to_string(),
            opt(&c.call.gateway),
            opt(&c.call.carrier),
            c.call.node.clone(),
            opt(&c.call.user_agents),
        ])?;
    }
    w.flush()?;
    Ok(())
}

/// A readable table, one call a line.
pub fn table(cdrs: &[Cdr]) -> String {
    if cdrs.is_empty() {
        return "no CDRs\n".into();
    }
    const HEADER: [&str; 12] = [
        "STOP (UTC)",
        "DURATION",
        "CAUSE",
        "CODE",
        "FROM",
        "TO",
        "SOURCE",
        "BILLING",
        "IN PKTS",
        "IN BYTES",
        "OUT PKTS",
        "OUT BYTES",
    ];
    // Numbers are right-aligned.
    const NUMERIC: [bool; 13] = [
        false, true, false, true, false, false, false, false, true, true, true, true, false,
    ];
    let mut rows: Vec<Vec<String>> = vec![HEADER
        .iter()
        .map(|h| (*h).to_owned())
        .chain(["CALL-ID".to_owned()])
        .collect()];
    for c in cdrs {
        rows.push(vec![
            rfc3339(c.stop)[..19].replace('T', " "),
            if c.start.is_some() {
                duration(c.duration())
            } else {
                "-".into()
            },
            c.cause.to_string(),
            c.sip_response_code.to_string(),
            printable(&c.call.from_uri),
            printable(&c.call.to_uri),
            c.call.source_ip.to_string(),
            c.call
                .billing_party
                .as_deref()
                .map_or_else(|| "-".into(), printable),
            c.counters.from_caller.packets.to_string(),
            c.counters.from_caller.bytes.to_string(),
            c.counters.from_callee.packets.to_string(),
            c.counters.from_callee.bytes.to_string(),
            printable(&c.call.call_id),
        ]);
    }
    let mut widths = [0usize; 13];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(widths[i] - cell.chars().count());
            if NUMERIC[i] {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if i + 1 < row.len() {
                    line.push_str(&pad);
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// SIP values come from the network: control and bidirectional-override characters are shown
/// escaped so that they cannot play tricks on the terminal.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}') {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// `1:02:03`, `4:05`, `0:12`: hours, minutes, seconds (rounded down).
fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// `2024-05-01T12:00:00.123Z` (UTC, milliseconds).
pub fn rfc3339(t: SystemTime) -> String {
    let ms = (to_unix(t) * 1000.0).round() as i64;
    let (secs, ms) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// The `--since` argument as a time: RFC 3339, UNIX seconds, or an age before `now`.
pub fn parse_since(s: &str, now: SystemTime) -> anyhow::Result<SystemTime> {
    let s = s.trim();
    if s.is_empty() {
        bail!("--since: empty");
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = s
            .parse()
            .with_context(|| format!("--since {s:?}: not a number of UNIX seconds"))?;
        return Ok(UNIX_EPOCH + Duration::from_secs_f64(secs));
    }
    if s.as_bytes()[0].is_ascii_digit() && s.as_bytes().get(4) == Some(&b'-') {
        return parse_rfc3339(s).with_context(|| {
            format!("--since {s:?}: not an RFC 3339 time (such as 2024-05-01T12:00:00Z)")
        });
    }
    let age = parse_age(s).with_context(|| {
        format!(
            "--since {s:?}: not an RFC 3339 time, UNIX seconds, nor an age such as 90s, 15m, 1h, \
             2d, 1h30m"
        )
    })?;
    Ok(now.checked_sub(age).unwrap_or(UNIX_EPOCH))
}

/// `90s`, `15m`, `1h`, `2d`, `1w`, `1h30m`.
fn parse_age(s: &str) -> anyhow::Result<Duration> {
    let mut total = 0u64;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => bail!("unknown unit {c:?}"),
        };
        let n: u64 = digits.parse().context("a unit without a number")?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .context("too long")?;
        digits.clear();
    }
    if !digits.is_empty() {
        bail!("a number without a unit");
    }
    Ok(Duration::from_secs(total))
}

/// `YYYY-MM-DD` (UTC midnight) or `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` (`T` or a space).
fn parse_rfc3339(s: &str) -> anyhow::Result<SystemTime> {
    let num = |part: &str| -> anyhow::Result<i64> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            bail!("{part:?} is not a number");
        }
        Ok(part.parse()?)
    };
    let (date, rest) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut ymd = date.split('-');
    let (Some(y), Some(mo), Some(d), None) = (ymd.next(), ymd.next(), ymd.next(), ymd.next())
    else {
        bail!("the date is not YYYY-MM-DD");
    };
    let (y, mo, d) = (num(y)?, num(mo)?, num(d)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        bail!("no such date");
    }
    let mut secs = days_from_civil(y, mo, d) * 86_400;
    let mut nanos = 0u32;
    if let Some(rest) = rest {
        let split = rest
            .find(['Z', 'z', '+', '-'])
            .context("the time has no offset (Z or ±HH:MM)")?;
        let (time, offset) = rest.split_at(split);
        let (hms, frac) = match time.split_once('.') {
            Some((hms, frac)) => (hms, Some(frac)),
            None => (time, None),
        };
        let mut parts = hms.split(':');
        let (Some(h), Some(mi), Some(sec), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            bail!("the time is not HH:MM:SS");
        };
        let (h, mi, sec) = (num(h)?, num(mi)?, num(sec)?);
        if h > 23 || mi > 59 || sec > 60 {
            bail!("no such time of day");
        }
        secs += h * 3600 + mi * 60 + sec.min(59);
        if let Some(frac) = frac {
            num(frac)?;
            let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
            nanos = digits.parse()?;
        }
        if !offset.eq_ignore_ascii_case("z") {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let Some((oh, om)) = offset[1..].split_once(':') else {
                bail!("the offset is not ±HH:MM");
            };
            let (oh, om) = (num(oh)?, num(om)?);
            if oh > 23 || om > 59 {
                bail!("no such offset");
            }
            secs -= sign * (oh * 3600 + om * 60);
        }
    }
    let base = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    Ok(base + Duration::from_nanos(u64::from(nanos)))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::{CallInfo, DirectionCounters, MediaCounters, Party, TerminationCause};

    fn t(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn cdr() -> Cdr {
        Cdr {
            call: CallInfo {
                call_id: "a84b4c76e66710@pc33.example.net".into(),
                from_uri: "sip:+31208005169@example.net".into(),
                to_uri: "sip:+4930123456@example.com".into(),
                from_tag: "1928301774".into(),
                to_tag: Some("a6c85cf".into()),
                source_ip: "192.0.2.10".parse().unwrap(),
                billing_party: Some("Peer, \"A\"".into()),
                user_agents: Some("baresip/3 + Asterisk 20".into()),
                canonical_uri: "sip:+4930123456@198.51.100.7".into(),
                sip_method: "INVITE".into(),
                gateway: Some("198.51.100.7".into()),
                carrier: None,
                node: "sluice-1".into(),
            },
            sip_response_code: 200,
            start: Some(t(1_714_564_800_000)),
            stop: t(1_714_568_523_450),
            cause: TerminationCause::Bye { by: Party::Caller },
            counters: MediaCounters {
                from_caller: DirectionCounters {
                    packets: 186_000,
                    bytes: 31_992_000,
                },
                from_callee: DirectionCounters {
                    packets: 185_990,
                    bytes: 31_990_280,
                },
            },
        }
    }

    #[test]
    fn csv_has_a_header_and_one_line_a_call() {
        let failed = Cdr {
            call: CallInfo {
                to_tag: None,
                billing_party: None,
                user_agents: None,
                gateway: None,
                ..cdr().call
            },
            sip_response_code: 486,
            start: None,
            cause: TerminationCause::Failed(486),
            counters: MediaCounters::default(),
            ..cdr()
        };
        let mut out = Vec::new();
        write_csv(&[cdr(), failed], &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], CSV_HEADER.join(","));
        assert_eq!(
            lines[1],
            "a84b4c76e66710@pc33.example.net,1928301774,a6c85cf,sip:+31208005169@example.net,\
             sip:+4930123456@example.com,sip:+4930123456@198.51.100.7,192.0.2.10,\
             \"Peer, \"\"A\"\"\",INVITE,200,2024-05-01T12:00:00.000Z,2024-05-01T13:02:03.450Z,\
             3723.450,bye:caller,31992000,31990280,186000,185990,198.51.100.7,,sluice-1,\
             baresip/3 + Asterisk 20"
        );
        assert_eq!(
            lines[2],
            "a84b4c76e66710@pc33.example.net,1928301774,,sip:+31208005169@example.net,\
             sip:+4930123456@example.com,sip:+4930123456@198.51.100.7,192.0.2.10,,INVITE,486,,\
             2024-05-01T13:02:03.450Z,0.000,failed:486,0,0,0,0,,,sluice-1,"
        );
        // And a CSV reader gets the fields back.
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let rec = r.records().next().unwrap().unwrap();
        assert_eq!(&rec[7], "Peer, \"A\"");
    }

    #[test]
    fn table_lines_up_and_escapes_control_characters() {
        let mut odd = cdr();
        odd.call.from_uri = "sip:evil\u{1b}[2J@example.net".into();
        odd.cause = TerminationCause::MediaTimeout;
        let text = table(&[cdr(), odd]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("STOP (UTC)           DURATION  CAUSE"),
            "{text}"
        );
        assert!(lines[0].ends_with("CALL-ID"), "{text}");
        assert!(
            lines[1].starts_with("2024-05-01 13:02:03   1:02:03  bye:caller"),
            "{text}"
        );
        assert!(lines[1].contains("31992000"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(
            lines[2].contains("sip:evil\\u{1b}[2J@example.net"),
            "{text}"
        );
        // Every line's call-id starts in the same column.
        let col = lines[0].find("CALL-ID").unwrap();
        assert_eq!(lines[1].find("a84b4c76").unwrap(), col, "{text}");
        assert_eq!(table(&[]), "no CDRs\n");
    }

    #[test]
    fn since_takes_rfc3339_unix_seconds_and_ages() {
        let now = t(1_714_568_400_000); // 2024-05-01T13:00:00Z
        let ok = |s: &str| parse_since(s, now).unwrap();
        assert_eq!(ok("2024-05-01T12:00:00Z"), t(1_714_564_800_000));
        assert_eq!(ok("2024-05-01t12:00:00.25z"), t(1_714_564_800_250));
        assert_eq!(ok("2024-05-01 14:00:00+02:00"), t(1_714_564_800_000));
        assert_eq!(ok("2024-05-01T07:30:00-04:30"), t(1_714_564_800_000));
        assert_eq!(ok("2024-05-01"), t(1_714_521_600_000));
        assert_eq!(ok("1714564800"), t(1_714_564_800_000));
        assert_eq!(ok("1714564800.5"), t(1_714_564_800_500));
        assert_eq!(ok("1h"), t(1_714_564_800_000));
        assert_eq!(ok("90s"), t(1_714_568_310_000));
        assert_eq!(ok("1h30m"), t(1_714_563_000_000));
        assert_eq!(ok("2d"), t(1_714_395_600_000));
        assert_eq!(ok("1w"), t(1_713_963_600_000));
        for bad in [
            "",
            "yesterday",
            "1x",
            "h",
            "2024-05-01T12:00:00",
            "2024-13-01",
            "2024-02-30",
            "2024-05-01T25:00:00Z",
            "1.2.3",
        ] {
            assert!(parse_since(bad, now).is_err(), "{bad:?}");
        }
        assert_eq!(ok("2024-02-29"), t(1_709_164_800_000));
    }

    #[test]
    fn rfc3339_formats_utc_with_milliseconds() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(t(1_714_568_523_450)), "2024-05-01T13:02:03.450Z");
        assert_eq!(rfc3339(t(951_782_400_000)), "2000-02-29T00:00:00.000Z");
        for days in [-800_000i64, -1, 0, 1, 11_016, 19_844, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn a_missing_database_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("nope.sqlite");
        let args = CdrsArgs {
            db: db.clone(),
            since: None,
            csv: false,
            limit: 10,
        };
        let err = run(&args).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!("no CDR database at {}", db.display())
        );
    }
}
