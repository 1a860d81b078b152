#!/usr/bin/env bash
# What the browser build and its tests need, on top of scripts/setup.sh (idempotent; source it):
# the wasm32 Rust target, wasm-bindgen-cli matching the wasm-bindgen crate (=0.2.130), Debian's
# Chromium + ChromeDriver (headless WebGPU), and puppeteer-core for the end-to-end test.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
WASM_BINDGEN_VERSION=0.2.130

rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
  || rustup target add wasm32-unknown-unknown
export PATH="$HOME/.cargo/bin:$PATH"
if [[ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $WASM_BINDGEN_VERSION" ]]; then
  echo "setup_web: cargo install wasm-bindgen-cli $WASM_BINDGEN_VERSION (a few minutes, once)" >&2
  cargo install --quiet wasm-bindgen-cli --version "=$WASM_BINDGEN_VERSION"
fi
if [[ "${1:-}" == "--browser" ]]; then
  need=()
  for pkg in chromium chromium-driver; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if ((${#need[@]})); then
    echo "setup_web: installing ${need[*]}" >&2
    SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  [[ -d "$ROOT/tests/browser/node_modules/puppeteer-core" ]] \
    || (cd "$ROOT/tests/browser" && npm ci --silent --no-audit --no-fund)
fi
