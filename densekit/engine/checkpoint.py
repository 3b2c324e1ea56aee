"""The one checkpoint loader for pretrained weights (backbones, ``init_cfg``, ``load_from``)."""
from __future__ import annotations

import logging
import os
from typing import Mapping

import torch.nn as nn

from densekit.compat.safe_load import safe_load
from densekit.models.convert import unwrap_state_dict

logger = logging.getLogger(__name__)


def load_state_dict_file(path: str | os.PathLike, map_location: str = 'cpu') -> dict:
    """Safely loads a checkpoint file or URL and returns its tensor dict (wrappers removed).

    A URL is downloaded once into the cache (:mod:`densekit.utils.download`)."""
    from densekit.utils.download import resolve_checkpoint
    path = resolve_checkpoint(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'pretrained checkpoint {path} does not exist')
    return unwrap_state_dict(safe_load(path, map_location=map_location))


def checkpoint_family(model: nn.Module) -> str | None:
    """The converter family of a densekit backbone: the name of its family file, if it has one."""
    from densekit.models.convert import list_converters
    module = type(model).__module__
    if not module.startswith('densekit.models.backbones.'):
        return None
    family = module.rsplit('.', 1)[-1]
    return family if family in list_converters() else None


def load_pretrained(model: nn.Module, path: str | os.PathLike, prefix: str | None = None,
                    strict: bool = False) -> tuple[list[str], list[str]]:
    """Loads ``path`` into ``model`` and logs missing / unexpected keys.

    For a densekit backbone family with a converter, the checkpoint goes through
    :func:`densekit.models.convert_checkpoint` first, so official and timm releases load as they
    are (converters pass densekit's own keys through unchanged).

    Args:
        model: the module to load into.
        path: checkpoint file (mmengine, timm or plain state dict) or its http(s) URL.
        prefix: keep only keys starting with ``prefix`` and strip it (e.g. ``'backbone.'`` to
            take a backbone out of a detector checkpoint).
        strict: raise if any key is missing or unexpected.

    Returns:
        ``(missing_keys, unexpected_keys)``.
    """
    sd: Mapping = load_state_dict_file(path)
    if prefix:
        p = prefix if prefix.endswith('.') else prefix + '.'
        sd = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
        if not sd:
            raise KeyError(f"checkpoint {path} has no keys with prefix '{p}'")
    family = checkpoint_family(model)
    if family is not None:
        from densekit.models.convert import convert_checkpoint
        sd = convert_checkpoint(family, sd)
    result = model.load_state_dict(sd, strict=strict)
    if result.missing_keys:
        logger.warning('%s: %d missing keys when loading %s: %s', type(model).__name__,
                       len(result.missing_keys), path, result.missing_keys[:10])
    if result.unexpected_keys:
        logger.warning('%s: %d unexpected keys when loading %s: %s', type(model).__name__,
                       len(result.unexpected_keys), path, result.unexpected_keys[:10])
    return list(result.missing_keys), list(result.unexpected_keys)


# --------------------------------------------------------------------------------------------
# Training checkpoints: written atomically with a checksum, verified before a resume.
#
# ``<checkpoint>.sha256`` holds ``<hex digest>  <file name>`` (the format of ``sha256sum``, so
# ``sha256sum -c iter_4000.pth.sha256`` checks a copy by hand). A checkpoint without one (written
# by plain mmengine, or copied without it) is checked through the CRC-32 of every member of
# torch's zip format instead.

CHECKSUM_SUFFIX = '.sha256'
_CHUNK = 1 << 22


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the files that were there before are unchanged."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint is truncated or corrupted (checksum mismatch, broken zip, empty file)."""


def _umask() -> int:
    try:  # Linux reports it without changing it (os.umask can only read by setting)
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_atomic(data: bytes, path: str) -> None:
    """Writes ``data`` to a temporary file beside ``path``, syncs it, gives it the mode the umask
    allows (``mkstemp``'s 0600 would hide checkpoints from a team) and renames it over ``path``.
    The temporary file is removed if anything fails, so ``path`` is either old or new."""
    import tempfile
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view[:_CHUNK]):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _sync_dir(path: str) -> None:
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_checkpoint_bytes(data: bytes, path: str | os.PathLike) -> str:
    """Writes a serialized checkpoint and its ``.sha256`` sidecar; returns the hex digest.

    The checkpoint is written first and its sidecar after it, each atomically, so a crash between
    the two leaves a complete checkpoint with the old (or no) sidecar: :func:`verify_checkpoint`
    then reports a mismatch rather than accept a half-written file.

    Raises:
        CheckpointWriteError: the write failed (disk full, no permission, ...); the message
            names the path and the cause, and the previous files at ``path`` are untouched.
    """
    import hashlib
    path = os.fspath(path)
    digest = hashlib.sha256(data).hexdigest()
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        _write_atomic(data, path)
        _write_atomic(f'{digest}  {os.path.basename(path)}\n'.encode(), path + CHECKSUM_SUFFIX)
        _sync_dir(path)
    except OSError as e:
        cause = e.strerror or str(e)
        raise CheckpointWriteError(
            e.errno, f'could not write checkpoint {path}: {cause} (errno {e.errno}); the '
            f'checkpoints already in {os.path.dirname(os.path.abspath(path))} and its '
            'last_checkpoint are unchanged') from e
    return digest


def verify_checkpoint(path: str | os.PathLike) -> str | None:
    """Checks a checkpoint file without unpickling it; returns ``None`` if it is intact, else
    why not (missing, empty, checksum mismatch, truncated / corrupted zip)."""
    import hashlib
    import zipfile
    path = os.fspath(path)
    if not os.path.isfile(path):
        return 'the file does not exist'
    size = os.path.getsize(path)
    if size == 0:
        return 'the file is empty'
    sidecar = path + CHECKSUM_SUFFIX
    if os.path.isfile(sidecar):
        with open(sidecar) as f:
            expected = (f.read().split() or [''])[0]
        h = hashlib.sha256()
        with open(path, 'rb') as f:
            for chunk in iter(lambda: f.read(_CHUNK), b''):
                h.update(chunk)
        if h.hexdigest() != expected:
            return (f'its sha256 {h.hexdigest()[:12]}... does not match {os.path.basename(sidecar)} '
                    f'({expected[:12]}...): the file is truncated or corrupted ({size} bytes)')
        return None
    with open(path, 'rb') as f:
        magic = f.read(4)
    if magic != b'PK\x03\x04':
        return None  # torch's legacy (non-zip) format: nothing to check without a checksum
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f'it is not a complete zip archive ({e}; {size} bytes): truncated or corrupted'
    if bad is not None:
        return f'the CRC of its member {bad} does not match: corrupted'
    return None


def _step_of(name: str) -> int | None:
    import re
    m = re.fullmatch(r'(iter|epoch)_(\d+)\.pth', name)
    return int(m.group(2)) if m else None


def list_training_checkpoints(directory: str | os.PathLike) -> list[str]:
    """The ``iter_N.pth`` / ``epoch_N.pth`` files of ``directory``, newest (largest N) first."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return []
    found = [(_step_of(n), os.path.getmtime(os.path.join(directory, n)), n)
             for n in os.listdir(directory) if _step_of(n) is not None]
    return [os.path.join(directory, n) for _, _, n in sorted(found, reverse=True)]


def newest_valid_checkpoint(directory: str | os.PathLike,
                            exclude: tuple[str, ...] = ()) -> str | None:
    """The newest checkpoint of ``directory`` that :func:`verify_checkpoint` accepts."""
    excluded = {os.path.abspath(p) for p in exclude}
    for path in list_training_checkpoints(directory):
        if os.path.abspath(path) not in excluded and verify_checkpoint(path) is None:
            return path
    return None
