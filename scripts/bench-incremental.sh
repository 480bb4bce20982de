#!/usr/bin/env bash
# Incremental backup benchmark: pgec2-agent's block-level incremental backups against
# pgBackRest's incremental backups, with the same compression (zstd level 3), parallelism (2)
# and storage, on one cluster holding a pgbench database. Debian's pgBackRest is 2.45, which has
# no block incremental (that came in 2.52): its `--type=incr` copies every changed file whole,
# and that is what is measured for it.
#
# Each repetition, for each tool: a full backup; an UPDATE of 5% of pgbench_accounts (a
# contiguous range of rows, the next 5% each time) and a checkpoint; an incremental backup; a
# second 5% update and a second incremental; then a restore of the last incremental (the whole
# chain) into an empty directory. Prints one CSV line per cell into
# $ROOT/incremental-results.csv, then a table of medians ($ROOT/incremental-summary.md).
#
#   scripts/bench-incremental.sh                         # pgbench scale 50, 3 repetitions, file storage
#   SCALE=10 REPEAT=1 scripts/bench-incremental.sh       # a quick run
#   STORAGES="file s3" scripts/bench-incremental.sh      # S3 (moto) too
#
# Needs what scripts/bench-backup.sh needs (see scripts/bench-common.sh) and a release build of
# the agent (cargo build --release --locked -p pgec2-agent --bin pgec2-agent). Runs as root.
#
# Measured: wall time of each backup and of the chain restore (the restore is not started);
# stored bytes of the full backup and of each incremental (WAL excluded); incr_pct = the first
# incremental's stored bytes as a percentage of the full's.
set -euo pipefail

STORAGES=${STORAGES:-file}
TOOLS=${TOOLS:-"pgec2 pgbackrest"}
# shellcheck source=scripts/bench-common.sh
source "$(dirname "$0")/bench-common.sh"
SCALE=${SCALE:-50}
RESULTS=$ROOT/incremental-results.csv
ACCOUNTS=$((SCALE * 100000))
STEP=$((ACCOUNTS / 20))

# The tool's command for an action: full, incr, or restore into DEST.
tool_command() {
  local tool=$1 storage=$2 action=$3 dest=${4:-}
  case "$tool-$action" in
    pgec2-full) echo "$(pgec2_cmd "$storage") backup-push --pgdata $ROOT/data" ;;
    pgec2-incr) echo "$(pgec2_cmd "$storage") backup-push --incremental --pgdata $ROOT/data" ;;
    pgec2-restore) echo "$(pgec2_cmd "$storage") backup-fetch $dest LATEST" ;;
    pgbackrest-full) echo "$(pgbackrest_cmd) --type=full backup" ;;
    pgbackrest-incr) echo "$(pgbackrest_cmd) --type=incr backup" ;;
    pgbackrest-restore) echo "$(pgbackrest_cmd) --pg1-path=$dest restore" ;;
  esac
}

# Runs a command as postgres; prints its wall time in seconds.
timed() {
  local log=$1 started
  shift
  started=$(date +%s.%N)
  if ! as_pg bash -c "$*" >"$log" 2>&1; then
    echo "FAILED: $*" >&2
    tail -20 "$log" >&2
    return 1
  fi
  echo "$(date +%s.%N) - $started" | bc
}

stored() { location_bytes "$(repository_location "$1" "$2" backups)"; }

# Updates the next 5% of pgbench_accounts (a contiguous range) and checkpoints.
update_five_percent() {
  local round=$1 from to
  from=$((round * STEP + 1))
  to=$(((round + 1) * STEP))
  psql_bench -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN $from AND $to; CHECKPOINT;"
}

run_cell() {
  local rep=$1 storage=$2 tool=$3 round=$4 name="$2-$3-$1"
  local dest=$ROOT/restore full_s incr_s incr2_s restore_s full_b incr_b incr2_b
  [ "$tool" = pgbackrest ] && pgbackrest_reset "$storage"
  full_s=$(timed "$ROOT/logs/$name-full.log" "$(tool_command "$tool" "$storage" full)")
  full_b=$(stored "$tool" "$storage")
  update_five_percent "$round"
  incr_s=$(timed "$ROOT/logs/$name-incr.log" "$(tool_command "$tool" "$storage" incr)")
  incr_b=$(($(stored "$tool" "$storage") - full_b))
  update_five_percent $((round + 1))
  incr2_s=$(timed "$ROOT/logs/$name-incr2.log" "$(tool_command "$tool" "$storage" incr)")
  incr2_b=$(($(stored "$tool" "$storage") - full_b - incr_b))
  rm -rf "$dest" && mkdir -p "$dest" && chown postgres:postgres "$dest" && chmod 700 "$dest"
  sync
  restore_s=$(timed "$ROOT/logs/$name-restore.log" "$(tool_command "$tool" "$storage" restore "$dest")")
  rm -rf "$dest"
  forget_backups "$tool" "$storage"
  awk -v rep="$rep" -v s="$storage" -v t="$tool" -v fs="$full_s" -v fb="$full_b" -v is="$incr_s" \
    -v ib="$incr_b" -v i2s="$incr2_s" -v i2b="$incr2_b" -v rs="$restore_s" 'BEGIN {
    printf "%s,%s,%s,%.1f,%.1f,%.1f,%.2f,%.1f,%.1f,%.2f,%.1f\n", rep, s, t, fs, fb / 1048576, is, ib / 1048576,
      100 * ib / fb, i2s, i2b / 1048576, rs }' | tee -a "$RESULTS"
}

main() {
  bench_setup
  versions | tee "$ROOT/versions.txt"
  init_cluster "$(archive_to_storages)"
  echo "loading pgbench scale $SCALE" >&2
  as_pg "$PGBIN/pgbench" -h "$ROOT/socket" -p "$PORT" -U postgres -i -q -s "$SCALE" postgres \
    >"$ROOT/logs/pgbench-init.log" 2>&1
  psql_bench -c "CHECKPOINT;"
  echo "rep,storage,tool,full_s,full_mb,incr_s,incr_mb,incr_pct,incr2_s,incr2_mb,chain_restore_s" | tee "$RESULTS"
  local round=0
  for ((rep = 1; rep <= REPEAT; rep++)); do
    for storage in $STORAGES; do
      for tool in $(rotated_tools "$rep"); do
        run_cell "$rep" "$storage" "$tool" "$round"
        round=$(((round + 2) % 18))
      done
    done
  done
  summarize incremental "$RESULTS" | tee "$ROOT/incremental-summary.md"
}

main "$@"
