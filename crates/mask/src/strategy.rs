//! Masking strategies: what a finding or a column value becomes.
//!
//! Every replacement is ASCII and free of quotes, backslashes, commas, tabs and newlines, so
//! it is valid inside text, CSV, COPY text rows and JSON strings alike.

use hmac::{Hmac, Mac};
use portcullis_core::config::MaskStrategy;
use sha2::Sha256;

/// Writes the masked form of one finding (`value`, of entity `entity`) to `out`. `Null` and
/// `Keep` are the caller's business; here `Null` redacts.
pub fn finding(
    strategy: MaskStrategy,
    value: &[u8],
    entity: &str,
    key: Option<&[u8]>,
    out: &mut Vec<u8>,
) {
    match strategy {
        MaskStrategy::Redact | MaskStrategy::Null => redact(entity, out),
        MaskStrategy::Partial => partial(value, entity, out),
        MaskStrategy::Last4 => keep_last(value, 4, out),
        MaskStrategy::Hash => match key {
            Some(k) => hashed(value, entity, k, out),
            None => redact(entity, out),
        },
        MaskStrategy::Keep => out.extend_from_slice(value),
    }
}

/// A whole value under a column rule; `None` means NULL.
pub fn whole(
    strategy: MaskStrategy,
    value: &[u8],
    label: &str,
    key: Option<&[u8]>,
) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(value.len().max(16));
    match strategy {
        MaskStrategy::Null => return None,
        MaskStrategy::Keep => out.extend_from_slice(value),
        MaskStrategy::Partial => {
            let entity = if value.contains(&b'@') {
                "EMAIL"
            } else if value.iter().filter(|b| b.is_ascii_digit()).count() >= 13 {
                "CREDIT_CARD"
            } else {
                label
            };
            partial(value, entity, &mut out)
        }
        other => finding(other, value, label, key, &mut out),
    }
    Some(out)
}

fn redact(entity: &str, out: &mut Vec<u8>) {
    out.push(b'[');
    out.extend_from_slice(entity.as_bytes());
    out.push(b']');
}

/// PCI DSS: first six and last four digits of a card; an email's first character and domain;
/// anything else its last four characters.
fn partial(value: &[u8], entity: &str, out: &mut Vec<u8>) {
    match entity {
        "CREDIT_CARD" => {
            let n = value.iter().filter(|b| b.is_ascii_digit()).count();
            let mut i = 0;
            for &b in value {
                if b.is_ascii_digit() {
                    out.push(if i < 6 || i + 4 >= n { b } else { b'*' });
                    i += 1;
                } else {
                    out.push(b);
                }
            }
        }
        "EMAIL" => match value.iter().rposition(|&b| b == b'@') {
            Some(at) if at > 0 => {
                // The first character, whole even if it is not ASCII.
                let first = std::str::from_utf8(&value[..at])
                    .ok()
                    .and_then(|s| s.chars().next())
                    .map(char::len_utf8)
                    .unwrap_or(1);
                out.extend_from_slice(&value[..first]);
                out.extend_from_slice(b"***");
                out.extend_from_slice(&value[at..]);
            }
            _ => keep_last(value, 4, out),
        },
        _ => keep_last(value, 4, out),
    }
}

/// Every letter and digit but the last `n` becomes `*`; separators stay. Other bytes (non-ASCII
/// text) become `*` per character.
fn keep_last(value: &[u8], n: usize, out: &mut Vec<u8>) {
    let total = value.iter().filter(|b| b.is_ascii_alphanumeric()).count();
    let mut seen = 0;
    for &b in value {
        if b.is_ascii_alphanumeric() {
            seen += 1;
            out.push(if seen + n > total { b } else { b'*' });
        } else if b.is_ascii() {
            out.push(b);
        } else if b & 0xC0 != 0x80 {
            // One `*` per non-ASCII character (at its first byte).
            out.push(b'*');
        }
    }
}

/// `[ENTITY:` + the first 16 hex digits of HMAC-SHA-256(key, value) + `]`.
fn hashed(value: &[u8], entity: &str, key: &[u8], out: &mut Vec<u8>) {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length; unreachable, but never leak the value.
        Err(_) => return redact(entity, out),
    };
    mac.update(value);
    let tag = mac.finalize().into_bytes();
    out.push(b'[');
    out.extend_from_slice(entity.as_bytes());
    out.push(b':');
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in &tag[..8] {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
    out.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: MaskStrategy, v: &str, e: &str) -> String {
        let mut out = Vec::new();
        finding(s, v.as_bytes(), e, Some(b"0123456789abcdef"), &mut out);
        String::from_utf8(out).expect("ascii")
    }

    #[test]
    fn strategies() {
        use MaskStrategy::*;
        assert_eq!(
            f(Redact, "4111 1111 1111 1111", "CREDIT_CARD"),
            "[CREDIT_CARD]"
        );
        assert_eq!(
            f(Partial, "4111 1111 1111 1111", "CREDIT_CARD"),
            "4111 11** **** 1111"
        );
        assert_eq!(
            f(Partial, "378282246310005", "CREDIT_CARD"),
            "378282*****0005"
        );
        assert_eq!(
            f(Last4, "4111-1111-1111-1111", "CREDIT_CARD"),
            "****-****-****-1111"
        );
        assert_eq!(
            f(Partial, "jane.doe@example.com", "EMAIL"),
            "j***@example.com"
        );
        assert_eq!(f(Partial, "+1 201 555 0123", "PHONE"), "+* *** *** 0123");
        assert_eq!(
            f(Partial, "DE89 3704 0044 0532 0130 00", "IBAN"),
            "**** **** **** **** **30 00"
        );
        let h1 = f(Hash, "jane.doe@example.com", "EMAIL");
        assert!(
            h1.starts_with("[EMAIL:") && h1.len() == "[EMAIL:]".len() + 16,
            "{h1}"
        );
        assert_eq!(h1, f(Hash, "jane.doe@example.com", "EMAIL"), "stable");
        assert_ne!(h1, f(Hash, "john.doe@example.com", "EMAIL"));
        assert_eq!(whole(Null, b"x", "EMAIL", None), None);
        assert_eq!(
            whole(Partial, "zoë@example.de".as_bytes(), "REDACTED", None),
            Some("z***@example.de".as_bytes().to_vec())
        );
    }

    #[test]
    fn non_ascii_first_character_stays_whole() {
        let mut out = Vec::new();
        partial("é@example.fr".as_bytes(), "EMAIL", &mut out);
        assert_eq!(String::from_utf8(out).expect("valid"), "é***@example.fr");
        let mut out = Vec::new();
        keep_last("Zoë Müller".as_bytes(), 4, &mut out);
        assert_eq!(String::from_utf8(out).expect("valid"), "*** **ller");
    }
}
