//! PostgreSQL wire format: the few pieces the gateway reads and writes itself.
//!
//! The relay parses only what a decision or a ledger event needs (message type and length on
//! the hot path; bodies of Query, Parse, Bind, Execute, CommandComplete, ErrorResponse,
//! ReadyForQuery). Everything else is forwarded byte for byte.

use bytes::{BufMut, BytesMut};

/// Protocol version 3.0 in a StartupMessage.
pub const PROTOCOL_3_0: i32 = 196_608;
pub const SSL_REQUEST: i32 = 80_877_103;
pub const GSSENC_REQUEST: i32 = 80_877_104;
pub const CANCEL_REQUEST: i32 = 80_877_102;
/// PostgreSQL's own limit for a startup packet.
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// A cursor over a message body that never panics: every read checks bounds.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }

    pub fn i16(&mut self) -> Option<i16> {
        let b = self.bytes(2)?;
        Some(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self) -> Option<i32> {
        let b = self.bytes(4)?;
        Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        self.i32().map(|v| v as u32)
    }

    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    /// A NUL-terminated string (lossy UTF-8).
    pub fn cstr(&mut self) -> Option<String> {
        let pos = self.buf.iter().position(|&b| b == 0)?;
        let s = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
        self.buf = &self.buf[pos + 1..];
        Some(s)
    }
}

/// Appends a typed message: `tag`, length, then whatever `body` writes.
pub fn put_message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let len_at = out.len();
    out.put_i32(0);
    body(out);
    let len = (out.len() - len_at) as i32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

/// The fields of an ErrorResponse or NoticeResponse the gateway cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ErrorFields {
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        ErrorFields {
            severity: "ERROR".into(),
            code: code.into(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn fatal(code: &str, message: impl Into<String>) -> Self {
        ErrorFields {
            severity: "FATAL".into(),
            ..ErrorFields::error(code, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Parses the body of an ErrorResponse ('E') or NoticeResponse ('N').
    pub fn parse(body: &[u8]) -> ErrorFields {
        let mut f = ErrorFields::error("", "");
        let mut r = Reader::new(body);
        while let Some(kind) = r.u8() {
            if kind == 0 {
                break;
            }
            let Some(value) = r.cstr() else { break };
            match kind {
                b'V' => f.severity = value,
                b'S' if f.severity == "ERROR" || f.severity.is_empty() => f.severity = value,
                b'C' => f.code = value,
                b'M' => f.message = value,
                b'D' => f.detail = Some(value),
                b'H' => f.hint = Some(value),
                _ => {}
            }
        }
        f
    }

    /// Encodes an ErrorResponse message.
    pub fn encode(&self, out: &mut BytesMut) {
        put_message(out, b'E', |b| {
            b.put_u8(b'S');
            put_cstr(b, &self.severity);
            b.put_u8(b'V');
            put_cstr(b, &self.severity);
            b.put_u8(b'C');
            put_cstr(b, &self.code);
            b.put_u8(b'M');
            put_cstr(b, &self.message);
            if let Some(d) = &self.detail {
                b.put_u8(b'D');
                put_cstr(b, d);
            }
            if let Some(h) = &self.hint {
                b.put_u8(b'H');
                put_cstr(b, h);
            }
            b.put_u8(0);
        });
    }
}

pub fn ready_for_query(out: &mut BytesMut, status: u8) {
    put_message(out, b'Z', |b| b.put_u8(status));
}

/// Authentication request `R` with a code and extra bytes.
pub fn auth_request(out: &mut BytesMut, code: i32, extra: &[u8]) {
    put_message(out, b'R', |b| {
        b.put_i32(code);
        b.put_slice(extra);
    });
}

/// Number of rows a command tag reports (`SELECT 3`, `INSERT 0 5`, `COPY 10`, …), if any.
pub fn tag_rows(tag: &str) -> Option<u64> {
    let mut parts = tag.rsplit(' ');
    let last = parts.next()?;
    parts.next()?;
    last.parse().ok()
}

/// Well-known built-in type names, for readable ledger entries.
pub fn type_name(oid: u32) -> Option<&'static str> {
    Some(match oid {
        16 => "bool",
        17 => "bytea",
        18 => "char",
        19 => "name",
        20 => "int8",
        21 => "int2",
        23 => "int4",
        25 => "text",
        26 => "oid",
        114 => "json",
        700 => "float4",
        701 => "float8",
        1042 => "bpchar",
        1043 => "varchar",
        1082 => "date",
        1083 => "time",
        1114 => "timestamp",
        1184 => "timestamptz",
        1700 => "numeric",
        2950 => "uuid",
        3802 => "jsonb",
        _ => return None,
    })
}

/// Renders a binary-format parameter as text when its type is known, else as `\x…` hex.
pub fn decode_binary(oid: u32, v: &[u8]) -> String {
    let fixed = |n: usize| v.len() == n;
    match oid {
        16 if fixed(1) => (if v[0] != 0 { "true" } else { "false" }).to_string(),
        21 if fixed(2) => i16::from_be_bytes([v[0], v[1]]).to_string(),
        23 if fixed(4) => i32::from_be_bytes([v[0], v[1], v[2], v[3]]).to_string(),
        26 if fixed(4) => u32::from_be_bytes([v[0], v[1], v[2], v[3]]).to_string(),
        20 if fixed(8) => {
            i64::from_be_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]).to_string()
        }
        700 if fixed(4) => f32::from_be_bytes([v[0], v[1], v[2], v[3]]).to_string(),
        701 if fixed(8) => {
            f64::from_be_bytes([v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]]).to_string()
        }
        2950 if fixed(16) => {
            let h = hex(v);
            format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            )
        }
        18 | 19 | 25 | 114 | 1042 | 1043 => match std::str::from_utf8(v) {
            Ok(s) => s.to_string(),
            Err(_) => format!("\\x{}", hex(v)),
        },
        3802 if v.first() == Some(&1) => match std::str::from_utf8(&v[1..]) {
            Ok(s) => s.to_string(),
            Err(_) => format!("\\x{}", hex(v)),
        },
        _ => format!("\\x{}", hex(v)),
    }
}

pub fn hex(v: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(v.len() * 2);
    for b in v {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_round_trip() {
        let e = ErrorFields::error("42501", "no").with_hint("ask");
        let mut b = BytesMut::new();
        e.encode(&mut b);
        assert_eq!(b[0], b'E');
        let len = i32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        assert_eq!(len + 1, b.len());
        assert_eq!(ErrorFields::parse(&b[5..]), e);
    }

    #[test]
    fn tags() {
        assert_eq!(tag_rows("SELECT 3"), Some(3));
        assert_eq!(tag_rows("INSERT 0 5"), Some(5));
        assert_eq!(tag_rows("CREATE TABLE"), None);
        assert_eq!(tag_rows("BEGIN"), None);
    }

    #[test]
    fn binary_params() {
        assert_eq!(decode_binary(23, &42i32.to_be_bytes()), "42");
        assert_eq!(decode_binary(20, &(-7i64).to_be_bytes()), "-7");
        assert_eq!(decode_binary(25, b"hi"), "hi");
        assert_eq!(decode_binary(23, b"abc"), "\\x616263");
        assert_eq!(decode_binary(16, &[1]), "true");
    }

    #[test]
    fn reader_never_panics_on_short_input() {
        let mut r = Reader::new(&[0, 1]);
        assert_eq!(r.i32(), None);
        assert_eq!(r.i16(), Some(1));
        assert_eq!(r.u8(), None);
        let mut r = Reader::new(b"abc");
        assert_eq!(r.cstr(), None);
    }
}
