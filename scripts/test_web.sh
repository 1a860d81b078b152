#!/usr/bin/env bash
# The browser tests (run by scripts/test.sh; needs the native CLI built and SmolLM2 fetched):
#  1. wasm-bindgen-test in headless Chromium on WebGPU: the forward pass and the merge kernel
#     against the plain-Rust reference (crates/tinylora-web/tests/browser.rs);
#  2. the demo page end to end with puppeteer-core: SmolLM2 + a trained adapter, greedy
#     answers equal to `tinylora generate` (tests/browser/demo.test.mjs), with a screenshot.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_web.sh --browser
export CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=600
(cd crates/tinylora-web && cargo test --release --target wasm32-unknown-unknown)
scripts/web.sh --build-only
(cd tests/browser && node --test)
