#!/usr/bin/env bash
# The test command (README command 2; .ci/run calls it): set-up, formatting, lints, then every test.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
source scripts/bootstrap.sh

step() { printf '\n==> %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Helm chart (lint, rendered manifests, values schema)"
scripts/check_chart.sh

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
scripts/image/check_rootfs.sh --require-binaries
