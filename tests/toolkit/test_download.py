"""Checkpoint URLs are downloaded once, verified, atomically cached and loaded safely.

A real HTTP server on 127.0.0.1 (``http.server`` in a thread) serves the files: a good
checkpoint, one whose name carries a wrong SHA-256 prefix, a truncated body and a 404.
"""
import hashlib
import http.server
import io
import os
import socket
import threading

import pytest
import torch

from densekit.utils.download import DownloadError, download_checkpoint, expected_hash_prefix


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    truncated: set = set()
    hits: dict = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        name = self.path.lstrip('/')
        type(self).hits[name] = type(self).hits.get(name, 0) + 1
        if name not in self.files:
            self.send_error(404, 'Not Found')
            return
        body = self.files[name]
        self.send_response(200)
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if name in self.truncated:  # promise the whole file, send half, hang up
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture(scope='module')
def server():
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()


def _checkpoint_bytes(state_dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    return buf.getvalue()


def _serve(name: str, body: bytes, truncated: bool = False) -> None:
    _Handler.files[name] = body
    _Handler.hits.pop(name, None)
    if truncated:
        _Handler.truncated.add(name)


def _hashed_name(stem: str, body: bytes) -> str:
    return f'{stem}-{hashlib.sha256(body).hexdigest()[:8]}.pth'


def _cache_listing(d):
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def test_download_once_with_hash_check(server, tmp_path):
    body = _checkpoint_bytes({'w': torch.arange(1000.)})
    name = _hashed_name('tiny', body)
    _serve(name, body)
    url = f'{server}/{name}'
    assert expected_hash_prefix(url) == name[-12:-4]
    path = download_checkpoint(url, tmp_path)
    assert path == tmp_path / name and path.read_bytes() == body
    assert (path.stat().st_mode & 0o777) == (0o666 & ~_umask())  # not mkstemp's 0600
    assert download_checkpoint(url, tmp_path) == path
    assert _Handler.hits[name] == 1, 'the second call must come from the cache'
    assert _cache_listing(tmp_path) == [name, name + '.url']  # the file and the URL it came from
    assert (tmp_path / (name + '.url')).read_text().strip() == url


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_wrong_hash_is_not_cached(server, tmp_path):
    body = _checkpoint_bytes({'w': torch.ones(10)})
    name = 'tiny-0123abcd.pth'  # a prefix the body does not have
    _serve(name, body)
    with pytest.raises(DownloadError, match='0123abcd'):
        download_checkpoint(f'{server}/{name}', tmp_path)
    assert _cache_listing(tmp_path) == []


def test_truncated_download_is_not_cached(server, tmp_path):
    body = _checkpoint_bytes({'w': torch.randn(50_000)})
    _serve('big.pth', body, truncated=True)
    with pytest.raises(DownloadError, match=rf'truncated: got {len(body) // 2} of {len(body)} bytes'):
        download_checkpoint(f'{server}/big.pth', tmp_path)
    assert _cache_listing(tmp_path) == [], 'no partial file may remain in the cache'


def test_404_names_url_and_destination(server, tmp_path):
    url = f'{server}/missing.pth'
    with pytest.raises(DownloadError) as e:
        download_checkpoint(url, tmp_path)
    msg = str(e.value)
    assert 'HTTP 404' in msg and url in msg and str(tmp_path / 'missing.pth') in msg
    assert _cache_listing(tmp_path) == []


def test_offline_error_names_url_and_where_to_put_the_file(tmp_path):
    with socket.socket() as s:  # a port with nobody listening: connection refused, as offline
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    url = f'http://127.0.0.1:{port}/convnext_tiny_1k_224_ema.pth'
    with pytest.raises(DownloadError) as e:
        download_checkpoint(url, tmp_path, timeout=5)
    msg = str(e.value)
    assert url in msg and str(tmp_path / 'convnext_tiny_1k_224_ema.pth') in msg
    assert 'DENSEKIT_CACHE' in msg


def test_file_put_in_cache_by_hand_is_used_offline(tmp_path, monkeypatch):
    monkeypatch.setenv('DENSEKIT_CACHE', str(tmp_path))
    body = _checkpoint_bytes({'w': torch.ones(3)})
    (tmp_path / 'offline.pth').write_bytes(body)
    from densekit.utils.download import resolve_checkpoint
    assert resolve_checkpoint('http://127.0.0.1:9/offline.pth') == str(tmp_path / 'offline.pth')
    assert resolve_checkpoint('local/path.pth') == 'local/path.pth'


def test_load_pretrained_from_url_goes_through_the_converter(server, tmp_path, monkeypatch):
    """An official-format Swin checkpoint at a URL loads into densekit's Swin (converter applied)."""
    pytest.importorskip('mmdet')
    from mmdet.models.backbones.swin import SwinTransformer as MMDetSwin

    from densekit.engine.checkpoint import load_pretrained
    from densekit.models import build_backbone
    monkeypatch.setenv('DENSEKIT_CACHE', str(tmp_path / 'cache'))
    src = MMDetSwin(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=7)
    for p in src.parameters():
        torch.nn.init.normal_(p, std=0.2)
    body = _checkpoint_bytes({'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}})
    name = _hashed_name('mask_rcnn_swin', body)
    _serve(name, body)
    dst = build_backbone('swin_test')
    missing, unexpected = load_pretrained(dst, f'{server}/{name}', prefix='backbone.')
    assert not unexpected and not [k for k in missing if 'relative_position_index' not in k]
    assert (tmp_path / 'cache' / name).is_file()
    x = torch.randn(1, 3, 64, 96)
    src.eval()
    with torch.no_grad():
        for a, b in zip(dst.eval()(x), src(x)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_timm_backbone_pretrained_url(server, tmp_path, monkeypatch):
    pytest.importorskip('timm')
    from densekit.models import build_backbone
    monkeypatch.setenv('DENSEKIT_CACHE', str(tmp_path))
    src = build_backbone('TimmBackbone', model_name='resnet18', out_indices=(1,))
    sd = {k.replace('model.', '', 1): v + 0.5 for k, v in src.state_dict().items()}
    _serve('timm_resnet18.pth', _checkpoint_bytes(sd))
    m = build_backbone('TimmBackbone', model_name='resnet18', out_indices=(1,),
                       pretrained=f'{server}/timm_resnet18.pth')
    torch.testing.assert_close(m.model.conv1.weight, sd['conv1.weight'], atol=0, rtol=0)


class _NotAllowed:  # a global outside the safe loader's allow-list
    pass


def test_mmengine_load_from_url_uses_the_safe_loader(server, tmp_path, monkeypatch):
    """``load_from`` / mmengine ``Pretrained`` URLs go through mmengine's ``CheckpointLoader``,
    whose http scheme densekit re-registers with its safe loader: a pickle with a foreign global
    is refused, a plain one loads."""
    pytest.importorskip('mmengine')
    import densekit  # noqa: F401  (installs the scheme)
    from mmengine.runner.checkpoint import CheckpointLoader

    from densekit.compat.safe_load import UnsafeCheckpointError
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    _serve('plain.pth', _checkpoint_bytes({'state_dict': {'w': torch.ones(2)}}))
    _serve('unsafe.pth', _checkpoint_bytes({'state_dict': {}, 'x': _NotAllowed()}))
    ckpt = CheckpointLoader.load_checkpoint(f'{server}/plain.pth', map_location='cpu')
    torch.testing.assert_close(ckpt['state_dict']['w'], torch.ones(2))
    with pytest.raises(UnsafeCheckpointError):
        CheckpointLoader.load_checkpoint(f'{server}/unsafe.pth', map_location='cpu')


def test_init_model_with_a_checkpoint_url(server, tmp_path, monkeypatch):
    """``densekit.apis.init_model(config, URL)``: downloaded into the cache, then loaded."""
    pytest.importorskip('mmseg')
    from pathlib import Path

    from densekit.apis import init_model
    monkeypatch.setenv('DENSEKIT_CACHE', str(tmp_path))
    cfg = Path(__file__).resolve().parents[2] / 'configs/quickstart/fpn_r18_synthetic-ade.py'
    src = init_model(cfg)
    sd = {k: v + 1 if v.is_floating_point() else v for k, v in src.state_dict().items()}
    body = _checkpoint_bytes({'state_dict': sd, 'meta': {'dataset_meta': {'classes': list('abcdef')}}})
    name = _hashed_name('fpn_r18', body)
    _serve(name, body)
    model = init_model(cfg, f'{server}/{name}')
    assert (tmp_path / name).is_file() and model.dataset_meta['classes'] == list('abcdef')
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, sd[k], atol=0, rtol=0)


def test_urls_sharing_a_file_name_never_share_a_cache_file(server, tmp_path):
    """OneDrive-style '.../content' links and two releases of the same file name: each URL keeps
    its own bytes (a shared cache name would hand the second URL the first one's weights)."""
    a = _checkpoint_bytes({'w': torch.zeros(3)})
    b = _checkpoint_bytes({'w': torch.ones(5)})
    _serve('share/a/root/content', a)
    _serve('share/b/root/content', b)
    _serve('release1/weights.pth', a)
    _serve('release2/weights.pth', b)
    for first, second in (('share/a/root/content', 'share/b/root/content'),
                          ('release1/weights.pth', 'release2/weights.pth')):
        p1 = download_checkpoint(f'{server}/{first}', tmp_path)
        p2 = download_checkpoint(f'{server}/{second}', tmp_path)
        assert p1 != p2
        assert p1.read_bytes() == a and p2.read_bytes() == b
        # both stay cached: asking again downloads nothing and returns the same files
        assert download_checkpoint(f'{server}/{first}', tmp_path) == p1
        assert download_checkpoint(f'{server}/{second}', tmp_path) == p2
        assert _Handler.hits[first] == 1 and _Handler.hits[second] == 1
    # a specific file name keeps the plain cache name for the first URL that used it
    assert (tmp_path / 'weights.pth').read_bytes() == a


def test_generic_hub_file_names_get_a_folder_per_url(server, tmp_path):
    body = _checkpoint_bytes({'w': torch.arange(4.)})
    _serve('org/model-x/resolve/main/pytorch_model.bin', body)
    p = download_checkpoint(f'{server}/org/model-x/resolve/main/pytorch_model.bin', tmp_path)
    assert p.name == 'pytorch_model.bin' and p.parent != tmp_path
    assert p.parent.name.startswith('url-') and p.read_bytes() == body
