"""Backend selection shared by every attention op in ``densekit.ops``.

Each op package (``neighborhood``, ``window``, ``halo``) hands :func:`choose_backend` an ordered
mapping ``name -> probe``; a probe is called with ``explicit`` (whether the user asked for that
backend by name) and returns ``None`` when that backend can run the call, else a short reason. Resolution order:

1. the ``backend=`` argument of the op;
2. else the ``DENSEKIT_ATTN_BACKEND`` environment variable (read on every call, so tests can flip
   it);
3. else the first backend in priority order whose probe succeeds; every skipped backend is logged
   at DEBUG level on the ``densekit.ops`` logger with its reason.

An explicitly requested backend (argument or environment) that is unknown or cannot run is an
error, never a silent fallback.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Mapping, Optional

import torch

logger = logging.getLogger('densekit.ops')

ENV_VAR = 'DENSEKIT_ATTN_BACKEND'
BACKEND_NAMES = ('triton', 'flex', 'reference')

Probe = Callable[[bool], Optional[str]]


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
    if requested is None:
        env = os.environ.get(ENV_VAR, '').strip()
        if env and env.lower() != 'auto':
            requested, source = env, f'{ENV_VAR} environment variable'
    if requested is not None:
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
            logger.debug('%s: using backend %r', op, name)
            return name
        logger.debug('%s: skipping backend %r: %s', op, name, reason)
    raise RuntimeError(f'{op}: no backend can run this call')  # reference always can; defensive


def needs_grad(*tensors: Optional[torch.Tensor]) -> bool:
    """True when autograd will need a backward through any of ``tensors``."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def triton_probe(explicit: bool, *tensors: Optional[torch.Tensor], head_dim_max: int = 128) -> Optional[str]:
    """Common reasons the Triton kernels cannot run (``None`` if they can)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return 'triton is not installed'
    t = tensors[0]
    interpret = os.environ.get('TRITON_INTERPRET', '0') == '1'
    if t.device.type != 'cuda' and not (interpret and t.device.type == 'cpu'):
        return f'inputs are on {t.device.type} (Triton needs CUDA, or TRITON_INTERPRET=1 for CPU)'
    if t.device.type == 'cpu' and not explicit:
        return 'the Triton CPU interpreter is a test vehicle; it runs only when requested by name'
    if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f'dtype {t.dtype} is not supported (float32/float16/bfloat16 only)'
    if t.shape[-1] > head_dim_max:
        return f'head_dim {t.shape[-1]} > {head_dim_max}'
    if t.device.type == 'cuda' and t.dtype == torch.bfloat16 and torch.cuda.get_device_capability(t.device)[0] < 8:
        return 'bfloat16 needs compute capability >= 8.0'
    return None


def flex_probe(explicit: bool, *tensors: Optional[torch.Tensor]) -> Optional[str]:
    """Common reasons ``torch.nn.attention.flex_attention`` cannot run (``None`` if it can)."""
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return f'torch {torch.__version__} has no torch.nn.attention.flex_attention'
    t = tensors[0]
    if t.device.type == 'cpu':
        # Verified on torch 2.14: CPU flex runs the forward but raises on backward.
        if needs_grad(*tensors):
            return 'flex_attention has no CPU backward in this torch'
        if not explicit:
            # The CPU forward works but is a slow dense fallback: only when asked for by name.
            return 'flex on CPU is a slow dense fallback; it runs only when requested by name'
    elif t.device.type != 'cuda':
        return f'inputs are on {t.device.type}'
    if t.dtype == torch.float64:
        return 'float64 is not supported by flex kernels'
    return None
