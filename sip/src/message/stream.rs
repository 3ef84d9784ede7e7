//! Framing SIP messages in a TCP/TLS byte stream (RFC 3261 §18.3) with CRLF keep-alives
//! (RFC 5626 §3.5.1).

use thiserror::Error;

use super::{expand_compact, find, parse_decimal, split_crlf, trim_ws, Limits};

/// What the front of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// `len` bytes of CRLF keep-alive to consume. `pong` is true for a double-CRLF ping, which
    /// the caller answers with a single CRLF (RFC 5626 §4.4.1).
    KeepAlive {
        /// Bytes to consume.
        len: usize,
        /// Whether to answer with `\r\n`.
        pong: bool,
    },
    /// A whole message occupies `buf[..len]`; hand it to [`super::parse`] and consume it.
    Message {
        /// Message length in bytes (headers, empty line and Content-Length bytes of body).
        len: usize,
    },
}

/// The stream cannot be framed; the connection has to be closed (there is no way to find the
/// next message boundary).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The header block or the whole message is larger than the limit.
    #[error("message exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The bytes at the front are not the start of a SIP message.
    #[error("not SIP: start line is not text")]
    Garbage,
    /// No Content-Length header, which is mandatory on streams.
    #[error("missing Content-Length on a stream transport")]
    MissingContentLength,
    /// More than one Content-Length header.
    #[error("multiple Content-Length header fields")]
    DuplicateContentLength,
    /// Content-Length is not a number.
    #[error("bad Content-Length header field")]
    BadContentLength,
}

/// Finds the first complete message (or keep-alive) at the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed. Never reads past what it reports; the caller
/// consumes the reported length and calls again.
pub fn frame_stream(buf: &[u8], limits: &Limits) -> Result<Option<Frame>, FrameError> {
    if buf.starts_with(b"\r\n\r\n") {
        return Ok(Some(Frame::KeepAlive { len: 4, pong: true }));
    }
    if buf.starts_with(b"\r\n") {
        return Ok(match buf.get(2) {
            Some(b'\r') | None => {
                if buf.len() >= 4 {
                    Some(Frame::KeepAlive {
                        len: 2,
                        pong: false,
                    })
                } else {
                    None
                }
            }
            Some(_) => Some(Frame::KeepAlive {
                len: 2,
                pong: false,
            }),
        });
    }
    if buf == b"\r" {
        return Ok(None);
    }
    let first = match find(buf, b"\r\n") {
        Some(end) => &buf[..end],
        // The first line is not complete yet: a CR at the very end of what arrived so far may be
        // the first half of its CRLF (TCP may cut a segment anywhere), not a control character.
        None => buf.strip_suffix(b"\r").unwrap_or(buf),
    };
    if first.first().is_some_and(|b| !b.is_ascii_alphabetic())
        || first.iter().any(|&b| b < 0x20 || b == 0x7f)
    {
        return Err(FrameError::Garbage);
    }
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > limits.max_message_len {
            return Err(FrameError::TooLarge {
                limit: limits.max_message_len,
            });
        }
        return Ok(None);
    };
    let mut content_length = None;
    let mut previous_was_cl = false;
    let mut cl_text = String::new();
    for line in split_crlf(&buf[..head_end]).into_iter().skip(1) {
        let text = String::from_utf8_lossy(line);
        if text.starts_with([' ', '\t']) {
            if previous_was_cl {
                cl_text.push_str(trim_ws(&text));
            }
            continue;
        }
        if previous_was_cl {
            content_length = Some(std::mem::take(&mut cl_text));
        }
        previous_was_cl = false;
        if let Some((name, value)) = text.split_once(':') {
            if expand_compact(trim_ws(name)).eq_ignore_ascii_case("Content-Length") {
                if content_length.is_some() || previous_was_cl {
                    return Err(FrameError::DuplicateContentLength);
                }
                previous_was_cl = true;
                cl_text = trim_ws(value).to_owned();
            }
        }
    }
    if previous_was_cl {
        content_length = Some(cl_text);
    }
    let cl = content_length.ok_or(FrameError::MissingContentLength)?;
    let cl = parse_decimal(trim_ws(&cl), u64::from(u32::MAX))
        .and_then(|v| usize::try_from(v).ok())
        .ok_or(FrameError::BadContentLength)?;
    let len = head_end
        .checked_add(4)
        .and_then(|n| n.checked_add(cl))
        .filter(|&n| n <= limits.max_message_len)
        .ok_or(FrameError::TooLarge {
            limit: limits.max_message_len,
        })?;
    Ok((buf.len() >= len).then_some(Frame::Message { len }))
}
