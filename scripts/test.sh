#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need when it is missing (Debian packages,
# a Python venv with psycopg 3 and asyncpg), then: rustfmt check, clippy, every test.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE="${PORTCULLIS_CACHE:-$HOME/.cache/portcullis}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"

say() { printf '\n== %s\n' "$*" >&2; }

# --- system packages (scripts/deps.sh: what is missing is installed with apt-get) -----------
. scripts/deps.sh
need_cargo
need_build_tools
need_postgres
need postgresql-contrib 'ls "$R"/usr/lib/postgresql/*/bin/pgbench'
need python3 'command -v python3'
need python3-venv "python3 -c 'import venv, ensurepip'"
need e2fsprogs 'command -v chattr'
# clang compiles libpg_query with coverage for the fuzz targets (scripts/fuzz.sh).
need clang 'command -v clang'
# The OpenID provider the identity tests run (tests/idp, npm oidc-provider) needs Node 20+ and npm.
need nodejs 'command -v node'
need npm 'command -v npm'
# The SAML tests sign and verify assertions with xmlsec1.
need xmlsec1 'command -v xmlsec1'
# With PORTCULLIS_DEPS_DRY_RUN=1 this prints what it would install and exits here.
install_missing
mkdir -p "$CACHE" "$CARGO_TARGET_DIR"

# --- Python drivers for the client tests, moto (a local S3 server) for the recordings test --
VENV="$CACHE/venv"
# psycopg ≥ 3.2 with its bundled libpq ≥ 17: tests/tools.rs checks libpq 17's encrypted cancel.
if ! "$VENV/bin/python" -c 'import psycopg, asyncpg, moto.server, boto3; assert psycopg.pq.version() >= 170000' >/dev/null 2>&1; then
  say "creating $VENV with psycopg 3, asyncpg and moto"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'psycopg[binary]>=3.2' 'asyncpg>=0.29' 'moto[server]>=5'
fi
export PORTCULLIS_PYTHON="$VENV/bin/python"

# --- the test OpenID provider (tests/idp: oidc-provider and jose from npm, pinned by its lock) ----
# Node 20.12+ (oidc-provider 9 uses crypto.hash); the machine image ships NodeSource's 20.x, while
# Debian bookworm's own nodejs package is 18, too old.
node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 12) ? 0 : 1)' \
  || { echo "tests/idp needs Node.js 20.12 or newer, found $(node --version)" >&2; exit 1; }
if [ ! -d tests/idp/node_modules/oidc-provider ] || [ tests/idp/package-lock.json -nt tests/idp/node_modules ]; then
  say "installing the test OpenID provider (npm ci in tests/idp)"
  (cd tests/idp && npm ci --no-audit --no-fund)
fi

# --- Rust tools ------------------------------------------------------------------------------
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy >/dev/null 2>&1 || true

say "cargo fmt --check"
cargo fmt --all -- --check

say "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

say "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi

# --- fuzzing: the classifier and the wire decoder, briefly (cargo-fuzz on stable, see fuzz.sh) ---
say "fuzzing (scripts/fuzz.sh, ${FUZZ_SECONDS:-20}s per target)"
rustfmt --edition 2021 --check fuzz/fuzz_targets/*.rs
PORTCULLIS_CACHE="$CACHE" FUZZ_SECONDS="${FUZZ_SECONDS:-20}" ./scripts/fuzz.sh
