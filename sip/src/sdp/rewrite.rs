//! NAT-traversal rewriting: point the media at the relay.

use std::net::Ipv4Addr;

use super::{parse, Connection, Eol, Line, LineEnding, Sdp, SdpError};

/// Where one media stream is relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaRewrite {
    /// The relay's address, written into the media's effective `c=` and any `a=rtcp:` address.
    pub addr: Ipv4Addr,
    /// The relay's RTP port, written into the `m=` line. Must not be 0.
    pub rtp_port: u16,
    /// The relay's RTCP port. `None` means the usual one: `rtp_port + 1`, or `rtp_port` itself when
    /// the media has `a=rtcp-mux`. An existing `a=rtcp:` line is always rewritten to the RTCP port;
    /// a new `a=rtcp:` line is added only when this is `Some(p)` with `p != rtp_port + 1`, since the
    /// far end would otherwise assume `rtp_port + 1`.
    pub rtcp_port: Option<u16>,
}

/// What to do with ICE attributes ([`ICE_ATTRIBUTES`](super::ICE_ATTRIBUTES)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum IceAction {
    /// Pass them through untouched.
    #[default]
    Keep,
    /// Remove them from the session and from every media section (ICE is all or nothing per
    /// session; the candidates would name addresses the relay hides).
    Remove,
}

/// What to do with `0.0.0.0` addresses (RFC 2543 hold) in relayed media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum HoldAddress {
    /// Keep `0.0.0.0` wherever it is written (`c=`, `a=rtcp:`), so the far end still sees an
    /// old-style hold; ports are rewritten all the same. The default. Not applied when the SDP
    /// carries ICE attributes: there `0.0.0.0` is the trickle-ICE placeholder (RFC 8839, JSEP),
    /// not a hold, and is replaced like any other address.
    #[default]
    Keep,
    /// Replace `0.0.0.0` with the relay address like any other address.
    Replace,
}

/// What [`rewrite`] changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RewritePlan {
    /// One entry per `m=` line, in order (the length must match). `None` leaves the media as it is
    /// (its effective address included). `Some` for a port-0 (rejected) media is ignored: the media
    /// stays rejected at port 0.
    pub media: Vec<Option<MediaRewrite>>,
    /// Replace the `o=` address with `IN IP4 addr`. The session version is never changed.
    pub origin: Option<Ipv4Addr>,
    /// Force the session-level `c=` to this address (ignored when the SDP has no session-level
    /// `c=`); media that relied on it and must not change get their own `c=`. When `None`, the
    /// session-level `c=` is set to the relay address if every relayed media (hold addresses kept
    /// aside) shares one and no media that is neither relayed nor rejected relies on it; otherwise
    /// it is left alone, and relayed media that relied on it get their own `c=`.
    pub session_connection: Option<Ipv4Addr>,
    /// Keep or remove ICE attributes.
    pub ice: IceAction,
    /// Keep or replace `0.0.0.0` hold addresses.
    pub hold: HoldAddress,
}

/// The resolved target of one relayed media.
#[derive(Debug, Clone, Copy)]
struct Target {
    addr: Ipv4Addr,
    rtp_port: u16,
    rtcp_port: u16,
    add_rtcp: Option<u16>,
    /// The media is held with `0.0.0.0` and the plan keeps that.
    held: bool,
}

fn style_eol(ending: LineEnding) -> Eol {
    match ending {
        LineEnding::CrLf => Eol::CrLf,
        LineEnding::Lf => Eol::Lf,
    }
}

/// Inserts `text` before `lines[at]`, keeping a missing final terminator at the end.
fn insert_line(lines: &mut Vec<Line>, at: usize, text: String, style: Eol) {
    let at = at.min(lines.len());
    let mut eol = style;
    if at > 0 {
        if let Some(prev) = lines.get_mut(at - 1) {
            if prev.eol == Eol::None {
                prev.eol = style;
                eol = Eol::None;
            }
        }
    }
    lines.insert(at, Line { text, eol });
}

fn connection_of(line: &Line, number: usize) -> Result<Connection, SdpError> {
    let value = parse::line_value(&line.text);
    let toks: Vec<&str> = value.split([' ', '\t']).filter(|t| !t.is_empty()).collect();
    parse::parse_connection(&toks, number)
}

/// Rewrites a `c=` line to `target`, leaving it byte for byte when it already says that.
fn set_connection(line: &mut Line, number: usize, target: &Connection) -> Result<(), SdpError> {
    if connection_of(line, number)? != *target {
        line.text = format!("c={target}");
    }
    Ok(())
}

/// Rewrites the port of an `m=` line, keeping everything else as written.
fn set_media_port(line: &mut Line, port: u16) {
    let text = &line.text;
    // "m=" then optional blanks, the media token, blanks, the port token.
    let bytes = text.as_bytes();
    let mut i = 2;
    let skip_blank = |mut i: usize| {
        while matches!(bytes.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        i
    };
    let skip_token = |mut i: usize| {
        while matches!(bytes.get(i), Some(b) if *b != b' ' && *b != b'\t') {
            i += 1;
        }
        i
    };
    i = skip_blank(i);
    i = skip_token(i);
    let start = skip_blank(i);
    let mut end = start;
    while matches!(bytes.get(end), Some(b) if b.is_ascii_digit()) {
        end += 1;
    }
    let (Some(head), Some(old), Some(tail)) =
        (text.get(..start), text.get(start..end), text.get(end..))
    else {
        return;
    };
    if parse::parse_port(old) == Some(port) {
        return;
    }
    line.text = format!("{head}{port}{tail}");
}

/// Rewrites an `a=rtcp:` line to the relay's port and (when it had one) address.
fn set_rtcp(
    line: &mut Line,
    number: usize,
    target: &Target,
    keep_hold: bool,
) -> Result<(), SdpError> {
    let attribute = parse::parse_attribute(parse::line_value(&line.text));
    let old = parse::parse_rtcp(attribute.value.as_deref().unwrap_or(""), number)?;
    let connection = old.connection.as_ref().map(|c| {
        if c.is_hold() && keep_hold {
            c.clone()
        } else {
            Connection::ipv4(target.addr)
        }
    });
    if old.port == target.rtcp_port && old.connection == connection {
        return Ok(());
    }
    line.text = match connection {
        Some(c) => format!("a=rtcp:{} {c}", target.rtcp_port),
        None => format!("a=rtcp:{}", target.rtcp_port),
    };
    Ok(())
}

fn resolve_targets(
    sdp: &Sdp,
    plan: &RewritePlan,
    keep_hold: bool,
) -> Result<Vec<Option<Target>>, SdpError> {
    if plan.media.len() != sdp.media.len() {
        return Err(SdpError::InvalidPlan {
            reason: format!(
                "{} media rewrites for {} m= lines",
                plan.media.len(),
                sdp.media.len()
            ),
        });
    }
    let mut targets = Vec::with_capacity(plan.media.len());
    for (index, (media, rewrite)) in sdp.media.iter().zip(&plan.media).enumerate() {
        let Some(rewrite) = rewrite else {
            targets.push(None);
            continue;
        };
        if media.port == 0 {
            targets.push(None);
            continue;
        }
        if rewrite.rtp_port == 0 {
            return Err(SdpError::InvalidPlan {
                reason: format!("media #{index}: rtp_port 0 would reject the stream"),
            });
        }
        if let Some(c) = &media.effective_connection {
            if c.is_ipv6() {
                return Err(SdpError::Ipv6NotRelayed {
                    media: index,
                    line: media.effective_connection_line.unwrap_or(media.line),
                });
            }
        }
        let rtcp_port = match rewrite.rtcp_port {
            Some(p) => p,
            None if media.rtcp_mux => rewrite.rtp_port,
            None => rewrite
                .rtp_port
                .checked_add(1)
                .ok_or_else(|| SdpError::InvalidPlan {
                    reason: format!("media #{index}: rtp_port 65535 leaves no room for RTCP"),
                })?,
        };
        let add_rtcp = match rewrite.rtcp_port {
            Some(p) if media.rtcp.is_none() && Some(p) != rewrite.rtp_port.checked_add(1) => {
                Some(p)
            }
            _ => None,
        };
        targets.push(Some(Target {
            addr: rewrite.addr,
            rtp_port: rewrite.rtp_port,
            rtcp_port,
            add_rtcp,
            held: keep_hold && media.is_hold_address(),
        }));
    }
    Ok(targets)
}

/// Rewrites an SDP so that the media the plan names go through the relay.
///
/// What changes, and nothing else (every other line is kept byte for byte, in order):
/// - `m=` port of each relayed media (port-0 media stay at 0; the `/count` is kept);
/// - `c=` lines: media-level `c=` lines of relayed media are set to the relay address. The
///   session-level `c=` is set as [`RewritePlan::session_connection`] says. Then a media whose
///   effective address would come out wrong gets its own `c=` line, inserted after the `m=` (and
///   `i=`) lines: a relayed media that relied on the session `c=` when the session `c=` is not its
///   relay address, and a media that is not relayed when the session `c=` it relied on changed (it
///   keeps its old address). Rejected (port 0) media get no `c=` line: their address is
///   meaningless and follows the session `c=`;
/// - `a=rtcp:` of relayed media: port (and address, when it had one) set to the relay's; a new
///   `a=rtcp:` is added at the end of the section only as [`MediaRewrite::rtcp_port`] says;
/// - `o=` address when [`RewritePlan::origin`] asks (the session version is kept: the relay
///   rewrites the same SDP the same way, so the phone's version sequence stays meaningful);
/// - ICE attributes removed when [`RewritePlan::ice`] asks.
///
/// `0.0.0.0` addresses stay unless [`RewritePlan::hold`] says [`HoldAddress::Replace`]. Direction
/// attributes, `a=rtcp-mux`, `a=crypto`, T.38 and every other attribute pass through. A line already
/// equal to its target is not rewritten, so rewriting the output again with the same plan gives the
/// same output.
///
/// Errors: [`SdpError::InvalidPlan`] when the plan does not fit the SDP,
/// [`SdpError::Ipv6NotRelayed`] when a relayed media's address is IPv6.
pub fn rewrite(sdp: &Sdp, plan: &RewritePlan) -> Result<Sdp, SdpError> {
    // With ICE, 0.0.0.0 is a placeholder (trickle ICE, RFC 8839 / JSEP), not a hold.
    let keep_hold = plan.hold == HoldAddress::Keep && !sdp.has_ice();
    let targets = resolve_targets(sdp, plan, keep_hold)?;
    let style = style_eol(sdp.ending);

    // The session-level c= after the rewrite.
    let old_session = sdp.session_connection.as_ref();
    let new_session: Option<Connection> = match (old_session, plan.session_connection) {
        (None, _) => None,
        (Some(_), Some(addr)) => Some(Connection::ipv4(addr)),
        (Some(old), None) => {
            // A media that is not relayed but goes where the session c= says pins it.
            let pinned = sdp
                .media
                .iter()
                .zip(&targets)
                .any(|(m, t)| t.is_none() && m.port != 0 && m.connections.is_empty());
            if pinned || (old.is_hold() && keep_hold) {
                Some(old.clone())
            } else {
                let mut addrs = targets.iter().flatten().filter(|t| !t.held).map(|t| t.addr);
                match addrs.next() {
                    Some(first) if addrs.all(|a| a == first) => Some(Connection::ipv4(first)),
                    _ => Some(old.clone()),
                }
            }
        }
    };

    let session_end = sdp.media.first().map_or(sdp.lines.len(), |m| m.start);
    let mut out: Vec<Line> = Vec::with_capacity(sdp.lines.len() + sdp.media.len() * 2);

    for (index, line) in sdp.lines.iter().enumerate().take(session_end) {
        let number = index + 1;
        if plan.ice == IceAction::Remove && parse::is_ice_line(&line.text) {
            continue;
        }
        let mut line = line.clone();
        match parse::line_type(&line.text) {
            b'o' if number == sdp.origin_line => {
                if let Some(addr) = plan.origin {
                    let o = &sdp.origin;
                    let addr = addr.to_string();
                    if !(o.nettype == "IN" && o.addrtype == "IP4" && o.address == addr) {
                        line.text = format!(
                            "o={} {} {} IN IP4 {addr}",
                            o.username, o.session_id, o.session_version
                        );
                    }
                }
            }
            b'c' => {
                if let Some(target) = &new_session {
                    set_connection(&mut line, number, target)?;
                }
            }
            _ => {}
        }
        out.push(line);
    }

    for (media, target) in sdp.media.iter().zip(&targets) {
        let mut section: Vec<Line> = Vec::with_capacity(media.end - media.start + 2);
        for (offset, line) in sdp
            .lines
            .iter()
            .enumerate()
            .skip(media.start)
            .take(media.end - media.start)
        {
            let number = offset + 1;
            if plan.ice == IceAction::Remove && parse::is_ice_line(&line.text) {
                continue;
            }
            let mut line = line.clone();
            if let Some(target) = target {
                if offset == media.start {
                    set_media_port(&mut line, target.rtp_port);
                } else {
                    match parse::line_type(&line.text) {
                        b'c' => {
                            let old = connection_of(&line, number)?;
                            if !(old.is_hold() && keep_hold) {
                                set_connection(&mut line, number, &Connection::ipv4(target.addr))?;
                            }
                        }
                        b'a' => {
                            let attribute = parse::parse_attribute(parse::line_value(&line.text));
                            if attribute.name.eq_ignore_ascii_case("rtcp") {
                                set_rtcp(&mut line, number, target, keep_hold)?;
                            }
                        }
                        _ => {}
                    }
                }
            }
            section.push(line);
        }

        // A rejected media's address does not matter (RFC 3264 §6): it follows the session c=.
        if media.connections.is_empty() && media.port != 0 {
            // The media relied on the session-level c= (or had none at all).
            let wanted = match target {
                Some(t) if !t.held => Some(Connection::ipv4(t.addr)),
                _ => old_session.cloned(),
            };
            if let Some(wanted) = wanted {
                if Some(&wanted) != new_session.as_ref() {
                    let mut at = 1;
                    while section
                        .get(at)
                        .is_some_and(|l| parse::line_type(&l.text) == b'i')
                    {
                        at += 1;
                    }
                    insert_line(&mut section, at, format!("c={wanted}"), style);
                }
            }
        }

        if let Some(port) = target.and_then(|t| t.add_rtcp) {
            let at = section
                .iter()
                .rposition(|l| parse::line_type(&l.text) != 0)
                .map_or(section.len(), |i| i + 1);
            insert_line(&mut section, at, format!("a=rtcp:{port}"), style);
        }
        out.extend(section);
    }

    parse::build(out)
}
