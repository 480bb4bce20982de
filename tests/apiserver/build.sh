#!/usr/bin/env bash
# Builds the tests' real Kubernetes API server from Go modules: kube-apiserver and kubectl from
# k8s.io/kubernetes (the release pinned in go.mod) and etcd (go.etcd.io/etcd/server/v3's embed
# package, ./etcd). Binaries go to $PGEC2_APISERVER_BIN (default: <repo>/target/apiserver/bin) and
# are rebuilt only when go.mod, go.sum or etcd/main.go change, so reruns are instant.
# Needs Go >= 1.26 and the Go module proxy. Prints the build's time and the binaries' sizes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${PGEC2_APISERVER_BIN:-${CARGO_TARGET_DIR:-$repo/target}/apiserver/bin}"
k8s_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v[0-9]/ {print $2}' "$here/go.mod")"
stamp="$bin/.inputs"
inputs="$(cat "$here/go.mod" "$here/go.sum" "$here/etcd/main.go" "$here/build.sh" | sha256sum | cut -d' ' -f1)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ] &&
    [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kubectl" ] && [ -x "$bin/etcd" ]; then
    echo "apiserver: binaries for kubernetes $k8s_version are up to date in $bin"
    exit 0
fi
command -v go >/dev/null 2>&1 || { echo "error: go not found: install Go >= 1.26 (scripts/install-deps.sh)" >&2; exit 1; }

mkdir -p "$bin"
rm -f "$stamp"
version_pkg=k8s.io/component-base/version
ldflags="-s -w -X $version_pkg.gitVersion=$k8s_version -X $version_pkg.gitTreeState=clean"
ldflags="$ldflags -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=$(echo "$k8s_version" | cut -d. -f2)"
start=$(date +%s)
cd "$here"
# CGO off: static binaries, and no C toolchain needed. Low priority: the machine is shared.
CGO_ENABLED=0 nice -n 10 go build -buildvcs=false -trimpath -ldflags "$ldflags" -o "$bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl ./etcd
elapsed=$(( $(date +%s) - start ))
echo "$inputs" > "$stamp"
echo "apiserver: built kubernetes $k8s_version (kube-apiserver, kubectl) and etcd in ${elapsed}s into $bin:"
du -h "$bin/kube-apiserver" "$bin/kubectl" "$bin/etcd"
