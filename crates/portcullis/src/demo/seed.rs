//! Sample data for `portcullis demo`: a `customers` table full of personal data worth masking
//! (names, emails, phone numbers, card numbers, IBANs, national IDs) and an `orders` table.
//!
//! Everything is fake but shaped like the real thing, so that detectors and maskers have
//! something realistic to chew on: card numbers pass the Luhn check, IBANs carry valid mod-97
//! check digits (and valid national check digits where the country has them), national IDs obey
//! their issuing rules. Emails use the reserved `example.*` domains and phone numbers come from
//! ranges set aside for fiction.
//!
//! The output is a pure function of its arguments: the same seed gives the same SQL, byte for
//! byte. Only `std` is used.

/// The `[masking]` section `portcullis demo` writes for this data (the masking tests use the
/// same one): partial cards and emails, and the columns no detector can recognise masked by
/// rule.
pub const DEMO_MASKING: &str = r#"[masking]
default_profile = "analyst"

[masking.profiles.analyst]
strategy = "redact"
entities = { CREDIT_CARD = "partial", EMAIL = "partial" }
columns = { "customers.full_name" = "redact", "customers.phone" = "last4", "customers.national_id" = "redact" }
"#;

use std::fmt::Write as _;

/// Rows per multi-row `INSERT`.
const BATCH: usize = 500;

/// `created_at` values fall in 2024-01-01 00:00:00 ..= 2025-12-31 23:59:59 UTC.
const DATA_DAYS: u64 = 366 + 365;
const DATA_SECONDS: u64 = DATA_DAYS * 86_400;

/// SQL that creates and fills `customers` and `orders`. Deterministic for a given seed.
///
/// Drops both tables first, runs in one transaction, inserts in batches of 500 rows with
/// explicit ids and moves the `customers` id sequence past them. Orders reference random
/// existing customers, so with `customers == 0` no orders are generated.
pub fn seed_sql(customers: usize, orders: usize, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let orders = if customers == 0 { 0 } else { orders };
    let mut sql = String::with_capacity(1024 + customers * 280 + orders * 90);
    let _ = writeln!(
        sql,
        "-- portcullis demo data: {customers} customers, {orders} orders, seed {seed}.\n\
         -- All people, numbers and accounts are fictional."
    );
    sql.push_str(SCHEMA);

    let mut signup_times = Vec::with_capacity(customers);
    for start in (0..customers).step_by(BATCH) {
        let end = (start + BATCH).min(customers);
        sql.push_str(
            "INSERT INTO customers (id, full_name, email, phone, card_number, iban, \
             national_id, national_id_kind, city, created_at) VALUES\n",
        );
        for index in start..end {
            let c = Customer::generate(index as u64 + 1, &mut rng);
            signup_times.push(c.created_at);
            let (national_id, kind) = match &c.national_id {
                Some((value, kind)) => (Some(value.as_str()), Some(*kind)),
                None => (None, None),
            };
            let _ = write!(
                sql,
                "({}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
                c.id,
                literal(&c.full_name),
                literal(&c.email),
                nullable(c.phone.as_deref()),
                nullable(c.card_number.as_deref()),
                nullable(c.iban.as_deref()),
                nullable(national_id),
                nullable(kind),
                literal(c.city),
                literal(&timestamp(c.created_at)),
            );
            sql.push_str(if index + 1 == end { ";\n" } else { ",\n" });
        }
    }
    if customers > 0 {
        let _ = writeln!(
            sql,
            "ALTER SEQUENCE customers_id_seq RESTART WITH {};",
            customers + 1
        );
    }

    for start in (0..orders).step_by(BATCH) {
        let end = (start + BATCH).min(orders);
        sql.push_str("INSERT INTO orders (id, customer_id, amount, status, created_at) VALUES\n");
        for index in start..end {
            let o = Order::generate(index as u64 + 1, &signup_times, &mut rng);
            let _ = write!(
                sql,
                "({}, {}, {}, {}, {})",
                o.id,
                o.customer_id,
                money(o.amount_cents),
                literal(o.status),
                literal(&timestamp(o.created_at)),
            );
            sql.push_str(if index + 1 == end { ";\n" } else { ",\n" });
        }
    }
    if orders > 0 {
        let _ = writeln!(
            sql,
            "ALTER SEQUENCE orders_id_seq RESTART WITH {};",
            orders + 1
        );
    }
    sql.push_str("COMMIT;\n");
    sql
}

const SCHEMA: &str = "\
BEGIN;
DROP TABLE IF EXISTS orders, customers;
CREATE TABLE customers (
    id serial PRIMARY KEY,
    full_name text NOT NULL,
    email text NOT NULL,
    phone text,
    card_number text,
    iban text,
    national_id text,
    national_id_kind text,
    city text,
    created_at timestamptz
);
CREATE TABLE orders (
    id serial PRIMARY KEY,
    customer_id int REFERENCES customers(id),
    amount numeric(10,2),
    status text,
    created_at timestamptz
);
";

// ---------------------------------------------------------------------------------------------
// SQL rendering
// ---------------------------------------------------------------------------------------------

/// A standard SQL string literal: single quotes doubled. (Backslashes are ordinary characters
/// with `standard_conforming_strings = on`, the default since PostgreSQL 9.1; the generated
/// data contains none anyway.)
pub(super) fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for ch in text.chars() {
        if ch == '\'' {
            out.push('\'');
        }
        out.push(ch);
    }
    out.push('\'');
    out
}

fn nullable(text: Option<&str>) -> String {
    match text {
        Some(t) => literal(t),
        None => "NULL".to_string(),
    }
}

fn money(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// `YYYY-MM-DD HH:MM:SS+00` for `seconds` after 2024-01-01 00:00:00 UTC (within 2024–2025).
fn timestamp(seconds: u64) -> String {
    let mut days = seconds / 86_400;
    let rest = seconds % 86_400;
    let mut year = 2024;
    loop {
        let len = if is_leap(year) { 366 } else { 365 };
        if days < len {
            break;
        }
        days -= len;
        year += 1;
    }
    let mut month = 0;
    while days >= month_len(year, month) {
        days -= month_len(year, month);
        month += 1;
    }
    format!(
        "{year:04}-{:02}-{:02} {:02}:{:02}:{:02}+00",
        month + 1,
        days + 1,
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn month_len(year: u64, month0: u64) -> u64 {
    match month0 {
        1 if is_leap(year) => 29,
        1 => 28,
        3 | 5 | 8 | 10 => 30,
        _ => 31,
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic randomness
// ---------------------------------------------------------------------------------------------

/// SplitMix64: tiny, fast, good enough statistically, and identical on every platform.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed ^ 0x6A09_E667_F3BC_C909)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (multiply-shift; the bias is below 2^-40 for our small `n`).
    fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// In `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn weighted<T: Copy>(&mut self, items: &[(T, u64)]) -> T {
        let total: u64 = items.iter().map(|(_, w)| w).sum();
        let mut roll = self.below(total);
        for &(item, weight) in items {
            if roll < weight {
                return item;
            }
            roll -= weight;
        }
        items[items.len() - 1].0
    }

    /// `n` random decimal digits.
    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.below(10) as u8))
            .collect()
    }

    fn letter(&mut self, alphabet: &[u8]) -> char {
        char::from(self.pick(alphabet))
    }
}

// ---------------------------------------------------------------------------------------------
// Customers
// ---------------------------------------------------------------------------------------------

const FIRST_NAMES: &[&str] = &[
    "Aisha", "Mateo", "Sofia", "Wei", "Priya", "Olumide", "Yuki", "Liam", "Fatima", "Noah",
    "Chiara", "Ahmed", "Ingrid", "Kwame", "Mei", "Diego", "Amara", "Hiroshi", "Elena", "Tariq",
    "Nia", "Lars", "Camila", "Arjun", "Leila", "Jonas", "Zainab", "José", "Siobhan", "Anya",
    "Rafael", "Grace", "Dmitri", "Imani", "Luca", "Aroha", "Sanjay", "Freya", "Kofi", "Zoë",
    "Chloé", "Søren",
];

#[rustfmt::skip]
const LAST_NAMES: &[&str] = &[
    "Smith", "O'Brien", "Nguyen", "Okafor", "García", "Müller", "Rossi", "Kowalski", "Tanaka",
    "Haddad", "Johansson", "Kim", "Patel", "Dubois", "Fernández", "Ivanova", "Mensah", "Silva",
    "Cohen", "Andersen", "Papadopoulos", "Yılmaz", "Chen", "Santos", "Novak", "Wright",
    "Hernández", "Khan", "Murphy", "D'Souza", "Sato", "Bianchi", "Nowak", "Adeyemi", "Lindqvist",
    "Martins", "Schmidt", "Álvarez", "Hughes", "Mbeki", "Kaur", "MacDonald", "D'Angelo",
];

const EMAIL_DOMAINS: &[&str] = &["example.com", "example.org", "example.net"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Country {
    Us,
    Gb,
    De,
    Fr,
    Es,
    Nl,
    It,
    Br,
}

const COUNTRIES: &[(Country, u64)] = &[
    (Country::Us, 24),
    (Country::Gb, 15),
    (Country::Es, 12),
    (Country::Br, 12),
    (Country::De, 10),
    (Country::Fr, 10),
    (Country::Nl, 9),
    (Country::It, 8),
];

#[rustfmt::skip]
fn cities(country: Country) -> &'static [&'static str] {
    match country {
        Country::Us => &[
            "New York", "San Francisco", "Chicago", "Austin", "Seattle", "Boston", "Denver",
            "Atlanta",
        ],
        Country::Gb => &[
            "London", "Manchester", "Edinburgh", "Bristol", "Leeds", "Cardiff", "Belfast",
        ],
        Country::De => &["Berlin", "München", "Hamburg", "Köln", "Frankfurt am Main", "Leipzig"],
        Country::Fr => &["Paris", "Lyon", "Marseille", "Toulouse", "Bordeaux", "Lille"],
        Country::Es => &["Madrid", "Barcelona", "Valencia", "Sevilla", "Bilbao", "Málaga"],
        Country::Nl => &["Amsterdam", "Rotterdam", "Utrecht", "Den Haag", "Eindhoven"],
        Country::It => &["Roma", "Milano", "Napoli", "Torino", "Bologna", "Firenze"],
        Country::Br => &[
            "São Paulo", "Rio de Janeiro", "Belo Horizonte", "Curitiba", "Porto Alegre", "Recife",
        ],
    }
}

struct Customer {
    id: u64,
    full_name: String,
    email: String,
    phone: Option<String>,
    card_number: Option<String>,
    iban: Option<String>,
    national_id: Option<(String, &'static str)>,
    city: &'static str,
    /// Seconds after 2024-01-01 00:00:00 UTC.
    created_at: u64,
}

impl Customer {
    fn generate(id: u64, rng: &mut Rng) -> Customer {
        let country = rng.weighted(COUNTRIES);
        let first = rng.pick(FIRST_NAMES);
        let last = rng.pick(LAST_NAMES);
        let email = format!(
            "{}.{}{}@{}",
            email_part(first),
            email_part(last),
            id,
            rng.pick(EMAIL_DOMAINS)
        );
        let phone = (!rng.chance(8)).then(|| phone_number(country, rng));
        let card_number = (!rng.chance(7)).then(|| card_number(rng));
        let iban = match country {
            Country::Gb => Some(iban(IbanCountry::Gb, rng)),
            Country::De => Some(iban(IbanCountry::De, rng)),
            Country::Fr => Some(iban(IbanCountry::Fr, rng)),
            Country::Es => Some(iban(IbanCountry::Es, rng)),
            Country::Nl => Some(iban(IbanCountry::Nl, rng)),
            Country::It => Some(iban(IbanCountry::It, rng)),
            // Americans and Brazilians mostly have no IBAN; some hold a European account.
            Country::Us | Country::Br => rng.chance(20).then(|| {
                let c = rng.pick(&[IbanCountry::Gb, IbanCountry::De, IbanCountry::Nl]);
                iban(c, rng)
            }),
        };
        let national_id = match country {
            Country::Us => Some((us_ssn(rng), "us_ssn")),
            Country::Gb => Some((uk_nino(rng), "uk_nino")),
            Country::Es => Some((es_dni(rng), "es_dni")),
            Country::Br => Some((br_cpf(rng), "br_cpf")),
            Country::De | Country::Fr | Country::Nl | Country::It => None,
        };
        Customer {
            id,
            full_name: format!("{first} {last}"),
            email,
            phone,
            card_number,
            iban,
            national_id,
            city: rng.pick(cities(country)),
            created_at: rng.below(DATA_SECONDS),
        }
    }
}

/// Lower-case ASCII for an email local part: accents folded, apostrophes and spaces dropped.
fn email_part(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for ch in name.chars().flat_map(char::to_lowercase) {
        let folded = match ch {
            'a'..='z' | '0'..='9' => Some(ch),
            'á' | 'à' | 'â' | 'ä' | 'ã' | 'å' => Some('a'),
            'é' | 'è' | 'ê' | 'ë' => Some('e'),
            'í' | 'ì' | 'î' | 'ï' | 'ı' => Some('i'),
            'ó' | 'ò' | 'ô' | 'ö' | 'õ' | 'ø' => Some('o'),
            'ú' | 'ù' | 'û' | 'ü' => Some('u'),
            'ñ' => Some('n'),
            'ç' => Some('c'),
            _ => None,
        };
        out.extend(folded);
    }
    out
}

// -- phone numbers (all from ranges reserved for fiction) ---------------------------------------

fn phone_number(country: Country, rng: &mut Rng) -> String {
    match country {
        Country::Us => us_phone(rng),
        Country::Gb => uk_phone(rng),
        Country::De => de_phone(rng),
        Country::Fr => fr_phone(rng),
        // No fictional ranges we can rely on for these: the customer uses a number from abroad.
        Country::Es | Country::Nl | Country::It | Country::Br => match rng.below(5) {
            0 => us_phone(rng),
            1 => uk_phone(rng),
            2 => de_phone(rng),
            3 => fr_phone(rng),
            _ => au_phone(rng),
        },
    }
}

/// North America: 555-0100 … 555-0199 is reserved for fiction in every area code.
fn us_phone(rng: &mut Rng) -> String {
    let area = rng.pick(&[212, 305, 312, 415, 512, 617, 646, 206, 303, 404]);
    let line = rng.below(100);
    match rng.below(5) {
        0 => format!("+1 {area} 555 01{line:02}"),
        1 => format!("({area}) 555-01{line:02}"),
        2 => format!("+1-{area}-555-01{line:02}"),
        3 => format!("{area}.555.01{line:02}"),
        _ => format!("+1 ({area}) 555-01{line:02}"),
    }
}

/// UK: Ofcom's drama ranges (London 020 7946 0xxx, Leeds 0113 496 0xxx, Manchester
/// 0161 496 0xxx, mobile 07700 900xxx).
fn uk_phone(rng: &mut Rng) -> String {
    let n = rng.below(1000);
    match rng.below(6) {
        0 => format!("+44 20 7946 0{n:03}"),
        1 => format!("020 7946 0{n:03}"),
        2 => format!("+44 7700 900{n:03}"),
        3 => format!("07700 900{n:03}"),
        4 => format!("+44 113 496 0{n:03}"),
        _ => format!("0161 496 0{n:03}"),
    }
}

fn de_phone(rng: &mut Rng) -> String {
    let n = rng.below(100);
    match rng.below(3) {
        0 => format!("+49 30 901820{n:02}"),
        1 => format!("030 901820{n:02}"),
        _ => format!("+49 (0)30 901820{n:02}"),
    }
}

/// France: ARCEP's ranges for fiction (01 99 00 xx xx, 06 39 98 xx xx).
fn fr_phone(rng: &mut Rng) -> String {
    let (a, b) = (rng.below(100), rng.below(100));
    match rng.below(3) {
        0 => format!("+33 1 99 00 {a:02} {b:02}"),
        1 => format!("01 99 00 {a:02} {b:02}"),
        _ => format!("+33 6 39 98 {a:02} {b:02}"),
    }
}

/// Australia: ACMA's drama ranges (02 5550 xxxx, 03 7010 xxxx).
fn au_phone(rng: &mut Rng) -> String {
    let n = rng.below(10_000);
    match rng.below(2) {
        0 => format!("+61 2 5550 {n:04}"),
        _ => format!("(03) 7010 {n:04}"),
    }
}

// -- payment cards ------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CardBrand {
    Visa,
    Mastercard,
    Amex,
    Discover,
}

fn card_number(rng: &mut Rng) -> String {
    let brand = rng.weighted(&[
        (CardBrand::Visa, 45),
        (CardBrand::Mastercard, 35),
        (CardBrand::Amex, 12),
        (CardBrand::Discover, 8),
    ]);
    let digits = card_digits(brand, rng);
    let groups: &[usize] = if brand == CardBrand::Amex {
        &[4, 6, 5]
    } else {
        &[4, 4, 4, 4]
    };
    match rng.weighted(&[("", 40), (" ", 40), ("-", 20)]) {
        "" => digits,
        sep => group(&digits, groups, sep),
    }
}

/// The bare digits of a card number of `brand`, ending in a valid Luhn check digit.
fn card_digits(brand: CardBrand, rng: &mut Rng) -> String {
    let (prefix, len) = match brand {
        CardBrand::Visa => ("4".to_string(), 16),
        CardBrand::Mastercard => {
            if rng.chance(70) {
                (rng.between(51, 55).to_string(), 16)
            } else {
                (rng.between(2221, 2720).to_string(), 16)
            }
        }
        CardBrand::Amex => (rng.pick(&["34", "37"]).to_string(), 15),
        CardBrand::Discover => ("6011".to_string(), 16),
    };
    let mut digits = prefix;
    let body = len - 1 - digits.len();
    digits.push_str(&rng.digits(body));
    digits.push(luhn_check_digit(&digits));
    digits
}

/// The digit that makes `payload` + digit pass the Luhn check.
fn luhn_check_digit(payload: &str) -> char {
    // Walking right to left, the digit next to the (future) check digit is doubled.
    let sum: u32 = payload
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    char::from(b'0' + ((10 - sum % 10) % 10) as u8)
}

/// `text` cut into groups of the given sizes, joined by `sep`.
fn group(text: &str, sizes: &[usize], sep: &str) -> String {
    let mut out = String::with_capacity(text.len() + sizes.len());
    let mut pos = 0;
    for (i, &size) in sizes.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(&text[pos..pos + size]);
        pos += size;
    }
    out
}

// -- IBANs --------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IbanCountry {
    De,
    Gb,
    Fr,
    Es,
    Nl,
    It,
}

/// An IBAN with valid mod-97 check digits, printed in groups of four or compact.
fn iban(country: IbanCountry, rng: &mut Rng) -> String {
    let compact = compact_iban(country, rng);
    if rng.chance(60) {
        let chars: Vec<char> = compact.chars().collect();
        chars
            .chunks(4)
            .map(|c| c.iter().collect::<String>())
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        compact
    }
}

fn compact_iban(country: IbanCountry, rng: &mut Rng) -> String {
    let (code, bban) = match country {
        // Bankleitzahl (8) + account (10).
        IbanCountry::De => ("DE", format!("{}{}", rng.digits(8), rng.digits(10))),
        // Bank (4 letters) + sort code (6) + account (8).
        IbanCountry::Gb => {
            let bank = rng.pick(&["NWBK", "BARC", "LOYD", "HBUK", "MIDL", "MONZ"]);
            ("GB", format!("{bank}{}{}", rng.digits(6), rng.digits(8)))
        }
        // Bank (5) + branch (5) + account (11) + RIB key (2).
        IbanCountry::Fr => {
            let (bank, branch, account) = (rng.digits(5), rng.digits(5), rng.digits(11));
            let key = fr_rib_key(&bank, &branch, &account);
            ("FR", format!("{bank}{branch}{account}{key:02}"))
        }
        // Bank (4) + branch (4) + control digits (2) + account (10).
        IbanCountry::Es => {
            let (bank, branch, account) = (rng.digits(4), rng.digits(4), rng.digits(10));
            let first = es_control_digit(&format!("00{bank}{branch}"));
            let second = es_control_digit(&account);
            ("ES", format!("{bank}{branch}{first}{second}{account}"))
        }
        // Bank (4 letters) + account (10).
        IbanCountry::Nl => {
            let bank = rng.pick(&["ABNA", "RABO", "INGB", "TRIO", "SNSB", "ASNB"]);
            ("NL", format!("{bank}{}", rng.digits(10)))
        }
        // CIN (1 letter) + ABI (5) + CAB (5) + account (12).
        IbanCountry::It => {
            let rest = format!("{}{}{}", rng.digits(5), rng.digits(5), rng.digits(12));
            ("IT", format!("{}{rest}", it_cin(&rest)))
        }
    };
    let check = 98 - mod97(&format!("{bban}{code}00"));
    format!("{code}{check:02}{bban}")
}

/// `text` (digits and upper-case letters, A = 10 … Z = 35) as a number, modulo 97.
fn mod97(text: &str) -> u32 {
    let mut rem = 0u32;
    for ch in text.chars() {
        let value = ch.to_digit(36).unwrap_or(0);
        rem = if value >= 10 {
            (rem * 100 + value) % 97
        } else {
            (rem * 10 + value) % 97
        };
    }
    rem
}

/// French RIB key: 97 − ((89·bank + 15·branch + 3·account) mod 97), for numeric accounts.
fn fr_rib_key(bank: &str, branch: &str, account: &str) -> u64 {
    let n = |s: &str| s.parse::<u64>().unwrap_or(0);
    97 - (89 * n(bank) + 15 * n(branch) + 3 * n(account)) % 97
}

/// One Spanish "dígito de control" over ten digits.
fn es_control_digit(ten_digits: &str) -> u32 {
    const WEIGHTS: [u32; 10] = [1, 2, 4, 8, 5, 10, 9, 7, 3, 6];
    let sum: u32 = ten_digits
        .bytes()
        .zip(WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    match 11 - sum % 11 {
        11 => 0,
        10 => 1,
        d => d,
    }
}

/// Italian CIN letter over ABI + CAB + account (digits only here).
fn it_cin(digits: &str) -> char {
    // Values of '0'..='9' in odd (1st, 3rd, …) positions; even positions count at face value.
    const ODD: [u32; 10] = [1, 0, 5, 7, 9, 13, 15, 17, 19, 21];
    let sum: u32 = digits
        .bytes()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                ODD[d as usize]
            } else {
                d
            }
        })
        .sum();
    char::from(b'A' + (sum % 26) as u8)
}

// -- national identifiers -----------------------------------------------------------------------

/// US Social Security number: area 001–899 except 666, group 01–99, serial 0001–9999.
fn us_ssn(rng: &mut Rng) -> String {
    let area = loop {
        let a = rng.between(1, 899);
        if a != 666 {
            break a;
        }
    };
    let group = rng.between(1, 99);
    let serial = rng.between(1, 9999);
    if rng.chance(80) {
        format!("{area:03}-{group:02}-{serial:04}")
    } else {
        format!("{area:03}{group:02}{serial:04}")
    }
}

/// UK National Insurance number: two prefix letters (first not D F I Q U V, second not
/// D F I O Q U V, and not BG GB KN NK NT TN ZZ), six digits, suffix A–D.
fn uk_nino(rng: &mut Rng) -> String {
    const FIRST: &[u8] = b"ABCEGHJKLMNOPRSTWXYZ";
    const SECOND: &[u8] = b"ABCEGHJKLMNPRSTWXYZ";
    const NOT_ISSUED: &[&str] = &["BG", "GB", "KN", "NK", "NT", "TN", "ZZ"];
    let prefix = loop {
        let p: String = [rng.letter(FIRST), rng.letter(SECOND)].iter().collect();
        if !NOT_ISSUED.contains(&p.as_str()) {
            break p;
        }
    };
    let digits = rng.digits(6);
    let suffix = rng.letter(b"ABCD");
    if rng.chance(50) {
        format!(
            "{prefix} {} {} {} {suffix}",
            &digits[0..2],
            &digits[2..4],
            &digits[4..6]
        )
    } else {
        format!("{prefix}{digits}{suffix}")
    }
}

/// Spanish DNI: eight digits and the check letter for their value modulo 23.
fn es_dni(rng: &mut Rng) -> String {
    const LETTERS: &[u8; 23] = b"TRWAGMYFPDXBNJZSQVHLCKE";
    let number = rng.between(1_000_000, 99_999_999);
    let letter = char::from(LETTERS[(number % 23) as usize]);
    if rng.chance(80) {
        format!("{number:08}{letter}")
    } else {
        format!("{number:08}-{letter}")
    }
}

/// Brazilian CPF: nine digits (not all the same) and two mod-11 check digits.
fn br_cpf(rng: &mut Rng) -> String {
    let mut digits: Vec<u32> = loop {
        let d: Vec<u32> = (0..9).map(|_| rng.below(10) as u32).collect();
        if d.iter().any(|&x| x != d[0]) {
            break d;
        }
    };
    for _ in 0..2 {
        let n = digits.len() as u32;
        let sum: u32 = digits
            .iter()
            .enumerate()
            .map(|(i, &d)| d * (n + 1 - i as u32))
            .sum();
        digits.push(match sum * 10 % 11 {
            10 => 0,
            r => r,
        });
    }
    let s: String = digits.iter().map(|&d| char::from(b'0' + d as u8)).collect();
    if rng.chance(75) {
        format!("{}.{}.{}-{}", &s[0..3], &s[3..6], &s[6..9], &s[9..11])
    } else {
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Orders
// ---------------------------------------------------------------------------------------------

const STATUSES: &[(&str, u64)] = &[
    ("paid", 45),
    ("shipped", 35),
    ("pending", 12),
    ("refunded", 8),
];

struct Order {
    id: u64,
    customer_id: u64,
    amount_cents: u64,
    status: &'static str,
    created_at: u64,
}

impl Order {
    /// `signup_times[i]` is when customer `i + 1` signed up; the order comes after it.
    fn generate(id: u64, signup_times: &[u64], rng: &mut Rng) -> Order {
        let customer_id = rng.between(1, signup_times.len() as u64);
        let signed_up = signup_times[customer_id as usize - 1];
        // Mostly everyday purchases, some big tickets: 5.00 – 2500.00.
        let amount_cents = match rng.below(100) {
            0..=69 => rng.between(500, 20_000),
            70..=94 => rng.between(20_000, 100_000),
            _ => rng.between(100_000, 250_000),
        };
        Order {
            id,
            customer_id,
            amount_cents,
            status: rng.weighted(STATUSES),
            created_at: rng.between(signed_up, DATA_SECONDS - 1),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests. The validators below are written independently of the generators above.
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: usize = 20_000;

    fn strip(s: &str) -> String {
        s.chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.'))
            .collect()
    }

    fn luhn_ok(number: &str) -> bool {
        let digits: Vec<u32> = number.chars().filter_map(|c| c.to_digit(10)).collect();
        if digits.len() != number.len() || digits.len() < 12 {
            return false;
        }
        let mut total = 0;
        let mut double = false;
        for d in digits.iter().rev() {
            let mut v = *d;
            if double {
                v *= 2;
                if v >= 10 {
                    v = v / 10 + v % 10;
                }
            }
            total += v;
            double = !double;
        }
        total % 10 == 0
    }

    /// Which brand the bare digits belong to, if any, by prefix and length.
    fn brand_of(n: &str) -> Option<&'static str> {
        let p = |k: usize| n[..k].parse::<u32>().unwrap();
        match n.len() {
            15 if n.starts_with("34") || n.starts_with("37") => Some("amex"),
            16 if n.starts_with('4') => Some("visa"),
            16 if (51..=55).contains(&p(2)) || (2221..=2720).contains(&p(4)) => Some("mastercard"),
            16 if n.starts_with("6011") => Some("discover"),
            _ => None,
        }
    }

    fn iban_ok(printed: &str) -> bool {
        let compact: String = printed.chars().filter(|c| *c != ' ').collect();
        let expected_len = match &compact[..2] {
            "DE" | "GB" => 22,
            "FR" | "IT" => 27,
            "ES" => 24,
            "NL" => 18,
            _ => return false,
        };
        if compact.len() != expected_len
            || !compact[2..4].chars().all(|c| c.is_ascii_digit())
            || !compact
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            return false;
        }
        // Grouped form: fours separated by single spaces.
        if printed.contains(' ') {
            let groups: Vec<&str> = printed.split(' ').collect();
            let (last, full) = groups.split_last().unwrap();
            if full.iter().any(|g| g.len() != 4) || last.is_empty() || last.len() > 4 {
                return false;
            }
        }
        let rearranged = format!("{}{}", &compact[4..], &compact[..4]);
        let mut numeric = String::new();
        for c in rearranged.chars() {
            if c.is_ascii_digit() {
                numeric.push(c);
            } else {
                numeric.push_str(&(c as u32 - 'A' as u32 + 10).to_string());
            }
        }
        // Piecewise: at most 9 digits at a time fit comfortably in u64.
        let mut rem: u64 = 0;
        for chunk in numeric.as_bytes().chunks(7) {
            let s = std::str::from_utf8(chunk).unwrap();
            rem = format!("{rem}{s}").parse::<u64>().unwrap() % 97;
        }
        rem == 1
    }

    fn ssn_ok(s: &str) -> bool {
        let digits = strip(s);
        if digits.len() != 9 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return false;
        }
        if s.contains('-') && s.len() != 11 {
            return false;
        }
        let area: u32 = digits[0..3].parse().unwrap();
        let group: u32 = digits[3..5].parse().unwrap();
        let serial: u32 = digits[5..9].parse().unwrap();
        area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
    }

    fn nino_ok(s: &str) -> bool {
        let c: Vec<char> = s.chars().filter(|c| *c != ' ').collect();
        if c.len() != 9 {
            return false;
        }
        let (a, b) = (c[0], c[1]);
        let prefix: String = [a, b].iter().collect();
        a.is_ascii_uppercase()
            && b.is_ascii_uppercase()
            && !"DFIQUV".contains(a)
            && !"DFIOQUV".contains(b)
            && !["BG", "GB", "KN", "NK", "NT", "TN", "ZZ"].contains(&prefix.as_str())
            && c[2..8].iter().all(|d| d.is_ascii_digit())
            && "ABCD".contains(c[8])
    }

    fn dni_ok(s: &str) -> bool {
        let s = s.replace('-', "");
        if s.len() != 9 {
            return false;
        }
        let Ok(n) = s[..8].parse::<usize>() else {
            return false;
        };
        "TRWAGMYFPDXBNJZSQVHLCKE".chars().nth(n % 23) == s[8..].chars().next()
    }

    fn cpf_ok(s: &str) -> bool {
        let d: Vec<u32> = strip(s).chars().filter_map(|c| c.to_digit(10)).collect();
        if d.len() != 11 || d.iter().all(|&x| x == d[0]) {
            return false;
        }
        let check = |len: usize| {
            let weighted: u32 = (0..len).map(|i| d[i] * (len as u32 + 1 - i as u32)).sum();
            let r = 11 - weighted % 11;
            if r >= 10 {
                0
            } else {
                r
            }
        };
        check(9) == d[9] && check(10) == d[10]
    }

    fn customers(n: usize, seed: u64) -> Vec<Customer> {
        let mut rng = Rng::new(seed);
        (1..=n as u64)
            .map(|id| Customer::generate(id, &mut rng))
            .collect()
    }

    #[test]
    fn validators_accept_known_good_and_reject_known_bad() {
        assert!(luhn_ok("4111111111111111"));
        assert!(!luhn_ok("4111111111111112"));
        assert!(luhn_ok("378282246310005"));
        assert!(iban_ok("GB82 WEST 1234 5698 7654 32"));
        assert!(iban_ok("DE89370400440532013000"));
        assert!(!iban_ok("DE89370400440532013001"));
        assert!(ssn_ok("123-45-6789"));
        assert!(!ssn_ok("666-45-6789"));
        assert!(!ssn_ok("123-00-6789"));
        assert!(nino_ok("AB 12 34 56 C"));
        assert!(!nino_ok("QQ123456C"));
        assert!(!nino_ok("AB123456E"));
        assert!(dni_ok("12345678Z"));
        assert!(!dni_ok("12345678A"));
        assert!(cpf_ok("529.982.247-25"));
        assert!(!cpf_ok("529.982.247-26"));
        assert!(!cpf_ok("111.111.111-11"));
    }

    #[test]
    fn cards_pass_luhn_with_the_right_prefix_and_length() {
        let mut rng = Rng::new(1);
        let mut brands = std::collections::BTreeMap::new();
        let mut separators = [0; 3];
        for _ in 0..SAMPLES {
            let printed = card_number(&mut rng);
            assert!(
                printed
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ' ' || c == '-'),
                "{printed}"
            );
            separators
                [usize::from(printed.contains(' ')) + 2 * usize::from(printed.contains('-'))] += 1;
            let digits: String = printed.chars().filter(char::is_ascii_digit).collect();
            assert!(luhn_ok(&digits), "{printed} fails Luhn");
            let brand = brand_of(&digits).unwrap_or_else(|| panic!("{printed}: no brand"));
            *brands.entry(brand).or_insert(0) += 1;
        }
        assert_eq!(brands.len(), 4, "{brands:?}");
        assert!(separators.iter().all(|&n| n > 0), "{separators:?}");
        // Both Mastercard ranges occur.
        let mut rng = Rng::new(2);
        let mc: Vec<String> = (0..2000)
            .map(|_| card_digits(CardBrand::Mastercard, &mut rng))
            .collect();
        assert!(mc.iter().any(|n| n.starts_with('5')));
        assert!(mc.iter().any(|n| n.starts_with('2')));
    }

    #[test]
    fn ibans_pass_mod97_with_the_right_length() {
        let mut rng = Rng::new(3);
        for country in [
            IbanCountry::De,
            IbanCountry::Gb,
            IbanCountry::Fr,
            IbanCountry::Es,
            IbanCountry::Nl,
            IbanCountry::It,
        ] {
            for _ in 0..SAMPLES / 6 {
                let printed = iban(country, &mut rng);
                assert!(iban_ok(&printed), "{printed} ({country:?})");
            }
        }
    }

    #[test]
    fn ibans_carry_valid_national_check_digits() {
        let mut rng = Rng::new(4);
        for _ in 0..2000 {
            // France: (89·bank + 15·branch + 3·account + key) ≡ 0 (mod 97).
            let fr = compact_iban(IbanCountry::Fr, &mut rng);
            let n = |r: std::ops::Range<usize>| fr[r].parse::<u64>().unwrap();
            assert_eq!(
                (89 * n(4..9) + 15 * n(9..14) + 3 * n(14..25) + n(25..27)) % 97,
                0,
                "{fr}"
            );
            // Spain: both control digits, recomputed with the weights 1 2 4 8 5 10 9 7 3 6.
            let es = compact_iban(IbanCountry::Es, &mut rng);
            let dc = |ten: &str| {
                let w = [1, 2, 4, 8, 5, 10, 9, 7, 3, 6];
                let s: u32 = ten
                    .chars()
                    .zip(w)
                    .map(|(c, w)| c.to_digit(10).unwrap() * w)
                    .sum();
                [0, 1, 9, 8, 7, 6, 5, 4, 3, 2, 1][(s % 11) as usize].to_string()
            };
            let expected = dc(&format!("00{}", &es[4..12])) + &dc(&es[14..24]);
            assert_eq!(&es[12..14], expected, "{es}");
            // Italy: the CIN letter from the odd/even position tables.
            let it = compact_iban(IbanCountry::It, &mut rng);
            let odd = "BAKPLCQDREVOSFTGUHMINJWZYX";
            let total: usize = it[5..]
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    let d = c.to_digit(10).unwrap() as usize;
                    if i % 2 == 0 {
                        odd.find(char::from(b'A' + d as u8)).unwrap()
                    } else {
                        d
                    }
                })
                .sum();
            assert_eq!(
                it.as_bytes()[4],
                b'A' + (total % 26) as u8,
                "{it}: wrong CIN"
            );
        }
    }

    #[test]
    fn national_ids_validate() {
        let mut rng = Rng::new(5);
        for _ in 0..SAMPLES {
            let s = us_ssn(&mut rng);
            assert!(ssn_ok(&s), "{s}");
            let s = uk_nino(&mut rng);
            assert!(nino_ok(&s), "{s}");
            let s = es_dni(&mut rng);
            assert!(dni_ok(&s), "{s}");
            let s = br_cpf(&mut rng);
            assert!(cpf_ok(&s), "{s}");
        }
    }

    #[test]
    fn customers_are_consistent_and_realistic() {
        let all = customers(5000, 6);
        let mut kinds = std::collections::BTreeSet::new();
        let mut with_apostrophe = 0;
        for c in &all {
            if c.full_name.contains('\'') {
                with_apostrophe += 1;
            }
            // first.last<id>@example.{com,org,net}
            let (local, domain) = c.email.split_once('@').unwrap();
            assert!(
                ["example.com", "example.org", "example.net"].contains(&domain),
                "{}",
                c.email
            );
            assert!(local.ends_with(&c.id.to_string()), "{}", c.email);
            assert!(local.contains('.'), "{}", c.email);
            assert!(
                local
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '.'),
                "{}",
                c.email
            );
            if let Some(card) = &c.card_number {
                let digits: String = card.chars().filter(char::is_ascii_digit).collect();
                assert!(luhn_ok(&digits) && brand_of(&digits).is_some(), "{card}");
            }
            if let Some(iban) = &c.iban {
                assert!(iban_ok(iban), "{iban}");
            }
            if let Some((id, kind)) = &c.national_id {
                let ok = match *kind {
                    "us_ssn" => ssn_ok(id),
                    "uk_nino" => nino_ok(id),
                    "es_dni" => dni_ok(id),
                    "br_cpf" => cpf_ok(id),
                    other => panic!("unknown kind {other}"),
                };
                assert!(ok, "{kind} {id}");
                kinds.insert(*kind);
            }
            if let Some(phone) = &c.phone {
                let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
                let fictional = [
                    "55501", "2079460", "77009", "1134960", "1614960", "3090182", "1990", "63998",
                    "25550", "37010",
                ];
                assert!(
                    fictional.iter().any(|f| digits.contains(f)),
                    "{phone} is not from a fictional range"
                );
                assert!(
                    phone
                        .chars()
                        .all(|ch| ch.is_ascii_digit() || " +()-.".contains(ch)),
                    "{phone}"
                );
            }
            assert!(c.created_at < DATA_SECONDS);
        }
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        assert!(with_apostrophe > 0);
        let null_phones = all.iter().filter(|c| c.phone.is_none()).count();
        assert!(null_phones > 0 && null_phones < all.len() / 4);
    }

    #[test]
    fn orders_reference_existing_customers_with_sane_amounts() {
        let mut rng = Rng::new(7);
        let signups: Vec<u64> = (0..50).map(|_| rng.below(DATA_SECONDS)).collect();
        let mut statuses = std::collections::BTreeSet::new();
        for id in 1..=SAMPLES as u64 {
            let o = Order::generate(id, &signups, &mut rng);
            assert!((1..=50).contains(&o.customer_id));
            assert!(
                (500..=250_000).contains(&o.amount_cents),
                "{}",
                o.amount_cents
            );
            assert!(o.created_at >= signups[o.customer_id as usize - 1]);
            assert!(o.created_at < DATA_SECONDS);
            statuses.insert(o.status);
        }
        let expected: std::collections::BTreeSet<&str> =
            ["pending", "paid", "shipped", "refunded"].into();
        assert_eq!(statuses, expected);
    }

    #[test]
    fn timestamps_cover_2024_and_2025() {
        assert_eq!(timestamp(0), "2024-01-01 00:00:00+00");
        assert_eq!(timestamp(59 * 86_400 + 3_723), "2024-02-29 01:02:03+00");
        assert_eq!(timestamp(60 * 86_400), "2024-03-01 00:00:00+00");
        assert_eq!(timestamp(366 * 86_400), "2025-01-01 00:00:00+00");
        assert_eq!(timestamp(DATA_SECONDS - 1), "2025-12-31 23:59:59+00");
    }

    #[test]
    fn literals_escape_apostrophes() {
        assert_eq!(literal("O'Brien"), "'O''Brien'");
        assert_eq!(literal("''"), "''''''");
        assert_eq!(nullable(None), "NULL");
        assert_eq!(money(500), "5.00");
        assert_eq!(money(250_000), "2500.00");
    }

    /// Splits the SQL into statements, honouring quotes; panics on an unterminated literal.
    fn statements(sql: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut current = String::new();
        let mut in_quote = false;
        let mut in_comment = false;
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            if in_comment {
                if c == '\n' {
                    in_comment = false;
                }
                continue;
            }
            current.push(c);
            match c {
                '\'' if in_quote && chars.peek() == Some(&'\'') => {
                    current.push('\'');
                    chars.next();
                }
                '\'' => in_quote = !in_quote,
                '-' if !in_quote && chars.peek() == Some(&'-') => {
                    current.pop();
                    in_comment = true;
                }
                ';' if !in_quote => {
                    current.pop();
                    out.push(current.trim().to_string());
                    current.clear();
                }
                _ => {}
            }
        }
        assert!(!in_quote, "unterminated string literal");
        assert!(current.trim().is_empty(), "trailing text: {current}");
        out
    }

    #[test]
    fn sql_shape_quoting_and_batches() {
        let sql = seed_sql(1234, 2100, 42);
        let stmts = statements(&sql);
        assert_eq!(stmts[0], "BEGIN");
        assert_eq!(stmts[1], "DROP TABLE IF EXISTS orders, customers");
        assert_eq!(stmts.last().unwrap(), "COMMIT");
        let customer_batches: Vec<&String> = stmts
            .iter()
            .filter(|s| s.starts_with("INSERT INTO customers"))
            .collect();
        let order_batches: Vec<&String> = stmts
            .iter()
            .filter(|s| s.starts_with("INSERT INTO orders"))
            .collect();
        assert_eq!(customer_batches.len(), 3);
        assert_eq!(order_batches.len(), 5);
        let rows = |s: &str| s.lines().filter(|l| l.starts_with('(')).count();
        assert_eq!(
            customer_batches.iter().map(|s| rows(s)).sum::<usize>(),
            1234
        );
        assert_eq!(order_batches.iter().map(|s| rows(s)).sum::<usize>(), 2100);
        assert!(customer_batches
            .iter()
            .chain(&order_batches)
            .all(|s| rows(s) <= 500));
        assert!(sql.contains("ALTER SEQUENCE customers_id_seq RESTART WITH 1235;"));
        // Apostrophes in names are doubled inside literals, never bare.
        assert!(sql.contains("O''Brien") && sql.contains("D''Souza"));
        assert!(!sql.replace("''", "").contains("O'Brien"));
    }

    #[test]
    fn output_is_deterministic_per_seed() {
        assert_eq!(seed_sql(300, 700, 42), seed_sql(300, 700, 42));
        assert_ne!(seed_sql(300, 700, 42), seed_sql(300, 700, 43));
    }

    #[test]
    fn empty_inputs_are_valid_sql() {
        let sql = seed_sql(0, 10, 1);
        assert!(!sql.contains("INSERT"));
        // BEGIN, DROP, two CREATE TABLEs, COMMIT.
        assert_eq!(statements(&sql).len(), 5);
    }
}
