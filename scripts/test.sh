#!/usr/bin/env bash
# The full test suite: formatting, generated files, and every crate's tests (real PostgreSQL 15,
# moto server for the S3/EC2/SSM APIs, the in-memory Kubernetes API, and a real kube-apiserver
# when tests/apiserver/build.sh has built one).
# Lints: `cargo clippy --workspace --all-targets -- -D warnings` (run before committing; kept out
# of this script so the suite fits CI's time budget on two cores).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
# pgec2-core without the AWS SDK, no test-only feature in release builds, the workspace hack fresh.
scripts/check-dependencies.sh
# Build everything once, tests included (one feature set, so nothing is compiled twice); the
# integration tests run this agent binary as PostgreSQL's archive_command and on local hosts.
cargo build --workspace --all-targets --locked
export PGEC2_AGENT_BINARY="${CARGO_TARGET_DIR:-$PWD/target}/debug/pgec2-agent"
# The real Kubernetes API server (tests/apiserver/build.sh): one for the whole suite, stopped
# when this script exits. Without its binaries those tests are skipped (said once, here), unless
# PGEC2_REQUIRE_APISERVER=1 (CI), where that is a failure.
apiserver_bin="${PGEC2_APISERVER_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/apiserver/bin}"
if [ -x "$apiserver_bin/kube-apiserver" ] && [ -x "$apiserver_bin/etcd" ] && [ -x "$apiserver_bin/kubectl" ]; then
    apiserver_dir="$(mktemp -d /tmp/pgec2-apiserver.XXXXXX)"
    PGEC2_APISERVER_BIN="$apiserver_bin" tests/apiserver/start.sh --watch-pid $$ "$apiserver_dir" >/dev/null &
    apiserver_pid=$!
    trap 'kill $apiserver_pid 2>/dev/null; wait $apiserver_pid 2>/dev/null; rm -rf "$apiserver_dir"' EXIT
    until [ -f "$apiserver_dir/ready" ]; do
        kill -0 $apiserver_pid 2>/dev/null || { echo "error: the test API server did not start; logs in $apiserver_dir" >&2; exit 1; }
        sleep 0.5
    done
    export PGEC2_APISERVER_BIN="$apiserver_bin" PGEC2_APISERVER_KUBECONFIG="$apiserver_dir/kubeconfig"
    echo "real Kubernetes API server for the tests: $("$apiserver_bin/kubectl" version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])') ($PGEC2_APISERVER_KUBECONFIG)"
elif [ "${PGEC2_REQUIRE_APISERVER:-}" = 1 ]; then
    echo "error: PGEC2_REQUIRE_APISERVER=1 but $apiserver_bin has no kube-apiserver/etcd/kubectl: run tests/apiserver/build.sh" >&2
    exit 1
else
    echo "skipped: the real Kubernetes API server tests ($apiserver_bin is empty: run tests/apiserver/build.sh to build it)"
fi
if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast --test-threads 2
else
    cargo test --workspace --locked --no-fail-fast -- --test-threads 2
fi
