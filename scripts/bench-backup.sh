#!/usr/bin/env bash
# Base backup and restore benchmark: pgec2-agent against pgBackRest and walross (walrus), with the
# same compression (zstd level 3), the same parallelism (2) and the same storage (a local
# directory, and S3 through moto), on one cluster holding a pgbench database and a table of random
# bytes (incompressible). Each repetition runs every tool on every storage, in a rotating order,
# so load from other users of the machine falls on all of them alike. Prints one CSV line per
# cell into $ROOT/backup-results.csv, then a table of medians ($ROOT/backup-summary.md).
#
#   scripts/bench-backup.sh                                  # pgbench scale 100 + 1 GB random, 3 repetitions
#   SCALE=20 RANDOM_MB=256 REPEAT=1 scripts/bench-backup.sh  # a quick run
#   TOOLS=pgec2 STORAGES=file scripts/bench-backup.sh        # one tool, one storage
#   PARALLEL=1 CPUS=0 scripts/bench-backup.sh                # every tool on one core, one process
#   BASE_AGENT=<older build> TOOLS="pgec2 pgec2-base pgbackrest limit" scripts/bench-backup.sh
#                                                            # two agent builds alternating in one run
#
# The row `limit` is the machine's limit measured in the same run (local directory only): the
# same data directory through `tar | zstd -$LEVEL -T$PARALLEL` into one file, and back through
# `zstd -d | tar -x` then `sync`. pgec2 runs at PGEC2_LOG=info, so each of its logs
# ($ROOT/logs/*-pgec2-*) ends with the busy seconds of each stage (`copy stages`,
# `restore stages`) and the time of the parts' sync (`parts made durable`); they are collected
# into $ROOT/stages.txt. pgec2's backup-verify of each backup is measured too, into
# $ROOT/verify.csv (rep,storage,tool,wall_s,cpu_s,maxrss_kb).
#
# Needs: PostgreSQL 15 (Debian), pgbackrest, walrus (cargo install wal-rus), moto_server, python3
# with boto3, /usr/bin/time (scripts/install-deps.sh), and a release build of the agent
# (cargo build --release --locked -p pgec2-agent --bin pgec2-agent). Runs as root.
#
# What is measured: wall time, user+system CPU seconds and peak RSS (/usr/bin/time -v fields) of
# the tool's command; stored bytes of the backup (WAL excluded); MB/s = data directory size
# (without pg_wal) / wall time. The data directory is read once before each backup, so it comes
# from the page cache for every tool. Restores write into an empty directory on the same disk;
# the restore is not started (recovery time is PostgreSQL's, the same for all).
set -euo pipefail

TOOLS=${TOOLS:-"pgec2 pgbackrest walrus limit"}
# shellcheck source=scripts/bench-common.sh
source "$(dirname "$0")/bench-common.sh"
SCALE=${SCALE:-100}
RANDOM_MB=${RANDOM_MB:-1024}
RESULTS=$ROOT/backup-results.csv

load_data() {
  as_pg "$PGBIN/pgbench" -h "$ROOT/socket" -p "$PORT" -U postgres -i -q -s "$SCALE" postgres >"$ROOT/logs/pgbench-init.log" 2>&1
  psql_bench -c "
    CREATE TABLE random_bytes (id int, payload bytea);
    ALTER TABLE random_bytes ALTER payload SET STORAGE EXTERNAL;
    INSERT INTO random_bytes
      SELECT n, (SELECT string_agg(uuid_send(gen_random_uuid()), ''::bytea) FROM generate_series(1, 64) WHERE n > 0)
      FROM generate_series(1, $RANDOM_MB * 1024) AS n;
    CHECKPOINT;"
  psql_bench -c "SELECT pg_switch_wal();" >/dev/null
  psql_bench -c "CHECKPOINT;"
}

# The tool's command for an action: backup, or restore into DEST.
tool_command() {
  local tool=$1 storage=$2 action=$3 dest=${4:-}
  case "$tool-$action" in
    pgec2-backup) echo "PGEC2_LOG=info $(pgec2_cmd "$storage") backup-push --pgdata $ROOT/data" ;;
    pgec2-restore) echo "PGEC2_LOG=info $(pgec2_cmd "$storage") backup-fetch $dest LATEST" ;;
    pgec2-verify) echo "$(pgec2_cmd "$storage") backup-verify LATEST" ;;
    pgec2-base-*)
      local command
      command=$(tool_command pgec2 "$storage" "$action" "$dest")
      echo "${command/\/bin\/pgec2-agent /\/bin\/pgec2-agent-base }"
      ;;
    limit-backup)
      echo "mkdir -p $ROOT/repo-limit && tar -cf - --warning=none --exclude=./pg_wal -C $ROOT/data ." \
        "| zstd -q -$LEVEL -T$PARALLEL -o $ROOT/repo-limit/data.tar.zst"
      ;;
    limit-restore) echo "zstd -q -d -T$PARALLEL -c $ROOT/repo-limit/data.tar.zst | tar -xf - -C $dest && sync" ;;
    pgbackrest-backup) echo "$(pgbackrest_cmd) --type=full backup" ;;
    pgbackrest-restore) echo "$(pgbackrest_cmd) --pg1-path=$dest restore" ;;
    walrus-backup) echo "$(walrus_cmd "$storage") backup-push --fast $ROOT/data" ;;
    walrus-restore) echo "$(walrus_cmd "$storage") backup-fetch $dest LATEST" ;;
  esac
}

# Runs a command as postgres under /usr/bin/time -v; prints "wall cpu_seconds maxrss_kb".
timed() {
  local log=$1
  shift
  if ! as_pg "${PIN[@]}" /usr/bin/time -v -o "$ROOT/time.out" bash -c "$*" >"$log" 2>&1; then
    echo "FAILED: $*" >&2
    tail -20 "$log" >&2
    return 1
  fi
  awk -F': ' '
    /Elapsed \(wall clock\)/ { n = split($2, t, ":"); wall = (n == 3) ? t[1] * 3600 + t[2] * 60 + t[3] : t[1] * 60 + t[2] }
    /User time/ { cpu += $2 } /System time/ { cpu += $2 }
    /Maximum resident set size/ { rss = $2 }
    END { printf "%.2f %.2f %d\n", wall, cpu, rss }' "$ROOT/time.out"
}

run_cell() {
  local rep=$1 storage=$2 tool=$3 data_bytes=$4
  local name="$storage-$tool-$rep" dest=$ROOT/restore kind=${tool%-base}
  # With KEEP_RESTORES=1 each restore gets its own directory, removed by the caller after the
  # set: on ext4, creating thousands of files right after thousands were deleted makes the
  # kernel skip every recently freed inode (`recently_deleted`, `find_inode_bit`), which charged
  # the restore that ran after another tool's (see docs/benchmarks.md, round seven).
  [ "${KEEP_RESTORES:-0}" = 1 ] && dest=$ROOT/restores/$name
  [ "$tool-$storage" = limit-s3 ] && return 0
  [ "$tool" = pgbackrest ] && pgbackrest_reset "$storage"
  cat "$ROOT"/data/base/*/* >/dev/null 2>&1 || true
  local backup restore stored
  backup=$(timed "$ROOT/logs/$name-backup.log" "$(tool_command "$tool" "$storage" backup)")
  stored=$(location_bytes "$(repository_location "$kind" "$storage" backups)")
  rm -rf "$dest" && mkdir -p "$dest" && chown postgres:postgres "$dest" && chmod 700 "$dest"
  sync
  restore=$(timed "$ROOT/logs/$name-restore.log" "$(tool_command "$tool" "$storage" restore "$dest")")
  [ "${KEEP_RESTORES:-0}" = 1 ] || rm -rf "$dest"
  if [ "$kind" = pgec2 ]; then
    # backup-verify re-reads the whole backup: its time and memory, into $ROOT/verify.csv.
    local verify
    verify=$(timed "$ROOT/logs/$name-verify.log" "$(tool_command "$tool" "$storage" verify)")
    echo "$rep,$storage,$tool,${verify// /,}" >>"$ROOT/verify.csv"
    grep -hE "stages|parts made durable" "$ROOT/logs/$name-backup.log" "$ROOT/logs/$name-restore.log" \
      | sed -e 's/\x1b\[[0-9;]*m//g' -e "s/^/$name /" >>"$ROOT/stages.txt" || true
  fi
  forget_backups "$kind" "$storage"
  awk -v rep="$rep" -v s="$storage" -v t="$tool" -v bytes="$data_bytes" -v stored="$stored" \
    -v b="$backup" -v r="$restore" 'BEGIN {
    split(b, B, " "); split(r, R, " "); mb = bytes / 1048576;
    printf "%s,%s,%s,%.0f,%.1f,%.0f,%.1f,%.0f,%.1f,%.0f,%.1f,%.0f,%.0f\n", rep, s, t, mb,
      B[1], mb / B[1], B[2], B[3] / 1024, R[1], mb / R[1], R[2], R[3] / 1024, stored / 1048576 }' | tee -a "$RESULTS"
}

# Writes $RESULTS: its header, then every tool on every storage, REPEAT times, in an order that
# rotates between repetitions. $1: bytes of the data directory (without pg_wal).
run_cells() {
  local data_bytes=$1 rep storage tool
  echo "rep,storage,tool,data_mb,backup_s,backup_mb_s,backup_cpu_s,backup_rss_mb,restore_s,restore_mb_s,restore_cpu_s,restore_rss_mb,stored_mb" | tee "$RESULTS"
  [ -f "$ROOT/verify.csv" ] || echo "rep,storage,tool,wall_s,cpu_s,maxrss_kb" >"$ROOT/verify.csv"
  for ((rep = 1; rep <= REPEAT; rep++)); do
    for storage in $STORAGES; do
      for tool in $(rotated_tools "$rep"); do
        run_cell "$rep" "$storage" "$tool" "$data_bytes"
      done
    done
  done
}

main() {
  bench_setup
  if [ -n "${BASE_AGENT:-}" ]; then
    cp "$BASE_AGENT" "$ROOT/bin/pgec2-agent-base" && chown postgres:postgres "$ROOT/bin/pgec2-agent-base"
  fi
  versions | tee "$ROOT/versions.txt"
  init_cluster "$(archive_to_storages)"
  echo "loading pgbench scale $SCALE and $RANDOM_MB MB of random bytes" >&2
  load_data
  local data_bytes
  data_bytes=$(du -sb --exclude=pg_wal "$ROOT/data" | cut -f1)
  run_cells "$data_bytes"
  summarize backup "$RESULTS" | tee "$ROOT/backup-summary.md"
}

# Sourced by scripts/bench-scaling.sh for its functions; run directly, it benchmarks.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
