"""Shared helpers for the portable-mmcv-op tests: golden fixtures and the tolerance table.

Golden fixtures come from mmcv 2.1's compiled CPU kernels (``tools/dev/make_mmcv_golden.py``).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

GOLDEN_DIR = Path(__file__).resolve().parents[1] / 'fixtures' / 'mmcv_golden'

# Absolute tolerances (rtol is always 0) per dtype. float32 ops here sum a handful of products,
# so a few ulps of values O(1-10) are expected when our summation order differs from mmcv's.
ATOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def load_golden(name: str) -> dict:
    return torch.load(GOLDEN_DIR / f'{name}.pt', weights_only=True)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, msg: str = '') -> None:
    torch.testing.assert_close(actual, expected.to(actual.device), rtol=0,
                               atol=ATOL[expected.dtype], msg=lambda m: f'{msg}: {m}')


def require_portable_ext() -> None:
    """The mmcv-API tests are about densekit's ops: skip when a compiled mmcv is installed."""
    import densekit  # noqa: F401  (installs the portable mmcv._ext)
    from densekit.compat import using_portable_ops
    if not using_portable_ops():
        pytest.skip('a compiled mmcv._ext is installed; densekit does not shadow it')
