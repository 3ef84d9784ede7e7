//! A small, defensive bencode codec for the ng control protocol.
//!
//! Bencode has four kinds of value: integers (`i42e`), byte strings (`4:spam`), lists
//! (`l...e`) and dictionaries (`d<key><value>...e`, keys are byte strings). The ng protocol
//! carries whole SDP bodies as byte strings, so [`Value::Bytes`] holds raw bytes, never a
//! lossy UTF-8 conversion.
//!
//! Decoding is tolerant where rtpengine is tolerant and strict where strictness costs
//! nothing:
//!
//! * dictionary keys need not be sorted (rtpengine does not require it either); a duplicate
//!   key keeps the last value;
//! * string lengths and integers may carry leading zeros (`i007e`, `03:abc`);
//! * anything else malformed (a non-digit in a length, an integer overflowing `i64`, a
//!   truncated value, a non-string dictionary key) is an error.
//!
//! Decoding never panics and never recurses deeper than [`Limits::max_depth`]; the input
//! length and the number of values are bounded as well ([`Limits`]). Encoding always writes
//! canonical bencode (sorted keys, no leading zeros), so `decode(encode(v)) == v`.

use std::collections::BTreeMap;
use std::fmt;

/// A decoded bencode value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    /// `i<digits>e`
    Int(i64),
    /// `<len>:<bytes>`: raw bytes, not necessarily UTF-8.
    Bytes(Vec<u8>),
    /// `l<values>e`
    List(Vec<Value>),
    /// `d<key><value>...e`: keys are byte strings, kept sorted.
    Dict(BTreeMap<Vec<u8>, Value>),
}

impl Value {
    /// A byte string value from anything byte-like (`&str`, `String`, `&[u8]`, `Vec<u8>`).
    pub fn bytes(b: impl Into<Vec<u8>>) -> Value {
        Value::Bytes(b.into())
    }

    /// An empty dictionary.
    pub fn dict() -> Value {
        Value::Dict(BTreeMap::new())
    }

    /// The integer, if this is an `Int`.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The raw bytes, if this is a byte string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The string, if this is a byte string holding valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The elements, if this is a list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// The map, if this is a dictionary.
    pub fn as_dict(&self) -> Option<&BTreeMap<Vec<u8>, Value>> {
        match self {
            Value::Dict(d) => Some(d),
            _ => None,
        }
    }

    /// Looks `key` up if this is a dictionary.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dict().and_then(|d| d.get(key.as_bytes()))
    }

    /// Inserts `key` -> `value` if this is a dictionary (no-op otherwise); returns `self`
    /// for chaining.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Value {
        if let Value::Dict(d) = &mut self {
            d.insert(key.as_bytes().to_vec(), value.into());
        }
        self
    }

    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "integer",
            Value::Bytes(_) => "string",
            Value::List(_) => "list",
            Value::Dict(_) => "dictionary",
        }
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}
impl From<u64> for Value {
    /// Saturates at `i64::MAX` (bencode integers are signed 64-bit here).
    fn from(i: u64) -> Value {
        Value::Int(i64::try_from(i).unwrap_or(i64::MAX))
    }
}
impl From<u32> for Value {
    fn from(i: u32) -> Value {
        Value::Int(i64::from(i))
    }
}
impl From<u16> for Value {
    fn from(i: u16) -> Value {
        Value::Int(i64::from(i))
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Bytes(s.into_bytes())
    }
}
impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Value {
        Value::Bytes(b.to_vec())
    }
}
impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Value {
        Value::Bytes(b)
    }
}
impl From<Vec<Value>> for Value {
    fn from(l: Vec<Value>) -> Value {
        Value::List(l)
    }
}
impl From<BTreeMap<Vec<u8>, Value>> for Value {
    fn from(d: BTreeMap<Vec<u8>, Value>) -> Value {
        Value::Dict(d)
    }
}

/// Bounds on what [`decode_with_limits`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest input accepted, in bytes.
    pub max_input: usize,
    /// Deepest nesting of lists and dictionaries (a top-level dictionary is depth 1).
    pub max_depth: usize,
    /// Most values (of any kind, nested ones included) in one document.
    pub max_values: usize,
}

impl Limits {
    /// The limits used by [`decode`]: 1 MiB input (a UDP datagram is at most 64 KiB; TCP
    /// transports may carry more), depth 32, 100 000 values.
    pub const DEFAULT: Limits = Limits {
        max_input: 1 << 20,
        max_depth: 32,
        max_values: 100_000,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Why a document did not decode. `at` is the byte offset where the problem was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BencodeError {
    /// The input ended in the middle of a value.
    #[error("unexpected end of input at byte {at}")]
    UnexpectedEof {
        /// Offset of the end of input.
        at: usize,
    },
    /// A byte that cannot start or continue a value here.
    #[error("unexpected byte 0x{byte:02x} at byte {at}")]
    UnexpectedByte {
        /// Offset of the byte.
        at: usize,
        /// The byte.
        byte: u8,
    },
    /// An integer or a string length that is empty, malformed or out of range.
    #[error("invalid number at byte {at}")]
    InvalidNumber {
        /// Offset where the number starts.
        at: usize,
    },
    /// A dictionary key that is not a byte string.
    #[error("dictionary key at byte {at} is not a string")]
    NonStringKey {
        /// Offset of the key.
        at: usize,
    },
    /// Lists/dictionaries nested deeper than [`Limits::max_depth`].
    #[error("nesting deeper than {max} at byte {at}")]
    TooDeep {
        /// Offset of the value that was too deep.
        at: usize,
        /// The limit.
        max: usize,
    },
    /// More values than [`Limits::max_values`].
    #[error("more than {max} values")]
    TooManyValues {
        /// The limit.
        max: usize,
    },
    /// Input longer than [`Limits::max_input`].
    #[error("input of {len} bytes exceeds the limit of {max}")]
    InputTooLarge {
        /// Input length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Decodes one value from the start of `input` with [`Limits::DEFAULT`]; returns it and the
/// number of bytes it used (trailing bytes are left to the caller).
pub fn decode(input: &[u8]) -> Result<(Value, usize), BencodeError> {
    decode_with_limits(input, &Limits::DEFAULT)
}

/// [`decode`] with explicit limits.
pub fn decode_with_limits(input: &[u8], limits: &Limits) -> Result<(Value, usize), BencodeError> {
    if input.len() > limits.max_input {
        return Err(BencodeError::InputTooLarge {
            len: input.len(),
            max: limits.max_input,
        });
    }
    let mut d = Decoder {
        input,
        pos: 0,
        limits,
        values: 0,
    };
    let v = d.value(0)?;
    Ok((v, d.pos))
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    limits: &'a Limits,
    values: usize,
}

impl Decoder<'_> {
    fn peek(&self) -> Result<u8, BencodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or(BencodeError::UnexpectedEof { at: self.pos })
    }

    fn value(&mut self, depth: usize) -> Result<Value, BencodeError> {
        self.values += 1;
        if self.values > self.limits.max_values {
            return Err(BencodeError::TooManyValues {
                max: self.limits.max_values,
            });
        }
        let at = self.pos;
        match self.peek()? {
            b'i' => {
                self.pos += 1;
                let n = self.number(b'e', true)?;
                Ok(Value::Int(n))
            }
            b'0'..=b'9' => Ok(Value::Bytes(self.string()?)),
            b'l' | b'd' if depth + 1 > self.limits.max_depth => Err(BencodeError::TooDeep {
                at,
                max: self.limits.max_depth,
            }),
            b'l' => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek()? != b'e' {
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            b'd' => {
                self.pos += 1;
                let mut map = BTreeMap::new();
                loop {
                    let c = self.peek()?;
                    if c == b'e' {
                        break;
                    }
                    if !c.is_ascii_digit() {
                        return Err(BencodeError::NonStringKey { at: self.pos });
                    }
                    self.values += 1;
                    let key = self.string()?;
                    let v = self.value(depth + 1)?;
                    map.insert(key, v);
                }
                self.pos += 1;
                Ok(Value::Dict(map))
            }
            byte => Err(BencodeError::UnexpectedByte { at, byte }),
        }
    }

    /// Parses `-?[0-9]+` up to `end` (consumed). Leading zeros are tolerated.
    fn number(&mut self, end: u8, signed: bool) -> Result<i64, BencodeError> {
        let start = self.pos;
        let mut neg = false;
        if signed && self.peek()? == b'-' {
            neg = true;
            self.pos += 1;
        }
        let mut n: i64 = 0;
        let mut digits = 0usize;
        loop {
            let c = self.peek()?;
            if c == end {
                self.pos += 1;
                break;
            }
            if !c.is_ascii_digit() {
                return Err(BencodeError::UnexpectedByte {
                    at: self.pos,
                    byte: c,
                });
            }
            let d = i64::from(c - b'0');
            n = n
                .checked_mul(10)
                .and_then(|n| {
                    if neg {
                        n.checked_sub(d)
                    } else {
                        n.checked_add(d)
                    }
                })
                .ok_or(BencodeError::InvalidNumber { at: start })?;
            digits += 1;
            self.pos += 1;
        }
        if digits == 0 {
            return Err(BencodeError::InvalidNumber { at: start });
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<Vec<u8>, BencodeError> {
        let at = self.pos;
        let len = self.number(b':', false)?;
        let len = usize::try_from(len).map_err(|_| BencodeError::InvalidNumber { at })?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.input.len())
            .ok_or(BencodeError::UnexpectedEof {
                at: self.input.len(),
            })?;
        let s = self.input[self.pos..end].to_vec();
        self.pos = end;
        Ok(s)
    }
}

/// Encodes `value` as canonical bencode.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out);
    out
}

/// Appends the canonical bencoding of `value` to `out`.
pub fn encode_into(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Int(i) => {
            out.push(b'i');
            out.extend_from_slice(i.to_string().as_bytes());
            out.push(b'e');
        }
        Value::Bytes(b) => encode_bytes(b, out),
        Value::List(l) => {
            out.push(b'l');
            for v in l {
                encode_into(v, out);
            }
            out.push(b'e');
        }
        Value::Dict(d) => {
            out.push(b'd');
            for (k, v) in d {
                encode_bytes(k, out);
                encode_into(v, out);
            }
            out.push(b'e');
        }
    }
}

fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

impl fmt::Display for Value {
    /// A JSON-like rendering for logs; byte strings are shown lossily as UTF-8.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Bytes(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Value::List(l) => {
                f.write_str("[")?;
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Dict(d) => {
                f.write_str("{")?;
                for (i, (k, v)) in d.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{:?}: {v}", String::from_utf8_lossy(k))?;
                }
                f.write_str("}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_basic_values() {
        assert_eq!(decode(b"i42e").unwrap(), (Value::Int(42), 4));
        assert_eq!(decode(b"i-7e").unwrap(), (Value::Int(-7), 4));
        assert_eq!(decode(b"4:spamXX").unwrap(), (Value::bytes("spam"), 6));
        assert_eq!(decode(b"0:").unwrap(), (Value::bytes(""), 2));
        let (v, n) = decode(b"d7:command4:pinge").unwrap();
        assert_eq!(n, 17);
        assert_eq!(v.get("command").and_then(Value::as_str), Some("ping"));
        let (v, _) = decode(b"li1e1:ae").unwrap();
        assert_eq!(v, Value::List(vec![Value::Int(1), Value::bytes("a")]));
    }

    #[test]
    fn tolerates_unsorted_keys_and_leading_zeros() {
        let (v, _) = decode(b"d1:bi1e1:ai2ee").unwrap();
        assert_eq!(v.get("a"), Some(&Value::Int(2)));
        assert_eq!(decode(b"i007e").unwrap().0, Value::Int(7));
        assert_eq!(decode(b"03:abc").unwrap().0, Value::bytes("abc"));
        assert_eq!(
            decode(&encode(&decode(b"d1:bi1e1:ai2ee").unwrap().0))
                .unwrap()
                .0,
            v
        );
        assert_eq!(encode(&v), b"d1:ai2e1:bi1ee");
    }

    #[test]
    fn extremes() {
        assert_eq!(
            decode(b"i-9223372036854775808e").unwrap().0,
            Value::Int(i64::MIN)
        );
        assert_eq!(
            decode(b"i9223372036854775807e").unwrap().0,
            Value::Int(i64::MAX)
        );
        assert!(matches!(
            decode(b"i9223372036854775808e"),
            Err(BencodeError::InvalidNumber { .. })
        ));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b""[..],
            b"i",
            b"ie",
            b"i-e",
            b"i1",
            b"i1xe",
            b"5:abc",
            b"99999999999999999999999:a",
            b"l",
            b"li1e",
            b"d",
            b"di1ei2ee",
            b"d1:a",
            b"x",
            b"-1:a",
            b":",
        ] {
            assert!(
                decode(bad).is_err(),
                "{:?} decoded",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn enforces_limits() {
        let deep: Vec<u8> = std::iter::repeat_n(b'l', 100)
            .chain(std::iter::repeat_n(b'e', 100))
            .collect();
        assert!(matches!(decode(&deep), Err(BencodeError::TooDeep { .. })));
        let ok_depth: Vec<u8> = std::iter::repeat_n(b'l', 32)
            .chain(std::iter::repeat_n(b'e', 32))
            .collect();
        assert!(decode(&ok_depth).is_ok());
        let limits = Limits {
            max_input: 10,
            ..Limits::DEFAULT
        };
        assert!(matches!(
            decode_with_limits(b"11:hello world", &limits),
            Err(BencodeError::InputTooLarge { .. })
        ));
        let limits = Limits {
            max_values: 3,
            ..Limits::DEFAULT
        };
        assert!(matches!(
            decode_with_limits(b"li1ei2ei3ee", &limits),
            Err(BencodeError::TooManyValues { .. })
        ));
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
                proptest::collection::btree_map(
                    proptest::collection::vec(any::<u8>(), 0..12),
                    inner,
                    0..8
                )
                .prop_map(Value::Dict),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trip(v in arb_value()) {
            let enc = encode(&v);
            let (back, used) = decode(&enc).unwrap();
            prop_assert_eq!(used, enc.len());
            prop_assert_eq!(back, v);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok((v, used)) = decode(&bytes) {
                prop_assert!(used <= bytes.len());
                prop_assert_eq!(decode(&encode(&v)).unwrap().0, v);
            }
        }
    }
}
