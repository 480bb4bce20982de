#!/usr/bin/env bash
# The whole pgec2 mission on one machine, with no Kubernetes cluster and no AWS account:
#   1. a PostgresHost comes up (local cloud: PostgreSQL set up by the agent's `host apply`),
#   2. a table gets a first batch of rows, a base backup is taken on the policy's schedule,
#   3. a second batch is written and WAL is archived; we note the time T; a third batch follows,
#   4. a second PostgresHost is restored from the first host's backups to T,
#   5. the demo checks that the restored host holds exactly the rows committed before T.
# Everything (API state, hosts, backups) lives in one state directory. Interrupt the demo at
# any point and run it again: it stops what the last run left and starts from a clean directory.
set -euo pipefail
cd "$(dirname "$0")/.."

# Outside the checkout: PostgreSQL runs as `postgres`, which may not enter the checkout's parents.
STATE_DIR="${PGEC2_DEMO_STATE:-/var/tmp/pgec2-demo}"
BACKUP_DIR="$STATE_DIR/backups"
EXAMPLES="scripts/demo"
OPERATOR="target/release/pgec2-operator"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "installing what is missing"
scripts/install-deps.sh

step "building pgec2 (release)"
cargo build --release --locked --bins

step "cleaning up any earlier demo in $STATE_DIR"
"$OPERATOR" local stop --state-dir "$STATE_DIR" || true
rm -rf "$STATE_DIR"
mkdir -p "$STATE_DIR/manifests" "$BACKUP_DIR"
chmod 755 "$STATE_DIR"
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$BACKUP_DIR"      # the hosts' archive_command writes here as postgres
fi
sed "s|__BACKUP_DIR__|$BACKUP_DIR|" "$EXAMPLES/policy.yaml" > "$STATE_DIR/manifests/policy.yaml"
cp "$EXAMPLES/primary.yaml" "$STATE_DIR/manifests/"

operator_pid=""
cleanup() {
    if [ -n "$operator_pid" ]; then
        kill "$operator_pid" 2>/dev/null || true
        wait "$operator_pid" 2>/dev/null || true
    fi
    "$OPERATOR" local stop --state-dir "$STATE_DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "starting the operator in local mode (progress: $STATE_DIR/operator.log)"
"$OPERATOR" local run --state-dir "$STATE_DIR" "$STATE_DIR/manifests" >"$STATE_DIR/operator.log" 2>&1 &
operator_pid=$!

status_field() { # KIND NAME PYTHON-SUBSCRIPT: one field of `local get -o json`, empty when absent
    "$OPERATOR" local get --state-dir "$STATE_DIR" -o json "$1" "$2" 2>/dev/null \
        | python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d' + sys.argv[1]))" "$3" 2>/dev/null || true
}
last_backup() { # NAME: the host's newest backup (its status, else its policy's summary of it)
    local name
    name="$(status_field postgreshost "$1" "['status']['lastBackup']['name']")"
    [ -n "$name" ] || name="$(status_field backuppolicy demo \
        "[[h['lastBackup']['name'] for h in d['status']['hosts'] if h['host'] == 'default/$1' and h.get('lastBackup')][0]")"
    echo "$name"
}
wait_ready() { # NAME TIMEOUT
    local deadline=$((SECONDS + $2)) phase="" shown=""
    while [ $SECONDS -lt $deadline ]; do
        phase="$(status_field postgreshost "$1" "['status']['phase']")"
        [ "$phase" != "$shown" ] && [ -n "$phase" ] && { echo "$1: $phase"; shown="$phase"; }
        [ "$phase" = "Ready" ] && return 0
        [ "$phase" = "Failed" ] && break
        kill -0 "$operator_pid" 2>/dev/null || { echo "error: the operator exited; see $STATE_DIR/operator.log" >&2; exit 1; }
        sleep 2
    done
    echo "error: $1 did not become Ready (phase: ${phase:-none}); see $STATE_DIR/operator.log" >&2
    "$OPERATOR" local get --state-dir "$STATE_DIR" >&2 || true
    tail -n 30 "$STATE_DIR/operator.log" >&2 || true
    return 1
}
if [ "$(id -u)" -eq 0 ]; then DB_USER=postgres; else DB_USER="$(id -un)"; fi
as_db_user() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql_on() { # NAME SQL: through the host's Unix socket (peer authentication as the OS user)
    local port
    port="$(status_field postgreshost "$1" "['status']['endpoint']['port']")"
    as_db_user psql -X -A -t -q -v ON_ERROR_STOP=1 -h "$STATE_DIR/hosts/default/$1/volume/run" -p "$port" \
        -U "$DB_USER" -d postgres -c "$2"
}
CHECK_SQL="SELECT count(*) || ' rows, checksum ' || md5(string_agg(id || ':' || batch || ':' || note, ',' ORDER BY id)) FROM orders"

step "1. waiting for host 'primary'"
wait_ready primary 300

step "2. first batch of rows, then a scheduled base backup (the policy runs one every 30 seconds)"
psql_on primary "CREATE TABLE orders (id int PRIMARY KEY, batch int NOT NULL, note text);
                 INSERT INTO orders SELECT g, 1, 'batch one' FROM generate_series(1, 1000) g;"
deadline=$((SECONDS + 150))
until [ -n "$(last_backup primary)" ]; do
    [ $SECONDS -lt $deadline ] || { echo "error: no scheduled backup within 150s; see $STATE_DIR/operator.log" >&2; exit 1; }
    sleep 3
done
echo "backup taken: $(last_backup primary)"

step "3. second batch, then the recovery point T, then a third batch"
psql_on primary "INSERT INTO orders SELECT g, 2, 'batch two' FROM generate_series(1001, 2000) g;"
sleep 1
target_time="$(psql_on primary "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")"
sleep 1
psql_on primary "INSERT INTO orders SELECT g, 3, 'batch three (after T)' FROM generate_series(2001, 3000) g;"
segment="$(psql_on primary "SELECT pg_walfile_name(pg_switch_wal())")"
deadline=$((SECONDS + 60))   # the WAL holding T must be in the archive before restoring to T
until [ "$(psql_on primary "SELECT coalesce(last_archived_wal, '') >= '$segment' FROM pg_stat_archiver")" = t ]; do
    [ $SECONDS -lt $deadline ] || { echo "error: WAL segment $segment was not archived within 60s" >&2; exit 1; }
    sleep 1
done
expected="$(psql_on primary "$CHECK_SQL WHERE batch <= 2")"
echo "recovery target T = $target_time; rows committed before T: $expected"

step "4. restoring host 'restored' from primary's backups to T (a new manifest in the watched directory)"
sed "s/__TARGET_TIME__/$target_time/" "$EXAMPLES/restored.yaml" > "$STATE_DIR/manifests/restored.yaml"
wait_ready restored 300

step "5. checking the restored host"
actual="$(psql_on restored "$CHECK_SQL")"
echo "restored host holds: $actual"
echo
"$OPERATOR" local get --state-dir "$STATE_DIR"
if [ "$actual" != "$expected" ]; then
    printf '\n\033[31mFAILED: expected %s, the restored host has %s\033[0m\n' "$expected" "$actual" >&2
    exit 1
fi
printf '\n\033[32mOK: the restored host holds exactly the rows committed before %s\033[0m\n' "$target_time"
echo "Everything is kept in $STATE_DIR (progress in operator.log); the hosts are stopped now."
echo "Start them again with: $OPERATOR local run --state-dir $STATE_DIR $STATE_DIR/manifests"
