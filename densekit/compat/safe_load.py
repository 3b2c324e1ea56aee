"""Safe checkpoint loading for mmengine on torch >= 2.6.

A checkpoint is untrusted input: a pickle can run arbitrary code. mmengine 0.10.7 calls
``torch.load`` without ``weights_only``; on torch >= 2.6 that means ``weights_only=True``, which
refuses mmengine's own checkpoints because their ``meta`` / ``message_hub`` hold numpy scalars and
arrays and ``HistoryBuffer`` objects. Instead of a blanket ``weights_only=False`` densekit loads
with ``weights_only=True`` plus an allow-list of exactly those plain types (:data:`ALLOWED`).

``install()`` re-registers mmengine's local and http checkpoint loaders with :func:`safe_load`,
and makes mmengine's local file writes atomic (temporary file + ``os.replace``), so a kill
during a save never leaves a truncated checkpoint or ``last_checkpoint``.
"""
from __future__ import annotations

import io
import os
import os.path as osp
import pickle
import re
import tempfile
from typing import Any, BinaryIO, Callable, List, Union

import numpy as np
import torch


class UnsafeCheckpointError(pickle.UnpicklingError):
    """Raised when a checkpoint holds objects outside the allow-list."""


class CheckpointFileError(ValueError):
    """A file that cannot be a whole checkpoint (no code from it ran, nothing unsafe in it)."""


class EmptyCheckpointError(CheckpointFileError):
    """The file has zero bytes (a save that never wrote, a failed copy)."""


class TruncatedCheckpointError(CheckpointFileError):
    """The file starts like a checkpoint but ends early (an interrupted download or copy)."""


class NotACheckpointError(CheckpointFileError):
    """The file is neither a torch zip archive nor a pickle (a text / HTML page, random bytes)."""


_ZIP_MAGIC = b'PK\x03\x04'
_TRUNCATED = ('central directory', 'unexpected eof', 'truncated', 'ran out of input',
              'file might be corrupted')


def _head(f) -> tuple[bytes, int | None]:
    """The first bytes of ``f`` and its size (``None`` when unknown), leaving ``f`` where it was."""
    if isinstance(f, (str, os.PathLike)):
        with open(f, 'rb') as fh:
            return fh.read(512), os.path.getsize(f)
    if hasattr(f, 'seek') and hasattr(f, 'tell'):
        pos = f.tell()
        head = f.read(512)
        f.seek(0, os.SEEK_END)
        size = f.tell() - pos
        f.seek(pos)
        return head, size
    return b'', None


def _format_of(head: bytes) -> str:
    """'zip' (torch >= 1.6), 'pickle' (legacy torch.save, protocol >= 2), 'tar' (torch < 0.4)."""
    if head.startswith(_ZIP_MAGIC):
        return 'zip'
    if head[:1] == b'\x80' and head[1:2] in (b'\x02', b'\x03', b'\x04', b'\x05'):
        return 'pickle'
    if head[257:262] == b'ustar':
        return 'tar'
    return 'other'


def _check_whole(f, name: str) -> str:
    """Raises the :class:`CheckpointFileError` that fits a file which is not a whole checkpoint."""
    head, size = _head(f)
    if size == 0:
        raise EmptyCheckpointError(
            f'checkpoint {name} is empty (0 bytes): the save or copy that wrote it did not finish; '
            'use another checkpoint or write it again')
    kind = _format_of(head)
    if kind == 'other' and size is not None:
        shown = head[:16]
        text = ' (it looks like text: an HTML error page or a pointer file?)' if head[:64].isascii() \
            and head[:64].strip() else ''
        raise NotACheckpointError(
            f'{name} is not a checkpoint: it is neither a torch zip archive nor a pickle (starts '
            f'with {shown!r}){text}')
    if kind == 'zip' and isinstance(f, (str, os.PathLike)):
        import zipfile
        if not zipfile.is_zipfile(f):
            raise TruncatedCheckpointError(
                f'checkpoint {name} ({size} bytes) is truncated: the zip archive torch.save writes '
                'has no end record (an interrupted download or copy); fetch or copy it again')
    return kind


def _global_exists(dotted: str) -> bool:
    """Whether ``module.attr`` could name a real object, judged without importing anything new:
    an unknown top-level module, or a loaded module without that attribute, cannot."""
    import importlib.util
    import sys
    module, _, attr = dotted.rpartition('.')
    if not module:
        return False
    if module in sys.modules:
        return hasattr(sys.modules[module], attr.split('.')[0])
    try:
        return importlib.util.find_spec(module.split('.')[0]) is not None
    except (ImportError, ValueError):
        return False


def _truncated(name: str, e: BaseException) -> TruncatedCheckpointError:
    return TruncatedCheckpointError(
        f'checkpoint {name} is truncated or damaged ({type(e).__name__}: '
        f'{str(e).splitlines()[0] if str(e) else "end of file"}); fetch or copy it again')


def _numpy_globals() -> List[Any]:
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [type(np.dtype(t)) for t in (
        np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
        np.uint64, np.float16, np.float32, np.float64, np.complex64, np.complex128, np.str_)]
    return [_reconstruct, scalar, np.ndarray, np.dtype, *dtype_classes]


def _mmengine_globals() -> List[Any]:
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:
        return []

    # A pickled HistoryBuffer references its statistics methods as ``getattr(HistoryBuffer,
    # 'mean')``. A general ``getattr`` would re-open the door (``getattr(os, 'system')``), so the
    # pickle's ``builtins.getattr`` is served by this function, which allows only that lookup.
    def history_buffer_method(obj, name):
        if obj is HistoryBuffer and callable(getattr(HistoryBuffer, name, None)) \
                and not name.startswith('_'):
            return getattr(HistoryBuffer, name)
        raise UnsafeCheckpointError(
            f'checkpoint asks for getattr({obj!r}, {name!r}); only public HistoryBuffer '
            'statistics methods are allowed')

    return [HistoryBuffer, (history_buffer_method, 'builtins.getattr')]


def allowed_globals() -> List[Any]:
    """The plain types mmengine / mmdet / mmseg / timm checkpoints store besides tensors."""
    import collections
    return [*_numpy_globals(), *_mmengine_globals(), collections.OrderedDict,
            collections.defaultdict, set, frozenset, slice, range, complex]


def safe_load(f: Union[str, os.PathLike, BinaryIO], map_location: Any = None) -> Any:
    """``torch.load(f, weights_only=True)`` with densekit's allow-list.

    Raises:
        UnsafeCheckpointError: the file references a global outside the allow-list (e.g. a
            pickle that would call ``os.system``); nothing from it is executed.
        EmptyCheckpointError, TruncatedCheckpointError, NotACheckpointError: the file is empty,
            ends early, or is not a torch checkpoint at all (all :class:`CheckpointFileError`).
    """
    name = f if isinstance(f, (str, os.PathLike)) else getattr(f, 'name', '<buffer>')
    kind = _check_whole(f, name)
    with torch.serialization.safe_globals(allowed_globals()):
        try:
            return torch.load(f, map_location=map_location, weights_only=True)
        except (EOFError, RuntimeError) as e:
            if isinstance(e, EOFError) or any(t in str(e).lower() for t in _TRUNCATED):
                raise _truncated(name, e) from None
            raise
        except pickle.UnpicklingError as e:
            if any(t in str(e).lower() for t in _TRUNCATED):
                raise _truncated(name, e) from None
            found = re.search(r'GLOBAL ([\w.]+)', str(e))
            if kind == 'pickle' and found and not _global_exists(found.group(1)):
                # legacy format (no zip checksums): a name that no module defines comes from
                # bytes cut inside the pickle (a truncated file ends mid-name,
                # 'collections.Order'); it could not run anything either way
                raise _truncated(name, pickle.UnpicklingError(
                    f'the pickle names {found.group(1)}, which does not exist')) from None
            detail = f'global {found.group(1)}' if found else str(e).splitlines()[0]
            raise UnsafeCheckpointError(
                f"refusing to load checkpoint {name}: it references objects outside densekit's "
                f"allow-list of plain types ({detail}). Loading it could "
                "run arbitrary code. If you trust the file, load it yourself with "
                "torch.load(..., weights_only=False) and re-save its state_dict.") from None


def _load_local(filename: str, map_location=None):
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename} can not be found.')
    return safe_load(filename, map_location=map_location)


def _load_http(filename: str, map_location=None, model_dir=None):
    from mmengine.dist import get_dist_info
    from torch.hub import download_url_to_file, get_dir
    rank, _ = get_dist_info()
    model_dir = model_dir or osp.join(get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached = osp.join(model_dir, osp.basename(filename.split('?')[0]))
    if rank == 0 and not osp.exists(cached):
        download_url_to_file(filename, cached, progress=False)
    if rank != 0 or not osp.exists(cached):
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
    return safe_load(cached, map_location=map_location)


def atomic_write_bytes(data: bytes, path: Union[str, os.PathLike]) -> None:
    """Write ``data`` to ``path`` so that readers see either the old or the new file, never half."""
    path = os.fspath(path)
    d = osp.dirname(osp.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix='.' + osp.basename(path) + '.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def _patch_local_backend() -> None:
    from mmengine.fileio.backends.local_backend import LocalBackend

    if getattr(LocalBackend.put, '__densekit__', False):
        return

    def put(self, obj: bytes, filepath) -> None:
        atomic_write_bytes(obj, filepath)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write_bytes(obj.encode(encoding), filepath)

    put.__densekit__ = True
    LocalBackend.put = put
    LocalBackend.put_text = put_text


def _patch_scheduler_state() -> None:
    """Keeps functions out of mmengine scheduler state dicts.

    ``OneCycleParamScheduler`` stores ``self.anneal_func = self._annealing_cos``; its state dict
    (every attribute but the optimizer) then pickles a reference to that function, which a
    weights-only load rightly refuses (a global outside the allow-list). Such attributes are set
    by the constructor when the scheduler is re-created from the config, so they need no saving.
    """
    import inspect

    from mmengine.optim.scheduler.param_scheduler import _ParamScheduler

    if getattr(_ParamScheduler.state_dict, '__densekit__', False):
        return

    def state_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()
                if k != 'optimizer' and not (inspect.isfunction(v) or inspect.ismethod(v))}

    state_dict.__densekit__ = True
    _ParamScheduler.state_dict = state_dict


def install() -> None:
    try:
        from mmengine.runner.checkpoint import CheckpointLoader
    except ImportError:  # mmengine absent: nothing to patch
        return
    _patch_scheduler_state()
    CheckpointLoader.register_scheme(prefixes='', loader=_load_local, force=True)
    CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), loader=_load_http,
                                     force=True)
    _patch_local_backend()
