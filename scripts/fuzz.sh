#!/usr/bin/env bash
# Runs each coverage-guided fuzz target (fuzz/, cargo-fuzz + libFuzzer) for a bounded time:
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 30)
# Inputs start from fuzz/corpus/<target> (seeds and regression inputs kept in git). A crash fails the
# run; libFuzzer writes the input to fuzz/artifacts/<target>/: fix the bug, then add that file to
# fuzz/corpus/<target>/ so it is replayed on every run.
# cargo-fuzz's instrumentation flags are unstable rustc options: RUSTC_BOOTSTRAP=1 allows them on
# the machine's stable toolchain (only for this build, in its own target directory).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO/fuzz"
SECONDS_PER_TARGET=${1:-30}
log() { printf '[fuzz] %s\n' "$*" >&2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR:-$REPO/target}/fuzz}
status=0
for target in ticket command copy_decoder; do
  log "$target: ${SECONDS_PER_TARGET}s"
  mkdir -p "corpus/$target"
  # The corpus directory is read but not written (a copy collects new inputs), so git stays clean.
  work=$(mktemp -d)
  if cargo fuzz run --sanitizer none "$target" "$work" "corpus/$target" -- \
      -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -print_final_stats=1 >"$work.log" 2>&1; then
    grep -E '^stat::(number_of_executed_units|new_units_added)' "$work.log" | sed "s/^/[fuzz] $target /" >&2 || true
  else
    tail -n 40 "$work.log" >&2
    log "$target: FAILED (the input is in fuzz/artifacts/$target/)"; status=1
  fi
  rm -rf "$work" "$work.log"
done
exit "$status"
