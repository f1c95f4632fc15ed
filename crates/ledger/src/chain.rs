//! The hash chain: how one event's hash is computed from its fields and its predecessor's hash.
//!
//! This is the part an auditor re-implements to check a ledger without trusting portcullis, so
//! the layout is fixed, documented byte for byte, and free of any encoding choice that a second
//! implementation could get subtly wrong (no JSON canonicalisation, no varints, no separators
//! that could also occur inside a field).
//!
//! # Byte layout (format version 1)
//!
//! ```text
//! hash = SHA-256(
//!     prev_hash                   32 bytes   hash of the previous event; 32 zero bytes for seq 1
//!     seq                          8 bytes   unsigned, big-endian
//!     ts_us                        8 bytes   signed two's complement, big-endian
//!     len(kind)                    4 bytes   unsigned, big-endian, length in bytes
//!     kind                         n bytes   UTF-8, exactly as stored in the `kind` column
//!     len(session_id)              4 bytes   unsigned, big-endian
//!     session_id                   n bytes   UTF-8, exactly as stored in `session_id`
//!     len(data)                    4 bytes   unsigned, big-endian
//!     data                         n bytes   UTF-8, exactly as stored in `data` (the JSON text)
//! )
//! ```
//!
//! * Every variable-length field is length-prefixed, so no two different rows hash the same
//!   byte string (moving bytes from `kind` into `session_id` changes the input).
//! * `seq` is inside the hash, so a row cannot be renumbered or moved to another position
//!   without its hash changing.
//! * `data` is hashed as the stored text, not re-serialised: a verifier never needs a JSON
//!   library, and a JSON library's formatting choices can never make a valid ledger look
//!   altered.
//! * The `prev_hash` column of row `seq` equals the `hash` column of row `seq - 1`; it is
//!   stored (rather than only implied) so a single row can be checked on its own and a break
//!   in the chain can be told apart from an altered row.
//!
//! A reference check in a few lines of Python:
//!
//! ```text
//! import hashlib, sqlite3, struct
//! prev = bytes(32)
//! for seq, ts, sid, kind, data, p, h in sqlite3.connect("ledger.db").execute(
//!         "SELECT seq, ts_us, session_id, kind, data, prev_hash, hash FROM events ORDER BY seq"):
//!     k, s, d = kind.encode(), sid.encode(), data.encode()
//!     m = prev + struct.pack(">Qq", seq, ts) + struct.pack(">I", len(k)) + k \
//!         + struct.pack(">I", len(s)) + s + struct.pack(">I", len(d)) + d
//!     assert p == prev and hashlib.sha256(m).digest() == h, seq
//!     prev = h
//! ```

use sha2::{Digest, Sha256};

/// The `prev_hash` of the first event (seq 1): 32 zero bytes.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// Computes the hash of one event (see the [module documentation](self) for the byte layout).
///
/// `kind`, `session_id` and `data` are the exact bytes stored in the corresponding columns
/// (`&str` and `&[u8]` are both accepted).
///
/// # Panics
///
/// Never in practice: a field longer than 4 GiB cannot be length-prefixed and panics rather
/// than producing an ambiguous hash. SQLite refuses values that large (its limit is 1 GB by
/// default), so no stored row can trigger it.
pub fn event_hash(
    prev: &[u8; 32],
    seq: u64,
    ts_us: i64,
    kind: impl AsRef<[u8]>,
    session_id: impl AsRef<[u8]>,
    data: impl AsRef<[u8]>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    // seq and ts_us together form one 16-byte block: one update instead of two.
    let mut fixed = [0u8; 16];
    fixed[..8].copy_from_slice(&seq.to_be_bytes());
    fixed[8..].copy_from_slice(&ts_us.to_be_bytes());
    h.update(fixed);
    for field in [kind.as_ref(), session_id.as_ref(), data.as_ref()] {
        h.update(len_prefix(field));
        h.update(field);
    }
    h.finalize().into()
}

fn len_prefix(field: &[u8]) -> [u8; 4] {
    // A u32 prefix cannot describe a longer field; hashing a truncated length would make two
    // different rows collide, so refuse outright (unreachable for SQLite-stored values).
    #[allow(clippy::expect_used)]
    let len = u32::try_from(field.len()).expect("ledger field longer than 4 GiB");
    len.to_be_bytes()
}

/// Lower-case hexadecimal form of a hash, as printed in reports and error messages.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds the preimage by hand, independently of `event_hash`, to pin the layout.
    #[test]
    fn layout_is_as_documented() {
        let prev = [7u8; 32];
        let mut m = Vec::new();
        m.extend_from_slice(&prev);
        m.extend_from_slice(&42u64.to_be_bytes());
        m.extend_from_slice(&(-5i64).to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 9]);
        m.extend_from_slice(b"statement");
        m.extend_from_slice(&[0, 0, 0, 2]);
        m.extend_from_slice(b"s1");
        m.extend_from_slice(&[0, 0, 0, 2]);
        m.extend_from_slice(b"{}");
        let expected: [u8; 32] = Sha256::digest(&m).into();
        assert_eq!(event_hash(&prev, 42, -5, "statement", "s1", "{}"), expected);
        assert_eq!(
            event_hash(&prev, 42, -5, b"statement", b"s1", b"{}"),
            expected
        );
    }

    /// Known-answer values computed with Python's `hashlib` from the documented layout, so an
    /// accidental change of the layout cannot go unnoticed.
    #[test]
    fn known_answers() {
        assert_eq!(
            to_hex(&event_hash(&GENESIS, 1, 0, "", "", "")),
            "13f7559612ae1a16e2442699c34eab8f57e0d088909b8edcc78e0850af8201f6"
        );
        assert_eq!(
            to_hex(&event_hash(
                &[0xaa; 32],
                7,
                1_700_000_000_000_000,
                "statement",
                "sess-1",
                r#"{"kind":"cancel"}"#
            )),
            "c6944f84d8b3247c6e52e57da26ba0ef387d40a85f4e31767f6a2ce09677d4f9"
        );
    }

    #[test]
    fn length_prefixes_separate_fields() {
        let a = event_hash(&GENESIS, 1, 0, "ab", "c", "");
        let b = event_hash(&GENESIS, 1, 0, "a", "bc", "");
        assert_ne!(a, b);
    }

    #[test]
    fn every_field_matters() {
        let base = event_hash(&GENESIS, 1, 2, "k", "s", "d");
        assert_ne!(base, event_hash(&[1; 32], 1, 2, "k", "s", "d"));
        assert_ne!(base, event_hash(&GENESIS, 2, 2, "k", "s", "d"));
        assert_ne!(base, event_hash(&GENESIS, 1, 3, "k", "s", "d"));
        assert_ne!(base, event_hash(&GENESIS, 1, 2, "K", "s", "d"));
        assert_ne!(base, event_hash(&GENESIS, 1, 2, "k", "S", "d"));
        assert_ne!(base, event_hash(&GENESIS, 1, 2, "k", "s", "D"));
    }

    #[test]
    fn hex() {
        assert_eq!(to_hex(&[0x00, 0xab, 0x0f, 0xf0]), "00ab0ff0");
    }
}
