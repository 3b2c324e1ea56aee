"""Deformable convolution v1 / v2 (mmcv 2.1 semantics) for CPU and CUDA tensors.

torchvision's compiled ``deform_conv2d`` is used when available: its offset layout (per deform
group, per tap, ``(dy, dx)``), contiguous channel split into offset groups, bounds rule and
per-corner zero padding are mmcv's (checked against mmcv's kernel by
``tests/ops/test_mmcv_deform_conv.py``). One rule differs: mmcv's coordinate gradient is zero for
a sample at ``y <= -1`` or ``x <= -1`` (its bounds test comes before the corner weights), while
torchvision still differentiates the in-map corner of a sample exactly at ``-1``. Zero offsets
with padding 1 put taps exactly there, which is how every DCN layer starts training, so the fast
path zeroes the offset gradient of those taps (:class:`_MmcvBorderGrad`). Otherwise the
pure-PyTorch reference runs.

:func:`mmcv_offset_view` reproduces how mmcv's modulated kernels read an offset / mask whose
spatial size differs from the output's (DyHead feeds them one from the next-larger level).
"""
from __future__ import annotations

import torch
from torch import Tensor

from densekit.ops.mmcv.deform_conv import reference
from densekit.ops.mmcv.deform_conv.reference import output_size

__all__ = ['deform_conv2d', 'deform_conv2d_grads', 'mmcv_offset_view', 'output_size',
           'reference']


def _torchvision_deform_conv2d():
    try:
        import torchvision
        from torchvision.extension import _has_ops
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return None
    return torchvision.ops.deform_conv2d if _has_ops() else None


class _MmcvBorderGrad(torch.autograd.Function):
    """Identity on the offset whose backward zeroes the rows mmcv's kernel leaves at zero."""

    @staticmethod
    def forward(ctx, offset, keep):
        ctx.save_for_backward(keep)
        return offset.view_as(offset)

    @staticmethod
    def backward(ctx, grad):
        keep, = ctx.saved_tensors
        return grad * keep, None


def _border_keep(offset: Tensor, in_hw, kernel_hw, stride, padding, dilation) -> Tensor:
    """``1`` where a tap's sample lies at ``y > -1`` and ``x > -1`` (mmcv differentiates its
    coordinates), ``0`` elsewhere, broadcast to ``offset``'s shape (both of a tap's channels)."""
    b, c, ho, wo = offset.shape
    kh, kw = kernel_hw
    dev = offset.device
    k = kh * kw
    off = offset.detach().reshape(b, c // (2 * k), k, 2, ho, wo)
    ki = torch.arange(kh, device=dev).repeat_interleave(kw)
    kj = torch.arange(kw, device=dev).repeat(kh)
    base_y = (torch.arange(ho, device=dev)[None, :] * stride[0] - padding[0]
              + ki[:, None] * dilation[0]).to(offset.dtype)
    base_x = (torch.arange(wo, device=dev)[None, :] * stride[1] - padding[1]
              + kj[:, None] * dilation[1]).to(offset.dtype)
    y = base_y[None, None, :, :, None] + off[:, :, :, 0]
    x = base_x[None, None, :, None, :] + off[:, :, :, 1]
    keep = ((y > -1) & (x > -1)).to(offset.dtype)[:, :, :, None]
    return keep.expand(b, c // (2 * k), k, 2, ho, wo).reshape(offset.shape)


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
        stride, padding = reference._pair(stride), reference._pair(padding)
        dilation = reference._pair(dilation)
        if offset.requires_grad and torch.is_grad_enabled():
            keep = _border_keep(offset, input.shape[-2:], (kh, kw), stride, padding, dilation)
            offset = _MmcvBorderGrad.apply(offset, keep)
        return tv(input, offset, weight, bias, stride=stride, padding=padding,
                  dilation=dilation, mask=mask)
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


def mmcv_offset_view(t: Tensor, out_hw, per_position: int) -> Tensor:
    """``t`` as mmcv's modulated deform-conv kernels read it for an output of size ``out_hw``.

    mmcv 2.1's ``modulated_deform_conv_forward`` / ``_backward`` pass ``offset[b]`` /
    ``mask[b]`` to kernels that index them as a dense ``[per_position, H_out, W_out]`` block from
    that sample's first element, and check neither the spatial size nor the channel count. An
    offset / mask with more elements per sample (DyHead's ``spatial_conv_high`` gets the offset of
    the 2x larger level) is therefore read as the first ``per_position * H_out * W_out``
    elements of each sample in memory order; the rest is never read and gets zero gradient.
    Differentiable; a tensor of the output's size is returned unchanged.

    Args:
        t: ``[B, ...]`` offset (``per_position = deform_groups * 2 * kh * kw``) or mask
            (``deform_groups * kh * kw``).
        out_hw: ``(H_out, W_out)`` of the convolution.
        per_position: channels the kernel reads per output position.

    Returns:
        ``[B, per_position, H_out, W_out]``.
    """
    ho, wo = (int(v) for v in out_hw)
    if t.dim() == 4 and tuple(t.shape[1:]) == (per_position, ho, wo):
        return t
    need = per_position * ho * wo
    flat = t.reshape(t.shape[0], -1)
    if flat.shape[1] < need:
        raise ValueError(f'offset / mask of shape {tuple(t.shape)} has fewer than '
                         f'{per_position}x{ho}x{wo} elements per sample, which the kernel reads '
                         'for this output size')
    return flat[:, :need].reshape(t.shape[0], per_position, ho, wo)
