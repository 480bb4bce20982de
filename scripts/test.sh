#!/usr/bin/env bash
# The full test suite: formatting, lints, generated files, and every crate's tests (real
# PostgreSQL 15, moto server for the S3/EC2/SSM APIs, the in-memory Kubernetes API).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Build the binaries first: integration tests run the agent as PostgreSQL's archive_command.
cargo build --workspace --bins --locked
if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast --test-threads 2
else
    cargo test --workspace --locked --no-fail-fast -- --test-threads 2
fi
