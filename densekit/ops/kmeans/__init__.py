"""k-means cross-attention — public functional API.

The cluster-centre update of kMaX-DeepLab (Yu et al., "k-means Mask Transformer", ECCV 2022,
arXiv:2207.04044): every pixel is assigned to the cluster (query) with the largest mask logit,
and each cluster sums its pixels' values. Semantics: :mod:`densekit.ops.kmeans.reference`.

Backends (``backend=`` or ``DENSEKIT_ATTN_BACKEND``, resolved by
:func:`densekit.ops._backend.choose_backend`): ``'reference'`` is the official one-hot matmul in
PyTorch, on any device; ``'triton'`` runs
the fused argmax + one-hot matmul kernel of ``triton.py`` (CUDA, or CPU under
``TRITON_INTERPRET=1``). The Triton backend is opt-in: the automatic choice is the reference on
every device until a GPU measurement shows the kernel faster (``benchmarks/kmax_kmeans.py``,
``GPU_CHECK_STEPS=kmax_kmeans`` in ``benchmarks/gpu_check.sh``). Validation happens once here,
before dispatch.
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch

from densekit.ops._backend import choose_backend, triton_device_reason

__all__ = ['kmeans_attention']

_OP = 'kmeans_attention'


def _check(mask_logits: torch.Tensor, value: torch.Tensor) -> None:
    def shape(t):
        return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__

    if not isinstance(mask_logits, torch.Tensor) or mask_logits.dim() != 3:
        raise ValueError(f'{_OP}: mask_logits must be a [B, Q, HW] tensor, got {shape(mask_logits)}')
    if not isinstance(value, torch.Tensor) or value.dim() != 3:
        raise ValueError(f'{_OP}: value must be a [B, C, HW] tensor, got {shape(value)}')
    B, Q, HW = mask_logits.shape
    if value.shape[0] != B or value.shape[2] != HW:
        raise ValueError(f'{_OP}: value must be [B={B}, C, HW={HW}] to match mask_logits {tuple(mask_logits.shape)}, '
                         f'got {tuple(value.shape)}')
    if Q < 1:
        raise ValueError(f'{_OP}: mask_logits needs at least one cluster (Q >= 1), got {tuple(mask_logits.shape)}')
    if not mask_logits.is_floating_point() or not value.is_floating_point():
        raise ValueError(f'{_OP}: mask_logits and value must be floating point, got {mask_logits.dtype}, '
                         f'{value.dtype}')
    if mask_logits.device != value.device:
        raise ValueError(f'{_OP}: mask_logits is on {mask_logits.device}, value on {value.device}')


def kmeans_attention(mask_logits: torch.Tensor, value: torch.Tensor, backend: Optional[str] = None,
                     triton_config: Optional[Mapping] = None) -> torch.Tensor:
    """Each pixel goes to its arg-max cluster; each cluster sums its pixels' values.

    Args:
        mask_logits: ``[B, Q, HW]`` cluster logits per pixel (any floating dtype). The assignment
            is a hard argmax over ``Q`` (ties to the lowest index, NaN as the largest, as
            ``torch.argmax``) and carries no gradient.
        value: ``[B, C, HW]`` pixel values (float32 / float16 / bfloat16; float64 on the reference
            backend).
        backend: ``'triton' | 'reference'`` or ``None`` (automatic: the reference, see the module
            docstring).
        triton_config: launch configuration of the Triton kernel
            (:data:`densekit.ops.kmeans.triton.CONFIG_KEYS`); other backends ignore it.

    Returns:
        ``[B, C, Q]`` cluster updates in the value's dtype (fp32 accumulation on the Triton
        backend; autocast does not apply).
    """
    _check(mask_logits, value)

    def _triton(explicit: bool) -> Optional[str]:
        if not explicit:
            return ('the Triton kernel is opt-in until a GPU benchmark shows it faster than the one-hot '
                    'matmul (benchmarks/kmax_kmeans.py); it runs only when requested by name')
        reason = triton_device_reason(explicit, value)
        if reason is not None:
            return reason
        if mask_logits.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            return f'mask_logits dtype {mask_logits.dtype} is not supported (float32/float16/bfloat16 only)'
        if mask_logits.numel() == 0 or value.numel() == 0:
            return 'empty input'
        from densekit.ops.kmeans.triton import limits_reason
        return limits_reason(tuple(mask_logits.shape), value.shape[1], value.dtype, triton_config)

    name = choose_backend(_OP, {'triton': _triton, 'reference': lambda explicit: None}, backend)
    if name == 'triton':
        from densekit.ops.kmeans.triton import kmeans_triton
        return kmeans_triton(mask_logits, value, triton_config)
    from densekit.ops.kmeans.reference import kmeans_reference
    return kmeans_reference(mask_logits, value)
