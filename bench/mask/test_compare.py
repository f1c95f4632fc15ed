#!/usr/bin/env python3
"""Tests for compare.py's scoring and its handling of portcullis output.

Needs only the standard library (no Presidio, no portcullis build): a small
Python script stands in for the portcullis binary.

    python3 bench/mask/test_compare.py        (or: python3 -m pytest bench/mask)
"""

import json
import os
import stat
import subprocess
import sys
import tempfile
import textwrap
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import compare  # noqa: E402


class MatchLineTest(unittest.TestCase):
    def test_exact_match(self):
        self.assertEqual(compare.match_line([("EMAIL", 5, 15)], [("EMAIL", 5, 15)]), [(0, 0)])

    def test_half_overlap_counts_less_does_not(self):
        gold = [("IBAN", 0, 10)]
        self.assertEqual(compare.match_line(gold, [("IBAN", 5, 30)]), [(0, 0)])  # 5 of 10
        self.assertEqual(compare.match_line(gold, [("IBAN", 6, 30)]), [])        # 4 of 10

    def test_entity_must_agree(self):
        self.assertEqual(compare.match_line([("US_SSN", 0, 11)], [("PHONE", 0, 11)]), [])

    def test_one_to_one(self):
        # Two predictions on one gold span: only the better one matches.
        self.assertEqual(compare.match_line([("PHONE", 0, 10)],
                                            [("PHONE", 2, 10), ("PHONE", 0, 10)]), [(0, 1)])
        # One prediction covering two gold spans satisfies only one of them.
        self.assertEqual(len(compare.match_line([("EMAIL", 0, 4), ("EMAIL", 6, 10)],
                                                [("EMAIL", 0, 10)])), 1)

    def test_score_counts(self):
        texts = ["a 4111111111111111 b 123-45-6789", "nothing here"]
        gold = [[("CREDIT_CARD", 2, 18), ("US_SSN", 21, 32)], []]
        preds = [[("CREDIT_CARD", 2, 18), ("PHONE", 21, 32), ("DATE_TIME", 0, 1)],
                 [("US_SSN", 0, 7)]]
        sc = compare.score(texts, gold, preds, set(compare.ENTITIES))
        self.assertEqual(sc.precision("CREDIT_CARD"), 1.0)
        self.assertEqual(sc.recall("CREDIT_CARD"), 1.0)
        self.assertEqual(sc.recall("US_SSN"), 0.0)
        self.assertEqual(sc.precision("US_SSN"), 0.0)   # the FP on line 2
        self.assertEqual(sc.precision("PHONE"), 0.0)
        self.assertEqual(sc.pred["DATE_TIME"], 0)        # unknown entity types are ignored
        self.assertEqual(sc.false_neg["US_SSN"], [(1, "123-45-6789")])


# A stand-in for `portcullis mask test --json`: finds e-mail addresses and
# reports code-point offsets, exactly as the contract asks.  MODE changes it
# into a broken implementation for the contract tests.
FAKE_PORTCULLIS = textwrap.dedent("""\
    #!{python}
    import json, os, re, sys
    mode = os.environ.get("FAKE_MODE", "good")
    if sys.argv[1:] != ["mask", "test", "--json"]:
        sys.exit("usage: portcullis mask test --json")
    lines = sys.stdin.buffer.read().decode("utf-8").split("\\n")[:-1]
    if mode == "short":
        lines = lines[:-1]
    for n, text in enumerate(lines, 1):
        findings = []
        for m in re.finditer(r"[\\w.+-]+@[\\w-]+(\\.[\\w-]+)+", text):
            start, end = m.span()
            if mode == "bytes":   # UTF-8 byte offsets instead of code points
                start, end = len(text[:start].encode()), len(text[:end].encode())
            findings.append({{"entity": "EMAIL", "start": start, "end": end}})
        masked = re.sub(r"[\\w.+-]+@[\\w-]+(\\.[\\w-]+)+", "[EMAIL]", text)
        print(json.dumps({{"line": n, "masked": masked, "findings": findings}}, ensure_ascii=False))
""")


class PortcullisContractTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.bin = os.path.join(self.tmp.name, "portcullis")
        with open(self.bin, "w") as f:
            f.write(FAKE_PORTCULLIS.format(python=sys.executable))
        os.chmod(self.bin, os.stat(self.bin).st_mode | stat.S_IEXEC)
        self.corpus = os.path.join(self.tmp.name, "corpus.jsonl")
        records = []
        for text in ["🚀 déjà vu: write to ana@example.com today",
                     "plain ascii bob@example.org and joe@example.net",
                     "no pii at all, order #123456",
                     "ünïcödé ✅ then zoë@example.de"]:
            spans = []
            for word in text.split():
                if "@" in word:
                    start = text.index(word)
                    spans.append({"entity": "EMAIL", "start": start, "end": start + len(word)})
            records.append({"text": text, "spans": spans})
        with open(self.corpus, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    def tearDown(self):
        self.tmp.cleanup()

    def run_compare(self, mode="good", *extra):
        env = dict(os.environ, FAKE_MODE=mode, PORTCULLIS_BIN=self.bin)
        return subprocess.run([sys.executable, os.path.join(HERE, "compare.py"), self.corpus,
                               "--only", "portcullis", *extra],
                              env=env, capture_output=True, text=True)

    @staticmethod
    def email_row(stdout):
        return next(l for l in stdout.splitlines() if l.startswith("| EMAIL"))

    def test_good_output_scores_perfectly(self):
        proc = self.run_compare()
        self.assertEqual(proc.returncode, 0, proc.stderr)
        cells = [c.strip() for c in self.email_row(proc.stdout).strip("|").split("|")]
        self.assertEqual(cells, ["EMAIL", "4", "1.000", "1.000", "1.000"])
        self.assertIn("MB/s", proc.stdout)

    def test_byte_offsets_are_caught(self):
        proc = self.run_compare("bytes", "--show-errors", "3")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        cells = [c.strip() for c in self.email_row(proc.stdout).strip("|").split("|")]
        self.assertNotEqual(cells[2:], ["1.000", "1.000", "1.000"])

    def test_missing_line_is_fatal(self):
        proc = self.run_compare("short")
        self.assertEqual(proc.returncode, 2)
        self.assertIn("printed 3 lines for 4 input lines", proc.stderr)

    def test_missing_binary_is_fatal(self):
        env = dict(os.environ, PORTCULLIS_BIN=os.path.join(self.tmp.name, "nope"))
        proc = subprocess.run([sys.executable, os.path.join(HERE, "compare.py"), self.corpus],
                              env=env, capture_output=True, text=True)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("portcullis binary not found", proc.stderr)


if __name__ == "__main__":
    unittest.main()
