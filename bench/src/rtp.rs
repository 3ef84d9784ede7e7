//! G.711-shaped RTP test packets.
//!
//! Every packet is exactly [`PACKET_LEN`] bytes: a fixed 12-byte RTP header
//! (V=2, no padding/extension/CSRC, PT=0 PCMU) followed by a 160-byte payload,
//! i.e. 20 ms of 8 kHz mu-law, so the relay sees the same sizes as real calls.
//!
//! The payload starts with a measurement header (see [`PayloadHeader`]
//! offsets below) and is filled with a pattern derived from `(stream, seq)`.
//! Because the pattern depends on the measurement fields, a packet whose
//! stamp, stream or sequence was damaged in transit fails verification instead
//! of being silently attributed to the wrong stream.
//!
//! Payload layout (big-endian):
//!
//! | offset | size | field                                   |
//! |--------|------|-----------------------------------------|
//! | 0      | 8    | send time, `CLOCK_MONOTONIC` ns         |
//! | 8      | 4    | stream index                            |
//! | 12     | 8    | 64-bit per-stream sequence counter      |
//! | 20     | 4    | magic `b"SLCB"`                         |
//! | 24     | 136  | deterministic pattern                   |

use thiserror::Error;

/// RTP fixed header length (no CSRC, no extension).
pub const RTP_HEADER_LEN: usize = 12;
/// G.711 payload for a 20 ms packet at 8 kHz.
pub const PAYLOAD_LEN: usize = 160;
/// Total UDP payload length of every generated packet.
pub const PACKET_LEN: usize = RTP_HEADER_LEN + PAYLOAD_LEN;
/// RTP payload type for PCMU (G.711 mu-law).
pub const PT_PCMU: u8 = 0;
/// RTP timestamp increment per packet (160 samples at 8 kHz).
pub const TIMESTAMP_STEP: u32 = 160;
/// Marks payloads produced by this crate, so stray traffic is not mistaken
/// for a corrupted test packet.
pub const MAGIC: [u8; 4] = *b"SLCB";

const OFF_SEND_NS: usize = 0;
const OFF_STREAM: usize = 8;
const OFF_SEQ: usize = 12;
const OFF_MAGIC: usize = 20;
/// Payload offset at which the verification pattern starts.
const OFF_PATTERN: usize = 24;
/// Shortest datagram from which a stream and sequence can be recovered.
pub const MIN_PARSE_LEN: usize = RTP_HEADER_LEN + OFF_PATTERN;

/// First RTP header byte: V=2, P=0, X=0, CC=0.
const RTP_BYTE0: u8 = 0x80;

/// Measurement fields carried in each packet's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PayloadHeader {
    /// `CLOCK_MONOTONIC` nanoseconds when the packet was built.
    pub send_ns: u64,
    /// Index of the stream (call leg) this packet belongs to.
    pub stream: u32,
    /// Per-stream packet counter starting at 0; unlike the 16-bit RTP
    /// sequence number it never wraps during a run, so loss accounting stays
    /// exact for long runs.
    pub seq: u64,
}

/// Result of parsing a datagram that carries a measurement header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedPacket {
    /// Measurement fields recovered from the payload.
    pub header: PayloadHeader,
    /// `true` when length, RTP header and pattern all match what the
    /// generator would have produced for `header`.
    pub intact: bool,
}

/// Why a datagram could not be attributed to a test stream at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ParseError {
    /// The datagram is shorter than [`MIN_PARSE_LEN`].
    #[error("datagram too short: {0} bytes")]
    TooShort(usize),
    /// The RTP version field is not 2.
    #[error("not RTP version 2 (first byte {0:#04x})")]
    BadVersion(u8),
    /// The payload does not carry [`MAGIC`]; likely foreign traffic.
    #[error("payload magic missing")]
    NotBench,
}

/// SSRC used for stream `stream`.
///
/// Multiplying by an odd constant is a bijection on `u32`, so distinct
/// streams never share an SSRC, while the values still look random enough
/// that a relay hashing on SSRC does not see a degenerate key set.
pub fn ssrc_for_stream(stream: u32) -> u32 {
    (stream ^ 0x534C_5543).wrapping_mul(0x9E37_79B1)
}

/// RTP timestamp for packet `seq` (starting at 0, +160 per packet).
pub fn rtp_timestamp(seq: u64) -> u32 {
    // Truncation is intended: RTP timestamps wrap modulo 2^32.
    (seq as u32).wrapping_mul(TIMESTAMP_STEP)
}

/// Pattern byte at payload offset `idx` for `(stream, seq)`.
fn pattern_byte(seed: u64, idx: usize) -> u8 {
    let shift = (idx % 8) * 8;
    ((seed >> shift) as u8) ^ (idx as u8)
}

fn pattern_seed(stream: u32, seq: u64) -> u64 {
    ((u64::from(stream) << 32) ^ seq).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

/// Writes the packet for `header` into `out`.
///
/// Infallible by construction: the fixed-size output makes a short buffer a
/// compile-time error rather than a runtime one.
pub fn build_packet(header: &PayloadHeader, out: &mut [u8; PACKET_LEN]) {
    let (rtp, payload) = out.split_at_mut(RTP_HEADER_LEN);
    rtp[0] = RTP_BYTE0;
    // Marker on the first packet mirrors the start of a talkspurt.
    rtp[1] = PT_PCMU | if header.seq == 0 { 0x80 } else { 0 };
    rtp[2..4].copy_from_slice(&(header.seq as u16).to_be_bytes());
    rtp[4..8].copy_from_slice(&rtp_timestamp(header.seq).to_be_bytes());
    rtp[8..12].copy_from_slice(&ssrc_for_stream(header.stream).to_be_bytes());

    payload[OFF_SEND_NS..OFF_SEND_NS + 8].copy_from_slice(&header.send_ns.to_be_bytes());
    payload[OFF_STREAM..OFF_STREAM + 4].copy_from_slice(&header.stream.to_be_bytes());
    payload[OFF_SEQ..OFF_SEQ + 8].copy_from_slice(&header.seq.to_be_bytes());
    payload[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&MAGIC);
    if let Some(rest) = payload.get_mut(OFF_PATTERN..) {
        fill_pattern(pattern_seed(header.stream, header.seq), rest);
    }
}

/// Convenience wrapper around [`build_packet`] returning a fresh array.
pub fn encode(header: &PayloadHeader) -> [u8; PACKET_LEN] {
    let mut out = [0u8; PACKET_LEN];
    build_packet(header, &mut out);
    out
}

fn be_u64(b: &[u8], off: usize) -> Option<u64> {
    let bytes: [u8; 8] = b.get(off..off + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

fn be_u32(b: &[u8], off: usize) -> Option<u32> {
    let bytes: [u8; 4] = b.get(off..off + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

fn be_u16(b: &[u8], off: usize) -> Option<u16> {
    let bytes: [u8; 2] = b.get(off..off + 2)?.try_into().ok()?;
    Some(u16::from_be_bytes(bytes))
}

/// Parses and verifies a received datagram (the UDP payload).
///
/// Never panics. A datagram that carries a readable measurement header but
/// differs in any other byte from what the generator produces is returned with
/// `intact == false`, so the caller can count it as corrupted against its
/// stream.
pub fn parse_packet(buf: &[u8]) -> Result<ParsedPacket, ParseError> {
    if buf.len() < MIN_PARSE_LEN {
        return Err(ParseError::TooShort(buf.len()));
    }
    let byte0 = buf.first().copied().ok_or(ParseError::TooShort(0))?;
    if byte0 >> 6 != 2 {
        return Err(ParseError::BadVersion(byte0));
    }
    let payload = buf
        .get(RTP_HEADER_LEN..)
        .ok_or(ParseError::TooShort(buf.len()))?;
    if payload.get(OFF_MAGIC..OFF_MAGIC + 4) != Some(&MAGIC[..]) {
        return Err(ParseError::NotBench);
    }
    let too_short = ParseError::TooShort(buf.len());
    let header = PayloadHeader {
        send_ns: be_u64(payload, OFF_SEND_NS).ok_or(too_short)?,
        stream: be_u32(payload, OFF_STREAM).ok_or(too_short)?,
        seq: be_u64(payload, OFF_SEQ).ok_or(too_short)?,
    };
    Ok(ParsedPacket {
        header,
        intact: verify(buf, &header),
    })
}

/// Checks every byte other than the measurement header itself.
fn verify(buf: &[u8], h: &PayloadHeader) -> bool {
    if buf.len() != PACKET_LEN {
        return false;
    }
    let expected_b1 = PT_PCMU | if h.seq == 0 { 0x80 } else { 0 };
    let header_ok = buf.first() == Some(&RTP_BYTE0)
        && buf.get(1) == Some(&expected_b1)
        && be_u16(buf, 2) == Some(h.seq as u16)
        && be_u32(buf, 4) == Some(rtp_timestamp(h.seq))
        && be_u32(buf, 8) == Some(ssrc_for_stream(h.stream));
    if !header_ok {
        return false;
    }
    // Materialising the expected bytes and comparing slices lets the
    // comparison run as a memcmp instead of a byte-wise early-exit loop.
    let mut expected = [0u8; PAYLOAD_LEN - OFF_PATTERN];
    fill_pattern(pattern_seed(h.stream, h.seq), &mut expected);
    buf.get(RTP_HEADER_LEN + OFF_PATTERN..) == Some(&expected[..])
}

/// Writes the pattern for payload offsets `OFF_PATTERN..PAYLOAD_LEN`.
fn fill_pattern(seed: u64, out: &mut [u8]) {
    for (k, b) in out.iter_mut().enumerate() {
        *b = pattern_byte(seed, OFF_PATTERN + k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(stream: u32, seq: u64) -> PayloadHeader {
        PayloadHeader {
            send_ns: 0x0123_4567_89AB_CDEF ^ seq,
            stream,
            seq,
        }
    }

    #[test]
    fn layout_matches_g711() {
        let p = encode(&sample(7, 3));
        assert_eq!(p.len(), 172);
        assert_eq!(p[0], 0x80);
        assert_eq!(p[1] & 0x7f, PT_PCMU);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 3);
        assert_eq!(u32::from_be_bytes([p[4], p[5], p[6], p[7]]), 480);
        assert_eq!(
            u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
            ssrc_for_stream(7)
        );
    }

    #[test]
    fn marker_only_on_first_packet() {
        assert_eq!(encode(&sample(1, 0))[1], 0x80);
        assert_eq!(encode(&sample(1, 1))[1], 0x00);
    }

    #[test]
    fn roundtrip_many() {
        // A deterministic sweep stands in for property testing: it covers
        // 16-bit and 32-bit wrap points and extreme stream indices.
        let streams = [0u32, 1, 2, 19, 255, 65_535, 1 << 20, u32::MAX];
        let seqs = [
            0u64,
            1,
            2,
            159,
            65_535,
            65_536,
            (1 << 32) - 1,
            1 << 32,
            u64::MAX,
        ];
        for &s in &streams {
            for &q in &seqs {
                let h = sample(s, q);
                let parsed = parse_packet(&encode(&h)).expect("parse");
                assert_eq!(parsed.header, h);
                assert!(parsed.intact, "stream {s} seq {q}");
            }
        }
    }

    #[test]
    fn ssrc_distinct_for_nearby_streams() {
        let mut seen = std::collections::HashSet::new();
        for s in 0..10_000u32 {
            assert!(seen.insert(ssrc_for_stream(s)));
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let h = sample(42, 1234);
        let good = encode(&h);
        for byte in 0..PACKET_LEN {
            for bit in 0..8 {
                let mut bad = good;
                bad[byte] ^= 1 << bit;
                match parse_packet(&bad) {
                    Ok(p) => {
                        // Flips in the measurement fields change the expected
                        // pattern; elsewhere they break the pattern directly.
                        // Only a send-time flip is invisible, by design.
                        let in_send_ns = (RTP_HEADER_LEN..RTP_HEADER_LEN + 8).contains(&byte);
                        assert_eq!(p.intact, in_send_ns, "byte {byte} bit {bit}");
                    }
                    Err(_) => {
                        // Version and magic flips are rejected outright.
                    }
                }
            }
        }
    }

    #[test]
    fn truncated_and_extended_are_not_intact() {
        let good = encode(&sample(3, 9));
        let p = parse_packet(&good[..PACKET_LEN - 1]).expect("parse");
        assert!(!p.intact);
        let mut long = good.to_vec();
        long.push(0);
        assert!(!parse_packet(&long).expect("parse").intact);
    }

    #[test]
    fn garbage_never_panics() {
        assert_eq!(parse_packet(&[]), Err(ParseError::TooShort(0)));
        let mut buf = [0u8; 300];
        let mut x: u32 = 0x1234_5678;
        for len in 0..buf.len() {
            for b in buf.iter_mut() {
                // xorshift: cheap deterministic noise without a rand dependency.
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            let _ = parse_packet(&buf[..len]);
            buf[0] = 0x80;
            let _ = parse_packet(&buf[..len]);
            if len >= MIN_PARSE_LEN {
                buf[RTP_HEADER_LEN + 20..RTP_HEADER_LEN + 24].copy_from_slice(&MAGIC);
                let r = parse_packet(&buf[..len]);
                assert!(matches!(r, Ok(ParsedPacket { intact: false, .. })));
            }
        }
    }

    #[test]
    fn foreign_rtp_is_not_bench() {
        let mut p = encode(&sample(0, 0));
        p[RTP_HEADER_LEN + 20] = b'X';
        assert_eq!(parse_packet(&p), Err(ParseError::NotBench));
        p[0] = 0x40;
        assert_eq!(parse_packet(&p), Err(ParseError::BadVersion(0x40)));
    }
}
