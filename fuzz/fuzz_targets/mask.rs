//! Fuzzes the masker on bytes as they come from a target: result values of every kind, JSON
//! values with keyed column rules, free text, and in-place blanking. None may panic, and
//! every answer must keep its promise: text stays UTF-8, blanking keeps the length, a masked
//! JSON value still parses, a masked typed value is NULL.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use portcullis_core::config::MaskingConfig;
use portcullis_mask::{Counts, Field, FieldKind, Masker, Profile};

/// A profile with every strategy in use (the hash key is a test fixture), and a column rule
/// per strategy so that JSON keys are ruled too.
const CONFIG: &str = r#"{
  "default_profile": "fuzz",
  "custom": [
    { "entity": "EMPLOYEE_ID", "pattern": "EMP-[0-9]{6}" },
    { "entity": "PROJECT", "words": ["Blue Bird", "nightjar"] }
  ],
  "profiles": { "fuzz": {
    "strategy": "redact",
    "entities": { "CREDIT_CARD": "partial", "EMAIL": "hash", "PHONE": "last4", "IBAN": "null" },
    "columns": { "t.email": "partial", "t.card": "last4", "note": "null", "t.name": "hash", "t.ssn": "redact" }
  } }
}"#;

fn masker() -> &'static (Masker, std::sync::Arc<Profile>) {
    static M: OnceLock<(Masker, std::sync::Arc<Profile>)> = OnceLock::new();
    M.get_or_init(|| {
        let cfg: MaskingConfig = serde_json::from_str(CONFIG).expect("fuzz config");
        let m = Masker::new(&cfg, Some(b"fuzz-fixture-key-not-a-secret".to_vec()))
            .expect("fuzz masker");
        let p = m.profile("fuzz").expect("fuzz profile");
        (m, p)
    })
}

fuzz_target!(|data: &[u8]| {
    let (m, p) = masker();
    let mut counts = Counts::default();

    // Free text and the ledger's masking.
    let text = String::from_utf8_lossy(data);
    let _ = m.mask_text(p, &text, &mut counts);
    let _ = m.mask_record(&text, &mut counts);

    // Blanking (recordings) keeps every byte's place.
    let mut copy = data.to_vec();
    m.blank_in_place(&mut copy);
    assert_eq!(copy.len(), data.len());

    // Result values of every kind, with and without a column rule.
    let json_ok = serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok();
    for kind in [
        FieldKind::Text,
        FieldKind::Json,
        FieldKind::JsonbBinary,
        FieldKind::Typed,
        FieldKind::Opaque,
    ] {
        for rule in [None, p.column_rule("email", &["t"])] {
            match m.mask_field(p, data, kind, rule, &mut counts) {
                Field::Value(v) => {
                    assert!(
                        !matches!(kind, FieldKind::Typed | FieldKind::Opaque),
                        "a typed value is never rewritten, only nulled"
                    );
                    if kind == FieldKind::Json && json_ok && rule.is_none() {
                        assert!(
                            serde_json::from_slice::<serde::de::IgnoredAny>(&v).is_ok(),
                            "masked JSON must still parse"
                        );
                    }
                }
                Field::Unchanged | Field::Null => {}
            }
        }
    }

    // JSON values whose keys name ruled columns.
    if let Some(keys) = p.json_key_rules(&["t"]) {
        for binary in [false, true] {
            if let Field::Value(v) = m.mask_json(p, data, binary, &keys, &mut counts) {
                if !binary && json_ok {
                    assert!(
                        serde_json::from_slice::<serde::de::IgnoredAny>(&v).is_ok(),
                        "masked JSON must still parse"
                    );
                }
            }
        }
    }
});
