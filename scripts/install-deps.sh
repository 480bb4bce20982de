#!/usr/bin/env bash
# Installs what pgec2's build, demo and tests need on Debian 12, skipping what is present.
#   PostgreSQL 15 server + contrib (pg_amcheck, pgbench), shellcheck, pgBackRest and GNU time (benchmarks),
#   moto server (S3/EC2/SSM API for tests), a Rust toolchain check, and walross (wal-g's layout, for the
#   wal-g switch tests), and with PGEC2_REQUIRE_APISERVER=1 the tests' real Kubernetes API server
#   (etcd, kube-apiserver and kubectl built from Go modules by tests/apiserver/build.sh; needs
#   Go >= 1.26 and the Go module proxy).
set -euo pipefail

need_apt=()
[ -x /usr/lib/postgresql/15/bin/postgres ] || need_apt+=(postgresql-15 postgresql-contrib)
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
command -v pgbackrest >/dev/null 2>&1 || need_apt+=(pgbackrest)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
[ -x /usr/bin/time ] || need_apt+=(time)            # peak RSS and CPU in scripts/bench-*.sh
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)

if [ "${#need_apt[@]}" -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi

# Debian's package starts a cluster on 5432; the tests and the demo run their own clusters.
if command -v pg_lsclusters >/dev/null 2>&1 && pg_lsclusters -h 2>/dev/null | grep -q online; then
    pg_ctlcluster 15 main stop 2>/dev/null || true
fi

if ! command -v moto_server >/dev/null 2>&1; then
    python3 -m pip install --quiet 'moto[server]>=5,<6' || python3 -m pip install --quiet --break-system-packages 'moto[server]>=5,<6'
fi

command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }

# walross (`walrus`, writes wal-g's layout): the wal-g switch tests and the benchmarks run it.
# Installed into ~/.cargo/bin (override with WALRUS_ROOT), where the tests look for it.
walrus_root=${WALRUS_ROOT:-$HOME/.cargo}
if ! command -v walrus >/dev/null 2>&1 && [ ! -x "$walrus_root/bin/walrus" ]; then
    # Not --locked: its lock file pins a pre-release of webpki-roots that the registry no
    # longer serves; the newest compatible versions build and work.
    cargo install wal-rus --version 0.4.1 --root "$walrus_root"
fi
# The tests' real API server, built into target/apiserver/bin when asked for (.ci/run sets
# PGEC2_REQUIRE_APISERVER=1): about 8 minutes of CPU the first time, seconds once Go's build
# cache has it. The demo does not need it.
if [ "${PGEC2_REQUIRE_APISERVER:-}" = 1 ]; then
    command -v go >/dev/null 2>&1 || { echo "error: go not found: the tests' API server needs Go >= 1.26 (/usr/local/go/bin)" >&2; exit 1; }
    "$(dirname "$0")/../tests/apiserver/build.sh"
else
    echo "note: the tests' Kubernetes API server is not built here: run tests/apiserver/build.sh (Go >= 1.26) or set PGEC2_REQUIRE_APISERVER=1"
fi

echo "dependencies ready: $(/usr/lib/postgresql/15/bin/postgres --version), $(moto_server --help >/dev/null 2>&1 && echo moto), $(cargo --version)"
