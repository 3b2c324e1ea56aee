"""The errors a user meets with a broken checkpoint, a config typo or mismatched channels: each
names the cause (and the fix) instead of a bare EOFError, TypeError or conv2d shape error."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'engine'))  # tiny_seg, tiny_hooks
from _common import REPO, run_tool  # noqa: E402

pytest.importorskip('mmseg')


# ------------------------------------------------------------------------ checkpoint files
def _files(tmp_path):
    good = tmp_path / 'good.pth'
    torch.save({'state_dict': {'w': torch.ones(64)}}, good)
    body = good.read_bytes()
    legacy = tmp_path / 'legacy.pth'
    torch.save({'state_dict': {'w': torch.ones(64)}}, legacy, _use_new_zipfile_serialization=False)
    files = {'empty': b'', 'random': os.urandom(4096), 'html': b'<html><body>404 Not Found</body>',
             'truncated_zip': body[:len(body) // 2],
             'truncated_legacy': legacy.read_bytes()[:len(legacy.read_bytes()) // 2]}
    for name, data in files.items():
        (tmp_path / f'{name}.pth').write_bytes(data)
    return good, legacy


@pytest.mark.parametrize('name, error, message', [
    ('empty', 'EmptyCheckpointError', r'is empty \(0 bytes\)'),
    ('random', 'NotACheckpointError', r'is not a checkpoint: it is neither a torch zip archive '
                                      r'nor a pickle'),
    ('html', 'NotACheckpointError', r'looks like text'),
    ('truncated_zip', 'TruncatedCheckpointError', r'is truncated'),
    ('truncated_legacy', 'TruncatedCheckpointError', r'is truncated'),
])
def test_broken_checkpoint_files_are_told_apart(tmp_path, name, error, message):
    from mmengine.runner.checkpoint import CheckpointLoader

    import densekit  # noqa: F401  (mmengine's loader -> densekit's safe loader)
    from densekit.compat import safe_load as sl
    good, legacy = _files(tmp_path)
    for path in (good, legacy):  # whole files of both formats still load
        torch.testing.assert_close(sl.safe_load(path)['state_dict']['w'], torch.ones(64))
    cls = getattr(sl, error)
    with pytest.raises(cls, match=message) as info:
        CheckpointLoader.load_checkpoint(str(tmp_path / f'{name}.pth'), map_location='cpu')
    assert not isinstance(info.value, sl.UnsafeCheckpointError)  # not "could run code"
    assert isinstance(info.value, sl.CheckpointFileError)
    with open(tmp_path / f'{name}.pth', 'rb') as fh:  # a file object: the same verdict
        with pytest.raises(cls):
            sl.safe_load(fh)


# ------------------------------------------------------------------------------ tools
@pytest.fixture
def tiny(tmp_path):
    from tiny_seg import make_tiny_ade, write_config
    return write_config(tmp_path, make_tiny_ade(tmp_path / 'ade', n=2))


def _user_config(tmp_path, tiny, text: str) -> Path:
    cfg = tmp_path / 'user.py'
    cfg.write_text(f"_base_ = '{tiny}'\ncustom_hooks = []\n{text}\n")
    return cfg


def _run(script, *args, cwd):
    from tiny_seg import env_with_hooks
    os.environ['PYTHONPATH'] = env_with_hooks()['PYTHONPATH']
    return run_tool(script, *args, cwd=cwd, check=False, timeout=600)


def test_top_level_typo_gets_did_you_mean(tmp_path, tiny):
    cfg = _user_config(tmp_path, tiny, 'trian_cfg = dict(max_iters=2)')
    r = _run('tools/train.py', cfg, '--work-dir', tmp_path / 'w', cwd=tmp_path)
    assert r.returncode != 0
    assert "top-level key 'trian_cfg' is not read by the runner; did you mean 'train_cfg'?" \
        in r.stderr, r.stderr[-2000:]


def test_nested_typo_gets_did_you_mean(tmp_path, tiny):
    cfg = _user_config(tmp_path, tiny, "model = dict(decode_head=dict(num_clases=4))")
    r = _run('tools/train.py', cfg, '--work-dir', tmp_path / 'w', cwd=tmp_path)
    assert r.returncode != 0
    assert ("'model.decode_head.num_clases' is not an argument of FCNHead; did you mean "
            "'num_classes'?") in r.stderr, r.stderr[-2000:]


def test_backbone_channels_checked_before_the_first_step(tmp_path, tiny):
    cfg = _user_config(tmp_path, tiny, 'model = dict(decode_head=dict(in_channels=64))')
    r = _run('tools/train.py', cfg, '--work-dir', tmp_path / 'w', '--max-iters', 2, cwd=tmp_path)
    assert r.returncode != 0
    assert ('TimmBackbone backbone outputs 128 channels (out_indices=(1, 2)) but '
            'model.decode_head.in_channels=64; set model.decode_head.in_channels=128') in r.stderr, \
        r.stderr[-2000:]
    assert 'Iter(train)' not in r.stdout + r.stderr


def test_check_channels_names_both_lists_of_a_neck():
    from torch import nn

    from densekit.mm.hooks import check_channels

    class Backbone(nn.Module):
        out_indices = (1, 2, 3)
        feature_info = [dict(num_chs=c, reduction=4 * 2 ** i, module=f's{i}')
                        for i, c in enumerate((16, 32, 64, 128))]

    class Neck(nn.Module):
        in_channels = [16, 32, 64, 128]

    model = nn.Module()
    model.backbone, model.neck = Backbone(), Neck()
    with pytest.raises(ValueError, match=r'outputs \[32, 64, 128\] channels \(out_indices=\(1, 2, '
                                         r'3\)\) but model\.neck\.in_channels=\[16, 32, 64, 128\]'):
        check_channels(model)
    model.neck.in_channels = [32, 64, 128]
    check_channels(model)  # matching: no error


def test_test_tool_refuses_shape_mismatched_weights(tmp_path, tiny):
    """A 6-class checkpoint under the 4-class config: mmengine would skip the head's weights
    with a "size mismatch" log line and evaluate a random head."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import densekit  # noqa: F401
    from mmseg.registry import MODELS
    cfg = Config.fromfile(str(tiny))
    cfg.model.decode_head.num_classes = 6
    init_default_scope('mmseg')
    ckpt = tmp_path / 'six_classes.pth'
    torch.save({'state_dict': MODELS.build(cfg.model).state_dict()}, ckpt)
    user = _user_config(tmp_path, tiny, '')
    r = _run('tools/test.py', user, ckpt, '--work-dir', tmp_path / 'w', cwd=tmp_path)
    assert r.returncode != 0
    assert 'weights differ in shape' in r.stderr and 'decode_head.conv_seg.weight: checkpoint ' \
        '(6, 16, 1, 1) vs model (4, 16, 1, 1)' in r.stderr, r.stderr[-2000:]
    assert 'Iter(test)' not in r.stdout + r.stderr  # refused before any test image


def test_top_level_check_accepts_the_variables_of_shipped_configs():
    """No false "did you mean": every top-level name assigned in densekit's, mmdet's and mmseg's
    config files passes the check (a config of only those names is accepted)."""
    import ast
    import importlib.util

    from mmengine.config import Config

    from densekit.mm.runner import check_top_level_keys
    roots = [REPO / 'configs', REPO / 'projects']
    for pkg in ('mmdet', 'mmseg'):
        spec = importlib.util.find_spec(pkg)
        if spec and spec.origin:
            roots.append(Path(spec.origin).parent / '.mim' / 'configs')
    names = set()
    for root in roots:
        for path in root.rglob('*.py'):
            try:
                tree = ast.parse(path.read_text())
            except (SyntaxError, UnicodeDecodeError):
                continue
            names |= {t.id for node in tree.body if isinstance(node, ast.Assign)
                      for t in node.targets if isinstance(t, ast.Name)}
    assert len(names) > 100
    check_top_level_keys(Config({n: 0 for n in names}))
    with pytest.raises(KeyError, match="did you mean 'param_scheduler'"):
        check_top_level_keys(Config({'param_schedular': []}))
