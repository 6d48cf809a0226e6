#!/usr/bin/env bash
# Every test: installs what a fresh machine lacks, builds the workspace
# (kernel programs included), then runs the unit tests, the shared crate's
# tests and the kernel integration tests, then a short fuzzing run of the
# shared HTTP request checker. Run as root: the kernel tests load
# BPF programs into cgroups and network namespaces they create and remove.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh: the kernel tests need root (they load BPF programs); run it with sudo" >&2
    exit 1
fi
cargo build --workspace --all-targets --locked
cargo test --workspace --locked -- --test-threads 2
FUZZ_SECONDS=${FUZZ_SECONDS:-20} bash scripts/fuzz-smoke.sh
