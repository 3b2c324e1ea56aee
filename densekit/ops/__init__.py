"""densekit local-attention kernels (pure PyTorch reference, Triton, FlexAttention).

Public API, layout ``[batch, *spatial, heads, head_dim]`` for q, k, v and output:

* :func:`na1d`, :func:`na2d` — neighborhood attention (NAT / DiNAT, NATTEN <= 0.17 semantics);
* :func:`window_attention` — Swin (shifted) window attention;
* :func:`halo_attention` — HaloNet blocked-halo attention.

Every op takes ``backend=None | 'reference' | 'triton' | 'flex'``; the ``DENSEKIT_ATTN_BACKEND``
environment variable overrides the automatic choice. See ``docs/ops.md``.

Only the attention packages are imported here; Triton and FlexAttention are imported lazily on
first use. Other op packages (e.g. ``densekit.ops.nms``) are imported by their own path.
"""
from densekit.ops.halo import halo_attention
from densekit.ops.neighborhood import na1d, na2d
from densekit.ops.window import window_attention

__all__ = ['na1d', 'na2d', 'window_attention', 'halo_attention']
