#!/usr/bin/env bash
# The whole pgec2 mission on one machine, with no Kubernetes cluster and no AWS account:
#   1. a PostgresHost comes up (local cloud: PostgreSQL run by the agent's `host apply`),
#   2. a table gets a first batch of rows, a base backup is taken on the policy's schedule,
#   3. a second batch is written and WAL is archived; we note the time T; a third batch follows,
#   4. a second PostgresHost is restored from the first host's backups to T,
#   5. the demo checks that the restored host holds exactly the rows committed before T.
# Interrupt it at any point and run it again: it starts from a clean state directory.
set -euo pipefail
cd "$(dirname "$0")/.."

STATE_DIR="${PGEC2_DEMO_STATE:-$PWD/demo-state}"
EXAMPLES="scripts/demo"
OPERATOR="target/release/pgec2-operator"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "installing what is missing"
scripts/install-deps.sh

step "building pgec2 (release)"
cargo build --release --locked --bins

step "cleaning up any earlier demo in $STATE_DIR"
if [ -d "$STATE_DIR" ]; then
    "$OPERATOR" local stop --state-dir "$STATE_DIR" >/dev/null 2>&1 || true
    rm -rf "$STATE_DIR"
fi
mkdir -p "$STATE_DIR/manifests"
cp "$EXAMPLES/policy.yaml" "$EXAMPLES/primary.yaml" "$STATE_DIR/manifests/"

operator_pid=""
cleanup() {
    [ -n "$operator_pid" ] && kill "$operator_pid" 2>/dev/null && wait "$operator_pid" 2>/dev/null
    "$OPERATOR" local stop --state-dir "$STATE_DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "starting the operator in local mode (log: $STATE_DIR/operator.log)"
"$OPERATOR" local run --state-dir "$STATE_DIR" "$STATE_DIR/manifests" >"$STATE_DIR/operator.log" 2>&1 &
operator_pid=$!

status_field() { # KIND NAME JQ-LIKE-PATH (python3 reads the JSON)
    "$OPERATOR" local get --state-dir "$STATE_DIR" -o json "$1" "$2" 2>/dev/null \
        | python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d' + sys.argv[1]))" "$3" 2>/dev/null || true
}
wait_ready() { # NAME TIMEOUT
    local deadline=$((SECONDS + $2)) phase=""
    while [ $SECONDS -lt $deadline ]; do
        phase="$(status_field postgreshost "$1" "['status']['phase']")"
        [ "$phase" = "Ready" ] && { echo "$1 is Ready"; return 0; }
        [ "$phase" = "Failed" ] && break
        sleep 2
    done
    echo "error: $1 did not become Ready (phase: ${phase:-none}); see $STATE_DIR/operator.log" >&2
    "$OPERATOR" local get --state-dir "$STATE_DIR" >&2 || true
    return 1
}
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql_on() { # NAME SQL
    local host port
    host="$(status_field postgreshost "$1" "['status']['endpoint']['host']")"
    port="$(status_field postgreshost "$1" "['status']['endpoint']['port']")"
    as_postgres psql -X -A -t -v ON_ERROR_STOP=1 -h "$host" -p "$port" -U postgres -d postgres -c "$2"
}

step "1. waiting for host 'primary'"
wait_ready primary 300

step "2. first batch of rows, then a scheduled base backup"
psql_on primary "CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, batch int NOT NULL, note text);
                 INSERT INTO orders SELECT g, 1, 'batch one' FROM generate_series(1, 1000) g;"
deadline=$((SECONDS + 150))
until [ -n "$(status_field postgreshost primary "['status']['lastBackup']['name']")" ]; do
    [ $SECONDS -lt $deadline ] || { echo "error: no scheduled backup within 150s" >&2; exit 1; }
    sleep 3
done
echo "backup taken: $(status_field postgreshost primary "['status']['lastBackup']['name']")"

step "3. second batch, then the recovery point T, then a third batch"
psql_on primary "INSERT INTO orders SELECT g, 2, 'batch two' FROM generate_series(1001, 2000) g;"
sleep 1
target_time="$(psql_on primary "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")"
sleep 1
psql_on primary "INSERT INTO orders SELECT g, 3, 'batch three (after T)' FROM generate_series(2001, 3000) g;
                 SELECT pg_switch_wal();" >/dev/null
expected="$(psql_on primary "SELECT count(*) || ' rows, checksum ' || md5(string_agg(id || ':' || batch || ':' || note, ',' ORDER BY id)) FROM orders WHERE batch <= 2")"
echo "recovery target T = $target_time; rows committed before T: $expected"

step "4. restoring host 'restored' from primary's backups to T"
sed "s/__TARGET_TIME__/$target_time/" "$EXAMPLES/restored.yaml" > "$STATE_DIR/manifests/restored.yaml"
wait_ready restored 300

step "5. checking the restored host"
actual="$(psql_on restored "SELECT count(*) || ' rows, checksum ' || md5(string_agg(id || ':' || batch || ':' || note, ',' ORDER BY id)) FROM orders")"
echo "restored host holds: $actual"
"$OPERATOR" local get --state-dir "$STATE_DIR"
if [ "$actual" = "$expected" ]; then
    printf '\n\033[32mOK: the restored host holds exactly the rows committed before %s\033[0m\n' "$target_time"
else
    printf '\n\033[31mFAILED: expected %s, restored host has %s\033[0m\n' "$expected" "$actual" >&2
    exit 1
fi
