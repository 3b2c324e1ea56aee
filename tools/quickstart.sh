#!/usr/bin/env bash
# densekit's main job, offline: generate the synthetic COCO-format shapes dataset (if absent),
# train Mask R-CNN (ResNet-18 from scratch) on it and report COCO bbox / segm mAP on its
# validation split, then list the pictures it drew: loss / mAP curves (curves.png) and the first
# validation images as labelled "ground truth | prediction" panels (predictions/*.png).
#
#   bash tools/quickstart.sh            # detection + instance segmentation (the main job)
#   bash tools/quickstart.sh --seg      # the semantic segmentation quickstart (mIoU) instead
#
# The run is deterministic: seeded data order and augmentation, torch's deterministic algorithms
# and single-threaded torch (OMP_NUM_THREADS=1 unless set), so the numbers are the same on every
# run and do not depend on the number of cores.
# DATA_ROOT (default data/quickstart) and WORK_DIR (default work_dirs/quickstart) may be set;
# further arguments go to tools/train.py (e.g. --cfg-options train_cfg.max_iters=100).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_ROOT=${DATA_ROOT:-data/quickstart}
WORK_DIR=${WORK_DIR:-work_dirs/quickstart}
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

show_pictures() {
    echo "pictures:"
    [ -f "$1/curves.png" ] && echo "  $1/curves.png"
    if [ -d "$1/predictions" ]; then
        find "$1/predictions" -name '*.png' | sort | sed 's/^/  /'
    fi
}

if [ "${1:-}" = "--seg" ]; then
    shift
    if [ ! -d "$DATA_ROOT/ade/annotations/validation" ]; then
        "$PYTHON" tools/make_demo_data.py "$DATA_ROOT" --kind ade
    fi
    "$PYTHON" tools/train.py configs/quickstart/fpn_r18_synthetic-ade.py \
        --work-dir "$WORK_DIR/fpn" \
        --cfg-options "train_dataloader.dataset.data_root=$DATA_ROOT/ade/" \
                      "val_dataloader.dataset.data_root=$DATA_ROOT/ade/" \
                      "test_dataloader.dataset.data_root=$DATA_ROOT/ade/" "$@"
    show_pictures "$WORK_DIR/fpn"
    exit 0
fi

if [ ! -f "$DATA_ROOT/coco/annotations/instances_val.json" ]; then
    "$PYTHON" tools/make_demo_data.py "$DATA_ROOT" --kind coco
fi
"$PYTHON" tools/train.py configs/quickstart/mask-rcnn_r18_synthetic.py \
    --work-dir "$WORK_DIR/mask-rcnn" \
    --cfg-options "train_dataloader.dataset.data_root=$DATA_ROOT/coco/" \
                  "val_dataloader.dataset.data_root=$DATA_ROOT/coco/" \
                  "test_dataloader.dataset.data_root=$DATA_ROOT/coco/" \
                  "val_evaluator.ann_file=$DATA_ROOT/coco/annotations/instances_val.json" \
                  "test_evaluator.ann_file=$DATA_ROOT/coco/annotations/instances_val.json" "$@"
show_pictures "$WORK_DIR/mask-rcnn"
