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
        pattern: r"(?-u:\b)[0-9](?:[ .-]?[0-9]){11,18}(?-u:\b)",
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
        // One scanner for every test: compiling one takes a while.
        static SCANNER: std::sync::OnceLock<(Scanner, Vec<String>)> = std::sync::OnceLock::new();
        let (s, names) = SCANNER.get_or_init(scanner);
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

    /// A card number of `len` digits starting with `prefix`: the digits in between from a
    /// small generator, the last one the Luhn check digit. With `not_aadhaar`, a 12-digit
    /// number that would also be a valid Aadhaar number is passed over.
    fn card_number(prefix: &str, len: usize, seed: &mut u64, not_aadhaar: bool) -> String {
        loop {
            let mut s = prefix.to_string();
            while s.len() < len - 1 {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                s.push(char::from(b'0' + ((*seed >> 33) % 10) as u8));
            }
            let d: Vec<u8> = s.bytes().map(|b| b - b'0').collect();
            let check = (0..10u8)
                .find(|&c| validate::luhn(&[d.as_slice(), &[c]].concat()))
                .expect("one check digit fits");
            s.push(char::from(b'0' + check));
            let all: Vec<u8> = s.bytes().map(|b| b - b'0').collect();
            if !(not_aadhaar && len == 12 && validate::verhoeff(&all)) {
                return s;
            }
        }
    }

    /// `digits` in groups of the given sizes (the rest in a last group), joined by `sep`.
    fn grouped(digits: &str, sizes: &[usize], sep: &str) -> String {
        let mut out = Vec::new();
        let mut at = 0;
        for &n in sizes {
            if at >= digits.len() {
                break;
            }
            out.push(&digits[at..(at + n).min(digits.len())]);
            at += n;
        }
        if at < digits.len() {
            out.push(&digits[at..]);
        }
        out.join(sep)
    }

    /// Every brand at every length it issues, in every layout people write, anywhere in a
    /// sentence: found whole, and nothing else found.
    #[test]
    fn cards_of_every_issuer_length_and_layout() {
        let brands: &[(&str, &[usize])] = &[
            ("4", &[13, 16, 19]), // Visa
            ("51", &[16]),        // Mastercard
            ("55", &[16]),
            ("2221", &[16]), // Mastercard 2-series
            ("2720", &[16]),
            ("34", &[15]), // Amex
            ("37", &[15]),
            ("300", &[14, 16]), // Diners
            ("305", &[14, 16]),
            ("36", &[14, 16]),
            ("38", &[14, 16]),
            ("39", &[14, 16]),
            ("6011", &[16, 17, 18, 19]), // Discover
            ("644", &[16, 19]),
            ("65", &[16, 19]),
            ("3528", &[16, 17, 18, 19]), // JCB
            ("3589", &[16, 19]),
            ("50", &[12, 13, 14, 15, 16, 17, 18, 19]), // Maestro
            ("56", &[12, 13, 15, 19]),
            ("58", &[12, 16]),
            ("6759", &[12, 13, 14, 15, 16, 17, 18, 19]),
            ("69", &[12, 14, 19]),
            ("62", &[16, 17, 18, 19]),   // UnionPay
            ("2200", &[16, 17, 18, 19]), // Mir
            ("2204", &[16, 19]),
        ];
        let sentences = [
            "{v} was charged twice",
            "Please charge {v} for the renewal.",
            "I paid with {v}.",
            "card number: {v}",
            "({v})",
            "[{v}], thanks",
            "\"{v}\";",
            "pan={v}&exp=04/29",
            "{\"card\":\"{v}\"}",
            "charged {v}!",
            "x,{v},y",
        ];
        let mut seed = 7u64;
        let mut checked = 0;
        for &(prefix, lengths) in brands {
            for &len in lengths {
                let number = card_number(prefix, len, &mut seed, true);
                let mut layouts = vec![
                    number.clone(),
                    grouped(&number, &[4, 4, 4, 4], " "),
                    grouped(&number, &[4, 4, 4, 4], "-"),
                ];
                match len {
                    15 => layouts.push(grouped(&number, &[4, 6, 5], " ")),
                    14 => layouts.push(grouped(&number, &[4, 6, 4], "-")),
                    _ => {}
                }
                for layout in &layouts {
                    for (i, sentence) in sentences.iter().enumerate() {
                        let text = sentence.replace("{v}", layout);
                        assert_eq!(
                            found(&text),
                            vec![("CREDIT_CARD".to_string(), layout.clone())],
                            "{text} (sentence {i})"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 800, "{checked} cases");
    }

    #[test]
    fn card_like_numbers_of_no_issuer_or_length_are_left_alone() {
        let mut seed = 11u64;
        for (prefix, len) in [
            ("4", 12), // Visa: 13, 16 or 19
            ("4", 14),
            ("4", 15),
            ("4", 17),
            ("51", 15), // Mastercard: 16
            ("51", 19),
            ("34", 16),   // Amex: 15
            ("3528", 15), // JCB: 16-19
            ("2200", 15), // Mir: 16-19
            ("7", 16),    // no issuer starts with 7, 8 or 9
            ("8", 16),
            ("9", 16),
            ("978", 13), // an ISBN-13, check digit Luhn-valid or not
            ("979", 13),
        ] {
            let n = card_number(prefix, len, &mut seed, true);
            for text in [
                format!("paid with {n}."),
                format!("paid with {}.", grouped(&n, &[4, 4, 4, 4], " ")),
            ] {
                assert_eq!(found(&text), vec![], "{text}");
            }
        }
        // 4-4-4-4 with a Luhn error.
        assert_eq!(found("card 4111 1111 1111 1112"), vec![]);
    }

    /// A 12-digit number valid both as a card (Luhn) and as an Aadhaar number (Verhoeff): the
    /// words before decide, and without any it is the Aadhaar number.
    #[test]
    fn a_twelve_digit_card_or_aadhaar_number_is_told_by_its_words() {
        let mut seed = 5u64;
        let n = loop {
            let n = card_number("50", 12, &mut seed, false);
            let d: Vec<u8> = n.bytes().map(|b| b - b'0').collect();
            if validate::verhoeff(&d) {
                break n;
            }
        };
        let spaced = grouped(&n, &[4, 4, 4], " ");
        for (text, entity) in [
            (format!("maestro card {n}"), "CREDIT_CARD"),
            (format!("card: {spaced}"), "CREDIT_CARD"),
            (format!("Aadhaar {spaced}"), "IN_AADHAAR"),
            (format!("see {spaced} on the form"), "IN_AADHAAR"),
            // A name before another value is that value's.
            (format!("card SO067011ST got {spaced}"), "IN_AADHAAR"),
            (format!("order SO067011ST, charged {n}"), "CREDIT_CARD"),
        ] {
            let want = if text.contains(&spaced) { &spaced } else { &n };
            assert_eq!(
                found(&text),
                vec![(entity.to_string(), want.clone())],
                "{text}"
            );
        }
    }

    #[test]
    fn phone_numbers_with_a_country_code_need_only_the_countrys_shape() {
        for number in [
            "+1 390-361-2328", // area code 390: not assigned
            "+1 (390) 361-2328",
            "+1.390.361.2328",
            "+13903612328",
            "+1 776 901 8955",
            "+44 20 7946 0000",
            "+44 7700 900123", // the drama range
            "+49 30 12345678",
            "+33 6 12 34 56 78",
            "+91 98765 43210",
            "+61 4 1234 5678",
            "+55 11 91234 5678",
            "+62 812 3456 7890",
        ] {
            for text in [
                format!("{number} is my number"),
                format!("order 12 shipped, call {number}."),
                format!("({number})"),
                format!("tel:{number};"),
            ] {
                assert_eq!(
                    found(&text),
                    vec![("PHONE".to_string(), number.to_string())],
                    "{text}"
                );
            }
        }
        // Without the country code, an unassigned area code is no phone number.
        for text in ["see 390-361-2328", "call (776) 901-8955 now", "3903612328"] {
            assert_eq!(found(text), vec![], "{text}");
        }
        // With it, the country's shape still matters.
        for text in [
            "+1 190-361-2328",
            "+1 390-361-232",
            "+999 123 4567",
            "delta +12.3456789",
        ] {
            assert_eq!(found(text), vec![], "{text}");
        }
    }

    /// Order, invoice and tracking numbers, UUIDs, timestamps, ISBNs, versions, IP-like
    /// strings and amounts: none of them is masked, even where the digits inside would pass a
    /// card's checks.
    #[test]
    fn identifiers_that_are_not_cards_or_phones_are_left_alone() {
        let mut seed = 3u64;
        let maestro12 = card_number("50", 12, &mut seed, true);
        let maestro13 = card_number("6759", 13, &mut seed, true);
        let visa13 = card_number("4", 13, &mut seed, true);
        let discover16 = card_number("6011", 16, &mut seed, true);
        let decoys = vec![
            // Orders and invoices.
            "order ORD-2024-000123 shipped".to_string(),
            "order #100245783 shipped".to_string(),
            "INV-000123456789".to_string(),
            format!("INV-{maestro12} paid"),
            format!("ORD-{maestro13}"),
            format!("invoice {maestro12} is due"),
            format!("order_id={maestro13}"),
            "SO123456AB".to_string(),
            // UUIDs, one ending in digits that pass a card's checks.
            "request_id 123e4567-e89b-12d3-a456-426614174000".to_string(),
            format!("id=8f14e45f-ceea-467f-a0e6-{maestro12}"),
            // Timestamps.
            "at 2024-01-15T10:23:45Z".to_string(),
            "at 2024-01-15T10:23:45.123456+01:00".to_string(),
            "2024-01-15 10:23:45,123 INFO".to_string(),
            "ts=1769426149".to_string(),
            "ts=1769426149123".to_string(),
            "ts=1769426149123456".to_string(),
            "1769426149123456789".to_string(),
            // ISBNs and other product codes.
            "ISBN 978-3-16-148410-0".to_string(),
            "ISBN 9783161484100".to_string(),
            "isbn 979-10-90636-07-1".to_string(),
            "ISBN 0-306-40615-2".to_string(),
            "ISBN 0306406152".to_string(),
            format!("EAN {visa13}"),
            format!("sku {maestro12}"),
            // Tracking numbers.
            "tracking 1Z999AA10123456784".to_string(),
            "tracking 9400 1000 0000 0000 0000 00".to_string(),
            "tracking 9400100000000000000000".to_string(),
            format!("tracking {maestro12}"),
            format!("shipment https://track.example/parcels/{discover16}"),
            // Versions, IP-like strings, amounts.
            "version 10.2.3.4.5".to_string(),
            "v6.0110009.90139".to_string(),
            "15.11.10.17.20".to_string(),
            "from 999.1.1.1".to_string(),
            "from 616.183.172.124".to_string(),
            "total 1234.56".to_string(),
            format!("total {maestro13}.45"),
            "USD 5000000000.09".to_string(),
            "delta +12.3456789".to_string(),
        ];
        for text in &decoys {
            assert_eq!(found(text), vec![], "{text}");
        }
    }

    /// Near misses the corpus turned up: a number named as something else, a card's first
    /// groups, an ISBN-10 written with dashes.
    #[test]
    fn parts_and_namesakes_of_ids_are_left_alone() {
        let mut seed = 9u64;
        let maestro12 = card_number("50", 12, &mut seed, true);
        // A 15-digit number failing Luhn whose first 12 digits are a valid card: no card.
        let tail = (100..1000)
            .map(|t| format!("{maestro12}{t}"))
            .find(|n| {
                let d: Vec<u8> = n.bytes().map(|b| b - b'0').collect();
                !validate::luhn(&d)
            })
            .expect("some tail fails Luhn");
        let spaced = grouped(&tail, &[4, 4, 4, 4], " ");
        for text in [
            format!("ref=\"{spaced}\" ok"),
            "ISBN 6-399-87568-4".to_string(),
            "see 6-399-87568-4 here".to_string(),
            "upc=250714611256".to_string(),
            "tracking 7245 7889 8498 today".to_string(),
            "ssn=400-27-4942 order=#558271600".to_string(),
            "social security: see order 558271600".to_string(),
        ] {
            let got: Vec<(String, String)> = found(&text)
                .into_iter()
                .filter(|(_, v)| v != "400-27-4942")
                .collect();
            assert_eq!(got, vec![], "{text}");
        }
        assert_eq!(
            found("ssn=400-27-4942"),
            vec![("US_SSN".to_string(), "400-27-4942".to_string())]
        );
        assert_eq!(
            found("ssn 558271600"),
            vec![("US_SSN".to_string(), "558271600".to_string())]
        );
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
