"""Deformable RoI pooling (mmcv has only a CUDA kernel). Without offsets it is mmcv's aligned avg
RoIAlign, so it is checked against the RoIAlign golden fixture of mmcv's compiled CPU kernel;
offsets are checked by moving the RoI (a zero offset field equals a shifted RoI), gradients by
gradcheck where the kernel's offset gradient is the exact derivative (samples inside the map)."""
import pytest
import torch

from mmcv_parity import assert_close, load_golden, require_portable_ext
from densekit.ops.mmcv.deform_roi_pool import deform_roi_pool

RA = load_golden('roi_align')
CASES = [c for c in RA['cases'] if c['aligned'] and c['pool_mode'] == 'avg']


@pytest.mark.parametrize('case', CASES, ids=lambda c: f"s{c['sampling_ratio']}")
def test_without_offset_matches_mmcv_roi_align_kernel(case):
    x = RA['input'].clone().requires_grad_(True)
    out = deform_roi_pool(x, RA['rois'], None, (3, 4), 0.5, case['sampling_ratio'])
    out.backward(case['grad_output'])
    assert_close(out.detach(), case['output'], 'output')
    assert_close(x.grad, case['grad_input'], 'grad_input')


def test_uniform_offset_is_a_shifted_roi():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 12, 14, generator=g, dtype=torch.float64)
    rois = torch.tensor([[0, 2.0, 3.0, 9.0, 8.0], [0, 4.5, 1.0, 11.0, 10.5]], dtype=torch.float64)
    gamma = 0.1
    off = torch.zeros(2, 2, 2, 2, dtype=torch.float64)
    off[:, 0], off[:, 1] = 0.7, -0.4  # in units of gamma * roi size
    size = rois[:, 3:5] - rois[:, 1:3]
    shift = torch.stack([gamma * size[:, 0] * 0.7, gamma * size[:, 1] * -0.4], 1)
    moved = rois.clone()
    moved[:, 1:3] += shift
    moved[:, 3:5] += shift
    assert_close(deform_roi_pool(x, rois, off, 2, 1.0, 2, gamma),
                 deform_roi_pool(x, moved, None, 2, 1.0, 2, gamma), 'output')


def test_gradcheck_inside_the_map():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 10, 11, generator=g, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 2.3, 2.1, 7.4, 6.9], [1, 3.2, 2.6, 8.1, 7.7]], dtype=torch.float64)
    off = (torch.rand(2, 2, 2, 3, generator=g, dtype=torch.float64) - 0.5) * 0.4
    off.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, o: deform_roi_pool(a, rois, o, (2, 3), 1.0, 2),
                                    (x, off))


@pytest.mark.parametrize('modulated', [False, True])
def test_mmcv_deform_roi_pool_packs(modulated):
    require_portable_ext()
    from mmcv.ops import DeformRoIPoolPack, ModulatedDeformRoIPoolPack
    torch.manual_seed(0)
    cls = ModulatedDeformRoIPoolPack if modulated else DeformRoIPoolPack
    layer = cls((3, 3), 4, spatial_scale=0.5, sampling_ratio=2)
    torch.nn.init.normal_(layer.offset_fc[-1].weight, std=0.01)
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    rois = torch.tensor([[0, 2.0, 3.0, 20.0, 18.0], [1, 10.0, 4.0, 30.0, 28.0]])
    out = layer(x, rois)
    assert out.shape == (2, 4, 3, 3)
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert layer.offset_fc[-1].weight.grad.abs().sum() > 0


def test_bad_offset_shape_raises():
    with pytest.raises(ValueError, match='offset'):
        deform_roi_pool(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), torch.zeros(1, 2, 3, 3), 2)
