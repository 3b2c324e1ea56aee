"""tools/train.py and tools/test.py as a user runs them: distributed CPU, kill-and-resume, errors."""
from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tiny_seg / tiny_hooks beside this file
from tiny_seg import REPO, env_with_hooks, make_tiny_ade, write_config  # noqa: E402

pytest.importorskip('mmseg')


def _run(args, tmp_path, check=True, timeout=600, env=None):
    r = subprocess.run(args, cwd=tmp_path, env={**env_with_hooks(), **(env or {})},
                       capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f'{args} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}')
    return r


def _train(cfg, work_dir, tmp_path, *extra, check=True, env=None):
    return _run([sys.executable, str(REPO / 'tools' / 'train.py'), str(cfg), '--work-dir',
                 str(work_dir), *extra], tmp_path, check=check, env=env)


@pytest.fixture
def tiny(tmp_path):
    data = make_tiny_ade(tmp_path / 'ade')
    return write_config(tmp_path, data)


def _dist_train(cfg, work_dir, tmp_path, *extra, check=True, env=None):
    # each rank draws its own random numbers (dropout, flips), so a per-rank RNG restore is tested
    return _run(['bash', str(REPO / 'tools' / 'dist_train.sh'), str(cfg), '2', '--work-dir', str(work_dir),
                 '--cfg-options', 'randomness.diff_rank_seed=True', *extra], tmp_path, check=check,
                env={'PORT': str(_free_port()), **(env or {})})


@pytest.mark.slow  # the longest test; two-rank training and testing stay in the default tier
@pytest.mark.timeout(900)  # through test_slurm_scripts_with_a_fake_srun below
def test_distributed_two_processes_cpu(tiny, tmp_path):
    """tools/dist_train.sh -> torchrun -> 2 gloo ranks; DDP keeps the weights identical; a run
    killed after iteration 5 and resumed from iteration 4 ends with the uninterrupted run's
    weights; then tools/dist_test.sh on the result."""
    wd = tmp_path / 'dist'
    r = _dist_train(tiny, wd, tmp_path)
    assert 'Distributed launcher: pytorch' in r.stdout + r.stderr or 'world_size: 2' in r.stdout + r.stderr
    w0 = torch.load(wd / 'weights_rank0.pt')['params']
    w1 = torch.load(wd / 'weights_rank1.pt')['params']
    assert w0.keys() == w1.keys() and len(w0) > 10
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0, msg=k)
    # the ranks saw different data (DistributedSampler), so their BN statistics differ: proof
    # that two processes really trained, each on its own shard
    b0 = torch.load(wd / 'weights_rank0.pt')['buffers']
    b1 = torch.load(wd / 'weights_rank1.pt')['buffers']
    assert any(not torch.equal(b0[k], b1[k]) for k in b0 if 'running_mean' in k)
    assert (wd / 'iter_4.pth').is_file()
    ranks = torch.load(wd / 'iter_4.pth', weights_only=False)['meta']['rng_state']['ranks']
    assert len(ranks) == 2 and not torch.equal(ranks[0]['torch'], ranks[1]['torch'])

    # kill both ranks after iteration 5, resume from iter_4.pth: each rank gets its own RNG state
    # back (dropout masks, random flips; a wrong state on either rank changes the all-reduced
    # gradients), so the weights are the uninterrupted run's, and so are rank 0's BN statistics
    # (rank 1 resumes with rank 0's: checkpoints hold rank 0's buffers, mmengine's behaviour)
    crash = tmp_path / 'crash'
    r = _dist_train(tiny, crash, tmp_path, check=False, env={'TEST_KILL_AT': '5'})
    assert r.returncode != 0 and (crash / 'iter_4.pth').is_file() and not (crash / 'iter_6.pth').exists()
    r = _dist_train(tiny, crash, tmp_path, '--resume')
    assert 'resumed epoch: 0, iter: 4' in r.stdout + r.stderr
    assert 'RNG states are not restored' not in r.stdout + r.stderr
    for rank, parts in ((0, ('params', 'buffers')), (1, ('params',))):
        a = torch.load(wd / f'weights_rank{rank}.pt')
        b = torch.load(crash / f'weights_rank{rank}.pt')
        for part in parts:
            for k in a[part]:
                torch.testing.assert_close(a[part][k], b[part][k], rtol=0, atol=1e-5, msg=f'rank {rank} {k}')

    # tools/dist_test.sh: 2 ranks each evaluate a shard; the collected metrics and the dumped
    # predictions equal a single-process evaluation of the same checkpoint
    single = _run([sys.executable, str(REPO / 'tools' / 'test.py'), str(tiny), str(wd / 'iter_4.pth'),
                   '--work-dir', str(tmp_path / 'test1'), '--out', str(tmp_path / 'preds1')], tmp_path)
    dist = _run(['bash', str(REPO / 'tools' / 'dist_test.sh'), str(tiny), str(wd / 'iter_4.pth'), '2',
                 '--work-dir', str(tmp_path / 'test2'), '--out', str(tmp_path / 'preds2')], tmp_path,
                env={'PORT': str(_free_port())})
    metrics = [re.findall(r'\b(aAcc|mIoU|mAcc): ([0-9.]+)', r.stdout + r.stderr) for r in (single, dist)]
    assert metrics[0] and metrics[0][-3:] == metrics[1][-3:], metrics
    preds = [sorted((tmp_path / d).glob('*.png')) for d in ('preds1', 'preds2')]
    assert [p.name for p in preds[0]] == [p.name for p in preds[1]] and len(preds[0]) == 8
    for a, b in zip(*preds):
        assert a.read_bytes() == b.read_bytes(), a.name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# A stand-in for Slurm's srun: runs --ntasks copies of the command on this machine with the
# SLURM_* variables a real allocation sets, records its options, fails if any task fails.
FAKE_SRUN = r'''#!{python}
import json, os, subprocess, sys
args, opts = sys.argv[1:], {{}}
while args and args[0].startswith('-'):
    a = args.pop(0)
    if '=' in a:
        k, v = a.split('=', 1)
    else:
        k, v = a, args.pop(0)
    opts[k] = v
with open(os.environ['FAKE_SRUN_LOG'], 'a') as f:
    f.write(json.dumps(dict(opts=opts, cmd=args)) + '\n')
n = int(opts['--ntasks'])
procs = [subprocess.Popen(args, env=dict(os.environ, SLURM_PROCID=str(i), SLURM_LOCALID=str(i), SLURM_NTASKS=str(n),
                                         SLURM_NODELIST='node[001]', SLURM_JOB_NAME=opts['--job-name']))
         for i in range(n)]
sys.exit(max(p.wait() for p in procs))
'''
FAKE_SCONTROL = '''#!/usr/bin/env bash
[[ "$1 $2 $3" == "show hostname node[001]" ]] && echo 127.0.0.1 || exit 1
'''


def test_slurm_scripts_with_a_fake_srun(tiny, tmp_path):
    """tools/slurm_train.sh / slurm_test.sh as on a cluster: srun gets the partition, job name,
    task counts; each task trains with --launcher slurm (mmengine's slurm launcher, on CPU via
    densekit.compat: rank from SLURM_PROCID, master address from scontrol)."""
    import json
    import os
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name, text in (('srun', FAKE_SRUN.format(python=sys.executable)), ('scontrol', FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / 'srun.jsonl'
    env = {'PATH': f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', 'FAKE_SRUN_LOG': str(log),
           'MASTER_PORT': str(_free_port()), 'GPUS': '2', 'GPUS_PER_NODE': '2', 'CPUS_PER_TASK': '1'}
    env.pop('MASTER_ADDR', None)
    wd = tmp_path / 'slurm'
    r = _run(['bash', str(REPO / 'tools' / 'slurm_train.sh'), 'gpu', 'dk_job', str(tiny), str(wd),
              '--cfg-options', 'train_cfg.max_iters=2'], tmp_path, env=env)
    assert 'world_size: 2' in r.stdout + r.stderr or 'Distributed launcher: slurm' in r.stdout + r.stderr
    call = json.loads(log.read_text().splitlines()[0])
    assert call['opts'] == {'-p': 'gpu', '--job-name': 'dk_job', '--gres': 'gpu:2', '--ntasks': '2',
                            '--ntasks-per-node': '2', '--cpus-per-task': '1', '--kill-on-bad-exit': '1'}
    assert call['cmd'][-4:] == ['--launcher', 'slurm', '--cfg-options', 'train_cfg.max_iters=2']
    w0, w1 = (torch.load(wd / f'weights_rank{i}.pt')['params'] for i in (0, 1))
    for k in w0:
        torch.testing.assert_close(w0[k], w1[k], rtol=0, atol=0, msg=k)
    assert (wd / 'iter_2.pth').is_file()

    env['MASTER_PORT'] = str(_free_port())
    r = _run(['bash', str(REPO / 'tools' / 'slurm_test.sh'), 'gpu', 'dk_eval', str(tiny), str(wd / 'iter_2.pth'),
              '--work-dir', str(tmp_path / 'slurm_test')], tmp_path, env=env)
    assert re.search(r'\bmIoU: [0-9.]+', r.stdout + r.stderr)
    assert json.loads(log.read_text().splitlines()[1])['opts']['--job-name'] == 'dk_eval'


def test_kill_and_resume_matches_uninterrupted(tiny, tmp_path):
    full = tmp_path / 'full'
    _train(tiny, full, tmp_path)

    crash = tmp_path / 'crash'
    r = _train(tiny, crash, tmp_path, check=False, env={'TEST_KILL_AT': '5'})
    assert r.returncode != 0, 'the kill hook should have killed training'
    assert (crash / 'iter_4.pth').is_file() and not (crash / 'iter_6.pth').exists()
    last = (crash / 'last_checkpoint').read_text().strip()
    assert last.endswith('iter_4.pth')

    r = _train(tiny, crash, tmp_path, '--resume')
    log = r.stdout + r.stderr
    assert 'resumed epoch: 0, iter: 4' in log
    ckpt4 = torch.load(crash / 'iter_4.pth', weights_only=False)
    ckpt8 = torch.load(crash / 'iter_8.pth', weights_only=False)
    assert ckpt4['meta']['iter'] == 4 and ckpt8['meta']['iter'] == 8
    # AdamW's step counter continued from the checkpoint rather than restarting
    steps4 = {s['step'].item() for s in ckpt4['optimizer']['state'].values()}
    steps8 = {s['step'].item() for s in ckpt8['optimizer']['state'].values()}
    assert steps4 == {4.0} and steps8 == {8.0}

    a = torch.load(full / 'weights_rank0.pt')['params']
    b = torch.load(crash / 'weights_rank0.pt')['params']
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5, msg=k)


EPOCH_BASED = """
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=3, val_interval=100)
train_dataloader['sampler'] = dict(type='DefaultSampler', shuffle=True)
default_hooks['checkpoint'] = dict(by_epoch=True, interval=1, max_keep_ckpts=10)
"""


@pytest.mark.slow  # the iteration-based kill-and-resume test above stays in the default tier
def test_kill_and_resume_epoch_based(tmp_path):
    """An epoch-based loop (the detection schedules): killed in epoch 2, resumed from epoch 1's
    checkpoint, it ends with the uninterrupted run's weights (RNG restored before the epoch's
    data loader iterator draws its seed)."""
    cfg = write_config(tmp_path, make_tiny_ade(tmp_path / 'ade'), EPOCH_BASED)
    full = tmp_path / 'full'
    _train(cfg, full, tmp_path)
    crash = tmp_path / 'crash'
    r = _train(cfg, crash, tmp_path, check=False, env={'TEST_KILL_AT': '6'})  # 4 iterations per epoch
    assert r.returncode != 0 and (crash / 'epoch_1.pth').is_file() and not (crash / 'epoch_2.pth').exists()
    r = _train(cfg, crash, tmp_path, '--resume')
    assert 'resumed epoch: 1, iter: 4' in r.stdout + r.stderr
    a = torch.load(full / 'weights_rank0.pt')['params']
    b = torch.load(crash / 'weights_rank0.pt')['params']
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5, msg=k)


def test_resume_refuses_malicious_checkpoint(tiny, tmp_path):
    marker = tmp_path / 'pwned'

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f'touch {marker}',))

    evil = tmp_path / 'evil.pth'
    torch.save({'meta': {}, 'state_dict': {}, 'x': Evil()}, evil)
    r = _train(tiny, tmp_path / 'wd', tmp_path, '--resume', str(evil), check=False)
    assert r.returncode != 0
    assert 'refusing to load checkpoint' in r.stderr and 'posix.system' in r.stderr
    assert not marker.exists()


def test_test_tool_evaluates_and_dumps(tiny, tmp_path):
    wd = tmp_path / 'wd'
    _train(tiny, wd, tmp_path, '--cfg-options', 'train_cfg.max_iters=2')
    out = tmp_path / 'preds'
    r = _run([sys.executable, str(REPO / 'tools' / 'test.py'), str(tiny), str(wd / 'iter_2.pth'),
              '--work-dir', str(wd), '--out', str(out), '--show-dir', str(tmp_path / 'vis')],
             tmp_path)
    assert 'mIoU' in r.stdout + r.stderr
    assert len(list(out.glob('*.png'))) == 8
    # one labelled `ground truth | prediction` png per image, flat in the --show-dir folder
    import cv2
    import numpy as np
    from densekit.mm.visualization import (GT_LABEL, LABEL_HEIGHT, PRED_LABEL, label_strip,
                                           panel_scale)
    drawn = sorted((tmp_path / 'vis').rglob('*.png'))
    assert [p.name for p in drawn] == [f'{i:03d}.png' for i in range(8)]
    assert all(p.parent == tmp_path / 'vis' for p in drawn)
    k = panel_scale(32)
    picture = cv2.imread(str(drawn[0]))[..., ::-1]
    assert picture.shape == (LABEL_HEIGHT + 32 * k, 2 * 32 * k, 3)
    labels = np.concatenate([label_strip(32 * k, GT_LABEL), label_strip(32 * k, PRED_LABEL)], 1)
    assert np.array_equal(picture[:LABEL_HEIGHT], labels)
    gt = picture[LABEL_HEIGHT:, :32 * k].astype(int)
    # the ground truth's two halves (classes 0 and 1) in their palette colours
    assert abs(gt[4 * k, 4 * k] - gt[4 * k, 28 * k]).max() > 50


def test_cfg_options_typo_is_an_error(tiny, tmp_path):
    r = _train(tiny, tmp_path / 'wd', tmp_path, '--cfg-options', 'train_cfg.max_iter=3', check=False)
    assert r.returncode != 0
    assert "'max_iter' is not a field of train_cfg" in r.stderr and "'max_iters'" in r.stderr


def test_missing_config_is_an_error(tmp_path):
    r = _train(tmp_path / 'nope.py', tmp_path / 'wd', tmp_path, check=False)
    assert r.returncode != 0 and 'nope.py does not exist' in r.stderr


def test_test_tool_refuses_a_checkpoint_of_another_model(tiny, tmp_path):
    """mmengine loads with strict=False: a backbone-only checkpoint was evaluated with a random
    decode head (mIoU of an untrained model, the missing keys in one log line)."""
    import timm
    from densekit.mm.runner import test
    backbone = timm.create_model('resnet10t', features_only=True, out_indices=(1, 2))
    ckpt = tmp_path / 'backbone_only.pth'
    torch.save({'state_dict': {f'backbone.model.{k}': v
                               for k, v in backbone.state_dict().items()}}, ckpt)
    with pytest.raises(ValueError, match=rf"checkpoint {ckpt} lacks \d+ of the \d+ weights of the "
                                         rf"model in {tiny} \(e\.g\. \['decode_head\."):
        test([str(tiny), str(ckpt), '--work-dir', str(tmp_path / 'wd')])


def test_test_tool_errors_when_the_evaluator_returns_no_metric(tiny, tmp_path, monkeypatch):
    """A detector that predicts nothing: mmdet's CocoMetric logs an ERROR and returns {}, and
    tools/test.py exited 0 with no number (seen with an untrained Cascade Mask R-CNN)."""
    import densekit.mm.runner as runner_mod

    class _Runner:
        def register_hook(self, hook):
            pass

        def test(self):
            return {}

    monkeypatch.setattr(runner_mod, 'build_runner', lambda cfg: _Runner())
    ckpt = tmp_path / 'c.pth'
    torch.save({'state_dict': {}}, ckpt)
    with pytest.raises(RuntimeError, match=rf"returned no metric for checkpoint {ckpt}"):
        runner_mod.test([str(tiny), str(ckpt), '--work-dir', str(tmp_path / 'wd')])
    monkeypatch.setattr(runner_mod, 'build_runner', lambda cfg: type(
        '_R', (_Runner,), {'test': lambda self: {'mIoU': 1.0}})())
    assert runner_mod.test([str(tiny), str(ckpt), '--work-dir', str(tmp_path / 'wd')])[1] == {'mIoU': 1.0}
