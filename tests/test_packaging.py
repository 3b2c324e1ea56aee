"""densekit's install asks for one OpenCV distribution: the one mmengine and mmcv-lite require."""
import re
from importlib import metadata
from pathlib import Path

import pytest

tomllib = pytest.importorskip('tomllib')

ROOT = Path(__file__).resolve().parents[1]
OPENCV = re.compile(r'^(opencv(-contrib)?-python(-headless)?)\b', re.IGNORECASE)


def _opencv_names(requirements):
    return {m.group(1).lower() for r in requirements for m in [OPENCV.match(r.strip())] if m}


def test_one_opencv_distribution_in_the_install():
    deps = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['dependencies']
    ours = _opencv_names(deps)
    upstream = set()
    for dist in ('mmengine', 'mmcv-lite'):
        try:
            upstream |= _opencv_names(r.split(';')[0] for r in metadata.requires(dist) or ())
        except metadata.PackageNotFoundError:
            pytest.skip(f'{dist} is not installed')
    assert len(upstream) == 1, f'mmengine / mmcv-lite require {sorted(upstream)}'
    assert ours <= upstream, (f'pyproject.toml adds {sorted(ours - upstream)} beside the '
                              f'{sorted(upstream)} mmengine requires: two wheels writing one cv2 folder')
