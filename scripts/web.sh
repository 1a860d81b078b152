#!/usr/bin/env bash
# Build the browser demo and serve it on http://127.0.0.1:8080 (Ctrl-C stops the server):
#
#   scripts/web.sh                # build web/pkg, fetch SmolLM2, serve web/
#   scripts/web.sh --build-only   # only build web/pkg (the tests use this)
#   PORT=9000 scripts/web.sh
#
# web/pkg holds the wasm module built for size (opt-level s, .cargo/config.toml) and shrunk by
# binaryen's wasm-opt -Oz (~4 min on 2 cores) to ~10 MB.
#
# The page loads models/SmolLM2-135M-Instruct.Q4_1.gguf and the adapter in web/adapters by
# default; any GGUF or Hugging Face model and any adapter from `tinylora train` can be picked
# or dropped onto it instead.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_web.sh
echo "web: building the wasm module (release)" >&2
cargo build --release --target wasm32-unknown-unknown -p tinylora-web
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section --out-dir web/pkg \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/tinylora_web.wasm"
# binaryen's wasm-opt for size (-Oz; ~4 min on 2 cores: npm's binaryen is itself wasm), told
# every feature but those Chromium lacks (its default of all of them emits compact imports,
# which Chromium 156 refuses)
WASM=web/pkg/tinylora_web_bg.wasm
before=$(stat -c %s "$WASM")
echo "web: wasm-opt -Oz (a few minutes)" >&2
"$WASM_OPT" -Oz -all --disable-compact-imports --disable-strings --disable-stack-switching \
  --disable-custom-descriptors --disable-multibyte --disable-shared-everything --disable-wide-arithmetic \
  --disable-custom-page-sizes --disable-acquire-release-atomics --disable-relaxed-atomics --disable-threads \
  "$WASM" -o "$WASM.opt"
mv "$WASM.opt" "$WASM"
awk -v b="$before" -v a="$(stat -c %s "$WASM")" -v f="$WASM" \
  'BEGIN {printf "web: %s is %.1f MB (%.1f MB before wasm-opt)\n", f, a/1e6, b/1e6}' >&2
[[ "${1:-}" == "--build-only" ]] && exit 0
scripts/fetch_models.sh smollm2
# the page fetches models/… next to itself: serve the checkout's models/ there …
[[ -e web/models ]] || ln -s ../models web/models
# … and data/ (the training panel's default problems)
[[ -e web/data ]] || ln -s ../data web/data
echo "web: open http://127.0.0.1:${PORT:-8080}/ in a browser with WebGPU (Chrome, Edge, Safari)" >&2
exec python3 -m http.server "${PORT:-8080}" --bind 127.0.0.1 --directory web
