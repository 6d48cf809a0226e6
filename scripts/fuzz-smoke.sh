#!/usr/bin/env bash
# Short fuzzing run of the HTTP request checker and the response redaction
# scanner (metaguard-common/fuzz, targets http_request and redact_response): installs cargo-fuzz if missing, fuzzes a scratch copy
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

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for target in http_request redact_response; do
    corpus="$work/$target"
    mkdir -p "$corpus"
    cp metaguard-common/fuzz/corpus/"$target"/* "$corpus"/
    # Safe Rust only: no sanitizer needed; overflow checks and debug
    # assertions stay on (cargo-fuzz's default build).
    log "fuzzing $target for at most ${FUZZ_SECONDS}s / ${FUZZ_RUNS} runs"
    cargo +nightly fuzz run --fuzz-dir metaguard-common/fuzz --sanitizer none \
        "${target_args[@]}" "$target" "$corpus" -- \
        -max_total_time="$FUZZ_SECONDS" -runs="$FUZZ_RUNS" -print_final_stats=1
done
log "passed"
