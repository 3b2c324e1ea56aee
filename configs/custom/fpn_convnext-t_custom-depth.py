# Template: monocular depth (FPN head) with a ConvNeXt-T backbone on your own images and depth
# maps in folders, one depth file per image with the same name:
#   <data_root>/images/{train,val}/xxx.png      <data_root>/depth/{train,val}/xxx.png
# A depth png holds depth * depth_scale (uint16; 0 = no measurement), or use .npy in metres
# (depth_suffix='.npy', depth_scale=1). Copy this file and set the block below.
#
#   python tools/train.py configs/custom/my_data.py [--data-root DIR] [--max-epochs N]
_base_ = ['../depth/fpn_convnext-t_nyuv2.py']

# ---------------------------------------------------------------------------- your dataset
data_root = 'data/my_depth/'
img_suffix = '.png'
depth_suffix = '.png'
depth_scale = 1000.0  # stored value per metre (1000: millimetres)
min_depth, max_depth = 1e-3, 10.0  # metres; evaluation ignores depths outside
train_img_dir, train_depth_dir = 'images/train', 'depth/train'
val_img_dir, val_depth_dir = 'images/val', 'depth/val'
# ------------------------------------------------------------------------------------------

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthMap'),
    dict(type='DepthRandomFlip', prob=0.5),
    dict(type='DepthColorJitter', gamma=(0.9, 1.1), brightness=(0.9, 1.1), color=(0.9, 1.1)),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthMap'),
    dict(type='PackSegInputs'),
]
_dataset = dict(_delete_=True, type='DepthFolderDataset', data_root=data_root,
                img_suffix=img_suffix, depth_suffix=depth_suffix, depth_scale=depth_scale,
                min_depth=min_depth, max_depth=max_depth, eval_crop=None)
train_dataloader = dict(
    dataset=dict(_dataset, pipeline=train_pipeline,
                 data_prefix=dict(img_path=train_img_dir, depth_map_path=train_depth_dir)))
val_dataloader = dict(
    dataset=dict(_dataset, pipeline=test_pipeline, test_mode=True,
                 data_prefix=dict(img_path=val_img_dir, depth_map_path=val_depth_dir)))
test_dataloader = val_dataloader
