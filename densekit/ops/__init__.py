"""densekit ops: pure PyTorch references with fused Triton and FlexAttention backends.

Layout: ``densekit/ops/<op>/`` is one package per kernel family (``reference.py``, ``triton.py``,
``flex.py``, ``__init__.py`` with the public function); shared backend selection and helpers are
the ``_*.py`` modules beside them.

* Local attention, re-exported here, layout ``[batch, *spatial, heads, head_dim]`` for q, k, v
  and output: :func:`na1d`, :func:`na2d` — neighborhood attention (NAT / DiNAT, NATTEN <= 0.17
  semantics); :func:`window_attention` — Swin (shifted) window attention;
  :func:`halo_attention` — HaloNet blocked-halo attention; :func:`local_global_attention` —
  a sliding window joined with extra (pooled) tokens in one softmax (TransNeXt);
  :func:`window_extra_attention` — window attention whose windows also hold their own extra
  (carrier) tokens, one softmax per window (FasterViT);
  :func:`routed_attention` — BiFormer bi-level routing attention (queries of a region attend to
  the tokens of their routed regions); :func:`deform_sampled_attention` — DAT / DAT++
  deformable attention (queries attend to sampled keys with a relative position bias
  interpolated at the query-to-sample displacement);
  :func:`kmeans_attention` — kMaX-DeepLab's k-means cross-attention (each pixel's value goes to
  its arg-max cluster; mask logits ``[B, Q, HW]``, values ``[B, C, HW]``, output ``[B, C, Q]``).
* :mod:`densekit.ops.mmcv` — replacements for mmcv's compiled detection ops (``nms``,
  ``roi_align``, ``roi_pool``, ``focal_loss``, ``deform_conv``, ``ms_deform_attn``, ``psamask``,
  ``masked_conv``, ``carafe``, ``deform_roi_pool``), one package
  each under ``densekit/ops/mmcv/<op>/``, imported by their own path.
* :mod:`densekit.ops.large_kernel` — ``large_kernel_conv2d``, the depthwise "same" convolution of
  RepLKNet / UniRepLKNet / VAN (NCHW; ``F.conv2d`` reference, opt-in Triton kernels), imported
  by its own path.

Every fused op takes ``backend=None | 'reference' | 'triton' | 'flex'`` (the names it has) and
goes through one chooser (``_backend.choose_backend``); the ``DENSEKIT_ATTN_BACKEND`` environment
variable overrides the automatic choice. Triton and FlexAttention are imported lazily on first
use. See ``docs/ops.md``.
"""
from densekit.ops.deform_sampled import deform_sampled_attention
from densekit.ops.halo import halo_attention
from densekit.ops.kmeans import kmeans_attention
from densekit.ops.local_global import local_global_attention
from densekit.ops.neighborhood import na1d, na2d
from densekit.ops.routed import routed_attention
from densekit.ops.window import window_attention
from densekit.ops.window_extra import window_extra_attention

__all__ = ['na1d', 'na2d', 'window_attention', 'halo_attention', 'local_global_attention',
           'window_extra_attention', 'routed_attention', 'deform_sampled_attention',
           'kmeans_attention']
