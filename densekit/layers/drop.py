"""Stochastic depth helpers shared by the backbone families."""
from __future__ import annotations


def drop_path_schedule(rate: float, num_blocks: int) -> list[float]:
    """Stochastic-depth probabilities rising linearly from 0 to ``rate`` over ``num_blocks``."""
    # Plain Python (not torch.linspace) so that models can be built on the meta device.
    if num_blocks <= 1:
        return [0.0] * num_blocks
    return [rate * i / (num_blocks - 1) for i in range(num_blocks)]
