"""The scale benchmark's generated COCO file (``tools/dev/coco_scale.py``), reduced: densekit's
validated ``DenseKitCocoDataset`` accepts every instance of it and gives exactly mmdet's plain
``CocoDataset`` data list (``benchmarks/annotation_scale.py`` measures the full size)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip('mmdet')
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / 'tools' / 'dev'))
import coco_scale  # noqa: E402


def test_generated_file_validates_and_loads_as_mmdet_does(tmp_path):
    import densekit  # noqa: F401
    from mmdet.datasets import CocoDataset

    from densekit.datasets.checks import validate_coco
    from densekit.mm.datasets import DenseKitCocoDataset
    coco = coco_scale.coco_instances(n_images=200, n_instances=1500, seed=1)
    clean, skipped = validate_coco(coco, 'generated.json')
    assert not skipped and len(clean['annotations']) == 1500
    assert sum(a['iscrowd'] for a in coco['annotations']) > 0
    assert all(len(a['segmentation'][0]) >= 12 for a in coco['annotations'])
    ann = tmp_path / 'instances.json'
    ann.write_text(json.dumps(coco))
    classes = tuple(c['name'] for c in coco['categories'])
    kw = dict(ann_file=str(ann), data_prefix=dict(img=str(tmp_path)), metainfo=dict(classes=classes),
              filter_cfg=dict(filter_empty_gt=True, min_size=32), pipeline=[])
    ours, theirs = DenseKitCocoDataset(**kw), CocoDataset(**kw)
    assert 0 < len(ours) == len(theirs) <= 200
    for i in range(len(ours)):
        assert ours.get_data_info(i) == theirs.get_data_info(i)
