"""Multi-scale deformable attention (Deformable DETR), pure PyTorch on CPU and CUDA.

``ms_deform_attn`` is differentiable through autograd. ``ms_deform_attn_backward`` returns the
three input gradients for callers that, like mmcv's compiled op, hold the forward inputs and an
output gradient but no autograd graph.
"""
from __future__ import annotations

import torch
from torch import Tensor

from densekit.ops.ms_deform_attn import reference
from densekit.ops.ms_deform_attn.reference import ms_deform_attn

__all__ = ['ms_deform_attn', 'ms_deform_attn_backward', 'reference']


def ms_deform_attn_backward(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                            sampling_locations: Tensor, attention_weights: Tensor,
                            grad_output: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients w.r.t. ``(value, sampling_locations, attention_weights)``."""
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(True)
                  for t in (value, sampling_locations, attention_weights)]
        out = ms_deform_attn(leaves[0], spatial_shapes, level_start_index, leaves[1], leaves[2])
        grads = torch.autograd.grad(out, leaves, grad_output)
    return grads
