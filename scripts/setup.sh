#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test metaguard: Debian
# packages used by the sandbox and tests, the nightly's rust-src (the eBPF
# crate builds core for bpfel), and bpf-linker built against the libLLVM that
# ships inside the nightly toolchain (no prebuilt download is reachable here).
# Idempotent: every step checks first.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------
need_pkgs=()
for spec in ip:iproute2 nft:nftables bpftool:bpftool curl:curl; do
    cmd=${spec%%:*}; pkg=${spec#*:}
    command -v "$cmd" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing Debian packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# --- Rust: nightly rust-src ------------------------------------------------
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "metaguard setup: a nightly Rust toolchain is required (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src'; then
    log "adding rust-src to nightly"
    rustup +nightly component add rust-src
fi

# --- bpf-linker against the nightly's LLVM -------------------------------
BPF_LINKER_VERSION=0.13.0
NIGHTLY=$(rustc +nightly --print sysroot)
LLVM_MAJOR=$(rustc +nightly -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
# Permanent prefix: bpf-linker keeps $PREFIX/lib as its run path.
PREFIX=${METAGUARD_LLVM_PREFIX:-/opt/metaguard/llvm-$LLVM_MAJOR}
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin

have_linker() {
    [ -x "$CARGO_BIN/bpf-linker" ] && "$CARGO_BIN/bpf-linker" --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"
}
if ! have_linker; then
    log "building bpf-linker $BPF_LINKER_VERSION against nightly LLVM $LLVM_MAJOR (about a minute)"
    LIBLLVM=$(basename "$(ls "$NIGHTLY"/lib/libLLVM.so.*-rust-* | head -n1)")
    mkdir -p "$PREFIX/lib"
    ln -sf "$NIGHTLY/lib/$LIBLLVM" "$PREFIX/lib/libLLVM.so"
    ln -sf "$NIGHTLY/lib/$LIBLLVM" "$PREFIX/lib/$LIBLLVM"
    LLVM_PREFIX=$PREFIX cargo +nightly install --locked bpf-linker --version "$BPF_LINKER_VERSION" \
        --no-default-features --features "llvm-$LLVM_MAJOR" --quiet
fi
have_linker || { echo "metaguard setup: bpf-linker did not install" >&2; exit 1; }

# --- Python clients the kernel tests drive (requests, botocore) ------------
# From PyPI when missing; without network the tests that need them say so
# and skip.
if command -v python3 >/dev/null 2>&1; then
    for module in requests botocore; do
        if ! python3 -c "import $module" >/dev/null 2>&1; then
            log "installing the Python package $module (pip, PyPI)"
            python3 -m pip install --quiet "$module" ||
                log "could not install $module: the tests that use it will skip"
        fi
    done
fi
log "ready: $("$CARGO_BIN/bpf-linker" --version)"
