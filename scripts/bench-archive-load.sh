#!/usr/bin/env bash
# Sustained archiving under load: a real PostgreSQL 15 primary with `archive_mode = on` and
# `archive_command` set to each tool in turn, while pgbench writes WAL faster than a synchronous
# archiver keeps up, for a fixed time; then the load stops and the archiver drains the backlog.
#
#   MODES: pgec2-sync        pgec2-agent wal-push %p
#          pgec2-sync1       the same with `upload_concurrency = 1` (the same code since the archiver's
#                            pushes seal on one thread; with BASE_AGENT, compare older builds)
#          pgec2-async       the same with `archive_async = true`
#          pgbackrest-sync   pgbackrest archive-push %p
#          pgbackrest-async  the same with `archive-async=y` (spool path, process-max=$PARALLEL)
#          walrus            walrus wal-push %p (WALG_UPLOAD_CONCURRENCY=$PARALLEL)
#          pgec2-sync-base, pgec2-async-base: as above with the agent binary $BASE_AGENT (to
#          compare two builds of the agent in one run)
#   all with zstd level $LEVEL and $PARALLEL processes, to a local directory (STORAGES=file) and/or
#   S3 through moto (STORAGES=s3).
#
#   scripts/bench-archive-load.sh                              # 60 s of load, 2 repetitions
#   DURATION=30 REPEAT=1 MODES="pgec2-async pgbackrest-async" scripts/bench-archive-load.sh
#   PARALLEL=1 CPUS=0 scripts/bench-archive-load.sh           # every archiver on one core, one
#                                                              # process (pgbench and PostgreSQL
#                                                              # keep every core)
#
# Load: pgbench, $CLIENTS clients at $RATE transactions/s (-R), each a TPC-B transaction plus a
# transactional logical message of one of 64 stored 270 KB payloads (half random hex, half
# repeated text: the WAL compresses about 4x at zstd 3), synchronous_commit = off; so every
# tool sees the same WAL (~$RATE x 270 KB/s) unless the primary itself falls behind (then TPS
# shows it). checkpoint_timeout = 30s, max_wal_size = 8GB, the same for every tool.
#
# Each cell starts from a copy of the same initialised cluster. Sampled every second: PostgreSQL's
# archived_count (pg_stat_archiver), the `.ready` files, the WAL position, the CPU time of the
# archiver process and everything it starts (a cgroup v1 cpuacct group it is moved into, which
# also holds pgBackRest's forked asynchronous process; without one, no CPU figure), the largest
# resident set of those processes; every archive_command call runs under /usr/bin/time (wall,
# peak RSS, CPU, context switches); pgec2's pushes log their stages into the server log
# (`wal-push stages`). After the load: the time until no `.ready` file is left (drain; drain
# segments/s = the backlog at the stop / that time). Then the archive is checked: every segment
# from the first to pg_stat_archiver's last_archived_wal listed in it, and the first, the last
# and $SAMPLES random segments (each with its successor) fetched back with the tool's own fetch
# command and read through pg_waldump (every record's CRC).
#
# Prints one CSV line per cell into $ROOT/archive-load-results.csv, the medians at the end; the
# samples stay in $ROOT/logs/<cell>.samples.csv.
set -euo pipefail

ROOT=${ROOT:-/tmp/pgec2-bench-archive-load}
REPEAT=${REPEAT:-2}
STORAGES=${STORAGES:-file}
# shellcheck source=scripts/bench-common.sh
source "$(dirname "$0")/bench-common.sh"
MODES=${MODES:-"pgec2-sync pgec2-async pgbackrest-sync pgbackrest-async walrus"}
DURATION=${DURATION:-60}
RATE=${RATE:-560}
CLIENTS=${CLIENTS:-4}
SCALE=${SCALE:-10}
DRAIN_MAX=${DRAIN_MAX:-900}
SAMPLES=${SAMPLES:-4}
RESULTS=$ROOT/archive-load-results.csv
CGROUP=/sys/fs/cgroup/cpuacct/pgec2-bench-archiver

# An initialised cluster (pgbench tables, the payloads), archive_mode off, copied for each cell.
make_template() {
  as_pg "$PGBIN/initdb" -D "$ROOT/template" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  {
    cluster_settings
    echo "shared_buffers = 256MB"
    echo "max_wal_size = 8GB"
    echo "checkpoint_timeout = 30s"
    echo "synchronous_commit = off"
  } >>"$ROOT/template/postgresql.conf"
  as_pg "$PGBIN/pg_ctl" start -w -D "$ROOT/template" -l "$ROOT/logs/template.log" >/dev/null
  as_pg "$PGBIN/pgbench" -h "$ROOT/socket" -p "$PORT" -U postgres -i -q -s "$SCALE" postgres >"$ROOT/logs/pgbench-init.log" 2>&1
  as_pg "$PGBIN/psql" -h "$ROOT/socket" -p "$PORT" -U postgres -X -q postgres <<'EOF'
CREATE TABLE wal_payload (id int PRIMARY KEY, payload bytea);
ALTER TABLE wal_payload ALTER payload SET STORAGE EXTERNAL;
INSERT INTO wal_payload
SELECT b, convert_to((SELECT string_agg(md5(random()::text || b || g), '') FROM generate_series(1, 4096) g), 'UTF8')
       || convert_to(repeat('pgec2 archive benchmark row ' || b || ' ', 4681), 'UTF8')
FROM generate_series(1, 64) b;
CHECKPOINT;
EOF
  as_pg "$PGBIN/pg_ctl" stop -w -m fast -D "$ROOT/template" >/dev/null
  cat >"$ROOT/load.sql" <<'EOF'
\set aid random(1, 100000 * :scale)
\set bid random(1, :scale)
\set tid random(1, 10 * :scale)
\set delta random(-5000, 5000)
\set payload random(1, 64)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
SELECT pg_logical_emit_message(true, 'bench', payload) IS NOT NULL FROM wal_payload WHERE id = :payload;
END;
EOF
  chown postgres:postgres "$ROOT/load.sql"
}

# The archive_command of a mode, run under /usr/bin/time (per call: wall s, peak RSS kB, user s,
# system s, voluntary and involuntary context switches).
archive_command() {
  local mode=$1 storage=$2 timing=$3 command stages='s/^env /env PGEC2_LOG=pgec2_agent::wal=debug /'
  case $mode in
    pgec2-sync1) command="$(pgec2_cmd "$storage-sync1" | sed "$stages") wal-push" ;;
    pgec2-sync*) command="$(pgec2_cmd "$storage" | sed "$stages") wal-push" ;;
    pgec2-async*) command="$(pgec2_cmd "$storage-async" | sed "$stages") wal-push" ;;
    pgbackrest-*) command="$(pgbackrest_cmd) archive-push" ;;
    walrus) command="$(walrus_cmd "$storage") wal-push" ;;
  esac
  [ "${mode%-base}" != "$mode" ] && command=${command/\/bin\/pgec2-agent /\/bin\/pgec2-agent-base }
  echo "${PIN[*]}${PIN[*]:+ }/usr/bin/time -a -o $timing -f %e,%M,%U,%S,%w,%c $command %p"
}

fetch_command() {
  local mode=$1 storage=$2
  case $mode in
    pgec2-*) echo "env PGEC2_PREFETCH=0 $(pgec2_cmd "$storage" | sed 's/^env //') wal-fetch" ;;
    pgbackrest-*) echo "$(pgbackrest_cmd) archive-get" ;;
    walrus) echo "$(walrus_cmd "$storage") wal-fetch" ;;
  esac
}

reset_archive() {
  local mode=$1 storage=$2
  case "$storage-$mode" in
    *-pgec2-*) forget_archive pgec2 "$storage" ;;
    *-walrus) forget_archive walrus "$storage" ;;
  esac
  rm -rf "$ROOT/pgbackrest-spool"
}

# Segment names (24 hex digits) stored in a mode's archive.
archived_segments() {
  local mode=$1 storage=$2 location url prefix
  location=$(repository_location "${mode%%-*}" "$storage" wal)
  case $location in
    /*) [ -d "$location" ] && find "$location" -type f -printf '%f\n' ;;
    *)
      read -r url prefix <<<"$location"
      s3_python "$url" "$prefix" <<'EOF'
for page in client(sys.argv[1]).get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix=sys.argv[2]):
    for item in page.get("Contents", []):
        print(item["Key"].rsplit("/", 1)[-1])
EOF
      ;;
  esac | grep -oE '^[0-9A-F]{24}' | sort -u
}

archiver_query() {
  psql_bench -F, -c "SELECT archived_count, failed_count, coalesce(last_archived_wal, ''),
    pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint FROM pg_stat_archiver"
}

ready_count() { find "$ROOT/data/pg_wal/archive_status" -name '*.ready' | wc -l; }
cpu_ns() { cat "$CGROUP/cpuacct.usage" 2>/dev/null || echo 0; }

# Largest VmHWM (kB) among the non-PostgreSQL processes of the archiver's cgroup.
group_peak_rss() {
  local pid peak=0 hwm
  while read -r pid; do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ] && continue
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$hwm" ] && [ "$hwm" -gt "$peak" ] && peak=$hwm
  done < <(cat "$CGROUP/cgroup.procs" 2>/dev/null)
  echo "$peak"
}

# One line a second until $1 exists: seconds, archived, failed, last, lsn, ready, cpu ns, rss kB.
sampler() {
  local stop=$1 out=$2
  while [ ! -e "$stop" ]; do
    echo "$(date +%s.%N),$(archiver_query),$(ready_count),$(cpu_ns),$(group_peak_rss)" >>"$out"
    sleep 1
  done
}

# Moves the archiver (and so every archive_command it starts) into the cpuacct cgroup.
track_archiver() {
  local postmaster archiver
  postmaster=$(head -1 "$ROOT/data/postmaster.pid")
  archiver=$(ps -o pid=,args= --ppid "$postmaster" | awk '/archiver/ {print $1}')
  mkdir -p "$CGROUP" 2>/dev/null && echo "$archiver" >"$CGROUP/cgroup.procs" 2>/dev/null \
    || echo "warning: no cpuacct cgroup; archiving CPU not measured" >&2
}

# Fetches SAMPLES segments and their successors back; pg_waldump reads every record between.
check_content() {
  local mode=$1 storage=$2 name=$3 first=$4 last=$5 dir=$ROOT/verify/pg_wal checked=0
  local fetch segment next start end
  rm -rf "$ROOT/verify" && mkdir -p "$dir" && chown -R postgres:postgres "$ROOT/verify"
  fetch=$(fetch_command "$mode" "$storage")
  for segment in $(python3 - "$first" "$last" "$SAMPLES" <<'EOF'
import random, sys
def number(name):
    return int(name[8:16], 16) * 256 + int(name[16:], 16)
first, last, count = number(sys.argv[1]), number(sys.argv[2]), int(sys.argv[3])
pool = list(range(first, last))
picked = sorted(set([first, last - 1] + random.Random(first).sample(pool, min(count, len(pool)))))
print(" ".join(f"{sys.argv[1][:8]}{n // 256:08X}{n % 256:08X}" for n in picked if n >= first))
EOF
  ); do
    next=$(printf '%s%08X%08X' "${segment:0:8}" $(((16#${segment:8:8} * 256 + 16#${segment:16:8} + 1) / 256)) $(((16#${segment:16:8} + 1) % 256)))
    as_pg bash -c "cd $ROOT/verify && $fetch $segment $dir/$segment && $fetch $next $dir/$next" >>"$ROOT/logs/$name.verify.log" 2>&1 \
      || { echo "FAILED: fetching $segment or $next back (see $ROOT/logs/$name.verify.log)" >&2; return 1; }
    start=$(printf '%X/%X' $((16#${segment:8:8})) $((16#${segment:16:8} * 16777216)))
    end=$(printf '%X/%X' $((16#${next:8:8})) $((16#${next:16:8} * 16777216)))
    "$PGBIN/pg_waldump" -q -p "$dir" -t $((16#${segment:0:8})) -s "$start" -e "$end" >>"$ROOT/logs/$name.verify.log" 2>&1 \
      || { echo "FAILED: pg_waldump of $segment as fetched back (see $ROOT/logs/$name.verify.log)" >&2; return 1; }
    rm -f "$dir/$segment" "$dir/$next"
    checked=$((checked + 1))
  done
  echo "$checked"
}

run_cell() {
  local rep=$1 storage=$2 mode=$3 name="$2-$3-$1"
  local samples=$ROOT/logs/$name.samples.csv timing=$ROOT/logs/$name.time stop=$ROOT/sampler.stop
  local load before after ready_stop t0 t1 t2 cpu0 cpu1 cpu2 drained=1 first missing checked
  rm -rf "$ROOT/data" "$stop" && cp -a "$ROOT/template" "$ROOT/data"
  reset_archive "$mode" "$storage"
  : >"$timing" && chown postgres:postgres "$timing"
  echo "archive_mode = on" >>"$ROOT/data/postgresql.conf"
  echo "archive_command = '$(archive_command "$mode" "$storage" "$timing")'" >>"$ROOT/data/postgresql.conf"
  as_pg "$PGBIN/pg_ctl" start -w -D "$ROOT/data" -l "$ROOT/logs/$name.postgres.log" >/dev/null
  if [ "${mode%%-*}" = pgbackrest ]; then
    pgbackrest_reset "$storage"
    [ "$mode" = pgbackrest-async ] && echo "archive-async=y" >>"$ROOT/pgbackrest.conf"
  fi
  track_archiver
  load=$(cut -d' ' -f1 /proc/loadavg)
  first=$(psql_bench -c "SELECT pg_walfile_name(pg_current_wal_lsn())")
  echo "cell $name: load average $load, first segment $first" >&2
  sampler "$stop" "$samples" &
  local sampler_pid=$!
  before=$(archiver_query) cpu0=$(cpu_ns) t0=$(date +%s.%N)
  as_pg "$PGBIN/pgbench" -h "$ROOT/socket" -p "$PORT" -U postgres -n -f "$ROOT/load.sql" \
    -c "$CLIENTS" -j 2 -R "$RATE" -T "$DURATION" postgres >"$ROOT/logs/$name.pgbench.log" 2>&1
  t1=$(date +%s.%N) after=$(archiver_query) cpu1=$(cpu_ns) ready_stop=$(ready_count)
  until [ "$(ready_count)" -eq 0 ]; do
    if (($(date +%s) - ${t1%.*} > DRAIN_MAX)); then drained=0 && break; fi
    sleep 0.2
  done
  t2=$(date +%s.%N) cpu2=$(cpu_ns)
  local done_state
  sleep 1 # PostgreSQL counts a call after its .ready became .done
  done_state=$(archiver_query)
  touch "$stop" && wait "$sampler_pid"
  missing=$(comm -23 <(python3 -c "
import sys
first, last = sys.argv[1], sys.argv[2]
n, m = int(first[8:16], 16) * 256 + int(first[16:], 16), int(last[8:16], 16) * 256 + int(last[16:], 16)
print('\n'.join(f'{first[:8]}{i // 256:08X}{i % 256:08X}' for i in range(n, m + 1)))" "$first" "$(echo "$done_state" | cut -d, -f3)") \
    <(archived_segments "$mode" "$storage") | wc -l)
  [ "${mode%%-*}" = pgbackrest ] && pgbackrest_conf "$storage" # synchronous archive-get
  checked=$(check_content "$mode" "$storage" "$name" "$first" "$(echo "$done_state" | cut -d, -f3)") || checked=-1
  sleep 2 # let background prefetchers finish
  stop_cluster
  [ -d "$CGROUP" ] && while read -r pid; do echo "$pid" >/sys/fs/cgroup/cpuacct/cgroup.procs; done <"$CGROUP/cgroup.procs"
  python3 - "$rep" "$storage" "$mode" "$before" "$after" "$done_state" "$t0" "$t1" "$t2" "$cpu0" "$cpu1" "$cpu2" \
    "$ready_stop" "$drained" "$ROOT/logs/$name.pgbench.log" "$timing" "$samples" "$missing" "$checked" "$load" <<'EOF' | tee -a "$RESULTS"
import re, statistics, sys
(rep, storage, mode, before, after, done, t0, t1, t2, cpu0, cpu1, cpu2, ready_stop, drained,
 pgbench, timing, samples, missing, checked, load) = sys.argv[1:]
before, after, done = ([int(x) for x in (s.split(",")[0], s.split(",")[1], s.split(",")[3])] for s in (before, after, done))
t0, t1, t2 = float(t0), float(t1), float(t2)
cpu0, cpu1, cpu2 = int(cpu0), int(cpu1), int(cpu2)
tps = re.search(r"tps = ([0-9.]+)", open(pgbench).read())
calls = [line.strip().split(",") for line in open(timing) if re.match(r"^[0-9.]+,[0-9]+(,|$)", line.strip())]
walls = sorted(float(c[0]) for c in calls)
rss = max([int(c[1]) for c in calls] + [int(line.strip().split(",")[-1]) for line in open(samples) if line.count(",") >= 7] + [0])
archived_load, archived_all = after[0] - before[0], done[0] - before[0]
wal_mb = (after[2] - before[2]) / 1048576
drain = (t2 - t1) if drained == "1" else float("nan")
print(f"{rep},{storage},{mode},{load},{wal_mb:.0f},{wal_mb / 16 / (t1 - t0):.2f},{float(tps.group(1)) if tps else 0:.0f},"
      f"{archived_load / (t1 - t0):.2f},{ready_stop},{drain:.1f},{int(ready_stop) / drain if drain > 0 else float('nan'):.2f},"
      f"{archived_all / (t2 - t0):.2f},{(cpu2 - cpu0) / 1e9:.1f},{(cpu2 - cpu0) / 1e6 / max(archived_all, 1):.0f},"
      f"{statistics.median(walls) * 1000 if walls else 0:.0f},{rss / 1024:.1f},{done[1] - before[1]},{missing},{checked}")
EOF
}

main() {
  bench_setup
  versions | tee "$ROOT/versions.txt"
  make_template
  if [ -n "${BASE_AGENT:-}" ]; then
    cp "$BASE_AGENT" "$ROOT/bin/pgec2-agent-base" && chown postgres:postgres "$ROOT/bin/pgec2-agent-base"
  fi
  write_pgec2_config file-async "file://$ROOT/repo-pgec2"
  write_pgec2_config s3-async "s3://bench/pgec2"
  for config in "$ROOT"/pgec2-*-async.toml; do echo "archive_async = true" >>"$config"; done
  write_pgec2_config file-sync1 "file://$ROOT/repo-pgec2"
  write_pgec2_config s3-sync1 "s3://bench/pgec2"
  sed -i 's/^upload_concurrency = .*/upload_concurrency = 1/' "$ROOT"/pgec2-*-sync1.toml
  echo "rep,storage,tool,load1,wal_mb,wal_seg_s,tps,archived_seg_s_load,backlog_at_stop,drain_s,drain_seg_s,archived_seg_s_overall,cpu_s,cpu_ms_per_seg,call_p50_ms,peak_rss_mb,failed,missing,checked" | tee "$RESULTS"
  for ((rep = 1; rep <= REPEAT; rep++)); do
    for storage in $STORAGES; do
      for mode in $(TOOLS=$MODES rotated_tools "$rep"); do
        run_cell "$rep" "$storage" "$mode"
      done
    done
  done
  rmdir "$CGROUP" 2>/dev/null || true
  summarize archive-load "$RESULTS" | tee "$ROOT/archive-load-summary.md"
}

main "$@"
