"""tools/analysis: get_flops.py and leaderboard.py run as a user runs them (subprocesses)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert '- run 1: commit' in text and 'input 64x96' in text and '--filter nat_test swin_test' in text
    rows = [line for line in text.splitlines() if line.startswith('| nat_test') or line.startswith('| swin_test')]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip('|').split('|')]
        assert float(cells[1]) > 0 and float(cells[2]) > 0  # params, GFLOPs
        assert all(float(c) >= 0 for c in cells[4:-1]) and cells[-1] == '1'
    assert (tmp_path / 'leaderboard.png').stat().st_size > 0


def _leaderboard():
    sys.path.insert(0, str(REPO / 'tools' / 'analysis'))
    try:
        import leaderboard
    finally:
        sys.path.pop(0)
    return leaderboard


def test_leaderboard_paper_numbers_parse():
    leaderboard = _leaderboard()
    paper = leaderboard.paper_numbers('Mask R-CNN 3x ms')
    assert paper['swin_tiny'] == 46.0 and paper['nat_mini'] == 46.5
    miou = leaderboard.paper_numbers('UPerNet ADE20K 160k', 'miou')
    assert miou['swin_tiny'] == 44.51 and miou['convnext_tiny'] == 46.0


def _row(name, value):
    row = {'model': name, 'params_m': value, 'gflops': 2 * value, 'gflops_attention': 0.5}
    for key in ('fwd', 'fwdbwd'):
        row[f'{key}_img_s_b1'], row[f'{key}_peak_mib_b1'] = value / 10, 100 * value
    return row


def test_leaderboard_merge_replaces_rows_by_backbone(tmp_path):
    """A --filter run replaces the rows of the backbones it measured and keeps the others;
    runs that no row refers to any more leave the table; another setup is refused."""
    leaderboard = _leaderboard()
    out = str(tmp_path / 'lb.md')
    first = leaderboard.parse_args(['--size', '64', '96', '--batch-sizes', '1', '--out', out, '--note', 'loaded'])
    runs, rows = leaderboard.merge(first, out, [_row('a_net', 1.0), _row('b_net', 2.0),
                                               {'model': 'c_net', 'error': 'boom'}])
    leaderboard.write_table(rows, runs, first, out)
    again = leaderboard.parse_args(['--size', '64', '96', '--batch-sizes', '1', '--out', out,
                                    '--filter', 'b_net', 'c_net'])
    runs, rows = leaderboard.merge(again, out, [_row('b_net', 3.0), _row('c_net', 4.0)])
    leaderboard.write_table(rows, runs, again, out)
    _, _, runs, table = leaderboard.read_table(out, [1])
    assert sorted(table) == ['a_net', 'b_net', 'c_net']
    assert table['a_net']['params_m'] == 1.0 and table['a_net']['run'] == 1
    assert table['b_net']['params_m'] == 3.0 and table['b_net']['run'] == 2
    assert table['c_net']['fwd_peak_mib_b1'] == 400 and 'error' not in table['c_net']
    assert sorted(runs) == [1, 2] and '--filter b_net c_net' in runs[2]
    assert 'Note: loaded' in open(out).read()  # kept by a merge that gives no --note
    # remeasuring a_net too leaves run 1 without rows: it is dropped
    runs, rows = leaderboard.merge(again, out, [_row('a_net', 5.0)])
    assert sorted(runs) == [2, 3]
    other = leaderboard.parse_args(['--size', '128', '96', '--batch-sizes', '1', '--out', out])
    with pytest.raises(SystemExit, match='another setup'):
        leaderboard.merge(other, out, [_row('a_net', 1.0)])
    fresh = leaderboard.parse_args(['--size', '128', '96', '--batch-sizes', '1', '--out', out, '--fresh'])
    runs, rows = leaderboard.merge(fresh, out, [_row('a_net', 1.0)])
    assert list(runs) == [1] and [r['model'] for r in rows] == ['a_net']


def test_leaderboard_merges_tables_of_parallel_runs(tmp_path):
    """--merge-from: the rows and runs of tables written with the same setup, runs renumbered."""
    leaderboard = _leaderboard()
    parts = []
    for i, names in enumerate((['a_net', 'b_net'], ['c_net'])):
        part = str(tmp_path / f'part{i}.md')
        args = leaderboard.parse_args(['--size', '64', '96', '--batch-sizes', '1', '--out', part, '--note', 'n'])
        leaderboard.write_table(*leaderboard.merge(args, part, [_row(n, 1.0 + i) for n in names])[::-1], args, part)
        parts.append(part)
    out = str(tmp_path / 'all.md')
    leaderboard.main(['--size', '64', '96', '--batch-sizes', '1', '--out', out, '--no-plot', '--merge-from', *parts])
    _, note, runs, table = leaderboard.read_table(out, [1])
    assert note == 'n' and sorted(runs) == [1, 2]
    assert {k: (r['params_m'], r['run']) for k, r in table.items()} == {
        'a_net': (1.0, 1), 'b_net': (1.0, 1), 'c_net': (2.0, 2)}
