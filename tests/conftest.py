import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get('DENSEKIT_SHARED_DATA', REPO.parent / 'shared' / 'data'))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield


def shared_data(name: str) -> Path:
    """Path to ``../shared/data/<name>``; skips the test when it is absent (a fresh clone)."""
    p = SHARED_DATA / name
    if not p.exists():
        pytest.skip(f'shared sample data {p} not present')
    return p


@pytest.fixture
def requires_cuda():
    if not torch.cuda.is_available():
        pytest.skip('needs a CUDA device')
