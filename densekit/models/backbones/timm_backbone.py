"""Any timm model as a dense-prediction backbone, through timm's ``features_only`` API.

timm: R. Wightman, "PyTorch Image Models", https://github.com/huggingface/pytorch-image-models.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import timm
import torch
import torch.nn as nn

from densekit.models.backbones.base import BackboneMixin
from densekit.models.registry import register_backbone
from densekit.utils.download import resolve_checkpoint

__all__ = ['TimmBackbone']


@register_backbone(name='TimmBackbone')
class TimmBackbone(BackboneMixin, nn.Module):
    """Wraps ``timm.create_model(model_name, features_only=True)``.

    ``feature_info`` describes the returned levels (timm's ``features_only`` model builds only
    those; ``module`` names are timm's, inside ``self.model``); freezing and ``norm_eval`` come
    from :class:`BackboneMixin`.

    Args:
        model_name: any timm model name that supports ``features_only``.
        out_indices: timm feature levels to return (timm's indexing: see
            ``timm.create_model(name, features_only=True).feature_info``).
        frozen_stages: -1 freezes nothing; ``k >= 0`` freezes every module that runs before the
            module producing feature level ``k`` (0: the stem only, as in mmdet's ResNet).
            Frozen modules stay in eval mode during training.
        norm_eval: keep every BatchNorm in eval mode while training (common when fine-tuning
            with small batches).
        pretrained: path or http(s) URL of a checkpoint (timm or official format; timm's own
            ``checkpoint_filter_fn`` adapts it); a URL is downloaded once into densekit's cache
            (:mod:`densekit.utils.download`). ``True`` lets timm fetch its default weights.
        drop_path_rate: stochastic depth, passed to timm when the model takes it.
        **model_kwargs: further keyword arguments for ``timm.create_model``.
    """

    def __init__(self, *,
                 model_name: str,
                 out_indices: Sequence[int] = (1, 2, 3, 4),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 pretrained: str | bool | None = None,
                 drop_path_rate: float | None = None,
                 **model_kwargs) -> None:
        super().__init__()
        if drop_path_rate is not None:
            model_kwargs['drop_path_rate'] = drop_path_rate
        kwargs = dict(features_only=True, out_indices=tuple(out_indices), **model_kwargs)
        if pretrained is True:
            kwargs.update(pretrained=True)
        elif pretrained:
            pretrained = resolve_checkpoint(pretrained)
            if not os.path.isfile(pretrained):
                # timm raises a FileNotFoundError with an empty message (the path only in a log)
                raise FileNotFoundError(f"TimmBackbone({model_name!r}): pretrained checkpoint "
                                        f"'{pretrained}' does not exist")
            kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(pretrained)))
        try:
            self.model = timm.create_model(model_name, **kwargs)
        except RuntimeError as e:
            if 'Unknown model' in str(e) or 'features_only' in str(e):
                raise ValueError(f"TimmBackbone: cannot build timm model '{model_name}' with "
                                 f"features_only=True, out_indices={tuple(out_indices)}: {e}") from e
            raise
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        info = self.model.feature_info
        self.feature_info = [dict(num_chs=c, reduction=r, module=m)
                             for c, r, m in zip(info.channels(), info.reduction(), info.module_name())]
        self._frozen = self._timm_frozen_modules(frozen_stages)
        self._freeze_stages()

    def frozen_modules(self) -> Iterable[nn.Module]:
        return self._frozen

    def _timm_frozen_modules(self, frozen_stages: int) -> list[nn.Module]:
        if frozen_stages < 0:
            return []
        # timm counts stride-2 stems as feature levels (e.g. resnet's 'act1'); mmdet's stages
        # start at stride 4, so stage i is the i-th level with reduction >= 4.
        levels = [i['module'].replace('.', '_') for i in self.model.feature_info.info
                  if i['reduction'] >= 4]
        children = list(self.model.named_children())
        names = [n for n, _ in children]
        if frozen_stages == 0:
            stop = names.index(levels[0])  # the stem: everything before stage 1
        else:
            stop = names.index(levels[min(frozen_stages, len(levels)) - 1]) + 1
        return [m for _, m in children[:stop]]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, C, H, W]`` -> one NCHW map per timm feature level of ``out_indices``."""
        feats = self.model(x)
        # A few timm families (e.g. some ViT-likes) emit NHWC; the contract is NCHW.
        out = []
        for f, info in zip(feats, self.feature_info):
            if f.ndim == 4 and f.shape[1] != info['num_chs'] and f.shape[-1] == info['num_chs']:
                f = f.permute(0, 3, 1, 2).contiguous()
            out.append(f)
        return tuple(out)
