#!/usr/bin/env bash
# The GPU check: parity tests, attention benchmark and model benchmarks on one CUDA GPU (H100 / H200
# class), in one run of at most 10 minutes.
#
# With network:     bash benchmarks/fetch_device_wheels.sh        # mm* + pycocotools ... into .whl/
# On the GPU:       bash benchmarks/gpu_check.sh                   # with .whl/ next to the checkout
#
# Steps, in order of value, each with its own time cap inside a global budget (GPU_CHECK_BUDGET_S,
# default 540 s), so a slow step cannot eat the next ones and whatever finished is kept:
#   1. wheels in .whl/ -> /tmp/site (no deps; torch, triton, timm, numpy ... must be installed)
#   2. GPU parity tests (-m gpu): attention ops (reference / triton / flex on CUDA vs the CPU fp32
#      reference, fwd + all grads), portable mmcv ops CPU-vs-CUDA, Triton MSDA, backbone backends,
#      spread over pytest-xdist workers (Triton compiles on the CPU, 16 cores there); a failure
#      summary even when the cap interrupts it                             -> gpu_parity.log / .xml
#   3. benchmarks/attention.py on shapes (a)-(e), bf16, baselines in the same run (JSON written
#      after every case)                                                   -> attention_gpu.json
#   4. (only when GPU_CHECK_STEPS names it) benchmarks/kernel_sweep.py: launch configurations of the
#      window / NA / halo kernels, each checked then timed, with a per-kernel device-time
#      breakdown (torch.profiler) of the forward and the backward        -> kernel_sweep.json
#   5. backbones (Swin-T / ConvNeXt-T / NAT / DiNAT / HaloNet training step) and heads
#      (Mask R-CNN / UPerNet ... on Swin-T), densekit kernels vs reference  -> models_gpu.log
#   6. (only when GPU_CHECK_STEPS names it) benchmarks/deform_sampled.py: DAT++ attention vs the
#      official formulation                                                -> deform_sampled.json
#   7. (only when GPU_CHECK_STEPS names it: routed, dat_backbone) BiFormer routing attention and
#      biformer_small / dat_pp_tiny training steps vs the official code, from clones carried in
#      .official/ (OFFICIAL_DIR)                         -> routed.json, dat_backbone.json
#   9. (only when GPU_CHECK_STEPS names it) benchmarks/large_kernel.py: the large-kernel depthwise
#      convolution, Triton vs F.conv2d (cuDNN), at RepLKNet-31B / UniRepLKNet-T/S / VAN stage shapes
#      of an 800x1333 image: the numbers that decide whether the op's automatic choice may ever
#      pick Triton                                                         -> large_kernel.json
#      and benchmarks/local_global.py: TransNeXt aggregated attention vs the official formulation,
#      reference, compiled flex and Triton (GPU_CHECK_STEPS=local_global)  -> local_global.log
# GPU_CHECK_STEPS picks steps ("parity attention models" by default), e.g. a second run with
# GPU_CHECK_STEPS=models when the first ran out of time.
# summary.txt says what ran, its exit code and seconds. $OUT holds at most 8 files on return.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
BUDGET=${GPU_CHECK_BUDGET_S:-540}
DEADLINE=$((SECONDS + BUDGET))
export PYTHONUNBUFFERED=1

# step NAME MAX_SECONDS LOGFILE CMD...: run CMD under min(MAX, time left - 15 s), log, record exit
step() {
  local name=$1 max=$2 log=$3; shift 3
  local left=$((DEADLINE - SECONDS - 15))
  local cap=$(( left < max ? left : max ))
  if (( cap < 30 )); then
    echo "$name: SKIPPED (only ${left}s left of the ${BUDGET}s budget)" | tee -a "$OUT/summary.txt"
    return
  fi
  local t0=$SECONDS
  echo "== $name (cap ${cap}s): $*" >> "$log"
  # SIGINT first: pytest then still prints its failure summary, the benchmark keeps its saved JSON
  timeout --signal=INT --kill-after=20 "$cap" "$@" >> "$log" 2>&1
  local rc=$?
  echo "$name: exit $rc after $((SECONDS - t0))s (cap ${cap}s)$( ((rc == 124)) && echo ' TIMED OUT')" \
    | tee -a "$OUT/summary.txt"
}

{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv || true
  nproc
} > "$OUT/env.txt" 2>&1

# 1. wheels (installed with --target /tmp/site, then put on PYTHONPATH)
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >> "$OUT/env.txt" 2>&1 || echo "WHEEL INSTALL FAILED" | tee -a "$OUT/summary.txt"
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "no .whl/: mm* tests and the heads benchmark will fail unless mm* is installed" | tee -a "$OUT/summary.txt"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 - >> "$OUT/env.txt" 2>&1 <<'EOF'
import importlib
for m in ('torch', 'triton', 'numpy', 'timm', 'mmengine', 'mmcv', 'mmdet', 'mmseg', 'pycocotools', 'densekit'):
    try:
        print(m, getattr(importlib.import_module(m), '__version__', 'ok'))
    except Exception as e:
        print(m, 'IMPORT FAILED', type(e).__name__, e)
import torch
p = torch.cuda.get_device_properties(0)
print(torch.cuda.get_device_name(), 'cuda', torch.version.cuda, 'SMs', p.multi_processor_count,
      'mem GiB', round(p.total_memory / 2**30, 1))
EOF
STEPS=" ${GPU_CHECK_STEPS:-parity attention models} "
want() { [[ $STEPS == *" $1 "* ]]; }

# 2. GPU parity first (about 240 s on 14 workers; most of it is compiling the Triton kernels, which
#    `python tools/dev/triton_compile.py parity-cases` checks without a GPU beforehand)
want parity && step gpu_parity 300 "$OUT/gpu_parity.log" \
  python3 -m pytest -m gpu -n 14 -p no:cacheprovider -p no:benchmark --timeout 200 --tb=short -rfE \
  --durations=15 --junitxml="$OUT/gpu_parity.xml" tests/ops tests/models/test_backbone_contract.py \
  tests/models/test_relation_detr_parity.py

# 3. attention benchmark (shapes (a)-(e) with their baselines; about 200 s)
want attention && step attention_benchmark 225 "$OUT/attention_gpu.log" \
  python3 benchmarks/attention.py --device cuda --json "$OUT/attention_gpu.json"

# 4. launch-configuration sweep + per-kernel breakdown (bf16; window (d), NA (a), halo (e), NA (c d1),
#    NA (b) in that order, each configuration checked against the fp32 reference before it is
#    timed). Not in the default steps: a second run with GPU_CHECK_STEPS=sweep (~45 configurations;
#    SIGINT at the cap still prints the summary of what ran)           -> kernel_sweep.json
want sweep && step kernel_sweep 420 "$OUT/kernel_sweep.log" \
  python3 benchmarks/kernel_sweep.py --json "$OUT/kernel_sweep.json"

# 4b. (only when named: GPU_CHECK_STEPS=halo_stride) strided halo queries vs the padded form, bf16
want halo_stride && step halo_stride 90 "$OUT/halo_stride.log" \
  python3 benchmarks/halo_stride.py --device cuda --backend triton --dtype bfloat16 --shape 16,64,64,8,32 --halo 3 --reps 20

# 5. models: backbones, then heads
want models && step backbones 150 "$OUT/models_gpu.log" python3 benchmarks/backbones.py gpu --iters 5 --warmup 2
want models && step heads 120 "$OUT/models_gpu.log" python3 benchmarks/heads.py --mode full --device cuda --iters 3
# 5b. (only when named: GPU_CHECK_STEPS=fastervit) window_extra_attention at FasterViT-2's calls
#     for an 800x1333 input, batch 2 (stage-2 windows of 4 carrier + 7x7 tokens, stage-3 windows,
#     the carrier-token attention): the official formulation vs the reference / flex / Triton
#     backends, bf16, fwd and fwd+bwd, peak memory (no official clone needed)  -> fastervit_ops.log;
#     then the FasterViT-0 / -2 training step at 224 and 800x1344: densekit (window_extra_attention
#     on the automatic backend) vs its reference backend                    -> models_gpu.log
want fastervit && step fastervit_ops 120 "$OUT/fastervit_ops.log" \
  python3 benchmarks/fastervit.py --ops --device cuda --size 800 1333 --batch 2
want fastervit && step fastervit_backbones 150 "$OUT/models_gpu.log" \
  python3 benchmarks/backbones.py gpu --models fastervit_0 fastervit_2 --iters 5 --warmup 2

# 6. (only when named: GPU_CHECK_STEPS=deform_sampled) DAT++ deformable sampled-key attention at
#    the DAT-T++ stage shapes of an 800x1333 image: official formulation vs reference vs Triton,
#    bf16, fwd and fwd+bwd, peak memory; its CUDA parity tests run in step 2 (tests/ops)
want deform_sampled && step deform_sampled 150 "$OUT/deform_sampled.log" \
  python3 benchmarks/deform_sampled.py --device cuda --json "$OUT/deform_sampled.json"

# 7. (only when named: GPU_CHECK_STEPS=routed / dat_backbone) the official code beside densekit's.
#    The GPU machine has no network: the official clones must be carried with the checkout, as
#    git-ignored directories under OFFICIAL_DIR (default .official/): .official/BiFormer (a
#    checkout of rayleizhu/BiFormer), .official/DAT-Detection (LeapLabTHU/DAT-Detection) and, if
#    einops is not installed there, .official/site (`pip install --target .official/site einops`).
#    Without a clone the script still times densekit's backends against each other and says that
#    the official rows are skipped (also noted in summary.txt).
OFFICIAL_DIR=${OFFICIAL_DIR:-$PWD/.official}
official_args() {  # --official / --deps of a carried clone, or nothing
  if [[ ! -d $OFFICIAL_DIR/$1 ]]; then
    echo "$1: no official clone in $OFFICIAL_DIR/$1: official rows skipped" >> "$OUT/summary.txt"
    return
  fi
  echo --official "$OFFICIAL_DIR/$1"
  if [[ -d $OFFICIAL_DIR/site ]]; then echo --deps "$OFFICIAL_DIR/site"; fi
}
# 7a. BiFormer: the bi-level routing attention module at BiFormer-S stages 1 / 2 of an 800x1333
#     image (n_win 16, maps padded as the official auto_pad), official bra_legacy vs densekit on
#     routed_attention reference / flex (compiled) / Triton, bf16, fwd and fwd+bwd, peak memory;
#     then the biformer_small training step at 800x1333 vs the official BiFormer_mm, fp32
want routed && step routed_attention 200 "$OUT/routed.log" \
  python3 benchmarks/routed.py --device cuda $(official_args BiFormer) --dtype bfloat16 --skip-backbone \
    --json "$OUT/routed.json"
want routed && step routed_backbone 200 "$OUT/routed.log" \
  python3 benchmarks/routed.py --device cuda $(official_args BiFormer) --skip-attention \
    --json "$OUT/routed_backbone.json"
# 7b. DAT++: the dat_pp_tiny training step at 800x1333 vs the official DAT-T++ backbone (its
#     NATTEN calls replaced by the fixture's gather-based stand-ins), densekit reference / Triton
want dat_backbone && step dat_backbone 200 "$OUT/dat_backbone.log" \
  python3 benchmarks/deform_sampled.py --backbone --device cuda $(official_args DAT-Detection) \
    --json "$OUT/dat_backbone.json"
# 8. (only when named: GPU_CHECK_STEPS=kmax_kmeans) kMaX-DeepLab k-means cross-attention at the
#     COCO recipe's shapes (2 images, 128 clusters, 256 channels, strides 32 / 16 / 8): the official
#     one-hot matmul (the op's reference backend) vs scatter-add vs the fused Triton kernel, fp32
#     (the recipe) and bf16, fwd and fwd+bwd, each output checked against the one-hot form first:
#     the numbers that decide whether densekit.ops.kmeans_attention may ever pick Triton
#     automatically; its CUDA parity tests (tests/ops/test_kmeans_attention.py) run in step 2
want kmax_kmeans && step kmax_kmeans 120 "$OUT/kmax_kmeans.log" \
  python3 benchmarks/kmax_kmeans.py --device cuda --dtypes float32 bfloat16 --json "$OUT/kmax_kmeans.json"
# 9. (only when named: GPU_CHECK_STEPS=large_kernel) large-kernel depthwise convolution, Triton vs
#    F.conv2d (cuDNN), bf16 batch 2, fwd and fwd+bwd, peak memory, ratios in the same run; its CUDA
#    parity tests (tests/ops/test_large_kernel.py) run in step 2
want large_kernel && step large_kernel 150 "$OUT/large_kernel.log" \
  python3 benchmarks/large_kernel.py --device cuda --json "$OUT/large_kernel.json"
# 10. (only when named: GPU_CHECK_STEPS=local_global) TransNeXt's aggregated attention at the
#     TransNeXt-T stage 1 / 2 shapes of an 800x1333 image: official formulation vs reference vs
#     compiled flex vs Triton, bf16, fwd and fwd+bwd, peak memory; its CUDA parity tests run in
#     step 2 (tests/ops)
want local_global && step local_global 150 "$OUT/local_global.log" \
  python3 benchmarks/local_global.py --device cuda

# 11. (only when named: GPU_CHECK_STEPS=leaderboard) the backbone leaderboard's GPU table at
#     detection resolution, bf16 autocast, the tiny / small variants     -> leaderboard_gpu.md/.png
want leaderboard && step leaderboard 420 "$OUT/leaderboard_gpu.log" \
  python3 tools/analysis/leaderboard.py --device cuda --size 800 1333 --batch-sizes 1 2 --iters 5 --fresh \
    --out "$OUT/leaderboard_gpu.md" --filter '*_tiny' '*_mini' '*_micro' '*_t' '*_s18' '*_s12' '*_small' \
    '*_small_12_p16' 'van_b0' 'van_b1' 'halonet26t' 'botnet26t' 'lambda_resnet26t' 'replknet_31b' \
    'hornet_tiny_*'

echo "--- summary"; cat "$OUT/summary.txt"
echo "--- parity"; grep -E "^(FAILED|ERROR) " "$OUT/gpu_parity.log" 2>/dev/null | cut -c1-160 | head -30; tail -n 2 "$OUT/gpu_parity.log" 2>/dev/null
echo "--- attention (case | impl | fwd ms | fwd+bwd ms | peak MiB)"
python3 - "$OUT/attention_gpu.json" <<'EOF' 2>/dev/null
import json, sys
for r in json.load(open(sys.argv[1]))['rows']:
    f = lambda k: f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k, r.get('error', r.get('skipped', '-'))))[:40]
    print(r['case'], '|', r['impl'][:44], '|', f('fwd_ms'), '|', f('fwdbwd_ms'), '|', f('fwdbwd_peak_MiB'))
EOF
tail -n 25 "$OUT/models_gpu.log" 2>/dev/null
tail -n 4 "$OUT/halo_stride.log" 2>/dev/null
grep "^|" "$OUT/deform_sampled.log" 2>/dev/null | cut -c1-200
grep -E "^(\||official rows)" "$OUT/routed.log" "$OUT/dat_backbone.log" 2>/dev/null | cut -c1-220
grep "^|" "$OUT/fastervit_ops.log" 2>/dev/null | cut -c1-200
grep "^|" "$OUT/local_global.log" 2>/dev/null | cut -c1-200
grep "^|" "$OUT/kernel_sweep.log" 2>/dev/null | cut -c1-200
grep -E "^(\||# Triton)" "$OUT/large_kernel.log" 2>/dev/null | cut -c1-200
grep "^|" "$OUT/kmax_kmeans.log" 2>/dev/null | cut -c1-200
