"""The flex backend refuses, before compiling anything, what the compiled FlexAttention kernel
cannot run (see ``densekit.ops._backend.flex_kernel_reason``): automatic dispatch then picks
another backend and says why in the debug log; an explicit ``backend='flex'`` (argument or
``DENSEKIT_ATTN_BACKEND``) is an error naming the limit. All on CPU: the limits are device
independent on purpose, so the CPU test vehicle refuses what the CUDA lowering would."""
import logging

import pytest
import torch

from densekit.ops import halo_attention, na1d, na2d, window_attention
from densekit.ops._backend import ENV_VAR, FLEX_MIN_HEAD_DIM

pytest.importorskip('torch.nn.attention.flex_attention')


def _ops():
    """(name, q shape for a given head_dim, call(q, k, v, backend)) for every op with a flex backend."""
    return {
        'na1d': ((1, 12, 2), lambda q, k, v, b: na1d(q, k, v, 5, rpb=torch.zeros(2, 9), backend=b)),
        'na2d': ((1, 7, 9, 2), lambda q, k, v, b: na2d(q, k, v, 3, (2, 1), rpb=torch.zeros(2, 5, 5), backend=b)),
        'window': ((1, 8, 12, 2), lambda q, k, v, b: window_attention(q, k, v, 4, 2, rpb=torch.zeros(2, 7, 7),
                                                                       backend=b)),
        'halo': ((1, 8, 8, 2), lambda q, k, v, b: halo_attention(
            q, k, v, 4, 1, rel_h=torch.zeros(11, q.shape[-1]), rel_w=torch.zeros(11, q.shape[-1]), backend=b)),
    }


OPS = sorted(_ops())


def _qkv(op, head_dim, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    shape = _ops()[op][0] + (head_dim,)
    return [torch.randn(shape, generator=g, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize('op', OPS)
def test_small_head_dim_explicit_flex_is_an_error(op, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    call = _ops()[op][1]
    q, k, v = _qkv(op, 8)
    with torch.no_grad():
        with pytest.raises(RuntimeError, match=r"backend 'flex' \(from backend argument\) cannot run this call: "
                                               r"head_dim 8 \(query/key\) / 8 \(value\) is below 16"):
            call(q, k, v, 'flex')
        monkeypatch.setenv(ENV_VAR, 'flex')
        with pytest.raises(RuntimeError, match=f'{ENV_VAR} environment variable.*head_dim 8'):
            call(q, k, v, None)


@pytest.mark.parametrize('op', OPS)
def test_small_head_dim_automatic_dispatch_skips_flex(op, monkeypatch, caplog):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    call = _ops()[op][1]
    q, k, v = _qkv(op, 8)
    with torch.no_grad(), caplog.at_level(logging.DEBUG, logger='densekit.ops'):
        out = call(q, k, v, None)
    assert "skipping backend 'flex': head_dim 8" in caplog.text, caplog.text
    assert "using backend 'reference'" in caplog.text, caplog.text
    with torch.no_grad():
        torch.testing.assert_close(out, call(q, k, v, 'reference'), atol=0, rtol=0)


@pytest.mark.parametrize('op', OPS)
def test_head_dim_at_the_limit_runs(op, monkeypatch):
    """The boundary: head_dim 16 passes the probe and the CPU flex forward agrees with the reference."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    call = _ops()[op][1]
    q, k, v = _qkv(op, FLEX_MIN_HEAD_DIM)
    with torch.no_grad():
        torch.testing.assert_close(call(q, k, v, 'flex'), call(q, k, v, 'reference'), atol=1e-5, rtol=0)


@pytest.mark.parametrize('op', OPS)
def test_float64_explicit_flex_is_an_error(op, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    q, k, v = _qkv(op, 16, torch.float64)
    with torch.no_grad(), pytest.raises(RuntimeError, match=r'dtype torch.float64 is not supported by flex'):
        _ops()[op][1](q, k, v, 'flex')


def test_torch_front_end_rejection_is_a_refusal(monkeypatch):
    """torch 2.5's front end rejected head dims that are not a power of two; the probe asks the
    installed torch's own ``_validate_embed_dim``, so such a rule becomes a refusal, not a crash."""
    import torch.nn.attention.flex_attention as fa
    from densekit.ops import _backend

    def pow2_only(query, key, value):
        for t in (query, value):
            if t.size(-1) & (t.size(-1) - 1):
                raise ValueError(f'NYI: non power of 2 embedding dimension, got {t.size(-1)}')

    monkeypatch.setattr(fa, '_validate_embed_dim', pow2_only)
    monkeypatch.setattr(_backend, '_flex_front_end_reason', _backend._flex_front_end_reason.__wrapped__)
    monkeypatch.delenv(ENV_VAR, raising=False)
    q, k, v = _qkv('na2d', 24)
    call = _ops()['na2d'][1]
    with torch.no_grad():
        with pytest.raises(RuntimeError, match='rejects head dims 24/24: NYI: non power of 2'):
            call(q, k, v, 'flex')
        q, k, v = _qkv('na2d', 32)
        torch.testing.assert_close(call(q, k, v, 'flex'), call(q, k, v, 'reference'), atol=1e-5, rtol=0)
