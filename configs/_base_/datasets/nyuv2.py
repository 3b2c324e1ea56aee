# NYU Depth v2, Eigen split in the BTS / AdaBins file layout (mmseg scope). Depth pngs are uint16
# millimetres (scale 1000), valid up to 10 m; evaluation on the full 480x640 frame inside the
# NYUv2 Eigen crop (rows 45:471, columns 41:601). Training follows BTS: white-border crop
# (43, 45, 608, 472), rotation up to 2.5 degrees, flips, 416x544 random crops, gamma / brightness /
# colour jitter.
#   data/nyu/sync/<scene>/rgb_00000.jpg, sync_depth_00000.png       (training frames)
#   data/nyu/official_splits/test/<class>/rgb_00045.jpg, sync_depth_00045.png
#   data/nyu/nyudepthv2_{train,test}_files_with_gt.txt              (BTS split files)
dataset_type = 'NYUv2Dataset'
data_root = 'data/nyu'
crop_size = (416, 544)
min_depth = 1e-3
max_depth = 10.0

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthMap'),
    dict(type='DepthFixedCrop', box=(43, 45, 608, 472)),
    dict(type='DepthRandomRotate', degree=2.5),
    dict(type='DepthRandomFlip', prob=0.5),
    dict(type='DepthRandomCrop', crop_size=crop_size),
    dict(type='DepthColorJitter', gamma=(0.9, 1.1), brightness=(0.75, 1.25), color=(0.9, 1.1)),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadDepthMap'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='nyudepthv2_train_files_with_gt.txt',
        data_prefix=dict(img_path='sync', depth_map_path='sync'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='nyudepthv2_test_files_with_gt.txt',
        data_prefix=dict(img_path='official_splits/test', depth_map_path='official_splits/test'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# crop / bounds come from the dataset's metainfo (eigen crop, 1e-3..10 m).
val_evaluator = dict(type='DenseKitDepthMetric')
test_evaluator = val_evaluator
