//! Masking on the PostgreSQL wire: which bytes of a response are values, of what type, and
//! how to rebuild a message around masked ones.
//!
//! The masker (`portcullis_mask`) decides what a value becomes; this module only translates.
//! A result's columns come from its RowDescription (name, type OID, format); the column rules
//! of the session's profile are resolved once per description, against the tables the
//! statement reads. Each DataRow is then masked value by value and re-framed with its new
//! length; a row with nothing to mask is forwarded as it came. Rows are handled one at a time:
//! no result set is ever buffered.

use crate::wire::{self, Reader};
use bytes::{BufMut, BytesMut};
use portcullis_core::config::MaskStrategy;
use portcullis_mask::{Counts, Field, FieldKind, JsonKeyRules, Masker, Profile};
use portcullis_policy::sql::Classification;
use std::sync::{Arc, Mutex};

/// The masker and the session's profile.
#[derive(Clone)]
pub struct SessionMasking {
    pub masker: Arc<Masker>,
    pub profile: Arc<Profile>,
}

impl SessionMasking {
    /// Whether responses are masked at all.
    pub fn active(&self) -> bool {
        !self.profile.unmasked
    }
}

/// One result column, as masking sees it.
#[derive(Debug, Clone)]
struct Column {
    oid: u32,
    format: i16,
    rule: Option<MaskStrategy>,
    /// For json and jsonb columns: the rules that apply to values under their object keys.
    keys: Option<Arc<JsonKeyRules>>,
}

/// A result's columns (from a RowDescription).
#[derive(Debug, Clone, Default)]
pub struct RowShape {
    columns: Vec<Column>,
}

impl RowShape {
    /// Reads a RowDescription body; column rules resolved for `class`'s tables.
    pub fn parse(
        body: &[u8],
        profile: &Profile,
        class: Option<&Classification>,
    ) -> Option<RowShape> {
        let tables: Vec<&str> = class
            .map(|c| {
                c.reads
                    .iter()
                    .chain(c.writes.iter())
                    .map(String::as_str)
                    .collect()
            })
            .unwrap_or_default();
        let mut r = Reader::new(body);
        let n = r.i16()? as u16;
        let mut columns = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let name = r.cstr()?;
            let _table_oid = r.u32()?;
            let _attnum = r.i16()?;
            let oid = r.u32()?;
            let _typlen = r.i16()?;
            let _typmod = r.i32()?;
            let format = r.i16()?;
            // The rule of the column's name and those of the ruled columns its value comes
            // from (`email AS contact`, `lower(email)`, a subquery's alias, a whole row), the
            // strictest winning: renaming a column after a laxer one (`keep`, `partial`)
            // does not relax its rule. A `keep` of a source does not unmask what it flows
            // into. A statement too deeply nested to trace: any ruled column of the tables
            // read may be in any result column.
            let by_name = profile.column_rule(&name, &tables);
            let mut from_sources = Vec::new();
            if let Some(class) = class.filter(|_| profile.has_column_rules() && !tables.is_empty())
            {
                let sources = class.sources.get();
                if sources.untraced() {
                    from_sources.extend(tables.iter().filter_map(|t| profile.row_rule(t)));
                } else {
                    from_sources.extend(sources.of(&name).filter_map(|source| {
                        match source.strip_suffix(".*") {
                            // JSON of a whole row (`to_jsonb(c)`) is masked by key, below.
                            Some(_) if matches!(oid, 114 | 3802) => None,
                            Some(table) => profile.row_rule(table),
                            None => profile.column_rule(source, &tables),
                        }
                    }));
                }
            }
            from_sources.retain(|s| *s != MaskStrategy::Keep);
            let rule = portcullis_mask::strictest(by_name.into_iter().chain(from_sources));
            columns.push(Column {
                oid,
                format,
                rule,
                keys: match oid {
                    114 | 3802 => profile.json_key_rules(&tables),
                    _ => None,
                },
            });
        }
        Some(RowShape { columns })
    }

    /// The same columns with the result formats a Bind asked for (a statement's description
    /// always says text).
    pub fn with_formats(&self, formats: &[i16]) -> RowShape {
        let mut s = self.clone();
        for (i, c) in s.columns.iter_mut().enumerate() {
            c.format = match formats.len() {
                0 => 0,
                1 => formats[0],
                _ => formats.get(i).copied().unwrap_or(0),
            };
        }
        s
    }

    fn kind(&self, i: usize) -> (FieldKind, Option<MaskStrategy>, Option<&JsonKeyRules>) {
        match self.columns.get(i) {
            Some(c) => (field_kind(c.oid, c.format), c.rule, c.keys.as_deref()),
            // A value of a column never described: scanned, and NULL if anything is found.
            None => (FieldKind::Typed, None, None),
        }
    }
}

/// What masking may do to a value of type `oid` in `format`.
fn field_kind(oid: u32, format: i16) -> FieldKind {
    const TEXT_LIKE: &[u32] = &[25, 1043, 1042, 19, 705, 18];
    if format == 1 {
        return match oid {
            o if TEXT_LIKE.contains(&o) => FieldKind::Text,
            114 => FieldKind::Json,
            3802 => FieldKind::JsonbBinary,
            // Unknown binary layout: scanned; anything found makes the value NULL.
            o if o >= 16384 => FieldKind::Typed,
            _ => FieldKind::Opaque,
        };
    }
    match oid {
        o if TEXT_LIKE.contains(&o) => FieldKind::Text,
        // xml, text[], varchar[], bpchar[], name[], tsvector: text syntax survives a redaction.
        142 | 1009 | 1015 | 1014 | 1003 | 3614 => FieldKind::Text,
        114 | 3802 => FieldKind::Json,
        // Numbers and addresses can hold a card number or an IP address, not a redaction.
        20 | 21 | 23 | 1700 | 869 | 650 | 829 | 774 | 1016 | 1007 | 1231 => FieldKind::Typed,
        // User types (domains over text, enums, citext, …): text in text format.
        o if o >= 16384 => FieldKind::Text,
        _ => FieldKind::Opaque,
    }
}

/// Where a described statement's or portal's columns land once the target describes them.
#[derive(Clone, Default)]
pub struct RowSlot(Arc<Mutex<Option<Arc<RowShape>>>>);

impl RowSlot {
    pub fn set(&self, shape: Option<Arc<RowShape>>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = shape;
    }

    pub fn get(&self) -> Option<Arc<RowShape>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// How an Execute finds its columns: the portal's own description, or its statement's with
/// the Bind's result formats.
#[derive(Clone, Default)]
pub struct RowSource {
    pub portal: RowSlot,
    pub statement: RowSlot,
    pub formats: Arc<[i16]>,
}

impl RowSource {
    pub fn resolve(&self) -> Option<Arc<RowShape>> {
        self.portal.get().or_else(|| {
            self.statement
                .get()
                .map(|s| Arc::new(s.with_formats(&self.formats)))
        })
    }
}

/// A DataRow body, masked. `None`: nothing changed, forward the original. A malformed row is
/// answered with `Err` (the relay ends the session rather than forward what it cannot mask).
pub fn data_row(
    m: &SessionMasking,
    shape: Option<&RowShape>,
    body: &[u8],
    counts: &mut Counts,
) -> Result<Option<BytesMut>, String> {
    let empty = RowShape::default();
    let shape = shape.unwrap_or(&empty);
    let mut r = Reader::new(body);
    let n = r.i16().ok_or("DataRow without a column count")? as u16 as usize;
    // (offset of the length word, value range, replacement) of each changed value.
    let mut changes: Vec<(usize, usize, Field)> = Vec::new();
    let mut pos = 2usize;
    for i in 0..n {
        let len = r.i32().ok_or("DataRow shorter than its column count")?;
        let start = pos;
        pos += 4;
        if len < 0 {
            continue;
        }
        let len = len as usize;
        let value = r
            .bytes(len)
            .ok_or("DataRow value longer than the message")?;
        pos += len;
        let f = match shape.kind(i) {
            (kind @ (FieldKind::Json | FieldKind::JsonbBinary), None, Some(keys)) => {
                let binary = kind == FieldKind::JsonbBinary;
                m.masker.mask_json(&m.profile, value, binary, keys, counts)
            }
            (kind, rule, _) => m.masker.mask_field(&m.profile, value, kind, rule, counts),
        };
        if f != Field::Unchanged {
            changes.push((start, len, f));
        }
    }
    if changes.is_empty() {
        return Ok(None);
    }
    let mut out = BytesMut::with_capacity(body.len() + 64);
    out.put_u8(b'D');
    out.put_i32(0);
    let mut from = 0usize;
    for (at, len, f) in changes {
        out.extend_from_slice(&body[from..at]);
        match f {
            Field::Value(v) => {
                out.put_i32(v.len() as i32);
                out.extend_from_slice(&v);
            }
            Field::Null | Field::Unchanged => out.put_i32(-1),
        }
        from = at + 4 + len;
    }
    out.extend_from_slice(&body[from..]);
    let total = (out.len() - 1) as i32;
    out[1..5].copy_from_slice(&total.to_be_bytes());
    Ok(Some(out))
}

/// An ErrorResponse or NoticeResponse with its human-readable fields (message, detail, hint,
/// context: `Key (email)=(…) already exists` quotes the data) masked. `None`: unchanged.
pub fn error_fields(
    m: &SessionMasking,
    tag: u8,
    body: &[u8],
    counts: &mut Counts,
) -> Option<BytesMut> {
    let mut fields: Vec<(u8, std::borrow::Cow<'_, str>)> = Vec::new();
    let mut changed = false;
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        let value = String::from_utf8_lossy(&tail[..end]);
        rest = &tail[end + 1..];
        let value = if matches!(code, b'M' | b'D' | b'H' | b'W') {
            match m.masker.mask_text(&m.profile, &value, counts) {
                std::borrow::Cow::Owned(v) => {
                    changed = true;
                    std::borrow::Cow::Owned(v)
                }
                std::borrow::Cow::Borrowed(_) => value,
            }
        } else {
            value
        };
        fields.push((code, value));
    }
    if !changed {
        return None;
    }
    let mut out = BytesMut::with_capacity(body.len() + 32);
    wire::put_message(&mut out, tag, |b| {
        for (code, v) in &fields {
            b.put_u8(*code);
            wire::put_cstr(b, v);
        }
        b.put_u8(0);
    });
    Some(out)
}

/// A CopyData row of a text-format COPY TO, masked by the detectors (COPY has no column
/// names, so column rules cannot apply). `None`: unchanged.
pub fn copy_row(m: &SessionMasking, body: &[u8], counts: &mut Counts) -> Option<BytesMut> {
    let text = String::from_utf8_lossy(body);
    match m.masker.mask_text(&m.profile, &text, counts) {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(v) => {
            let mut out = BytesMut::with_capacity(v.len() + 5);
            wire::put_message(&mut out, b'd', |b| b.extend_from_slice(v.as_bytes()));
            Some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::config::{MaskingConfig, MaskingProfile};

    fn session() -> SessionMasking {
        let mut cfg = MaskingConfig::default();
        cfg.profiles.insert(
            "standard".into(),
            MaskingProfile {
                columns: [("customers.full_name".to_string(), MaskStrategy::Redact)].into(),
                ..Default::default()
            },
        );
        let masker = Arc::new(Masker::new(&cfg, None).expect("compiles"));
        let profile = masker.profile("standard").expect("defined");
        SessionMasking { masker, profile }
    }

    fn row_description(cols: &[(&str, u32, i16)]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_i16(cols.len() as i16);
        for (name, oid, format) in cols {
            wire::put_cstr(&mut b, name);
            b.put_u32(0);
            b.put_i16(0);
            b.put_u32(*oid);
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(*format);
        }
        b.to_vec()
    }

    fn data_row_body(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.extend_from_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
        b.to_vec()
    }

    fn values(msg: &[u8]) -> Vec<Option<Vec<u8>>> {
        assert_eq!(msg[0], b'D');
        let len = i32::from_be_bytes([msg[1], msg[2], msg[3], msg[4]]) as usize;
        assert_eq!(
            len + 1,
            msg.len(),
            "the length word is the message's length"
        );
        let mut r = Reader::new(&msg[5..]);
        let n = r.i16().expect("count");
        (0..n)
            .map(|_| {
                let l = r.i32().expect("len");
                (l >= 0).then(|| r.bytes(l as usize).expect("value").to_vec())
            })
            .collect()
    }

    #[test]
    fn column_rules_reach_into_json_rows() {
        let s = session();
        let class = portcullis_policy::sql::classify("SELECT to_jsonb(c) FROM customers c");
        let shape = RowShape::parse(
            &row_description(&[("doc", 3802, 0), ("bin", 3802, 1), ("j", 114, 0)]),
            &s.profile,
            Some(&class),
        )
        .expect("parses");
        let doc: &[u8] =
            br#"{"id": 7, "email": "jane@example.com", "full_name": "Jane \"J\" Doe"}"#;
        let mut bin = vec![1u8];
        bin.extend_from_slice(doc);
        let body = data_row_body(&[
            Some(doc),
            Some(&bin),
            Some(br#"[{"FULL_NAME": 12}, {"full_name": null}]"#),
        ]);
        let mut counts = Counts::default();
        let out = data_row(&s, Some(&shape), &body, &mut counts)
            .expect("valid")
            .expect("changed");
        let want: &[u8] = br#"{"id": 7, "email": "[EMAIL]", "full_name": "[REDACTED]"}"#;
        let mut want_bin = vec![1u8];
        want_bin.extend_from_slice(want);
        assert_eq!(
            values(&out),
            vec![
                Some(want.to_vec()),
                Some(want_bin),
                Some(br#"[{"FULL_NAME": "[REDACTED]"}, {"full_name": null}]"#.to_vec())
            ]
        );
        // Another table's JSON: the customers rule does not apply, the detectors still do.
        let class = portcullis_policy::sql::classify("SELECT to_jsonb(o) FROM orders o");
        let other = RowShape::parse(
            &row_description(&[("doc", 3802, 0)]),
            &s.profile,
            Some(&class),
        )
        .expect("parses");
        let out = data_row(&s, Some(&other), &data_row_body(&[Some(doc)]), &mut counts)
            .expect("valid")
            .expect("changed");
        assert_eq!(
            values(&out),
            vec![Some(
                br#"{"id": 7, "email": "[EMAIL]", "full_name": "Jane \"J\" Doe"}"#.to_vec()
            )]
        );
    }

    #[test]
    fn column_rules_follow_renamed_and_computed_columns() {
        let s = session();
        let ruled = |sql: &str, column: &str| {
            let class = portcullis_policy::sql::classify(sql);
            let shape = RowShape::parse(
                &row_description(&[(column, 25, 0)]),
                &s.profile,
                Some(&class),
            )
            .expect("parses");
            shape.columns[0].rule
        };
        let redact = Some(MaskStrategy::Redact);
        for (sql, column) in [
            ("SELECT full_name FROM customers", "full_name"),
            ("SELECT full_name AS n FROM customers", "n"),
            ("SELECT full_name::text FROM customers", "full_name"),
            ("SELECT upper(full_name) FROM customers", "upper"),
            ("SELECT full_name || '' FROM customers", "?column?"),
            (
                "SELECT n FROM (SELECT full_name AS n FROM customers) c",
                "n",
            ),
            (
                "WITH c(n) AS (SELECT full_name FROM customers) SELECT n FROM c",
                "n",
            ),
            ("SELECT 'x' AS n UNION SELECT full_name FROM customers", "n"),
        ] {
            assert_eq!(ruled(sql, column), redact, "{sql}");
        }
        // Too deeply nested to trace: masked.
        let mut deep = "SELECT full_name AS n FROM customers".to_string();
        for _ in 0..40 {
            deep = format!("SELECT n FROM ({deep}) s");
        }
        assert_eq!(ruled(&deep, "n"), redact);
        // A whole customers row holds the ruled column.
        assert_eq!(ruled("SELECT c FROM customers c", "c"), redact);
        assert_eq!(ruled("SELECT o FROM orders o", "o"), None);
        // Renamed after a laxer column: the stricter rule stays.
        let mut cfg = MaskingConfig::default();
        cfg.profiles.insert(
            "mixed".into(),
            MaskingProfile {
                columns: [
                    ("customers.full_name".to_string(), MaskStrategy::Redact),
                    ("customers.city".to_string(), MaskStrategy::Keep),
                    ("customers.phone".to_string(), MaskStrategy::Last4),
                ]
                .into(),
                ..Default::default()
            },
        );
        let masker = Masker::new(&cfg, None).expect("compiles");
        let mixed = masker.profile("mixed").expect("defined");
        let rule = |sql: &str, column: &str| {
            let class = portcullis_policy::sql::classify(sql);
            RowShape::parse(&row_description(&[(column, 25, 0)]), &mixed, Some(&class))
                .expect("parses")
                .columns[0]
                .rule
        };
        assert_eq!(
            rule("SELECT full_name AS city FROM customers", "city"),
            redact
        );
        assert_eq!(
            rule("SELECT full_name AS phone FROM customers", "phone"),
            redact
        );
        assert_eq!(
            rule("SELECT city || full_name AS x FROM customers", "x"),
            redact
        );
        assert_eq!(
            rule("SELECT city AS x FROM customers", "x"),
            None,
            "a kept column renamed: the detectors still run"
        );
        assert_eq!(
            rule("SELECT city FROM customers", "city"),
            Some(MaskStrategy::Keep)
        );
        assert_eq!(rule("SELECT c FROM customers c", "c"), redact);
        // Not the ruled column, or not its table.
        assert_eq!(ruled("SELECT id AS n FROM customers", "n"), None);
        assert_eq!(ruled("SELECT full_name AS n FROM orders", "n"), None);
        assert_eq!(
            ruled("SELECT count(full_name) AS n FROM customers", "n"),
            None
        );
    }

    #[test]
    fn a_data_row_is_masked_and_reframed() {
        let s = session();
        let class = portcullis_policy::sql::classify("SELECT * FROM customers");
        let shape = RowShape::parse(
            &row_description(&[
                ("id", 23, 0),
                ("full_name", 25, 0),
                ("email", 25, 0),
                ("card", 20, 0),
                ("at", 1184, 0),
                ("note", 25, 1),
            ]),
            &s.profile,
            Some(&class),
        )
        .expect("parses");
        let body = data_row_body(&[
            Some(b"7"),
            Some(b"Jane Doe"),
            Some(b"jane@example.com"),
            Some(b"4111111111111111"),
            Some(b"2024-01-15 10:23:45+00"),
            None,
        ]);
        let mut counts = Counts::default();
        let out = data_row(&s, Some(&shape), &body, &mut counts)
            .expect("valid")
            .expect("changed");
        assert_eq!(
            values(&out),
            vec![
                Some(b"7".to_vec()),
                Some(b"[REDACTED]".to_vec()),
                Some(b"[EMAIL]".to_vec()),
                None,
                Some(b"2024-01-15 10:23:45+00".to_vec()),
                None
            ]
        );
        let by: Vec<(String, u64)> = counts.by_name(&s.masker).into_iter().collect();
        assert_eq!(
            by,
            vec![
                ("COLUMN".into(), 1),
                ("CREDIT_CARD".into(), 1),
                ("EMAIL".into(), 1)
            ]
        );
        // Nothing to mask: forwarded as is.
        let plain = data_row_body(&[Some(b"1"), Some(b"x"), Some(b"y"), Some(b"2"), None, None]);
        let class = portcullis_policy::sql::classify("SELECT * FROM orders");
        let other = RowShape::parse(
            &row_description(&[("id", 23, 0), ("full_name", 25, 0)]),
            &s.profile,
            Some(&class),
        )
        .expect("parses");
        assert!(data_row(&s, Some(&other), &plain, &mut counts)
            .expect("valid")
            .is_none());
        // Truncated rows are refused, not forwarded half-masked.
        assert!(data_row(&s, Some(&shape), &body[..body.len() - 3], &mut counts).is_err());
    }

    #[test]
    fn binary_formats_mask_text_like_types_only() {
        let s = session();
        let shape = RowShape::parse(
            &row_description(&[("a", 25, 0), ("b", 23, 0)]),
            &s.profile,
            None,
        )
        .expect("parses")
        .with_formats(&[1]);
        let body = data_row_body(&[Some(b"mail jane@example.com"), Some(&[0, 0, 0, 7])]);
        let mut counts = Counts::default();
        let out = data_row(&s, Some(&shape), &body, &mut counts)
            .expect("valid")
            .expect("changed");
        assert_eq!(
            values(&out),
            vec![Some(b"mail [EMAIL]".to_vec()), Some(vec![0, 0, 0, 7])]
        );
    }

    #[test]
    fn error_details_are_masked() {
        let s = session();
        let mut body = BytesMut::new();
        for (c, v) in [
            (b'S', "ERROR"),
            (b'C', "23505"),
            (b'M', "duplicate key"),
            (b'D', "Key (email)=(jane@example.com) already exists."),
        ] {
            body.put_u8(c);
            wire::put_cstr(&mut body, v);
        }
        body.put_u8(0);
        let mut counts = Counts::default();
        let out = error_fields(&s, b'E', &body, &mut counts).expect("changed");
        let e = wire::ErrorFields::parse(&out[5..]);
        assert_eq!(
            e.detail.as_deref(),
            Some("Key (email)=([EMAIL]) already exists.")
        );
        assert_eq!(e.code, "23505");
    }
}
