"""Checkpoint files in-process: checksum sidecar, verification of damaged files, failed writes,
permissions from the umask, the resume check and max_keep_ckpts pruning."""
from __future__ import annotations

import errno
import io
import os
import stat
from types import SimpleNamespace

import pytest
import torch

from densekit.engine.checkpoint import (CheckpointWriteError, CorruptCheckpointError,
                                        newest_valid_checkpoint, verify_checkpoint,
                                        write_checkpoint_bytes)


def _payload(n: int = 4096) -> bytes:
    buf = io.BytesIO()
    torch.save({'state_dict': {'w': torch.arange(n, dtype=torch.float32)}, 'meta': {'iter': 2}}, buf)
    return buf.getvalue()


def _flip_byte(path, where: float = 0.5) -> None:
    with open(path, 'r+b') as f:
        f.seek(int(os.path.getsize(path) * where))
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))


def test_sidecar_is_sha256sum_format_and_detects_a_flipped_byte(tmp_path):
    import hashlib
    data = _payload()
    path = tmp_path / 'iter_2.pth'
    digest = write_checkpoint_bytes(data, path)
    assert (tmp_path / 'iter_2.pth.sha256').read_text() == f'{digest}  iter_2.pth\n'
    assert digest == hashlib.sha256(data).hexdigest()
    assert verify_checkpoint(path) is None
    _flip_byte(path)
    assert 'does not match iter_2.pth.sha256' in verify_checkpoint(path)


def test_without_sidecar_the_zip_crcs_detect_damage(tmp_path):
    data = _payload()
    good, flipped, cut = tmp_path / 'a.pth', tmp_path / 'b.pth', tmp_path / 'c.pth'
    for p in (good, flipped):
        p.write_bytes(data)
    cut.write_bytes(data[: len(data) * 2 // 3])
    _flip_byte(flipped)
    (tmp_path / 'empty.pth').write_bytes(b'')
    assert verify_checkpoint(good) is None
    assert 'CRC' in verify_checkpoint(flipped)
    assert 'not a complete zip archive' in verify_checkpoint(cut)
    assert verify_checkpoint(tmp_path / 'empty.pth') == 'the file is empty'
    assert verify_checkpoint(tmp_path / 'missing.pth') == 'the file does not exist'


@pytest.mark.parametrize('mask,mode', [(0o022, 0o644), (0o027, 0o640)])
def test_checkpoints_honour_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        write_checkpoint_bytes(_payload(), tmp_path / 'iter_2.pth')
    finally:
        os.umask(old)
    for name in ('iter_2.pth', 'iter_2.pth.sha256'):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode, name


@pytest.mark.parametrize('code', [errno.ENOSPC, errno.EACCES, errno.EIO])
def test_a_failed_write_names_path_and_cause_and_keeps_the_old_file(tmp_path, monkeypatch, code):
    path = tmp_path / 'iter_2.pth'
    old = _payload(100)
    write_checkpoint_bytes(old, path)
    real_write = os.write

    def failing_write(fd, data):  # half the bytes reach the disk, then it fails
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, 'write', failing_write)
    with pytest.raises(CheckpointWriteError) as e:
        write_checkpoint_bytes(_payload(5000), path)
    monkeypatch.undo()
    assert str(path) in str(e.value) and os.strerror(code) in str(e.value) and e.value.errno == code
    assert path.read_bytes() == old and verify_checkpoint(path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ['iter_2.pth', 'iter_2.pth.sha256']


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into a read-only folder')
def test_a_read_only_folder_is_a_clear_error(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(CheckpointWriteError, match='Permission denied'):
            write_checkpoint_bytes(_payload(), tmp_path / 'iter_2.pth')
    finally:
        tmp_path.chmod(0o755)


def _work_dir(tmp_path, steps=(2, 4, 6)):
    for s in steps:
        write_checkpoint_bytes(_payload(), tmp_path / f'iter_{s}.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / f'iter_{steps[-1]}.pth'))
    return tmp_path


def test_check_resume(tmp_path):
    pytest.importorskip('mmengine')
    from densekit.mm.reliability import check_resume
    wd = _work_dir(tmp_path)
    assert check_resume(str(wd), None) == str(wd / 'iter_6.pth')
    assert check_resume(str(wd / 'none'), None) is None  # nothing to resume: a fresh start
    with open(wd / 'iter_6.pth', 'r+b') as f:
        f.truncate(100)
    with pytest.raises(CorruptCheckpointError) as e:
        check_resume(str(wd), None)
    assert f'cannot resume from {wd / "iter_6.pth"}' in str(e.value)
    assert f'the newest intact checkpoint is {wd / "iter_4.pth"}' in str(e.value)
    assert check_resume(str(wd), None, fallback=True) == str(wd / 'iter_4.pth')
    # an explicit --resume CKPT is checked the same way
    with pytest.raises(CorruptCheckpointError):
        check_resume(str(wd), str(wd / 'iter_6.pth'))
    (wd / 'last_checkpoint').write_text('')
    with pytest.raises(CorruptCheckpointError, match='last_checkpoint is empty'):
        check_resume(str(wd), None)
    assert check_resume(str(wd), None, fallback=True) == str(wd / 'iter_4.pth')
    assert newest_valid_checkpoint(wd) == str(wd / 'iter_4.pth')


def test_pruning_never_deletes_the_last_intact_checkpoint(tmp_path):
    pytest.importorskip('mmengine')
    from mmengine.hooks import CheckpointHook

    from densekit.mm.reliability import CheckpointSafetyHook
    wd = _work_dir(tmp_path)
    ckpt_hook = CheckpointHook(interval=2, by_epoch=False, max_keep_ckpts=1)
    ckpt_hook.out_dir = str(wd)
    runner = SimpleNamespace(hooks=[ckpt_hook])
    hook = CheckpointSafetyHook()
    hook.before_train(runner)
    assert ckpt_hook.max_keep_ckpts == -1  # mmengine's delete-before-write is off
    with open(wd / 'iter_6.pth', 'r+b') as f:
        f.truncate(100)  # the newest is damaged: the newest intact one stays too
    hook.after_train_iter(runner, 0)
    assert sorted(p.name for p in wd.glob('*.pth')) == ['iter_4.pth', 'iter_6.pth']
    write_checkpoint_bytes(_payload(), wd / 'iter_8.pth')
    hook.after_train_iter(runner, 0)
    assert sorted(p.name for p in wd.glob('iter_*')) == ['iter_8.pth', 'iter_8.pth.sha256']


def test_a_sample_that_fails_to_load_mid_run(tmp_path):
    """DataFaultHook's wrapper on a real mmseg dataset whose files change after it was built."""
    pytest.importorskip('mmseg')
    import sys
    from pathlib import Path
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets import BaseSegDataset

    from densekit.mm.reliability import DataFaultError, guard_prepare_data
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'engine'))
    from tiny_seg import make_tiny_ade
    root = make_tiny_ade(tmp_path / 'ade', n=4)

    def dataset(action, max_skips=100):
        ds = BaseSegDataset(data_root=str(root), img_suffix='.jpg', seg_map_suffix='.png',
                            data_prefix=dict(img_path='images/training',
                                             seg_map_path='annotations/training'),
                            pipeline=[LoadImageFromFile()])
        guard_prepare_data(ds, action, max_skips)
        return ds

    stop, skip = dataset('stop'), dataset('skip', max_skips=1)  # built while every file is fine
    assert stop[1]['img'].shape == (32, 32, 3)
    images = root / 'images' / 'training'
    (images / '001.jpg').write_bytes(b'this is not a jpeg')
    (images / '002.jpg').unlink()
    with pytest.raises(DataFaultError, match=r'training sample 1 \(img_path=.*001\.jpg.*failed to load'):
        stop[1]
    with pytest.raises(DataFaultError, match=r'training sample 2 \(img_path=.*002\.jpg.*FileNotFoundError'):
        stop[2]

    skip._rand_another = lambda: 0  # the sample mmengine draws instead
    assert skip[1]['img_path'].endswith('000.jpg')
    with pytest.raises(DataFaultError, match='2 samples skipped, more than max_skips=1'):
        skip[2]
