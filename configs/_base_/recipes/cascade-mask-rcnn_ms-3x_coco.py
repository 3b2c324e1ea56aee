# Cascade Mask R-CNN (4conv1fc GIoU heads), COCO, 3x multi-scale + crop, AdamW (./det_adamw.py).
_base_ = [
    '../models/cascade-mask-rcnn_fpn.py', '../datasets/coco_instance_ms3x.py',
    '../schedules/schedule_3x.py', '../default_runtime_det.py', './det_adamw.py',
]
