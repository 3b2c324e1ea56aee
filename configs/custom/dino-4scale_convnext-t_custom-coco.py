# Template: DINO (detection, boxes only) with a ConvNeXt-T backbone on your own COCO-format
# dataset. Copy this file and set the block below; docs/custom_dataset.md explains each line.
#
#   python tools/train.py configs/custom/my_data.py [--data-root DIR] [--max-epochs N]
_base_ = '../dino/dino-4scale_convnext-t_12e_coco.py'

# ---------------------------------------------------------------------------- your dataset
data_root = 'data/balloon/'
classes = ('balloon',)  # names in the order of the json's category ids
train_ann_file = 'annotations/instances_train.json'  # relative to data_root
train_img_dir = 'train/'
val_ann_file = 'annotations/instances_val.json'
val_img_dir = 'val/'
pretrained = 'https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224_ema.pth'
# ------------------------------------------------------------------------------------------

num_classes = len(classes)
metainfo = dict(classes=classes)
model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None),
    bbox_head=dict(num_classes=num_classes))
train_dataloader = dict(
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file=train_ann_file,
                 data_prefix=dict(img=train_img_dir)))
val_dataloader = dict(
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file=val_ann_file,
                 data_prefix=dict(img=val_img_dir)))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + val_ann_file)
test_evaluator = val_evaluator
