"""Inference with a config and a checkpoint: detection, instance / semantic / panoptic
segmentation and depth, through one pair of functions (re-exported by :mod:`densekit.apis`).

* :func:`init_model` builds the model of a config in the config's ``default_scope`` (``mmdet``:
  detectors and panoptic models; ``mmseg``: segmentors and densekit's ``DenseKitDepthEstimator``),
  loads a checkpoint (a local file or an http(s) URL, through densekit's safe loader) and
  attaches the class names (``dataset_meta``) saved with the checkpoint, or else those of the
  config's test dataset.
* :func:`inference` runs the config's test pipeline on images (BGR ``numpy`` arrays as read by
  OpenCV, file paths or a folder) and returns the model's own ``DetDataSample`` /
  ``SegDataSample`` predictions (``pred_instances``, ``pred_panoptic_seg``, ``pred_sem_seg``,
  ``pred_depth_map``).

The steps are those of mmdet's ``init_detector`` / ``inference_detector`` and mmseg's
``init_model`` / ``inference_model``, written once for both scopes because neither pair serves
the other's models: mmseg's ``init_model`` passes ``pretrained`` / ``train_cfg`` to every model
(``DenseKitDepthEstimator`` has neither) and mmdet's falls back to COCO class names; both keep
annotation-loading steps of the test pipeline that fail on bare images. The writers
(:func:`save_predictions`, :func:`draw_prediction`) serve ``tools/infer.py``.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
import torch

import densekit  # noqa: F401  (portable mmcv ops, safe loading, densekit's registrations)

ImageInput = Union[str, os.PathLike, np.ndarray]
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
# Test-pipeline steps that read ground truth, which bare images do not have.
_GT_LOADERS = ('LoadAnnotations', 'LoadPanopticAnnotations', 'LoadDepthMap',
               'LoadDepthAnnotation', 'LoadBiMaskAnnotations')


def _scope(cfg) -> str:
    scope = cfg.get('default_scope', None)
    if scope not in ('mmdet', 'mmseg'):
        raise ValueError(f"config default_scope={scope!r}: densekit inference supports 'mmdet' "
                         "(detection, instance / panoptic segmentation) and 'mmseg' (semantic "
                         "segmentation, depth)")
    return scope


def _registries(scope: str):
    if scope == 'mmdet':
        from mmdet.registry import DATASETS, MODELS, TRANSFORMS, VISUALIZERS
    else:
        from mmseg.registry import DATASETS, MODELS, TRANSFORMS, VISUALIZERS
    return dict(DATASETS=DATASETS, MODELS=MODELS, TRANSFORMS=TRANSFORMS, VISUALIZERS=VISUALIZERS)


def _load_config(config, cfg_options: dict | None):
    from mmengine.config import Config
    if isinstance(config, (str, os.PathLike)):
        if not osp.isfile(config):
            raise FileNotFoundError(f'config file {config} does not exist')
        config = Config.fromfile(os.fspath(config))
    elif not isinstance(config, Config):
        raise TypeError(f'config must be a path or an mmengine Config, got {type(config).__name__}')
    else:
        config = config.copy()
    if cfg_options:
        config.merge_from_dict(cfg_options)
    return config


def _drop_pretrained(model_cfg) -> None:
    """A full checkpoint replaces every weight: do not fetch ImageNet weights first."""
    for value in model_cfg.values():
        if isinstance(value, dict):
            if value.get('init_cfg') is not None and 'type' in value:
                value['init_cfg'] = None
            if isinstance(value.get('pretrained'), str):
                value['pretrained'] = None
    if isinstance(model_cfg.get('pretrained'), str):
        model_cfg['pretrained'] = None


def _test_dataset_cfg(cfg) -> dict | None:
    for key in ('test_dataloader', 'val_dataloader'):
        loader = cfg.get(key)
        if loader and loader.get('dataset'):
            ds = loader['dataset']
            while 'dataset' in ds and 'pipeline' not in ds:  # wrappers (ConcatDataset, ...)
                ds = ds['dataset']
            return ds
    return None


def _config_metainfo(cfg, scope: str) -> dict:
    """Class names / palette / depth settings of the config's test dataset, without building it."""
    ds = _test_dataset_cfg(cfg)
    if ds is None:
        return {}
    meta = {}
    try:
        cls = _registries(scope)['DATASETS'].get(ds['type'])
    except KeyError:
        cls = None
    if cls is not None:
        meta.update(getattr(cls, 'METAINFO', {}) or {})
    meta.update(ds.get('metainfo') or {})
    return {k.lower(): (list(v) if isinstance(v, tuple) else v) for k, v in meta.items()}


def _load_weights(model: torch.nn.Module, checkpoint: str) -> dict:
    """Loads ``checkpoint`` into ``model``; a tensor whose shape differs is an error (mmengine
    would only log it and leave that layer random)."""
    from mmengine.runner.checkpoint import CheckpointLoader

    from densekit.utils.download import resolve_checkpoint
    path = resolve_checkpoint(checkpoint)
    # mmengine's loader for local files is densekit's safe loader (densekit.compat.safe_load)
    ckpt = CheckpointLoader.load_checkpoint(os.fspath(path), map_location='cpu')
    if not isinstance(ckpt, dict):
        raise ValueError(f'checkpoint {checkpoint} holds a {type(ckpt).__name__}, not a dict')
    state = ckpt.get('state_dict', ckpt)
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    own = model.state_dict()
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in state.items()
                  if k in own and hasattr(v, 'shape') and tuple(v.shape) != tuple(own[k].shape)]
    if mismatched:
        raise ValueError(f'checkpoint {checkpoint} does not fit the config\'s model '
                         f'({len(mismatched)} tensors differ in shape, e.g. a different '
                         f'num_classes): {mismatched[:5]}')
    result = model.load_state_dict(state, strict=False)
    from mmengine.logging import print_log
    if result.missing_keys:
        print_log(f'{len(result.missing_keys)} weights not in checkpoint {checkpoint} keep their '
                  f'initial values: {result.missing_keys[:10]}', logger='current', level=30)
    if result.unexpected_keys:
        print_log(f'{len(result.unexpected_keys)} tensors of checkpoint {checkpoint} are unused: '
                  f'{result.unexpected_keys[:10]}', logger='current', level=30)
    return ckpt


def init_model(config, checkpoint: str | os.PathLike | None = None, device: str = 'cpu',
               cfg_options: dict | None = None) -> torch.nn.Module:
    """Builds the model of ``config`` in eval mode, with the weights of ``checkpoint``.

    Args:
        config: config file path or ``mmengine.Config``.
        checkpoint: checkpoint file or http(s) URL; ``None`` keeps the initial (random) weights.
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ...
        cfg_options: overrides merged into the config (``--cfg-options`` style keys).

    Returns:
        The model, with ``model.cfg`` (the config) and ``model.dataset_meta`` (``classes``,
        ``palette``, and for depth ``depth_scale`` / ``max_depth`` when known).
    """
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import DefaultScope

    cfg = _load_config(config, cfg_options)
    scope = _scope(cfg)
    if checkpoint is not None:
        _drop_pretrained(cfg.model)
    with DefaultScope.overwrite_default_scope(scope):
        model = _registries(scope)['MODELS'].build(cfg.model)
    model = revert_sync_batchnorm(model)  # SyncBN needs a process group; BN is the same at test
    meta = _config_metainfo(cfg, scope)
    if checkpoint is not None:
        ckpt = _load_weights(model, checkpoint)
        saved = (ckpt.get('meta') or {}).get('dataset_meta')
        if saved:
            meta.update({k.lower(): v for k, v in saved.items()})
    model.dataset_meta = meta
    model.cfg = cfg
    return model.to(device).eval()


def list_images(inputs: ImageInput | Sequence[ImageInput]) -> list:
    """Expands a folder into its image files (sorted, recursive); keeps arrays and files."""
    if isinstance(inputs, (str, os.PathLike, np.ndarray)):
        inputs = [inputs]
    out = []
    for item in inputs:
        if isinstance(item, np.ndarray):
            out.append(item)
        elif osp.isdir(item):
            found = sorted(str(p) for p in Path(item).rglob('*')
                           if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise FileNotFoundError(f'no images ({", ".join(IMAGE_SUFFIXES)}) under {item}')
            out.extend(found)
        elif osp.isfile(item):
            out.append(os.fspath(item))
        else:
            raise FileNotFoundError(f'input {item} is neither an image file nor a folder')
    return out


def _pipeline_cfg(cfg) -> list:
    ds = _test_dataset_cfg(cfg)
    steps = ds.get('pipeline') if ds is not None else None
    if not steps:
        steps = cfg.get('test_pipeline')
    if not steps:
        raise ValueError('the config has no test pipeline (test_dataloader.dataset.pipeline or '
                         'test_pipeline)')
    steps = [dict(s) for s in steps]
    kept = [s for s in steps if s['type'].split('.')[-1] not in _GT_LOADERS]
    if 'LoadImageFromFile' not in kept[0]['type']:
        raise ValueError(f"the test pipeline must start with LoadImageFromFile, got {kept[0]['type']}")
    for step in kept:  # meta keys a bare image lacks are simply not packed
        if step['type'].split('.')[-1].startswith('Pack') and 'meta_keys' in step:
            step['meta_keys'] = tuple(step['meta_keys'])
    return kept


def _compose(model, from_array: bool):
    from mmengine.dataset import Compose
    from mmengine.registry import DefaultScope
    scope = _scope(model.cfg)
    steps = _pipeline_cfg(model.cfg)
    if from_array:
        steps[0] = dict(type=f'{scope}.LoadImageFromNDArray')
    with DefaultScope.overwrite_default_scope(scope):
        return Compose(steps)


def inference(model: torch.nn.Module, images: ImageInput | Sequence[ImageInput],
              batch_size: int = 1, progress: bool = False):
    """Predicts ``images`` with ``model`` (from :func:`init_model`).

    Args:
        images: a BGR ``uint8`` array (``H x W x 3``, as ``cv2.imread`` returns), an image path,
            a folder (all images under it, sorted), or a list of these.
        batch_size: images per forward pass.
        progress: print a progress bar (mmengine's) on stdout.

    Returns:
        One data sample for a single array or file, else a list in input order. Each carries
        ``img_path`` (files) and the predictions at the original image size.
    """
    from mmengine.dataset import pseudo_collate
    single = isinstance(images, np.ndarray) or (isinstance(images, (str, os.PathLike))
                                                and osp.isfile(images))
    items = list_images(images)
    pipelines = {}
    results = []
    bar = None
    if progress:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(len(items))
    for start in range(0, len(items), batch_size):
        batch = []
        for i, item in enumerate(items[start:start + batch_size], start):
            from_array = isinstance(item, np.ndarray)
            if from_array not in pipelines:
                pipelines[from_array] = _compose(model, from_array)
            data = dict(img=item, img_id=i) if from_array else dict(img_path=item, img_id=i)
            batch.append(pipelines[from_array](data))
        with torch.no_grad():
            results.extend(model.test_step(pseudo_collate(batch)))
        if bar is not None:
            for _ in batch:
                bar.update()
    if bar is not None:
        print()
    return results[0] if single else results


# ----------------------------------------------------------------------------------- writers


def task_of(sample) -> str:
    """``'panoptic'``, ``'instance'``, ``'detection'``, ``'semantic'`` or ``'depth'``."""
    if 'pred_panoptic_seg' in sample:
        return 'panoptic'
    if 'pred_depth_map' in sample:
        return 'depth'
    if 'pred_sem_seg' in sample:
        return 'semantic'
    if 'pred_instances' in sample:
        return 'instance' if 'masks' in sample.pred_instances else 'detection'
    raise ValueError(f'no prediction in data sample (fields: {sorted(sample.keys())})')


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def coco_records(sample, image_id: int, score_thr: float, classes: Sequence[str] | None) -> list:
    """COCO annotation dicts (``bbox`` as ``[x, y, w, h]``, ``segmentation`` as RLE) of the
    instances scoring at least ``score_thr``."""
    inst = sample.pred_instances
    scores = _np(inst.scores)
    keep = np.nonzero(scores >= score_thr)[0]
    boxes, labels = _np(inst.bboxes)[keep], _np(inst.labels)[keep]
    masks = _np(inst.masks)[keep] if 'masks' in inst else None
    records = []
    for j, (box, label, score) in enumerate(zip(boxes, labels, scores[keep])):
        x1, y1, x2, y2 = (float(v) for v in box)
        rec = dict(image_id=image_id, category_id=int(label), bbox=[x1, y1, x2 - x1, y2 - y1],
                   score=float(score), area=(x2 - x1) * (y2 - y1), iscrowd=0)
        if classes is not None and int(label) < len(classes):
            rec['category'] = classes[int(label)]
        if masks is not None:
            from pycocotools import mask as mask_util
            rle = mask_util.encode(np.asfortranarray(masks[j].astype(np.uint8)))
            rec['segmentation'] = dict(size=[int(s) for s in rle['size']],
                                       counts=rle['counts'].decode('ascii'))
            rec['area'] = float(mask_util.area(rle))
        records.append(rec)
    return records


def _id2rgb(ids: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG encoding: ``id = R + 256 G + 256^2 B``."""
    ids = ids.astype(np.uint32)
    return np.stack([ids % 256, ids // 256 % 256, ids // 256 ** 2 % 256], -1).astype(np.uint8)


def save_predictions(sample, out_dir: str | os.PathLike, stem: str, image_id: int,
                     score_thr: float = 0.3, classes: Sequence[str] | None = None,
                     depth_scale: float = 1000.0) -> dict:
    """Writes the machine-readable prediction of one image under ``out_dir``.

    * detection / instance: nothing per image; the returned ``annotations`` (COCO dicts) are
      collected by the caller into one COCO json;
    * semantic: ``<stem>_sem.png``, the class index per pixel (8-bit, 16-bit above 255 classes);
    * panoptic: ``<stem>_panoptic.png`` in COCO panoptic encoding (``id = R + 256 G + 256^2 B``)
      and its ``segments_info`` (``id``, ``category_id``, ``area``) in the returned dict;
    * depth: ``<stem>_depth.npy`` (float32 metres) and ``<stem>_depth.png`` (16-bit,
      ``round(depth * depth_scale)``, clipped to 65535; 0 = no depth), the KITTI / NYUv2 format.

    Returns:
        ``dict(task=..., files=[...], annotations=[...], segments_info=[...])``.
    """
    import cv2
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = task_of(sample)
    info = dict(task=task, files=[])
    if task in ('detection', 'instance'):
        info['annotations'] = coco_records(sample, image_id, score_thr, classes)
    elif task == 'semantic':
        seg = _np(sample.pred_sem_seg.data)[0]
        dtype = np.uint8 if seg.max(initial=0) < 256 else np.uint16
        path = out_dir / f'{stem}_sem.png'
        cv2.imwrite(str(path), seg.astype(dtype))
        info['files'].append(str(path))
    elif task == 'panoptic':
        from mmdet.evaluation import INSTANCE_OFFSET
        pan = _np(sample.pred_panoptic_seg.sem_seg)[0].astype(np.int64)
        num_classes = len(classes) if classes is not None else None
        segments, ids = [], np.zeros(pan.shape, np.uint32)
        for k, value in enumerate(np.unique(pan), 1):
            label = int(value % INSTANCE_OFFSET)
            if num_classes is not None and label >= num_classes:  # VOID
                continue
            m = pan == value
            ids[m] = k
            segments.append(dict(id=k, category_id=label, area=int(m.sum()),
                                 **({'category': classes[label]} if classes else {})))
        path = out_dir / f'{stem}_panoptic.png'
        cv2.imwrite(str(path), _id2rgb(ids)[..., ::-1])  # cv2 writes BGR
        info['files'].append(str(path))
        info['segments_info'] = segments
    else:  # depth
        depth = _np(sample.pred_depth_map.data)[0].astype(np.float32)
        np.save(out_dir / f'{stem}_depth.npy', depth)
        png = np.clip(np.round(depth * depth_scale), 0, 65535).astype(np.uint16)
        cv2.imwrite(str(out_dir / f'{stem}_depth.png'), png)
        info['files'] += [str(out_dir / f'{stem}_depth.npy'), str(out_dir / f'{stem}_depth.png')]
    return info


def draw_prediction(model, image_bgr: np.ndarray, sample, out_file: str | os.PathLike,
                    score_thr: float = 0.3) -> None:
    """Writes the prediction drawn over the image (mmdet's / mmseg's visualizer; depth: the
    image next to its colour-mapped depth)."""
    import cv2
    task = task_of(sample)
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    if task == 'depth':
        from densekit.mm.depth import colorize_depth
        depth = _np(sample.pred_depth_map.data)[0]
        max_depth = float(model.dataset_meta.get('max_depth') or depth.max(initial=0) or 1.0)
        panel = colorize_depth(depth, max_depth)
        if panel.shape[:2] != image_bgr.shape[:2]:
            panel = cv2.resize(panel, image_bgr.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(out_file), np.concatenate([image_bgr, panel], axis=1))
        return
    scope = _scope(model.cfg)
    vis_type = 'DetLocalVisualizer' if scope == 'mmdet' else 'SegLocalVisualizer'
    registry = _registries(scope)['VISUALIZERS']
    name = f'densekit-infer-{vis_type}'
    from mmengine.visualization import Visualizer
    visualizer = (Visualizer.get_instance(name) if Visualizer.check_instance_created(name)
                  else registry.build(dict(type=vis_type, name=name)))
    visualizer.dataset_meta = model.dataset_meta
    kwargs = dict(draw_gt=False, show=False, out_file=str(out_file))
    if scope == 'mmdet':
        kwargs['pred_score_thr'] = score_thr
    visualizer.add_datasample(Path(out_file).stem, image_bgr[..., ::-1].copy(), sample, **kwargs)


def write_coco_json(path: str | os.PathLike, images: Iterable[dict], annotations: list,
                    classes: Sequence[str] | None) -> None:
    """One COCO json (``images``, ``categories``, ``annotations`` with ``score``): readable by
    ``pycocotools.coco.COCO`` and as pseudo-labels; ``category_id`` is the model's class index."""
    for k, ann in enumerate(annotations, 1):
        ann['id'] = k
    categories = [dict(id=i, name=n) for i, n in enumerate(classes or [])]
    with open(path, 'w') as f:
        json.dump(dict(images=list(images), categories=categories, annotations=annotations), f)
