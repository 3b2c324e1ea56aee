# Template: Mask R-CNN (instance segmentation) with a ConvNeXt-T backbone on your own COCO-format
# dataset. Copy this file next to it (configs/custom/my_data.py) and set the block below; the rest
# follows from it. docs/custom_dataset.md walks through it with the balloon sample.
#
#   python tools/train.py configs/custom/my_data.py [--data-root DIR] [--max-epochs N]
#
# `classes` is the one list of class names: the datasets' metainfo and num_classes of every head
# are set from it (here when the file is parsed; tools/train.py and tools/test.py set them again
# after --cfg-options, so `--cfg-options "classes=('a','b')"` works too).
_base_ = '../mask_rcnn/mask-rcnn_convnext-t_fpn_1x_coco.py'

# ---------------------------------------------------------------------------- your dataset
data_root = 'data/balloon/'
classes = ('balloon',)  # names in the order of the json's category ids
train_ann_file = 'annotations/instances_train.json'  # relative to data_root
train_img_dir = 'train/'
val_ann_file = 'annotations/instances_val.json'
val_img_dir = 'val/'
# ImageNet weights of the backbone (downloaded once, see docs/pretrained.md); None: from scratch
pretrained = 'https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224_ema.pth'
# ------------------------------------------------------------------------------------------

num_classes = len(classes)
metainfo = dict(classes=classes)
model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None),
    roi_head=dict(bbox_head=dict(num_classes=num_classes),
                  mask_head=dict(num_classes=num_classes)))
train_dataloader = dict(
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file=train_ann_file,
                 data_prefix=dict(img=train_img_dir)))
val_dataloader = dict(
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file=val_ann_file,
                 data_prefix=dict(img=val_img_dir)))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + val_ann_file)
test_evaluator = val_evaluator
# a small dataset: fine-tune for 12 epochs (the 1x schedule), validating every epoch
train_cfg = dict(max_epochs=12, val_interval=1)
