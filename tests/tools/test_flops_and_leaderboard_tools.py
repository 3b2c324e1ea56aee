"""tools/analysis: get_flops.py and leaderboard.py run as a user runs them (subprocesses)."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(*args, cwd=REPO):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_get_flops_backbone_counts_attention_analytically():
    out = _run('tools/analysis/get_flops.py', '--backbone', 'swin_test', '--shape', '56', '56')
    assert 'params:' in out and 'GFLOPs:' in out and 'GMACs:' in out
    assert 'of which window_attention' in out


def test_get_flops_config():
    out = _run('tools/analysis/get_flops.py', 'configs/quickstart/mask-rcnn_r18_synthetic.py', '--shape', '64', '64')
    gflops = float(next(line for line in out.splitlines() if line.startswith('GFLOPs:')).split()[1])
    gmacs = float(next(line for line in out.splitlines() if line.startswith('GMACs:')).split()[1])
    assert gflops > 0 and abs(gmacs - gflops / 2) < 0.011


def test_leaderboard_two_tiny_backbones(tmp_path):
    out_md = tmp_path / 'leaderboard.md'
    _run('tools/analysis/leaderboard.py', '--filter', 'nat_test', 'swin_test', '--size', '64', '96',
         '--batch-sizes', '1', '--iters', '1', '--out', out_md)
    text = out_md.read_text()
    assert 'Stamp: commit' in text and 'input 64x96' in text
    rows = [line for line in text.splitlines() if line.startswith('| nat_test') or line.startswith('| swin_test')]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip('|').split('|')]
        assert float(cells[1]) > 0 and float(cells[2]) > 0  # params, GFLOPs
        assert all(float(c) >= 0 for c in cells[4:])
    assert (tmp_path / 'leaderboard.png').stat().st_size > 0


def test_leaderboard_paper_numbers_parse():
    sys.path.insert(0, str(REPO / 'tools' / 'analysis'))
    try:
        import leaderboard
    finally:
        sys.path.pop(0)
    paper = leaderboard.paper_numbers('Mask R-CNN 3x ms')
    assert paper['swin_tiny'] == 46.0 and paper['nat_mini'] == 46.5
