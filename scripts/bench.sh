#!/usr/bin/env bash
# Benchmarks (not tests): connect+close latency with and without metaguard,
# side by side in one run, with ratios and per-decision program run time;
# keep-alive requests with and without the HTTP check; credential fetches
# with and without redaction.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cargo build --release --workspace --locked --quiet
cargo bench --locked -p metaguard --bench connect
cargo bench --locked -p metaguard --bench http
cargo bench --locked -p metaguard --bench redact
