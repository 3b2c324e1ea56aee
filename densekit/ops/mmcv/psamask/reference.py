"""Point-wise spatial attention mask re-layout (PSANet's ``psamask``), pure PyTorch.

PSANet: Zhao et al., "PSANet: Point-wise Spatial Attention Network for Scene Parsing",
ECCV 2018.

Layouts (mmcv 2.1's, from hszhao/semseg): ``input`` ``[N, h_mask * w_mask, H, W]`` holds, for every
position ``(h, w)``, an ``h_mask x w_mask`` window of attention weights centred on it
(``half_h_mask``, ``half_w_mask`` above / left of the centre); the output ``[N, H * W, H, W]``
places that window into the full ``H*W x H*W`` map, dropping the parts that fall outside the
feature map (those output entries stay 0):

* ``collect``: ``out[n, th * W + tw, h, w] = input[n, i * w_mask + j, h, w]``;
* ``distribute``: ``out[n, h * W + w, th, tw] = input[n, i * w_mask + j, h, w]``;

with ``th = h + i - half_h_mask``, ``tw = w + j - half_w_mask`` inside the map. Every output
entry receives at most one input element, so the backward pass is the inverse gather.
"""
from __future__ import annotations

import torch
from torch import Tensor

PSA_TYPES = ('collect', 'distribute')  # mmcv's integer codes 0 / 1


def _index(h_feature: int, w_feature: int, h_mask: int, w_mask: int, half_h_mask: int,
           half_w_mask: int, psa_type: str, device):
    """Flat ``(mask channel * HW + source position)`` of every valid input element and the flat
    output index (over ``HW * HW``) it goes to."""
    hw = h_feature * w_feature
    h = torch.arange(h_feature, device=device).repeat_interleave(w_feature)  # [HW]
    w = torch.arange(w_feature, device=device).repeat(h_feature)
    i = torch.arange(h_mask, device=device).repeat_interleave(w_mask)  # [M]
    j = torch.arange(w_mask, device=device).repeat(h_mask)
    th = h[None, :] + i[:, None] - half_h_mask  # [M, HW]
    tw = w[None, :] + j[:, None] - half_w_mask
    valid = (th >= 0) & (th < h_feature) & (tw >= 0) & (tw < w_feature)
    target = th * w_feature + tw
    source = torch.arange(hw, device=device).expand_as(target)
    out_index = target * hw + source if psa_type == 'collect' else source * hw + target
    in_index = torch.arange(h_mask * w_mask, device=device)[:, None] * hw + source
    return in_index[valid], out_index[valid]


def _check(psa_type: str, channels: int, h_mask: int, w_mask: int) -> None:
    if psa_type not in PSA_TYPES:
        raise ValueError(f"psa_type must be 'collect' or 'distribute', got {psa_type!r}")
    if channels != h_mask * w_mask:
        raise ValueError(f'input has {channels} channels, mask size {h_mask}x{w_mask} needs '
                         f'{h_mask * w_mask}')


def psamask_forward(input: Tensor, psa_type: str, h_mask: int, w_mask: int,
                    half_h_mask: int | None = None, half_w_mask: int | None = None) -> Tensor:
    """``[N, h_mask * w_mask, H, W]`` -> ``[N, H * W, H, W]``; differentiable via autograd."""
    n, c, hf, wf = input.shape
    _check(psa_type, c, h_mask, w_mask)
    half_h_mask = (h_mask - 1) // 2 if half_h_mask is None else half_h_mask
    half_w_mask = (w_mask - 1) // 2 if half_w_mask is None else half_w_mask
    src, dst = _index(hf, wf, h_mask, w_mask, half_h_mask, half_w_mask, psa_type, input.device)
    out = input.new_zeros(n, hf * wf * hf * wf)
    out[:, dst] = input.reshape(n, -1)[:, src]
    return out.reshape(n, hf * wf, hf, wf)


def psamask_backward(grad_output: Tensor, psa_type: str, h_mask: int, w_mask: int,
                     half_h_mask: int | None = None, half_w_mask: int | None = None) -> Tensor:
    """Gradient w.r.t. the input ``[N, h_mask * w_mask, H, W]`` (the inverse gather)."""
    n, _, hf, wf = grad_output.shape
    _check(psa_type, h_mask * w_mask, h_mask, w_mask)
    half_h_mask = (h_mask - 1) // 2 if half_h_mask is None else half_h_mask
    half_w_mask = (w_mask - 1) // 2 if half_w_mask is None else half_w_mask
    src, dst = _index(hf, wf, h_mask, w_mask, half_h_mask, half_w_mask, psa_type,
                      grad_output.device)
    grad = grad_output.new_zeros(n, h_mask * w_mask * hf * wf)
    grad[:, src] = grad_output.reshape(n, -1)[:, dst]
    return grad.reshape(n, h_mask * w_mask, hf, wf)
