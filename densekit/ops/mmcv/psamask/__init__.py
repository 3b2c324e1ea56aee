"""PSANet's point-wise spatial attention mask re-layout (mmcv 2.1 ``psamask`` semantics).

A pure index re-layout (see :mod:`densekit.ops.mmcv.psamask.reference`): one scatter forward, one
gather backward, on any device.
"""
from __future__ import annotations

from torch import Tensor

from densekit.ops.mmcv.psamask import reference
from densekit.ops.mmcv.psamask.reference import PSA_TYPES, psamask_backward, psamask_forward

__all__ = ['psamask', 'psamask_forward', 'psamask_backward', 'PSA_TYPES', 'reference']


def psamask(input: Tensor, psa_type: str, mask_size) -> Tensor:
    """Differentiable ``psamask``.

    Args:
        input: ``[N, h_mask * w_mask, H, W]`` attention windows per position.
        psa_type: ``'collect'`` or ``'distribute'``.
        mask_size: ``m`` or ``(h_mask, w_mask)``.

    Returns:
        ``[N, H * W, H, W]``.
    """
    h_mask, w_mask = (mask_size, mask_size) if isinstance(mask_size, int) else mask_size
    return psamask_forward(input, psa_type, int(h_mask), int(w_mask))
