"""``python -m densekit.doctor``: what densekit finds on this machine.

Prints the versions of the stack, whether mmcv's ops are compiled or densekit's portable ones
(and which portable ops exist), whether the ``mmcv._ext`` start-up hook is installed, CUDA and
Triton availability, and the attention backend each densekit op picks here. The backend is asked
of the op itself on a small input: the op's choice is the one :func:`densekit.ops._backend.
choose_backend` logs, and the op is stopped right after choosing, so no kernel is compiled.
``--json`` prints the same as one JSON object.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import sys

# distribution name -> label; several spellings where the same package ships under two names
_DISTRIBUTIONS = (
    ('torch', ('torch',)), ('torchvision', ('torchvision',)), ('triton', ('triton',)),
    ('numpy', ('numpy',)), ('mmengine', ('mmengine',)), ('mmcv', ('mmcv', 'mmcv-lite')),
    ('mmdet', ('mmdet',)), ('mmseg', ('mmsegmentation',)), ('timm', ('timm',)),
    ('opencv', ('opencv-python-headless', 'opencv-python')), ('densekit', ('densekit',)),
)


def versions() -> dict:
    out = {'python': platform.python_version()}
    for label, dists in _DISTRIBUTIONS:
        out[label] = None
        for dist in dists:
            try:
                out[label] = f'{importlib.metadata.version(dist)}' + (
                    f' ({dist})' if len(dists) > 1 else '')
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    try:  # the wheel's local tag (+cu130, +cpu) says which build this is
        import torch
        out['torch'] = torch.__version__
    except ImportError:
        pass
    return out


def mmcv_ops() -> dict:
    """Compiled or portable ``mmcv._ext``, and the portable ops when those are used."""
    info = {'startup_hook': any(type(f).__name__ == '_DensekitMmcvExtFinder' for f in sys.meta_path)}
    try:
        import densekit  # noqa: F401  (installs the stand-in when no compiled extension exists)
        from densekit.compat import using_portable_ops
        import mmcv._ext as ext
    except Exception as e:  # noqa: BLE001  (report, do not fail)
        info['extension'] = f'unavailable ({type(e).__name__}: {e})'
        return info
    if using_portable_ops():
        info['extension'] = 'densekit portable (pure PyTorch, no compiled mmcv ops)'
        implemented = getattr(ext, '_IMPLEMENTED', None)
        if implemented is not None:
            info['portable_ops'] = sorted(implemented)
    else:
        info['extension'] = f'compiled ({getattr(ext, "__file__", ext)})'
    return info


def accelerators() -> dict:
    import torch
    info = {'cuda_available': torch.cuda.is_available(), 'torch_cuda': torch.version.cuda}
    if info['cuda_available']:
        info['devices'] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info['capability'] = '.'.join(map(str, torch.cuda.get_device_capability(0)))
    try:
        import triton  # noqa: F401
        info['triton'] = 'importable' + ('' if info['cuda_available'] else
                                         ' (no CUDA device: densekit does not use it)')
    except Exception as e:  # noqa: BLE001
        info['triton'] = f'not importable ({type(e).__name__}: {e})'
    info['flex_attention'] = importlib.util.find_spec('torch.nn.attention.flex_attention') is not None
    return info


class _Chosen(Exception):
    """Stops an op once its backend is chosen (raised from the log record, before any kernel)."""


class _ChoiceRecorder(logging.Handler):

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.skipped, self.chosen = [], None

    def emit(self, record):
        msg = str(record.msg)
        args = record.args if isinstance(record.args, tuple) else ()
        if 'skipping backend' in msg and len(args) >= 3:
            self.skipped.append(f'{args[1]}: {args[2]}')
        elif 'using backend' in msg and len(args) >= 2:
            self.chosen = str(args[1])
            raise _Chosen


def _op_calls(device, dtype):
    import torch
    from densekit import ops

    def qkv(*spatial, heads=2, dim=32):
        return [torch.randn(1, *spatial, heads, dim, device=device, dtype=dtype) for _ in range(3)]

    return {
        'na2d (NAT / DiNAT)': lambda: ops.na2d(*qkv(14, 14), kernel_size=7),
        'na1d': lambda: ops.na1d(*qkv(32), kernel_size=7),
        'window_attention (Swin)': lambda: ops.window_attention(*qkv(14, 14), window_size=7),
        'halo_attention (HaloNet)': lambda: ops.halo_attention(*qkv(16, 16), block_size=8,
                                                               halo_size=2),
    }


def attention_backends() -> dict:
    """The backend each attention op picks for a small input, per device and dtype here."""
    import torch
    env = os.environ.get('DENSEKIT_ATTN_BACKEND', '').strip()
    if env and env.lower() != 'auto':
        return {'forced': f'{env} (DENSEKIT_ATTN_BACKEND)'}
    settings = [('cpu', torch.float32)]
    if torch.cuda.is_available():
        settings = [('cuda', torch.float32), ('cuda', torch.bfloat16)] + settings
    logger = logging.getLogger('densekit.ops')
    out = {}
    for device, dtype in settings:
        key = f'{device} {str(dtype).replace("torch.", "")}'
        try:
            calls = _op_calls(device, dtype)
        except Exception as e:  # noqa: BLE001  (the ops' API changed: say so)
            out[key] = {'error': f'{type(e).__name__}: {e}'}
            continue
        out[key] = {}
        for name, call in calls.items():
            recorder = _ChoiceRecorder()
            level, propagate = logger.level, logger.propagate
            logger.addHandler(recorder)
            logger.setLevel(logging.DEBUG)
            logger.propagate = False
            try:
                call()
                result = 'ran without reporting a choice'
            except _Chosen:
                result = recorder.chosen
            except Exception as e:  # noqa: BLE001
                result = f'error: {type(e).__name__}: {str(e).splitlines()[0][:200]}'
            finally:
                logger.removeHandler(recorder)
                logger.setLevel(level)
                logger.propagate = propagate
            if recorder.skipped:
                result += ' (skipped ' + '; '.join(recorder.skipped) + ')'
            out[key][name] = result
    return out


def report() -> dict:
    return {'versions': versions(), 'mmcv_ops': mmcv_ops(), 'accelerators': accelerators(),
            'attention_backends': attention_backends(),
            'cache': _cache_dir()}


def _cache_dir() -> str:
    from densekit.utils.download import cache_dir
    return str(cache_dir())


def _print(rep: dict) -> None:
    print('densekit doctor')
    print('\nversions')
    for k, v in rep['versions'].items():
        print(f'  {k:12s} {v if v is not None else "not installed"}')
    m = rep['mmcv_ops']
    print('\nmmcv ops')
    print(f"  mmcv._ext    {m['extension']}")
    print(f"  start-up hook {'installed' if m['startup_hook'] else 'not active (import densekit first, or reinstall densekit)'}")
    if 'portable_ops' in m:
        print(f"  portable     {', '.join(m['portable_ops'])}")
        print('  other mmcv ops raise PortableOpUnavailable (they need a compiled mmcv)')
    a = rep['accelerators']
    print('\naccelerators')
    print(f"  CUDA         {'available' if a['cuda_available'] else 'not available'}"
          f" (torch built with CUDA {a['torch_cuda']})")
    for d in a.get('devices', []):
        print(f"  device       {d} (sm {a.get('capability')})")
    print(f"  Triton       {a['triton']}")
    print(f"  FlexAttention {'available' if a['flex_attention'] else 'not available'}")
    print('\nattention backend per op (automatic choice for a small input)')
    for setting, ops in rep['attention_backends'].items():
        if isinstance(ops, str):
            print(f'  {setting}: {ops}')
            continue
        print(f'  {setting}')
        for op, choice in ops.items():
            print(f'    {op:26s} {choice}')
    print(f"\ncheckpoint cache  {rep['cache']} (DENSEKIT_CACHE overrides)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog='python -m densekit.doctor', description=__doc__.split('\n\n')[0])
    p.add_argument('--json', action='store_true', help='print one JSON object')
    args = p.parse_args(argv)
    rep = report()
    if args.json:
        print(json.dumps(rep, indent=1))
    else:
        _print(rep)


if __name__ == '__main__':
    main()
