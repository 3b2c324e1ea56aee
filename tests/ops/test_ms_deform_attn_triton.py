"""Fused Triton multi-scale deformable attention vs the grid_sample reference, forward and all
gradients, under the Triton CPU interpreter (``TRITON_INTERPRET=1``); on CUDA with the gpu mark."""
import pytest
import torch

from mmcv_parity import assert_close
from densekit.ops.mmcv.ms_deform_attn import ms_deform_attn

# (levels as (H, W), batch, queries, heads, head_dim, points): odd sizes, a 1-pixel-high level,
# non-power-of-two head_dim and point counts (masked lanes).
CASES = [
    (((5, 7), (1, 3)), 1, 3, 2, 6, 3),
    (((4, 4),), 2, 2, 1, 4, 2),
]


def _inputs(levels, bs, nq, heads, dim, points, device='cpu', dtype=torch.float32):
    gen = torch.Generator().manual_seed(9)
    shapes = torch.tensor(levels, dtype=torch.long)
    areas = shapes.prod(1)
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    value = torch.randn(bs, int(areas.sum()), heads, dim, generator=gen)
    # Locations reach outside [0, 1] so that masked (zero-padded) corners are exercised.
    loc = torch.rand(bs, nq, heads, len(levels), points, 2, generator=gen) * 1.3 - 0.15
    attn = torch.rand(bs, nq, heads, len(levels), points, generator=gen)
    return ([t.to(device=device, dtype=dtype) for t in (value, loc, attn)],
            shapes.to(device), starts.to(device))


def _check(case, device):
    (value, loc, attn), shapes, starts = _inputs(*case, device=device)
    outs, grads = [], []
    for backend in ('reference', 'triton'):
        leaves = [t.clone().requires_grad_(True) for t in (value, loc, attn)]
        out = ms_deform_attn(leaves[0], shapes, starts, leaves[1], leaves[2], backend=backend)
        out.backward(torch.linspace(-1, 1, out.numel(), device=device).reshape(out.shape))
        outs.append(out.detach())
        grads.append([t.grad for t in leaves])
    assert_close(outs[1], outs[0], 'output')
    for name, a, b in zip(('value', 'sampling_locations', 'attention_weights'), *grads):
        # Location gradients are scaled by the level size (pixels per unit), so they carry
        # proportionally larger fp32 rounding; compare them relative to that scale.
        scale = max(max(lv) for lv in case[0]) if name == 'sampling_locations' else 1
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * scale, msg=lambda m: f'{name}: {m}')


@pytest.mark.parametrize('case', CASES)
def test_triton_matches_reference_in_interpreter(case, triton_interpreter):
    _check(case, 'cpu')


def test_backend_choice_goes_through_the_chooser(triton_interpreter, monkeypatch, caplog):
    """Triton is opt-in: the automatic choice is the reference (the skip is logged with its reason);
    ``DENSEKIT_ATTN_BACKEND=triton`` selects the fused kernels like ``backend='triton'``; a backend
    this op does not have (``flex``) leaves it on the automatic choice."""
    import logging
    from densekit.ops.mmcv.ms_deform_attn import triton as msda_triton
    (value, loc, attn), shapes, starts = _inputs(*CASES[1])
    calls = []
    real = msda_triton.ms_deform_attn_triton
    monkeypatch.setattr(msda_triton, 'ms_deform_attn_triton', lambda *a: calls.append(1) or real(*a))
    ref = ms_deform_attn(value, shapes, starts, loc, attn, backend='reference')
    with caplog.at_level(logging.DEBUG, logger='densekit.ops'):
        monkeypatch.delenv('DENSEKIT_ATTN_BACKEND', raising=False)
        torch.testing.assert_close(ms_deform_attn(value, shapes, starts, loc, attn), ref, atol=0, rtol=0)
        assert not calls
        assert "skipping backend 'triton': the fused kernels are opt-in" in caplog.text
        monkeypatch.setenv('DENSEKIT_ATTN_BACKEND', 'flex')
        torch.testing.assert_close(ms_deform_attn(value, shapes, starts, loc, attn), ref, atol=0, rtol=0)
        assert not calls and 'DENSEKIT_ATTN_BACKEND=flex names no backend of this op' in caplog.text
    monkeypatch.setenv('DENSEKIT_ATTN_BACKEND', 'triton')
    assert_close(ms_deform_attn(value, shapes, starts, loc, attn), ref, 'output')
    assert calls == [1]
    monkeypatch.setenv('DENSEKIT_ATTN_BACKEND', 'cuda')
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        ms_deform_attn(value, shapes, starts, loc, attn)


def test_unknown_backend_raises():
    (value, loc, attn), shapes, starts = _inputs(*CASES[1])
    with pytest.raises(ValueError, match='backend'):
        ms_deform_attn(value, shapes, starts, loc, attn, backend='cuda')


@pytest.mark.gpu
@pytest.mark.parametrize('case', CASES)
def test_triton_matches_reference_on_cuda(case, requires_cuda, monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    _check(case, 'cuda')
