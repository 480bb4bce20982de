#!/usr/bin/env bash
# How backup and restore time grow: pgec2-agent against pgBackRest and walross (walrus) at
# growing data directories (SIZES, GiB) and at many small relations (RELATIONS tables), in one
# run, with the cells and settings of scripts/bench-backup.sh (zstd level 3, parallelism 2, a local
# directory; STORAGES=s3 or "file s3" for S3 through moto). Prints one CSV line per cell into
# $ROOT/scaling-results.csv (the first column names the data set), then a table of medians per
# data set ($ROOT/scaling-summary.md).
#
#   scripts/bench-scaling.sh                                 # 1, 2 and 4 GiB, then 10 000 tables
#   SIZES="1 2" RELATIONS=10000 REPEAT=1 scripts/bench-scaling.sh
#
# The data grows in place: each step adds half incompressible bytes (a bytea table of random
# bytes) and half compressible rows (md5 text) until the data directory (without pg_wal) reaches
# the size. WAL written while loading is not archived (archive_command is `true` then); before
# the backups pgec2's wal-push becomes the archive_command (its backup-push waits for its WAL).
# The relations set is a fresh cluster with RELATIONS tables of 20 rows each (one 8 KiB heap
# file per table, plus the catalogs'). Needs what scripts/bench-backup.sh needs; runs as root.
set -euo pipefail

ROOT=${ROOT:-/tmp/pgec2-bench-scaling}
STORAGES=${STORAGES:-file}
TOOLS=${TOOLS:-"pgec2 pgbackrest walrus"}
REPEAT=${REPEAT:-1}
# shellcheck source=scripts/bench-backup.sh
source "$(dirname "$0")/bench-backup.sh"
SIZES=${SIZES:-"1 2 4"}
RELATIONS=${RELATIONS:-10000}
RESULTS=$ROOT/scaling-cells.csv

data_bytes() { du -sb --exclude=pg_wal "$ROOT/data" | cut -f1; }

set_archive_command() {
  psql_bench -c "ALTER SYSTEM SET archive_command = '$1'" -c "SELECT pg_reload_conf()" >/dev/null
}

# Adds rows until the data directory holds GIB GiB: 64 MiB of random bytes, then about 64 MiB of
# compressible text, repeated.
grow_to() {
  local target=$(($1 * 1024 * 1024 * 1024)) step=0
  psql_bench -c "
    CREATE TABLE IF NOT EXISTS random_bytes (id int, payload bytea);
    ALTER TABLE random_bytes ALTER payload SET STORAGE EXTERNAL;
    CREATE TABLE IF NOT EXISTS text_rows (id bigint, payload text);" >/dev/null
  while [ "$(data_bytes)" -lt "$target" ]; do
    step=$((step + 1))
    psql_bench -c "
      INSERT INTO random_bytes
        SELECT n, (SELECT string_agg(uuid_send(gen_random_uuid()), ''::bytea) FROM generate_series(1, 64) WHERE n > 0)
        FROM generate_series(1, 64 * 1024) AS n;
      INSERT INTO text_rows SELECT n, repeat(md5(n::text), 4) FROM generate_series(1, 64 * 5500) AS n;" >/dev/null
    if [ $((step % 8)) -eq 0 ]; then psql_bench -c "CHECKPOINT" >/dev/null; fi
  done
  psql_bench -c "CHECKPOINT" >/dev/null
}

# RELATIONS tables of 20 rows each, in batches of 500 per transaction.
many_relations() {
  local first
  for ((first = 1; first <= RELATIONS; first += 500)); do
    psql_bench -c "DO \$\$ BEGIN
      FOR i IN $first..$((first + 499 < RELATIONS ? first + 499 : RELATIONS)) LOOP
        EXECUTE format('CREATE TABLE small_%s (id int, value bigint)', i);
        EXECUTE format('INSERT INTO small_%s SELECT g, g * 7 FROM generate_series(1, 20) AS g', i);
      END LOOP; END \$\$;" >/dev/null
  done
  psql_bench -c "CHECKPOINT" >/dev/null
}

# Empties pgec2's archives, which name the cluster they belong to: the next data set is a new
# cluster, and pgec2 refuses to archive a second cluster into the same prefix.
forget_pgec2_archives() {
  local storage
  for storage in $STORAGES; do forget_archive pgec2 "$storage"; done
}

# The cells of bench-backup.sh for the current data, labelled SET in scaling-results.csv.
measure() {
  local set=$1 bytes
  set_archive_command "$(archive_to_storages)"
  psql_bench -c "SELECT pg_switch_wal()" >/dev/null
  psql_bench -c "CHECKPOINT" >/dev/null
  bytes=$(data_bytes)
  echo "$set: $((bytes / 1048576)) MiB, $(find "$ROOT/data" -path "$ROOT/data/pg_wal" -prune -o -type f -print | wc -l) files, load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$ROOT/scaling-sets.txt" >&2
  run_cells "$bytes"
  tail -n +2 "$RESULTS" | sed "s/^/$set,/" >>"$ROOT/scaling-results.csv"
  { echo "### $set"; echo; summarize backup "$RESULTS" | tail -n +3; echo; } | tee -a "$ROOT/scaling-summary.md"
  set_archive_command true
}

main_scaling() {
  bench_setup
  versions | tee "$ROOT/versions.txt"
  echo "set,rep,storage,tool,data_mb,backup_s,backup_mb_s,backup_cpu_s,backup_rss_mb,restore_s,restore_mb_s,restore_cpu_s,restore_rss_mb,stored_mb" >"$ROOT/scaling-results.csv"
  : >"$ROOT/scaling-summary.md"
  init_cluster true
  psql_bench -c "ALTER SYSTEM SET max_wal_size = '1GB'" -c "SELECT pg_reload_conf()" >/dev/null
  local size
  for size in $SIZES; do
    echo "growing the data directory to $size GiB" >&2
    grow_to "$size"
    measure "${size}GiB"
  done
  stop_cluster
  rm -rf "$ROOT/data"
  forget_pgec2_archives
  init_cluster true
  echo "creating $RELATIONS tables" >&2
  many_relations
  KEEP_RESTORES=1 measure "${RELATIONS}-relations"
  rm -rf "$ROOT/restores"
  stop_cluster
  rm -rf "$ROOT/data" "$ROOT/repo-pgec2" "$ROOT/repo-walrus" "$ROOT/repo-pgbackrest"
}

main_scaling "$@"
