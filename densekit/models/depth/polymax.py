"""PolyMaX-style depth head: a k-means mask transformer predicting depth as a mixture over bins.

Densekit's own design after Yang et al., "PolyMaX: General Dense Prediction with Mask
Transformer" (WACV 2024), whose code is not released. Depth is cast as a soft classification over
``num_queries`` learned bins: every query (cluster centre) predicts one bin depth ``d_k`` and a
mask embedding; the per-pixel softmax over the queries' mask logits gives the mixture weights
``p_k(x)``, and ``depth(x) = sum_k p_k(x) * d_k`` (bounded by the smallest and largest bin).

The transformer decoder is kMaX-DeepLab's (Yu et al., "k-means Mask Transformer", ECCV 2022):
queries are refined coarse-to-fine on the pixel decoder's strides 32 / 16 / 8 by blocks of
cross-attention, query self-attention and an FFN; the final mask logits are taken against a
stride-4 pixel embedding. With ``kmeans=True`` the cross-attention is k-means cross-attention:
each pixel is assigned to the query of highest affinity (an argmax over the *queries* instead of
the softmax over the *pixels*) and every query aggregates the values of its pixels. kMaX trains the
affinities by deep supervision of per-layer masks; a depth head has no mask ground truth, so here
the hard assignment is a straight-through estimator (forward: one-hot argmax, backward: the
gradient of the softmax over queries), which lets the depth loss reach the affinities.
``kmeans=False`` uses the usual softmax over pixels (Mask2Former without the masking).

Differences from the paper, chosen for a small, portable head: a light FPN pixel decoder (GN)
instead of kMaX's axial-attention pixel decoder, LayerNorm instead of BatchNorm in the decoder,
no per-layer auxiliary depth predictions.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from densekit.models.depth.heads import DepthActivation, _check_feats, _conv_norm_act

__all__ = ['KMeansCrossAttention', 'PolyMaXDecoderBlock', 'PolyMaXDepthHead', 'kmeans_assignment']


def kmeans_assignment(logits: torch.Tensor) -> torch.Tensor:
    """Hard pixel-to-query assignment with a straight-through gradient.

    Args:
        logits: affinities ``[N, K, P]`` (queries ``K``, pixels ``P``).

    Returns:
        ``[N, K, P]``: forward value one-hot over ``K`` (argmax per pixel); backward, the gradient
        of ``softmax(logits, dim=1)``.
    """
    soft = logits.softmax(dim=1)
    hard = F.one_hot(logits.argmax(dim=1), logits.shape[1]).transpose(1, 2).to(soft.dtype)
    return hard + soft - soft.detach()


class KMeansCrossAttention(nn.Module):
    """Query-to-pixel cross-attention, k-means (argmax over queries) or softmax over pixels.

    Args:
        channels: width of queries and pixel features.
        kmeans: k-means assignment (kMaX) if True, softmax over pixels (scaled dot product) if
            False.

    Shapes: ``query [N, K, C]``, ``pixels [N, C, H, W]`` -> update ``[N, K, C]``.
    """

    def __init__(self, channels: int, kmeans: bool = True) -> None:
        super().__init__()
        self.kmeans = kmeans
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Conv2d(channels, 2 * channels, 1)
        self.norm = nn.LayerNorm(channels)
        self.proj = nn.Linear(channels, channels)
        self.scale = channels ** -0.5

    def forward(self, query: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        key, value = self.kv(pixels).flatten(2).chunk(2, dim=1)  # [N, C, P] each
        logits = torch.einsum('nkc,ncp->nkp', self.q(query), key)
        if self.kmeans:
            # Every pixel goes to one cluster; the sum of a cluster's values is normalised by the
            # LayerNorm (kMaX normalises the update the same way, with BatchNorm).
            attn = kmeans_assignment(logits)
        else:
            attn = (logits * self.scale).softmax(dim=-1)
        update = torch.einsum('nkp,ncp->nkc', attn, value)
        return self.proj(self.norm(update))


class PolyMaXDecoderBlock(nn.Module):
    """Cross-attention, query self-attention and FFN, each residual with a post-LayerNorm."""

    def __init__(self, channels: int, num_heads: int = 8, ffn_channels: int = 1024,
                 kmeans: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.cross = KMeansCrossAttention(channels, kmeans)
        self.norm1 = nn.LayerNorm(channels)
        self.self_attn = nn.MultiheadAttention(channels, num_heads, dropout=dropout,
                                               batch_first=True)
        self.norm2 = nn.LayerNorm(channels)
        self.ffn = nn.Sequential(nn.Linear(channels, ffn_channels), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(ffn_channels, channels))
        self.norm3 = nn.LayerNorm(channels)

    def forward(self, query: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        query = self.norm1(query + self.cross(query, pixels))
        query = self.norm2(query + self.self_attn(query, query, query, need_weights=False)[0])
        return self.norm3(query + self.ffn(query))


class PolyMaXDepthHead(nn.Module):
    """Mask-transformer depth head: depth as a per-pixel mixture over query-predicted bins.

    Args:
        in_channels: channels of each backbone map, fine to coarse (strides 4..32 typically).
        channels: width of the pixel decoder and of the queries.
        num_queries: number of queries, i.e. depth bins.
        decoder_blocks: decoder blocks per pixel-decoder level, coarse to fine starting at the
            coarsest level (kMaX: ``(2, 2, 2)`` on strides 32 / 16 / 8); at most
            ``len(in_channels)`` entries.
        num_heads: heads of the query self-attention.
        ffn_channels: hidden width of the decoder FFN.
        kmeans: k-means cross-attention (True) or softmax cross-attention (False).
        activation: maps each query's bin logit to depth, ``'sigmoid'`` (``max_depth *
            sigmoid``) or ``'relu'``, see :class:`DepthActivation`.
        min_depth: lower bound for ``'relu'``.
        max_depth: scale for ``'sigmoid'``.
        norm: norm of the pixel decoder convs (``'gn'``: depth batches are small).
        dropout: dropout in the decoder.
        align_corners: bilinear resampling convention of the pixel decoder.

    Shapes: inputs ``[N, in_channels[i], H_i, W_i]`` from fine to coarse; output
    ``[N, 1, H_0, W_0]`` at the size of the finest map; :meth:`predict_mixture` also returns
    the bin depths ``[N, K]`` and the mixture weights ``[N, K, H_0, W_0]``.
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 channels: int = 256,
                 num_queries: int = 64,
                 decoder_blocks: Sequence[int] = (2, 2, 2),
                 num_heads: int = 8,
                 ffn_channels: int = 1024,
                 kmeans: bool = True,
                 activation: str = 'sigmoid',
                 min_depth: float = 1e-3,
                 max_depth: float = 10.0,
                 norm: str = 'gn',
                 dropout: float = 0.0,
                 align_corners: bool = False) -> None:
        super().__init__()
        in_channels = tuple(int(c) for c in in_channels)
        decoder_blocks = tuple(int(b) for b in decoder_blocks)
        if not in_channels:
            raise ValueError('PolyMaXDepthHead: in_channels must list at least one level')
        if not decoder_blocks or len(decoder_blocks) > len(in_channels) or min(decoder_blocks) < 0:
            raise ValueError(f"PolyMaXDepthHead: decoder_blocks={decoder_blocks} needs 1 to "
                             f"{len(in_channels)} non-negative entries (one per level, coarse "
                             "first)")
        if num_queries < 1:
            raise ValueError(f'PolyMaXDepthHead: num_queries={num_queries} must be positive')
        self.in_channels = in_channels
        self.num_queries = num_queries
        self.decoder_blocks = decoder_blocks
        self.kmeans = kmeans
        self.align_corners = align_corners
        # Pixel decoder: FPN top-down path, a 3x3 conv per level, a stride-4 pixel embedding.
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        # Only the levels that are read (the finest one and those with decoder blocks) get a 3x3
        # conv, so that every parameter receives a gradient (DDP without find_unused_parameters).
        used = {0} | {len(in_channels) - 1 - j for j, b in enumerate(decoder_blocks) if b > 0}
        self.smooth = nn.ModuleList(
            _conv_norm_act(channels, channels, 3, norm) if i in used else nn.Identity()
            for i in range(len(in_channels)))
        self.pixel_embed = nn.Sequential(_conv_norm_act(channels, channels, 3, norm),
                                         nn.Conv2d(channels, channels, 1))
        # Transformer decoder.
        self.query_embed = nn.Embedding(num_queries, channels)
        self.blocks = nn.ModuleList(
            PolyMaXDecoderBlock(channels, num_heads, ffn_channels, kmeans, dropout)
            for _ in range(sum(decoder_blocks)))
        # Prediction heads: a mask embedding and a bin depth per query.
        self.mask_embed = nn.Sequential(nn.Linear(channels, channels), nn.GELU(),
                                        nn.Linear(channels, channels))
        self.bin_embed = nn.Sequential(nn.Linear(channels, channels), nn.GELU(),
                                       nn.Linear(channels, 1))
        self.activation = DepthActivation(activation, min_depth, max_depth)

    def _resize(self, x: torch.Tensor, size) -> torch.Tensor:
        if x.shape[-2:] == size:
            return x
        return F.interpolate(x, size=size, mode='bilinear', align_corners=self.align_corners)

    def pixel_decoder(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """FPN levels ``[N, channels, H_i, W_i]``, fine to coarse."""
        lat = [l(f) for l, f in zip(self.lateral, feats)]
        for i in range(len(lat) - 2, -1, -1):
            lat[i] = lat[i] + self._resize(lat[i + 1], lat[i].shape[-2:])
        return [s(x) for s, x in zip(self.smooth, lat)]

    def predict_mixture(self, feats: Sequence[torch.Tensor]
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(depth [N, 1, H_0, W_0], bins [N, K], probs [N, K, H_0, W_0])``."""
        _check_feats('PolyMaXDepthHead', self.in_channels, feats)
        levels = self.pixel_decoder(feats)
        n = levels[0].shape[0]
        query = self.query_embed.weight.unsqueeze(0).expand(n, -1, -1)
        blocks = iter(self.blocks)
        for j, count in enumerate(self.decoder_blocks):
            pixels = levels[-1 - j]  # coarsest first
            for _ in range(count):
                query = next(blocks)(query, pixels)
        embed = self.pixel_embed(levels[0])
        logits = torch.einsum('nkc,nchw->nkhw', self.mask_embed(query), embed)
        probs = logits.softmax(dim=1)
        bins = self.activation(self.bin_embed(query)).squeeze(-1)  # [N, K]
        depth = torch.einsum('nkhw,nk->nhw', probs, bins).unsqueeze(1)
        return depth, bins, probs

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.predict_mixture(feats)[0]
