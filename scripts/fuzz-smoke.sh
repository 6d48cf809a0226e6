#!/usr/bin/env bash
# Short fuzzing run of the HTTP request checker (metaguard-common/fuzz,
# target http_request): installs cargo-fuzz if missing, fuzzes a scratch copy
# of the committed seed corpus (so the corpus does not grow) for at most
# FUZZ_SECONDS seconds or FUZZ_RUNS inputs, and fails on any crash or failed
# property. Builds under $CARGO_TARGET_DIR/fuzz when CARGO_TARGET_DIR is set.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

FUZZ_SECONDS=${FUZZ_SECONDS:-30}
FUZZ_RUNS=${FUZZ_RUNS:-2000000}
log() { printf '[fuzz-smoke] %s\n' "$*" >&2; }

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo +nightly install cargo-fuzz --locked
fi

target_args=()
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    # A directory of its own: fuzz builds use other flags than host builds.
    target_args=(--target-dir "$CARGO_TARGET_DIR/fuzz")
fi

corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
cp metaguard-common/fuzz/corpus/http_request/* "$corpus"/

# Safe Rust only: no sanitizer needed; overflow checks and debug assertions
# stay on (cargo-fuzz's default build).
log "fuzzing http_request for at most ${FUZZ_SECONDS}s / ${FUZZ_RUNS} runs"
cargo +nightly fuzz run --fuzz-dir metaguard-common/fuzz --sanitizer none \
    "${target_args[@]}" http_request "$corpus" -- \
    -max_total_time="$FUZZ_SECONDS" -runs="$FUZZ_RUNS" -print_final_stats=1
log "passed"
