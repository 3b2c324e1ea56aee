# Mask R-CNN, COCO instance segmentation, 1x (12 epochs), AdamW (./det_adamw.py). Family
# configs set the backbone and `model.neck.in_channels`.
_base_ = [
    '../models/mask-rcnn_fpn.py', '../datasets/coco_instance.py',
    '../schedules/schedule_1x.py', '../default_runtime_det.py', './det_adamw.py',
]
