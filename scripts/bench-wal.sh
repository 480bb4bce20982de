#!/usr/bin/env bash
# WAL archiving benchmark: pgec2-agent wal-push / wal-fetch against `pgbackrest archive-push` /
# `archive-get` and `walrus wal-push` / `wal-fetch`, with the same compression (zstd level 3), on
# the same set of real 16 MB segments (written by pgbench: initialisation, then a TPC-B run with
# frequent checkpoints), to a local directory and to S3 (moto).
#
# Pushes run one process per segment, one after another, exactly as archive_command runs them;
# fetches likewise, as restore_command runs them (`NAME pg_wal/RECOVERYXLOG`, each tool with its
# default read-ahead: pgec2 and walrus start a background prefetcher, pgBackRest without
# archive-async fetches one segment per call). Each repetition runs every tool on every storage in
# a rotating order. Prints one CSV line per cell into $ROOT/wal-results.csv, then a table of medians.
#
#   scripts/bench-wal.sh                          # 200 segments, 3 repetitions
#   SEGMENTS=50 REPEAT=1 scripts/bench-wal.sh     # a quick run
#   PARALLEL=1 CPUS=0 scripts/bench-wal.sh        # every tool pinned to one core
#   BASE_AGENT=/path/to/other/pgec2-agent scripts/bench-wal.sh
#                                                 # adds the tool pgec2-base: that binary, to
#                                                 # compare two builds of the agent in one run
#
# Figures: push p50/p99 latency per segment (ms, measured around the process), segments/s of the
# sequential loop, peak RSS of one push (max over all calls), CPU ms per push, stored MB; fetch
# MB/s (uncompressed bytes / loop time), fetch p50 latency, peak RSS of one fetch. The background
# prefetchers' CPU and memory are not in the fetch figures (they are not children of the call).
# pgec2's pushes log their stages (`wal-push stages`, PGEC2_LOG=pgec2_agent::wal=debug); the
# median of each stage per storage is printed at the end ($ROOT/wal-stages.md).
set -euo pipefail

ROOT=${ROOT:-/tmp/pgec2-bench-wal}
# shellcheck source=scripts/bench-common.sh
source "$(dirname "$0")/bench-common.sh"
SEGMENTS=${SEGMENTS:-200}
SCALE=${SCALE:-100}
RESULTS=$ROOT/wal-results.csv
SOURCE=$ROOT/source/pg_wal
if [ -n "${BASE_AGENT:-}" ] && [[ " $TOOLS " != *" pgec2-base "* ]]; then
  TOOLS=${TOOLS/pgec2/pgec2 pgec2-base}
fi

# Real segments: archive_command copies every finished segment into $SOURCE.
make_segments() {
  mkdir -p "$SOURCE"
  chown -R postgres:postgres "$ROOT/source"
  init_cluster "test ! -f $SOURCE/%f && cp %p $SOURCE/%f"
  psql_bench -c "ALTER SYSTEM SET checkpoint_timeout = '30s'" -c "SELECT pg_reload_conf()" >/dev/null
  echo "writing WAL with pgbench (scale $SCALE, then TPC-B) until $SEGMENTS segments are archived" >&2
  as_pg "$PGBIN/pgbench" -h "$ROOT/socket" -p "$PORT" -U postgres -i -q -s "$SCALE" postgres >"$ROOT/logs/pgbench-init.log" 2>&1
  while [ "$(segment_count)" -lt "$SEGMENTS" ]; do
    as_pg "$PGBIN/pgbench" -h "$ROOT/socket" -p "$PORT" -U postgres -c 4 -j 2 -T 20 postgres >>"$ROOT/logs/pgbench-run.log" 2>&1
    psql_bench -c "SELECT pg_switch_wal()" >/dev/null
    sleep 2
  done
  find "$SOURCE" -maxdepth 1 -regextype posix-extended -regex '.*/[0-9A-F]{24}' -printf '%f\n' | sort | head -n "$SEGMENTS" >"$ROOT/segments.txt"
  echo "segments: $(wc -l <"$ROOT/segments.txt") ($(head -1 "$ROOT/segments.txt") .. $(tail -1 "$ROOT/segments.txt"))" >&2
}

segment_count() { find "$SOURCE" -maxdepth 1 -regextype posix-extended -regex '.*/[0-9A-F]{24}' | wc -l; }

# The tool's command for an action (push or fetch), taking the file's arguments after it.
tool_command() {
  local tool=$1 storage=$2 action=$3
  if [ "$tool" = pgec2-base ]; then
    tool_command pgec2 "$storage" "$action" | sed 's#/bin/pgec2-agent #/bin/pgec2-agent-base #'
    return
  fi
  case "$tool-$action" in
    pgec2-push) echo "$(pgec2_cmd "$storage" | sed 's/^env /env PGEC2_LOG=pgec2_agent::wal=debug /') wal-push" ;;
    pgec2-*) echo "$(pgec2_cmd "$storage") wal-$action" ;;
    pgbackrest-push) echo "$(pgbackrest_cmd) archive-push" ;;
    pgbackrest-fetch) echo "$(pgbackrest_cmd) archive-get" ;;
    walrus-*) echo "$(walrus_cmd "$storage") wal-$action" ;;
  esac
}

reset_repository() {
  local tool=$1 storage=$2
  case "$storage-$tool" in
    *-pgbackrest) pgbackrest_reset "$storage" ;;
    *-pgec2 | *-pgec2-base) forget_archive pgec2 "$storage" && rm -f "$SOURCE/.pgec2-archive-owner" ;;
    *-walrus) forget_archive walrus "$storage" ;;
  esac
}

# Runs `COMMAND ARGS...` for every segment as postgres, one at a time, recording per call the
# latency in µs and "maxrss_kb user_s sys_s" from /usr/bin/time. $1: push or fetch.
run_loop() {
  local mode=$1 command=$2 out=$3
  as_pg "${PIN[@]}" bash -s "$mode" "$command" "$out" "$SOURCE" "$ROOT/fetch/pg_wal" "$ROOT/segments.txt" <<'EOF'
set -eu
mode=$1 command=$2 out=$3 source=$4 dest_dir=$5 list=$6
: >"$out.latency"; : >"$out.time"
while read -r segment; do
  if [ "$mode" = push ]; then arguments="$source/$segment"; else arguments="$segment $dest_dir/RECOVERYXLOG"; fi
  start=${EPOCHREALTIME/./}
  # shellcheck disable=SC2086
  if ! /usr/bin/time -f "%M %U %S" -a -o "$out.time" $command $arguments >>"$out.log" 2>&1; then
    echo "FAILED: $command $arguments (see $out.log)" >&2
    exit 1
  fi
  end=${EPOCHREALTIME/./}
  echo $((end - start)) >>"$out.latency"
  if [ "$mode" = fetch ]; then
    cmp -s "$dest_dir/RECOVERYXLOG" "$source/$segment" || { echo "FAILED: $segment fetched with different content" >&2; exit 1; }
    rm -f "$dest_dir/RECOVERYXLOG"
  fi
done <"$list"
EOF
}

run_cell() {
  local rep=$1 storage=$2 tool=$3 name="$2-$3-$1"
  reset_repository "$tool" "$storage"
  rm -rf "$ROOT/fetch" && mkdir -p "$ROOT/fetch/pg_wal" && chown -R postgres:postgres "$ROOT/fetch"
  cat "$SOURCE"/0* >/dev/null
  sync # the previous cell's unsynced writes (walrus fetches without fsync) must not slow this one's fsyncs
  run_loop push "$(tool_command "$tool" "$storage" push)" "$ROOT/logs/$name-push"
  local stored
  stored=$(location_bytes "$(repository_location "${tool%-base}" "$storage" wal)")
  sync
  run_loop fetch "$(tool_command "$tool" "$storage" fetch)" "$ROOT/logs/$name-fetch"
  sleep 3 # let background prefetchers finish before the next cell
  python3 - "$rep" "$storage" "$tool" "$ROOT/logs/$name" "$stored" <<'EOF' | tee -a "$RESULTS"
import statistics, sys
rep, storage, tool, base, stored = sys.argv[1:]
def load(kind):
    latency = [int(line) / 1000 for line in open(f"{base}-{kind}.latency")]
    times = [line.split() for line in open(f"{base}-{kind}.time") if line.strip() and not line.startswith("Command")]
    rss = max(int(t[0]) for t in times) / 1024
    cpu = statistics.mean(float(t[1]) + float(t[2]) for t in times) * 1000
    return latency, rss, cpu
def pct(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]
push, push_rss, push_cpu = load("push")
fetch, fetch_rss, fetch_cpu = load("fetch")
n = len(push)
print(f"{rep},{storage},{tool},{n},{pct(push, 50):.1f},{pct(push, 99):.1f},{n / (sum(push) / 1000):.2f},"
      f"{push_rss:.1f},{push_cpu:.0f},{int(stored) / 1048576:.1f},"
      f"{n * 16 / (sum(fetch) / 1000):.0f},{pct(fetch, 50):.1f},{pct(fetch, 99):.1f},{fetch_rss:.1f},{fetch_cpu:.0f}")
EOF
}

main() {
  bench_setup
  if [ -n "${BASE_AGENT:-}" ]; then
    cp "$BASE_AGENT" "$ROOT/bin/pgec2-agent-base" && chown postgres:postgres "$ROOT/bin/pgec2-agent-base"
  fi
  versions | tee "$ROOT/versions.txt"
  make_segments
  echo "rep,storage,tool,segments,push_p50_ms,push_p99_ms,push_seg_s,push_rss_mb,push_cpu_ms,stored_mb,fetch_mb_s,fetch_p50_ms,fetch_p99_ms,fetch_rss_mb,fetch_cpu_ms" | tee "$RESULTS"
  for ((rep = 1; rep <= REPEAT; rep++)); do
    for storage in $STORAGES; do
      for tool in $(rotated_tools "$rep" | swap_builds "$rep"); do
        run_cell "$rep" "$storage" "$tool"
      done
    done
  done
  summarize wal "$RESULTS" | tee "$ROOT/wal-summary.md"
  stage_medians | tee "$ROOT/wal-stages.md"
}

# On even repetitions pgec2 and pgec2-base (when both run) trade places: the rotation alone
# keeps each tool's predecessor the same in every repetition.
swap_builds() {
  if (($1 % 2 == 0)) && [[ " $TOOLS " == *" pgec2-base "* ]]; then sed 's/^pgec2$/pgec2-swap/; s/^pgec2-base$/pgec2/; s/^pgec2-swap$/pgec2-base/'; else cat; fi
}

# Median milliseconds of each stage of pgec2's pushes, per storage and build, from the push logs;
# for a build that logs them, also the threads the seals ran on and the load of the cores they
# were chosen from (tasks runnable, this push included).
stage_medians() {
  python3 - "$ROOT"/logs/*-pgec2-*-push.log <<'EOF'
import collections, re, statistics, sys
stages, threads, runnable = {}, {}, {}
for path in sys.argv[1:]:
    storage, tool = re.match(r"([^-]+)-(.+)-[0-9]+-push\.log$", path.rsplit("/", 1)[1]).groups()
    cell = (storage, tool)
    for line in open(path, errors="replace"):
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
        if "wal-push stages" in line or "wal-push finished" in line:
            prefix = "process_" if "finished" in line else ""
            for name, value in re.findall(r"(\w+)_ms=([0-9.]+)", line):
                stages.setdefault(cell, {}).setdefault(prefix + name, []).append(float(value))
        if "wal-push seal threads" in line:
            for value in re.findall(r"workers=([0-9]+)", line):
                threads.setdefault(cell, collections.Counter())[value] += 1
            for value in re.findall(r"runnable=Some\(([0-9]+)\)", line):
                runnable.setdefault(cell, collections.Counter())[value] += 1
def counts(counter):
    return ", ".join(f"{key}: {count}" for key, count in sorted(counter.items(), key=lambda item: int(item[0])))
names = ("read", "identify", "seal", "guards", "store", "process_elapsed")
print("| storage | tool | " + " | ".join(f"{name} ms (p50)" for name in names) + " | seal threads: pushes | runnable: pushes |")
print("|---|---|" + "---:|" * len(names) + "---|---|")
for (storage, tool), values in sorted(stages.items()):
    medians = (f"{statistics.median(values[name]):.1f}" if name in values else "" for name in names)
    print(f"| {storage} | {tool} | " + " | ".join(medians)
          + f" | {counts(threads.get((storage, tool), {}))} | {counts(runnable.get((storage, tool), {}))} |")
EOF
}

main "$@"
