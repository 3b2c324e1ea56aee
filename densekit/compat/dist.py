"""Lets mmengine's distributed training run on CPU (gloo) as well as on GPUs.

mmengine 0.10.7's pytorch and slurm launchers call ``torch.cuda.set_device`` unconditionally (the
slurm one also derives the local rank from the GPU count) and ``Runner.wrap_model`` hands
``device_ids=[LOCAL_RANK]`` to DDP; all of it breaks a CPU run. On a CUDA machine nothing changes.
"""
from __future__ import annotations

import os
import subprocess

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


def _init_dist_slurm(backend: str = 'nccl', port=None, init_backend: str = 'torch', **kwargs) -> None:
    """Slurm launcher on CPU: the environment mmengine's slurm launcher sets up (rank, world size,
    master address from the first node of the allocation, port), then a gloo process group."""
    if torch.cuda.is_available():
        return _ORIGINAL_SLURM(backend, port=port, init_backend=init_backend, **kwargs)
    rank = os.environ['SLURM_PROCID']
    os.environ['RANK'] = rank
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', rank)
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ['SLURM_NODELIST']
        try:
            out = subprocess.run(['scontrol', 'show', 'hostname', nodes], capture_output=True, text=True)
            hosts, why = out.stdout.split(), out.stderr.strip()
        except FileNotFoundError:
            hosts, why = [], 'scontrol not found'
        if not hosts:
            raise RuntimeError(f'slurm launcher: `scontrol show hostname {nodes}` gave no host ({why}); '
                               'set MASTER_ADDR')
        os.environ['MASTER_ADDR'] = hosts[0]
    _init_dist_pytorch(backend, init_backend=init_backend, **kwargs)


_ORIGINAL_INIT = None
_ORIGINAL_SLURM = None


def install() -> None:
    global _ORIGINAL_INIT, _ORIGINAL_SLURM
    try:
        import mmengine.dist.utils as dist_utils
        from mmengine.model.wrappers import MMDistributedDataParallel
    except ImportError:
        return
    if _ORIGINAL_INIT is None:
        _ORIGINAL_INIT = dist_utils._init_dist_pytorch
        dist_utils._init_dist_pytorch = _init_dist_pytorch
    if _ORIGINAL_SLURM is None:
        _ORIGINAL_SLURM = dist_utils._init_dist_slurm
        dist_utils._init_dist_slurm = _init_dist_slurm

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
