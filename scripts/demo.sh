#!/usr/bin/env bash
# The README's first command: installs what building and running the demo needs when it is
# missing (a C compiler, libclang for libpg_query's bindings, PostgreSQL's server binaries),
# builds the release binary and runs `portcullis demo` with any arguments given.
#
# The first run builds from scratch: about 6-10 minutes on 2 cores. Later runs start at once.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh

need_cargo
need_build_tools
need_postgres
install_missing

CACHE="${PORTCULLIS_CACHE:-$HOME/.cache/portcullis}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
mkdir -p "$CARGO_TARGET_DIR"

if [ ! -x "$CARGO_TARGET_DIR/release/portcullis" ]; then
  echo "building portcullis (release; the first build takes several minutes) …" >&2
fi
cargo build --release --locked -q -p portcullis
exec "$CARGO_TARGET_DIR/release/portcullis" demo "$@"
