#!/usr/bin/env bash
# What the browser build and its tests need, on top of scripts/setup.sh (idempotent; source it):
# the wasm32 Rust target, wasm-bindgen-cli matching the wasm-bindgen crate (=0.2.130),
# binaryen's wasm-opt (npm's binaryen 132, pinned in scripts/web-tools: Debian's 108 breaks
# wasm-bindgen's reference-typed table), Debian's Chromium + ChromeDriver (headless WebGPU),
# and puppeteer-core for the end-to-end test.
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
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export WASM_OPT="$ROOT/scripts/web-tools/node_modules/.bin/wasm-opt"
if [[ ! -x "$WASM_OPT" ]]; then
  command -v npm >/dev/null || { echo "setup_web: npm not found (binaryen's wasm-opt comes from npm): install Node.js" >&2; exit 1; }
  (cd "$ROOT/scripts/web-tools" && npm ci --silent --no-audit --no-fund)
fi
if [[ "${1:-}" == "--browser" ]]; then
  apt_ensure chromium chromium-driver
  [[ -d "$ROOT/tests/browser/node_modules/puppeteer-core" ]] \
    || (cd "$ROOT/tests/browser" && npm ci --silent --no-audit --no-fund)
fi
