//! A recorded PostgreSQL session as a person reads it: the statements the target received and
//! (for `full` recordings) the rows, tags and errors the client received, in order, with time
//! offsets. Used by `portcullis sessions replay`.
//!
//! Frames are relayed reads, so a message can span frames: each direction keeps its own
//! buffer and only complete messages are rendered.

use crate::wire::Reader;

/// Turns the frames of one recording into lines.
#[derive(Default)]
pub struct Transcript {
    to_target: Vec<u8>,
    to_client: Vec<u8>,
}

/// Values longer than this many characters are cut in the transcript.
const MAX_VALUE_CHARS: usize = 200;

impl Transcript {
    pub fn new() -> Self {
        Transcript::default()
    }

    /// The lines for one frame: `to_target` tells the direction, `offset_us` the time since
    /// the session started.
    pub fn feed(&mut self, to_target: bool, offset_us: u64, bytes: &[u8]) -> Vec<String> {
        let buf = if to_target {
            &mut self.to_target
        } else {
            &mut self.to_client
        };
        buf.extend_from_slice(bytes);
        let mut lines = Vec::new();
        let mut at = 0;
        while buf.len() - at >= 5 {
            let tag = buf[at];
            let len = i32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]);
            if len < 4 {
                lines.push(format!(
                    "{} ? unreadable message {:?} (length {len}): the rest of this frame is skipped",
                    stamp(offset_us),
                    tag as char
                ));
                at = buf.len();
                break;
            }
            let total = 1 + len as usize;
            if buf.len() - at < total {
                break;
            }
            let body = &buf[at + 5..at + total];
            let line = if to_target {
                client_message(tag, body)
            } else {
                server_message(tag, body)
            };
            if let Some(line) = line {
                let arrow = if to_target { '>' } else { '<' };
                lines.push(format!("{} {arrow} {line}", stamp(offset_us)));
            }
            at += total;
        }
        buf.drain(..at);
        lines
    }
}

fn stamp(offset_us: u64) -> String {
    format!("+{:>9.3}s", offset_us as f64 / 1e6)
}

/// At most `MAX_VALUE_CHARS` characters, control characters escaped (recorded text must not
/// drive the reader's terminal: an ESC sequence in a row value is shown, not obeyed).
fn cut(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX_VALUE_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn value(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => cut(s),
        Err(_) => format!("<{} bytes>", bytes.len()),
    }
}

/// A message the target received.
fn client_message(tag: u8, body: &[u8]) -> Option<String> {
    let mut r = Reader::new(body);
    Some(match tag {
        b'Q' => cut(&r.cstr()?),
        b'P' => {
            let name = r.cstr()?;
            let sql = r.cstr()?;
            let (name, sql) = (cut(&name), cut(&sql));
            if name.is_empty() {
                format!("PARSE {sql}")
            } else {
                format!("PARSE {name}: {sql}")
            }
        }
        b'B' => {
            let _portal = r.cstr()?;
            let stmt = r.cstr()?;
            let nf = r.i16()?.max(0) as usize;
            let formats: Vec<i16> = (0..nf).map_while(|_| r.i16()).collect();
            let n = r.i16()?.max(0) as usize;
            let mut params = Vec::with_capacity(n);
            for i in 0..n {
                let len = r.i32()?;
                if len < 0 {
                    params.push("NULL".to_string());
                    continue;
                }
                let bytes = r.bytes(len as usize)?;
                let binary = match formats.len() {
                    0 => false,
                    1 => formats[0] == 1,
                    _ => formats.get(i) == Some(&1),
                };
                params.push(if binary {
                    format!("<{} bytes binary>", bytes.len())
                } else {
                    value(bytes)
                });
            }
            let stmt = if stmt.is_empty() {
                "(unnamed)".to_string()
            } else {
                cut(&stmt)
            };
            format!("BIND {stmt} [{}]", params.join(", "))
        }
        b'E' => "EXECUTE".to_string(),
        b'F' => "FUNCTION CALL".to_string(),
        b'd' => format!(
            "COPY DATA {}",
            value(body.strip_suffix(b"\n").unwrap_or(body))
        ),
        b'c' => "COPY DONE".to_string(),
        b'f' => format!("COPY FAIL {}", cut(&r.cstr()?)),
        b'X' => "(terminate)".to_string(),
        // Sync, Flush, Describe, Close: protocol plumbing.
        _ => return None,
    })
}

/// A message the client received.
fn server_message(tag: u8, body: &[u8]) -> Option<String> {
    let mut r = Reader::new(body);
    Some(match tag {
        b'T' => {
            let n = r.i16()?.max(0) as usize;
            let mut names = Vec::with_capacity(n);
            for _ in 0..n {
                names.push(cut(&r.cstr()?));
                r.bytes(18)?; // table oid, column, type oid, size, modifier, format
            }
            names.join(" | ")
        }
        b'D' => {
            let n = r.i16()?.max(0) as usize;
            let mut values = Vec::with_capacity(n);
            for _ in 0..n {
                let len = r.i32()?;
                values.push(if len < 0 {
                    "NULL".to_string()
                } else {
                    value(r.bytes(len as usize)?)
                });
            }
            format!("  {}", values.join(" | "))
        }
        b'C' => cut(&r.cstr()?),
        b'E' | b'N' => {
            let (mut severity, mut code, mut message) =
                (String::new(), String::new(), String::new());
            while let Some(field) = r.u8() {
                if field == 0 {
                    break;
                }
                let text = r.cstr()?;
                match field {
                    b'S' => severity = text.to_string(),
                    b'C' => code = text.to_string(),
                    b'M' => message = text.to_string(),
                    _ => {}
                }
            }
            format!("{} {}: {}", cut(&severity), cut(&code), cut(&message))
        }
        b'G' => "COPY IN".to_string(),
        b'H' => "COPY OUT".to_string(),
        b'd' => format!("  {}", value(body.strip_suffix(b"\n").unwrap_or(body))),
        b'I' => "(empty query)".to_string(),
        // ReadyForQuery, ParseComplete, BindComplete, ParameterStatus, …: plumbing.
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn renders_a_query_and_its_rows_across_frames() {
        let mut t = Transcript::new();
        let mut q = BytesMut::new();
        crate::wire::put_message(&mut q, b'Q', |b| b.extend_from_slice(b"SELECT 1 AS one\0"));
        assert_eq!(
            t.feed(true, 1_000, &q),
            vec!["+    0.001s > SELECT 1 AS one"]
        );
        let mut resp = BytesMut::new();
        crate::wire::put_message(&mut resp, b'T', |b| {
            b.extend_from_slice(&1i16.to_be_bytes());
            b.extend_from_slice(b"one\0");
            b.extend_from_slice(&[0u8; 18]);
        });
        crate::wire::put_message(&mut resp, b'D', |b| {
            b.extend_from_slice(&2i16.to_be_bytes());
            b.extend_from_slice(&1i32.to_be_bytes());
            b.extend_from_slice(b"1");
            b.extend_from_slice(&(-1i32).to_be_bytes());
        });
        crate::wire::put_message(&mut resp, b'C', |b| b.extend_from_slice(b"SELECT 1\0"));
        // Split in the middle of the DataRow: nothing of it is rendered until it is whole.
        let (a, b) = resp.split_at(35);
        let first = t.feed(false, 2_000, a);
        assert_eq!(first, vec!["+    0.002s < one"]);
        let rest = t.feed(false, 2_600, b);
        assert_eq!(
            rest,
            vec!["+    0.003s <   1 | NULL", "+    0.003s < SELECT 1"]
        );
    }
}
