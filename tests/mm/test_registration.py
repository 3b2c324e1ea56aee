"""The OpenMMLab edge's registration: the naming rule, the one shadow check, deprecated names, and
depth data read through mmengine's file backends (what lets ``s3://`` data train)."""
import glob
import os.path as osp
import re

import cv2
import numpy as np
import pytest

pytest.importorskip('mmseg')
pytest.importorskip('mmdet')

import densekit  # noqa: F401,E402  (registers everything)
from mmengine.fileio import register_backend  # noqa: E402
from mmengine.fileio.backends import BaseStorageBackend  # noqa: E402
from mmengine.registry import Registry  # noqa: E402

from densekit.mm.depth import LoadDepthMap, NYUv2Dataset  # noqa: E402
from densekit.mm.registry import deprecated_alias, register  # noqa: E402


def _walk(registry):
    yield registry
    for child in registry.children.values():
        yield from _walk(child)


def _all_entries():
    """(root registry name, scope, name, object) of every entry, OpenMMLab's imported in full."""
    import mmdet.engine  # noqa: F401
    import mmdet.evaluation  # noqa: F401
    import mmdet.models  # noqa: F401
    import mmseg.engine  # noqa: F401
    import mmseg.evaluation  # noqa: F401
    import mmseg.models  # noqa: F401
    from mmengine import registry as root
    roots = (root.MODELS, root.DATASETS, root.TRANSFORMS, root.METRICS, root.HOOKS,
             root.OPTIM_WRAPPER_CONSTRUCTORS)
    for r in roots:
        for reg in _walk(r):
            for name, obj in reg.module_dict.items():
                yield r.name, reg.scope, name, obj


def _is_densekit(obj) -> bool:
    return getattr(obj, '__module__', '').startswith('densekit')


def test_registered_names_follow_the_naming_rule():
    entries = list(_all_entries())
    theirs = {}
    for kind, _, name, obj in entries:
        if not _is_densekit(obj):
            theirs.setdefault(kind, set()).add(name.lower())
    ours = [(kind, scope, name, obj) for kind, scope, name, obj in entries
            if _is_densekit(obj) and isinstance(obj, type)]  # backbones are builder functions
    assert len(ours) > 20
    wrong = []
    for kind, scope, name, cls in ours:
        if name == 'TimmBackbone':
            continue  # a backbone: named by densekit.models' registry
        deprecated = getattr(cls, 'deprecated_for', None)
        if deprecated is not None and 'deprecated_for' in vars(cls):
            if name != cls.__name__:
                wrong.append(f'{scope}: deprecated alias {name} is class {cls.__name__}')
            continue
        plain = name[len('DenseKit'):] if name.startswith('DenseKit') else name
        if name not in (cls.__name__, 'DenseKit' + cls.__name__):
            wrong.append(f'{scope}: {name} is class {cls.__name__}')
        taken = plain.lower() in theirs.get(kind, set())
        if taken != name.startswith('DenseKit'):
            wrong.append(f"{scope}: {name} ({'OpenMMLab has' if taken else 'no OpenMMLab'} "
                         f"{kind} '{plain}')")
        if name.startswith('DK'):
            wrong.append(f'{scope}: {name} has the DK prefix')
    assert not wrong, wrong


def test_shadow_check_covers_the_scope_its_parent_and_its_children():
    parent = Registry('thing', scope='dk_test_parent')
    child = Registry('thing', parent=parent, scope='dk_test_child')

    class Thing:
        pass

    class Other:
        pass

    register(child, Thing)
    register(child, Thing)  # registering the same object again is a no-op
    assert child.get('Thing') is Thing
    with pytest.raises(KeyError, match=r"registering .*Other.* as 'Thing' in dk_test_child's thing "
                                       r"would shadow dk_test_child's .*Thing"):
        register(child, Other, 'Thing')
    register(parent, Other)
    with pytest.raises(KeyError, match="would shadow dk_test_parent's"):
        register(child, Thing, 'Other')  # the parent's entry: a lookup in the child falls back to it
    with pytest.raises(KeyError, match="would shadow dk_test_child's"):
        register(parent, Other, 'Thing')  # the child's own entry wins in its scope


def test_a_densekit_name_cannot_shadow_mmseg():
    from mmseg.registry import MODELS
    MODELS.get('DepthEstimator')  # imports mmseg's models
    with pytest.raises(KeyError, match="would shadow mmseg's"):
        register(MODELS, NYUv2Dataset, 'DepthEstimator')


def test_deprecated_name_builds_the_current_class_and_warns(tmp_path):
    from mmseg.registry import DATASETS, MODELS
    alias = DATASETS.get('DKNYUv2Dataset')
    assert issubclass(alias, NYUv2Dataset) and alias.deprecated_for == 'NYUv2Dataset'
    with pytest.warns(FutureWarning, match="'DKSILogLoss' is deprecated; use 'DenseKitSILogLoss'"):
        loss = MODELS.build(dict(type='DKSILogLoss'))
    assert isinstance(loss, MODELS.get('DenseKitSILogLoss'))

    class Current:
        def __init__(self, x):
            self.x = x

    Old = deprecated_alias(Current, 'Old')
    with pytest.warns(FutureWarning, match="'Old' is deprecated; use 'Current'"):
        assert Old(x=3).x == 3
    assert Old.__name__ == 'Old' and Old.__module__ == Current.__module__


class _MemoryBackend(BaseStorageBackend):
    """Object storage in a dict, under the prefix ``dkmem://`` (stands in for ``s3://``)."""

    files: dict = {}

    def get(self, filepath):
        try:
            return self.files[str(filepath)]
        except KeyError:
            raise FileNotFoundError(filepath) from None

    def get_text(self, filepath, encoding='utf-8'):
        return self.get(filepath).decode(encoding)

    def join_path(self, filepath, *filepaths):
        return '/'.join([str(filepath).rstrip('/'), *filepaths])

    def list_dir_or_file(self, dir_path, list_dir=True, list_file=True, suffix=None,
                         recursive=False):
        root = str(dir_path).rstrip('/') + '/'
        for path in sorted(self.files):
            if path.startswith(root) and (suffix is None or path.endswith(suffix)):
                yield path[len(root):]


register_backend('dk_test_memory', _MemoryBackend, force=True, prefixes='dkmem')


def _depth_png(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 65535, size=(12, 17), dtype=np.uint16)


def test_load_depth_map_reads_through_file_backends_with_the_same_result(tmp_path):
    raw = _depth_png(0)
    png = str(tmp_path / 'd.png')
    cv2.imwrite(png, raw)
    npy = str(tmp_path / 'd.npy')
    np.save(npy, raw.astype(np.float32))
    load = LoadDepthMap(depth_scale=256.0)
    expected = cv2.imread(png, cv2.IMREAD_UNCHANGED).astype(np.float32) / 256.0
    local = load(dict(depth_map_path=png))['gt_depth_map']
    assert local.dtype == np.float32 and np.array_equal(local, expected)
    assert np.array_equal(load(dict(depth_map_path=npy))['gt_depth_map'], expected)

    with open(png, 'rb') as f:
        _MemoryBackend.files['dkmem://bucket/d.png'] = f.read()
    remote = load(dict(depth_map_path='dkmem://bucket/d.png'))['gt_depth_map']
    assert np.array_equal(remote, expected)
    with pytest.raises(FileNotFoundError, match="cannot read depth map 'dkmem://bucket/none.png'"):
        load(dict(depth_map_path='dkmem://bucket/none.png'))
    _MemoryBackend.files['dkmem://bucket/bad.png'] = b'not a png'
    with pytest.raises(ValueError, match='does not decode'):
        load(dict(depth_map_path='dkmem://bucket/bad.png'))


def test_depth_dataset_lists_and_loads_from_object_storage(tmp_path):
    from mmengine.registry import DefaultScope
    for i in range(2):
        ok, jpg = cv2.imencode('.jpg', np.full((12, 17, 3), 40 * i, np.uint8))
        _MemoryBackend.files[f'dkmem://nyu/images/s{i}/f.jpg'] = jpg.tobytes()
        ok, png = cv2.imencode('.png', _depth_png(i))
        _MemoryBackend.files[f'dkmem://nyu/annotations/s{i}/f.png'] = png.tobytes()
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadDepthMap'), dict(type='PackSegInputs')]
    with DefaultScope.overwrite_default_scope('mmseg'):
        ds = NYUv2Dataset(data_root='dkmem://nyu', pipeline=pipeline)
        assert [d['img_path'] for d in ds.load_data_list()] == [
            'dkmem://nyu/images/s0/f.jpg', 'dkmem://nyu/images/s1/f.jpg']
        depth = ds[1]['data_samples'].gt_depth_map.data[0].numpy()
    assert np.array_equal(depth, _depth_png(1).astype(np.float32) / 1000.0)


def test_configs_use_no_deprecated_name():
    deprecated = {name for _, _, name, obj in _all_entries()
                  if isinstance(obj, type) and 'deprecated_for' in vars(obj)}
    assert {'DKNYUv2Dataset', 'DKDepthEstimator', 'DenseKitInstanceTTAModel'} <= deprecated
    configs = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs')
    used = {}
    for path in glob.glob(osp.join(configs, '**', '*.py'), recursive=True):
        with open(path) as f:
            for name in re.findall(r"type=['\"](\w+)['\"]", f.read()):
                used.setdefault(name, []).append(osp.relpath(path, configs))
    assert len(used) > 20
    stale = {name: where for name, where in used.items() if name in deprecated}
    assert not stale, stale
