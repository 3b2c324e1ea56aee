# KITTI Eigen split (Eigen et al. 2014) with the annotated depth of Uhrig et al. (3DV 2017), BTS
# file layout (mmseg scope). Depth pngs are uint16 with scale 256, valid up to 80 m. Training and
# testing use the KITTI-benchmark crop (bottom-centred 352x1216) as BTS / AdaBins; at test time the
# prediction is pasted back into the full frame and evaluated inside the Garg crop
# (`eval_crop='eigen'` on the dataset selects the Eigen crop). Training: rotation up to 1 degree,
# flips, 352x704 random crops, gamma / brightness / colour jitter.
#   data/kitti/raw/2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png
#   data/kitti/data_depth_annotated/2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/...
#   data/kitti/eigen_{train,test}_files_with_gt.txt                 (BTS split files)
dataset_type = 'KITTIEigenDataset'
data_root = 'data/kitti'
crop_size = (352, 704)
min_depth = 1e-3
max_depth = 80.0

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthMap'),
    dict(type='DepthKBCrop', height=352, width=1216, crop_depth=True),
    dict(type='DepthRandomRotate', degree=1.0),
    dict(type='DepthRandomFlip', prob=0.5),
    dict(type='DepthRandomCrop', crop_size=crop_size),
    dict(type='DepthColorJitter', gamma=(0.9, 1.1), brightness=(0.9, 1.1), color=(0.9, 1.1)),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthMap'),
    dict(type='DepthKBCrop', height=352, width=1216, crop_depth=False),
    dict(type='PackSegInputs',
         meta_keys=('img_path', 'depth_map_path', 'ori_shape', 'img_shape', 'pad_shape',
                    'scale_factor', 'flip', 'flip_direction', 'kb_crop_box', 'kb_ori_shape')),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='eigen_train_files_with_gt.txt',
        data_prefix=dict(img_path='raw', depth_map_path='data_depth_annotated'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='eigen_test_files_with_gt.txt',
        data_prefix=dict(img_path='raw', depth_map_path='data_depth_annotated'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(type='DenseKitDepthMetric')  # Garg crop, 1e-3..80 m from the dataset metainfo
test_evaluator = val_evaluator
