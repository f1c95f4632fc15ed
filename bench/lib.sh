# Shared by the bench/ scripts that run pgbench through the gateway (source it, do not run it):
# finds PostgreSQL's binaries, builds the release binary, makes a work folder cleaned up on
# exit, starts a throwaway cluster and creates the bench agent.
#
#   . "$(dirname "$0")/lib.sh"      # from bench/;  . "$HERE/../lib.sh" from bench/mask/
#   bench_init portcullis-bench     # PGBIN, PORTCULLIS, WORK, AS, PIDS; cleanup on exit
#   start_cluster 200 "-c shared_buffers=256MB"   # PGPORT
#   create_agent                    # KEY (the API key), HASH (its key_hash)
#   wait_port "$port"; ratio "$a" "$b"; free_port

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis/target}"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ratio() { python3 -c "print(f'{float($1)/float($2):.2f}')" 2>/dev/null || echo "?"; }
wait_port() { for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing listens on port $1 after 10 s" >&2; return 1; }

bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}

bench_init() { # $1 = work folder prefix
  PGBIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
  [ -x "$PGBIN/initdb" ] || { echo "PostgreSQL server binaries not found: apt-get install -y postgresql" >&2; exit 1; }
  [ -x "$PGBIN/pgbench" ] || { echo "pgbench not found: apt-get install -y postgresql-contrib" >&2; exit 1; }
  cargo build --release -q -p portcullis
  PORTCULLIS="$CARGO_TARGET_DIR/release/portcullis"
  WORK=$(mktemp -d "/tmp/$1.XXXXXX")
  AS=()
  if [ "$(id -u)" = 0 ]; then chmod 755 "$WORK"; chown postgres: "$WORK"; AS=(runuser -u postgres --); fi
  PIDS=()
  trap bench_cleanup EXIT
}

start_cluster() { # $1 = max_connections, $2 = more server options; sets PGPORT
  PGPORT=$(free_port)
  "${AS[@]}" "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth=trust >/dev/null
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w \
    -o "-p $PGPORT -k $WORK -c listen_addresses=127.0.0.1 -c max_connections=$1 ${2:-}" start >/dev/null
}

create_agent() { # sets KEY and HASH for an agent named "bench"
  local out; out=$("$PORTCULLIS" agent create bench 2>&1)
  KEY=$(echo "$out" | grep '^pcs_')
  HASH=$(echo "$out" | sed -n 's/^key_hash = "\(.*\)"/\1/p')
  [ -n "$KEY" ] && [ -n "$HASH" ] || { echo "portcullis agent create printed no key: $out" >&2; exit 1; }
}
