"""The start-up hook serves ``mmcv._ext`` to mmdet / mmseg without ``import densekit`` first.

The hook is what ``densekit_mmcv_ext.pth`` runs at interpreter start-up; these tests run the same
``.pth`` line through ``site.addsitedir`` in a fresh interpreter (so they do not depend on how the
test environment was installed), and, when the installed densekit carries the ``.pth``, a plain
interpreter exactly as a user starts it.
"""
import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip('mmcv')
pytest.importorskip('mmdet')

REPO = Path(__file__).resolve().parents[2]
PTH_LINE = 'import _densekit_mmcv_ext\n'  # what setup.py writes into densekit_mmcv_ext.pth


def _run(code: str, tmp_path, site_dir: bool = True, extra_path: str | None = None,
         timeout: int = 600) -> subprocess.CompletedProcess:
    prelude = ''
    if site_dir:
        site = tmp_path / 'site'
        site.mkdir(exist_ok=True)
        (site / 'densekit_mmcv_ext.pth').write_text(PTH_LINE)
        prelude = f'import site; site.addsitedir({str(site)!r})\n'
    paths = [p for p in (extra_path, str(REPO), os.environ.get('PYTHONPATH')) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    return subprocess.run([sys.executable, '-c', prelude + textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, cwd=tmp_path, timeout=timeout)


def test_hook_is_cheap_at_startup(tmp_path):
    r = _run("""
        import sys
        finders = [type(f).__name__ for f in sys.meta_path]
        assert finders.count('_DensekitMmcvExtFinder') == 1, finders
        heavy = [m for m in ('torch', 'densekit', 'mmcv', 'numpy') if m in sys.modules]
        assert not heavy, heavy
        print('ok')
    """, tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr[-3000:]


def test_mmdet_api_without_importing_densekit(tmp_path):
    """``from mmdet.apis import init_detector`` and a Mask R-CNN forward (mmcv's RoIAlign and NMS)
    with a config that never imports densekit."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(REPO / 'configs/quickstart/mask-rcnn_r18_synthetic.py'))
    cfg.pop('custom_imports', None)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):  # mmdet's own dataset
        cfg[key].dataset.type = 'CocoDataset'
    cfg.dump(str(tmp_path / 'tiny_mask_rcnn.py'))
    r = _run(f"""
        import sys
        import numpy as np
        from mmdet.apis import inference_detector, init_detector
        import mmcv.ops
        assert 'densekit' not in sys.modules, 'the hook must not import densekit'
        assert getattr(sys.modules['mmcv._ext'], '__densekit_portable__', False)
        model = init_detector({str(tmp_path / 'tiny_mask_rcnn.py')!r}, None, device='cpu')
        assert 'densekit' not in sys.modules
        img = (np.random.default_rng(0).random((120, 150, 3)) * 255).astype(np.uint8)
        result = inference_detector(model, img)
        inst = result.pred_instances
        assert inst.bboxes.shape[1] == 4 and len(inst.scores) == len(inst.bboxes)
        import densekit  # later import of densekit keeps the same stand-in
        from densekit.compat import using_portable_ops
        assert using_portable_ops()
        print('ok', len(inst.bboxes))
    """, tmp_path)
    assert r.returncode == 0 and r.stdout.startswith('ok'), r.stderr[-3000:]


def test_compiled_ext_is_not_shadowed(tmp_path):
    """A compiled ``mmcv._ext`` (full mmcv build) is found first; the hook is never asked."""
    import mmcv
    real = Path(mmcv.__file__).parent
    pkg = tmp_path / 'fake' / 'mmcv'
    pkg.mkdir(parents=True)
    for entry in real.iterdir():
        if entry.name != '__pycache__':
            (pkg / entry.name).symlink_to(entry)
    (pkg / '_ext.py').write_text('COMPILED_MARKER = True\n'
                                 'def __getattr__(name):\n'
                                 '    return lambda *a, **k: "compiled " + name\n')
    r = _run("""
        import sys, mmcv._ext
        assert getattr(mmcv._ext, 'COMPILED_MARKER', False), mmcv._ext
        assert 'densekit.compat.mmcv_ext' not in sys.modules
        print('ok')
    """, tmp_path, extra_path=str(tmp_path / 'fake'))
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr[-3000:]


def test_missing_densekit_names_densekit(tmp_path):
    """With the hook present but densekit not importable, the error says what to do."""
    shim = tmp_path / 'shim'
    (shim / 'densekit').mkdir(parents=True)
    (shim / 'densekit' / '__init__.py').write_text('')  # a densekit without compat/mmcv_ext.py
    r = _run("""
        try:
            import mmcv._ext
        except ImportError as e:
            msg = str(e)
            assert 'densekit' in msg and 'mmcv._ext' in msg, msg
            print('ok')
    """, tmp_path, extra_path=str(shim))
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr[-3000:]


def _installed_with_hook() -> bool:
    try:
        files = importlib.metadata.files('densekit') or []
    except importlib.metadata.PackageNotFoundError:
        return False
    return any(f.name == 'densekit_mmcv_ext.pth' for f in files)


@pytest.mark.skipif(not _installed_with_hook(),
                    reason='the installed densekit predates the start-up hook (re-run pip install -e .)')
def test_installed_hook_in_a_plain_interpreter(tmp_path):
    r = _run("""
        import sys
        assert 'torch' not in sys.modules
        import mmcv.ops
        assert 'densekit' not in sys.modules
        assert getattr(sys.modules['mmcv._ext'], '__densekit_portable__', False)
        print('ok')
    """, tmp_path, site_dir=False)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr[-3000:]
