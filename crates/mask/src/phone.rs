//! Phone number validation on libphonenumber's metadata, without its parser.
//!
//! `phonenumber::parse` + `is_valid` costs about 20 µs per number here (it runs dozens of
//! regular expressions behind a global mutex): at one phone column per row, that alone would
//! hold a result set to a few MB/s. The validity rule itself is small: a number is valid when
//! its national significant number fully matches the region's general pattern and one of its
//! number-type patterns (fixed line, mobile, toll free, …), each with its possible lengths.
//! This module applies exactly that rule to the same metadata (the `phonenumber` crate's
//! database, libphonenumber 9), with the patterns compiled once per country into anchored
//! DFAs. Formatting (spaces, dashes, dots, parentheses, a `(0)` trunk marker) is stripped
//! by the caller's digit extraction.

use phonenumber::metadata::{Descriptor, Metadata, DATABASE};
use regex_automata::dfa::dense::DFA;
use regex_automata::dfa::{Automaton, StartKind};
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One pattern of a region: its automaton, the lengths it allows, and which first three
/// digits it can start with.
struct Rule {
    dfa: DFA<Vec<u32>>,
    lengths: Vec<u16>,
    /// Bit `n` (0..1000): some number starting with the digits of `n` (zero-padded to three)
    /// can match. Most numbers are refused here without a search: of the 25 regions sharing
    /// +1, one or two accept a given area code.
    first3: Box<[u64; 16]>,
}

impl Rule {
    fn new(d: &Descriptor) -> Option<Rule> {
        // A whole-string match, as libphonenumber's `matches()` (the metadata is written in
        // extended, whitespace-insensitive syntax). A fully built DFA, anchored at the start:
        // it needs no cache (no pool to take one from, on any thread). Numbers are ASCII
        // digits, so `\d` need not be Unicode.
        Rule::compile(d.national_number().as_str(), d.possible_length().to_vec())
    }

    fn compile(pattern: &str, lengths: Vec<u16>) -> Option<Rule> {
        let dfa = DFA::builder()
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .configure(DFA::config().start_kind(StartKind::Anchored))
            .build(&format!("(?x:{pattern})$"))
            .ok()?;
        let first3 = first_three(&dfa)?;
        Some(Rule {
            dfa,
            lengths,
            first3,
        })
    }

    fn matches(&self, national: &str) -> bool {
        let b = national.as_bytes();
        if let [x @ b'0'..=b'9', y @ b'0'..=b'9', z @ b'0'..=b'9', ..] = b {
            let n = (x - b'0') as usize * 100 + (y - b'0') as usize * 10 + (z - b'0') as usize;
            if self.first3[n / 64] & (1 << (n % 64)) == 0 {
                return false;
            }
        }
        (self.lengths.is_empty() || self.lengths.contains(&(b.len() as u16)))
            && self
                .dfa
                .try_search_fwd(&Input::new(national).anchored(Anchored::Yes))
                .is_ok_and(|m| m.is_some())
    }
}

/// Which three-digit beginnings a pattern can continue from (see `Rule::first3`): the
/// automaton stepped through each of the 1000, keeping those where it is not dead.
fn first_three(dfa: &DFA<Vec<u32>>) -> Option<Box<[u64; 16]>> {
    let mut bits = Box::new([0u64; 16]);
    for n in 0..1000usize {
        let digits = [
            b'0' + (n / 100) as u8,
            b'0' + (n / 10 % 10) as u8,
            b'0' + (n % 10) as u8,
        ];
        let mut sid = dfa
            .start_state_forward(&Input::new(&digits).anchored(Anchored::Yes))
            .ok()?;
        for &b in &digits {
            sid = dfa.next_state(sid, b);
        }
        if !dfa.is_dead_state(sid) {
            bits[n / 64] |= 1 << (n % 64);
        }
    }
    Some(bits)
}

/// The compiled rules of one region.
struct Region {
    general: Rule,
    types: Vec<Rule>,
}

impl Region {
    fn new(meta: &Metadata) -> Option<Region> {
        let d = meta.descriptors();
        let types = [
            d.fixed_line(),
            d.mobile(),
            d.toll_free(),
            d.premium_rate(),
            d.shared_cost(),
            d.personal_number(),
            d.voip(),
            d.pager(),
            d.uan(),
            d.voicemail(),
        ]
        .into_iter()
        .flatten()
        .filter_map(Rule::new)
        .collect();
        Some(Region {
            general: Rule::new(d.general())?,
            types,
        })
    }

    fn valid(&self, national: &str) -> bool {
        self.general.matches(national) && self.types.iter().any(|t| t.matches(national))
    }
}

/// A region national numbers are read in: its trunk prefix, and the rules of every region
/// sharing its country code. As in libphonenumber, a number read in `US` is valid when it is
/// valid anywhere in the North American plan (Canada, Jamaica, …), one read in `GB` when it
/// is valid in GB, Guernsey, Jersey or the Isle of Man.
struct National {
    prefix: Option<String>,
    /// Whether numbers are written with the trunk prefix (`020 7946 0123` in GB, where
    /// `20 7946 0123` is not how anyone writes it), or with it optional (`201 555 0123` in
    /// the US), from the region's formatting rules.
    prefix_required: bool,
    regions: Arc<Vec<Region>>,
}

impl National {
    /// A number written nationally: with or without the trunk prefix.
    fn valid(&self, digits: &str) -> bool {
        let any = |n: &str| self.regions.iter().any(|r| r.valid(n));
        if let Some(rest) = self.prefix.as_deref().and_then(|p| digits.strip_prefix(p)) {
            if any(rest) {
                return true;
            }
        }
        !self.prefix_required && any(digits)
    }
}

/// Phone validation for a set of national regions and every country code.
pub struct PhoneRules {
    /// Regions numbers without `+` are read in, compiled at start.
    national: Vec<National>,
    /// Regions by country calling code, compiled when first needed.
    by_code: Mutex<HashMap<u16, Arc<Vec<Region>>>>,
}

impl PhoneRules {
    /// Compiles the rules of `regions` (ISO 3166 codes). Unknown codes are returned as errors.
    pub fn new(regions: &[String]) -> Result<PhoneRules, String> {
        let rules = PhoneRules {
            national: Vec::new(),
            by_code: Mutex::new(HashMap::new()),
        };
        let mut national = Vec::new();
        for r in regions {
            let meta = DATABASE
                .by_id(r.to_ascii_uppercase().as_str())
                .ok_or_else(|| r.clone())?;
            let regions = rules
                .regions_of(meta.country_code())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| r.clone())?;
            let prefix = meta.national_prefix().map(str::to_string);
            let prefix_required = prefix.is_some()
                && meta
                    .formats()
                    .iter()
                    .any(|f| f.national_prefix().is_some() && !f.is_national_prefix_optional());
            national.push(National {
                prefix,
                prefix_required,
                regions,
            });
        }
        Ok(PhoneRules { national, ..rules })
    }

    /// Whether `digits` (only ASCII digits) is a phone number: international (`plus`: the
    /// digits start with the country code) or national in one of the regions.
    ///
    /// A national number must be valid (in a range the country assigns: `(776) 901-8955` is
    /// no US number, there is no area code 776). A number written with its `+` country code
    /// only needs the country's general shape (its lengths and leading digits): `+1 390 361
    /// 2328` is written as a phone number, so it is one, even though area code 390 is not
    /// assigned today.
    pub fn valid(&self, digits: &str, plus: bool) -> bool {
        if !plus {
            return self.national.iter().any(|r| r.valid(digits));
        }
        // Country codes are prefix-free: at most one of 1, 2 or 3 leading digits is one.
        for n in 1..=3.min(digits.len()) {
            let Ok(code) = digits[..n].parse::<u16>() else {
                return false;
            };
            let Some(regions) = self.regions_of(code) else {
                continue;
            };
            let rest = &digits[n..];
            return regions.iter().any(|r| r.general.matches(rest));
        }
        false
    }

    fn regions_of(&self, code: u16) -> Option<Arc<Vec<Region>>> {
        let mut cache = self.by_code.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = cache.get(&code) {
            return Some(r.clone());
        }
        let metas = DATABASE.by_code(&code)?;
        let regions: Vec<Region> = metas.into_iter().filter_map(Region::new).collect();
        let regions = Arc::new(regions);
        cache.insert(code, regions.clone());
        Some(regions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str) -> Rule {
        Rule::compile(pattern, vec![]).expect("compiles")
    }

    #[test]
    fn a_rule_matches_whole_numbers_by_any_alternative() {
        // The first alternative matches a prefix; the second the whole number.
        let r = rule(r"3\d{6} | [2-9]\d{9}");
        assert!(r.matches("3123456789"));
        assert!(r.matches("3123456"));
        assert!(!r.matches("31234567"));
        assert!(
            !r.matches("1123456789"),
            "refused by its first three digits"
        );
        let r = rule(r"20[1-9]\d{7}");
        assert!(r.matches("2015550123"));
        assert!(!r.matches("2005550123"));
        assert!(!r.matches("20"));
        // Shorter than three digits: searched, not filtered.
        assert!(rule(r"\d{2}").matches("42"));
    }

    /// The same answers as the phonenumber crate's own parser and validator (but for GB
    /// numbers without their trunk 0 and `+` numbers in unassigned ranges, see below).
    #[test]
    fn agrees_with_libphonenumber() {
        let rules = PhoneRules::new(&["US".into(), "GB".into()]).expect("regions");
        for text in [
            "+1 201 555 0123",
            "+1 000 000 0000",
            "+44 20 7946 0123",
            "+44 7700 900123",
            "+49 30 90182012",
            "+33 1 99 00 12 34",
            "+61 2 5550 1234",
            "+91 98765 43210",
            "+55 11 91234 5678",
            "+34 612 345 678",
            "+1 212 555 1234",
            "+999 123 4567",
            "(201) 555-0123",
            "020 7946 0123",
            "0161 496 0123",
            "07700 900123",
            "201-555-0123",
            "1 201 555 0123",
            "555-0123",
            "1234567890",
            "(581) 316-4524",
            "(876) 694-9422",
            "01481 256789",
        ] {
            let plus = text.starts_with('+');
            let cleaned = text.replace("(0)", "");
            let digits: String = cleaned.chars().filter(char::is_ascii_digit).collect();
            let ours = rules.valid(&digits, plus);
            let region = (!plus).then_some(phonenumber::country::Id::US);
            let theirs_us =
                phonenumber::parse(region, text).is_ok_and(|p| phonenumber::is_valid(&p));
            // One deliberate difference: GB numbers are written with their trunk 0, and
            // libphonenumber's parser also accepts them without it (`1234567890` as
            // 01234 567890), which would make every 10-digit integer starting with 1 a
            // phone number.
            let theirs_gb = !plus
                && digits.starts_with('0')
                && phonenumber::parse(Some(phonenumber::country::Id::GB), text)
                    .is_ok_and(|p| phonenumber::is_valid(&p));
            // The other: a `+` number needs only its country's general shape, so every
            // number libphonenumber calls valid is one, and some more (see below).
            if plus {
                assert!(ours || !theirs_us, "{text}");
            } else {
                assert_eq!(ours, theirs_us || theirs_gb, "{text}");
            }
        }
    }

    /// With its `+` country code, a number of the country's length and leading digits is a
    /// phone number, assigned or not; without them it is not.
    #[test]
    fn plus_numbers_need_the_shape_not_the_assignment() {
        let rules = PhoneRules::new(&["US".into(), "GB".into()]).expect("regions");
        let valid = |text: &str, plus: bool| {
            let digits: String = text.chars().filter(char::is_ascii_digit).collect();
            rules.valid(&digits, plus)
        };
        for (text, libphonenumber_valid) in [
            // Area codes 390 and 776 are not assigned; 7700 900xxx is the drama range.
            ("+1 390-361-2328", false),
            ("+1 776 901 8955", false),
            ("+44 20 7946 0000", true),
            ("+44 7700 900123", false),
            ("+49 30 90182012", true),
            ("+1 201 555 0123", true),
            ("+33 1 99 00 12 34", true),
            ("+61 2 5550 1234", true),
        ] {
            assert!(valid(text, true), "{text} is a phone number");
            let theirs = phonenumber::parse(None, text).is_ok_and(|p| phonenumber::is_valid(&p));
            assert_eq!(theirs, libphonenumber_valid, "{text} (libphonenumber)");
        }
        for text in [
            "+1 000 000 0000",  // NANP area codes start 2-9
            "+1 190-361-2328",  // same
            "+1 390-361-232",   // nine digits
            "+1 390-361-23281", // eleven
            "+44 20 7946 00",   // too short for GB
            "+999 123 4567",    // no such country code
        ] {
            assert!(!valid(text, true), "{text} is not a phone number");
        }
        // Without `+`: the assignment decides, as before.
        assert!(!valid("390-361-2328", false));
        assert!(!valid("(776) 901-8955", false));
        assert!(valid("(201) 555-0123", false));
    }
}
