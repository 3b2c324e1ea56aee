"""``TestPadDetDataPreprocessor``: its ``test_batch_augments`` pad test batches to a fixed size
(kMaX-DeepLab's official test input) and leave training batches to ``batch_augments``."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip('mmdet')

import densekit  # noqa: E402,F401
from mmdet.registry import MODELS  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402


def _preprocessor(**kwargs):
    init_default_scope('mmdet')
    return MODELS.build(dict(type='TestPadDetDataPreprocessor', mean=[0.0, 0.0, 0.0],
                             std=[2.0, 2.0, 2.0], **kwargs))


def _batch():
    images = [torch.full((3, 20, 30), 4, dtype=torch.uint8), torch.full((3, 25, 10), 4, dtype=torch.uint8)]
    samples = [DetDataSample(metainfo=dict(img_shape=tuple(im.shape[1:]))) for im in images]
    return dict(inputs=images, data_samples=samples)


def test_test_batches_are_zero_padded_after_normalisation_to_the_fixed_size():
    pad = dict(type='BatchFixedSizePad', size=(33, 41), img_pad_value=0, pad_mask=False,
               pad_seg=False)
    out = _preprocessor(test_batch_augments=[pad])(_batch(), training=False)
    inputs = out['inputs']
    assert tuple(inputs.shape) == (2, 3, 33, 41)
    assert (inputs[0, :, :20, :30] == 2).all() and (inputs[1, :, :25, :10] == 2).all()
    assert inputs[0, :, 20:].eq(0).all() and inputs[0, :, :, 30:].eq(0).all()
    for sample, shape in zip(out['data_samples'], ((20, 30), (25, 10))):
        assert sample.batch_input_shape == (33, 41) and sample.pad_shape == (33, 41)
        assert tuple(sample.img_shape) == shape


def test_training_batches_ignore_the_test_augments():
    pad = dict(type='BatchFixedSizePad', size=(33, 41), pad_mask=False, pad_seg=False)
    out = _preprocessor(test_batch_augments=[pad])(_batch(), training=True)
    assert tuple(out['inputs'].shape) == (2, 3, 25, 30)  # the batch's largest sides
    assert out['data_samples'][0].batch_input_shape == (25, 30)


def test_test_batch_augments_must_be_a_list():
    with pytest.raises(TypeError, match='test_batch_augments must be a list'):
        _preprocessor(test_batch_augments=dict(type='BatchFixedSizePad', size=(8, 8)))
