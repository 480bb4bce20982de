#!/usr/bin/env bash
# Dependency checks that the compiler cannot make:
# - pgec2-core builds without the AWS SDK (its tree, dev-dependencies included, has no aws-* crate);
# - a release build enables no test-only feature through the workspace hack. The one exception is
#   forced by aws-config itself (it depends on aws-credential-types with `test-util`, which turns
#   on the same feature in aws-smithy-runtime-api and aws-smithy-types); anything beyond that
#   chain fails here;
# - the workspace hack matches what `cargo hakari generate` writes (when cargo-hakari is installed).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "check-dependencies: $*" >&2; exit 1; }

core_tree=$(cargo tree --locked -p pgec2-core --prefix none --format '{p}')
aws_in_core=$(grep -E '^aws-' <<<"$core_tree" | sort -u || true)
[ -z "$aws_in_core" ] || fail "pgec2-core depends on AWS crates (move the code that needs them to pgec2-storage-s3):
$aws_in_core"

if grep -n 'test-util' crates/workspace-hack/Cargo.toml; then
    fail "the workspace hack enables test-util: list the test-only crate under [traversal-excludes] in .config/hakari.toml and run cargo hakari generate"
fi

forced_by_aws_config="aws-credential-types aws-smithy-runtime-api aws-smithy-types"
release_tree=$(cargo tree --locked --workspace -e features,no-dev --prefix none)
release_test_features=$(grep -oE '^[a-z0-9_-]+ feature "test-util"' <<<"$release_tree" | cut -d' ' -f1 | sort -u || true)
for package in $release_test_features; do
    case " $forced_by_aws_config " in
        *" $package "*) ;;
        *) fail "a release build enables $package's test-util feature: see cargo tree --workspace -e features,no-dev -i $package" ;;
    esac
done

if command -v cargo-hakari >/dev/null 2>&1; then
    cargo hakari generate --diff >/dev/null || fail "crates/workspace-hack is stale: run cargo hakari generate"
fi
echo "check-dependencies: ok"
