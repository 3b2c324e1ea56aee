# Template: UperNet (semantic segmentation) with a ConvNeXt-T backbone on your own images and
# label maps in folders:
#   <data_root>/images/{train,val}/xxx.jpg      <data_root>/labels/{train,val}/xxx.png
# A label png holds one class index per pixel (0 .. len(classes)-1, 255 = ignore). Copy this file
# and set the block below; docs/custom_dataset.md explains each line.
#
#   python tools/train.py configs/custom/my_data.py [--data-root DIR] [--max-iters N]
_base_ = '../upernet/upernet_convnext-t_160k_ade20k-512x512.py'

# ---------------------------------------------------------------------------- your dataset
data_root = 'data/my_seg/'
classes = ('background', 'foreground')
img_suffix = '.jpg'
seg_map_suffix = '.png'
train_img_dir, train_label_dir = 'images/train', 'labels/train'
val_img_dir, val_label_dir = 'images/val', 'labels/val'
reduce_zero_label = False  # True when 0 marks "unlabelled" and the classes start at 1
pretrained = 'https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224_ema.pth'
# ------------------------------------------------------------------------------------------

num_classes = len(classes)
metainfo = dict(classes=classes)
model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained) if pretrained else None),
    decode_head=dict(num_classes=num_classes),
    auxiliary_head=dict(num_classes=num_classes))
_load = dict(type='LoadAnnotations')  # reduce_zero_label comes from the dataset
train_pipeline = [
    dict(type='LoadImageFromFile'), _load,
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(512, 512), cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    _load,
    dict(type='PackSegInputs'),
]
_dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
                img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                reduce_zero_label=reduce_zero_label)
train_dataloader = dict(
    dataset=dict(_dataset, data_prefix=dict(img_path=train_img_dir, seg_map_path=train_label_dir),
                 pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(_dataset, data_prefix=dict(img_path=val_img_dir, seg_map_path=val_label_dir),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
tta_pipeline = [  # tools/test.py --tta: 3 scales x flip
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug',
         transforms=[[dict(type='Resize', scale_factor=r, keep_ratio=True) for r in (0.75, 1.0, 1.25)],
                     [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
                      dict(type='RandomFlip', prob=1.0, direction='horizontal')],
                     [_load], [dict(type='PackSegInputs')]]),
]
# 160k iterations are sized for ADE20K: a few thousand fit most small datasets (or --max-iters N)
train_cfg = dict(max_iters=8000, val_interval=1000)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=150),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=150, end=8000),
]
default_hooks = dict(checkpoint=dict(interval=1000))
