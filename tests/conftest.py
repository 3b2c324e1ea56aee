import os
import sys
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


@pytest.fixture(autouse=True)
def _restore_default_scope():
    """mmengine's default registry scope is process-global (the last ``DefaultScope`` created);
    a test that sets it (``init_default_scope('mmseg')``) must not redirect the registry lookups
    of the next test on the same worker (mmdet's ``MODELS.build`` then searched mmseg's registry)."""
    registry = sys.modules.get('mmengine.registry')
    before = dict(registry.DefaultScope._instance_dict) if registry is not None else {}
    yield
    registry = sys.modules.get('mmengine.registry')
    if registry is not None:
        scopes = registry.DefaultScope._instance_dict
        scopes.clear()
        scopes.update(before)


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
