"""Deformable convolution v1 / v2 (mmcv 2.1 semantics) for CPU and CUDA tensors.

torchvision's compiled ``deform_conv2d`` is used when available: its offset layout (per deform
group, per tap, ``(dy, dx)``), contiguous channel split into offset groups, bounds rule and
per-corner zero padding are mmcv's (checked against mmcv's kernel by
``tests/ops/test_mmcv_deform_conv.py``). Otherwise the pure-PyTorch reference runs.
"""
from __future__ import annotations

import torch
from torch import Tensor

from densekit.ops.mmcv.deform_conv import reference
from densekit.ops.mmcv.deform_conv.reference import output_size

__all__ = ['deform_conv2d', 'deform_conv2d_grads', 'output_size', 'reference']


def _torchvision_deform_conv2d():
    try:
        import torchvision
        from torchvision.extension import _has_ops
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return None
    return torchvision.ops.deform_conv2d if _has_ops() else None


def deform_conv2d(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None = None,
                  stride=1, padding=0, dilation=1, groups: int = 1, deform_groups: int = 1,
                  mask: Tensor | None = None) -> Tensor:
    """Deformable convolution; modulated (DCNv2) when ``mask`` is given. Autograd-capable.

    Args:
        input: ``[B, C_in, H, W]``.
        offset: ``[B, deform_groups * 2 * kh * kw, H_out, W_out]``, ``(dy, dx)`` per tap.
        weight: ``[C_out, C_in / groups, kh, kw]``.
        bias: ``[C_out]`` or None.
        stride, padding, dilation: int or ``(h, w)``.
        groups: convolution groups.
        deform_groups: offset groups (contiguous channel blocks of the input).
        mask: ``[B, deform_groups * kh * kw, H_out, W_out]`` modulation, or None.

    Returns:
        ``[B, C_out, H_out, W_out]``.
    """
    kh, kw = weight.shape[-2:]
    if input.shape[1] != weight.shape[1] * groups:
        raise ValueError(f'input has {input.shape[1]} channels but weight expects '
                         f'{weight.shape[1]} x groups {groups}')
    if offset.shape[1] != deform_groups * 2 * kh * kw:
        raise ValueError(f'offset must have deform_groups*2*kh*kw={deform_groups * 2 * kh * kw}'
                         f' channels, got {offset.shape[1]}')
    tv = _torchvision_deform_conv2d()
    same_dtype = all(t is None or t.dtype == input.dtype for t in (offset, weight, bias, mask))
    if tv is not None and same_dtype:
        return tv(input, offset, weight, bias, stride=reference._pair(stride),
                  padding=reference._pair(padding), dilation=reference._pair(dilation),
                  mask=mask)
    return reference.deform_conv2d(input, offset, weight, bias, stride, padding, dilation,
                                   groups, deform_groups, mask)


def deform_conv2d_grads(grad_output: Tensor, input: Tensor, offset: Tensor, weight: Tensor,
                        bias: Tensor | None, mask: Tensor | None, wanted, **conv_kw):
    """Gradients of :func:`deform_conv2d` for the named inputs in ``wanted``.

    ``wanted`` is a subset of ``('input', 'offset', 'weight', 'bias', 'mask')``; returns a dict
    name -> gradient. Used by callers (mmcv's compiled-op interface) that have no autograd graph.
    """
    named = dict(input=input, offset=offset, weight=weight, bias=bias, mask=mask)
    with torch.enable_grad():
        leaves = {k: (v.detach().requires_grad_(k in wanted) if v is not None else None)
                  for k, v in named.items()}
        out = deform_conv2d(leaves['input'], leaves['offset'], leaves['weight'], leaves['bias'],
                            mask=leaves['mask'], **conv_kw)
        names = [k for k in wanted if leaves[k] is not None]
        grads = torch.autograd.grad(out, [leaves[k] for k in names], grad_output,
                                    allow_unused=True)
    return {k: (g if g is not None else torch.zeros_like(named[k])) for k, g in zip(names, grads)}
