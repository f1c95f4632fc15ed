//! Validators: what turns a pattern match into a finding.
//!
//! A pattern only says "this looks like a card number"; the validator checks what the issuer
//! guarantees (Luhn and issuer ranges for cards, mod-97 and the country's length for IBANs,
//! check digits for CPF, DNI and Aadhaar, the SSA's never-issued ranges for SSNs, the number
//! plan for phone numbers). Each returns the span to mask, which may be narrower than the match
//! (an IBAN the pattern ran past, the value after `aws_secret_access_key=`), or `None`.
//!
//! Validators see the whole haystack so that they can look at the bytes around a match (a
//! version number `1.2.3.4.5` is not an IPv4 address; a bare nine-digit number is an SSN only
//! with "SSN" written near it).

use std::ops::Range;

/// The digits of `text`, in order.
fn digits(text: &[u8]) -> impl Iterator<Item = u8> + '_ {
    text.iter().filter(|b| b.is_ascii_digit()).map(|b| b - b'0')
}

/// The digits of a candidate (values 0-9), on the stack: validators run for every candidate
/// of every value of every row, and no detector's number has more than `MAX_DIGITS`.
struct Digits {
    d: [u8; Digits::MAX_DIGITS],
    n: usize,
}

impl Digits {
    const MAX_DIGITS: usize = 40;

    /// `None` when `text` holds more digits than any detector's number.
    fn of(text: &[u8]) -> Option<Digits> {
        let mut d = [0u8; Digits::MAX_DIGITS];
        let mut n = 0;
        for x in digits(text) {
            *d.get_mut(n)? = x;
            n += 1;
        }
        Some(Digits { d, n })
    }

    fn get(&self) -> &[u8] {
        &self.d[..self.n]
    }
}

/// The Luhn (mod 10) check of a digit string.
pub fn luhn(d: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &x) in d.iter().rev().enumerate() {
        let mut v = x as u32;
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// Whether a digit string is in an issuer range with that length: Visa (`4`, 13/16/19),
/// Mastercard (51-55 and 2221-2720, 16), Amex (34/37, 15), Diners (300-305, 3095, 36, 38-39,
/// 14-19), JCB (the whole `35` block, 16-19: its assigned range is 3528-3589, but generators
/// and test data use all of `35`; and the legacy 15-digit `2131` and `1800`), Mir (2200-2204,
/// 16-19), Maestro (50 and 56-69, 12-19), which covers Discover (6011, 644-649, 65) and
/// UnionPay (62) whatever their own lengths.
pub fn card_issuer(d: &[u8]) -> bool {
    let len = d.len();
    let prefix = |n: usize| d.iter().take(n).fold(0u32, |acc, &x| acc * 10 + x as u32);
    let (p1, p2, p3, p4) = (prefix(1), prefix(2), prefix(3), prefix(4));
    match p1 {
        4 => matches!(len, 13 | 16 | 19),
        5 => match p2 {
            51..=55 => len == 16,
            50 | 56..=59 => (12..=19).contains(&len),
            _ => false,
        },
        1 => p4 == 1800 && len == 15,
        2 => {
            ((2221..=2720).contains(&p4) && len == 16)
                || ((2200..=2204).contains(&p4) && (16..=19).contains(&len))
                || (p4 == 2131 && len == 15)
        }
        3 => {
            ((p2 == 34 || p2 == 37) && len == 15)
                || (p2 == 35 && (16..=19).contains(&len))
                || (((300..=305).contains(&p3) || p4 == 3095 || p2 == 36 || p2 == 38 || p2 == 39)
                    && (14..=19).contains(&len))
        }
        // Maestro's 60-69.
        6 => (12..=19).contains(&len),
        _ => false,
    }
}

/// How many digits a card number has.
const CARD_LENGTHS: std::ops::RangeInclusive<usize> = 12..=19;

/// A card number: 12-19 digits with any of ` .-` between them, Luhn-valid, in an issuer
/// range, in a layout people write (see `plausible_card_grouping`). A match that ran into a
/// following group (`4111 1111 1111 1111 2024`) is cut back at a space.
///
/// Not a card: digits that are one part of a longer identifier (`INV-500000000009`, the last
/// group of a UUID, `+62 812 …`, a decimal `6234567890123.45`); a 12-digit number that is also
/// a valid Aadhaar number, unless the words before name a card; and a run of digits of any
/// length but 16 written in one piece right after another identifier's name
/// (`EAN 4006381333931`, `tracking 501234567899`).
pub fn card(hay: &[u8], m: Range<usize>) -> Option<Range<usize>> {
    if glued_to_number(hay, &(m.start..m.start), false) || glued_to_identifier(hay, m.start) {
        return None;
    }
    let text = &hay[m.clone()];
    let digits = Digits::of(text)?;
    let all = digits.get();
    let ok = |d: &[u8], text: &[u8]| {
        CARD_LENGTHS.contains(&d.len())
            && !dotted_quad(text)
            && luhn(d)
            && card_issuer(d)
            && plausible_card_grouping(text)
            && !named_otherwise(hay, m.start, d, text)
    };
    if ok(all, text) {
        return (!continues_identifier(hay, m.end)).then_some(m);
    }
    // "4111 1111 1111 1111 2024" is a card and a year: one group of four digits after a
    // space is cut off. Nothing else is: the first 12 digits of "5016 4764 9273 869" are no
    // card of their own.
    let cut = text.len().checked_sub(5)?;
    let year = &text[cut + 1..];
    if text[cut] == b' ' && year.iter().all(u8::is_ascii_digit) && all.len() - 4 >= 13 {
        let kept = &all[..all.len() - 4];
        if ok(kept, &text[..cut]) {
            return Some(m.start..m.start + cut);
        }
    }
    None
}

/// Card numbers are written in one piece, in groups of four (the last one shorter: 4-4-4-1 to
/// 4-4-4-4-3), or in groups of three to six digits (Amex 4-6-5, Diners 4-6-4, 4-4-5): a run
/// with a separator after every digit, groups of one or two, or a long run and a short one
/// (`473109678994.0539`, a decimal) is something else.
fn plausible_card_grouping(text: &[u8]) -> bool {
    let groups = || {
        text.split(|b| !b.is_ascii_digit())
            .filter(|g| !g.is_empty())
    };
    let n = groups().count();
    n == 1
        || groups().all(|g| (3..=6).contains(&g.len()))
        || groups()
            .enumerate()
            .all(|(i, g)| g.len() == 4 || (i + 1 == n && !g.is_empty() && g.len() < 4))
}

/// Whether a card-like number is, by its context, something else: a 12-digit valid Aadhaar
/// number with no card word before it, or a one-piece run of other than 16 digits right after
/// another identifier's name.
fn named_otherwise(hay: &[u8], at: usize, d: &[u8], text: &[u8]) -> bool {
    let nearest = nearest_name(hay, at, CARD_WORDS, NOT_CARD_WORDS);
    if nearest == Some(true) {
        return false;
    }
    if d.len() == 12 && d[0] >= 2 && verhoeff(d) {
        return true;
    }
    nearest == Some(false) && d.len() != 16 && text.iter().all(u8::is_ascii_digit)
}

/// Words that name a card (`card`, `cc_number`, `pan`, `maestro`, …).
const CARD_WORDS: &[&[u8]] = &[
    b"card",
    b"cc",
    b"pan",
    b"visa",
    b"mastercard",
    b"maestro",
    b"amex",
    b"diners",
    b"discover",
    b"jcb",
    b"unionpay",
    b"mir",
    b"debit",
    b"credit",
    b"payment",
    b"paid",
    b"charge",
    b"charged",
];

/// Names of identifiers whose values are long runs of digits.
const NOT_CARD_WORDS: &[&[u8]] = &[
    b"order",
    b"invoice",
    b"inv",
    b"tracking",
    b"track",
    b"shipment",
    b"awb",
    b"parcel",
    b"ref",
    b"reference",
    b"id",
    b"uid",
    b"aadhaar",
    b"account",
    b"acct",
    b"isbn",
    b"ean",
    b"gtin",
    b"upc",
    b"sku",
    b"barcode",
    b"ts",
    b"time",
    b"timestamp",
    b"epoch",
    b"serial",
];

/// Of the words just before `at` (up to three, with no other value in between: a word with a
/// digit in it, `SO067011ST`, is one), whether the nearest one that is in `yes` or `no` is in
/// `yes` (`Some(true)`) or `no`.
fn nearest_name(hay: &[u8], at: usize, yes: &[&[u8]], no: &[&[u8]]) -> Option<bool> {
    for w in preceding_words(hay, at, 3) {
        if w.iter().any(u8::is_ascii_digit) {
            return None;
        }
        if names_any(w, yes) {
            return Some(true);
        }
        if names_any(w, no) {
            return Some(false);
        }
    }
    None
}

/// Whether the digits starting at `at` continue an identifier written with letters or a sign:
/// `INV-`, `a45f-` (a UUID's last group), `orders/`, `+` (a phone number's country code).
fn glued_to_identifier(hay: &[u8], at: usize) -> bool {
    let before = at.checked_sub(1).map(|i| hay[i]);
    let before2 = at.checked_sub(2).map(|i| hay[i]);
    before == Some(b'+')
        || (matches!(before, Some(b'-' | b'_' | b'/'))
            && before2.is_some_and(|b| b.is_ascii_alphanumeric()))
}

/// Whether what follows `end` continues the number as a decimal or an identifier
/// (`….45`, `…-0000`, `…-ab12`).
fn continues_identifier(hay: &[u8], end: usize) -> bool {
    matches!(hay.get(end), Some(b'-' | b'.' | b'_' | b'/'))
        && hay.get(end + 1).is_some_and(|b| b.is_ascii_alphanumeric())
}

/// A US Social Security number, formatted `123-45-6789` (or with spaces or dots, the same
/// separator twice). Invalid per the SSA and Presidio's rules: area 000, 666 or 900-999, group
/// 00, serial 0000, one digit repeated, and the numbers known from advertising.
pub fn ssn(hay: &[u8], m: Range<usize>) -> Option<Range<usize>> {
    let text = &hay[m.clone()];
    let mut seps = text.iter().filter(|b| !b.is_ascii_digit());
    let (first, second) = (seps.next(), seps.next());
    if first.is_some() && second.is_some() && first != second {
        return None;
    }
    if glued_to_number(hay, &m, false) {
        return None;
    }
    if first.is_none()
        && (!near_keyword(hay, m.start, &[b"ssn", b"social", b"soc sec", b"ss#"])
            || m.start.checked_sub(1).is_some_and(|i| hay[i] == b'#')
            || nearest_name(hay, m.start, &[b"ssn", b"social"], NOT_SSN_WORDS) == Some(false))
    {
        // A bare nine-digit number is an SSN only when the text says so, and not when it is
        // numbered (`#558271600`) or named as something else (`order=558271600`).
        return None;
    }
    ssn_digits(Digits::of(text)?.get()).then_some(m)
}

/// Names of identifiers that are bare nine-digit numbers too.
const NOT_SSN_WORDS: &[&[u8]] = &[
    b"order",
    b"invoice",
    b"inv",
    b"ref",
    b"reference",
    b"id",
    b"tracking",
    b"account",
    b"acct",
    b"ts",
    b"isbn",
    b"routing",
    b"zip",
];

fn ssn_digits(d: &[u8]) -> bool {
    if d.len() != 9 || d.iter().all(|&x| x == d[0]) {
        return false;
    }
    let n = |r: Range<usize>| d[r].iter().fold(0u32, |a, &x| a * 10 + x as u32);
    let (area, group, serial) = (n(0..3), n(3..5), n(5..9));
    // Numbers published as samples (Woolworth's wallet card, the SSA's ads, 123-45-6789).
    let known = [78051120u32, 219099999, 123456789];
    let whole = n(0..9);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 && !known.contains(&whole)
}

/// Whether one of `words` (lower case) appears in the 40 bytes before `at`.
fn near_keyword(hay: &[u8], at: usize, words: &[&[u8]]) -> bool {
    let window = &hay[at.saturating_sub(40)..at];
    words
        .iter()
        .any(|w| window.windows(w.len()).any(|x| x.eq_ignore_ascii_case(w)))
}

/// Whether the digits at `m` are one group of a longer number: a digit and a separator
/// (` `, `.`, `-`) just before them, or a separator and a digit just after (with `space_after`
/// false, a space and a digit after are allowed: "201-555-0123 2024").
fn glued_to_number(hay: &[u8], m: &Range<usize>, space_after: bool) -> bool {
    let sep = |b: u8| matches!(b, b' ' | b'.' | b'-');
    let before = m.start >= 2 && sep(hay[m.start - 1]) && hay[m.start - 2].is_ascii_digit();
    let after = match (hay.get(m.end), hay.get(m.end + 1)) {
        (Some(&s), Some(d)) => {
            d.is_ascii_digit() && (s == b'.' || s == b'-' || (space_after && s == b' '))
        }
        _ => false,
    };
    before || after
}

/// IBAN lengths by country (ISO 13616 registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BI", 27),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DJ", 27),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FK", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MN", 20),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NI", 28),
    (b"NL", 18),
    (b"NO", 15),
    (b"OM", 23),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"RU", 33),
    (b"SA", 24),
    (b"SC", 31),
    (b"SD", 18),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"SO", 23),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
    (b"YE", 30),
];

/// An IBAN, compact or in groups of four: the country's length, mod-97 and the country's BBAN
/// format (iban_validate). A match that ran into the next word is cut back to the length.
pub fn iban(hay: &[u8], m: Range<usize>) -> Option<Range<usize>> {
    let text = &hay[m.clone()];
    let country: [u8; 2] = [text[0], text[1]];
    let want = IBAN_LENGTHS.iter().find(|(c, _)| **c == country)?.1;
    let mut compact = String::with_capacity(want);
    let mut end = None;
    for (i, &b) in text.iter().enumerate() {
        if b == b' ' {
            continue;
        }
        compact.push(b as char);
        if compact.len() == want {
            end = Some(i + 1);
            break;
        }
    }
    let end = end?;
    // Ends at a word boundary: not in the middle of a group.
    if text.get(end).is_some_and(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    compact.parse::<iban::Iban>().ok()?;
    Some(m.start..m.start + end)
}

/// A Brazilian CPF (`123.456.789-09` or 11 digits): both mod-11 check digits.
pub fn cpf(hay: &[u8], m: Range<usize>) -> Option<Range<usize>> {
    let digits = Digits::of(&hay[m.clone()])?;
    let d = digits.get();
    if d.len() != 11 || d.iter().all(|&x| x == d[0]) {
        return None;
    }
    let check = |n: usize| {
        let sum: u32 = (0..n)
            .map(|i| d[i] as u32 * (n as u32 + 1 - i as u32))
            .sum();
        ((sum * 10 % 11) % 10) as u8
    };
    (check(9) == d[9] && check(10) == d[10]).then_some(m)
}

/// A Spanish DNI (8 digits and a letter) or NIE (X, Y or Z, 7 digits, a letter): the control
/// letter is the number mod 23 looked up in `TRWAGMYFPDXBNJZSQVHLCKE`.
pub fn dni(hay: &[u8], m: Range<usize>) -> Option<Range<usize>> {
    const LETTERS: &[u8; 23] = b"TRWAGMYFPDXBNJZSQVHLCKE";
    let text = &hay[m.clone()];
    let letter = text.last()?.to_ascii_uppercase();
    let first = text[0].to_ascii_uppercase();
    let lead = match first {
        b'X' => Some(0),
        b'Y' => Some(1),
        b'Z' => Some(2),
        _ => None,
    };
    let mut n: u64 = lead.unwrap_or(0);
    for x in digits(text) {
        n = n * 10 + x as u64;
    }
    (LETTERS[(n % 23) as usize] == letter).then_some(m)
}

/// A UK National Insurance number: two letters (not D, F, I, Q, U or V; the second not O; not
/// the prefixes BG, GB, KN, NK, NT, TN or ZZ), six digits, a suffix A-D. NINOs have no check
/// digit, so the prefix rules are all there is.
pub fn nino(hay: &[u8], m: Range<usize>) -> Option<Range<usize>> {
    let text = &hay[m.clone()];
    let prefix = [text[0], text[1]];
    let bad: [&[u8; 2]; 7] = [b"BG", b"GB", b"KN", b"NK", b"NT", b"TN", b"ZZ"];
    (!bad.iter().any(|b| **b == prefix)).then_some(m)
}

/// An Indian Aadhaar number (12 digits, first 2-9, not a palindrome): the Verhoeff check digit.
pub fn aadhaar(hay: &[u8], m: Range<usize>) -> Option<Range<usize>> {
    if glued_to_number(hay, &m, true)
        || glued_to_identifier(hay, m.start)
        || continues_identifier(hay, m.end)
    {
        return None;
    }
    // `upc=250714611256`, `tracking 7245 7889 8498`: another identifier's 12 digits.
    if nearest_name(
        hay,
        m.start,
        &[b"aadhaar", b"uid", b"uidai"],
        NOT_AADHAAR_WORDS,
    ) == Some(false)
    {
        return None;
    }
    let digits = Digits::of(&hay[m.clone()])?;
    let d = digits.get();
    if d.len() != 12 || d.iter().eq(d.iter().rev()) {
        return None;
    }
    verhoeff(d).then_some(m)
}

/// Names of identifiers that are 12-digit numbers too.
const NOT_AADHAAR_WORDS: &[&[u8]] = &[
    b"order",
    b"invoice",
    b"inv",
    b"tracking",
    b"track",
    b"shipment",
    b"awb",
    b"parcel",
    b"ref",
    b"reference",
    b"account",
    b"acct",
    b"isbn",
    b"ean",
    b"gtin",
    b"upc",
    b"sku",
    b"barcode",
    b"ts",
    b"timestamp",
    b"card",
    b"pan",
    b"phone",
    b"tel",
    b"mobile",
];

/// The Verhoeff check (dihedral group D5) of a digit string ending in its check digit.
pub fn verhoeff(d: &[u8]) -> bool {
    const MUL: [[u8; 10]; 10] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ];
    const PERM: [[u8; 10]; 8] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ];
    let mut c = 0u8;
    for (i, &x) in d.iter().rev().enumerate() {
        c = MUL[c as usize][PERM[i % 8][x as usize] as usize];
    }
    c == 0
}

/// An IPv4 address, not part of a longer dotted run (a version number, an OID).
pub fn ipv4(hay: &[u8], m: Range<usize>) -> Option<Range<usize>> {
    let before = m.start.checked_sub(1).map(|i| hay[i]);
    let after = hay.get(m.end).copied();
    let after2 = hay.get(m.end + 1).copied();
    if before == Some(b'.') || (after == Some(b'.') && after2.is_some_and(|b| b.is_ascii_digit())) {
        return None;
    }
    let text = std::str::from_utf8(&hay[m.clone()]).ok()?;
    text.parse::<std::net::Ipv4Addr>().ok()?;
    Some(m)
}

/// An IPv6 address (with `::` or all eight groups; an IPv4 tail allowed), not glued to more
/// hex digits or colons. Times (`10:23:45`) and MAC addresses fail the parse.
pub fn ipv6(hay: &[u8], m: Range<usize>) -> Option<Range<usize>> {
    let hexish = |b: u8| b.is_ascii_hexdigit() || b == b':';
    if m.start > 0 && (hexish(hay[m.start - 1]) || hay[m.start - 1].is_ascii_alphanumeric()) {
        return None;
    }
    if hay
        .get(m.end)
        .is_some_and(|&b| hexish(b) || b.is_ascii_alphanumeric())
    {
        return None;
    }
    let text = std::str::from_utf8(&hay[m.clone()]).ok()?;
    let addr = text.split('%').next()?;
    if addr == "::"
        || (!addr.contains("::") && addr.matches(':').count() != 7 && !addr.contains('.'))
    {
        return None;
    }
    addr.parse::<std::net::Ipv6Addr>().ok()?;
    Some(m)
}

/// A phone number that libphonenumber calls valid: with a `+` country code, or national in
/// one of the configured regions. Dates and times written with digits are not phone numbers.
pub fn phone(
    hay: &[u8],
    m: Range<usize>,
    rules: &crate::phone::PhoneRules,
) -> Option<Range<usize>> {
    // An extension is masked with the number but is no part of what is validated.
    let number_end = hay[m.clone()]
        .iter()
        .position(|&b| b.is_ascii_alphabetic() || b == b'#')
        .map_or(m.end, |i| m.start + i);
    let text = hay[m.start..number_end].trim_ascii_end();
    let n = text.iter().filter(|b| b.is_ascii_digit()).count();
    if !(7..=15).contains(&n) || looks_like_date(text) {
        return None;
    }
    // Glued to a longer number or a decimal: part of something else.
    let before = m.start.checked_sub(1).map(|i| hay[i]);
    if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/' || b == b'-') {
        return None;
    }
    if hay
        .get(m.end)
        .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'/')
    {
        return None;
    }
    if text[0].is_ascii_digit() && glued_to_number(hay, &(m.start..m.start), false) {
        return None;
    }
    // `(3034 881682 0432)`, `((201) 555-0123)`: an opening parenthesis that is not an area
    // code's belongs to the text around; the number, if any, starts after it.
    if text.starts_with(b"((")
        || (text.starts_with(b"(") && !text[1..].iter().take(6).any(|&b| b == b')'))
    {
        return None;
    }
    // `6-399-87568-4`: an ISBN-10; no phone number ends in a group of one digit.
    let last_group = text
        .rsplit(|b| !b.is_ascii_digit())
        .next()
        .unwrap_or_default();
    if dotted_quad(text) || cpf_shape(text) || (last_group.len() == 1 && text.len() > 1) {
        return None;
    }
    let plus = text.starts_with(b"+");
    // `+12.34567890`: a signed decimal, not a number written with one dot.
    if plus
        && text.iter().filter(|&&b| b == b'.').count() == 1
        && !text.iter().any(|b| matches!(b, b' ' | b'-' | b'(' | b')'))
    {
        return None;
    }
    // A national number has some shape: a parenthesised area code or separators. A bare run
    // of digits is one when it starts with a trunk 0 (no integer does), or when the words just
    // before say so ("phone", "call me at", …). Whatever its shape, a national number right
    // after another identifier's name ("cpf=", "ts:", "version", "total") is not one: the
    // nearest such word decides.
    if !plus {
        let mut nearest = None;
        for (i, w) in preceding_words(hay, m.start, 4).enumerate() {
            if w.iter().all(u8::is_ascii_digit) {
                // Another value in between: the words before it are its context.
                break;
            }
            if i < 3 && names_any(w, NOT_PHONE_WORDS) {
                nearest = Some(false);
                break;
            }
            if starts_with_any(w, PHONE_WORDS) {
                nearest = Some(true);
                break;
            }
        }
        if nearest == Some(false) {
            return None;
        }
        let mut seps = text.iter().filter(|b| matches!(b, b' ' | b'-' | b'.'));
        let (first, second) = (seps.next(), seps.next());
        // `31055.12`: a decimal, not a number written with one dot.
        if first == Some(&b'.') && second.is_none() {
            return None;
        }
        let shaped = text.starts_with(b"(") || first.is_some();
        if !shaped && !text.starts_with(b"0") && nearest != Some(true) {
            return None;
        }
    }
    // `+49 (0)30 …`: the trunk zero in parentheses is not dialled from abroad.
    let mut digits = [0u8; 15];
    let mut k = 0;
    let mut i = 0;
    while i < text.len() {
        if plus && text[i..].starts_with(b"(0)") {
            i += 3;
            continue;
        }
        if text[i].is_ascii_digit() {
            *digits.get_mut(k)? = text[i];
            k += 1;
        }
        i += 1;
    }
    let digits = std::str::from_utf8(&digits[..k]).ok()?;
    rules.valid(digits, plus).then_some(m)
}

/// Words that make a bare run of digits a phone number when one of the four words before it
/// (with no other number in between) starts with them (`callback=`, `"phone_number":`, "reach Jane Doe at").
const PHONE_WORDS: &[&[u8]] = &[
    b"phone",
    b"tel",
    b"mobile",
    b"cell",
    b"call",
    b"fax",
    b"sms",
    b"whatsapp",
    b"contact",
    b"reach",
    b"dial",
];

/// Names of other identifiers: a national number within three words after one of them (with
/// no other number in between) is not a phone number.
const NOT_PHONE_WORDS: &[&[u8]] = &[
    b"cpf",
    b"ssn",
    b"social",
    b"aadhaar",
    b"uid",
    b"ts",
    b"time",
    b"timestamp",
    b"id",
    b"order",
    b"ref",
    b"reference",
    b"tracking",
    b"invoice",
    b"acct",
    b"account",
    b"iban",
    b"card",
    b"version",
    b"isbn",
    b"total",
    b"amount",
    b"price",
];

/// Up to `n` ASCII words (letters, digits, `_`) before `at`, nearest first, within 48 bytes.
fn preceding_words(hay: &[u8], at: usize, n: usize) -> impl Iterator<Item = &[u8]> {
    let floor = at.saturating_sub(48);
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = at;
    std::iter::from_fn(move || {
        while i > floor && !word(hay[i - 1]) {
            i -= 1;
        }
        let end = i;
        while i > floor && word(hay[i - 1]) {
            i -= 1;
        }
        (i < end).then(|| &hay[i..end])
    })
    .take(n)
}

/// Whether `word` starts with one of `prefixes` (lower case), in any case.
fn starts_with_any(word: &[u8], prefixes: &[&[u8]]) -> bool {
    prefixes.iter().any(|p| {
        word.get(..p.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(p))
    })
}

/// Whether `word` is one of `names` (lower case), in any case, in the plural or as the start
/// of a snake_case name (`order`, `orders`, `order_id`; not `ordered`, and `cardoso` is no
/// `card`).
fn names_any(word: &[u8], names: &[&[u8]]) -> bool {
    names.iter().any(|n| {
        word.get(..n.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(n))
            && {
                let rest = &word[n.len()..];
                rest.is_empty() || rest.eq_ignore_ascii_case(b"s") || rest.starts_with(b"_")
            }
    })
}

/// Four dot-separated groups of 1-3 digits: an IPv4 address, valid or not, or a version.
fn dotted_quad(text: &[u8]) -> bool {
    text.split(|&b| b == b'.').count() == 4
        && text
            .split(|&b| b == b'.')
            .all(|g| (1..=3).contains(&g.len()) && g.iter().all(u8::is_ascii_digit))
}

/// `123.456.789-09`: a Brazilian CPF's layout, checksum or not.
fn cpf_shape(text: &[u8]) -> bool {
    text.len() == 14
        && text.iter().enumerate().all(|(i, &b)| match i {
            3 | 7 => b == b'.',
            11 => b == b'-',
            _ => b.is_ascii_digit(),
        })
}

/// `2024-01-15`, `15/01/2024`, `2024.01.15`: a digit group of 4 beside groups of 1-2 digits
/// joined by `-`, `/` or `.`.
fn looks_like_date(text: &[u8]) -> bool {
    // Three consecutive groups at a time.
    let mut groups = text.split(|b| matches!(b, b'-' | b'/' | b'.'));
    let (Some(mut a), Some(mut b)) = (groups.next(), groups.next()) else {
        return false;
    };
    for c in groups {
        let (l0, l1, l2) = (a.len(), b.len(), c.len());
        if (l0 == 4 && l1 <= 2 && l2 >= 1 && c[..l2.min(2)].iter().all(u8::is_ascii_digit))
            || (l0 <= 2 && l1 <= 2 && l2 >= 4)
        {
            return true;
        }
        (a, b) = (b, c);
    }
    false
}

/// A secret in `key = value` form: mask the value, keep the key name (the match ends with it).
pub fn trailing_value(len: usize) -> impl Fn(&[u8], Range<usize>) -> Option<Range<usize>> {
    move |_hay, m| (m.len() >= len).then(|| m.end - len..m.end)
}

/// A bearer token: mask what follows `Bearer `.
pub fn after_space(hay: &[u8], m: Range<usize>) -> Option<Range<usize>> {
    let sp = hay[m.clone()]
        .iter()
        .position(|&b| b == b' ' || b == b'\t')?;
    let start = m.start + sp + 1;
    let start = start + hay[start..m.end].iter().take_while(|&&b| b == b' ').count();
    (start < m.end).then_some(start..m.end)
}

/// An email address: the local part does not start or end with a dot, nor hold two in a row.
pub fn email(hay: &[u8], m: Range<usize>) -> Option<Range<usize>> {
    let text = &hay[m.clone()];
    let at = text.iter().position(|&b| b == b'@')?;
    let local = &text[..at];
    // Leading dots belong to the sentence, not the address.
    let skip = local.iter().take_while(|&&b| b == b'.').count();
    let local = &local[skip..];
    if local.is_empty() || local.ends_with(b".") || local.windows(2).any(|w| w == b"..") {
        return None;
    }
    Some(m.start + skip..m.end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(f: fn(&[u8], Range<usize>) -> Option<Range<usize>>, s: &str) -> bool {
        f(s.as_bytes(), 0..s.len()) == Some(0..s.len())
    }

    #[test]
    fn luhn_vectors() {
        let d = |s: &str| s.bytes().map(|b| b - b'0').collect::<Vec<_>>();
        assert!(luhn(&d("4111111111111111")));
        assert!(luhn(&d("79927398713")));
        assert!(!luhn(&d("4111111111111112")));
        assert!(!luhn(&d("79927398710")));
    }

    #[test]
    fn cards() {
        for ok in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5555555555554444",
            "2223003122003222",
            "378282246310005",
            "3782 822463 10005",
            "6011111111111117",
            "3530111333300000",
            "30569309025904",
            "6200000000000005",
            "4222222222222",
            "3503082462819487", // JCB as generators make them (the `35` block)
            "213100000000001",  // legacy 15-digit JCB
            "180000000000002",
        ] {
            assert!(whole(card, ok), "{ok} is a card");
        }
        for bad in [
            "4111111111111112",                // Luhn
            "1234567812345670",                // Luhn-valid, no issuer
            "9111111111111111",                // no issuer
            "180000000000000018",              // 1800 is a 15-digit JCB only
            "5105 1051 0510 5106",             // Luhn
            "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", // not a card's grouping
        ] {
            assert!(
                card(bad.as_bytes(), 0..bad.len()).is_none(),
                "{bad} is not a card"
            );
        }
        let s = b"4111 1111 1111 1111 2024";
        assert_eq!(card(s, 0..s.len()), Some(0..19));
    }

    #[test]
    fn card_groupings() {
        for ok in [
            "4111111111111",
            "4111 1111 1111 1",
            "4111 1111 1111 11",
            "4111-1111-1111-111",
            "4111 1111 1111 1111",
            "4111 1111 1111 1111 1",
            "4111 1111 1111 1111 111",
            "3782 822463 10005",
            "3056 930902 5904",
            "4222 2222 22222",
        ] {
            assert!(plausible_card_grouping(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "4 1 1 1 1 1 1 1 1 1 1 1 1",
            "41 11 11 11 11 11 11 1",
            "4111 1 1111 1111 111",
            "4111 11 1111 1111 11",
            "411 1111 1111 1111 1",
        ] {
            assert!(!plausible_card_grouping(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn ssns() {
        for ok in ["536-90-4399", "536 90 4399", "078-05-1121"] {
            assert!(whole(ssn, ok), "{ok} is an SSN");
        }
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "912-12-3456",
            "536-00-4399",
            "536-90-0000",
            "111-11-1111",
            "078-05-1120",
            "123-45-6789",
            "536-90 4399",
            "536904399", // bare, no context
        ] {
            assert!(!whole(ssn, bad), "{bad} is not an SSN");
        }
        let s = b"SSN: 536904399";
        assert_eq!(ssn(s, 5..14), Some(5..14));
    }

    #[test]
    fn ibans() {
        for ok in [
            "DE89370400440532013000",
            "DE89 3704 0044 0532 0130 00",
            "GB29NWBK60161331926819",
            "GB29 NWBK 6016 1331 9268 19",
            "FR1420041010050500013M02606",
            "NL91ABNA0417164300",
            "ES9121000418450200051332",
        ] {
            assert!(whole(iban, ok), "{ok} is an IBAN");
        }
        for bad in [
            "DE89370400440532013001", // mod 97
            "DE8937040044053201300",  // length
            "GB29NWBK6016133192681X", // mod 97
            "QQ89370400440532013000", // country
        ] {
            assert!(!whole(iban, bad), "{bad} is not an IBAN");
        }
        let s = b"DE89 3704 0044 0532 0130 00 BERLIN";
        assert_eq!(iban(s, 0..30), Some(0..27));
    }

    #[test]
    fn national_ids() {
        for ok in ["529.982.247-25", "52998224725"] {
            assert!(whole(cpf, ok), "{ok} is a CPF");
        }
        for bad in ["529.982.247-24", "111.111.111-11", "52998224726"] {
            assert!(!whole(cpf, bad), "{bad} is not a CPF");
        }
        for ok in ["12345678Z", "12345678-Z", "X1234567L", "Y1234567X"] {
            assert!(whole(dni, ok), "{ok} is a DNI/NIE");
        }
        for bad in ["12345678A", "X1234567A"] {
            assert!(!whole(dni, bad), "{bad} is not a DNI");
        }
        for ok in ["AB123456C", "AB 12 34 56 C"] {
            assert!(whole(nino, ok), "{ok} is a NINO");
        }
        for bad in ["GB123456A", "NK123456A"] {
            assert!(!whole(nino, bad), "{bad} is not a NINO");
        }
        for ok in ["234123412346", "2341 2341 2346"] {
            assert!(whole(aadhaar, ok), "{ok} is an Aadhaar number");
        }
        for bad in ["234123412347", "234123321432"] {
            assert!(!whole(aadhaar, bad), "{bad} is not an Aadhaar number");
        }
    }

    #[test]
    fn ips() {
        for ok in ["192.168.1.20", "8.8.8.8", "255.255.255.255"] {
            assert!(whole(ipv4, ok), "{ok}");
        }
        for bad in ["256.1.1.1", "01.2.3.4"] {
            assert!(!whole(ipv4, bad), "{bad}");
        }
        let s = b"v1.2.3.4.5";
        assert!(ipv4(s, 1..8).is_none(), "version numbers are not addresses");
        for ok in [
            "2001:db8::1",
            "fe80::1ff:fe23:4567:890a",
            "::ffff:192.0.2.1",
            "2001:0db8:0000:0000:0000:ff00:0042:8329",
        ] {
            assert!(whole(ipv6, ok), "{ok}");
        }
        for bad in ["10:23:45", "00:1A:2B:3C:4D:5E", "dead:beef", "::"] {
            assert!(!whole(ipv6, bad), "{bad}");
        }
    }

    #[test]
    fn phones() {
        let rules = crate::phone::PhoneRules::new(&["US".into(), "GB".into()]).expect("regions");
        let p = |s: &str| phone(s.as_bytes(), 0..s.len(), &rules) == Some(0..s.len());
        for ok in [
            "+1 201 555 0123",
            "(201) 555-0123",
            "201-555-0123",
            "+44 20 7946 0123",
            "020 7946 0123",
            "0161 496 0123",
            "+49 30 90182012",
            "+33 1 99 00 12 34",
            // Canada and Jamaica share +1 with the US; Guernsey shares +44 with GB.
            "(581) 316-4524",
            "(876) 694-9422",
            "01481 256789",
            // Bare digits: a trunk 0, or words that say so.
            "02079460123",
            // Extensions, masked with the number.
            "902-868-5995x2890",
            "+1-203-334-0187 ext. 12",
            "(201) 555-0123 #4",
        ] {
            assert!(p(ok), "{ok} is a phone number");
        }
        for bad in [
            "2024-01-15",
            "15/01/2024",
            "12345",
            "+1 000 000 0000",
            "1234567890",
            // GB numbers are written with their trunk 0: this is a Unix time.
            "1769426149",
            "172.20.55.156",
            "930.32.63.106",
            "171.274.846-61",
            "((201) 555-0123",
            "(201 555 0123",
            "(776) 901-8955x12", // no such area code, extension or not
        ] {
            assert!(!p(bad), "{bad} is not a phone number");
        }
        let in_text = |text: &str, number: &str| {
            let at = text.find(number).expect("number in text");
            phone(text.as_bytes(), at..at + number.len(), &rules).is_some()
        };
        assert!(in_text("reach Lee Bennett at 2015550123", "2015550123"));
        assert!(in_text(r#"{"mobile":"2015550123"}"#, "2015550123"));
        assert!(!in_text("order 2015550123 shipped", "2015550123"));
        assert!(!in_text("call me later, ts=2015550123", "2015550123"));
        assert!(!in_text("cpf=02079460123", "02079460123"));
        assert!(!in_text("cpf do titular: 02079460123", "02079460123"));
        assert!(!in_text(r#""version":"20.13.17.18.16""#, "20.13.17.18.16"));
        assert!(!in_text("USD 31055.12", "31055.12"));
        assert!(!in_text("card_no=02079460123", "02079460123"));
        assert!(in_text(
            "reach Ana Cardoso at (020)74960886",
            "(020)74960886"
        ));
        assert!(in_text("ref 4455 6936 (020) 7946 0123", "(020) 7946 0123"));
        assert!(in_text(
            "My SSN is 630-25-2649. see 0121 4960589",
            "0121 4960589"
        ));
        // One group of a longer number.
        assert!(!in_text("ref 4455 201-555-0123", "201-555-0123"));
    }

    #[test]
    fn digits_glued_to_a_longer_number_are_not_ids() {
        let a = |text: &str, id: &str| {
            let at = text.find(id).expect("id in text");
            aadhaar(text.as_bytes(), at..at + id.len()).is_some()
        };
        assert!(a("uid 2341 2341 2346 ok", "2341 2341 2346"));
        assert!(!a("ref 2341-2341-2346-9719", "2341-2341-2346"));
        assert!(!a("ref 3542 2341 2341 2346", "2341 2341 2346"));
        let s = |text: &str, id: &str| {
            let at = text.find(id).expect("ssn in text");
            ssn(text.as_bytes(), at..at + id.len()).is_some()
        };
        assert!(s("ssn 536-90-4399.", "536-90-4399"));
        assert!(s("social_security=536904399", "536904399"));
        assert!(!s("part 12-536-90-4399", "536-90-4399"));
    }

    #[test]
    fn verhoeff_vectors() {
        assert!(verhoeff(&[2, 3, 6, 3]));
        assert!(!verhoeff(&[2, 3, 6, 4]));
    }
}
