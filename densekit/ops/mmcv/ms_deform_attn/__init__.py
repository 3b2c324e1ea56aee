"""Multi-scale deformable attention (Deformable DETR, Zhu et al., ICLR 2021).

``ms_deform_attn`` is differentiable through autograd. Backends (``backend=`` or
``DENSEKIT_ATTN_BACKEND``, resolved by :func:`densekit.ops._backend.choose_backend`):
``'reference'`` is the ``grid_sample`` implementation (CPU and CUDA); ``'triton'`` runs the fused
kernels of ``triton.py`` (CUDA, or CPU under ``TRITON_INTERPRET=1``). Triton is opt-in: the
automatic choice is the reference, because the fused kernels' parity is checked on CPU through
the interpreter and on CUDA only by the ``gpu``-marked tests. ``ms_deform_attn_backward`` returns
the three input gradients for callers that, like mmcv's compiled op, hold the forward inputs and
an output gradient but no autograd graph.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from densekit.ops._backend import choose_backend, triton_device_reason
from densekit.ops.mmcv.ms_deform_attn import reference

__all__ = ['ms_deform_attn', 'ms_deform_attn_backward', 'reference']


def _triton_reason(explicit: bool, value: Tensor, sampling_locations: Tensor) -> Optional[str]:
    if not explicit:
        return 'the fused kernels are opt-in; they run only when requested by name'
    reason = triton_device_reason(explicit, value)
    if reason is not None:
        return reason
    from densekit.ops.mmcv.ms_deform_attn.triton import int32_reason
    return int32_reason(value.shape, sampling_locations.shape)


def ms_deform_attn(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                   sampling_locations: Tensor, attention_weights: Tensor,
                   backend: Optional[str] = None) -> Tensor:
    """Multi-scale deformable attention; layouts in :mod:`.reference`.

    Args:
        value: ``[B, S, heads, D]``, levels concatenated along ``S``.
        spatial_shapes: ``[L, 2]`` int64 ``(H_l, W_l)``.
        level_start_index: ``[L]`` offsets of each level in ``S``.
        sampling_locations: ``[B, Q, heads, L, P, 2]`` normalised ``(x, y)``.
        attention_weights: ``[B, Q, heads, L, P]``.
        backend: ``'triton' | 'reference'`` or ``None`` (automatic: the reference).

    Returns:
        ``[B, Q, heads * D]``.
    """
    probes = {'triton': lambda explicit: _triton_reason(explicit, value, sampling_locations),
              'reference': lambda explicit: None}
    if choose_backend('ms_deform_attn', probes, backend) == 'triton':
        from densekit.ops.mmcv.ms_deform_attn.triton import ms_deform_attn_triton
        return ms_deform_attn_triton(value, spatial_shapes, level_start_index,
                                     sampling_locations, attention_weights)
    return reference.ms_deform_attn(value, spatial_shapes, level_start_index,
                                    sampling_locations, attention_weights)


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
