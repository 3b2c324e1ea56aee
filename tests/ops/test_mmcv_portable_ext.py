"""The portable ``mmcv._ext``: every mmcv op imports, unported ones fail loudly by name, and the
mmdet / mmseg model zoos import and build on top of it."""
import subprocess
import sys

import pytest
import torch

from mmcv_parity import require_portable_ext


@pytest.fixture(autouse=True)
def _portable():
    require_portable_ext()


def test_every_mmcv_op_imports():
    import mmcv.ops
    missing = [name for name in mmcv.ops.__all__ if not hasattr(mmcv.ops, name)]
    assert not missing


def test_unported_ext_functions_raise_naming_the_op():
    from densekit.compat import mmcv_ext
    unported = sorted(set(mmcv_ext._ALL_NAMES) - set(mmcv_ext._IMPLEMENTED)
                      - {'get_compiler_version', 'get_compiling_cuda_version'})
    assert 'box_iou_rotated' in unported and 'nms' not in unported
    assert not {'psamask_forward', 'carafe_forward', 'deform_roi_pool_forward'} & set(unported)
    for name in unported:
        with pytest.raises(mmcv_ext.PortableOpUnavailable, match=f"'{name}'"):
            getattr(mmcv_ext, name)(torch.zeros(1))


def test_unported_op_through_mmcv_api_raises_clear_error():
    from mmcv.ops import box_iou_rotated
    from densekit.compat.mmcv_ext import PortableOpUnavailable
    with pytest.raises(PortableOpUnavailable, match="'box_iou_rotated'.*full mmcv"):
        box_iou_rotated(torch.rand(2, 5), torch.rand(3, 5))


def test_implemented_ext_functions_keep_mmcv_names():
    from densekit.compat import mmcv_ext
    for name, fn in mmcv_ext._IMPLEMENTED.items():
        assert getattr(mmcv_ext, name) is fn and fn.__name__ == name


def test_mm_model_zoos_import_in_a_fresh_interpreter():
    code = ('import densekit, mmdet.models, mmseg.models, mmdet.apis, mmseg.apis; '
            'from densekit.compat import using_portable_ops; assert using_portable_ops()')
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


def test_every_mmdet_and_mmseg_model_can_be_looked_up():
    import mmdet.models  # noqa: F401
    import mmseg.models  # noqa: F401
    from mmdet.registry import MODELS as DET_MODELS
    from mmseg.registry import MODELS as SEG_MODELS
    for registry, minimum in ((DET_MODELS, 200), (SEG_MODELS, 50)):
        names = list(registry.module_dict)
        assert len(names) >= minimum, (registry.name, len(names))
        unresolved = [n for n in names if registry.get(n) is None]
        assert not unresolved, (registry.name, unresolved)


def test_representative_builds_run_forward_backward():
    import mmdet.models  # noqa: F401
    from mmdet.registry import MODELS
    from mmengine.registry import MODELS as MMENGINE_MODELS
    extractor = MODELS.build(dict(
        type='SingleRoIExtractor', out_channels=8, featmap_strides=[4, 8],
        roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0)))
    feats = tuple(torch.randn(2, 8, 64 // s, 64 // s, requires_grad=True) for s in (4, 8))
    rois = torch.tensor([[0, 4., 4., 20., 30.], [1, 10., 0., 63., 50.], [1, 1., 1., 9., 9.]])
    out = extractor(feats, rois)
    out.sum().backward()
    assert out.shape == (3, 8, 7, 7) and all(f.grad is not None for f in feats)
    x = torch.randn(1, 8, 9, 11, requires_grad=True)
    for name in ('DCN', 'DCNv2'):
        conv = MMENGINE_MODELS.build(dict(type=name, in_channels=8, out_channels=4,
                                          kernel_size=3, padding=1, deform_groups=2))
        y = conv(x)
        y.sum().backward()
        assert y.shape == (1, 4, 9, 11) and torch.isfinite(x.grad).all()
    msda = MMENGINE_MODELS.build(dict(type='MultiScaleDeformableAttention', embed_dims=8,
                                      num_heads=2, num_levels=1, num_points=2,
                                      batch_first=True))
    value = torch.randn(1, 20, 8)
    out = msda(torch.randn(1, 3, 8), value=value, reference_points=torch.rand(1, 3, 1, 2),
               spatial_shapes=torch.tensor([[4, 5]]), level_start_index=torch.tensor([0]))
    assert out.shape == (1, 3, 8)


def test_op_packages_need_no_openmmlab():
    """densekit.ops.<op> (the math behind the portable ext) imports and runs with mm* blocked."""
    code = '\n'.join([
        'import sys',
        "for m in ('mmcv', 'mmdet', 'mmengine', 'mmseg'): sys.modules[m] = None",
        'import torch',
        'from densekit.ops.mmcv import deform_conv, focal_loss, ms_deform_attn, nms, roi_align',
        'from densekit.ops.mmcv import carafe, deform_roi_pool, masked_conv, psamask, roi_pool',
        'x = torch.randn(1, 2, 8, 8)',
        'r = torch.tensor([[0, 1., 1., 6., 6.]])',
        'assert roi_align.roi_align(x, r, 2).shape == (1, 2, 2, 2)',
        'assert roi_pool.roi_pool(x, r, 2).shape == (1, 2, 2, 2)',
        'assert masked_conv.masked_conv2d(x, torch.ones(1, 8, 8), torch.ones(3, 2, 3, 3), '
        'padding=1).shape == (1, 3, 8, 8)',
        'assert carafe.carafe(x, torch.rand(1, 9, 16, 16), 3, 1, 2).shape == (1, 2, 16, 16)',
        'assert deform_roi_pool.deform_roi_pool(x, r, None, 2).shape == (1, 2, 2, 2)',
        "assert psamask.psamask(torch.randn(1, 9, 4, 4), 'collect', 3).shape == (1, 16, 4, 4)",
        'assert nms.nms(torch.tensor([[0, 0, 1, 1.]]), torch.tensor([1.]), 0.5).tolist() == [0]',
    ])
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
