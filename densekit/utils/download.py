"""Downloads pretrained checkpoints once into a local cache, verified and atomically.

A ``pretrained=`` / ``init_cfg=dict(type='Pretrained', checkpoint=...)`` value that is an
``http(s)://`` URL goes through :func:`resolve_checkpoint`, which returns a local file:

* the cache is ``$DENSEKIT_CACHE`` when set, else torch hub's checkpoint folder
  (``$TORCH_HOME/hub/checkpoints``, ``~/.cache/torch/hub/checkpoints`` by default), shared with
  ``torch.hub`` and mmengine, so a file already fetched by either is reused;
* the file name is the last component of the URL path; a file of that name in the cache is used
  as it is (this is also how to supply a checkpoint offline). Two URLs must never share a cache
  file: each download records its URL beside the file (``<name>.url``), and a URL whose file name
  is already taken by another recorded URL, or is generic (no extension, as OneDrive's
  ``.../content``; hub names such as ``model.safetensors``), is cached in a subfolder named after
  a hash of the URL (``url-<sha256[:16]>/<name>``);
* a download is written to a temporary file in the cache folder and renamed into place only after
  its size matches the server's ``Content-Length`` and, when the file name follows torch hub's
  ``name-<sha256 prefix>.ext`` convention, its SHA-256 starts with that prefix. A truncated or
  corrupted download never lands in the cache.

Nothing here imports torch at module import; the core loader (``densekit.engine.checkpoint``)
calls :func:`resolve_checkpoint` before it reads a file.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_ENV = 'DENSEKIT_CACHE'
# torch hub's convention (``torch.hub.HASH_REGEX``): ``resnet18-f37072fd.pth`` carries the first
# hex digits of the file's SHA-256. At least 6 digits, so that words like ``-b.pth`` are not taken
# for a hash.
_HASH_RE = re.compile(r'-([a-f0-9]{6,64})\.')
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A checkpoint URL could not be fetched or failed verification."""


def is_url(value) -> bool:
    return isinstance(value, str) and value.startswith(('http://', 'https://'))


def cache_dir() -> Path:
    """Where downloaded checkpoints are kept (``$DENSEKIT_CACHE`` or torch hub's folder)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import torch.hub  # torch hub's folder follows $TORCH_HOME / $XDG_CACHE_HOME
    return Path(torch.hub.get_dir()) / 'checkpoints'


# File names that many unrelated URLs end in: never a cache file name on their own.
_GENERIC_NAMES = frozenset({'model.safetensors', 'pytorch_model.bin', 'model.bin', 'model.pth',
                            'model.pt', 'checkpoint.pth', 'checkpoint.pt', 'open_clip_pytorch_model.bin'})


def _url_record(path: Path) -> Path:
    return path.with_name(path.name + '.url')


def cached_path(url: str, directory: str | os.PathLike | None = None) -> Path:
    """The cache file that ``url`` is (or would be) downloaded to.

    ``<cache>/<name>`` with the URL's file name, unless that name is generic or already holds the
    download of another URL (its ``.url`` record says so): then ``<cache>/url-<hash>/<name>``, a
    folder of this URL's own. A file put in the cache by hand has no record and is used as is.
    """
    name = os.path.basename(urllib.parse.urlparse(url).path)
    if not name:
        raise ValueError(f'cannot name a cache file after URL {url!r}: its path has no file name')
    root = Path(directory) if directory is not None else cache_dir()
    own = root / f'url-{hashlib.sha256(url.encode()).hexdigest()[:16]}' / name
    if '.' not in name or name.lower() in _GENERIC_NAMES:
        return own
    dst = root / name
    try:
        recorded = _url_record(dst).read_text().strip()
    except OSError:  # no record: never downloaded here, or put here by hand
        return dst
    return dst if recorded == url else own


def expected_hash_prefix(url: str) -> str | None:
    """The SHA-256 prefix a torch-hub style file name carries (``name-<prefix>.pth``), if any."""
    found = _HASH_RE.search(os.path.basename(urllib.parse.urlparse(url).path))
    return found.group(1) if found else None


def _offline_hint(url: str, dst: Path) -> str:
    return (f'download it yourself (e.g. `curl -L -o {dst} {url}`) and put it at {dst}, or set '
            f'{CACHE_ENV} to a folder that holds {dst.name}, or pass a local path instead of the URL')


def download_checkpoint(url: str, directory: str | os.PathLike | None = None,
                        timeout: float = 60.0, progress: bool = False) -> Path:
    """Returns the cached file for ``url``, downloading and verifying it first if needed.

    Args:
        url: ``http://`` or ``https://`` URL of the checkpoint.
        directory: cache folder (default :func:`cache_dir`).
        timeout: seconds to wait for the server at connect and between reads.
        progress: log the download progress every 10%.

    Raises:
        DownloadError: the server is unreachable or answers with an error, the body is shorter
            or longer than its ``Content-Length``, or its SHA-256 does not match the prefix in
            the file name. The message names the URL and where to put the file by hand.
    """
    if not is_url(url):
        raise ValueError(f'not an http(s) URL: {url!r}')
    dst = cached_path(url, directory)
    if dst.is_file():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    want_hash = expected_hash_prefix(url)
    logger.info('downloading %s to %s', url, dst)
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers={'User-Agent': 'densekit'}), timeout=timeout)
    except urllib.error.HTTPError as e:
        raise DownloadError(f'cannot download checkpoint {url}: HTTP {e.code} {e.reason}. '
                            f'If you have the file, {_offline_hint(url, dst)}') from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, 'reason', e)
        raise DownloadError(f'cannot download checkpoint {url} ({reason}); offline? '
                            f'{_offline_hint(url, dst)}') from None
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f'.{dst.name}.', suffix='.part')
    try:
        with response, os.fdopen(fd, 'wb') as out:
            length = response.headers.get('Content-Length')
            total = int(length) if length is not None and length.isdigit() else None
            sha, got, next_log = hashlib.sha256(), 0, 0.1
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except http.client.IncompleteRead as e:  # connection closed early
                    chunk = e.partial
                    sha.update(chunk)
                    got += len(chunk)
                    break
                except OSError as e:
                    raise DownloadError(f'download of {url} failed after {got} bytes ({e}); '
                                        f'{_offline_hint(url, dst)}') from None
                if not chunk:
                    break
                out.write(chunk)
                sha.update(chunk)
                got += len(chunk)
                if progress and total and got >= next_log * total:
                    logger.info('%s: %d%%', dst.name, 100 * got // total)
                    next_log += 0.1
            out.flush()
            os.fsync(out.fileno())
        if total is not None and got != total:
            raise DownloadError(f'download of {url} is truncated: got {got} of {total} bytes '
                                '(Content-Length); nothing was cached. Retry, or '
                                f'{_offline_hint(url, dst)}')
        if got == 0:
            raise DownloadError(f'download of {url} is empty; nothing was cached')
        digest = sha.hexdigest()
        if want_hash is not None and not digest.startswith(want_hash):
            raise DownloadError(f'download of {url} is corrupted: SHA-256 {digest} does not start '
                                f'with {want_hash} (from the file name); nothing was cached')
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide the cache from a team
        os.replace(tmp, dst)
        _url_record(dst).write_text(url + '\n')
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return dst


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


def resolve_checkpoint(path_or_url: str | os.PathLike) -> str | os.PathLike:
    """A URL becomes its cached local file (downloaded once); anything else is returned as is."""
    if is_url(path_or_url):
        return str(download_checkpoint(path_or_url))
    return path_or_url
