"""Weight initialisation shared by the transformer backbone families."""
from __future__ import annotations

import torch.nn as nn


def init_transformer_weights(m: nn.Module) -> None:
    """The ViT-style init of the official NAT / CSWin code: truncated-normal (std 0.02) linear
    weights, zero biases, unit LayerNorms; convolutions keep PyTorch's default. Use with
    ``module.apply``."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
