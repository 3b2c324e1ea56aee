"""Multi-scale deformable attention (Deformable DETR), pure PyTorch on CPU and CUDA.

``ms_deform_attn`` is differentiable through autograd. ``backend='reference'`` (default) is the
``grid_sample`` implementation; ``backend='triton'`` runs the fused kernels of ``triton.py``
(CUDA, or CPU under ``TRITON_INTERPRET=1``). The Triton path is opt-in: its parity is tested
under the CPU interpreter only, not yet on a GPU. ``ms_deform_attn_backward`` returns the
three input gradients for callers that, like mmcv's compiled op, hold the forward inputs and an
output gradient but no autograd graph.
"""
from __future__ import annotations

import torch
from torch import Tensor

from densekit.ops.mmcv.ms_deform_attn import reference

__all__ = ['ms_deform_attn', 'ms_deform_attn_backward', 'reference']


_BACKENDS = ('reference', 'triton')


def ms_deform_attn(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                   sampling_locations: Tensor, attention_weights: Tensor,
                   backend: str = 'reference') -> Tensor:
    """Multi-scale deformable attention; layouts in :mod:`.reference`.

    Args:
        value: ``[B, S, heads, D]``, levels concatenated along ``S``.
        spatial_shapes: ``[L, 2]`` int64 ``(H_l, W_l)``.
        level_start_index: ``[L]`` offsets of each level in ``S``.
        sampling_locations: ``[B, Q, heads, L, P, 2]`` normalised ``(x, y)``.
        attention_weights: ``[B, Q, heads, L, P]``.
        backend: ``'reference'`` or ``'triton'``.

    Returns:
        ``[B, Q, heads * D]``.
    """
    if backend == 'reference':
        return reference.ms_deform_attn(value, spatial_shapes, level_start_index,
                                        sampling_locations, attention_weights)
    if backend == 'triton':
        from densekit.ops.mmcv.ms_deform_attn.triton import ms_deform_attn_triton
        return ms_deform_attn_triton(value, spatial_shapes, level_start_index,
                                     sampling_locations, attention_weights)
    raise ValueError(f'ms_deform_attn backend must be one of {_BACKENDS}, got {backend!r}')


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
