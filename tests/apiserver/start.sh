#!/usr/bin/env bash
# Starts etcd and kube-apiserver (built by build.sh) on loopback for the tests, and stops both
# when it exits (SIGTERM, SIGINT, one of them dying, or the process named by --watch-pid ending).
#
#   tests/apiserver/start.sh [--watch-pid PID] [--cleanup] DIR
#
# --cleanup removes DIR when it stops without an error (otherwise the logs stay in it).
# DIR (created, must be empty or absent) receives etcd's data, a generated CA and serving
# certificate, a service-account key pair, a token file, the logs, and when the server answers:
#   DIR/kubeconfig   cluster https://127.0.0.1:<port>, user `pgec2-test` (group system:masters)
#   DIR/ready        written last; its content is the kubeconfig's path
# The kubeconfig's path is also printed on stdout. Binaries: $PGEC2_APISERVER_BIN (default
# <repo>/target/apiserver/bin, or $CARGO_TARGET_DIR/apiserver/bin).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${PGEC2_APISERVER_BIN:-${CARGO_TARGET_DIR:-$repo/target}/apiserver/bin}"
watch_pid=""
cleanup=""
while [ $# -gt 1 ]; do
    case "$1" in
        --watch-pid) watch_pid="$2"; shift 2 ;;
        --cleanup) cleanup=1; shift ;;
        *) break ;;
    esac
done
dir="${1:?usage: start.sh [--watch-pid PID] [--cleanup] DIR}"
for program in etcd kube-apiserver kubectl; do
    [ -x "$bin/$program" ] || { echo "error: $bin/$program missing: run tests/apiserver/build.sh" >&2; exit 1; }
done
command -v openssl >/dev/null 2>&1 || { echo "error: openssl not found (scripts/install-deps.sh)" >&2; exit 1; }
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
[ -z "$(ls -A "$dir")" ] || { echo "error: $dir is not empty: give start.sh a fresh directory" >&2; exit 1; }

# Three free loopback ports (etcd client, etcd peer, API server): bind port 0 and read it back.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
while [ "$peer_port" = "$etcd_port" ]; do peer_port=$(free_port); done
while [ "$api_port" = "$etcd_port" ] || [ "$api_port" = "$peer_port" ]; do api_port=$(free_port); done

# A CA, the server's certificate for 127.0.0.1/localhost, the service-account key, a token.
pki="$dir/pki"
mkdir -p "$pki"
(
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=pgec2-test-ca" \
        -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout server.key -out server.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
        -extfile server.ext -out server.crt 2>/dev/null
    openssl genrsa -out service-account.key 2048 2>/dev/null
    openssl rsa -in service-account.key -pubout -out service-account.pub 2>/dev/null
)
token="$(openssl rand -hex 24)"
echo "$token,pgec2-test,pgec2-test,system:masters" > "$pki/tokens.csv"

pids=()
stop() {
    local status=$?
    trap - EXIT INT TERM
    # kube-apiserver first (it writes to etcd while it shuts down), then etcd; 10 s each at most.
    for (( i = ${#pids[@]} - 1; i >= 0; i-- )); do
        kill -TERM "${pids[i]}" 2>/dev/null || continue
        ( sleep 10; kill -KILL "${pids[i]}" 2>/dev/null ) &
        local killer=$!
        wait "${pids[i]}" 2>/dev/null || true
        kill "$killer" 2>/dev/null || true
    done
    rm -rf "$dir/etcd"   # throwaway state; the logs stay unless --cleanup and all went well
    if [ -n "$cleanup" ] && [ "$status" = 0 ]; then rm -rf "$dir"; fi
}
trap stop EXIT
trap 'exit 0' INT TERM

"$bin/etcd" --data-dir "$dir/etcd" --listen-client-url "http://127.0.0.1:$etcd_port" \
    --listen-peer-url "http://127.0.0.1:$peer_port" > "$dir/etcd.log" 2>&1 &
pids+=($!)
"$bin/kube-apiserver" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --tls-cert-file="$pki/server.crt" --tls-private-key-file="$pki/server.key" \
    --client-ca-file="$pki/ca.crt" --token-auth-file="$pki/tokens.csv" \
    --authorization-mode=RBAC \
    --service-account-issuer="https://127.0.0.1:$api_port" \
    --service-account-key-file="$pki/service-account.pub" \
    --service-account-signing-key-file="$pki/service-account.key" \
    --service-cluster-ip-range=10.0.0.0/24 --endpoint-reconciler-type=none \
    --disable-admission-plugins=ServiceAccount \
    > "$dir/kube-apiserver.log" 2>&1 &
pids+=($!)

kubeconfig="$dir/kubeconfig"
cat > "$kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: pgec2-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 < "$pki/ca.crt")
users:
- name: pgec2-test
  user:
    token: $token
contexts:
- name: pgec2-test
  context: {cluster: pgec2-test, user: pgec2-test, namespace: default}
current-context: pgec2-test
KUBECONFIG

# Ready when the API server answers /readyz and the default namespace exists.
deadline=$(( $(date +%s) + ${PGEC2_APISERVER_START_TIMEOUT:-120} ))
until "$bin/kubectl" --kubeconfig "$kubeconfig" get --raw /readyz >/dev/null 2>&1 &&
    "$bin/kubectl" --kubeconfig "$kubeconfig" get namespace default >/dev/null 2>&1; do
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || {
            echo "error: etcd or kube-apiserver exited during start-up; logs: $dir/etcd.log, $dir/kube-apiserver.log" >&2
            tail -5 "$dir/kube-apiserver.log" >&2
            exit 1
        }
    done
    [ "$(date +%s)" -lt "$deadline" ] || {
        echo "error: kube-apiserver not ready after ${PGEC2_APISERVER_START_TIMEOUT:-120}s; log: $dir/kube-apiserver.log" >&2
        exit 1
    }
    sleep 0.5
done
echo "$kubeconfig" > "$dir/ready"
echo "$kubeconfig"

# Run until told to stop, one of the servers dies, or the watched process ends.
while true; do
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || { echo "error: a server exited; logs in $dir" >&2; exit 1; }
    done
    if [ -n "$watch_pid" ] && ! kill -0 "$watch_pid" 2>/dev/null; then exit 0; fi
    sleep 1 & wait $! || true
done
