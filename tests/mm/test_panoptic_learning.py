"""Slow tier: the panoptic heads learn densekit's synthetic COCO-panoptic set.

kMaX-DeepLab and Mask2Former (panoptic) are built from their model base configs (whatever losses,
matching and inference fusion those name), with a half-width ResNet-18 trained from scratch,
narrow decoders, 64 px images and the synthetic set's 5 things + 2 stuff classes, trained through
mmengine's ``Runner`` for a few CPU minutes and scored with ``CocoPanopticMetric`` against the
same model untrained.
"""
from __future__ import annotations

import time

import pytest

pytest.importorskip('mmdet')

import densekit  # noqa: E402,F401
from conftest import REPO  # noqa: E402
from densekit.datasets.synthetic import PANOPTIC_STUFF, PANOPTIC_THINGS  # noqa: E402
from densekit.datasets.synthetic import make_coco_panoptic_shapes  # noqa: E402

IMAGE = 64  # px, square
# Half-width ResNet-18 (32..256 channels), as the quickstart: no pretrained weights offline.
BACKBONE = dict(type='ResNet', depth=18, base_channels=32, num_stages=4, out_indices=(0, 1, 2, 3),
                frozen_stages=-1, norm_cfg=dict(type='BN'), norm_eval=False, style='pytorch',
                init_cfg=None)
CHANNELS = [32, 64, 128, 256]

KMAX_HEAD = dict(
    in_channels=CHANNELS, num_queries=16, pixel_decoder_channels=[128, 64, 32, 32],
    pixel_decoder_layers=[1, 1, 1, 1], transformer_decoder_layers=[1, 1, 1], embed_dims=64,
    base_filters=32, num_heads=4, feedforward_channels=128, pixel_head_channels=32,
    mask_channels=32, transformer_drop_path=0.0)  # no drop path in a 300-iteration run

M2F_HEAD = dict(
    in_channels=CHANNELS, feat_channels=64, out_channels=64, num_queries=16,
    pixel_decoder=dict(
        encoder=dict(num_layers=2, layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=64, num_heads=4),
            ffn_cfg=dict(embed_dims=64, feedforward_channels=128))),
        positional_encoding=dict(num_feats=32)),
    positional_encoding=dict(num_feats=32),
    transformer_decoder=dict(num_layers=3, layer_cfg=dict(
        self_attn_cfg=dict(embed_dims=64, num_heads=4),
        cross_attn_cfg=dict(embed_dims=64, num_heads=4),
        ffn_cfg=dict(embed_dims=64, feedforward_channels=128))))

# (model base, head overrides, iterations at batch 4, AdamW learning rate). kMaX-DeepLab's mask
# logits pass a batch norm whose scale starts at 0.1 (the official init), and its inference
# keeps a pixel only where the softmax over the queries exceeds 0.4 (the official rule): after
# 300 iterations at 1e-3 no pixel does yet (PQ 0, though the classes are learnt). 450 at 2e-3
# sharpen the masks past it.
MODELS = {
    'kmax_deeplab': ('kmax_deeplab_panoptic.py', KMAX_HEAD, 450, 2e-3),
    'mask2former': ('mask2former_panoptic.py', M2F_HEAD, 300, 1e-3),  # 7.5 passes over 160 images
}


def _set_classes(obj, things: int, stuff: int):
    """Every class count of a model config (head, fusion head, any criterion) set to the
    synthetic set's, and every per-class ``class_weight`` (classes + no-object) resized."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == 'num_things_classes':
                obj[k] = things
            elif k == 'num_stuff_classes':
                obj[k] = stuff
            elif k == 'num_classes' and isinstance(v, int):
                obj[k] = things + stuff
            elif k == 'class_weight' and isinstance(v, (list, tuple)):
                # ``[1.0] * num_classes + [no_object_weight]``
                obj[k] = [v[0]] * (things + stuff) + [v[-1]]
            else:
                _set_classes(v, things, stuff)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _set_classes(v, things, stuff)


def _config(model: str, data_root, work_dir, seed: int):
    from mmengine.config import Config

    base, head, iters, lr = MODELS[model]
    text = (f"_base_ = ['{REPO}/configs/_base_/models/{base}',\n"
            f"          '{REPO}/configs/_base_/datasets/synthetic_coco_panoptic.py',\n"
            f"          '{REPO}/configs/_base_/default_runtime_det.py']\n")
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / 'config.py').write_text(text)
    cfg = Config.fromfile(work_dir / 'config.py')
    things, stuff = len(PANOPTIC_THINGS), len(PANOPTIC_STUFF)
    _set_classes(cfg.model, things, stuff)
    cfg.num_things_classes, cfg.num_stuff_classes, cfg.num_classes = things, stuff, things + stuff
    cfg.model.backbone = dict(BACKBONE)
    cfg.model.data_preprocessor.batch_augments = None  # no fixed-size (LSJ) padding
    cfg.merge_from_dict(dict(model=dict(panoptic_head=head)))
    if cfg.model.get('train_cfg') and 'num_points' in cfg.model.train_cfg:
        cfg.model.train_cfg.num_points = 256  # point-sampled mask losses on 16x16 masks
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = f'{data_root}/'
    for ev in ('val_evaluator', 'test_evaluator'):
        cfg[ev].ann_file = f'{data_root}/annotations/panoptic_val.json'
        cfg[ev].seg_prefix = f'{data_root}/annotations/panoptic_val/'
    cfg.train_dataloader.batch_size = 4
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters)
    cfg.val_cfg = dict(type='ValLoop')
    cfg.test_cfg = dict(type='TestLoop')
    cfg.optim_wrapper = dict(
        type='OptimWrapper',
        optimizer=dict(type='AdamW', lr=lr, betas=(0.9, 0.999), weight_decay=0.05),
        clip_grad=dict(max_norm=10.0, norm_type=2))
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=iters // 10),
        dict(type='PolyLR', power=0.9, eta_min=1e-5, by_epoch=False, begin=iters // 10,
             end=iters)]
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=50)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=-1)
    cfg.log_processor = dict(by_epoch=False, window_size=50)
    cfg.env_cfg.dist_cfg = dict(backend='gloo')
    cfg.randomness = dict(seed=seed)
    cfg.work_dir = str(work_dir)
    return cfg


def _measure(model: str, tmp_path, seed: int) -> tuple[dict, dict, float]:
    """(untrained metrics, trained metrics, wall seconds, data generation included)."""
    from mmengine.runner import Runner
    t0 = time.perf_counter()
    root = tmp_path / 'data'
    # Fewer, larger objects than the generator's defaults: 64 px images.
    for split, n in (('train', 160), ('val', 32)):
        make_coco_panoptic_shapes(root, split, n, seed=seed, image_size=(IMAGE, IMAGE),
                                  max_objects=3, size_range=(0.15, 0.4))
    runner = Runner.from_cfg(_config(model, root, tmp_path / 'work', seed))
    untrained = dict(runner.val())
    runner.train()  # ends with the validation pass
    hub = runner.message_hub.log_scalars
    trained = {k: float(hub[f'val/{k}'].current()) for k in untrained}
    return untrained, trained, time.perf_counter() - t0


@pytest.mark.slow
@pytest.mark.parametrize('model', sorted(MODELS))
def test_panoptic_head_learns_the_synthetic_set(model, tmp_path):
    untrained, trained, wall = _measure(model, tmp_path, seed=0)
    print(f'\n{model}: {wall:.0f} s\nuntrained: {untrained}\ntrained: {trained}')
    # Observed (CPU), seeds 0 / 1, from PQ 0.0 untrained: kMaX-DeepLab on its own losses and
    # inference PQ 24.8 / 23.5 (stuff 86.8 / 82.4); Mask2Former 26.0 / 24.8 (stuff 91.0 / 86.7).
    # Things stay at PQ 0 in so short a run (Mask2Former at 600 iterations too): the gain is
    # sky / ground. Demand about half of each gain.
    pq, pq_st = 'coco_panoptic/PQ', 'coco_panoptic/PQ_st'
    assert trained[pq] >= untrained[pq] + 12.0, (untrained[pq], trained[pq])
    assert trained[pq_st] >= untrained[pq_st] + 40.0, (untrained[pq_st], trained[pq_st])
