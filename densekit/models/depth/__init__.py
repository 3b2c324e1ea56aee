"""Monocular depth: decoders (DPT-style, FPN, PolyMaX-style) and losses (SILog, L1).

No OpenMMLab dependency.
"""
from densekit.models.depth.heads import (DepthActivation, DPTDepthHead, FPNDepthHead, FusionBlock,
                                         ResidualConvUnit)
from densekit.models.depth.polymax import KMeansCrossAttention, PolyMaXDepthHead, kmeans_assignment
from densekit.models.depth.losses import (L1DepthLoss, SILogLoss, l1_depth_loss, silog_loss,
                                          valid_depth_mask)

__all__ = ['DepthActivation', 'DPTDepthHead', 'FPNDepthHead', 'FusionBlock', 'ResidualConvUnit',
           'KMeansCrossAttention', 'PolyMaXDepthHead', 'kmeans_assignment', 'L1DepthLoss',
           'SILogLoss', 'l1_depth_loss', 'silog_loss', 'valid_depth_mask']
