#!/usr/bin/env bash
# Download, on a machine with network access, the wheels an offline GPU machine lacks, into .whl/
# (git-ignored). The GPU machine is expected to run Python 3.12 with torch / torchvision / triton /
# timm / numpy / scipy / opencv installed; benchmarks/gpu_check.sh installs these wheels with
# --no-deps into /tmp/site when .whl/ is copied along with the checkout.
#
#   bash benchmarks/fetch_device_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
pure=(mmengine==0.10.7 mmcv-lite==2.1.0 mmdet==3.3.0 mmsegmentation==1.2.2 addict yapf platformdirs termcolor
      terminaltables prettytable wcwidth ftfy)
compiled=(pycocotools shapely)
python -m pip download --quiet --no-deps --only-binary=:all: -d .whl "${pure[@]}"
python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "${compiled[@]}"
ls -la .whl
du -sh .whl
