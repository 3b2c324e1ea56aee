"""k-means cross-attention (kMaX-DeepLab): the reference against the definition (ties,
NaN, -inf), float64 gradcheck, errors, the automatic choice (the reference: Triton only by name),
no gradient to the logits, the analytic FLOP count, and Triton parity through the shared harness
(output and value gradient) on awkward shapes."""
import logging

import pytest
import torch

from attn_parity import check_backend_named
from densekit.ops.kmeans import kmeans_attention
from densekit.ops.kmeans.reference import kmeans_reference

# the value gradient is a gather of the output gradient (the role of dv)
ALIASES = {'dvalue': 'dv'}


def make_logits(B, Q, HW, seed=0, ties=True, dtype=torch.float64):
    """Logits rounded to integers, so that most pixels have several tied maxima."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, Q, HW, generator=g, dtype=dtype) * 1.5
    return logits.round() if ties else logits


def _definition(logits, value):
    """Pixel by pixel: the first maximal cluster (the first NaN if any) gets the pixel's value."""
    B, Q, HW = logits.shape
    out = torch.zeros(B, value.shape[1], Q, dtype=value.dtype)
    for b in range(B):
        for p in range(HW):
            col = logits[b, :, p].tolist()
            nans = [q for q, x in enumerate(col) if x != x]
            q = nans[0] if nans else col.index(max(col))
            out[b, :, q] += value[b, :, p]
    return out


def test_argmax_convention_is_torchs():
    """The convention the kernel reproduces: ties to the lowest index, NaN above +inf."""
    nan, inf = float('nan'), float('inf')
    x = torch.tensor([[1., 3., 3., 0.], [2., inf, nan, nan], [-inf, -inf, -inf, -inf]]).T.unsqueeze(0)
    assert x.argmax(1).tolist() == [[1, 2, 0]]


def test_reference_matches_definition():
    logits = make_logits(2, 6, 41)
    logits[0, 3, 5] = float('nan')
    logits[1, :, 7] = float('-inf')
    logits[1, 4, 9] = float('inf')
    value = torch.randn(2, 5, 41, dtype=torch.float64)
    torch.testing.assert_close(kmeans_reference(logits, value), _definition(logits, value), atol=1e-12, rtol=0)


def test_gradcheck_reference():
    logits = make_logits(2, 4, 9)
    value = torch.randn(2, 3, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: kmeans_attention(logits, v, backend='reference'), (value,))


def test_logits_get_no_gradient():
    logits = make_logits(1, 3, 10, dtype=torch.float32).requires_grad_(True)
    value = torch.randn(1, 2, 10, requires_grad=True)
    out = kmeans_attention(logits, value)
    out.square().sum().backward()
    assert logits.grad is None and value.grad.abs().sum() > 0
    assert not kmeans_attention(logits, value.detach()).requires_grad


def test_errors():
    logits, value = torch.randn(2, 4, 10), torch.randn(2, 3, 10)
    with pytest.raises(ValueError, match=r'mask_logits must be a \[B, Q, HW\] tensor, got \(4, 10\)'):
        kmeans_attention(logits[0], value)
    with pytest.raises(ValueError, match=r'value must be a \[B, C, HW\] tensor, got \(2, 3, 2, 5\)'):
        kmeans_attention(logits, value.view(2, 3, 2, 5))
    with pytest.raises(ValueError, match=r'value must be \[B=2, C, HW=10\].*got \(2, 3, 9\)'):
        kmeans_attention(logits, value[..., :9])
    with pytest.raises(ValueError, match=r'at least one cluster.*\(2, 0, 10\)'):
        kmeans_attention(logits[:, :0], value)
    with pytest.raises(ValueError, match='must be floating point, got torch.float32, torch.int64'):
        kmeans_attention(logits, value.long())
    with pytest.raises(ValueError, match='unknown backend'):
        kmeans_attention(logits, value, backend='cuda')


def test_automatic_choice_is_the_reference(monkeypatch, caplog):
    """No GPU measurement shows the kernel faster than the one-hot matmul, so the automatic choice
    is the reference on every device, with the reason logged."""
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    monkeypatch.delenv('DENSEKIT_ATTN_BACKEND', raising=False)
    logits, value = make_logits(1, 3, 8, dtype=torch.float32), torch.randn(1, 2, 8)
    with caplog.at_level(logging.DEBUG, logger='densekit.ops'):
        out = kmeans_attention(logits, value)
    assert "skipping backend 'triton': the Triton kernel is opt-in" in caplog.text
    assert "using backend 'reference'" in caplog.text
    torch.testing.assert_close(out, kmeans_reference(logits, value), atol=0, rtol=0)


def test_reference_ignores_autocast():
    """The official runs the update outside autocast: the value's dtype, not autocast's."""
    logits, value = make_logits(1, 3, 8, dtype=torch.float32), torch.randn(1, 2, 8)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = kmeans_attention(logits, value)
    assert out.dtype == torch.float32


def test_flops_are_the_one_hot_matmul():
    """Counted as the matmul the op defines (and the Triton kernel runs): 2 B Q HW C, whichever
    backend runs it."""
    import densekit.ops
    from densekit.utils.flops import count_flops
    B, Q, C, HW = 2, 5, 3, 11
    with count_flops() as c:
        densekit.ops.kmeans_attention(torch.randn(B, Q, HW), torch.randn(B, C, HW))
    assert c.by_op == {'kmeans_attention': 2 * B * Q * HW * C} and c.generic == 0
    # kMaX's decoder calls it through its module-level import, which the counter patches too
    from densekit.models.heads.kmax_deeplab import kmeans_cross_attention
    with count_flops() as c:
        kmeans_cross_attention(torch.randn(B, Q, HW), torch.randn(B, C, HW))
    assert c.by_op == {'kmeans_attention': 2 * B * Q * HW * C}


def _op(logits, config=None):
    """The op on fixed (already rounded) logits: the harness makes leaves of the value only, since
    the logits get no gradient."""
    def op(value, backend=None):
        return kmeans_attention(logits.to(device=value.device, dtype=value.dtype), value, backend=backend,
                                triton_config=config)
    return op


def _check(B, Q, C, HW, dtype, config=None, ties=True, device='cpu', logits=None):
    logits = make_logits(B, Q, HW, ties=ties, dtype=torch.float32) if logits is None else logits
    g = torch.Generator().manual_seed(1)
    value, go = torch.randn(B, C, HW, generator=g), torch.randn(B, C, Q, generator=g)
    check_backend_named(_op(logits.to(dtype), config), 'triton', {'value': value}, go, dtype, ALIASES,
                        device=device)


# The interpreter runs every program's tile ops in numpy, so the default tier keeps shapes tiny:
# (B, Q, C, HW, config): pixel counts that are not a multiple of the pixel block, one cluster,
# kMaX's 128 clusters, channel counts that are not powers of two, several cluster / channel blocks
# and pixel splits; logits rounded to integers (ties everywhere).
SMALL = dict(block_p=16)
TRITON_CASES = [
    (2, 5, 3, 37, None),
    (1, 1, 7, 50, dict(block_p=16, splits=2)),
    (1, 128, 24, 70, SMALL),
    (1, 20, 40, 70, dict(block_q=16, block_c=16, block_p=16, splits=3)),
]


@pytest.mark.parametrize('B,Q,C,HW,config', TRITON_CASES)
def test_triton_parity_fp32(triton_interpreter, B, Q, C, HW, config):
    _check(B, Q, C, HW, torch.float32, config)


def test_triton_nan_and_infinite_logits(triton_interpreter):
    """A NaN wins its pixel, an all -inf pixel goes to cluster 0, as torch.argmax."""
    logits = make_logits(2, 6, 21, dtype=torch.float32)
    logits[0, 4, 3] = logits[1, 2, 3] = logits[1, 5, 3] = float('nan')
    logits[1, :, 8] = float('-inf')
    logits[0, 1, 9] = float('inf')
    _check(2, 6, 5, 21, torch.float32, SMALL, logits=logits)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_triton_parity_low_precision(triton_interpreter, dtype):
    _check(2, 9, 17, 45, dtype, SMALL)


def test_triton_by_environment(triton_interpreter, monkeypatch):
    """``DENSEKIT_ATTN_BACKEND=triton`` selects the kernel as ``backend='triton'`` does; mixed
    logit / value dtypes (the model's bf16 logits with fp32 values) run."""
    logits, value = make_logits(1, 4, 20, dtype=torch.float32), torch.randn(1, 3, 20)
    ref = kmeans_attention(logits, value, backend='reference')
    monkeypatch.setenv('DENSEKIT_ATTN_BACKEND', 'triton')
    import densekit.ops.kmeans.triton as kt
    calls, original = [], kt.kmeans_triton
    monkeypatch.setattr(kt, 'kmeans_triton', lambda *a, **k: calls.append(1) or original(*a, **k))
    out = kmeans_attention(logits.bfloat16(), value)
    assert calls == [1]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_triton_refusals_and_config_errors(triton_interpreter):
    logits, value = make_logits(1, 3, 5, dtype=torch.float32), torch.randn(1, 2, 5)
    with pytest.raises(RuntimeError, match='dtype torch.float64 is not supported'):
        kmeans_attention(logits, value.double(), backend='triton')
    with pytest.raises(RuntimeError, match='empty input'):
        kmeans_attention(logits[..., :0], value[..., :0], backend='triton')
    with pytest.raises(RuntimeError, match='1025 clusters exceed 1024'):
        kmeans_attention(torch.randn(1, 1025, 5), value, backend='triton')
    with pytest.raises(ValueError, match=r"unknown launch configuration keys \['tile'\]"):
        kmeans_attention(logits, value, backend='triton', triton_config=dict(tile=2))
    with pytest.raises(ValueError, match='block_p=24 must be a power of two >= 16'):
        kmeans_attention(logits, value, backend='triton', triton_config=dict(block_p=24))
    with pytest.raises(ValueError, match='splits=0 must be a positive integer'):
        kmeans_attention(logits, value, backend='triton', triton_config=dict(splits=0))


def test_triton_double_backward_is_an_error(triton_interpreter):
    logits = make_logits(1, 2, 4, dtype=torch.float32)
    value = torch.randn(1, 2, 4, requires_grad=True)
    out = kmeans_attention(logits, value, backend='triton')
    (g,) = torch.autograd.grad(out.square().sum(), value, create_graph=True)
    with pytest.raises(RuntimeError, match='once_differentiable|does not require grad'):
        g.sum().backward()


@pytest.mark.slow
@pytest.mark.parametrize('B,Q,C,HW,config', [
    (2, 128, 64, 41 * 41, None),  # stride 32 of a 1281 crop, default tiles and splits
    (1, 133, 48, 300, None),  # clusters beyond one 128 block
    (1, 300, 20, 90, dict(block_q=64)),  # the pixel block shrinks for many clusters
])
def test_triton_parity_fp32_large(triton_interpreter, B, Q, C, HW, config):
    _check(B, Q, C, HW, torch.float32, config, ties=False)


@pytest.mark.gpu
@pytest.mark.parametrize('backend', ['triton'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('B,Q,C,HW,ties', [
    # the official COCO recipe (1281 crops, 2 images, 128 clusters, value depth 256) at strides
    # 32 / 16 / 8, and awkward small shapes with tied logits
    (2, 128, 256, 41 * 41, False),
    (2, 128, 256, 81 * 81, False),
    (2, 128, 256, 161 * 161, False),
    (2, 128, 256, 161 * 161, True),
    (3, 1, 7, 37, True),
    (2, 133, 100, 1001, True),
])
def test_cuda_parity(requires_cuda, backend, dtype, B, Q, C, HW, ties):
    _check(B, Q, C, HW, dtype, ties=ties, device='cuda')


def test_benchmark_smoke_runs_every_row(triton_interpreter_unchecked, tmp_path, monkeypatch):
    """``benchmarks/kmax_kmeans.py --smoke``: the one-hot, index and Triton rows of the GPU run on a
    tiny shape through the interpreter, each output checked against the one-hot form (times are
    not looked at). Without the GPU hazard checks: the parity tests run the kernel under them."""
    import importlib.util
    import json
    import pathlib
    import sys
    path = pathlib.Path(__file__).resolve().parents[2] / 'benchmarks' / 'kmax_kmeans.py'
    spec = importlib.util.spec_from_file_location('dk_bench_kmax_kmeans', path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / 'kmeans.json'
    monkeypatch.setattr(sys, 'argv', ['kmax_kmeans.py', '--device', 'cpu', '--smoke', '--queries', '9',
                                      '--channels', '24', '--reps', '1', '--json', str(out)])
    bench.main()
    rows = json.loads(out.read_text())['rows']
    assert [(r['shape'], r['pass']) for r in rows] == [(s, p) for s in bench.SMOKE_SHAPES for p in ('fwd', 'fwd+bwd')]
    for r in rows:
        assert r['index_max_abs_diff'] < 1e-5 and r['triton_max_abs_diff'] < 1e-5, r
        assert all(r[f'{f}_ms'] > 0 for f in bench.FORMS), r
