#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a short time: FUZZ_SECONDS each (default 30).
#
#   scripts/fuzz.sh                      # all targets (classify, wire, mask), 30 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh classify
#
# cargo-fuzz passes nightly-only flags (-Z sanitizer, sanitizer coverage) to rustc. Only the
# stable toolchain exists here, so the script sets RUSTC_BOOTSTRAP=1, which makes stable rustc
# accept them; the stable toolchain ships the AddressSanitizer runtime, so the default
# `--sanitizer address` works. If a build with it fails, the script retries once with
# `--sanitizer none` (libFuzzer still finds panics, just not memory errors in unsafe code).
#
# libpg_query (the C parser behind the classifier) is compiled with clang's sanitizer coverage
# when clang is installed, so that libFuzzer is guided by the parser's branches as well as the
# classifier's; FUZZ_INSTRUMENT_C=0 turns that off.
#
# The corpus is kept in $PORTCULLIS_CACHE/fuzz-corpus (it grows from run to run); a crash is
# written to fuzz/artifacts/<target>/ and the script exits non-zero, naming the file and the
# command that replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${PORTCULLIS_CACHE:-$HOME/.cache/portcullis}"
TARGET_DIR="${FUZZ_TARGET_DIR:-$CACHE/fuzz-target}"
CORPUS_ROOT="${FUZZ_CORPUS_DIR:-$CACHE/fuzz-corpus}"
LOGS="$CACHE/fuzz-logs"
SECONDS_EACH="${FUZZ_SECONDS:-30}"
SANITIZER="${FUZZ_SANITIZER:-address}"
mkdir -p "$TARGET_DIR" "$CORPUS_ROOT" "$LOGS"

say() { printf '\n== %s\n' "$*" >&2; }
die() {
  printf '\nfuzz.sh: %s\n' "$*" >&2
  exit 1
}

# --- tools -----------------------------------------------------------------------------------
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"
command -v c++ >/dev/null || die "no C++ compiler: libfuzzer-sys builds libFuzzer from C++; install it with: apt-get install -y g++"
if ! cargo fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz"
  cargo install cargo-fuzz --locked ||
    die "could not install cargo-fuzz; install it by hand with: cargo install cargo-fuzz --locked"
fi

# Nightly flags on the stable compiler (see the top of this file).
export RUSTC_BOOTSTRAP=1

# Coverage for the C parser too (and the other bundled C: ring, SQLite), through cc's
# per-triple variables. They must be the same for `build` and `run`, or cc's build scripts
# would rebuild.
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
if [ "${FUZZ_INSTRUMENT_C:-1}" = 1 ] && command -v clang >/dev/null; then
  export "CC_${TRIPLE//-/_}=clang"
  export "CFLAGS_${TRIPLE//-/_}=-fsanitize-coverage=inline-8bit-counters,pc-table,trace-cmp"
fi

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi
[ ${#targets[@]} -gt 0 ] || die "no fuzz targets found in fuzz/ (cargo fuzz list printed nothing)"

# --- build -------------------------------------------------------------------------------------
say "cargo fuzz build (sanitizer $SANITIZER, into $TARGET_DIR; a first build takes about 10 minutes)"
if ! cargo fuzz build --sanitizer "$SANITIZER" --target-dir "$TARGET_DIR" 2>"$LOGS/build.log"; then
  tail -n 30 "$LOGS/build.log" >&2
  if [ "$SANITIZER" = none ]; then
    die "cargo fuzz build failed (log: $LOGS/build.log); cargo-fuzz needs RUSTC_BOOTSTRAP=1 on stable and a C++ compiler for libfuzzer-sys"
  fi
  say "build with --sanitizer $SANITIZER failed; retrying with --sanitizer none"
  SANITIZER=none
  cargo fuzz build --sanitizer none --target-dir "$TARGET_DIR" 2>"$LOGS/build.log" || {
    tail -n 30 "$LOGS/build.log" >&2
    die "cargo fuzz build failed even with --sanitizer none (log: $LOGS/build.log)"
  }
fi

# --- seeds -------------------------------------------------------------------------------------
# The classifier's corpus (crates/policy/tests/corpus.toml) seeds the classify target: a
# read-only second corpus directory, rewritten each run, so libFuzzer starts from real SQL.
seeds_for() {
  local dir="$CORPUS_ROOT/seeds-$1"
  case "$1" in
    classify)
      python3 - "$dir" crates/policy/tests/corpus.toml >&2 <<'PY' || return 0
import hashlib, pathlib, sys, tomllib
out = pathlib.Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
with open(sys.argv[2], "rb") as f:
    cases = tomllib.load(f).get("case", [])
for c in cases:
    sql = c["sql"].encode()
    (out / hashlib.sha1(sql).hexdigest()).write_bytes(sql)
PY
      echo "$dir"
      ;;
  esac
}

# --- run ---------------------------------------------------------------------------------------
failed=()
for t in "${targets[@]}"; do
  corpus="$CORPUS_ROOT/$t"
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  extra=()
  [ -f "fuzz/dict/$t.dict" ] && extra+=("-dict=fuzz/dict/$t.dict")
  seeds="$(seeds_for "$t")"
  say "fuzzing $t for ${SECONDS_EACH}s (corpus $corpus${seeds:+, seeds $seeds})"
  # shellcheck disable=SC2086 # $seeds is one directory or nothing
  if cargo fuzz run --sanitizer "$SANITIZER" --target-dir "$TARGET_DIR" "$t" "$corpus" $seeds -- \
    -max_total_time="$SECONDS_EACH" -timeout=20 -print_final_stats=1 "${extra[@]}" \
    >"$LOGS/$t.log" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units|stat::new_units_added)' "$LOGS/$t.log" >&2 || true
  else
    tail -n 60 "$LOGS/$t.log" >&2
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  for t in "${failed[@]}"; do
    for a in fuzz/artifacts/"$t"/*; do
      [ -e "$a" ] || continue
      echo "fuzz.sh: $t: failing input $a; replay it (no rebuild) with:" >&2
      echo "  $TARGET_DIR/$TRIPLE/release/$t $a" >&2
    done
  done
  die "fuzz targets failed: ${failed[*]} (full logs in $LOGS)"
fi
say "fuzzing passed: ${targets[*]}"
