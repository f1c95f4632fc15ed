#!/usr/bin/env bash
# pgbench with a PII-heavy select through the gateway, masking on vs masking off.
#
# One throwaway cluster with a `customers` table of faker rows (name, email, phone, card
# number, IBAN, SSN, city, a free-text note holding an email and a phone number); each
# transaction selects 10 whole rows by id. Three legs, same cluster:
#   direct     pgbench straight to PostgreSQL
#   unmasked   portcullis, policy on, every statement recorded, profile "unmasked"
#              (an explicit [[masking.assign]] rule): rows pass as they come
#   masked     the same gateway config with the default profile "standard": every value of
#              every row scanned by every detector, and what is found redacted
# Prints TPS, rows/s and masked/unmasked ratios (the issue's goal: masked >= 0.7 x unmasked).
#
#   bench/mask/pgbench.sh                    # 10 s per cell, 1 and 8 clients, simple + prepared
#   DURATION=30 ROWS=20000 bench/mask/pgbench.sh
#
# Needs: PostgreSQL server binaries and pgbench, cargo, and the bench venv of run.sh (faker).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE/../.."
DURATION=${DURATION:-10}
ROWS=${ROWS:-10000}
CLIENTS=${CLIENTS:-"1 8"}
PROTOCOLS=${PROTOCOLS:-"simple prepared"}
CACHE="${PORTCULLIS_CACHE:-$HOME/.cache/portcullis}"
. bench/lib.sh
PY="$CACHE/bench-venv/bin/python"
"$PY" -c 'import faker' 2>/dev/null || {
  echo "the bench venv with faker is missing: run bench/mask/run.sh once (it creates $CACHE/bench-venv)" >&2; exit 1; }

bench_init portcullis-maskbench
start_cluster 100
PSQL=("$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1 -q)
"${PSQL[@]}" -c "CREATE DATABASE bench" postgres
"${PSQL[@]}" bench -c "CREATE TABLE customers (id int PRIMARY KEY, full_name text, email text,
  phone text, card_number text, iban text, ssn text, city text, note text)"

# faker rows, fixed seed, as COPY text.
"$PY" - "$ROWS" > "$WORK/customers.tsv" <<'PY'
import sys
from faker import Faker
f = Faker("en_US"); Faker.seed(7)
for i in range(1, int(sys.argv[1]) + 1):
    email = f.email()
    row = [str(i), f.name(), email, f.phone_number(), f.credit_card_number(),
           f.iban(), f.ssn(), f.city(),
           f"called {f.first_name()} back, asked to write to {f.email()} instead"]
    print("\t".join(v.replace("\t", " ").replace("\\", "") for v in row))
PY
"${PSQL[@]}" bench -c "\\copy customers FROM '$WORK/customers.tsv'"
"${PSQL[@]}" bench -c "ANALYZE customers"
cat > "$WORK/pii.sql" <<SQL
\set a random(1, $((ROWS - 9)))
SELECT * FROM customers WHERE id BETWEEN :a AND :a + 9;
SQL
chmod 644 "$WORK/pii.sql"

create_agent
start_portcullis() { # $1 = name, $2 = extra config; sets GW_PORT
  local dir="$WORK/gw-$1" port; port=$(free_port); mkdir -p "$dir"
  cat > "$dir/portcullis.toml" <<TOML
[gateway]
data_dir = "."
[[listeners]]
name = "pg"
protocol = "postgres"
bind = "127.0.0.1:$port"
tls = { mode = "disabled" }
[[connections]]
name = "bench"
type = "postgres"
host = "127.0.0.1"
port = $PGPORT
database = "bench"
user = "postgres"
[policy]
files = ["$PWD/examples/policies"]
[[agents]]
name = "bench"
key_hash = "$HASH"
groups = ["analysts"]
$2
TOML
  RUST_LOG=warn "$PORTCULLIS" serve --config "$dir/portcullis.toml" >/dev/null 2>"$dir/log" & PIDS+=($!)
  GW_PID=$!
  wait_port "$port"
  GW_PORT=$port
}
start_portcullis unmasked $'[[masking.assign]]\nprofile = "unmasked"\nagents = ["bench"]'; PORT_RAW=$GW_PORT; PID_RAW=$GW_PID
start_portcullis masked ""; PORT_MASKED=$GW_PORT; PID_MASKED=$GW_PID
sleep 1

# The masked leg really masks: one row through each gateway.
sample() { PGPASSWORD="$2" "$PGBIN/psql" -h 127.0.0.1 -p "$1" -U "$3" -At -c "SELECT email, card_number, note FROM customers WHERE id = 1" bench; }
echo "row 1 unmasked: $(sample "$PORT_RAW" "$KEY" bench)"
echo "row 1 masked:   $(sample "$PORT_MASKED" "$KEY" bench)"

run() { # port user password clients protocol
  local jobs=$(( $4 < 2 ? $4 : 2 ))
  PGPASSWORD="$3" "$PGBIN/pgbench" -h 127.0.0.1 -p "$1" -U "$2" -f "$WORK/pii.sql" -T "$DURATION" -c "$4" -j "$jobs" -M "$5" -n bench 2>/dev/null \
    | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1
}
# CPU time (user + system, clock ticks) a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# A gateway's CPU µs per transaction over one pgbench run: `gw_run PID port user password
# clients protocol` prints "TPS CPU_US".
gw_run() {
  local before after tps
  before=$(cpu_ticks "$1")
  tps=$(run "${@:2}")
  after=$(cpu_ticks "$1")
  echo "$tps $(python3 -c "print(round(($after - $before) * 1e6 / $(getconf CLK_TCK) / ($tps * $DURATION)))")"
}

echo
echo "PII select (10 rows of 9 columns per transaction, $ROWS faker rows), ${DURATION}s per cell, $(nproc) cores"
echo "(gateway CPU: µs of the gateway process's CPU time per transaction, unmasked and masked)"
printf '%-9s %-8s %10s %10s %7s %10s %7s %14s %12s %14s\n' protocol clients direct unmasked ratio masked ratio masked/unmask "masked rows/s" "gateway CPU"
for proto in $PROTOCOLS; do
  for c in $CLIENTS; do
    d=$(run "$PGPORT" postgres "" "$c" "$proto")
    read -r u ucpu < <(gw_run "$PID_RAW" "$PORT_RAW" bench "$KEY" "$c" "$proto")
    read -r m mcpu < <(gw_run "$PID_MASKED" "$PORT_MASKED" bench "$KEY" "$c" "$proto")
    printf '%-9s %-8s %10.0f %10.0f %7s %10.0f %7s %14s %12.0f %14s\n' "$proto" "$c" "$d" "$u" "$(ratio "$u" "$d")" "$m" "$(ratio "$m" "$d")" "$(ratio "$m" "$u")" "$(python3 -c "print($m*10)")" "$ucpu / $mcpu"
  done
done
echo
echo "ledger (masked): $("$PORTCULLIS" audit verify --config "$WORK/gw-masked/portcullis.toml" 2>/dev/null)"
"$PORTCULLIS" audit tail --config "$WORK/gw-masked/portcullis.toml" -n 1 2>/dev/null | sed 's/^/last event (masked): /'
