"""numpy 2: densekit's COCO RLE decode equals pycocotools' C decode and warns nothing."""
import warnings

import numpy as np
import pytest

mask_utils = pytest.importorskip('pycocotools.mask')

from densekit.compat import pycocotools_np2  # noqa: E402


def _c_decode(rles):
    # pycocotools' own decoder (numpy-2 DeprecationWarning expected, hence silenced here only).
    fn = getattr(mask_utils, '_decode_c', mask_utils.decode)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        return fn(rles)


def _random_masks(rng, n, h, w):
    # Blobs of varying density, plus the edge cases: empty, full, single pixel, last pixel set.
    masks = [(rng.random((h, w)) < p).astype(np.uint8) for p in rng.uniform(0.01, 0.99, n)]
    masks += [np.zeros((h, w), np.uint8), np.ones((h, w), np.uint8)]
    one = np.zeros((h, w), np.uint8)
    one[h // 2, w // 3] = 1
    last = np.zeros((h, w), np.uint8)
    last[-1, -1] = 1
    return masks + [one, last]


@pytest.mark.parametrize('h, w', [(1, 1), (7, 13), (97, 131), (480, 640)])
def test_decode_matches_pycocotools(h, w):
    rng = np.random.default_rng(h * w)
    masks = _random_masks(rng, 4, h, w)
    rles = mask_utils.encode(np.asfortranarray(np.stack(masks, axis=2)))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        ours = pycocotools_np2.decode(rles)
        single = pycocotools_np2.decode(rles[0])
    np.testing.assert_array_equal(ours, np.stack(masks, axis=2))
    np.testing.assert_array_equal(ours, _c_decode(rles))
    np.testing.assert_array_equal(single, masks[0])
    assert ours.dtype == np.uint8 and ours.shape == (h, w, len(masks))


def test_polygons_and_uncompressed_counts():
    h, w = 60, 80
    polys = [[10.5, 3, 70, 9.25, 55, 50, 4, 41], [1, 1, 20, 1, 20, 20]]
    rles = mask_utils.frPyObjects(polys, h, w)
    np.testing.assert_array_equal(pycocotools_np2.decode(rles), _c_decode(rles))
    merged = mask_utils.merge(rles)
    np.testing.assert_array_equal(pycocotools_np2.decode(merged), _c_decode(merged))
    # Uncompressed RLE (a list of counts, as crowd annotations store it) and str counts.
    m = pycocotools_np2.decode(merged)
    flat = m.T.reshape(-1)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    np.testing.assert_array_equal(pycocotools_np2.decode(dict(size=[h, w], counts=counts)), m)
    as_str = dict(size=merged['size'], counts=merged['counts'].decode('ascii'))
    np.testing.assert_array_equal(pycocotools_np2.decode(as_str), m)


def test_invalid_rle_is_named():
    with pytest.raises(ValueError, match=r'counts sum to 5 for size \[2, 3\]'):
        pycocotools_np2.decode(dict(size=[2, 3], counts=[2, 3]))


def test_installed_by_densekit():
    import densekit  # noqa: F401
    assert mask_utils.decode is pycocotools_np2.decode
    rle = mask_utils.frPyObjects([[1, 1, 9, 1, 9, 9, 1, 9]], 12, 12)
    with warnings.catch_warnings():
        warnings.simplefilter('error', DeprecationWarning)
        m = mask_utils.decode(rle)
    assert m.shape == (12, 12, 1) and m.sum() == int(mask_utils.area(rle)[0])
