use super::*;
use portcullis_core::config::{MaskingAssignment, MaskingConfig, MaskingProfile};

fn masker() -> Masker {
    let mut cfg = MaskingConfig::default();
    cfg.profiles.insert(
        "support".into(),
        MaskingProfile {
            strategy: MaskStrategy::Redact,
            entities: [
                ("CREDIT_CARD".to_string(), MaskStrategy::Partial),
                ("EMAIL".to_string(), MaskStrategy::Hash),
                ("US_SSN".to_string(), MaskStrategy::Null),
            ]
            .into(),
            columns: [
                ("customers.full_name".to_string(), MaskStrategy::Last4),
                ("national_id".to_string(), MaskStrategy::Null),
            ]
            .into(),
            unmasked: false,
        },
    );
    Masker::new(&cfg, Some(b"test fixture key, not a secret".to_vec())).expect("compiles")
}

#[test]
fn text_is_masked_per_profile() {
    let m = masker();
    let standard = m.profile("standard").expect("built in");
    let mut counts = Counts::default();
    let out = m.mask_text(
        &standard,
        "mail jane@example.com, card 4111111111111111",
        &mut counts,
    );
    assert_eq!(out, "mail [EMAIL], card [CREDIT_CARD]");
    assert_eq!(
        counts.by_name(&m),
        [("CREDIT_CARD".to_string(), 1), ("EMAIL".to_string(), 1)].into()
    );
    let support = m.profile("support").expect("configured");
    let out = m.mask_text(
        &support,
        "card 4111111111111111 ssn 536-90-4399",
        &mut counts,
    );
    assert_eq!(
        out, "card 411111******1111 ssn [US_SSN]",
        "null redacts in text"
    );
    let unmasked = m.profile("unmasked").expect("built in");
    assert_eq!(
        m.mask_text(&unmasked, "jane@example.com", &mut counts),
        "jane@example.com"
    );
    assert_eq!(m.mask_record("jane@example.com", &mut counts), "[EMAIL]");
}

#[test]
fn fields_keep_their_type_or_become_null() {
    let m = masker();
    let p = m.profile("standard").expect("built in");
    let mut c = Counts::default();
    assert_eq!(
        m.mask_field(&p, b"plain text", FieldKind::Text, None, &mut c),
        Field::Unchanged
    );
    assert_eq!(
        m.mask_field(&p, b"4111111111111111", FieldKind::Typed, None, &mut c),
        Field::Null,
        "an int8 holding a card number cannot hold a redaction"
    );
    assert_eq!(
        m.mask_field(&p, b"12345", FieldKind::Typed, None, &mut c),
        Field::Unchanged
    );
    assert_eq!(
        m.mask_field(
            &p,
            br#"{"email": "jane@example.com", "n": 1}"#,
            FieldKind::Json,
            None,
            &mut c
        ),
        Field::Value(br#"{"email": "[EMAIL]", "n": 1}"#.to_vec())
    );
    assert_eq!(
        m.mask_field(
            &p,
            br#"{"card": 4111111111111111}"#,
            FieldKind::Json,
            None,
            &mut c
        ),
        Field::Null,
        "a redacted JSON number is no longer JSON"
    );
    assert_eq!(
        m.mask_field(
            &p,
            b"\x01{\"e\": \"jane@example.com\"}",
            FieldKind::JsonbBinary,
            None,
            &mut c
        ),
        Field::Value(b"\x01{\"e\": \"[EMAIL]\"}".to_vec())
    );
    assert_eq!(
        m.mask_field(&p, b"2024-01-15 10:23:45", FieldKind::Opaque, None, &mut c),
        Field::Unchanged
    );
}

#[test]
fn column_rules_apply_whatever_the_content() {
    let m = masker();
    let p = m.profile("support").expect("configured");
    assert_eq!(
        p.column_rule("full_name", &["public.customers"]),
        Some(MaskStrategy::Last4)
    );
    assert_eq!(
        p.column_rule("FULL_NAME", &["customers"]),
        Some(MaskStrategy::Last4)
    );
    assert_eq!(p.column_rule("full_name", &["orders"]), None);
    assert_eq!(
        p.column_rule("national_id", &["anything"]),
        Some(MaskStrategy::Null)
    );
    let mut c = Counts::default();
    assert_eq!(
        m.mask_field(
            &p,
            b"Jane Doe",
            FieldKind::Text,
            Some(MaskStrategy::Last4),
            &mut c
        ),
        Field::Value(b"***e Doe".to_vec())
    );
    assert_eq!(
        m.mask_field(
            &p,
            b"12345678Z",
            FieldKind::Text,
            Some(MaskStrategy::Null),
            &mut c
        ),
        Field::Null
    );
    assert_eq!(
        m.mask_field(
            &p,
            b"42",
            FieldKind::Typed,
            Some(MaskStrategy::Redact),
            &mut c
        ),
        Field::Null,
        "a redacted integer becomes NULL"
    );
    assert_eq!(c.by_name(&m).get(COLUMN_ENTITY), Some(&3));
}

#[test]
fn configuration_errors_say_what_to_fix() {
    let cfg = MaskingConfig {
        default_profile: "unmasked".into(),
        ..Default::default()
    };
    let e = Masker::new(&cfg, None).err().expect("refused");
    assert!(
        e.to_string()
            .contains("must come from a [[masking.assign]] rule"),
        "{e}"
    );

    let mut cfg = MaskingConfig::default();
    cfg.profiles.insert(
        "h".into(),
        MaskingProfile {
            strategy: MaskStrategy::Hash,
            ..Default::default()
        },
    );
    let e = Masker::new(&cfg, None).err().expect("refused");
    assert!(e.to_string().contains("hmac_key_env"), "{e}");
    assert!(matches!(
        Masker::new(&cfg, Some(b"short".to_vec())),
        Err(MaskError::ShortKey(5))
    ));

    let mut cfg = MaskingConfig::default();
    cfg.assign.push(MaskingAssignment {
        profile: "nope".into(),
        agents: vec![],
        groups: vec![],
        connections: vec![],
        require_justification: false,
    });
    let e = Masker::new(&cfg, None).err().expect("refused");
    assert!(e.to_string().contains("assign[0].profile"), "{e}");

    let mut cfg = MaskingConfig::default();
    cfg.disabled.push("EMAILS".into());
    let e = Masker::new(&cfg, None).err().expect("refused");
    assert!(
        e.to_string().contains("EMAILS") && e.to_string().contains("EMAIL,"),
        "{e}"
    );
}

#[test]
fn blanking_keeps_lengths() {
    let m = masker();
    let mut b = b"Q\0\0\0\x20SELECT 'jane@example.com'\0".to_vec();
    let n = b.len();
    assert_eq!(m.blank_in_place(&mut b), 1);
    assert_eq!(b.len(), n);
    assert_eq!(&b[..], b"Q\0\0\0\x20SELECT '****************'\0");
}

#[test]
fn profiles_are_assigned_by_rule_then_connection_then_default() {
    let mut cfg = MaskingConfig::default();
    cfg.profiles.insert(
        "partial".into(),
        MaskingProfile {
            strategy: MaskStrategy::Partial,
            ..Default::default()
        },
    );
    cfg.assign.push(MaskingAssignment {
        profile: "unmasked".into(),
        agents: vec![],
        groups: vec!["dba".into()],
        connections: vec!["shop".into()],
        require_justification: true,
    });
    let m = Masker::new(&cfg, None).expect("compiles");
    let dba = vec!["dba".to_string()];
    let who =
        |groups: &'static [String], justified: bool, conn_profile: Option<&'static str>| Who {
            agent: "bot",
            groups,
            connection: "shop",
            connection_profile: conn_profile,
            justified,
        };
    let dba: &'static [String] = Box::leak(dba.into_boxed_slice());
    let a = m.assign(&who(dba, true, None));
    assert_eq!((a.profile.name.as_str(), a.rule), ("unmasked", Some(0)));
    let a = m.assign(&who(dba, false, None));
    assert_eq!(a.profile.name, "standard", "no justification, no raw data");
    let a = m.assign(&who(&[], true, Some("partial")));
    assert_eq!((a.profile.name.as_str(), a.rule), ("partial", None));
    assert!(m.check_connection_profile("shop", "unmasked").is_err());
    assert!(m.check_connection_profile("shop", "nope").is_err());
    assert!(m.check_connection_profile("shop", "partial").is_ok());
}
