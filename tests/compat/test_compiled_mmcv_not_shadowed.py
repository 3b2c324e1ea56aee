"""A compiled ``mmcv._ext`` (a full mmcv build) wins over densekit's portable stand-in."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('mmcv')


def test_existing_ext_module_is_used(tmp_path):
    import mmcv
    real = Path(mmcv.__file__).parent
    fake_root = tmp_path / 'site'
    pkg = fake_root / 'mmcv'
    pkg.mkdir(parents=True)
    for entry in real.iterdir():  # a copy of mmcv-lite's package, by links...
        if entry.name != '__pycache__':
            (pkg / entry.name).symlink_to(entry)
    # ...plus an extension module, standing in for a compiled full mmcv build
    (pkg / '_ext.py').write_text(
        'COMPILED_MARKER = True\n'
        'def __getattr__(name):\n'
        '    return lambda *a, **k: "compiled " + name\n')
    code = ('import densekit, mmcv._ext, mmcv.ops;'
            'from densekit.compat import using_portable_ops;'
            'assert getattr(mmcv._ext, "COMPILED_MARKER", False), mmcv._ext;'
            'assert not using_portable_ops();'
            'import torch; from mmcv.ops import nms;'
            'import sys; assert sys.modules["mmcv.ops.nms"].ext_module is mmcv._ext;'
            'print("ok")')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake_root), os.environ.get('PYTHONPATH', '')]))
    r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr[-2000:]
