"""Small helpers shared by the layers and the backbone families."""
from __future__ import annotations

__all__ = ['make_divisible']


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Nearest multiple of ``divisor`` (at least ``divisor``), bumped up one step when that is
    below ``round_limit * value``: the channel rounding of the EfficientNet / timm definitions."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < round_limit * value else out
