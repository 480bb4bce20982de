#!/usr/bin/env bash
# Archiving throughput of pgec2-agent wal-push, synchronous against `archive_async = true`, the
# way PostgreSQL's archiver calls it: a pg_wal-shaped directory with every segment of $SRC marked
# ready, one `wal-push pg_wal/<file>` per segment in order, `.ready` renamed to `.done` after
# each success. Local directory archive, zstd level 3, `upload_concurrency = $PARALLEL`.
#
#   SRC=/path/to/segments scripts/bench-archive-async.sh        # 3 repetitions of each mode
#
# SRC holds real 16 MiB segments (e.g. copied aside by a test cluster's archive_command);
# AGENT is the agent binary (default target/release/pgec2-agent). Prints one line per run:
# mode, total seconds, segments per second, median latency of one call (ms).
set -euo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
AGENT=${AGENT:-$HERE/target/release/pgec2-agent}
SRC=${SRC:?set SRC to a directory of WAL segments}
ROOT=${ROOT:-/tmp/pgec2-bench-archive}
PARALLEL=${PARALLEL:-2}
REPEAT=${REPEAT:-3}

run() {
  local mode=$1 dir=$ROOT/$1 file started t0 total
  local -a latencies=()
  rm -rf "$dir" && mkdir -p "$dir/data/pg_wal/archive_status" "$dir/archive"
  cp "$SRC"/* "$dir/data/pg_wal/"
  local -a files=()
  for file in "$SRC"/*; do files+=("$(basename "$file")"); done
  for file in "${files[@]}"; do touch "$dir/data/pg_wal/archive_status/$file.ready"; done
  printf '[storage]\nurl = "file://%s/archive"\n[compression]\nalgorithm = "zstd"\nlevel = 3\n[transfer]\nupload_concurrency = %s\narchive_async = %s\n' \
    "$dir" "$PARALLEL" "$([ "$mode" = async ] && echo true || echo false)" >"$dir/agent.toml"
  cd "$dir/data"
  started=$(date +%s.%N)
  for file in "${files[@]}"; do
    t0=$(date +%s.%N)
    "$AGENT" --config "$dir/agent.toml" wal-push "pg_wal/$file"
    mv "pg_wal/archive_status/$file.ready" "pg_wal/archive_status/$file.done"
    latencies+=("$(echo "($(date +%s.%N) - $t0) * 1000" | bc)")
  done
  total=$(echo "$(date +%s.%N) - $started" | bc)
  printf '%s\n' "${latencies[@]}" | sort -n | awk -v mode="$mode" -v total="$total" \
    '{ a[NR] = $1 } END { printf "%s total_s=%.2f segments_per_s=%.2f median_ms=%.0f\n", mode, total, NR / total, a[int((NR + 1) / 2)] }'
  cd "$HERE"
}

for ((rep = 1; rep <= REPEAT; rep++)); do
  run sync
  run async
done
