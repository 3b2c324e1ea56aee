import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# developer tools the tests share (the GPU hazard checks, the ahead-of-time compiler)
sys.path.insert(0, str(REPO / 'tools' / 'dev'))
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


def triton_interpreter_unusable() -> str:
    """Why this environment cannot run Triton kernels through the CPU interpreter ('' if it can).

    triton < 3.7's interpreter turns runtime integer arguments into 1-element arrays, which numpy
    >= 2.4 does not convert to Python ints: every kernel that loops over one (``range(0, n)``)
    fails with "only 0-dimensional arrays can be converted to Python scalars" (triton 3.6 with
    numpy 2.2 / 2.3, and triton 3.7.1 with numpy 2.4, work).
    """
    try:
        import triton
    except ImportError:
        return 'triton is not installed'
    import numpy as np

    def version(v: str) -> tuple:
        return tuple(int(x) for x in v.split('+')[0].split('.')[:2])

    if version(triton.__version__) < (3, 7) and version(np.__version__) >= (2, 4):
        return (f'triton {triton.__version__} interpreter cannot run with numpy {np.__version__} '
                '(needs triton >= 3.7 or numpy < 2.4)')
    return ''


@pytest.fixture
def triton_interpreter_unchecked(monkeypatch):
    """Run densekit's Triton kernels through the CPU interpreter in this test (the kernels pick
    interpreted vs compiled mode when launched under ``TRITON_INTERPRET``)."""
    why = triton_interpreter_unusable()
    if why:
        pytest.skip(why)
    monkeypatch.setenv('TRITON_INTERPRET', '1')


@pytest.fixture
def triton_interpreter(triton_interpreter_unchecked):
    """The interpreter with the GPU hazard checks of ``tools/dev/triton_hazards.py`` on: every launch is checked
    for cross-program races and out-of-bounds accesses, and uninitialised memory / masked-off
    lanes read NaN. ``DENSEKIT_GPU_HAZARDS=0`` turns the checks off (to tell a hazard from a
    numerical failure)."""
    if os.environ.get('DENSEKIT_GPU_HAZARDS', '1') == '0':
        yield
        return
    from triton_hazards import gpu_hazards
    with gpu_hazards() as checker:
        yield checker
