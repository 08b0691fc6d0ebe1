#!/usr/bin/env bash
# Prints cargo's target directory for this workspace: CARGO_TARGET_DIR may put it outside the repo,
# so scripts find the binaries they built here.
set -euo pipefail
cargo metadata --format-version 1 --no-deps --manifest-path "$(dirname "${BASH_SOURCE[0]}")/../Cargo.toml" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
