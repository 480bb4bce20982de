#!/usr/bin/env bash
# The full test suite: formatting, generated files, and every crate's tests (real PostgreSQL 15,
# moto server for the S3/EC2/SSM APIs, the in-memory Kubernetes API).
# Lints: `cargo clippy --workspace --all-targets -- -D warnings` (run before committing; kept out
# of this script so the suite fits CI's time budget on two cores).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
# Build everything once, tests included (one feature set, so nothing is compiled twice); the
# integration tests run this agent binary as PostgreSQL's archive_command and on local hosts.
cargo build --workspace --all-targets --locked
export PGEC2_AGENT_BINARY="${CARGO_TARGET_DIR:-$PWD/target}/debug/pgec2-agent"
if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast --test-threads 2
else
    cargo test --workspace --locked --no-fail-fast -- --test-threads 2
fi
