#!/usr/bin/env python3
"""Labelled PII corpus for the masking benchmark (bench/mask/compare.py).

Writes JSONL, one record per line:

    {"text": "...", "spans": [{"entity": "CREDIT_CARD", "start": 12, "end": 31}, ...]}

`start`/`end` are Python str offsets, i.e. Unicode code points (not bytes, not
UTF-16 units), `end` exclusive, so `text[start:end]` is the sensitive value.
Every text is a single line: it never contains a newline, carriage return, tab
or any other character that Python's str.splitlines() would split on.  Texts do
contain non-ASCII characters (accented names, "€", "£", the odd emoji), so a
tool that reports byte or UTF-16 offsets will be scored wrong on those lines.

Each text is one of several styles (free prose, a log line with key=value
pairs, a CSV row, an inline JSON object, a chat message, an e-mail header)
carrying 0-3 sensitive values and 0-2 near-misses.

Labelled entities (the gold spans):
  CREDIT_CARD  Luhn-valid numbers of every issuer at every length it issues:
               Visa (13/16/19), Mastercard (51-55, 2221-2720; 16), Amex (15),
               Discover (6011, 644-649, 65; 16-19), JCB (3528-3589; 16-19),
               Diners (300-305, 36, 38-39; 14/16), Maestro (50, 56-69; 12-19),
               UnionPay (62; 16-19), Mir (2200-2204; 16-19); in one piece or
               grouped by spaces or dashes: groups of four with a shorter last
               group (4-4-4-1 ... 4-4-4-4-3), Amex 4-6-5, Diners 4-6-4.
  US_SSN       area 001-899 except 666, group 01-99, serial 0001-9999;
               123-45-6789 mostly, sometimes 9 plain digits.
  IBAN         mod-97 valid, DE GB FR ES NL IT (FR/ES/IT national check
               digits also valid); compact or grouped in 4s with spaces.
  EMAIL        faker addresses, some with plus tags or dotted names.
  PHONE        faker en_US / en_GB numbers (extensions stripped), some
               reformatted to E.164 / international / national; every one
               is valid according to libphonenumber (`phonenumbers`).  Also
               numbers written with their +country code (E.164 or
               international layout) that are of the country's shape but in
               ranges libphonenumber does not call valid: NANP area codes not
               assigned (+1 390-361-2328), the UK's drama ranges
               (+44 7700 900123, +44 20 7946 0xxx); and valid +CC numbers of
               DE, FR, ES, BR, IN, AU.
  IP_ADDRESS   IPv4 (public and private) and IPv6 (full and compressed).
  UK_NINO      HMRC rules (first letter not D F I Q U V, second not
               D F I O Q U V, no BG GB KN NK NT TN ZZ prefix, suffix A-D);
               "AB123456C" or "AB 12 34 56 C".
  BR_CPF       valid check digits, not all-equal; 123.456.789-09 or plain.
  ES_DNI       8 digits + the matching control letter (n mod 23).
  IN_AADHAAR   12 digits, first 2-9, Verhoeff check digit; mostly 4-4-4
               grouped with spaces, sometimes plain.
  SECRET       AWS access key ids (AKIA + 16 [A-Z0-9]), GitHub tokens
               (ghp_ + 36 alnum), Slack bot tokens (xoxb-...), Stripe live
               secret keys (sk_live_ + 24 alnum), JWTs (three base64url parts,
               header starting eyJ).

Near-misses that are deliberately NOT labelled: 16-digit card-like numbers
failing Luhn, SSN-shaped numbers with area 000/666/9xx, group 00 or serial
0000, IBANs with wrong check digits, CPFs with wrong check digits, DNIs with
the wrong letter, Aadhaar-shaped numbers failing Verhoeff or starting 0/1,
NINO-shaped strings with forbidden prefixes, truncated AKIA/ghp_ strings,
IPv4-like strings with an octet > 255, order ids (ORD-2024-000123,
#100245783), invoice numbers (INV-000123456789, INV- and 12-16 digits),
tracking numbers (UPS 1Z..., USPS 22 digits plain or in fours, FedEx 12
and 15 digits), ISBN-10/13 and EAN-13/UPC-A codes (hyphenated or plain),
ISO timestamps, epoch seconds/milliseconds/microseconds, version numbers
like 10.2.3.4.5, IP-like strings, prices and long decimal amounts, UUIDs
and git hashes.  The digits of a tracking number, an EAN or a UUID's last
group may well pass a card's Luhn check: they are decoys all the same.  Context filler (names, cities, companies,
sentences) never contains an unlabelled e-mail, IP address or phone number.

Output is deterministic for a given --seed and faker version (run.sh pins
faker).  Usage:

    python corpus.py [--seed 42] [--lines 20000] [-o corpus.jsonl]

A per-entity count is printed on stderr.
"""

import argparse
import base64
import collections
import ipaddress
import json
import random
import string
import sys

try:
    from faker import Faker
    import phonenumbers
except ImportError as err:  # pragma: no cover - environment problem
    sys.exit(f"corpus.py: missing Python package ({err}); run bench/mask/run.sh "
             "or pip install faker phonenumbers")

ENTITIES = ["CREDIT_CARD", "US_SSN", "IBAN", "EMAIL", "PHONE", "IP_ADDRESS",
            "UK_NINO", "BR_CPF", "ES_DNI", "IN_AADHAAR", "SECRET"]

# Characters that must never appear inside a text: anything str.splitlines()
# treats as a line boundary, plus tab.
FORBIDDEN = "\n\r\t\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"

DIGITS = string.digits
ALNUM = string.ascii_letters + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits


# --------------------------------------------------------------------------
# Check-digit algorithms (used to make valid values and to make sure the
# near-misses really are invalid).
# --------------------------------------------------------------------------

def luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def luhn_complete(partial: str) -> str:
    """Append the digit that makes `partial` Luhn-valid."""
    for d in DIGITS:
        if luhn_ok(partial + d):
            return partial + d
    raise AssertionError("unreachable")


def iban_remainder(iban: str) -> int:
    rearranged = iban[4:] + iban[:4]
    as_digits = "".join(str(int(c, 36)) for c in rearranged)
    return int(as_digits) % 97


def iban_ok(iban: str) -> bool:
    return iban_remainder(iban) == 1


def iban_with_check(country: str, bban: str) -> str:
    check = 98 - iban_remainder(country + "00" + bban)
    return f"{country}{check:02d}{bban}"


# Verhoeff tables (dihedral group D5).
_VD = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
       [2, 3, 4, 0, 1, 7, 8, 9, 5, 6], [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
       [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
       [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
       [8, 7, 6, 5, 9, 3, 2, 1, 0, 4], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]]
_VP = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
       [5, 8, 0, 3, 7, 9, 6, 1, 4, 2], [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
       [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
       [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8]]
_VINV = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9]


def verhoeff_ok(number: str) -> bool:
    c = 0
    for i, ch in enumerate(reversed(number)):
        c = _VD[c][_VP[i % 8][int(ch)]]
    return c == 0


def verhoeff_complete(partial: str) -> str:
    c = 0
    for i, ch in enumerate(reversed(partial)):
        c = _VD[c][_VP[(i + 1) % 8][int(ch)]]
    return partial + str(_VINV[c])


def cpf_check_digits(nine: str) -> str:
    digits = [int(c) for c in nine]
    for _ in range(2):
        weight = len(digits) + 1
        total = sum(d * (weight - i) for i, d in enumerate(digits))
        rest = total * 10 % 11
        digits.append(0 if rest == 10 else rest)
    return "".join(map(str, digits[9:]))


DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def card_issuer_ok(d: str) -> bool:
    """Issuer ranges and lengths, as in the docstring's CREDIT_CARD list."""
    n = len(d)
    p = lambda k: int(d[:k])
    if d[0] == "4":
        return n in (13, 16, 19)
    if 51 <= p(2) <= 55 or 2221 <= p(4) <= 2720:
        return n == 16
    if p(2) in (34, 37):
        return n == 15
    if 300 <= p(3) <= 305 or p(2) in (36, 38, 39):
        return 14 <= n <= 19
    if p(2) == 35 or 2200 <= p(4) <= 2204:
        return 16 <= n <= 19
    if p(2) == 50 or 56 <= p(2) <= 69:
        return 12 <= n <= 19
    return False


def digits_are_pii(value: str) -> bool:
    """Whether the digits of `value` are a valid card or Aadhaar number."""
    d = "".join(c for c in value if c.isdigit())
    if 12 <= len(d) <= 19 and luhn_ok(d) and card_issuer_ok(d):
        return True
    return len(d) == 12 and d[0] in "23456789" and verhoeff_ok(d)


def ssn_ok(area: int, group: int, serial: int) -> bool:
    return 1 <= area <= 899 and area != 666 and group != 0 and serial != 0


NINO_FIRST = [c for c in string.ascii_uppercase if c not in "DFIQUV"]
NINO_SECOND = [c for c in string.ascii_uppercase if c not in "DFIOQUV"]
NINO_BAD_PREFIXES = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}


# --------------------------------------------------------------------------
# The generator.  All randomness comes from `self.rng` and from the faker
# instances, which are seeded from the same --seed, so output is reproducible.
# --------------------------------------------------------------------------

class Generator:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.fakers = {}
        for i, loc in enumerate(["en_US", "en_GB", "de_DE", "es_ES", "pt_BR", "fr_FR"]):
            fk = Faker(loc)
            fk.seed_instance(seed * 100 + i)
            self.fakers[loc] = fk
        self.us = self.fakers["en_US"]
        self.gb = self.fakers["en_GB"]

    # ---- small helpers ---------------------------------------------------

    def pick(self, seq):
        return self.rng.choice(seq)

    def digits(self, n: int) -> str:
        return "".join(self.rng.choice(DIGITS) for _ in range(n))

    def chars(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def faker(self):
        return self.fakers[self.pick(list(self.fakers))]

    def name(self) -> str:
        return self.faker().name()

    @staticmethod
    def group(s: str, sizes, sep: str) -> str:
        """Split `s` into chunks of the given sizes (rest in a last chunk)."""
        out, pos = [], 0
        for size in sizes:
            if pos < len(s):
                out.append(s[pos:pos + size])
            pos += size
        if pos < len(s):
            out.append(s[pos:])
        return sep.join(out)

    # ---- sensitive values --------------------------------------------------

    CARD_KINDS = [
        # (name, prefix chooser, lengths, weight)
        ("visa", lambda r: "4", (16, 16, 16, 13, 19), 6),
        ("mc", lambda r: str(r.randint(51, 55)), (16,), 4),
        ("mc2", lambda r: str(r.randint(2221, 2720)), (16,), 2),
        ("amex", lambda r: r.choice(["34", "37"]), (15,), 3),
        ("discover", lambda r: r.choice(["6011", "65", str(r.randint(644, 649))]), (16, 16, 17, 18, 19), 2),
        ("jcb", lambda r: str(r.randint(3528, 3589)), (16, 16, 17, 18, 19), 2),
        ("diners", lambda r: r.choice(["36", "38", "39", str(r.randint(300, 305))]), (14, 14, 16), 2),
        ("maestro", lambda r: r.choice(["50", str(r.randint(56, 69)), "6759", "6761"]),
         (12, 13, 14, 15, 16, 17, 18, 19), 4),
        ("unionpay", lambda r: "62", (16, 17, 18, 19), 2),
        ("mir", lambda r: str(r.randint(2200, 2204)), (16, 17, 18, 19), 1),
    ]

    def card_digits(self, valid: bool):
        kinds = self.CARD_KINDS
        name, prefix_fn, lengths, _ = self.rng.choices(kinds, weights=[k[3] for k in kinds])[0]
        length = self.pick(lengths)
        prefix = prefix_fn(self.rng)
        body = luhn_complete(prefix + self.digits(length - len(prefix) - 1))
        if not valid:
            # Replace the check digit by any other digit: always fails Luhn.
            wrong = self.pick([d for d in DIGITS if d != body[-1]])
            body = body[:-1] + wrong
        assert luhn_ok(body) == valid
        if name == "amex":
            groups = (4, 6, 5)
        elif name == "diners" and length == 14 and self.rng.random() < 0.5:
            groups = (4, 6, 4)
        else:
            groups = (4, 4, 4, 4)  # the rest in a last, shorter group
        return body, groups

    def credit_card(self) -> str:
        body, groups = self.card_digits(True)
        sep = self.pick([" ", " ", "-", ""])
        return self.group(body, groups, sep) if sep else body

    def us_ssn(self) -> str:
        while True:
            area, group, serial = self.rng.randint(1, 899), self.rng.randint(1, 99), self.rng.randint(1, 9999)
            if ssn_ok(area, group, serial):
                break
        if self.rng.random() < 0.2:
            return f"{area:03d}{group:02d}{serial:04d}"
        return f"{area:03d}-{group:02d}-{serial:04d}"

    def _bban(self, country: str) -> str:
        if country == "DE":
            return self.digits(8) + self.digits(10)
        if country == "GB":
            return self.pick(["NWBK", "BARC", "LOYD", "HBUK", "MIDL", "MONZ"]) + self.digits(6) + self.digits(8)
        if country == "NL":
            return self.pick(["ABNA", "INGB", "RABO", "SNSB", "TRIO", "KNAB"]) + self.digits(10)
        if country == "FR":
            bank, branch, account = self.digits(5), self.digits(5), self.digits(11)
            key = 97 - (89 * int(bank) + 15 * int(branch) + 3 * int(account)) % 97
            return f"{bank}{branch}{account}{key:02d}"
        if country == "ES":
            bank, branch, account = self.digits(4), self.digits(4), self.digits(10)

            def dc(ten: str) -> str:
                weights = [1, 2, 4, 8, 5, 10, 9, 7, 3, 6]
                v = 11 - sum(int(c) * w for c, w in zip(ten, weights)) % 11
                return {10: "1", 11: "0"}.get(v, str(v))
            return bank + branch + dc("00" + bank + branch) + dc(account) + account
        if country == "IT":
            abi, cab, account = self.digits(5), self.digits(5), self.digits(12)
            return self._it_cin(abi + cab + account) + abi + cab + account
        raise ValueError(country)

    @staticmethod
    def _it_cin(s: str) -> str:
        # Italian CIN: odd positions (1-based) use a scrambled table.
        odd = [1, 0, 5, 7, 9, 13, 15, 17, 19, 21]
        total = sum(odd[int(c)] if i % 2 == 0 else int(c) for i, c in enumerate(s))
        return string.ascii_uppercase[total % 26]

    def iban_compact(self, valid: bool) -> str:
        country = self.pick(["DE", "GB", "FR", "ES", "NL", "IT"])
        iban = iban_with_check(country, self._bban(country))
        if not valid:
            good = iban[2:4]
            while True:
                bad = f"{self.rng.randint(2, 98):02d}"
                if bad != good:
                    break
            iban = iban[:2] + bad + iban[4:]
        assert iban_ok(iban) == valid
        return iban

    def iban(self) -> str:
        iban = self.iban_compact(True)
        return self.group(iban, [4] * 8, " ") if self.rng.random() < 0.5 else iban

    def email(self) -> str:
        fk = self.faker()
        roll = self.rng.random()
        if roll < 0.5:
            return fk.email()
        if roll < 0.7:
            return fk.free_email()
        if roll < 0.85:
            return fk.company_email()
        user = f"{fk.first_name()}.{fk.last_name()}".lower()
        user = "".join(c for c in user if c.isascii() and (c.isalnum() or c == "."))
        tag = self.pick(["", "+billing", "+news", "+" + self.digits(3)])
        return f"{user}{tag}@{fk.domain_name()}"

    def phone(self) -> str:
        if self.rng.random() < 0.25:
            return self.phone_international()
        fk, region = self.pick([(self.us, "US"), (self.gb, "GB")])
        while True:
            raw = fk.phone_number().split("x")[0].strip()
            try:
                parsed = phonenumbers.parse(raw, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(parsed):
                break
        roll = self.rng.random()
        if roll < 0.6:
            return raw  # faker's own formatting
        fmt = self.pick([phonenumbers.PhoneNumberFormat.E164,
                         phonenumbers.PhoneNumberFormat.INTERNATIONAL,
                         phonenumbers.PhoneNumberFormat.NATIONAL])
        return phonenumbers.format_number(parsed, fmt)

    def phone_international(self) -> str:
        """A number written with its +country code: half of them in ranges that are not
        assigned today (so libphonenumber does not call them valid), half valid numbers of
        other countries."""
        r = self.rng
        if r.random() < 0.5:
            if r.random() < 0.6:
                # NANP: an area code no one has (yet); NXX-NXX-XXXX all the same.
                while True:
                    area = r.randint(200, 999)
                    exchange = r.randint(200, 999)
                    line = self.digits(4)
                    n = phonenumbers.parse(f"+1{area}{exchange}{line}")
                    if not phonenumbers.is_valid_number(n) and phonenumbers.is_possible_number(n):
                        break
                return self.pick([f"+1 {area}-{exchange}-{line}", f"+1 ({area}) {exchange}-{line}",
                                  f"+1 {area} {exchange} {line}", f"+1{area}{exchange}{line}",
                                  f"+1.{area}.{exchange}.{line}"])
            # The UK's drama ranges (and whatever is next to them).
            return self.pick([f"+44 7700 900{self.digits(3)}", f"+44 20 7946 0{self.digits(3)}",
                              f"+44 113 496 0{self.digits(3)}", f"+44 1632 960{self.digits(3)}",
                              f"+447700900{self.digits(3)}"])
        region = self.pick(["DE", "FR", "ES", "BR", "IN", "AU"])
        kind = self.pick([phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE])
        example = phonenumbers.example_number_for_type(region, kind)
        national = str(example.national_number)
        while True:
            # The example's leading digits, the rest at random: valid more often than not.
            keep = max(2, len(national) // 2)
            n = phonenumbers.parse(f"+{example.country_code}{national[:keep]}{self.digits(len(national) - keep)}")
            if phonenumbers.is_valid_number(n):
                break
        fmt = self.pick([phonenumbers.PhoneNumberFormat.E164, phonenumbers.PhoneNumberFormat.INTERNATIONAL])
        return phonenumbers.format_number(n, fmt)

    def ip_address(self) -> str:
        roll = self.rng.random()
        if roll < 0.45:
            return self.us.ipv4_public()
        if roll < 0.65:
            return self.us.ipv4_private()
        addr = ipaddress.IPv6Address(self.us.ipv6())
        if self.rng.random() < 0.5:
            # Make a run of zero groups so the compressed form uses "::".
            groups = addr.exploded.split(":")
            start = self.rng.randint(1, 5)
            for i in range(start, start + self.rng.randint(2, 3)):
                groups[i] = "0000"
            return ipaddress.IPv6Address(":".join(groups)).compressed
        return str(addr)

    def uk_nino(self) -> str:
        while True:
            prefix = self.pick(NINO_FIRST) + self.pick(NINO_SECOND)
            if prefix not in NINO_BAD_PREFIXES:
                break
        num, suffix = self.digits(6), self.pick("ABCD")
        if self.rng.random() < 0.4:
            return f"{prefix} {num[:2]} {num[2:4]} {num[4:]} {suffix}"
        return f"{prefix}{num}{suffix}"

    def _cpf_digits(self, valid: bool) -> str:
        while True:
            nine = self.digits(9)
            if len(set(nine)) > 1:
                break
        check = cpf_check_digits(nine)
        if not valid:
            check = self.pick([f"{i:02d}" for i in range(100) if f"{i:02d}" != check])
        return nine + check

    @staticmethod
    def _cpf_format(d: str) -> str:
        return f"{d[:3]}.{d[3:6]}.{d[6:9]}-{d[9:]}"

    def br_cpf(self) -> str:
        d = self._cpf_digits(True)
        return self._cpf_format(d) if self.rng.random() < 0.7 else d

    def es_dni(self) -> str:
        n = self.digits(8)
        return n + DNI_LETTERS[int(n) % 23]

    def _aadhaar_digits(self, valid: bool) -> str:
        if valid:
            d = verhoeff_complete(str(self.rng.randint(2, 9)) + self.digits(10))
        elif self.rng.random() < 0.5:
            d = verhoeff_complete(str(self.rng.randint(0, 1)) + self.digits(10))
        else:
            d = verhoeff_complete(str(self.rng.randint(2, 9)) + self.digits(10))
            d = d[:-1] + self.pick([c for c in DIGITS if c != d[-1]])
        assert (verhoeff_ok(d) and d[0] in "23456789") == valid
        return d

    def in_aadhaar(self) -> str:
        d = self._aadhaar_digits(True)
        return self.group(d, (4, 4, 4), " ") if self.rng.random() < 0.7 else d

    @staticmethod
    def _b64url(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    def secret(self):
        """Returns (value, key name used in key=value contexts)."""
        kind = self.pick(["aws", "github", "slack", "stripe", "jwt"])
        if kind == "aws":
            return "AKIA" + self.chars(UPPER_ALNUM, 16), self.pick(["aws_access_key_id", "AWS_ACCESS_KEY_ID", "access_key"])
        if kind == "github":
            return "ghp_" + self.chars(ALNUM, 36), self.pick(["GITHUB_TOKEN", "gh_token", "token"])
        if kind == "slack":
            value = f"xoxb-{self.digits(self.rng.randint(10, 13))}-{self.digits(self.rng.randint(10, 13))}-{self.chars(ALNUM, 24)}"
            return value, self.pick(["SLACK_BOT_TOKEN", "slack_token", "token"])
        if kind == "stripe":
            return "sk_live_" + self.chars(ALNUM, 24), self.pick(["STRIPE_SECRET_KEY", "stripe_key", "api_key"])
        header = {"alg": self.pick(["HS256", "RS256"]), "typ": "JWT"}
        claims = {"sub": self.digits(8), "name": self.us.name(),
                  "iat": self.rng.randint(1_600_000_000, 1_800_000_000)}
        value = ".".join([
            self._b64url(json.dumps(header, separators=(",", ":")).encode()),
            self._b64url(json.dumps(claims, separators=(",", ":")).encode()),
            self._b64url(self.rng.randbytes(32)),
        ])
        return value, self.pick(["jwt", "id_token", "session"])

    # ---- near-misses (never labelled) ----------------------------------------

    def negative(self):
        """Returns (value, short description used as a key/label).  A near-miss made
        only of digits and separators is never a valid card or Aadhaar number: written
        without a word around it (a CSV field), such a number IS one as far as anyone can
        tell, so it cannot be a decoy."""
        while True:
            value, key = self._negative()
            if not (set(value) <= set(DIGITS + " -") and digits_are_pii(value)):
                return value, key

    def _negative(self):
        r = self.rng
        kind = self.pick(["card", "ssn", "iban", "cpf", "dni", "aadhaar", "nino",
                          "token", "ip", "order", "timestamp", "version", "price",
                          "uuid", "hash", "invoice", "tracking", "isbn", "ean",
                          "order", "uuid", "timestamp", "price"])
        if kind == "card":
            body, groups = self.card_digits(False)
            sep = self.pick([" ", "-", ""])
            return (self.group(body, groups, sep) if sep else body), self.pick(["ref", "txn", "tracking"])
        if kind == "ssn":
            area = self.pick([0, 666, r.randint(900, 999), r.randint(1, 899)])
            group = r.randint(1, 99) if area in (0, 666) or area >= 900 else 0
            serial = r.randint(0, 9999) if group else r.randint(1, 9999)
            if ssn_ok(area, group, serial):  # make sure it is invalid
                serial = 0
            return f"{area:03d}-{group:02d}-{serial:04d}", self.pick(["case", "claim", "ref"])
        if kind == "iban":
            iban = self.iban_compact(False)
            return (self.group(iban, [4] * 8, " ") if r.random() < 0.5 else iban), self.pick(["acct", "ref"])
        if kind == "cpf":
            return self._cpf_format(self._cpf_digits(False)), "protocolo"
        if kind == "dni":
            n = self.digits(8)
            return n + self.pick([c for c in DNI_LETTERS if c != DNI_LETTERS[int(n) % 23]]), "expediente"
        if kind == "aadhaar":
            return self.group(self._aadhaar_digits(False), (4, 4, 4), " "), "receipt"
        if kind == "nino":
            prefix = self.pick(sorted(NINO_BAD_PREFIXES) + ["QQ", "DA", "FB", "VA", "AO"])
            return f"{prefix}{self.digits(6)}{self.pick('ABCD')}", "form"
        if kind == "token":
            return self.pick(["AKIA" + self.chars(UPPER_ALNUM, r.randint(8, 12)),
                              "ghp_" + self.chars(ALNUM, r.randint(10, 20)),
                              "sk_live_" + "x" * 4]), "placeholder"
        if kind == "ip":
            octets = [r.randint(0, 255) for _ in range(4)]
            octets[r.randrange(4)] = r.randint(256, 999)
            return ".".join(map(str, octets)), "addr"
        if kind == "order":
            return self.pick([f"ORD-{r.randint(2019, 2026)}{r.randint(1, 12):02d}{r.randint(1, 28):02d}-{self.digits(5)}",
                              f"ORD-{r.randint(2019, 2026)}-{self.digits(6)}",
                              f"INV-{r.randint(2019, 2026)}-{self.digits(5)}",
                              f"#{self.digits(r.choice([6, 7, 8, 9]))}",
                              f"SO{self.digits(6)}{self.chars(string.ascii_uppercase, 2)}"]), "order"
        if kind == "invoice":
            return self.pick([f"INV-{self.digits(12)}",
                              f"INV-{r.randint(1, 9)}{self.digits(r.choice([11, 12, 13, 15]))}",
                              f"INV{self.digits(10)}",
                              f"{r.randint(2019, 2026)}-INV-{self.digits(6)}"]), self.pick(["invoice", "inv"])
        if kind == "tracking":
            return self.pick([f"1Z{self.chars(UPPER_ALNUM, 6)}{self.digits(10)}",
                              self.group(f"94{r.choice(['00', '05', '99'])}{self.digits(18)}", [4] * 6, " "),
                              f"92{self.digits(20)}",
                              self.digits(12),
                              self.digits(15),
                              f"JD{self.digits(18)}"]), self.pick(["tracking", "shipment", "awb"])
        if kind == "isbn":
            return self.isbn(), "ISBN"
        if kind == "ean":
            return self.ean(), self.pick(["ean", "gtin", "upc", "barcode"])
        if kind == "timestamp":
            dt = self.us.date_time_between(start_date="-5y", end_date="+1y")
            return self.pick([dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
                              dt.strftime("%Y-%m-%d %H:%M:%S,") + self.digits(3),
                              dt.strftime("%d/%m/%Y %H:%M"),
                              dt.strftime("%Y-%m-%dT%H:%M:%S.") + self.digits(6) + "+01:00",
                              str(int(dt.timestamp())),
                              str(int(dt.timestamp() * 1000)),
                              str(int(dt.timestamp() * 1000000))]), "ts"
        if kind == "version":
            return self.pick([".".join(str(r.randint(0, 20)) for _ in range(5)),
                              f"v{r.randint(0, 9)}.{r.randint(0, 30)}.{r.randint(0, 99)}",
                              f"{r.randint(1, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}-rc.{r.randint(1, 5)}"]), "version"
        if kind == "price":
            whole, cents = r.randint(1, 99999), r.randint(0, 99)
            return self.pick([f"${whole:,}.{cents:02d}", f"€{whole},{cents:02d}",
                              f"£{whole}.{cents:02d}", f"USD {whole}.{cents:02d}",
                              f"{self.digits(r.randint(12, 16))}.{cents:02d}",
                              f"{r.randint(1, 9)}{self.digits(r.randint(11, 15))}.{self.digits(4)}"]), "total"
        if kind == "uuid":
            return self.us.uuid4(), "request_id"
        return self.pick([self.us.sha1(), self.us.sha1()[:7], self.us.md5()]), "commit"

    def isbn(self) -> str:
        if self.rng.random() < 0.5:
            body = self.pick(["978", "979"]) + self.digits(9)
            check = (10 - sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(body)) % 10) % 10
            d = body + str(check)
            if self.rng.random() < 0.5:
                return d
            return f"{d[:3]}-{d[3]}-{d[4:6]}-{d[6:12]}-{d[12]}"
        body = self.digits(9)
        check = (11 - sum(int(c) * (10 - i) for i, c in enumerate(body)) % 11) % 11
        d = body + ("X" if check == 10 else str(check))
        if self.rng.random() < 0.5:
            return d
        return f"{d[0]}-{d[1:4]}-{d[4:9]}-{d[9]}"

    def ean(self) -> str:
        """An EAN-13 or UPC-A with its GS1 check digit (weights 3, 1, ... from the right)."""
        r = self.rng
        if r.random() < 0.5:
            body = self.pick([str(r.randint(400, 440)), str(r.randint(500, 509)), "50", "590", "690"])
            body += self.digits(12 - len(body))
        else:
            body = str(r.randint(0, 9)) + self.digits(10)
        check = (10 - sum(int(c) * (3 if i % 2 == 0 else 1) for i, c in enumerate(reversed(body))) % 10) % 10
        return body + str(check)

    # ---- context ------------------------------------------------------------

    # key names for key=value / JSON / CSV header contexts
    KEYS = {
        "CREDIT_CARD": ["card", "cc_number", "pan", "card_no"],
        "US_SSN": ["ssn", "SSN", "social_security"],
        "IBAN": ["iban", "IBAN", "payout_account"],
        "EMAIL": ["email", "contact", "reply_to"],
        "PHONE": ["phone", "tel", "mobile", "callback"],
        "IP_ADDRESS": ["ip", "client_ip", "remote_addr", "src"],
        "UK_NINO": ["nino", "ni_number"],
        "BR_CPF": ["cpf", "CPF"],
        "ES_DNI": ["dni", "DNI", "nif"],
        "IN_AADHAAR": ["aadhaar", "uid"],
    }

    # prose phrasings; "{v}" is the value
    PHRASES = {
        "CREDIT_CARD": ["Please charge my card {v} for the renewal.", "card number: {v}",
                        "I paid with {v} yesterday.", "The card on file is {v}, expiry 04/29.",
                        "Noted. {v} was declined.", "Card: {v}, exp 04/29", "charged ({v})!",
                        "the new card is {v}."],
        "US_SSN": ["My SSN is {v}.", "social security number {v} is on the form",
                   "SSN: {v}", "applicant ssn {v}"],
        "IBAN": ["Please wire the refund to {v} today.", "IBAN {v} (beneficiary {name})",
                 "Bankverbindung: {v}", "send it to account {v}"],
        "EMAIL": ["Write to {v} for details.", "Contact: {v}", "cc {v} on the thread",
                  "{name} <{v}> wrote:"],
        "PHONE": ["Call me on {v} after 5pm.", "phone: {v}", "reach {name} at {v}",
                  "tel. {v}", "Thanks. {v} is my mobile.", "office ({v})."],
        "IP_ADDRESS": ["Login from {v} was blocked.", "client {v} connected", "origin {v} flagged",
                       "request came from {v}."],
        "UK_NINO": ["My National Insurance number is {v}.", "NINO: {v}", "NI number {v} on payslip"],
        "BR_CPF": ["Meu CPF é {v}.", "CPF {v}", "cpf do titular: {v}"],
        "ES_DNI": ["Mi DNI es {v}.", "DNI {v}", "NIF del cliente: {v}"],
        "IN_AADHAAR": ["My Aadhaar number is {v}.", "Aadhaar {v}", "UID {v} verified"],
        "SECRET": ["Found {v} in the build log.", "export {key}={v}", "Authorization: Bearer {v}",
                   "{key}: {v}"],
    }
    # phrasings that carry no hint about what the value is.  Every phrasing
    # starts and ends with a word or punctuation, so two values never end up
    # side by side (e.g. an SSN followed by an Aadhaar number would read as one).
    BARE = ["see {v}", "value {v} noted.", "[{v}]", "got {v} from the form", "({v})"]
    NEG_PHRASES = ["{key} {v}", "{key}: {v}", "({key} {v})", "{key}={v}"]
    EMOJI = ["🚀", "✅", "👍", "🙏", "😅"]

    def value(self, entity: str):
        """Returns (value, key) for a labelled entity."""
        if entity == "SECRET":
            return self.secret()
        method = getattr(self, entity.lower())
        return method(), self.pick(self.KEYS[entity])

    def make_items(self):
        """0-3 labelled values and 0-2 near-misses, in random order."""
        n_pii = self.rng.choices([0, 1, 2, 3], weights=[20, 40, 25, 15])[0]
        n_neg = self.rng.choices([0, 1, 2], weights=[50, 35, 15])[0]
        items = []
        for _ in range(n_pii):
            entity = self.pick(ENTITIES)
            value, key = self.value(entity)
            items.append((entity, value, key))
        for _ in range(n_neg):
            value, key = self.negative()
            items.append((None, value, key))
        self.rng.shuffle(items)
        return items

    # ---- styles: each appends to a Line, recording the spans ------------------

    def style_prose(self, line, items):
        fk = self.faker()
        line.add(fk.sentence())
        for entity, value, key in items:
            line.add(" ")
            if entity is None:
                template = self.pick(self.NEG_PHRASES)
            elif self.rng.random() < 0.25 and entity != "SECRET":
                template = self.pick(self.BARE)
            else:
                template = self.pick(self.PHRASES[entity])
            line.add_template(template, entity, value, key=key, name=self.name())
        if self.rng.random() < 0.5:
            line.add(" " + self.faker().sentence())

    def style_log(self, line, items):
        dt = self.us.date_time_between(start_date="-2y")
        level = self.pick(["INFO", "WARN", "ERROR", "DEBUG"])
        service = self.pick(["api", "billing", "auth", "checkout", "worker-3", "gateway"])
        msg = self.pick(["request completed", "user updated profile", "payment declined",
                         "retrying upstream call", "session started", "webhook received"])
        line.add(f"{dt.isoformat(timespec='milliseconds')}Z {level} [{service}] {msg}")
        line.add(f" user={self.us.user_name()}")
        for entity, value, key in items:
            quoted = " " in value
            line.add(f" {key}=" + ('"' if quoted else ""))
            line.add_value(entity, value)
            if quoted:
                line.add('"')
        line.add(f" latency_ms={self.rng.randint(1, 2500)} status={self.pick([200, 201, 400, 402, 500])}")

    def style_csv(self, line, items):
        fk = self.faker()
        fields = [str(self.rng.randint(1000, 99999)), fk.name(), fk.city()]
        fields += [None] * len(items)  # placeholders for the items, kept in order
        fields.append(fk.date())
        self.rng.shuffle(fields)
        it = iter(items)
        for i, field in enumerate(fields):
            if i:
                line.add(",")
            if field is not None:
                line.add('"' + field.replace('"', '""') + '"' if "," in field else field)
            else:
                entity, value, _ = next(it)
                quoted = "," in value
                if quoted:
                    line.add('"')
                line.add_value(entity, value)
                if quoted:
                    line.add('"')

    def style_json(self, line, items):
        fk = self.faker()
        line.add('{"event":"' + self.pick(["signup", "order.created", "kyc.submitted", "ticket"]) + '"')
        line.add(',"name":' + json.dumps(fk.name(), ensure_ascii=False))
        for entity, value, key in items:
            line.add(f',"{key}":"')
            line.add_value(entity, value)
            line.add('"')
        line.add(',"city":' + json.dumps(fk.city(), ensure_ascii=False) + "}")

    def style_chat(self, line, items):
        line.add(f"[{self.rng.randint(0, 23):02d}:{self.rng.randint(0, 59):02d}] <{self.us.user_name()}> ")
        line.add(self.pick(["hey,", "hi team,", "quick one:", "fyi", "ok so"]))
        for entity, value, key in items:
            line.add(" ")
            template = self.pick(self.NEG_PHRASES if entity is None else self.PHRASES[entity])
            line.add_template(template, entity, value, key=key, name=self.name())
        if self.rng.random() < 0.5:
            line.add(" " + self.pick(self.EMOJI))
        line.add(" " + self.pick(["thanks!", "cheers", "merci", "obrigado", "gracias"]))

    def style_mail(self, line, items):
        fk = self.faker()
        line.add(f"From: {fk.name()} Subject: {fk.sentence(nb_words=4).rstrip('.')} | ")
        line.add(fk.sentence())
        for entity, value, key in items:
            line.add(" ")
            template = self.pick(self.NEG_PHRASES if entity is None else self.PHRASES[entity])
            line.add_template(template, entity, value, key=key, name=self.name())

    STYLES = ["prose", "prose", "log", "log", "csv", "json", "chat", "mail"]

    def record(self):
        items = self.make_items()
        line = Line()
        getattr(self, "style_" + self.pick(self.STYLES))(line, items)
        return line.finish()


class Line:
    """Builds one text and remembers where each labelled value sits."""

    def __init__(self):
        self.parts = []
        self.length = 0  # in code points
        self.spans = []

    def add(self, text: str):
        text = "".join(" " if c in FORBIDDEN else c for c in text)
        self.parts.append(text)
        self.length += len(text)

    def add_value(self, entity, value: str):
        assert not any(c in FORBIDDEN for c in value), value
        if entity is not None:
            self.spans.append({"entity": entity, "start": self.length, "end": self.length + len(value)})
        self.parts.append(value)
        self.length += len(value)

    def add_template(self, template: str, entity, value: str, **fill):
        before, after = template.split("{v}")
        self.add(before.format(**fill))
        self.add_value(entity, value)
        self.add(after.format(**fill))

    def finish(self):
        text = "".join(self.parts)
        return {"text": text, "spans": self.spans}


def self_check(rec, values_seen):
    text = rec["text"]
    assert not any(c in FORBIDDEN for c in text), text
    for span in rec["spans"]:
        assert 0 <= span["start"] < span["end"] <= len(text)
        values_seen.append((span["entity"], text[span["start"]:span["end"]]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--lines", type=int, default=20000)
    ap.add_argument("-o", "--output", default="-", help="output path (default stdout)")
    args = ap.parse_args()

    gen = Generator(args.seed)
    counts = collections.Counter()
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    with out:
        for _ in range(args.lines):
            rec = gen.record()
            seen = []
            self_check(rec, seen)
            counts.update(e for e, _ in seen)
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    summary = ", ".join(f"{e}={counts[e]}" for e in ENTITIES)
    print(f"corpus.py: {args.lines} lines (seed {args.seed}): {summary}", file=sys.stderr)


if __name__ == "__main__":
    main()
