#!/usr/bin/env bash
# The cost of client-side encryption: backup-push, backup-fetch and wal-push of one cluster,
# without and with encryption (aes-256-gcm, a key file), alternating in the same run so load from
# other users of the machine falls on both alike. Same compression (zstd 3), same parallelism,
# file storage (encryption costs CPU on the host, not network). Prints medians
# ($ROOT/encryption-summary.md) after one CSV line per measurement ($ROOT/encryption-results.csv).
#
#   scripts/bench-encryption.sh                                  # pgbench scale 20 + 256 MB random, 3 repetitions
#   SCALE=5 RANDOM_MB=64 REPEAT=1 SEGMENTS=8 scripts/bench-encryption.sh   # a quick run
#   AGENT=target/debug/pgec2-agent scripts/bench-encryption.sh   # another agent binary
#
# Needs PostgreSQL 15 (Debian), openssl, /usr/bin/time and a release build of the agent
# (cargo build --release --locked -p pgec2-agent --bin pgec2-agent). Runs as root; PostgreSQL and
# the agent run as the postgres user.
set -euo pipefail

ROOT=${ROOT:-/tmp/pgec2-bench-encryption}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
SCALE=${SCALE:-20}
RANDOM_MB=${RANDOM_MB:-256}
REPEAT=${REPEAT:-3}
SEGMENTS=${SEGMENTS:-16}
PARALLEL=${PARALLEL:-2}
PORT=${PORT:-55442}
HERE=$(cd "$(dirname "$0")/.." && pwd)
AGENT_SOURCE=${AGENT:-$HERE/target/release/pgec2-agent}
RESULTS=$ROOT/encryption-results.csv

as_pg() { runuser -u postgres -- env HOME=/tmp "$@"; }
psql_bench() { as_pg "$PGBIN/psql" -h "$ROOT/socket" -p "$PORT" -U postgres -d postgres -qAt "$@"; }

config() { # MODE ARCHIVE_DIR
  local mode=$1 archive=$2
  printf '[storage]\nurl = "file://%s"\n\n[compression]\nalgorithm = "zstd"\nlevel = 3\n\n' "$archive"
  printf '[transfer]\nupload_concurrency = %s\ndownload_concurrency = %s\n\n' "$PARALLEL" "$PARALLEL"
  printf '[postgres]\npgdata = "%s/data"\nhost = "%s/socket"\nport = %s\n' "$ROOT" "$ROOT" "$PORT"
  if [ "$mode" = encrypted ]; then
    printf '\n[encryption]\nmode = "aes-256-gcm"\nkey_file = "%s/archive.key"\n' "$ROOT"
  fi
}

setup() {
  [ -x "$AGENT_SOURCE" ] || { echo "error: no agent at $AGENT_SOURCE (cargo build --release -p pgec2-agent)" >&2; exit 1; }
  [ -x /usr/bin/time ] || { echo "error: /usr/bin/time missing (apt-get install time)" >&2; exit 1; }
  [ -f "$ROOT/data/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$ROOT/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$ROOT"
  mkdir -p "$ROOT/bin" "$ROOT/socket" "$ROOT/logs" "$ROOT/segments"
  cp "$AGENT_SOURCE" "$ROOT/bin/pgec2-agent"
  openssl rand -hex 32 >"$ROOT/archive.key"
  for mode in plain encrypted; do config $mode "$ROOT/archive-$mode" >"$ROOT/$mode.toml"; done
  chown -R postgres:postgres "$ROOT"
  chmod 600 "$ROOT/archive.key"
  as_pg "$PGBIN/initdb" -D "$ROOT/data" -U postgres --data-checksums >"$ROOT/logs/initdb.log"
  local push="$ROOT/bin/pgec2-agent --config $ROOT/plain.toml wal-push %p && $ROOT/bin/pgec2-agent --config $ROOT/encrypted.toml wal-push %p"
  cat >>"$ROOT/data/postgresql.conf" <<EOF
port = $PORT
unix_socket_directories = '$ROOT/socket'
listen_addresses = ''
wal_level = replica
archive_mode = on
archive_command = '$push'
max_wal_size = 4GB
EOF
  as_pg "$PGBIN/pg_ctl" -D "$ROOT/data" -l "$ROOT/logs/postgres.log" -w start >/dev/null
  as_pg "$PGBIN/pgbench" -h "$ROOT/socket" -p "$PORT" -U postgres -i -q -s "$SCALE" postgres >"$ROOT/logs/pgbench.log" 2>&1
  psql_bench -c "CREATE TABLE random_bytes (id int, payload bytea);
    ALTER TABLE random_bytes ALTER payload SET STORAGE EXTERNAL;
    INSERT INTO random_bytes SELECT n, (SELECT string_agg(uuid_send(gen_random_uuid()), ''::bytea)
      FROM generate_series(1, 64) WHERE n > 0) FROM generate_series(1, $RANDOM_MB * 1024) AS n;
    CHECKPOINT;"
  psql_bench -c "SELECT pg_switch_wal();" >/dev/null
  # Segments for wal-push: the newest archived ones (recycled files ahead hold old WAL), copied out (pushed into archives of their own).
  sleep 2
  local segment
  for segment in $(ls "$ROOT/data/pg_wal/archive_status" | grep -E '^[0-9A-F]{24}[.]done$' | sed 's/[.]done$//' | sort | tail -n "$SEGMENTS"); do
    cp "$ROOT/data/pg_wal/$segment" "$ROOT/segments/"
  done
  chown -R postgres:postgres "$ROOT/segments"
  echo "operation,mode,repetition,wall_s,cpu_s,max_rss_kb" >"$RESULTS"
}

measure() { # OPERATION MODE REPETITION COMMAND...
  local operation=$1 mode=$2 repetition=$3
  shift 3
  /usr/bin/time -f "%e %U %S %M" -o "$ROOT/logs/time" runuser -u postgres -- env HOME=/tmp "$@" >>"$ROOT/logs/$operation.log" 2>&1
  read -r wall user system rss <"$ROOT/logs/time"
  echo "$operation,$mode,$repetition,$wall,$(awk "BEGIN { print $user + $system }"),$rss" >>"$RESULTS"
}

push_segments() { # CONFIG
  local segment
  for segment in "$ROOT"/segments/*; do
    "$ROOT/bin/pgec2-agent" --config "$1" wal-push "$segment"
  done
}

run() {
  local repetition mode agent="$ROOT/bin/pgec2-agent"
  for repetition in $(seq 1 "$REPEAT"); do
    local order="plain encrypted"
    [ $((repetition % 2)) -eq 0 ] && order="encrypted plain"
    for mode in $order; do
      measure backup-push $mode "$repetition" "$agent" --config "$ROOT/$mode.toml" backup-push --pgdata "$ROOT/data"
      measure backup-fetch $mode "$repetition" "$agent" --config "$ROOT/$mode.toml" backup-fetch "$ROOT/restore-$mode" LATEST
      rm -rf "$ROOT/restore-$mode"
      local wal_archive="$ROOT/wal-$mode-$repetition"
      config $mode "$wal_archive" >"$ROOT/wal-$mode.toml"
      chown postgres:postgres "$ROOT/wal-$mode.toml"
      measure "wal-push-x$SEGMENTS" $mode "$repetition" env ROOT="$ROOT" bash -c "$(declare -f push_segments); push_segments $ROOT/wal-$mode.toml"
      rm -rf "$wal_archive"
    done
  done
}

summarize() {
  python3 - "$RESULTS" "$ROOT" <<'EOF' | tee "$ROOT/encryption-summary.md"
import csv, statistics, sys, os
rows = list(csv.DictReader(open(sys.argv[1])))
data = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(sys.argv[2], "data")) if "pg_wal" not in d for f in fs)
print(f"data directory {data / 2**20:.0f} MiB (without pg_wal), medians of {len({r['repetition'] for r in rows})} repetitions\n")
print("| operation | plain: wall s | encrypted: wall s | wall overhead | plain: CPU s | encrypted: CPU s | CPU overhead | peak RSS plain / encrypted MiB |")
print("|---|---|---|---|---|---|---|---|")
for operation in dict.fromkeys(r["operation"] for r in rows):
    get = lambda mode, field: statistics.median(float(r[field]) for r in rows if r["operation"] == operation and r["mode"] == mode)
    wall, cpu, rss = [(get("plain", f), get("encrypted", f)) for f in ("wall_s", "cpu_s", "max_rss_kb")]
    pct = lambda pair: f"{(pair[1] / pair[0] - 1) * 100:+.0f}%" if pair[0] else "n/a"
    print(f"| {operation} | {wall[0]:.2f} | {wall[1]:.2f} | {pct(wall)} | {cpu[0]:.2f} | {cpu[1]:.2f} | {pct(cpu)} | {rss[0] / 1024:.0f} / {rss[1] / 1024:.0f} |")
EOF
}

setup
run
summarize
as_pg "$PGBIN/pg_ctl" -D "$ROOT/data" -m fast stop >/dev/null
