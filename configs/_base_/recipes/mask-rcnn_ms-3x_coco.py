# Mask R-CNN, COCO, 3x (36 epochs) with multi-scale + crop training (the schedule all the
# backbone papers report), AdamW (./det_adamw.py).
_base_ = [
    '../models/mask-rcnn_fpn.py', '../datasets/coco_instance_ms3x.py',
    '../schedules/schedule_3x.py', '../default_runtime_det.py', './det_adamw.py',
]
