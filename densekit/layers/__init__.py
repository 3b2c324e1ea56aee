"""Building blocks shared by the backbone families (pure PyTorch; no model or OpenMMLab imports, and
no op imported at import time).

* :mod:`~densekit.layers.drop` -- ``DropPath`` and the linear drop-path schedule;
* :mod:`~densekit.layers.norm` -- ``LayerNorm2d`` (NCHW);
* :mod:`~densekit.layers.norm_act` -- ``BatchNormAct2d``, ``ConvBnAct``, activations by name;
* :mod:`~densekit.layers.channel_attn` -- ``SqueezeExcite``, ``EfficientChannelAttention``;
* :mod:`~densekit.layers.init` -- the two random-init schemes;
* :mod:`~densekit.layers.checkpoint` -- ``run_blocks`` (activation checkpointing, ``with_cp``);
* :mod:`~densekit.layers.window` -- windowing, padding and relative-position helpers;
* :mod:`~densekit.layers.helpers` -- ``make_divisible``;
* :mod:`~densekit.layers.large_kernel` -- ``LargeKernelConv2d`` (depthwise "same" convolution
  through :func:`densekit.ops.large_kernel.large_kernel_conv2d`, imported when it runs).
"""
from densekit.layers.channel_attn import EfficientChannelAttention, SqueezeExcite, create_channel_attn
from densekit.layers.checkpoint import run_blocks
from densekit.layers.drop import DropPath, drop_path, drop_path_schedule
from densekit.layers.helpers import make_divisible
from densekit.layers.init import init_conv_bn_, init_trunc_normal_
from densekit.layers.large_kernel import LargeKernelConv2d
from densekit.layers.norm import LayerNorm2d
from densekit.layers.norm_act import BatchNormAct2d, ConvBnAct, create_act

__all__ = [
    'BatchNormAct2d', 'ConvBnAct', 'DropPath', 'EfficientChannelAttention', 'LargeKernelConv2d', 'LayerNorm2d',
    'SqueezeExcite', 'create_act', 'create_channel_attn', 'drop_path', 'drop_path_schedule',
    'init_conv_bn_', 'init_trunc_normal_', 'make_divisible', 'run_blocks',
]
