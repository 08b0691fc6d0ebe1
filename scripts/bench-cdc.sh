#!/usr/bin/env bash
# Change capture under load: a writer at ROWS_PER_SECOND (default 25000) for SECONDS (default 20)
# into a hypertable, followed by a live tail over Flight and a ChangeStream, each on its own slot.
# Prints the writer's rate, tail rows/s, decoded change records/s, the Airbyte source's CDC sync of
# the same changes in records/s, and insert-to-tail latency p50/p99.
# Usage: scripts/bench-cdc.sh [ROWS_PER_SECOND] [SECONDS]   (release build; the project's cluster)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --quiet --release --locked -p hyperflight-airbyte
HYPERFLIGHT_AIRBYTE_BIN=$(scripts/target-dir.sh)/release/hyperflight-airbyte
export HYPERFLIGHT_AIRBYTE_BIN
exec cargo run --quiet --release --locked -p hyperflight-server --example cdc_bench -- "$@"
