"""Backend selection shared by every fused op in ``densekit.ops``.

Each op (``neighborhood``, ``window``, ``halo``, ``mmcv.ms_deform_attn``) hands
:func:`choose_backend` an ordered mapping ``name -> probe``; a probe is called with ``explicit``
(whether the user asked for that backend by name) and returns ``None`` when that backend can run
the call, else a short reason. Resolution order:

1. the ``backend=`` argument of the op;
2. else the ``DENSEKIT_ATTN_BACKEND`` environment variable (read on every call, so tests can flip
   it). It is one switch for every op, so a known backend name that an op does not implement
   (``flex`` for ``ms_deform_attn``) leaves that op on the automatic choice, with the reason
   logged;
3. else the first backend in priority order whose probe succeeds; every skipped backend is logged
   at DEBUG level on the ``densekit.ops`` logger with its reason (in eager mode only: while
   ``torch.compile`` traces the op, a ``logging`` call would break the graph, and
   ``fullgraph=True`` would fail).

An explicitly requested backend (argument or environment) that is unknown or cannot run is an
error, never a silent fallback.
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Callable, Mapping, Optional

import torch

logger = logging.getLogger('densekit.ops')

ENV_VAR = 'DENSEKIT_ATTN_BACKEND'
BACKEND_NAMES = ('triton', 'flex', 'reference')

Probe = Callable[[bool], Optional[str]]
TRITON_GRID_X_MAX = 2 ** 31 - 1  # CUDA's limit on the first grid axis
TRITON_GRID_Y_MAX = 65535  # CUDA's limit on the second grid axis
# Triton computes element offsets in int32 (``tl.program_id`` and integer kernel arguments below
# 2**31 are int32), so an offset into a tensor of 2**31 or more elements silently wraps: a wrong
# answer or an illegal memory access on the GPU, never an error.
TRITON_INT32_ELEMENTS = 2 ** 31


def choose_backend(op: str, probes: Mapping[str, Probe], requested: Optional[str] = None) -> str:
    """Pick the backend that runs ``op``.

    Args:
        op: op name, for messages.
        probes: ordered ``name -> probe``; order is the automatic priority.
        requested: the op's ``backend`` argument (``None`` = automatic).

    Returns:
        The chosen backend name.
    """
    source = 'backend argument'
    log = not torch.compiler.is_compiling()
    if requested is None:
        env = os.environ.get(ENV_VAR, '').strip()
        if env.lower() in BACKEND_NAMES and env.lower() not in probes:
            if log:
                logger.debug('%s: %s=%s names no backend of this op; choosing automatically', op, ENV_VAR, env)
        elif env and env.lower() != 'auto':
            requested, source = env, f'{ENV_VAR} environment variable'
    if requested is not None:
        if not isinstance(requested, str):
            raise TypeError(f'{op}: backend must be a string or None, got {requested!r}')
        name = requested.lower()
        if name not in probes:
            raise ValueError(f'{op}: unknown backend {requested!r} (from {source}); '
                             f'choose one of {tuple(probes)} or None')
        reason = probes[name](True)
        if reason is not None:
            raise RuntimeError(f'{op}: backend {name!r} (from {source}) cannot run this call: {reason}')
        return name
    for name, probe in probes.items():
        reason = probe(False)
        if reason is None:
            if log:
                logger.debug('%s: using backend %r', op, name)
            return name
        if log:
            logger.debug('%s: skipping backend %r: %s', op, name, reason)
    raise RuntimeError(f'{op}: no backend can run this call')  # reference always can; defensive


def check_qkv(op: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Shared checks of ``q, k, v``: one floating dtype and one device (each named when they
    differ), and a head dim of at least 1. Integer inputs would otherwise be computed in float
    and silently truncated back to their dtype."""
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f'{op}: q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}')
    if not (q.device == k.device == v.device):
        raise ValueError(f'{op}: q, k, v devices differ: {q.device}, {k.device}, {v.device}')
    if not q.is_floating_point():
        raise ValueError(f'{op}: q, k, v must be floating point (float32, float16, bfloat16; float64 on the '
                         f'reference backend), got {q.dtype}')
    if q.dim() and v.dim() and (q.shape[-1] < 1 or v.shape[-1] < 1):
        raise ValueError(f'{op}: head_dim must be >= 1, got q {tuple(q.shape)}, v {tuple(v.shape)}')


def check_bias(op: str, name: str, t: Optional[torch.Tensor], q: torch.Tensor) -> None:
    """A bias / relative table must be floating point and on ``q``'s device."""
    if t is None:
        return
    if t.device != q.device:
        raise ValueError(f'{op}: {name} is on {t.device}, q on {q.device}')
    if not t.is_floating_point():
        raise ValueError(f'{op}: {name} must be floating point, got {t.dtype}')


def needs_grad(*tensors: Optional[torch.Tensor]) -> bool:
    """True when autograd will need a backward through any of ``tensors``."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def scale_reason(scale) -> Optional[str]:
    """Why a fused backend (Triton, flex) cannot take ``scale``: they take it as a number, so a
    tensor scale that needs a gradient (a learnable logit scale) would silently get none; the
    reference backend differentiates it."""
    if isinstance(scale, torch.Tensor) and needs_grad(scale):
        return 'scale is a tensor that needs a gradient; only the reference backend computes one'
    return None


def triton_device_reason(explicit: bool, t: torch.Tensor) -> Optional[str]:
    """Why no Triton kernel can take ``t`` (``None`` if one can): triton missing, a device other
    than CUDA (the CPU interpreter, ``TRITON_INTERPRET=1``, only by name), an unsupported dtype."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return 'triton is not installed'
    interpret = os.environ.get('TRITON_INTERPRET', '0') == '1'
    if t.device.type != 'cuda' and not (interpret and t.device.type == 'cpu'):
        return f'inputs are on {t.device.type} (Triton needs CUDA, or TRITON_INTERPRET=1 for CPU)'
    if t.device.type == 'cpu' and not explicit:
        return 'the Triton CPU interpreter is a test vehicle; it runs only when requested by name'
    if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f'dtype {t.dtype} is not supported (float32/float16/bfloat16 only)'
    if t.device.type == 'cuda' and t.dtype == torch.bfloat16 and torch.cuda.get_device_capability(t.device)[0] < 8:
        return 'bfloat16 needs compute capability >= 8.0'
    return None


def triton_probe(explicit: bool, *tensors: Optional[torch.Tensor], head_dim_max: int = 128) -> Optional[str]:
    """Common reasons the Triton kernels cannot run (``None`` if they can). ``tensors``: q, k, v
    (the checks of device, dtype and shape read q; every one must be indexable with 32-bit
    offsets)."""
    t = tensors[0]
    reason = triton_device_reason(explicit, t)
    if reason is not None:
        return reason
    if t.shape[-1] > head_dim_max:
        return f'head_dim {t.shape[-1]} > {head_dim_max}'
    # every kernel puts batch * heads on grid axis 1; the launchers raise past the limit, so
    # automatic dispatch must skip Triton here instead of failing inside it
    if t.dim() >= 2 and t.shape[0] * t.shape[-2] > TRITON_GRID_Y_MAX:
        return (f'batch * heads = {t.shape[0]} * {t.shape[-2]} = {t.shape[0] * t.shape[-2]} exceeds the '
                f'Triton grid limit {TRITON_GRID_Y_MAX}')
    return int32_offset_reason({name: index_span(x) for name, x in zip('qkv', tensors) if x is not None})


def index_span(t: torch.Tensor) -> int:
    """Elements a kernel may address from ``t``'s data pointer: the reach of its strides, or its
    element count where that is larger (an expanded, overlapping input, which the wrappers copy
    to a contiguous tensor first)."""
    if t.numel() == 0:
        return 0
    return max(t.numel(), 1 + sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride())))


def int32_offset_reason(sizes: Mapping[str, int]) -> Optional[str]:
    """Why 32-bit Triton offsets cannot index these tensors (``name -> elements``), or ``None``.

    Each op's probe lists every tensor and scratch buffer its kernels index (inputs, outputs,
    gradients, log-sum-exp, dS / table buffers): automatic dispatch falls back instead of the
    kernels wrapping around.
    """
    for name, n in sizes.items():
        if n >= TRITON_INT32_ELEMENTS:
            return (f'{name} spans {n} elements, at least 2**31 = {TRITON_INT32_ELEMENTS}: the Triton kernels '
                    f'index it with 32-bit offsets')
    return None


# Limits of the compiled FlexAttention kernel that torch only reports while lowering (an
# InductorError deep inside torch.compile) or in its front end; the probe checks them up front so
# that automatic dispatch falls back and an explicit request fails with the reason. Sources, in
# the torch installed here (2.14) and on the GPU machine (2.11):
# - torch/_inductor/kernel/flex/flex_attention.py, ``flex_attention`` lowering: "NYI: embedding
#   dimension of the query, key, and value must be at least 16" (tl.dot needs K >= 16), for the
#   query/key head dim E and the value head dim Ev alike (torch 2.5: kernel/flex_attention.py);
# - same file, backward lowering: "Backward pass with mixed query, key, and value dtype is not
#   supported";
# - same file: "Query length must be greater than 0" / "Key length must be greater than 0";
# - torch/nn/attention/flex_attention.py, ``_validate_embed_dim``: E of query and key must agree;
#   older torch (the 2.5 line) also raised "NYI: Currently non power of 2 embedding dimension are
#   not supported" there, so the probe asks that function itself (on meta tensors) instead of
#   hard-coding one torch version's rule;
# - the kernel templates run float32 / float16 / bfloat16 only (no float64 kernel configs).
# A captured tensor indexed twice in one score_mod is refused by the backward lowering
# (``validate_joint_graph``); the score_mods in ``densekit.ops.*.flex`` index each capture once.
FLEX_MIN_HEAD_DIM = 16
FLEX_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@functools.lru_cache(maxsize=64)
def _flex_front_end_reason(e_qk: int, e_v: int) -> Optional[str]:
    """What torch's own flex front end says about these head dims (``None``: accepted)."""
    try:
        from torch.nn.attention.flex_attention import _validate_embed_dim
    except ImportError:
        return None
    meta = {'device': 'meta'}
    try:
        _validate_embed_dim(torch.empty(1, 1, 1, e_qk, **meta), torch.empty(1, 1, 1, e_qk, **meta),
                            torch.empty(1, 1, 1, e_v, **meta))
    except (ValueError, NotImplementedError) as e:
        return f'torch {torch.__version__} flex_attention rejects head dims {e_qk}/{e_v}: {e}'
    return None


def flex_kernel_reason(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Optional[str]:
    """Why the compiled flex kernel cannot take ``q, k, v`` (``[..., head_dim]``), or ``None``.

    Device independent on purpose: the CPU flex path is a test vehicle for the CUDA kernel, and a
    CPU run that accepts what the CUDA lowering refuses would hide exactly that failure.
    """
    e_qk, e_v = q.shape[-1], v.shape[-1]
    if e_qk < FLEX_MIN_HEAD_DIM or e_v < FLEX_MIN_HEAD_DIM:
        return (f'head_dim {e_qk} (query/key) / {e_v} (value) is below {FLEX_MIN_HEAD_DIM}, the '
                f'smallest the compiled flex_attention kernel supports (tl.dot needs K >= 16)')
    if k.shape[-1] != e_qk:
        return f'query head_dim {e_qk} != key head_dim {k.shape[-1]}'
    if not (q.dtype == k.dtype == v.dtype):
        return f'mixed dtypes {q.dtype}/{k.dtype}/{v.dtype} (flex has no backward for them)'
    if q.dtype not in FLEX_DTYPES:
        return f'dtype {q.dtype} is not supported by flex kernels (float32/float16/bfloat16 only)'
    if q.numel() == 0 or k.numel() == 0:
        return 'empty inputs (flex needs query and key lengths > 0)'
    return _flex_front_end_reason(e_qk, e_v)


def flex_probe(explicit: bool, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               *extras: Optional[torch.Tensor]) -> Optional[str]:
    """Common reasons ``torch.nn.attention.flex_attention`` cannot run (``None`` if it can).

    ``q, k, v`` are ``[..., head_dim]`` with heads and tokens in any leading layout; ``extras``
    (biases, relative tables) only count for whether a backward is needed.
    """
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return f'torch {torch.__version__} has no torch.nn.attention.flex_attention'
    reason = flex_kernel_reason(q, k, v)
    if reason is not None:
        return reason
    if q.device.type == 'cpu':
        # Verified on torch 2.14: CPU flex runs the forward but raises on backward.
        if needs_grad(q, k, v, *extras):
            return 'flex_attention has no CPU backward in this torch'
        if not explicit:
            # The CPU forward works but is a slow dense fallback: only when asked for by name.
            return 'flex on CPU is a slow dense fallback; it runs only when requested by name'
    elif q.device.type != 'cuda':
        return f'inputs are on {q.device.type}'
    return None
