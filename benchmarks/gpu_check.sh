#!/usr/bin/env bash
# One prepared GPU check for a lent H100 / H200 (issue 3): environment, GPU parity tests of the
# attention ops (reference / triton / flex on CUDA against the CPU fp32 reference), then
# benchmarks/attention.py on shapes (a)-(e). Everything lands in $OUT (default ./gpu_out).
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh
#
# Wheels carried in .whl/ (e.g. mmcv-lite, timm) are installed first without touching torch.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"

{
  date -u +%FT%TZ
  nvidia-smi || true
  python -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name())'
} > "$OUT/env.txt" 2>&1

if compgen -G ".whl/*.whl" > /dev/null; then
  python -m pip install --no-deps --quiet .whl/*.whl >> "$OUT/env.txt" 2>&1 || echo "wheel install failed" >> "$OUT/env.txt"
fi
python -c 'import timm' 2>/dev/null || python -m pip install --quiet --no-deps timm >> "$OUT/env.txt" 2>&1 || true
python -c 'import pytest_timeout' 2>/dev/null || python -m pip install --quiet pytest-timeout >> "$OUT/env.txt" 2>&1 || true
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# GPU parity (the -m on the command line overrides the default 'not gpu' selection)
timeout 420 python -m pytest -q -m gpu tests/ops/test_attn_neighborhood.py tests/ops/test_attn_window.py \
  tests/ops/test_attn_halo.py -p no:cacheprovider --junitxml="$OUT/gpu_parity.xml" \
  > "$OUT/gpu_parity.log" 2>&1
echo "gpu parity exit: $?" >> "$OUT/env.txt"

# Benchmarks (bf16, shapes (a)-(e), baselines in the same run)
timeout 420 python benchmarks/attention.py --device cuda --json "$OUT/attention_gpu.json" \
  > "$OUT/attention_gpu.log" 2>&1
echo "benchmark exit: $?" >> "$OUT/env.txt"
tail -n 3 "$OUT/gpu_parity.log"
tail -n 40 "$OUT/attention_gpu.log"
