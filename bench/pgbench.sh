#!/usr/bin/env bash
# pgbench -S (select-only) on one throwaway cluster: direct, through pgbouncer (session
# pooling) and through portcullis with every statement decided by policy (the example
# policies: the agent is a read-only analyst) and recorded, in both durability modes; 1 and 8
# clients; simple and prepared protocol. Prints TPS and ratios to direct.
#
# With BASELINE_REV set, that revision is built too and run in the same cells ("pc-base"), so
# the cost of a change shows in one run. A revision from before policy existed (e.g. bf22dcd)
# runs without policy; set BASELINE_POLICY=1 for one that has it (e.g. cf2441b, before signed
# checkpoints and sealing), so both gateways decide every statement.
#
#   bench/pgbench.sh                         # 10 s per cell
#   DURATION=30 bench/pgbench.sh             # longer cells
#   BASELINE_REV=bf22dcd bench/pgbench.sh    # + the gateway without policy
#   VARIANTS="recording pgstore" bench/pgbench.sh
#       # + a second table: pc-default against the same gateway with recording = "full"
#       # ("pc-rec") and with the ledger in a PostgreSQL store on the same server ("pc-pgstore")
#
# Needs: PostgreSQL server binaries, pgbench, pgbouncer (apt-get install -y pgbouncer), cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-"1 8"}
PROTOCOLS=${PROTOCOLS:-"simple prepared"}
. bench/lib.sh
command -v pgbouncer >/dev/null || {
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq pgbouncer >/dev/null; else echo "install pgbouncer: sudo apt-get install -y pgbouncer" >&2; exit 1; fi
}
bench_init portcullis-bench
BASELINE=""
if [ -n "${BASELINE_REV:-}" ]; then
  BDIR="$HOME/.cache/portcullis/baseline-$BASELINE_REV"
  if [ ! -x "$BDIR/target/release/portcullis" ]; then
    rm -rf "$BDIR/src"; mkdir -p "$BDIR"
    git worktree add --detach -f "$BDIR/src" "$BASELINE_REV" >/dev/null 2>&1 || git -C . archive "$BASELINE_REV" | (mkdir -p "$BDIR/src" && tar -x -C "$BDIR/src")
    (cd "$BDIR/src" && CARGO_TARGET_DIR="$BDIR/target" cargo build --release -q -p portcullis)
    git worktree remove --force "$BDIR/src" >/dev/null 2>&1 || true
  fi
  BASELINE="$BDIR/target/release/portcullis"
fi

start_cluster 200 "-c shared_buffers=256MB"
"$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "CREATE DATABASE bench" postgres
"$PGBIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U postgres -i -q -s "$SCALE" bench >/dev/null 2>&1

# pgbouncer, session pooling, no client auth (same trust as the direct leg).
BPORT=$(free_port)
cat > "$WORK/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PGPORT dbname=bench user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BPORT
unix_socket_dir =
auth_type = any
pool_mode = session
max_client_conn = 200
default_pool_size = 50
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
INI
chown postgres: "$WORK/pgbouncer.ini" 2>/dev/null || true
"${AS[@]}" pgbouncer -q "$WORK/pgbouncer.ini" >/dev/null 2>&1 & PIDS+=($!)

# portcullis: one agent, trust upstream.
create_agent
start_portcullis() { # $1 = durability, $2 = binary, $3 = "policy" or "", $4 = name suffix,
                     # $5 = more [store] lines, $6 = more [[connections]] lines; sets GW_PORT
  local dir="$WORK/gw-$1$3${4:-}" port policy="" groups=""; port=$(free_port); mkdir -p "$dir"
  if [ "$3" = policy ]; then
    policy=$'[policy]\nfiles = ["'"$PWD"'/examples/policies"]'
    groups='groups = ["analysts"]'
  fi
  cat > "$dir/portcullis.toml" <<TOML
[gateway]
data_dir = "."
[store]
durability = "$1"
${5:-}
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
${6:-}
$policy
[[agents]]
name = "bench"
key_hash = "$HASH"
$groups
TOML
  RUST_LOG=warn "$2" serve --config "$dir/portcullis.toml" >/dev/null 2>"$dir/log" & PIDS+=($!)
  wait_port "$port"
  GW_PORT=$port
}
start_portcullis default "$PORTCULLIS" policy; PORT_DEFAULT=$GW_PORT
start_portcullis strict "$PORTCULLIS" policy; PORT_STRICT=$GW_PORT
PORT_BASE=""
if [ -n "$BASELINE" ]; then
  start_portcullis default "$BASELINE" "$([ -n "${BASELINE_POLICY:-}" ] && echo policy)" -base; PORT_BASE=$GW_PORT
fi
PORT_REC=""; PORT_PGSTORE=""
case " ${VARIANTS:-} " in *" recording "*)
  start_portcullis default "$PORTCULLIS" policy -rec "" 'recording = "full"'; PORT_REC=$GW_PORT ;; esac
case " ${VARIANTS:-} " in *" pgstore "*)
  "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "CREATE DATABASE ledger" postgres
  start_portcullis default "$PORTCULLIS" policy -pgstore "kind = \"postgres\"
url = \"postgres://postgres@127.0.0.1:$PGPORT/ledger\""; PORT_PGSTORE=$GW_PORT ;; esac
sleep 1

run() { # target port user password clients protocol
  local jobs=$(( $5 < 2 ? $5 : 2 ))
  PGPASSWORD="$4" "$PGBIN/pgbench" -h 127.0.0.1 -p "$2" -U "$3" -S -T "$DURATION" -c "$5" -j "$jobs" -M "$6" -n bench 2>/dev/null \
    | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1
}

SYNCS=$(python3 - "$WORK" <<'PY'
import os, sys, time
p = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
n, end = 0, time.time() + 2
while time.time() < end:
    os.write(fd, b"x" * 512); os.fdatasync(fd); n += 1
print(int(n / 2))
PY
)

echo
echo "pgbench -S, scale $SCALE, ${DURATION}s per cell, $(nproc) cores; disk sync rate: $SYNCS fdatasync/s"
echo "pc-default / pc-strict: policy on (examples/policies, read-only analyst); pc-base: ${BASELINE_REV:-not run (set BASELINE_REV)}${BASELINE_POLICY:+ with policy}"
printf '%-9s %-8s %10s %10s %7s %12s %7s %12s %7s %12s %7s\n' protocol clients direct pgbouncer ratio "pc-base" ratio "pc-default" ratio "pc-strict" ratio
for proto in $PROTOCOLS; do
  for c in $CLIENTS; do
    d=$(run direct "$PGPORT" postgres "" "$c" "$proto")
    b=$(run pgbouncer "$BPORT" postgres "" "$c" "$proto")
    n=0; [ -n "$PORT_BASE" ] && n=$(run portcullis "$PORT_BASE" bench "$KEY" "$c" "$proto")
    p=$(run portcullis "$PORT_DEFAULT" bench "$KEY" "$c" "$proto")
    s=$(run portcullis "$PORT_STRICT" bench "$KEY" "$c" "$proto")
    printf '%-9s %-8s %10.0f %10.0f %7s %12.0f %7s %12.0f %7s %12.0f %7s\n' "$proto" "$c" "$d" "$b" "$(ratio "$b" "$d")" "$n" "$(ratio "$n" "$d")" "$p" "$(ratio "$p" "$d")" "$s" "$(ratio "$s" "$d")"
  done
done
if [ -n "$PORT_REC$PORT_PGSTORE" ]; then
  echo
  echo "variants (default durability, policy on): pc-rec = recording \"full\" to <data_dir>/recordings; pc-pgstore = ledger in PostgreSQL (database ledger on the same server)"
  printf '%-9s %-8s %10s %12s %7s %12s %7s %12s %7s\n' protocol clients direct pc-default ratio pc-rec ratio pc-pgstore ratio
  for proto in $PROTOCOLS; do
    for c in $CLIENTS; do
      d=$(run direct "$PGPORT" postgres "" "$c" "$proto")
      p=$(run portcullis "$PORT_DEFAULT" bench "$KEY" "$c" "$proto")
      r=0; [ -n "$PORT_REC" ] && r=$(run portcullis "$PORT_REC" bench "$KEY" "$c" "$proto")
      g=0; [ -n "$PORT_PGSTORE" ] && g=$(run portcullis "$PORT_PGSTORE" bench "$KEY" "$c" "$proto")
        printf '%-9s %-8s %10.0f %12.0f %7s %12.0f %7s %12.0f %7s\n' "$proto" "$c" "$d" "$p" "$(ratio "$p" "$d")" "$r" "$(ratio "$r" "$d")" "$g" "$(ratio "$g" "$d")"
    done
  done
  [ -n "$PORT_PGSTORE" ] && echo "ledger (pgstore): $("$PORTCULLIS" audit verify --config "$WORK/gw-defaultpolicy-pgstore/portcullis.toml" 2>/dev/null)"
  [ -n "$PORT_REC" ] && echo "recordings (rec): $(du -sh "$WORK/gw-defaultpolicy-rec/recordings" 2>/dev/null | cut -f1) in $(find "$WORK/gw-defaultpolicy-rec/recordings" -type f | wc -l) chunks"
fi
echo
echo "strict mode bound: one fsync per group commit; at $SYNCS syncs/s and 8 clients, at most ~$((SYNCS * 8)) statements/s"
for m in default strict; do
  echo "ledger ($m): $("$PORTCULLIS" audit verify --config "$WORK/gw-${m}policy/portcullis.toml" 2>/dev/null)"
done
denied=$("$PORTCULLIS" audit tail --config "$WORK/gw-defaultpolicy/portcullis.toml" -n 100000 2>/dev/null | grep -c "DENY" || true)
echo "statements refused by policy during the run: $denied (pgbench -S only reads: expect 0)"
