#!/usr/bin/env bash
# The browser tests (run by scripts/test.sh; needs the native CLI built and SmolLM2 fetched):
#  1. wasm-bindgen-test in headless Chromium on WebGPU: the forward pass and the merge kernel
#     against the plain-Rust reference (crates/tinylora-web/tests/browser.rs);
#  2. the demo page end to end with puppeteer-core: SmolLM2 + a trained adapter, greedy
#     answers equal to `tinylora generate` (tests/browser/demo.test.mjs), with a screenshot,
#     and the size of the page's wasm module; GRPO in the page's worker against the native
#     trainer on the digit task (examples/digit_model.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_web.sh --browser
# the digit task the page's training test writes (built by `cargo test` too: a no-op then)
cargo build --release --example digit_model
export CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=600
# the page's module alongside the wasm-bindgen tests: the two cargo builds share their
# dependencies (cargo's lock has one build them), then binaryen's single-threaded wasm-opt
# (~4 min) runs while the tests run; the build has its own process group, so that a failure
# here stops all of it (cargo, wasm-opt) with the script
setsid scripts/web.sh --build-only &
pkg=$!
trap 'kill -- -"$pkg" 2>/dev/null || true' EXIT
(cd crates/tinylora-web && cargo test --release --target wasm32-unknown-unknown)
wait "$pkg" || { echo "test_web: building web/pkg failed (see above)" >&2; exit 1; }
trap - EXIT
(cd tests/browser && node --test)
