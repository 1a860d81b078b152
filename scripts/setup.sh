#!/usr/bin/env bash
# Install what tinylora needs on a fresh Debian machine (idempotent; run as root or with sudo):
# lavapipe (Mesa's software Vulkan) so the wgpu code runs without a GPU, and the Rust toolchain
# check. Source it to also get CARGO_TARGET_DIR pointing at the shared, warm build directory.
set -euo pipefail

# apt_ensure PKG...: install the Debian packages that are missing (once; quietly).
apt_ensure() {
  local need=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if ((${#need[@]})); then
    echo "setup: installing ${need[*]}" >&2
    local sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

apt_ensure mesa-vulkan-drivers libvulkan1
# Data-parallel training over MPI (`cargo build --features mpi`): Open MPI, and libclang for
# the `mpi` crate's bindings. Only when asked: TINYLORA_MPI=1 source scripts/setup.sh
if [[ "${TINYLORA_MPI:-}" == 1 ]]; then
  apt_ensure openmpi-bin libopenmpi-dev libclang-dev
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust 1.95 with rustup" >&2; exit 1; }

# One build directory outside the checkout, shared by every clone on this machine: the first
# build of burn + wgpu takes ~20-30 minutes on 2 cores, later ones seconds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tinylora/target}"
# Mesa's WSI complains when this is unset even though no window is ever opened.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
