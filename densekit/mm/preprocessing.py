"""Data preprocessors (mmdet ``MODELS``).

:class:`TestPadDetDataPreprocessor` is mmdet's ``DetDataPreprocessor`` with batch augments that
also run at test time. mmdet applies ``batch_augments`` in training only, so a model whose
official evaluation pads every image to one fixed size (kMaX-DeepLab zero-pads each normalised
test image to 1281 x 1281, ``INPUT.IMAGE_SIZE``, before the network) would otherwise see inputs
padded only to the batch's largest image: a different input to attention that spans whole rows
and columns, and a different padded width for the align-corners rule of its post-processing.
"""
from __future__ import annotations

from typing import Sequence

from mmdet.models.data_preprocessors import DetDataPreprocessor
from mmdet.registry import MODELS

from densekit.mm.registry import register as _register


class TestPadDetDataPreprocessor(DetDataPreprocessor):
    """``DetDataPreprocessor`` plus ``test_batch_augments``, run on the normalised, padded batch
    when not training (after ``batch_augments`` would run in training).

    Args:
        test_batch_augments: batch augment configs (e.g. ``[dict(type='BatchFixedSizePad',
            size=(1281, 1281), img_pad_value=0, pad_mask=False, pad_seg=False)]``); they
            update ``batch_input_shape`` / ``pad_shape`` of the data samples as in training.
        **kwargs: as ``DetDataPreprocessor``.
    """

    def __init__(self, test_batch_augments: Sequence[dict] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if test_batch_augments is not None and not isinstance(test_batch_augments, (list, tuple)):
            raise TypeError('test_batch_augments must be a list of batch augment configs, got '
                            f'{type(test_batch_augments).__name__}: {test_batch_augments!r}')
        self.test_batch_augments = ([MODELS.build(cfg) for cfg in test_batch_augments]
                                    if test_batch_augments else [])

    def forward(self, data: dict, training: bool = False) -> dict:
        data = super().forward(data, training)
        if training or not self.test_batch_augments:
            return data
        inputs, data_samples = data['inputs'], data['data_samples']
        for augment in self.test_batch_augments:
            inputs, data_samples = augment(inputs, data_samples)
        return {'inputs': inputs, 'data_samples': data_samples}


def register() -> None:
    _register(MODELS, TestPadDetDataPreprocessor)
