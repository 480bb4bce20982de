#!/bin/sh
# Copies the generated CRDs (crds/*.yaml, written by `cargo run -p pgec2-api --bin crdgen`) into
# the Helm chart, which installs everything in its crds/ directory before the templates.
# A test (crates/operator/tests/aws_deploy.rs) fails when the copies differ.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
chart_crds="$root/deploy/helm/pgec2-operator/crds"
mkdir -p "$chart_crds"
rm -f "$chart_crds"/*.yaml
cp "$root"/crds/*.yaml "$chart_crds"/
echo "copied the CRDs of $root/crds into $chart_crds"
