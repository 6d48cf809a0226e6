#!/usr/bin/env bash
# The demo: metaguard guarding a built-in sandbox (fake metadata service,
# allowed and denied clients, live decisions). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cargo build --workspace --release --locked --quiet
exec "${CARGO_TARGET_DIR:-target}/release/metaguard" demo "$@"
