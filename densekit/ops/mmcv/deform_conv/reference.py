"""Deformable convolution v1 / v2 in pure PyTorch (explicit bilinear im2col + grouped matmul).

DCNv1: Dai et al., "Deformable Convolutional Networks", ICCV 2017.
DCNv2 (modulated): Zhu et al., "Deformable ConvNets v2: More Deformable, Better Results",
CVPR 2019.

Layouts (mmcv's, identical to torchvision's):

* ``input`` ``[B, C_in, H, W]``; ``weight`` ``[C_out, C_in / groups, kh, kw]``;
* ``offset`` ``[B, dg * 2 * kh * kw, H_out, W_out]``: for deform group ``g`` and kernel tap
  ``k = i * kw + j``, channel ``g * 2 * kh * kw + 2 * k`` is the y (row) offset and ``+ 1`` the x
  (column) offset;
* ``mask`` (v2) ``[B, dg * kh * kw, H_out, W_out]``, channel ``g * kh * kw + k``;
* input channels are split into ``dg`` contiguous deform groups.

Sampling follows mmcv's im2col: tap ``(i, j)`` of output ``(ho, wo)`` reads
``y = ho * stride_h - pad_h + i * dil_h + dy``; a sample with ``y <= -1``, ``y >= H`` (same for
x) is 0, otherwise bilinear with zero for corners outside the map. Gradients come from autograd,
which reproduces the kernels' per-corner rules (``floor`` has zero derivative).
"""
from __future__ import annotations

import torch
from torch import Tensor


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def output_size(in_hw, kernel_hw, stride, padding, dilation) -> tuple[int, int]:
    """Spatial output size of a (deformable) convolution."""
    return tuple((in_hw[d] + 2 * padding[d] - (dilation[d] * (kernel_hw[d] - 1) + 1))
                 // stride[d] + 1 for d in range(2))


def deform_im2col(input: Tensor, offset: Tensor, mask: Tensor | None, kernel_hw, stride,
                  padding, dilation, deform_groups: int) -> Tensor:
    """Sampled columns ``[B, C_in, kh * kw, H_out, W_out]`` (mask applied when given)."""
    b, c, h, w = input.shape
    kh, kw = kernel_hw
    ho, wo = offset.shape[-2:]
    k = kh * kw
    dg = deform_groups
    if c % dg:
        raise ValueError(f'input channels {c} are not divisible by deform_groups {dg}')
    if offset.shape[1] != dg * 2 * k:
        raise ValueError(f'offset must have deform_groups*2*kh*kw={dg * 2 * k} channels, got '
                         f'{offset.shape[1]}')
    dtype, dev = input.dtype, input.device
    off = offset.reshape(b, dg, k, 2, ho, wo)
    ki = torch.arange(kh, device=dev).repeat_interleave(kw)  # tap row index, [K]
    kj = torch.arange(kw, device=dev).repeat(kh)
    base_y = (torch.arange(ho, device=dev)[None, :] * stride[0] - padding[0]
              + ki[:, None] * dilation[0]).to(dtype)  # [K, Ho]
    base_x = (torch.arange(wo, device=dev)[None, :] * stride[1] - padding[1]
              + kj[:, None] * dilation[1]).to(dtype)  # [K, Wo]
    y = base_y[None, None, :, :, None] + off[:, :, :, 0]  # [B, dg, K, Ho, Wo]
    x = base_x[None, None, :, None, :] + off[:, :, :, 1]
    inside = (y > -1) & (x > -1) & (y < h) & (x < w)
    y0f, x0f = torch.floor(y), torch.floor(x)
    ly, lx = y - y0f, x - x0f
    hy, hx = 1 - ly, 1 - lx
    y0, x0 = y0f.long(), x0f.long()
    cg = c // dg
    feat = input.reshape(b, dg, cg, h * w)
    cols = None
    for dy, dx, wgt in ((0, 0, hy * hx), (0, 1, hy * lx), (1, 0, ly * hx), (1, 1, ly * lx)):
        yy, xx = y0 + dy, x0 + dx
        ok = inside & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        idx = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).reshape(b, dg, 1, -1)
        v = torch.gather(feat, 3, idx.expand(b, dg, cg, idx.shape[-1]))
        v = v.reshape(b, dg, cg, k, ho, wo)
        term = torch.where(ok[:, :, None], wgt[:, :, None], torch.zeros((), dtype=dtype,
                                                                       device=dev)) * v
        cols = term if cols is None else cols + term
    if mask is not None:
        if mask.shape[1] != dg * k:
            raise ValueError(f'mask must have deform_groups*kh*kw={dg * k} channels, got '
                             f'{mask.shape[1]}')
        cols = cols * mask.reshape(b, dg, 1, k, ho, wo)
    return cols.reshape(b, c, k, ho, wo)


def deform_conv2d(input: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None = None,
                  stride=1, padding=0, dilation=1, groups: int = 1, deform_groups: int = 1,
                  mask: Tensor | None = None) -> Tensor:
    """Deformable convolution (v2 when ``mask`` is given); differentiable via autograd."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    b, c, h, w = input.shape
    cout, cin_g, kh, kw = weight.shape
    if c != cin_g * groups:
        raise ValueError(f'input has {c} channels but weight expects {cin_g} x groups {groups}')
    ho, wo = output_size((h, w), (kh, kw), stride, padding, dilation)
    if tuple(offset.shape[-2:]) != (ho, wo):
        raise ValueError(f'offset spatial size {tuple(offset.shape[-2:])} != output size '
                         f'{(ho, wo)}')
    cols = deform_im2col(input, offset, mask, (kh, kw), stride, padding, dilation,
                         deform_groups)
    cols = cols.reshape(b, groups, cin_g * kh * kw, ho * wo)
    wmat = weight.reshape(groups, cout // groups, cin_g * kh * kw)
    out = torch.einsum('gok,bgkn->bgon', wmat, cols).reshape(b, cout, ho, wo)
    if bias is not None:
        out = out + bias[None, :, None, None]
    return out
