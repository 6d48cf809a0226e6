#!/usr/bin/env bash
# The hook study, measured (docs/hook-study.md, issue 6): builds the sandbox
# and measures metaguard against the other places such a filter could sit
# (TC, cgroup_skb, nftables, a userspace proxy, observation-only hooks),
# side by side in one run. Writes docs/hook-study-output.txt, the SVG plots
# and the ratio file. `--twice` runs it again and compares the two runs'
# ratios (the stability check). Run as root; traffic stays in the sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v openssl >/dev/null 2>&1; then
    # Only to make the TLS cell's throwaway certificate.
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq openssl >/dev/null
fi
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cargo build --release --locked -p hook-study -p metaguard-probe --quiet
BIN="${CARGO_TARGET_DIR:-target}/release/hook-study"
OUT="${HOOK_STUDY_OUT:-docs}"
"$BIN" --out-dir "$OUT"
if [ "${1:-}" = "--twice" ]; then
    cp "$OUT/hook-study-ratios.json" "$OUT/hook-study-ratios-run1.json"
    cp "$OUT/hook-study-output.txt" "$OUT/hook-study-output-run1.txt"
    "$BIN" --out-dir "$OUT"
    "$BIN" compare "$OUT/hook-study-ratios-run1.json" "$OUT/hook-study-ratios.json" | tee "$OUT/hook-study-stability.txt"
fi
