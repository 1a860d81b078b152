#!/usr/bin/env bash
# Pack the GPU kit: everything a GPU machine without network needs for stages 1-3, split into
# per-call folders that each fit the device tool's 64 MiB (working tree included), plus the
# plan of calls. Run on this machine, from any clean checkout:
#
#   scripts/gpu/pack.sh     # build (release, the shared warm target dir), assemble gpu-kit/
#
# gpu-kit/ (git-ignored):
#   artifacts/      the whole artifacts: tools.tar (Debian's Vulkan loader .debs + vkinfo),
#                   bin-tests.tar.xz, bin-bench.tar.xz, bin-cli.tar.xz (stripped release
#                   binaries), wheels.tar (gguf, peft for python 3.12), data.tar.xz (GSM8K),
#                   the two GGUF models (hard links to models/)
#   calls/<id>/     what call <id> carries: pieces + plan.json + manifest.sha256
#   plan.json, PLAN.md, manifest.sha256 (SHA-256 of every piece and artifact)
#
# Downloads (Debian's packages with apt-get download, the wheels with pip download, the models
# with scripts/fetch_models.sh) and compressed binaries are cached in
# ~/.cache/tinylora/gpu-kit, so packing again after a rebuild only recompresses what changed.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT="$(pwd -P)"
KIT="$ROOT/gpu-kit"
CACHE="${TINYLORA_GPU_KIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tinylora/gpu-kit}"
GSM8K="${GSM8K_DIR:-$ROOT/../shared/data/gsm8k}"
GGUF_WHEEL=gguf==0.19.0          # transformers' GGUF loading needs it; the GPU image lacks it
PEFT_WHEEL=peft==0.21.2          # only installed there if its own PEFT has no TinyLoraConfig
DEBS=(libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
XZ_LEVEL="${KIT_XZ_LEVEL:--9}"   # binaries: xz, which python's lzma unpacks on any machine

die() { echo "pack.sh: error: $*" >&2; exit 1; }
note() { echo "pack.sh: $*" >&2; }

for a in "$@"; do
  case "$a" in
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown option '$a'" ;;
  esac
done

mkdir -p "$KIT"
git check-ignore -q gpu-kit/ \
  || die "gpu-kit/ is not git-ignored: add '/gpu-kit/' to .gitignore (else it would travel with every call)"
for tool in xz tar sha256sum strip cc python3 apt-get; do
  command -v "$tool" >/dev/null || die "'$tool' not found (needed to pack)"
done
mkdir -p "$CACHE"/{debs,wheels,bin}
STAGING="$KIT/staging"
rm -rf "$STAGING"
mkdir -p "$STAGING"
scripts/fetch_models.sh smollm2 qwen0.5b

# --- build (a failed build leaves the last kit as it was) --------------------------------------
source scripts/setup.sh   # CARGO_TARGET_DIR: the shared, warm release build
# executables NAME KIND: from cargo's JSON messages on stdin, "NAME<TAB>path" of each
# artifact of that kind that has an executable
executables() {
  python3 -c '
import json, sys
kind = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except json.JSONDecodeError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and kind in m["target"]["kind"]:
        print(m["target"]["name"] + "\t" + m["executable"])
' "$1"
}
CARGO_FLAGS=(--message-format=json-render-diagnostics)
note "building (release; the first build of burn takes ~20 min, later ones seconds)"
cargo build --release -p tinylora-cli "${CARGO_FLAGS[@]}" | executables bin >"$STAGING/cli.tsv"
cargo test --release --no-run --test kernels --test blocks --test adapter --test engine "${CARGO_FLAGS[@]}" \
  | executables test >"$STAGING/tests.tsv"
cargo bench --profile release --no-run --bench engine --bench adapter --bench blocks "${CARGO_FLAGS[@]}" \
  | executables bench >"$STAGING/bench.tsv"
rm -rf "$KIT/artifacts"
mkdir -p "$KIT/artifacts"

# --- models and data ---------------------------------------------------------------------------
for f in train.jsonl test.jsonl; do
  [[ -s "$GSM8K/$f" ]] || die "$GSM8K/$f is missing (GSM8K lives in ../shared/data/gsm8k; set GSM8K_DIR)"
done
mkdir -p "$STAGING/data/gsm8k"
cp "$GSM8K"/{train.jsonl,test.jsonl} "$STAGING/data/gsm8k/"
[[ -f "$GSM8K/LICENSE" ]] && cp "$GSM8K/LICENSE" "$STAGING/data/gsm8k/"
tar -C "$STAGING/data" -cf - gsm8k | xz -9 -T1 >"$KIT/artifacts/data.tar.xz"
for m in SmolLM2-135M-Instruct.Q4_1.gguf Qwen2.5-Coder-0.5B-Instruct.gguf; do
  ln -f "models/$m" "$KIT/artifacts/$m" 2>/dev/null || cp "models/$m" "$KIT/artifacts/$m"
done

# --- binaries ------------------------------------------------------------------------------------
want_exe() { # TSV NAME
  local p; p="$(awk -F'\t' -v n="$2" '$1 == n {print $2}' "$1" | tail -n1)"
  [[ -n "$p" && -x "$p" ]] || die "cargo reported no executable '$2' (see $1)"
  echo "$p"
}
# pack_bins ARTIFACT PREFIX TSV NAME...: strip, then tar + xz, cached by the stripped contents
pack_bins() {
  local art="$1" prefix="$2" tsv="$3"; shift 3
  local dir="$STAGING/$art" name key
  mkdir -p "$dir"
  for name in "$@"; do
    strip -o "$dir/$prefix$name" "$(want_exe "$tsv" "$name")"
  done
  key="$(cd "$dir" && sha256sum -- * | sha256sum | cut -c1-24)-${XZ_LEVEL#-}"
  if [[ ! -s "$CACHE/bin/$art-$key.tar.xz" ]]; then
    note "compressing $art ($(du -sh "$dir" | cut -f1) stripped; xz $XZ_LEVEL, a few minutes)"
    (cd "$dir" && tar --owner=0 --group=0 --mtime=@0 -cf - -- *) | xz "$XZ_LEVEL" -T1 >"$CACHE/bin/$art-$key.tar.xz.tmp"
    mv "$CACHE/bin/$art-$key.tar.xz.tmp" "$CACHE/bin/$art-$key.tar.xz"
  fi
  cp "$CACHE/bin/$art-$key.tar.xz" "$KIT/artifacts/$art.tar.xz"
  rm -rf "$dir"
}
pids=()
pack_bins bin-tests test- "$STAGING/tests.tsv" kernels blocks adapter engine & pids+=($!)
pack_bins bin-bench bench- "$STAGING/bench.tsv" engine adapter blocks & pids+=($!)
pack_bins bin-cli "" "$STAGING/cli.tsv" tinylora & pids+=($!)
for p in "${pids[@]}"; do wait "$p" || die "packing the binaries failed (see above)"; done

# --- tools: the Vulkan loader packages and vkinfo -------------------------------------------------
mkdir -p "$STAGING/tools/debs"
for p in "${DEBS[@]}"; do
  if ! ls "$CACHE/debs/${p}_"*.deb >/dev/null 2>&1; then
    (cd "$CACHE/debs" && apt-get download "$p" 2>/dev/null) \
      || { apt-get update -qq && (cd "$CACHE/debs" && apt-get download "$p"); } \
      || die "apt-get download $p failed (is the Debian mirror reachable?)"
  fi
  cp "$(ls "$CACHE/debs/${p}_"*.deb | tail -n1)" "$STAGING/tools/debs/"
done
cc -O2 -o "$STAGING/tools/vkinfo" scripts/gpu/vkinfo.c -ldl || die "compiling scripts/gpu/vkinfo.c failed"
tar -C "$STAGING/tools" --owner=0 --group=0 -cf "$KIT/artifacts/tools.tar" debs vkinfo

# --- wheels for the device's python 3.12 ----------------------------------------------------------
mkdir -p "$STAGING/wheels"
for spec in "$GGUF_WHEEL" "$PEFT_WHEEL"; do
  name="${spec%%==*}" version="${spec##*==}"
  if ! ls "$CACHE/wheels/${name}-${version}-"*.whl >/dev/null 2>&1; then
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$CACHE/wheels" "$spec" || die "pip download $spec failed (is the package registry reachable?)"
  fi
  cp "$(ls "$CACHE/wheels/${name}-${version}-"*.whl | tail -n1)" "$STAGING/wheels/"
done
tar -C "$STAGING/wheels" --owner=0 --group=0 -cf "$KIT/artifacts/wheels.tar" .

# --- the plan -------------------------------------------------------------------------------------
# what travels with every call besides the carried folder: tracked and untracked-not-ignored
# files (the device tool's rule), plus shared/ if the checkout has one
TREE_BYTES="$(python3 scripts/gpu/kit.py tree-bytes)"
rm -rf "$STAGING"
python3 scripts/gpu/kit.py plan --kit "$KIT" --tree-bytes "$TREE_BYTES" \
  --git-head "$(git describe --always --dirty 2>/dev/null || echo unknown)" --manifest-dir "$ROOT"
note "kit ready: $KIT/PLAN.md lists the device calls"
