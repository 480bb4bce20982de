# shellcheck shell=bash
# Shared by scripts/bench-backup.sh and scripts/bench-wal.sh: scratch directory, S3 API servers
# (moto), a PostgreSQL 15 cluster, and each tool's configuration with the same compression
# (zstd, level $LEVEL) and parallelism ($PARALLEL).
#
# Runs as root; PostgreSQL and every tool run as the postgres user, from binaries copied into
# $ROOT (the checkout may not be readable by that user). pgBackRest talks to S3 only over TLS, so
# reaches the same moto server through a small TLS-terminating proxy (moto's own --ssl mode closes
# connections without a TLS close_notify, which pgBackRest rejects); pgec2 and walrus use plain
# HTTP. The proxy costs pgBackRest's S3 figures a little.

ROOT=${ROOT:-/tmp/pgec2-bench}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
LEVEL=${LEVEL:-3}
PARALLEL=${PARALLEL:-2}
# CPUS: the cores the measured commands may run on (taskset -c syntax, e.g. 0 for one core);
# PostgreSQL and moto stay unpinned. Empty: every core.
CPUS=${CPUS:-}
PIN=()
[ -n "$CPUS" ] && PIN=(taskset -c "$CPUS")
REPEAT=${REPEAT:-3}
STORAGES=${STORAGES:-"file s3"}
TOOLS=${TOOLS:-"pgec2 pgbackrest walrus"}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AGENT_SOURCE=${AGENT:-$HERE/target/release/pgec2-agent}
WALRUS_SOURCE=${WALRUS:-$(command -v walrus || echo /root/.cargo/bin/walrus)}
PORT=${PORT:-55432}
HTTP_PORT=${HTTP_PORT:-55900}
HTTPS_PORT=${HTTPS_PORT:-55901}
KEY=bench
SECRET=benchsecret
HTTP_URL=http://127.0.0.1:$HTTP_PORT
HTTPS_URL=https://127.0.0.1:$HTTPS_PORT
MOTO_PIDS=""

as_pg() { runuser -u postgres -- env HOME=/tmp "$@"; }

require() {
  local missing=()
  for command in "$@"; do command -v "$command" >/dev/null 2>&1 || missing+=("$command"); done
  [ -x "$AGENT_SOURCE" ] || missing+=("$AGENT_SOURCE (cargo build --release --locked -p pgec2-agent --bin pgec2-agent)")
  [ -x /usr/bin/time ] || missing+=("/usr/bin/time (apt-get install time)")
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "error: missing: ${missing[*]} (scripts/install-deps.sh installs most)" >&2
    exit 1
  fi
}

stop_moto() {
  local pid
  for pid in $MOTO_PIDS; do kill "$pid" 2>/dev/null || true; done
  MOTO_PIDS=""
}

# Fresh scratch directory, binaries copied in, a moto server with a `bench` bucket, reachable
# over HTTP and, through a TLS proxy, over HTTPS.
bench_setup() {
  require moto_server pgbackrest python3 runuser
  [ -x "$WALRUS_SOURCE" ] || { echo "error: walrus not found (cargo install wal-rus)" >&2; exit 1; }
  rm -rf "$ROOT"
  mkdir -p "$ROOT/bin" "$ROOT/socket" "$ROOT/logs"
  cp "$AGENT_SOURCE" "$ROOT/bin/pgec2-agent"
  cp "$WALRUS_SOURCE" "$ROOT/bin/walrus"
  chown -R postgres:postgres "$ROOT"
  moto_server -H 127.0.0.1 -p "$HTTP_PORT" >"$ROOT/logs/moto-http.log" 2>&1 &
  MOTO_PIDS="$!"
  start_tls_proxy
  trap 'stop_cluster; stop_moto' EXIT
  s3_python - <<'EOF'
import time
for index, (url, s3) in enumerate(clients()):
    for attempt in range(60):
        try:
            s3.create_bucket(Bucket="bench") if index == 0 else s3.head_bucket(Bucket="bench")
            break
        except Exception:
            time.sleep(0.5)
    else:
        raise SystemExit(f"S3 at {url} did not start")
EOF
  write_pgec2_config file "file://$ROOT/repo-pgec2"
  write_pgec2_config s3 "s3://bench/pgec2"
}

# TLS on $HTTPS_PORT forwarded to moto on $HTTP_PORT, closing TLS connections cleanly.
start_tls_proxy() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -keyout "$ROOT/tls.key" -out "$ROOT/tls.crt" >/dev/null 2>&1
  python3 - "$ROOT/tls.crt" "$ROOT/tls.key" "$HTTPS_PORT" "$HTTP_PORT" >"$ROOT/logs/tls-proxy.log" 2>&1 <<'PYTHON' &
import asyncio, ssl, sys
cert, key, listen, target = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
async def pipe(reader, writer):
    try:
        while data := await reader.read(1 << 18):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()
async def handle(client_reader, client_writer):
    try:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen, ssl=context)
    async with server:
        await server.serve_forever()
asyncio.run(main())
PYTHON
  MOTO_PIDS="$MOTO_PIDS $!"
}

# Runs a python snippet with boto3 clients for both moto servers (`clients()`).
s3_python() {
  local script
  script=$(cat)
  AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET HTTP_URL=$HTTP_URL HTTPS_URL=$HTTPS_URL python3 -c "
import os, sys, warnings, boto3
warnings.filterwarnings('ignore')
def client(url):
    return boto3.client('s3', endpoint_url=url, region_name='us-east-1', verify=False)
def clients():
    return [(os.environ[k], client(os.environ[k])) for k in ('HTTP_URL', 'HTTPS_URL')]
$script" "$@"
}

# Bytes stored under a prefix of the bench bucket at a moto URL.
s3_bytes() {
  s3_python "$1" "$2" <<'EOF'
total = 0
for page in client(sys.argv[1]).get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix=sys.argv[2]):
    total += sum(item["Size"] for item in page.get("Contents", []))
print(total)
EOF
}

# Deletes everything under a prefix of the bench bucket at a moto URL (frees moto's memory).
s3_delete() {
  s3_python "$1" "$2" <<'EOF'
s3 = client(sys.argv[1])
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix=sys.argv[2]):
    keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
    if keys:
        s3.delete_objects(Bucket="bench", Delete={"Objects": keys})
EOF
}

write_pgec2_config() {
  local name=$1 url=$2
  {
    echo "[storage]"
    echo "url = \"$url\""
    if [ "${url%%:*}" = s3 ]; then
      echo "endpoint = \"$HTTP_URL\""
      echo "region = \"us-east-1\""
    fi
    echo "[compression]"
    echo "algorithm = \"zstd\""
    echo "level = $LEVEL"
    echo "[transfer]"
    echo "upload_concurrency = $PARALLEL"
    echo "download_concurrency = $PARALLEL"
  } >"$ROOT/pgec2-$name.toml"
  chown postgres:postgres "$ROOT/pgec2-$name.toml"
}

# The settings every benchmark cluster shares: where it listens, the WAL level.
cluster_settings() {
  cat <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$ROOT/socket'
wal_level = replica
max_wal_senders = 4
EOF
}

# initdb and start a cluster at $ROOT/data with the given archive_command.
init_cluster() {
  local archive_command=$1
  as_pg "$PGBIN/initdb" -D "$ROOT/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  {
    cluster_settings
    echo "shared_buffers = 512MB"
    echo "max_wal_size = 8GB"
    echo "archive_mode = on"
    echo "archive_command = '$archive_command'"
  } >>"$ROOT/data/postgresql.conf"
  as_pg "$PGBIN/pg_ctl" start -w -D "$ROOT/data" -l "$ROOT/logs/postgres.log" >/dev/null
}

stop_cluster() {
  [ -f "$ROOT/data/postmaster.pid" ] || return 0
  as_pg "$PGBIN/pg_ctl" stop -w -m fast -D "$ROOT/data" >/dev/null || true
}

psql_bench() { as_pg "$PGBIN/psql" -h "$ROOT/socket" -p "$PORT" -U postgres -X -qAt "$@" postgres; }

# pgBackRest configuration for a storage (file or s3), stanza `bench`.
pgbackrest_conf() {
  local storage=$1
  {
    echo "[global]"
    if [ "$storage" = s3 ]; then
      echo "repo1-type=s3"
      echo "repo1-path=/pgbackrest"
      echo "repo1-s3-bucket=bench"
      echo "repo1-s3-endpoint=127.0.0.1"
      echo "repo1-storage-port=$HTTPS_PORT"
      echo "repo1-storage-verify-tls=n"
      echo "repo1-s3-uri-style=path"
      echo "repo1-s3-region=us-east-1"
      echo "repo1-s3-key=$KEY"
      echo "repo1-s3-key-secret=$SECRET"
    else
      echo "repo1-path=$ROOT/repo-pgbackrest"
    fi
    echo "compress-type=zst"
    echo "compress-level=$LEVEL"
    echo "process-max=$PARALLEL"
    echo "start-fast=y"
    echo "archive-check=n"
    echo "log-level-console=warn"
    echo "log-level-file=off"
    echo "lock-path=$ROOT/pgbackrest-lock"
    echo "spool-path=$ROOT/pgbackrest-spool"
    echo "[bench]"
    echo "pg1-path=$ROOT/data"
    echo "pg1-port=$PORT"
    echo "pg1-socket-path=$ROOT/socket"
  } >"$ROOT/pgbackrest.conf"
  chown postgres:postgres "$ROOT/pgbackrest.conf"
}

pgbackrest_cmd() { echo "pgbackrest --config=$ROOT/pgbackrest.conf --stanza=bench"; }

# Recreates pgBackRest's repository for a storage (its stanza needs the cluster running).
pgbackrest_reset() {
  local storage=$1
  pgbackrest_conf "$storage"
  if [ "$storage" = s3 ]; then s3_delete "$HTTPS_URL" pgbackrest/; else rm -rf "$ROOT/repo-pgbackrest"; fi
  as_pg bash -c "$(pgbackrest_cmd) stanza-create" >"$ROOT/logs/stanza-create.log" 2>&1 \
    || { cat "$ROOT/logs/stanza-create.log" >&2; return 1; }
}

# Where a tool keeps its backups or its WAL (KIND: backups | wal): a directory, or "URL PREFIX".
repository_location() {
  local tool=$1 storage=$2 kind=$3 path
  case "$tool-$kind" in
    pgec2-backups) path=repo-pgec2/backups ;;
    pgec2-wal) path=repo-pgec2/wal ;;
    pgbackrest-backups) path=repo-pgbackrest/backup ;;
    pgbackrest-wal) path=repo-pgbackrest/archive ;;
    walrus-backups) path=repo-walrus/basebackups_005 ;;
    walrus-wal) path=repo-walrus/wal_005 ;;
    limit-*) path=repo-limit ;;
  esac
  if [ "$storage" = file ]; then
    echo "$ROOT/$path"
  elif [ "$tool" = pgbackrest ]; then
    echo "$HTTPS_URL ${path#repo-}/"
  else
    echo "$HTTP_URL ${path#repo-}/"
  fi
}

# The archive_command of a cluster pgec2 backs up: wal-push into the archive of every storage
# measured (backup-push waits for its WAL to be in its own archive).
archive_to_storages() {
  local storage command=""
  for storage in $STORAGES; do command+="${command:+ && }$(pgec2_cmd "$storage") wal-push %p"; done
  echo "$command"
}

# Empties a tool's whole archive on a storage (pgec2 or walrus): backups, WAL and, for pgec2, the
# marker naming the cluster the archive belongs to.
forget_archive() {
  local tool=$1 storage=$2
  case $storage in
    file) rm -rf "${ROOT:?}/repo-$tool" ;;
    s3) s3_delete "$HTTP_URL" "$tool/" ;;
  esac
}

# Removes a tool's backups (pgec2 keeps its WAL archive, which archive_command feeds).
forget_backups() {
  local tool=$1 storage=$2 location url prefix
  location=$(repository_location "$tool" "$storage" backups)
  case "$storage-$tool" in
    file-pgbackrest) rm -rf "$ROOT/repo-pgbackrest" ;;
    *-limit) rm -rf "$ROOT/repo-limit" ;;
    s3-pgbackrest) s3_delete "$HTTPS_URL" pgbackrest/ ;;
    file-*) rm -rf "$location" ;;
    s3-*) read -r url prefix <<<"$location" && s3_delete "$url" "$prefix" ;;
  esac
}

# Bytes stored at a repository_location.
location_bytes() {
  local url prefix
  case $1 in
    /*) du -sb "$1" | cut -f1 ;;
    *) read -r url prefix <<<"$1" && s3_bytes "$url" "$prefix" ;;
  esac
}

# walross (wal-g's variables) for a storage, as `NAME=value` words for env.
walrus_env() {
  local storage=$1
  echo "WALG_COMPRESSION_METHOD=zstd WALG_COMPRESSION_LEVEL=$LEVEL"
  echo "WALG_UPLOAD_CONCURRENCY=$PARALLEL WALG_DOWNLOAD_CONCURRENCY=$PARALLEL"
  echo "PGHOST=$ROOT/socket PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres PGDATA=$ROOT/data"
  if [ "$storage" = s3 ]; then
    echo "WALG_S3_PREFIX=s3://bench/walrus AWS_ENDPOINT_URL=$HTTP_URL AWS_S3_FORCE_PATH_STYLE=true"
    echo "AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET AWS_REGION=us-east-1"
  else
    echo "WALG_FILE_PREFIX=$ROOT/repo-walrus"
  fi
}

walrus_cmd() { echo "env $(walrus_env "$1" | tr '\n' ' ') $ROOT/bin/walrus"; }

pgec2_cmd() {
  echo "env PGHOST=$ROOT/socket PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres" \
    "AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET AWS_REGION=us-east-1" \
    "$ROOT/bin/pgec2-agent --config $ROOT/pgec2-$1.toml"
}

# The tools in a different order for each repetition, so that none always runs first or last.
rotated_tools() {
  local rep=$1
  read -ra list <<<"$TOOLS"
  local count=${#list[@]} index
  for ((index = 0; index < count; index++)); do echo "${list[$(((index + rep) % count))]}"; done
}

versions() {
  if [ -n "${AGENT:-}" ]; then
    echo "pgec2-agent $AGENT_SOURCE (sha256 $(sha256sum "$AGENT_SOURCE" | cut -c1-12))"
  else
    echo "pgec2-agent $(git -C "$HERE" rev-parse --short HEAD)$(git -C "$HERE" diff --quiet -- crates/agent/src crates/core/src || echo +local-changes)"
  fi
  [ -n "${BASE_AGENT:-}" ] && echo "pgec2-agent-base $BASE_AGENT (sha256 $(sha256sum "$BASE_AGENT" | cut -c1-12))"
  echo "level $LEVEL, parallelism $PARALLEL, cores ${CPUS:-all}"
  pgbackrest version
  "$ROOT/bin/walrus" --version
  "$PGBIN/postgres" --version
  echo "moto $(python3 -c 'import moto; print(moto.__version__)')"
  echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/ {print $2}') GB RAM, kernel $(uname -r)"
}

# Markdown table of the median of every numeric column per (storage, tool), from a results CSV
# whose first column is the repetition.
summarize() {
  python3 - "$@" <<'PYTHON'
import csv, statistics, sys
kind, path = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(path)))
if not rows:
    sys.exit(f"no {kind} results in {path}")
columns = [c for c in rows[0] if c not in ("rep", "storage", "tool")]
groups = {}
for row in rows:
    groups.setdefault((row["storage"], row["tool"]), []).append(row)
print(f"{kind}: median of {max(len(g) for g in groups.values())} repetitions")
print()
print("| storage | tool | " + " | ".join(columns) + " |")
print("|---|---|" + "---:|" * len(columns))
for (storage, tool), group in groups.items():
    cells = []
    for column in columns:
        values = [float(row[column]) for row in group if row[column] not in ("", "nan")]
        cells.append(f"{statistics.median(values):g}" if values else "")
    print(f"| {storage} | {tool} | " + " | ".join(cells) + " |")
PYTHON
}
