//! The detectors and the one-pass scanner.
//!
//! Every detector is a pattern plus a validator (see `validate`). All patterns, built-in and
//! custom, are compiled into one multi-pattern automaton (regex-automata's meta engine, lazy
//! DFA, leftmost-first): one scan over the text finds the leftmost candidate of any detector.
//! A candidate the validator rejects gives way to the lower-priority detectors that match at
//! the same place (an 11-digit run that is no valid phone number may still be a CPF), and the
//! scan resumes just after its start.
//!
//! Patterns use ASCII classes and ASCII word boundaries only: that keeps the whole set in the
//! DFA (Unicode word boundaries would push it onto a slower engine) and makes every match
//! boundary a UTF-8 character boundary, so masking never splits a character.

use crate::error::MaskError;
use crate::phone::PhoneRules;
use crate::validate;
use portcullis_core::config::CustomDetector;
use regex_automata::meta::{Cache, Regex};
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, MatchKind, PatternID, PatternSet};
use std::cell::RefCell;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The built-in entity names, as they appear in config, counts and redactions.
pub const BUILTIN_ENTITIES: &[&str] = &[
    "CREDIT_CARD",
    "US_SSN",
    "IBAN",
    "EMAIL",
    "PHONE",
    "IP_ADDRESS",
    "SECRET",
    "UK_NINO",
    "BR_CPF",
    "ES_DNI",
    "IN_AADHAAR",
];

/// An entity: index into the masker's entity names.
pub type EntityId = usize;

/// One validated match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub entity: EntityId,
    pub span: Range<usize>,
}

#[derive(Clone, Copy)]
enum Check {
    None,
    Fn(fn(&[u8], Range<usize>) -> Option<Range<usize>>),
    Phone,
    /// The last N bytes of the match are the secret.
    TrailingValue(usize),
}

struct Detector {
    entity: &'static str,
    pattern: &'static str,
    check: Check,
}

/// Built-in detectors in priority order: where two match at the same place, the earlier one
/// is tried first.
const DETECTORS: &[Detector] = &[
    Detector {
        entity: "SECRET",
        pattern: r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.)*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
        check: Check::None,
    },
    Detector {
        entity: "SECRET",
        // A JWT: header and payload are base64url JSON objects, so both start with `eyJ`.
        pattern: r"(?-u:\b)eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
        check: Check::None,
    },
    Detector {
        entity: "SECRET",
        pattern: r"(?-u:\b)(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}(?-u:\b)",
        check: Check::None,
    },
    Detector {
        entity: "SECRET",
        pattern: r#"(?i:aws_?secret_?(?:access_?)?key)["']?[ \t]*[:=][ \t]*["']?[A-Za-z0-9/+]{40}"#,
        check: Check::TrailingValue(40),
    },
    Detector {
        entity: "SECRET",
        pattern: r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})(?-u:\b)",
        check: Check::None,
    },
    Detector {
        entity: "SECRET",
        pattern: r"(?-u:\b)glpat-[A-Za-z0-9_-]{20,}",
        check: Check::None,
    },
    Detector {
        entity: "SECRET",
        pattern: r"(?-u:\b)xox[abprs]-[A-Za-z0-9-]{10,}",
        check: Check::None,
    },
    Detector {
        entity: "SECRET",
        pattern: r"(?-u:\b)[rs]k_(?:live|test)_[A-Za-z0-9]{16,}(?-u:\b)",
        check: Check::None,
    },
    Detector {
        entity: "SECRET",
        pattern: r"(?-u:\b)sk-[A-Za-z0-9_-]{20,}",
        check: Check::None,
    },
    Detector {
        entity: "SECRET",
        pattern: r"(?-u:\b)(?i:bearer)[ \t]+[A-Za-z0-9._~+/-]{16,}=*",
        check: Check::Fn(validate::after_space),
    },
    Detector {
        entity: "EMAIL",
        pattern: r"[A-Za-z0-9._%+\x80-\xFF-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?-u:\b)",
        check: Check::Fn(validate::email),
    },
    Detector {
        entity: "IBAN",
        pattern: r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?-u:\b)",
        check: Check::Fn(validate::iban),
    },
    Detector {
        entity: "CREDIT_CARD",
        pattern: r"(?-u:\b)[0-9](?:[ .-]?[0-9]){12,18}(?-u:\b)",
        check: Check::Fn(validate::card),
    },
    Detector {
        entity: "US_SSN",
        pattern: r"(?-u:\b)[0-9]{3}[ .-]?[0-9]{2}[ .-]?[0-9]{4}(?-u:\b)",
        check: Check::Fn(validate::ssn),
    },
    Detector {
        entity: "BR_CPF",
        pattern: r"(?-u:\b)[0-9]{3}\.[0-9]{3}\.[0-9]{3}-[0-9]{2}(?-u:\b)",
        check: Check::Fn(validate::cpf),
    },
    Detector {
        entity: "IN_AADHAAR",
        pattern: r"(?-u:\b)[2-9][0-9]{3}(?:[0-9]{8}|-[0-9]{4}-[0-9]{4}| [0-9]{4} [0-9]{4})(?-u:\b)",
        check: Check::Fn(validate::aadhaar),
    },
    Detector {
        entity: "ES_DNI",
        pattern: r"(?-u:\b)(?:[0-9]{8}|[XYZxyz]-?[0-9]{7})-?[A-Za-z](?-u:\b)",
        check: Check::Fn(validate::dni),
    },
    Detector {
        entity: "UK_NINO",
        pattern: r"(?-u:\b)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?[0-9]{2} ?[0-9]{2} ?[0-9]{2} ?[A-D](?-u:\b)",
        check: Check::Fn(validate::nino),
    },
    Detector {
        entity: "PHONE",
        // An extension (`x253`, ` ext. 12`, `#4`) is part of the number.
        pattern: r"(?:\+[1-9]|\(|(?-u:\b)[0-9])[0-9 ().-]{5,20}[0-9](?: ?(?i:x|ext\.?|#) ?[0-9]{1,6})?(?-u:\b)",
        check: Check::Phone,
    },
    Detector {
        entity: "IP_ADDRESS",
        pattern: r"(?-u:\b)(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?-u:\b)",
        check: Check::Fn(validate::ipv4),
    },
    Detector {
        entity: "IP_ADDRESS",
        // All eight groups (or six and an IPv4 tail), or a `::` somewhere: a time (`10:23:45`)
        // or a MAC address has neither, so it is no candidate at all.
        pattern: r"(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){6}[0-9]{1,3}(?:\.[0-9]{1,3}){3}|(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4})*)?::(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4})*(?:\.[0-9]{1,3}){0,3})?",
        check: Check::Fn(validate::ipv6),
    },
    Detector {
        entity: "BR_CPF",
        // Bare 11 digits: after PHONE, so that a valid national phone number wins.
        pattern: r"(?-u:\b)[0-9]{11}(?-u:\b)",
        check: Check::Fn(validate::cpf),
    },
];

/// A scanner's search state on one thread: the automata's caches (the lazy DFA's states
/// built so far) and a pattern set. Kept per thread rather than taken from the regex's own
/// pool on every search: a gateway masks every value of every row, and on a thread other
/// than the pool's first one each take and return goes through a lock.
struct Caches {
    scanner: usize,
    re: Cache,
    all: Cache,
    set: PatternSet,
}

/// Caches of the scanners this thread used last (a few: a reload makes a new scanner, and
/// the old one's caches age out).
const CACHED_SCANNERS: usize = 4;

thread_local! {
    // Boxed: a scan takes its caches out of the list and puts them back, and a meta cache is
    // kilobytes to move.
    #[allow(clippy::vec_box)]
    static CACHES: RefCell<Vec<Box<Caches>>> = const { RefCell::new(Vec::new()) };
}

static SCANNER_IDS: AtomicUsize = AtomicUsize::new(0);

/// The compiled detector set.
pub struct Scanner {
    /// Which scanner a thread's caches belong to.
    id: usize,
    re: Option<Regex>,
    /// The same patterns with every match reported: which of them match at a given place.
    all: Option<Regex>,
    /// Per pattern: entity and validator.
    patterns: Vec<(EntityId, Check)>,
    /// Per pattern: whether a candidate that fails validation is skipped whole (an IBAN-shaped
    /// run with a bad checksum holds no phone or card number), rather than rescanned from its
    /// second byte.
    swallow: Vec<bool>,
    phones: PhoneRules,
}

impl Scanner {
    /// Compiles the built-in detectors not `disabled` and the custom ones. `entities` is
    /// extended with the custom entity names; returns the scanner.
    pub fn new(
        entities: &mut Vec<String>,
        disabled: &[String],
        custom: &[CustomDetector],
        regions: &[String],
    ) -> Result<Scanner, MaskError> {
        let mut sources: Vec<String> = Vec::new();
        let mut patterns = Vec::new();
        let mut swallow = Vec::new();
        let id_of = |entities: &mut Vec<String>, name: &str| match entities
            .iter()
            .position(|e| e == name)
        {
            Some(i) => i,
            None => {
                entities.push(name.to_string());
                entities.len() - 1
            }
        };
        for d in DETECTORS {
            if disabled.iter().any(|x| x == d.entity) {
                continue;
            }
            sources.push(d.pattern.to_string());
            patterns.push((id_of(entities, d.entity), d.check));
            swallow.push(d.entity == "IBAN");
        }
        for c in custom {
            let source = match (&c.pattern, c.words.is_empty()) {
                (Some(p), true) => p.clone(),
                (None, false) => {
                    let words: Vec<String> =
                        c.words.iter().map(|w| regex_syntax::escape(w)).collect();
                    format!(r"(?i:(?-u:\b)(?:{})(?-u:\b))", words.join("|"))
                }
                _ => {
                    return Err(MaskError::Custom {
                        entity: c.entity.clone(),
                    })
                }
            };
            // Each custom pattern must compile on its own, so the error can name it.
            build(&[source.as_str()]).map_err(|reason| MaskError::Pattern {
                entity: c.entity.clone(),
                reason,
            })?;
            sources.push(source);
            patterns.push((id_of(entities, &c.entity), Check::None));
            swallow.push(false);
        }
        let phones = PhoneRules::new(regions).map_err(MaskError::Region)?;
        let (re, all) = if sources.is_empty() {
            (None, None)
        } else {
            let refs: Vec<&str> = sources.iter().map(String::as_str).collect();
            (
                Some(build(&refs).map_err(MaskError::Build)?),
                Some(build_kind(&refs, MatchKind::All).map_err(MaskError::Build)?),
            )
        };
        Ok(Scanner {
            id: SCANNER_IDS.fetch_add(1, Ordering::Relaxed),
            re,
            all,
            patterns,
            swallow,
            phones,
        })
    }

    /// Calls `found` for every validated finding in `hay`, left to right, never overlapping.
    pub fn scan(&self, hay: &[u8], found: impl FnMut(Finding)) {
        let (Some(re), Some(all)) = (&self.re, &self.all) else {
            return;
        };
        // Taken out of the thread's list while in use: a scan from inside `found` (none does
        // today) would get fresh caches rather than a borrow error.
        let taken = CACHES.with(|c| {
            let mut list = c.borrow_mut();
            let i = list.iter().position(|x| x.scanner == self.id)?;
            Some(list.swap_remove(i))
        });
        let mut caches = taken.unwrap_or_else(|| {
            Box::new(Caches {
                scanner: self.id,
                re: re.create_cache(),
                all: all.create_cache(),
                set: PatternSet::new(re.pattern_len()),
            })
        });
        self.scan_with(re, all, &mut caches, hay, found);
        CACHES.with(|c| {
            let mut list = c.borrow_mut();
            if list.len() >= CACHED_SCANNERS {
                list.remove(0);
            }
            list.push(caches);
        });
    }

    fn scan_with(
        &self,
        re: &Regex,
        all: &Regex,
        caches: &mut Caches,
        hay: &[u8],
        mut found: impl FnMut(Finding),
    ) {
        let mut at = 0;
        while at < hay.len() {
            let Some(m) = re.search_with(&mut caches.re, &Input::new(hay).range(at..)) else {
                return;
            };
            let start = m.start();
            let first = m.pattern().as_usize();
            let mut hit = self.check(hay, first, m.range());
            if hit.is_none() {
                // Lower-priority detectors that match here: one anchored pass says which, then
                // each is asked for its own match.
                let set = &mut caches.set;
                set.clear();
                all.which_overlapping_matches_with(
                    &mut caches.all,
                    &Input::new(hay).range(start..).anchored(Anchored::Yes),
                    set,
                );
                for pid in set.iter().map(|p| p.as_usize()).filter(|&p| p > first) {
                    let input = Input::new(hay)
                        .range(start..)
                        .anchored(Anchored::Pattern(PatternID::new_unchecked(pid)));
                    if let Some(m2) = re.search_with(&mut caches.re, &input) {
                        hit = self.check(hay, pid, m2.range());
                        if hit.is_some() {
                            break;
                        }
                    }
                }
            }
            match hit {
                Some(f) => {
                    at = f.span.end.max(start + 1);
                    found(f);
                }
                None if self.swallow[first] => at = m.end().max(start + 1),
                None => at = start + 1,
            }
        }
    }

    fn check(&self, hay: &[u8], pid: usize, m: Range<usize>) -> Option<Finding> {
        let (entity, check) = self.patterns[pid];
        let span = match check {
            Check::None => Some(m),
            Check::Fn(f) => f(hay, m),
            Check::Phone => phone_with_cuts(hay, m, &self.phones),
            Check::TrailingValue(n) => validate::trailing_value(n)(hay, m),
        }?;
        (!span.is_empty()).then_some(Finding { entity, span })
    }
}

/// A phone candidate, or its longest prefix ending before a separator that is one
/// ("201-555-0123 2024" holds a number and a year).
fn phone_with_cuts(hay: &[u8], m: Range<usize>, rules: &PhoneRules) -> Option<Range<usize>> {
    if let Some(r) = validate::phone(hay, m.clone(), rules) {
        return Some(r);
    }
    let text = &hay[m.clone()];
    // The kept part must look like a number of its own: at least three groups.
    let separators = |t: &[u8]| {
        t.iter()
            .filter(|b| matches!(b, b' ' | b'-' | b'.' | b'(' | b')'))
            .count()
    };
    (1..text.len())
        .rev()
        .filter(|&i| text[i] == b' ' && text[i - 1].is_ascii_digit())
        .take(3)
        .filter(|&i| separators(&text[..i]) >= 2)
        .find_map(|i| validate::phone(hay, m.start..m.start + i, rules))
}

fn build(patterns: &[&str]) -> Result<Regex, String> {
    build_kind(patterns, MatchKind::LeftmostFirst)
}

fn build_kind(patterns: &[&str], kind: MatchKind) -> Result<Regex, String> {
    Regex::builder()
        .syntax(syntax::Config::new().unicode(false).utf8(false))
        .configure(
            Regex::config()
                .match_kind(kind)
                .utf8_empty(false)
                .hybrid_cache_capacity(64 << 20),
        )
        .build_many(patterns)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner() -> (Scanner, Vec<String>) {
        let mut names: Vec<String> = BUILTIN_ENTITIES.iter().map(|s| s.to_string()).collect();
        let custom = vec![
            CustomDetector {
                entity: "EMPLOYEE_ID".into(),
                pattern: Some(r"EMP-[0-9]{6}".into()),
                words: vec![],
            },
            CustomDetector {
                entity: "PROJECT".into(),
                pattern: None,
                words: vec!["Blue Bird".into(), "nightjar".into()],
            },
        ];
        let s =
            Scanner::new(&mut names, &[], &custom, &["US".into(), "GB".into()]).expect("builds");
        (s, names)
    }

    fn found(text: &str) -> Vec<(String, String)> {
        let (s, names) = scanner();
        let mut v = Vec::new();
        s.scan(text.as_bytes(), |f| {
            v.push((names[f.entity].clone(), text[f.span].to_string()))
        });
        v
    }

    #[test]
    fn one_pass_finds_every_kind() {
        let text = "Jane <jane.doe@example.com> paid with 4111 1111 1111 1111 on 2024-01-15, \
                    SSN 536-90-4399, IBAN DE89 3704 0044 0532 0130 00, call +1 201 555 0123 \
                    from 192.168.1.20 or 2001:db8::1; NINO AB123456C, CPF 529.982.247-25, \
                    DNI 12345678Z, Aadhaar 2341 2341 2346, key AKIAIOSFODNN7EXAMPLE, \
                    EMP-123456 on nightjar.";
        let got = found(text);
        let want = [
            ("EMAIL", "jane.doe@example.com"),
            ("CREDIT_CARD", "4111 1111 1111 1111"),
            ("US_SSN", "536-90-4399"),
            ("IBAN", "DE89 3704 0044 0532 0130 00"),
            ("PHONE", "+1 201 555 0123"),
            ("IP_ADDRESS", "192.168.1.20"),
            ("IP_ADDRESS", "2001:db8::1"),
            ("UK_NINO", "AB123456C"),
            ("BR_CPF", "529.982.247-25"),
            ("ES_DNI", "12345678Z"),
            ("IN_AADHAAR", "2341 2341 2346"),
            ("SECRET", "AKIAIOSFODNN7EXAMPLE"),
            ("EMPLOYEE_ID", "EMP-123456"),
            ("PROJECT", "nightjar"),
        ];
        let got: Vec<(&str, &str)> = got.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn secrets() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        for s in [
            "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
            "glpat-abcdefghij0123456789",
            "xoxb-123456789012-abcdefghijkl",
            "sk_live_abcdefghijklmnop1234",
            "sk-proj-abcdefghijklmnopqrstuvwxyz",
            jwt,
        ] {
            let text = format!("token {s} end");
            assert_eq!(
                found(&text),
                vec![("SECRET".to_string(), s.to_string())],
                "{s}"
            );
        }
        let aws = "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        assert_eq!(
            found(aws),
            vec![(
                "SECRET".into(),
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into()
            )]
        );
        assert_eq!(
            found("Authorization: Bearer abcdefghijklmnop.qrstuvwxyz"),
            vec![("SECRET".into(), "abcdefghijklmnop.qrstuvwxyz".into())]
        );
        let pem = "x -----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY----- y";
        assert_eq!(found(pem).len(), 1);
        assert_eq!(found(pem)[0].1.len(), pem.len() - 4);
    }

    #[test]
    fn near_misses_are_left_alone() {
        for text in [
            "order 4111111111111112 shipped",
            "ssn 000-12-3456 and 666-12-3456",
            "IBAN DE89370400440532013001",
            "version 10.2.3.4.5 released",
            "at 10:23:45 on 2024-01-15",
            "price 1234.56 total 99999",
            "id 1234567890",
            "CPF 529.982.247-24",
            "DNI 12345678A",
            "mac 00:1A:2B:3C:4D:5E",
            "commit 2f3a9c1d0b4e",
            // A bad IBAN checksum: none of its groups is a phone number either.
            "acct NL24 RABO 2102 0539 50",
            "ts=1769426149 version=15.11.10.17.20",
        ] {
            assert_eq!(found(text), vec![], "{text}");
        }
    }

    #[test]
    fn a_rejected_candidate_gives_way_to_a_lower_priority_detector() {
        // 11 digits: not a valid phone number without a shape, but a valid CPF.
        assert_eq!(
            found("cpf 52998224725."),
            vec![("BR_CPF".into(), "52998224725".into())]
        );
        // The card pattern takes a phone number with a following year; the phone survives.
        assert_eq!(
            found("tel 020 7946 0123 2024"),
            vec![("PHONE".into(), "020 7946 0123".into())]
        );
        // A card in parentheses is not a phone number starting at the parenthesis.
        assert_eq!(
            found("(3034 881682 0432)"),
            vec![("CREDIT_CARD".into(), "3034 881682 0432".into())]
        );
        assert_eq!(
            found("src=b414:4e38:1f73:2956:8bc8:: latency"),
            vec![("IP_ADDRESS".into(), "b414:4e38:1f73:2956:8bc8::".into())]
        );
    }

    #[test]
    fn phone_extensions_are_masked_with_the_number() {
        for (text, phone) in [
            ("call 902-868-5995x2890 today", Some("902-868-5995x2890")),
            (
                "tel: (201) 555-0123 ext. 12.",
                Some("(201) 555-0123 ext. 12"),
            ),
            // Letters after the number that are no extension: the number alone.
            ("+1 201 555 0123 extra", Some("+1 201 555 0123")),
            // A hex literal is no extension.
            ("mask 0x1F2E3D4C5B", None),
        ] {
            let want: Vec<(String, String)> = phone
                .map(|p| ("PHONE".to_string(), p.to_string()))
                .into_iter()
                .collect();
            assert_eq!(found(text), want, "{text}");
        }
    }

    #[test]
    fn non_ascii_text_is_scanned_and_never_split() {
        let text = "Zoë Müller, zoë.m@example.de — 4111111111111111 ✓";
        let got = found(text);
        assert_eq!(
            got,
            vec![
                ("EMAIL".into(), "zoë.m@example.de".into()),
                ("CREDIT_CARD".into(), "4111111111111111".into())
            ]
        );
    }

    #[test]
    fn bad_custom_patterns_and_regions_are_named() {
        let mut names = vec![];
        let bad = vec![CustomDetector {
            entity: "X".into(),
            pattern: Some("([".into()),
            words: vec![],
        }];
        let e = Scanner::new(&mut names, &[], &bad, &[])
            .err()
            .expect("refused");
        assert!(e.to_string().contains("entity \"X\""), "{e}");
        let e = Scanner::new(&mut names, &[], &[], &["Atlantis".into()])
            .err()
            .expect("refused");
        assert!(e.to_string().contains("Atlantis"), "{e}");
    }
}
