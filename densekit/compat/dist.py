"""Lets mmengine's distributed training run on CPU (gloo) as well as on GPUs.

mmengine 0.10.7's pytorch launcher calls ``torch.cuda.set_device`` unconditionally and
``Runner.wrap_model`` hands ``device_ids=[LOCAL_RANK]`` to DDP; both break a CPU run. On a CUDA
machine nothing changes.
"""
from __future__ import annotations

import os

import torch


def _init_dist_pytorch(backend: str = 'nccl', init_backend: str = 'torch', **kwargs) -> None:
    import torch.distributed as torch_dist
    if torch.cuda.is_available():
        return _ORIGINAL_INIT(backend, init_backend=init_backend, **kwargs)
    if backend == 'nccl':
        backend = 'gloo'  # nccl needs GPUs; gloo is PyTorch's CPU backend
    if init_backend != 'torch':
        raise ValueError(f'init_backend={init_backend!r} needs CUDA; on CPU only "torch" works')
    torch_dist.init_process_group(backend=backend, **kwargs)


_ORIGINAL_INIT = None


def install() -> None:
    global _ORIGINAL_INIT
    try:
        import mmengine.dist.utils as dist_utils
        from mmengine.model.wrappers import MMDistributedDataParallel
    except ImportError:
        return
    if _ORIGINAL_INIT is None:
        _ORIGINAL_INIT = dist_utils._init_dist_pytorch
        dist_utils._init_dist_pytorch = _init_dist_pytorch

    init = MMDistributedDataParallel.__init__
    if getattr(init, '__densekit__', False):
        return

    def __init__(self, module, detect_anomalous_params: bool = False, **kwargs):
        params = list(module.parameters())
        if params and params[0].device.type == 'cpu':
            kwargs['device_ids'] = None  # DDP on CPU modules takes no device ids
        init(self, module, detect_anomalous_params=detect_anomalous_params, **kwargs)

    __init__.__densekit__ = True
    MMDistributedDataParallel.__init__ = __init__
