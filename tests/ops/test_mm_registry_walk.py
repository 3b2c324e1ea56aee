"""Walk mmdet's and mmseg's ``MODELS`` registries and run every model that can be built generically
on CPU with densekit's portable mmcv ops: build, forward on a small synthetic input of its kind,
backward where it has trainable parameters.

What is built:
* a class whose constructor has no required parameter is built with its defaults;
* a few kinds whose constructors always need the same arguments get the minimal arguments in
  ``KIND_ARGS`` (mmseg decode heads: ``in_channels`` / ``channels`` / ``num_classes``), and the
  main classes that need more get theirs in ``CLASS_ARGS``.

What is run, per kind (the registering module's folder): backbones get an image batch; necks and
decode heads a list of feature maps with the ``in_channels`` they were built with; dense heads a
feature pyramid with their ``in_channels`` and one level per prior-generator stride; RoI heads
with ``in_channels`` / ``roi_feat_size`` a batch of RoI features; losses the first of a few
(pred, target) pairs of the usual forms (class scores + labels, scores + soft targets, boxes +
boxes, segmentation logits + label maps) they accept.

Outcome per class (each class is one test id, so ``-rsx`` lists them all):
* **pass**: it ran; outputs are finite and, when trainable, at least one parameter got a finite
  gradient;
* **fail**: the exception is a portable-op gap — ``PortableOpUnavailable``, a message naming
  ``mmcv._ext`` or densekit, or raised inside densekit / ``mmcv.ops``;
* **skip** (with the class and the reason): it cannot be built or fed generically (a required
  constructor argument outside the tables, a kind without a generic input such as detectors,
  trackers, RoI extractors, data preprocessors, a loss whose inputs are none of the usual forms);
* **xfail** (with the class, the exception and where it was raised): any other exception, raised
  in mmdet's / mmseg's / torch's own code — reported as what it is, not as a densekit failure.
"""
from __future__ import annotations

import inspect
import traceback
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

import densekit  # noqa: E402,F401  (installs the portable mmcv._ext before mmcv.ops is imported)

DENSEKIT_DIR = str(Path(densekit.__file__).resolve().parent)

# Minimal constructor arguments for kinds whose classes all need the same ones.
KIND_ARGS = {
    ('mmseg', 'decode_heads'): dict(in_channels=16, channels=8, num_classes=3),
}
# Minimal constructor arguments for the main classes that need more than their defaults.
CLASS_ARGS = {
    ('mmdet', 'ResNet'): dict(depth=18),
    ('mmdet', 'ResNetV1d'): dict(depth=18),
    ('mmdet', 'ResNeXt'): dict(depth=50, groups=2, base_width=4),
    ('mmdet', 'FPN'): dict(in_channels=[8, 16, 32], out_channels=8, num_outs=4),
    ('mmdet', 'RPNHead'): dict(in_channels=8, feat_channels=8, num_classes=1),
    ('mmdet', 'RetinaHead'): dict(num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1),
    ('mmdet', 'DyHead'): dict(in_channels=8, out_channels=16, num_blocks=1),
    ('mmseg', 'ResNetV1c'): dict(depth=18),
    ('mmseg', 'ResNet'): dict(depth=18),
    ('mmseg', 'FPN'): dict(in_channels=[8, 16, 32], out_channels=8, num_outs=4),
    ('mmseg', 'UPerHead'): dict(in_channels=[8, 16, 32, 64], in_index=[0, 1, 2, 3], channels=8,
                                num_classes=3),
}
# Backbones built from their defaults are full-size (Swin-T, ViT-B, HRNet, Hourglass-104, ...):
# seconds to tens of seconds each on one CPU core, so the whole kind runs in the slow tier, as do
# the heads / necks whose defaults are as large (a 576-channel grid head, JPU on 2048 channels).
SLOW = {('mmdet', 'GridHead'), ('mmseg', 'JPU')}
# Kinds that have no generic synthetic input (run by their own tests or by whole-config tests).
NOT_GENERIC = {
    'detectors': 'a detector needs a full config (tests/ops/test_mm_two_stage_cpu.py runs some)',
    'segmentors': 'a segmentor needs a full config',
    'data_preprocessors': 'a data preprocessor takes data samples, not tensors',
    'data_preprocessor': 'a data preprocessor takes data samples, not tensors',
    'tta': 'test-time augmentation wraps a built model',
    'mot': 'a tracker model needs a full config',
    'trackers': 'a tracker takes track state, not tensors',
    'tracking_heads': 'a tracking head takes detections and data samples',
    'reid': 'a re-identification model needs a full config',
    'vis': 'a video-instance model needs a full config',
    'seg_heads': 'panoptic fusion heads take detector results',
    'language_models': 'a language model needs pretrained text weights',
    'text_encoder': 'a text encoder needs pretrained text weights',
    'task_modules': 'assigners / samplers / coders are not nn.Modules with a tensor forward',
    'layers': 'layer building blocks take block-specific inputs',
    'modules': 'layer building blocks take block-specific inputs',
    'depth': 'a depth segmentor / head needs a full config',
    'utils': 'helper modules take block-specific inputs',
}


def _kind(cls: type) -> str:
    parts = cls.__module__.split('.')
    if parts[0] == 'densekit':
        return 'backbones' if parts[-1] == 'backbones' else parts[-1]
    return parts[2] if len(parts) > 2 and parts[1] == 'models' else parts[1] if len(parts) > 1 else ''


def _entries() -> list[tuple[str, str, type]]:
    import densekit.mm  # noqa: F401  (densekit's backbones register into both registries)
    from mmdet.registry import MODELS as DET_MODELS
    from mmdet.utils import register_all_modules as register_det
    from mmseg.registry import MODELS as SEG_MODELS
    from mmseg.utils import register_all_modules as register_seg
    register_det(init_default_scope=False)
    register_seg(init_default_scope=False)
    out = []
    for registry in (DET_MODELS, SEG_MODELS):
        for name, cls in sorted(registry.module_dict.items()):
            out.append((registry.scope, name, cls))
    return out


ENTRIES = _entries()


def _required_params(cls: type) -> list[str]:
    try:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return []
    return [p.name for p in params
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _is_gap(exc: BaseException) -> bool:
    """A portable-op gap: densekit's stand-in refuses, or the error comes from an op."""
    if type(exc).__name__ == 'PortableOpUnavailable':
        return True
    msg = str(exc)
    if 'mmcv._ext' in msg or 'PortableOpUnavailable' in msg or 'densekit' in msg:
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return False
    inner = frames[-1].filename
    return inner.startswith(DENSEKIT_DIR) or '/mmcv/ops/' in inner


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return '?'
    f = frames[-1]
    short = f.filename.split('site-packages/')[-1]
    return f'{short}:{f.lineno}'


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() else []
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    return []


def _check_and_backward(model: torch.nn.Module, out) -> None:
    outs = _tensors(out)
    assert outs, f'{type(model).__name__} returned no floating tensor'
    for t in outs:
        assert torch.isfinite(t).all(), f'{type(model).__name__} output is not finite'
    trainable = [p for p in model.parameters() if p.requires_grad]
    graph = [t for t in outs if t.requires_grad]
    if not trainable or not graph:
        return
    sum(t.float().mean() for t in graph).backward()
    grads = [p.grad for p in trainable if p.grad is not None]
    assert grads, f'{type(model).__name__}: no parameter received a gradient'
    for g in grads:
        assert torch.isfinite(g).all(), f'{type(model).__name__}: non-finite gradient'


def _feature_list(in_channels, in_index=None, base: int = 32) -> list[torch.Tensor]:
    chans = list(in_channels) if isinstance(in_channels, (list, tuple)) else [in_channels]
    if in_index is not None and not isinstance(in_index, (list, tuple)):
        in_index = [in_index]
    if in_index is not None and len(in_index) == len(chans):
        levels = max([i + 1 for i in in_index if i >= 0] + [len(in_index)])
        per_level = [chans[0]] * levels
        for i, c in zip(in_index, chans):
            per_level[i] = c
    else:
        per_level = chans
    return [torch.rand(2, c, max(base >> i, 2), max(base >> i, 2)) for i, c in enumerate(per_level)]


def _run_backbone(model):
    c = getattr(model, 'in_channels', 3)
    c = c if isinstance(c, int) else 3
    return model(torch.rand(2, c, 64, 64))


def _run_neck(model):
    if not hasattr(model, 'in_channels'):
        pytest.skip(f'{type(model).__name__}: neck without an in_channels attribute')
    return model(_feature_list(model.in_channels))


def _run_decode_head(model):
    feats = _feature_list(model.in_channels, getattr(model, 'in_index', None))
    return model(feats)


def _run_dense_head(model):
    c = getattr(model, 'in_channels', None)
    if not isinstance(c, int):
        pytest.skip(f'{type(model).__name__}: dense head without an int in_channels')
    gen = getattr(model, 'prior_generator', None)
    levels = len(gen.strides) if gen is not None and hasattr(gen, 'strides') else 5
    return model(tuple(_feature_list([c] * levels)))


def _run_roi_head(model):
    c, s = getattr(model, 'in_channels', None), getattr(model, 'roi_feat_size', None)
    if not isinstance(c, int) or s is None:
        pytest.skip(f'{type(model).__name__}: RoI head without in_channels / roi_feat_size '
                    '(extractors, cascades and roi-head wrappers need RoIs and data samples)')
    s = s if isinstance(s, (tuple, list)) else (s, s)
    return model(torch.rand(3, c, *s))


def _loss_inputs():
    boxes = torch.tensor([[0., 0., 10., 10.], [5., 5., 20., 30.], [2., 3., 8., 9.], [1., 1., 4., 6.]])
    yield 'scores + labels', torch.randn(4, 5), torch.tensor([0, 4, 2, 1])
    yield 'scores + soft targets', torch.randn(4, 5), torch.rand(4, 5)
    yield 'boxes + boxes', boxes + torch.rand(4, 4), boxes
    yield 'seg logits + label map', torch.randn(2, 5, 8, 8), torch.randint(0, 5, (2, 8, 8))


def _run_loss(model):
    errors = []
    for form, pred, target in _loss_inputs():
        pred = pred.clone().requires_grad_(True)
        try:
            out = model(pred, target)
        except Exception as exc:  # noqa: BLE001  (try the next input form; gaps still fail)
            if _is_gap(exc):
                raise
            errors.append(f'{form}: {type(exc).__name__}: {str(exc)[:80]}')
            continue
        outs = _tensors(out)
        assert outs and all(torch.isfinite(t).all() for t in outs), f'{form}: non-finite loss'
        graph = [t for t in outs if t.requires_grad]
        assert graph, f'{type(model).__name__}: loss is not differentiable in pred ({form})'
        sum(t.sum() for t in graph).backward()
        assert pred.grad is not None and torch.isfinite(pred.grad).all()
        return
    pytest.skip(f'{type(model).__name__}: no generic (pred, target) form fits: ' + ' | '.join(errors))


RUNNERS = {
    'backbones': _run_backbone,
    'necks': _run_neck,
    'decode_heads': _run_decode_head,
    'dense_heads': _run_dense_head,
    'roi_heads': _run_roi_head,
    'losses': _run_loss,
}


def _build(scope: str, name: str, cls: type, kind: str):
    kwargs = CLASS_ARGS.get((scope, name))
    if kwargs is None:
        kwargs = KIND_ARGS.get((scope, kind))
    if kwargs is None:
        required = _required_params(cls)
        if required:
            pytest.skip(f'{scope}.{name}: constructor needs {required} (not in the minimal-args '
                        'tables)')
        kwargs = {}
    try:
        return cls(**kwargs)
    except Exception as exc:  # noqa: BLE001
        if _is_gap(exc):
            raise
        pytest.skip(f'{scope}.{name}: cannot be built from {kwargs or "its defaults"}: '
                    f'{type(exc).__name__}: {str(exc)[:120]}')


def _param(scope: str, name: str, cls: type):
    slow = ((_kind(cls) == 'backbones' and not cls.__module__.startswith('densekit'))
            or (scope, name) in SLOW)
    return pytest.param(scope, name, cls, id=f'{scope}.{name}',
                        marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize('scope,name,cls', [_param(*e) for e in ENTRIES])
def test_registered_model_runs_on_cpu(scope, name, cls):
    if cls.__module__.startswith('densekit'):
        pytest.skip(f'{scope}.{name}: densekit\'s own model, run by tests/models\' '
                    'registry-parametrized backbone test')
    kind = _kind(cls)
    if kind in NOT_GENERIC:
        pytest.skip(f'{scope}.{name}: {NOT_GENERIC[kind]}')
    runner = RUNNERS.get(kind)
    if runner is None:
        pytest.skip(f'{scope}.{name}: kind {kind!r} has no generic synthetic input')
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        pytest.skip(f'{scope}.{name}: not an nn.Module')
    torch.manual_seed(0)
    model = _build(scope, name, cls, kind)
    model.train()
    try:
        out = runner(model)
        _check_and_backward(model, out) if kind != 'losses' else None
    except pytest.skip.Exception:
        raise
    except Exception as exc:  # noqa: BLE001
        if _is_gap(exc):
            raise
        pytest.xfail(f'{scope}.{name}: {type(exc).__name__} in {_where(exc)} (outside densekit): '
                     f'{str(exc)[:160]}')


def test_walk_covers_both_registries():
    scopes = {s for s, _, _ in ENTRIES}
    assert scopes == {'mmdet', 'mmseg'}
    runnable = [e for e in ENTRIES if _kind(e[2]) in RUNNERS]
    assert len(runnable) > 150, len(runnable)
