"""Seed backbones that timm defines, as first-class dense-prediction backbones.

timm (R. Wightman, "PyTorch Image Models", https://github.com/huggingface/pytorch-image-models)
holds faithful definitions (and the ImageNet weights) of these papers' classification models:

* DaViT: M. Ding et al., "DaViT: Dual Attention Vision Transformers", ECCV 2022, arXiv 2204.03645.
* Twins (PCPVT / SVT): X. Chu et al., "Twins: Revisiting the Design of Spatial Attention in Vision
  Transformers", NeurIPS 2021, arXiv 2104.13840.
* CoaT-Lite: W. Xu et al., "Co-Scale Conv-Attentional Image Transformers", ICCV 2021, arXiv 2104.06399.
* Next-ViT: J. Li et al., "Next-ViT: Next Generation Vision Transformer for Efficient Deployment in
  Realistic Industrial Scenarios", arXiv 2207.05501.
* MetaFormer baselines (PoolFormerV2, ConvFormer, CAFormer): W. Yu et al., "MetaFormer Baselines for
  Vision", TPAMI 2024, arXiv 2210.13452.
* InceptionNeXt: W. Yu et al., "InceptionNeXt: When Inception Meets ConvNeXt", CVPR 2024, arXiv 2303.16900.
* XCiT: A. El-Nouby et al., "XCiT: Cross-Covariance Image Transformers", NeurIPS 2021, arXiv 2106.09681.
* BoTNet: A. Srinivas et al., "Bottleneck Transformers for Visual Recognition", CVPR 2021, arXiv 2101.11605.
* LambdaNetworks: I. Bello, "LambdaNetworks: Modeling Long-Range Interactions Without Attention",
  ICLR 2021, arXiv 2102.08602.

Here each wraps the full timm model (classifier removed; parameter names ``model.<timm name>``, so
timm checkpoints load through a prefix) on densekit's backbone contract: ``out_indices`` are stage
indices 0..3 (strides 4..32), ``feature_info`` describes every stage, ``frozen_stages`` /
``norm_eval`` / ``with_cp`` (densekit's :func:`~densekit.layers.run_blocks` over timm's blocks) and
output norms where the official dense code has them (DaViT: one LayerNorm per output).

Dense-prediction adaptations, per family:

* XCiT has one stride (16). As in its official detection / segmentation backbone, the outputs of
  blocks 4, 6, 8 and 12 (of 12) become strides 4 / 8 / 16 / 32 through two transposed convolutions
  (with BatchNorm + GELU between them), one transposed convolution, identity and 2x2 max pooling
  (``necks``); the class-attention layers are not built.
* CoaT-Lite: timm's patch embeddings check the image size; here every stage measures its map, and
  the input of each patch embedding is zero-padded at the bottom / right to its stride.
* Lambda-ResNet: the strided lambda blocks average-pool while their shortcut convolves, so odd maps
  disagree; the input is zero-padded at the bottom / right to a multiple of 32 and the outputs
  cropped to ``ceil(H / s)``.
* BoTNet's attention has position tables of one feature size: the model is built for ``img_size``
  (the largest input, e.g. the crop / fixed pad size of the config); a smaller input is zero-padded
  at the bottom / right to ``img_size`` (what a fixed-size ``Pad`` does) and the outputs cropped to
  ``ceil(H / s)``; a larger one is a ``ValueError`` naming both sizes. ``img_size`` must be a
  multiple of 32.
* InceptionNeXt's stem and downsampling layers are unpadded strided convolutions (floor):
  ``size_divisibility = 32``.
"""
from __future__ import annotations

import math
import os
from typing import Callable, Dict, Iterable, List, Mapping, Sequence

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d as TimmLayerNorm2d
from timm.models.byobnet import ByobNet, ByoBlockCfg, ByoModelCfg
from timm.models.coat import CoaT
from timm.models.davit import DaVit
from timm.models.inception_next import MetaNeXt
from timm.models.metaformer import Attention, LayerNorm2dNoBias, LayerNormNoBias, MetaFormer, Pooling, SepConv
from timm.models.nextvit import NextViT
from timm.models.twins import Twins
from timm.models.xcit import Xcit

from densekit.layers import LayerNorm2d, run_blocks
from densekit.models.backbones.base import BackboneMixin
from densekit.models.convert import register_converter, strip_wrapper_prefix
from densekit.models.registry import register_backbone
from densekit.utils.download import resolve_checkpoint

__all__ = ['TimmSeedBackbone', 'checkpoint_filter_fn']


class _RunBlocks(nn.Sequential):
    """An ``nn.Sequential`` of blocks that runs them through :func:`run_blocks` (``with_cp``).

    timm's stages call ``self.blocks(x)``; swapping the class of that ``Sequential`` to this one
    keeps every parameter name and makes the stage checkpoint its blocks when ``with_cp`` is set.
    """

    with_cp: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_blocks(self, x, self.with_cp)


def _checkpointable(seq: nn.Sequential, with_cp: bool) -> None:
    seq.__class__ = _RunBlocks
    seq.with_cp = with_cp


def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad the bottom / right of an NCHW map to a multiple of ``multiple``."""
    H, W = x.shape[-2:]
    ph, pw = (-H) % multiple, (-W) % multiple
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


class TimmSeedBackbone(BackboneMixin, nn.Module):
    """A timm model on densekit's backbone contract (see the module docstring).

    Subclasses say which modules form the stem and each stage (``_stem_parts`` /
    ``_stage_parts``) and how a stage runs (``_run_stage``).

    Args:
        model: the timm model (classifier removed by the subclass).
        channels: output channels of the four stages.
        out_indices: stages to return (0..3, strides 4, 8, 16, 32).
        out_norm: one LayerNorm per returned map (the official dense code of DaViT has them).
        frozen_stages: -1 nothing, 0 the stem, k the stem and stages 0..k-1 (and their norms).
        norm_eval: keep every BatchNorm in eval mode while training.
        with_cp: recompute each block in the backward pass.
    """

    size_divisibility = 0

    def __init__(self, *, model: nn.Module, channels: Sequence[int] | None, out_indices: Sequence[int] = (0, 1, 2, 3),
                 out_norm: bool = False, frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False) -> None:
        super().__init__()
        self.model = model
        self.with_cp = with_cp
        channels = self._prepare(model, with_cp) or channels
        self._init_contract(num_stages=len(channels), out_indices=out_indices, frozen_stages=frozen_stages,
                            norm_eval=norm_eval)
        self.feature_info = [dict(num_chs=int(c), reduction=4 * 2 ** i, module=self._stage_module_name(i))
                             for i, c in enumerate(channels)]
        self._init_out_norms(LayerNorm2d if out_norm else None)
        self._freeze_stages()

    # -- what a family defines
    def _prepare(self, model: nn.Module, with_cp: bool) -> Sequence[int] | None:
        """Adapts ``model`` (``with_cp``, extra modules); may return the stage channels."""
        return None

    def _stage_module_name(self, i: int) -> str:
        return f'model.stages.{i}'

    def _stem_parts(self) -> List[nn.Module]:
        raise NotImplementedError

    def _stage_parts(self, i: int) -> List[nn.Module]:
        raise NotImplementedError

    def _run_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.stem(x)

    def _run_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.model.stages[i](x)

    # -- the contract
    def frozen_modules(self) -> Iterable[nn.Module]:
        k = self.frozen_stages
        if k < 0:
            return []
        mods = list(self._stem_parts())
        for i in range(k):
            mods += self._stage_parts(i)
        return mods + [m for i, m in self.out_norms.items() if int(i) < k]

    def _outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        x = self._run_stem(x)
        for i in range(self.out_indices[-1] + 1):
            x = self._run_stage(i, x)
            if i in self.out_indices:
                outs.append(self.out_norms[str(i)](x) if str(i) in self.out_norms else x)
        return tuple(outs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``[B, 3, H, W]`` -> one NCHW map per out index, ``ceil(H / s)`` rows (floor for
        ``size_divisibility = 32``)."""
        return self._outputs(x)


class _StagedTimm(TimmSeedBackbone):
    """timm models with ``stem`` and ``stages[i]`` whose blocks are a ``Sequential`` (``stages[i].blocks``
    or the stage itself): DaViT, MetaFormer, InceptionNeXt, Next-ViT, ByobNet (BoTNet / Lambda)."""

    def _prepare(self, model: nn.Module, with_cp: bool) -> None:
        for stage in model.stages:
            _checkpointable(stage.blocks if hasattr(stage, 'blocks') else stage, with_cp)

    def _stem_parts(self) -> List[nn.Module]:
        return [self.model.stem]

    def _stage_parts(self, i: int) -> List[nn.Module]:
        return [self.model.stages[i]]


class _FloorStaged(_StagedTimm):
    size_divisibility = 32


class _PaddedStaged(_StagedTimm):
    """Pads the input to a multiple of 32 and crops the outputs to ``ceil(H / s)`` (Lambda-ResNet)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        H, W = x.shape[-2:]
        outs = self._outputs(_pad_to(x, 32))
        return tuple(o[..., :math.ceil(H / (4 * 2 ** i)), :math.ceil(W / (4 * 2 ** i))]
                     for o, i in zip(outs, self.out_indices))


class _FixedSizeStaged(_StagedTimm):
    """BoTNet: built for ``img_size``; smaller inputs are padded to it, larger ones refused."""

    def __init__(self, *, model: nn.Module, img_size: tuple, **kwargs) -> None:
        super().__init__(model=model, **kwargs)
        self.img_size = tuple(img_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        H, W = x.shape[-2:]
        th, tw = self.img_size
        if H > th or W > tw:
            raise ValueError(f'{type(self.model).__name__} (BoTNet) was built for img_size={self.img_size} '
                             f'(its attention position tables cover that input size / 16 and / 32); got an '
                             f'input of {H}x{W}: build it with img_size >= the largest (padded) input of the '
                             f'config, a multiple of 32')
        outs = self._outputs(F.pad(x, (0, tw - W, 0, th - H)))
        return tuple(o[..., :math.ceil(H / (4 * 2 ** i)), :math.ceil(W / (4 * 2 ** i))]
                     for o, i in zip(outs, self.out_indices))


class _TwinsBackbone(TimmSeedBackbone):
    """Twins: ``patch_embeds[i]`` -> ``blocks[i]`` (token blocks, the position generator ``pos_block[i]``
    after the first one)."""

    def _stage_module_name(self, i: int) -> str:
        return f'model.blocks.{i}'

    def _stem_parts(self) -> List[nn.Module]:
        return [self.model.patch_embeds[0]]

    def _stage_parts(self, i: int) -> List[nn.Module]:
        parts = [self.model.blocks[i], self.model.pos_block[i]]
        return parts if i == 0 else [self.model.patch_embeds[i]] + parts

    def _run_stem(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _run_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        embed = m.patch_embeds[i]
        x = _pad_to(x, embed.patch_size[0])
        x, size = embed(x)
        x = m.pos_drops[i](x)
        blocks = m.blocks[i]
        x = run_blocks(blocks[:1], x, self.with_cp, size)
        x = m.pos_block[i](x, size)
        x = run_blocks(blocks[1:], x, self.with_cp, size)
        return x.reshape(x.shape[0], *size, -1).permute(0, 3, 1, 2).contiguous()


class _CoaTLiteBackbone(TimmSeedBackbone):
    """CoaT-Lite: ``patch_embed{i}`` -> class token + ``serial_blocks{i}`` (no parallel blocks)."""

    def _stage_module_name(self, i: int) -> str:
        return f'model.serial_blocks{i + 1}'

    def _stem_parts(self) -> List[nn.Module]:
        return [self.model.patch_embed1]

    def _prepare(self, model: nn.Module, with_cp: bool) -> None:
        # each stage's class token is a bare parameter of the model: a holder freezes it with its stage
        object.__setattr__(self, '_cls_holders', [_ClsTokenHolder(model, f'cls_token{i + 1}') for i in range(4)])

    def _stage_parts(self, i: int) -> List[nn.Module]:
        m = self.model
        parts = [getattr(m, f'serial_blocks{i + 1}'), self._cls_holders[i]]
        return parts if i == 0 else [getattr(m, f'patch_embed{i + 1}')] + parts

    def _run_stem(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _run_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        embed = getattr(m, f'patch_embed{i + 1}')
        x = embed.proj(_pad_to(x, embed.patch_size[0]))
        B, _, H, W = x.shape
        x = embed.norm(x.flatten(2).transpose(1, 2))
        cls = getattr(m, f'cls_token{i + 1}')
        x = torch.cat((cls.expand(B, -1, -1), x), dim=1)
        x = run_blocks(getattr(m, f'serial_blocks{i + 1}'), x, self.with_cp, (H, W))
        return x[:, 1:].reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()


class _ClsTokenHolder(nn.Module):
    """Lets ``frozen_modules`` freeze a bare parameter (a CoaT class token) like a module; it is not
    registered as a child, so parameter names are unchanged."""

    def __init__(self, owner: nn.Module, name: str) -> None:
        super().__init__()
        object.__setattr__(self, '_owner', owner)
        self._param_name = name

    def parameters(self, recurse: bool = True):
        yield getattr(self._owner, self._param_name)


class _XCiTStage(nn.Module):
    """A run of XCiT blocks on an NCHW map (the blocks work on ``[B, N, C]`` tokens)."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.with_cp = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        t = run_blocks(self.blocks, x.flatten(2).transpose(1, 2), self.with_cp, H, W)
        return t.transpose(1, 2).reshape(B, C, H, W)


class _XCiTBackbone(TimmSeedBackbone):
    """XCiT at stride 16 with the official simple pyramid (``necks``) to strides 4..32.

    The 12 (or ``depth``) blocks are regrouped into four stages ending after the blocks of
    ``stage_ends`` (official: 4, 6, 8, 12 of 12); the blocks keep timm's names (``model.blocks.<j>``)
    because the stages hold the same modules.
    """

    def __init__(self, *, model: nn.Module, stage_ends: Sequence[int], **kwargs) -> None:
        self._stage_ends = tuple(stage_ends)
        super().__init__(model=model, **kwargs)

    def _prepare(self, model: nn.Module, with_cp: bool) -> List[int]:
        model.cls_token = None  # serves the class-attention layers only
        starts = (0,) + self._stage_ends[:-1]
        stages = [_XCiTStage([model.blocks[j] for j in range(a, b)]) for a, b in zip(starts, self._stage_ends)]
        for s in stages:
            s.with_cp = with_cp
        object.__setattr__(self, '_xcit_stages', stages)  # views on model.blocks, not extra parameters
        dim = model.embed_dim
        # official XCiT detection / segmentation backbone (patch size 16): fpn1..fpn4
        self.necks = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(dim, dim, 2, stride=2), nn.BatchNorm2d(dim), nn.GELU(),
                          nn.ConvTranspose2d(dim, dim, 2, stride=2)),
            nn.ConvTranspose2d(dim, dim, 2, stride=2),
            nn.Identity(),
            nn.MaxPool2d(2, stride=2, ceil_mode=True),  # = the official floor on its inputs (multiples of 32)
        ])
        return [dim] * 4

    def _stage_module_name(self, i: int) -> str:
        return f'necks.{i}'

    def _stem_parts(self) -> List[nn.Module]:
        return [self.model.patch_embed, self.model.pos_embed] if self.model.pos_embed is not None \
            else [self.model.patch_embed]

    def _stage_parts(self, i: int) -> List[nn.Module]:
        return [self._xcit_stages[i], self.necks[i]]

    def _run_stem(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        B = x.shape[0]
        t, (Hp, Wp) = m.patch_embed(x)
        if m.pos_embed is not None:
            t = t + m.pos_embed(B, Hp, Wp).reshape(B, -1, t.shape[1]).permute(0, 2, 1)
        t = m.pos_drop(t)
        return t.transpose(1, 2).reshape(B, -1, Hp, Wp)

    def _outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        H, W = x.shape[-2:]
        outs = []
        x = self._run_stem(x)
        for i in range(self.out_indices[-1] + 1):
            x = self._xcit_stages[i](x)
            if i in self.out_indices:
                # the stride-16 map has ceil(H / 16) rows; the upsampled ones are cropped to ceil(H / s)
                s = 4 * 2 ** i
                y = self.necks[i](x)[..., :math.ceil(H / s), :math.ceil(W / s)]
                outs.append(self.out_norms[str(i)](y) if str(i) in self.out_norms else y)
        return tuple(outs)


class _TinyNextViT(NextViT):
    """Next-ViT narrowed for the ``nextvit_test`` variant: timm fixes Next-ViT's widths (96..1024) in
    ``__init__``; a transformer block's attention takes 32 of its channels, the convolutional
    attention the rest."""

    stage_out_chs = property(lambda self: [[16], [40], [32, 32, 32, 32, 40], [40]], lambda self, value: None)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)


# Official / timm checkpoints -> densekit keys

_CLASSIFIER_PREFIXES = ('head.', 'head_dist.', 'fc_norm.', 'cls_attn_blocks.', 'final_conv.')
_CLASSIFIER_KEYS = ('cls_token',)  # XCiT's class token serves the class-attention layers only


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """timm-format checkpoints (and detector / segmentor checkpoints of these backbones) -> our keys:
    timm's names under ``model.``; the classifier (head, final norm of the classifier, XCiT's class
    attention) is dropped. Our own keys (``model.*``, ``out_norms.*``, ``necks.*``) pass through.
    Official (non-timm) releases: load them with ``pretrained=PATH``, which goes through timm's own
    per-family conversion."""
    sd = strip_wrapper_prefix(state_dict)
    out = {}
    for key, value in sd.items():
        if key.startswith(('model.', 'out_norms.', 'necks.')):
            out[key] = value
        elif key.startswith(_CLASSIFIER_PREFIXES) or key in _CLASSIFIER_KEYS or key.startswith('norm.'):
            continue
        else:
            out['model.' + key] = value
    return out


register_converter('timm_seed', checkpoint_filter_fn)


# Builders

def _timm_kwargs(pretrained) -> dict:
    if pretrained is True:
        return dict(pretrained=True)
    if pretrained:
        path = resolve_checkpoint(pretrained)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"pretrained checkpoint '{path}' does not exist")
        return dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    return {}


def _strip_classifier(model: nn.Module, names: Sequence[str]) -> nn.Module:
    for n in names:
        if hasattr(model, n) and isinstance(getattr(model, n), nn.Module):
            setattr(model, n, nn.Identity())
    return model


_CONTRACT = ('out_indices', 'frozen_stages', 'norm_eval', 'with_cp', 'out_norm')


def _split(kwargs: dict) -> tuple[dict, dict]:
    """``kwargs`` -> (contract arguments, timm arguments); ``drop_path_rate`` etc. go to timm."""
    contract = {k: kwargs.pop(k) for k in _CONTRACT if k in kwargs}
    return contract, kwargs


def _create_seed(cls: type, timm_name: str | Callable[..., nn.Module], kwargs: dict, *, channels: Sequence[int],
           strip: Sequence[str], out_norm: bool = False, arch: dict | None = None, **extra) -> TimmSeedBackbone:
    contract, timm_kwargs = _split(dict(kwargs))
    contract.setdefault('out_norm', out_norm)
    pretrained = timm_kwargs.pop('pretrained', None)
    timm_kwargs.pop('init_cfg', None)
    if callable(timm_name):  # the tiny test variants build timm's class directly
        model = timm_name(**(arch or {}), **timm_kwargs)
    else:
        model = timm.create_model(timm_name, **_timm_kwargs(pretrained), **(arch or {}), **timm_kwargs)
    return cls(model=_strip_classifier(model, strip), channels=channels, **contract, **extra)


def _twins_channels(model_name: str) -> List[int]:
    return {'twins_svt_small': [64, 128, 256, 512], 'twins_pcpvt_small': [64, 128, 320, 512]}[model_name]


@register_backbone(name='davit_tiny')
def davit_tiny(**kwargs) -> TimmSeedBackbone:
    """DaViT-T (28.3M params), with the per-output LayerNorms of its official dense code."""
    kwargs.setdefault('drop_path_rate', 0.1)
    return _create_seed(_StagedTimm, 'davit_tiny', kwargs, channels=(96, 192, 384, 768), strip=('head', 'norm_pre'),
                  out_norm=True)


@register_backbone(name='twins_svt_small')
def twins_svt_small(**kwargs) -> TimmSeedBackbone:
    """Twins-SVT-S (24M params); like the official dense code, no output norms."""
    kwargs.setdefault('drop_path_rate', 0.2)
    return _create_seed(_TwinsBackbone, 'twins_svt_small', kwargs, channels=_twins_channels('twins_svt_small'),
                  strip=('head', 'norm'))


@register_backbone(name='twins_pcpvt_small')
def twins_pcpvt_small(**kwargs) -> TimmSeedBackbone:
    """Twins-PCPVT-S (24.1M params); like the official dense code, no output norms."""
    kwargs.setdefault('drop_path_rate', 0.2)
    return _create_seed(_TwinsBackbone, 'twins_pcpvt_small', kwargs, channels=_twins_channels('twins_pcpvt_small'),
                  strip=('head', 'norm'))


@register_backbone(name='coat_lite_small')
def coat_lite_small(**kwargs) -> TimmSeedBackbone:
    """CoaT-Lite Small (20M params)."""
    return _create_seed(_CoaTLiteBackbone, 'coat_lite_small', kwargs, channels=(64, 128, 320, 512),
                  strip=('head', 'norm4'))


@register_backbone(name='nextvit_small')
def nextvit_small(**kwargs) -> TimmSeedBackbone:
    """Next-ViT-S (31.7M params); the official detection configs use no extra output norms."""
    kwargs.setdefault('drop_path_rate', 0.2)
    return _create_seed(_StagedTimm, 'nextvit_small', kwargs, channels=(96, 256, 512, 1024), strip=('head', 'norm'))


@register_backbone(name='caformer_s18')
def caformer_s18(**kwargs) -> TimmSeedBackbone:
    """CAFormer-S18 (26M params): separable-convolution stages 0-1, attention stages 2-3."""
    kwargs.setdefault('drop_path_rate', 0.15)
    return _create_seed(_StagedTimm, 'caformer_s18', kwargs, channels=(64, 128, 320, 512), strip=('head',))


@register_backbone(name='convformer_s18')
def convformer_s18(**kwargs) -> TimmSeedBackbone:
    """ConvFormer-S18 (27M params): separable-convolution token mixers."""
    kwargs.setdefault('drop_path_rate', 0.2)
    return _create_seed(_StagedTimm, 'convformer_s18', kwargs, channels=(64, 128, 320, 512), strip=('head',))


@register_backbone(name='poolformerv2_s12')
def poolformerv2_s12(**kwargs) -> TimmSeedBackbone:
    """PoolFormerV2-S12 (12M params): pooling token mixers."""
    kwargs.setdefault('drop_path_rate', 0.1)
    return _create_seed(_StagedTimm, 'poolformerv2_s12', kwargs, channels=(64, 128, 320, 512), strip=('head',))


@register_backbone(name='inception_next_tiny')
def inception_next_tiny(**kwargs) -> TimmSeedBackbone:
    """InceptionNeXt-T (28M params)."""
    kwargs.setdefault('drop_path_rate', 0.1)
    return _create_seed(_FloorStaged, 'inception_next_tiny', kwargs, channels=(96, 192, 384, 768), strip=('head',))


@register_backbone(name='xcit_small_12_p16')
def xcit_small_12_p16(**kwargs) -> TimmSeedBackbone:
    """XCiT-S12/16 (26M params) with the official simple pyramid from blocks 4, 6, 8, 12."""
    kwargs.setdefault('drop_path_rate', 0.05)
    return _create_seed(_XCiTBackbone, 'xcit_small_12_p16_224', kwargs, channels=None,
                  strip=('head', 'norm', 'cls_attn_blocks'), stage_ends=(4, 6, 8, 12))


@register_backbone(name='botnet26t')
def botnet26t(*, img_size: Sequence[int] | int = (1024, 1024), **kwargs) -> TimmSeedBackbone:
    """BoTNet-26t (12.5M params at 256) for inputs up to ``img_size`` (a multiple of 32; the
    module docstring says why). The default 1024 is the BoTNet paper's Mask R-CNN input size."""
    img_size = _fixed_size(img_size)
    return _create_seed(_FixedSizeStaged, 'botnet26t_256', kwargs, channels=(256, 512, 1024, 2048), strip=('head',),
                  arch=dict(img_size=img_size), img_size=img_size)


@register_backbone(name='lambda_resnet26t')
def lambda_resnet26t(**kwargs) -> TimmSeedBackbone:
    """Lambda-ResNet-26t (10.9M params; local-context lambda layers, any input size)."""
    return _create_seed(_PaddedStaged, 'lambda_resnet26t', kwargs, channels=(256, 512, 1024, 2048), strip=('head',))


def _fixed_size(img_size) -> tuple:
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(int(s) for s in img_size)
    if len(size) != 2 or any(s <= 0 or s % 32 for s in size):
        raise ValueError(f'img_size={img_size!r}: BoTNet needs a positive (H, W), each a multiple of 32')
    return size


# Tiny variants (not published models): the contract test runs each family in seconds.

def _davit_test_model(**kw):
    return DaVit(depths=(1, 1, 1, 1), embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 8), **kw)


def _twins_test_model(block: str):
    def make(**kw):
        args = dict(embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 8), mlp_ratios=(2, 2, 2, 2),
                    sr_ratios=(8, 4, 2, 1))
        if block == 'svt':  # alternating locally-grouped (window 7) and global sub-sampled blocks
            args.update(depths=(2, 2, 2, 2), wss=(7, 7, 7, 7))
        else:
            args.update(depths=(1, 1, 1, 1))
        return Twins(**args, **kw)
    return make


def _coat_test_model(**kw):
    return CoaT(patch_size=4, embed_dims=(32, 32, 64, 64), serial_depths=(1, 1, 1, 1), parallel_depth=0,
                num_heads=8, mlp_ratios=(2, 2, 2, 2), **kw)


def _nextvit_test_model(**kw):
    return _TinyNextViT(in_chans=3, stem_chs=(16, 16, 16), depths=(1, 1, 5, 1), head_dim=8, **kw)


def _metaformer_test_model(**kw):
    return MetaFormer(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128),
                      token_mixers=(Pooling, SepConv, Attention, Attention),
                      norm_layers=(TimmLayerNorm2d, LayerNorm2dNoBias, LayerNormNoBias, LayerNormNoBias), **kw)


def _inception_next_test_model(**kw):
    return MetaNeXt(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), **kw)


def _xcit_test_model(**kw):
    return Xcit(patch_size=16, embed_dim=32, depth=4, num_heads=2, mlp_ratio=2, eta=1.0, tokens_norm=True, **kw)


def _byob_test_model(attn: str):
    def make(img_size=None, **kw):
        blocks = (ByoBlockCfg(type='bottle', d=1, c=32, s=1, gs=0, br=0.25),
                  ByoBlockCfg(type='bottle', d=1, c=32, s=2, gs=0, br=0.25),
                  ByoBlockCfg(type='self_attn', d=1, c=64, s=2, gs=0, br=0.25),
                  ByoBlockCfg(type='self_attn', d=1, c=64, s=2, gs=0, br=0.25))
        if attn == 'bottleneck':
            cfg = ByoModelCfg(blocks=blocks, stem_chs=16, stem_type='tiered', stem_pool='maxpool',
                              fixed_input_size=True, self_attn_layer='bottleneck', self_attn_kwargs=dict(dim_head=8))
            return ByobNet(cfg, img_size=img_size, **kw)
        cfg = ByoModelCfg(blocks=blocks, stem_chs=16, stem_type='tiered', stem_pool='maxpool',
                          self_attn_layer='lambda', self_attn_kwargs=dict(r=9, dim_head=4))
        return ByobNet(cfg, **kw)
    return make


@register_backbone(name='davit_test')
def davit_test(**kwargs) -> TimmSeedBackbone:
    """Tiny DaViT (spatial + channel blocks, output norms); not a published model."""
    return _create_seed(_StagedTimm, _davit_test_model, kwargs, channels=(16, 32, 64, 128), strip=('head', 'norm_pre'),
                  out_norm=True)


@register_backbone(name='twins_test')
def twins_test(**kwargs) -> TimmSeedBackbone:
    """Tiny Twins-SVT (locally-grouped and global sub-sampled blocks); not a published model."""
    return _create_seed(_TwinsBackbone, _twins_test_model('svt'), kwargs, channels=(16, 32, 64, 128),
                  strip=('head', 'norm'))


@register_backbone(name='twins_pcpvt_test')
def twins_pcpvt_test(**kwargs) -> TimmSeedBackbone:
    """Tiny Twins-PCPVT; not a published model."""
    return _create_seed(_TwinsBackbone, _twins_test_model('pcpvt'), kwargs, channels=(16, 32, 64, 128),
                  strip=('head', 'norm'))


@register_backbone(name='coat_test')
def coat_test(**kwargs) -> TimmSeedBackbone:
    """Tiny CoaT-Lite; not a published model."""
    return _create_seed(_CoaTLiteBackbone, _coat_test_model, kwargs, channels=(32, 32, 64, 64), strip=('head', 'norm4'))


@register_backbone(name='nextvit_test')
def nextvit_test(**kwargs) -> TimmSeedBackbone:
    """Next-ViT with one block per stage (timm fixes Next-ViT's widths); not a published model."""
    return _create_seed(_StagedTimm, _nextvit_test_model, kwargs, channels=(16, 40, 40, 40), strip=('head', 'norm'))


@register_backbone(name='caformer_test')
def caformer_test(**kwargs) -> TimmSeedBackbone:
    """Tiny MetaFormer with a pooling, a separable-convolution and two attention stages (the token
    mixers of PoolFormerV2, ConvFormer and CAFormer); not a published model."""
    return _create_seed(_StagedTimm, _metaformer_test_model, kwargs, channels=(16, 32, 64, 128), strip=('head',))


@register_backbone(name='inception_next_test')
def inception_next_test(**kwargs) -> TimmSeedBackbone:
    """Tiny InceptionNeXt; not a published model."""
    return _create_seed(_FloorStaged, _inception_next_test_model, kwargs, channels=(16, 32, 64, 128), strip=('head',))


@register_backbone(name='xcit_test')
def xcit_test(**kwargs) -> TimmSeedBackbone:
    """Tiny XCiT (one block per stage) with the simple pyramid; not a published model."""
    return _create_seed(_XCiTBackbone, _xcit_test_model, kwargs, channels=None,
                  strip=('head', 'norm', 'cls_attn_blocks'), arch=dict(cls_attn_layers=0), stage_ends=(1, 2, 3, 4))


@register_backbone(name='botnet_test')
def botnet_test(*, img_size: Sequence[int] | int = (128, 160), **kwargs) -> TimmSeedBackbone:
    """Tiny BoTNet (bottleneck attention at strides 16 and 32) for inputs up to ``img_size``; not a
    published model."""
    img_size = _fixed_size(img_size)
    return _create_seed(_FixedSizeStaged, _byob_test_model('bottleneck'), kwargs, channels=(32, 32, 64, 64),
                  strip=('head',), arch=dict(img_size=img_size), img_size=img_size)


@register_backbone(name='lambda_resnet_test')
def lambda_resnet_test(**kwargs) -> TimmSeedBackbone:
    """Tiny Lambda-ResNet (lambda layers at strides 16 and 32); not a published model."""
    return _create_seed(_PaddedStaged, _byob_test_model('lambda'), kwargs, channels=(32, 32, 64, 64), strip=('head',))
