# Sourced by scripts/demo.sh and scripts/test.sh: finds which Debian packages are missing and
# installs them (as root with apt-get), or says exactly what to install and stops.
#
#   need PACKAGE TEST...   adds PACKAGE to the missing list unless the shell test succeeds
#   install_missing        installs the list (apt-get update once), or exits 1 naming the command
#
# PORTCULLIS_DEPS_ROOT (default empty) is prefixed to every file path checked, and
# PORTCULLIS_DEPS_DRY_RUN=1 makes install_missing print what it would install ("would install:
# …", or "nothing to install") and exit 0, so the calling script stops before it builds or
# tests anything: the set-up test uses both to play a fresh machine and this one
# (crates/portcullis/tests/setup.rs).
R="${PORTCULLIS_DEPS_ROOT:-}"

missing=()

# need PACKAGE 'shell test' — the test runs quietly; PACKAGE is queued when it fails.
need() {
  local pkg="$1"
  shift
  if ! (eval "$*") >/dev/null 2>&1; then
    missing+=("$pkg")
  fi
}

# What building portcullis needs: a C compiler (SQLite, ring, libpg_query) and libclang, with
# which bindgen generates libpg_query's bindings for the pg_query crate.
need_build_tools() {
  need build-essential 'ls "$R"/usr/bin/cc'
  # libclang itself, not libclang-cpp (which LLVM packages install too, and bindgen cannot use).
  need libclang-dev '{ ls "$R"/usr/lib/llvm-*/lib/libclang.so* "$R"/usr/lib/*-linux-gnu/libclang-[0-9]*.so* 2>/dev/null || true; } | grep -q .'
}

# PostgreSQL's server binaries (initdb, postgres) for the throwaway clusters, and psql.
need_postgres() {
  need postgresql '[ -n "${PG_BIN:-}" ] || ls "$R"/usr/lib/postgresql/*/bin/initdb'
  need postgresql-client 'ls "$R"/usr/bin/psql'
}

install_missing() {
  if [ "${PORTCULLIS_DEPS_DRY_RUN:-}" = 1 ]; then
    if [ ${#missing[@]} -eq 0 ]; then
      echo "nothing to install"
    else
      echo "would install: ${missing[*]}"
    fi
    exit 0
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    printf '\n== installing %s (apt-get)\n' "${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null && command -v apt-get >/dev/null && [ -t 0 ]; then
    printf '\n== installing %s (sudo apt-get)\n' "${missing[*]}" >&2
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "missing packages: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  missing=()
}

need_cargo() {
  command -v cargo >/dev/null || {
    echo "cargo not found: install Rust with rustup (https://rustup.rs), then run this again" >&2
    exit 1
  }
}
