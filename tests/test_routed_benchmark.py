"""benchmarks/routed.py: the stage shapes it times are the backbone's, and ``--smoke`` runs every
code path that needs no official clone (tiny sizes). Times are not looked at, only that each row
ran and produced them."""
import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def routed():
    sys.path.insert(0, str(ROOT / 'benchmarks'))
    try:
        import routed
        yield routed
    finally:
        sys.path.remove(str(ROOT / 'benchmarks'))


def test_stage_maps_are_the_backbones(routed):
    """The map sizes of the attention rows at 800x1333 are those BiFormer's stem and first
    downsampler produce; the padding rounds up to the region grid."""
    from densekit.models import build_backbone
    model = build_backbone('biformer_test')
    with torch.no_grad():
        x = model.stem(torch.zeros(1, 3, 800, 1333))
        assert tuple(x.shape[-2:]) == routed.stage_map((800, 1333), 1)
        x = model.stages[1].downsample(x)
        assert tuple(x.shape[-2:]) == routed.stage_map((800, 1333), 2)
    for hw in [(200, 334), (100, 167), (16, 32)]:
        hp = routed.padded(hw, 16)
        assert all(p % 16 == 0 and 0 <= p - s < 16 for p, s in zip(hp, hw))


def test_smoke_rows(routed, tmp_path):
    out = tmp_path / 'routed.json'
    threads = torch.get_num_threads()
    try:
        assert routed.main(['--smoke', '--threads', '1', '--json', str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    data = json.loads(out.read_text())
    assert data['meta']['official'] is False
    rows = data['rows']
    assert [(r['comparison'], r['impl']) for r in rows] == [
        ('attention', 'densekit [reference]'), ('attention', 'densekit [reference]'),
        ('backbone train step (biformer_test)', 'densekit [reference]')]
    assert [r['stage'] for r in rows[:2]] == [1, 2]
    for r in rows:
        assert math.isfinite(r['fwdbwd_ms']) and r['fwdbwd_ms'] > 0
        assert r['max_abs_diff'] == 0.0  # the first implementation is its own baseline
