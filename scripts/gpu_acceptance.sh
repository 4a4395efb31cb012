#!/usr/bin/env bash
# One-shot GPU acceptance run for a machine with one NVIDIA GPU (issue #19), meant to finish in
# under 8 minutes and print one table:
#
#   1. build `--features cuda` (dev profile: dependencies at -O3; the binary and the tests);
#   2. the component parity tests (CLIP, LLaMA, SAM, composed LEGION, losses) and the
#      GPU-vs-CPU end-to-end tests (training, cross-backend resume, infer) on the GPU;
#   3. training steps/s of the `small` and `mid` (~1 B parameters) presets, legion-rs vs the same
#      model and recipe in PyTorch on the same GPU (scripts/bench_train.py --device cuda:0);
#   4. one LoRA training step of the full 7B config (random weights, bf16 compute on f32
#      master weights) with the peak GPU memory, then `analyze` of one image with that model.
#
#   bash scripts/gpu_acceptance.sh                 # everything, table at the end
#   LEGION_GPU=wgpu bash scripts/gpu_acceptance.sh # the same through wgpu (Vulkan/Metal GPUs)
#   GPU_STEPS="build parity" bash scripts/gpu_acceptance.sh   # a subset
#
# Offline machines: cubecl-cuda's LLVM bundle is set up by .ci/llvm-bundle-offline.sh (Debian's
# LLVM stands in for the pinned one). PyTorch is optional: without it (or without CUDA in it)
# the table says so and shows legion-rs alone. Each phase's log is in $OUT/<phase>.log.
set -uo pipefail
cd "$(dirname "$0")/.."

GPU=${LEGION_GPU:-cuda}          # the cargo feature: cuda or wgpu
case "$GPU" in
  cuda) DEVICE=${LEGION_GPU_DEVICE:-cuda:0} ;;
  wgpu) DEVICE=${LEGION_GPU_DEVICE:-wgpu} ;;
  *) echo "LEGION_GPU must be cuda or wgpu, got $GPU" >&2; exit 2 ;;
esac
STEPS=${GPU_STEPS:-"build parity bench train7b"}
OUT=${OUT:-runs/gpu_acceptance}
PYTHON=${PYTHON:-python3}
TARGET=${CARGO_TARGET_DIR:-target}
mkdir -p "$OUT"
ROWS=()
row() { ROWS+=("$(printf '| %-46s | %-8s | %s |' "$1" "$2" "$3")"); }
phase() { [[ " $STEPS " == *" $1 "* ]]; }
elapsed() { echo "$(( $(date +%s) - $1 )) s"; }
started=$(date +%s)

# Peak GPU memory (MiB) while a command runs, sampled by nvidia-smi every 200 ms.
with_peak_memory() {
  local log=$1; shift
  local samples="$OUT/memory.samples"
  : >"$samples"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$samples" 2>/dev/null &
    local sampler=$!
  fi
  "$@" >"$log" 2>&1
  local status=$?
  [ -n "${sampler:-}" ] && kill "$sampler" 2>/dev/null
  PEAK_MIB=$(sort -n "$samples" | tail -n 1)
  return $status
}

FEATURES="legion-cli/$GPU"
PARITY_TESTS=(--test clip_parity --test llama_parity --test sam_parity --test legion_parity
              --test losses --test gpu_vs_cpu)

if phase build; then
  t=$(date +%s)
  if [ "$GPU" = cuda ] && [ -z "${XDG_DATA_HOME:-}" ]; then
    eval "$(bash .ci/llvm-bundle-offline.sh)"
  fi
  if cargo test --workspace --locked --features "$FEATURES" --no-run >"$OUT/build.log" 2>&1; then
    row "build --features $GPU (binary + tests)" ok "$(elapsed "$t")"
  else
    row "build --features $GPU (binary + tests)" FAILED "see $OUT/build.log"
    STEPS=""  # nothing else can run
  fi
fi
LEGION="$TARGET/debug/legion"

if phase parity; then
  t=$(date +%s)
  if LEGION_TEST_DEVICE=$DEVICE cargo test --workspace --locked --features "$FEATURES" \
       "${PARITY_TESTS[@]}" -- --nocapture >"$OUT/parity.log" 2>&1; then
    passed=$(grep -Eo '[0-9]+ passed' "$OUT/parity.log" | awk '{s += $1} END {print s}')
    row "parity + GPU-vs-CPU tests on $DEVICE" ok "$passed passed, $(elapsed "$t")"
  else
    failed=$(grep -E '^test .* FAILED$' "$OUT/parity.log" | head -n 5 | tr '\n' ' ')
    row "parity + GPU-vs-CPU tests on $DEVICE" FAILED "${failed:-see $OUT/parity.log}"
  fi
  # The tests print their measured differences: keep them next to the table.
  grep -E 'wgpu vs cpu|resumed on|mask pixels|differs' "$OUT/parity.log" >"$OUT/differences.txt" || true
fi

if phase bench; then
  t=$(date +%s)
  torch_on_gpu=$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
  extra=()
  [ "$torch_on_gpu" = 1 ] && [ "$GPU" = cuda ] || extra=(--no-torch)
  if "$PYTHON" scripts/bench_train.py --presets small,mid --steps 20 5 --warmup 3 \
       --device "$DEVICE" --binary "$LEGION" --json "$OUT/bench.json" "${extra[@]}" \
       >"$OUT/bench.log" 2>&1; then
    for preset in small mid; do
      line=$("$PYTHON" - "$OUT/bench.json" "$preset" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))[sys.argv[2]]
rust = r["rust"]["steps_per_second"]
torch = r.get("torch", {}).get("steps_per_second")
print(f"legion-rs {rust:.2f} steps/s" + (f", PyTorch {torch:.2f}, ratio {rust / torch:.2f}"
      if torch else ", PyTorch: not run (no CUDA PyTorch)"))
PY
)
      row "train steps/s, $preset preset" ok "$line"
    done
  else
    row "train steps/s, small and mid presets" FAILED "see $OUT/bench.log"
  fi
fi

if phase train7b; then
  t=$(date +%s)
  run7b="$OUT/legion-7b"
  rm -rf "$run7b"
  # The paper's LoRA plan at full size on random weights, one step of one sample (the shipped
  # tiny data; its 640-token vocabulary fits in the 7B model's 32007).
  if with_peak_memory "$OUT/train7b.log" "$LEGION" train --config configs/legion-7b.toml \
       --devices "$DEVICE" --set data.root=\"data/synthscars-tiny\" \
       --set data.tokenizer=\"data/tokenizers/synthscars-tiny.json\" \
       --set run.steps=1 --set run.batch_size=1 --set optim.grad_accum=1 \
       --set run.evaluate=false --set run.validate_every=0 --set run.checkpoint_every=0 \
       --set run.dtype=\"bf16\" --set run.out_dir=\""$run7b"\"; then
    row "7B LoRA step (bf16 on f32 master)" ok "peak GPU ${PEAK_MIB:-?} MiB, $(elapsed "$t") incl. init+save"
    t=$(date +%s)
    image=data/synthscars-tiny/test/images/test_00000.png
    if with_peak_memory "$OUT/analyze7b.log" "$LEGION" analyze "$image" \
         --checkpoint "$run7b/final" --device "$DEVICE" --dtype bf16 --max-new-tokens 16 \
         --log info; then
      row "7B analyze, one image (bf16)" ok "peak GPU ${PEAK_MIB:-?} MiB, $(elapsed "$t") incl. load"
    else
      row "7B analyze, one image (bf16)" FAILED "see $OUT/analyze7b.log"
    fi
  else
    row "7B LoRA step (bf16 on f32 master)" FAILED "see $OUT/train7b.log"
  fi
fi

gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
echo
echo "legion-rs GPU acceptance on ${gpu_name:-$DEVICE} ($(git rev-parse --short HEAD 2>/dev/null)), $(elapsed "$started") in all"
printf '| %-46s | %-8s | %s |\n' "check" "result" "measured"
printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..48})" "$(printf -- '-%.0s' {1..10})" "-------"
printf '%s\n' "${ROWS[@]}"
[ -s "$OUT/differences.txt" ] && { echo; echo "GPU vs CPU, as measured by the tests:"; cat "$OUT/differences.txt"; }
! printf '%s\n' "${ROWS[@]}" | grep -q FAILED
