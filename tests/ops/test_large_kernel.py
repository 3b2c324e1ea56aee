"""Large-kernel depthwise convolution: the reference against the definition, gradcheck, errors,
the automatic choice (the reference: Triton only by name), and Triton parity through the shared
harness (output, input, weight and bias gradients)."""
import logging

import pytest
import torch

from attn_parity import check_backend_named
from densekit.ops.large_kernel import large_kernel_conv2d

# the input gradient sums K * K products per element (the role of dq); the weight and bias
# gradients sum over every image and position (the role of the attention bias gradient)
ALIASES = {'dx': 'dq', 'dweight': 'dbias', 'dbias': 'dbias'}


def make_case(B, C, H, W, k, bias=True, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    inputs = dict(x=torch.randn(B, C, H, W, generator=g, dtype=dtype),
                  weight=torch.randn(C, 1, k, k, generator=g, dtype=dtype) / k)
    if bias:
        inputs['bias'] = torch.randn(C, generator=g, dtype=dtype)
    return inputs, torch.randn(B, C, H, W, generator=g, dtype=dtype)


def _naive(x, weight, bias, dilation):
    """The definition, one kernel tap at a time on the zero-padded map."""
    B, C, H, W = x.shape
    k = weight.shape[-1]
    p = dilation * (k - 1) // 2
    xp = torch.nn.functional.pad(x, [p] * 4)
    out = torch.zeros_like(x) + (bias.view(1, C, 1, 1) if bias is not None else 0)
    for i in range(k):
        for j in range(k):
            out = out + weight[:, 0, i, j].view(1, C, 1, 1) * xp[:, :, i * dilation:i * dilation + H,
                                                                 j * dilation:j * dilation + W]
    return out


@pytest.mark.parametrize('B,C,H,W,k,dilation,bias', [(2, 3, 9, 7, 13, 1, True), (1, 2, 5, 6, 31, 1, False),
                                                     (1, 3, 11, 12, 7, 3, True), (1, 1, 4, 9, 3, 5, True)])
def test_reference_matches_definition(B, C, H, W, k, dilation, bias):
    inputs, _ = make_case(B, C, H, W, k, bias, dtype=torch.float64)
    got = large_kernel_conv2d(**inputs, dilation=dilation, backend='reference')
    want = _naive(inputs['x'], inputs['weight'], inputs.get('bias'), dilation)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_gradcheck_reference():
    inputs, _ = make_case(1, 2, 4, 3, 3, dtype=torch.float64)  # dilated 3x3: 5 wide, beyond the map
    leaves = [t.requires_grad_(True) for t in inputs.values()]
    # fast mode (a random projection of the Jacobian): a float64 depthwise convolution takes tens of
    # ms per call on CPU, and the full Jacobian needs two calls per input element
    assert torch.autograd.gradcheck(
        lambda x, w, b: large_kernel_conv2d(x, w, b, dilation=2, backend='reference'), leaves, fast_mode=True)


def test_errors():
    x = torch.randn(1, 4, 8, 8)
    w = torch.randn(4, 1, 5, 5)
    with pytest.raises(ValueError, match=r'x must be a \[B, C, H, W\] tensor, got \(4, 8, 8\)'):
        large_kernel_conv2d(x[0], w)
    with pytest.raises(ValueError, match=r'weight must be \[C=4, 1, k, k\].*\(4, 2, 5, 5\)'):
        large_kernel_conv2d(x, torch.randn(4, 2, 5, 5))
    with pytest.raises(ValueError, match=r'weight must be \[C=4, 1, k, k\].*\(4, 1, 5, 3\)'):
        large_kernel_conv2d(x, torch.randn(4, 1, 5, 3))
    with pytest.raises(ValueError, match='kernel size must be odd.*got 4'):
        large_kernel_conv2d(x, torch.randn(4, 1, 4, 4))
    with pytest.raises(ValueError, match=r'bias must be \[C=4\] or None, got \(3,\)'):
        large_kernel_conv2d(x, w, torch.randn(3))
    with pytest.raises(ValueError, match='weight .*float64.* must match x .*float32'):
        large_kernel_conv2d(x, w.double())
    with pytest.raises(ValueError, match='x must be floating point, got torch.int64'):
        large_kernel_conv2d(x.long(), w.long())
    with pytest.raises(ValueError, match='dilation must be >= 1, got 0'):
        large_kernel_conv2d(x, w, dilation=0)
    with pytest.raises(TypeError, match='dilation must be an integer, got 1.5'):
        large_kernel_conv2d(x, w, dilation=1.5)
    with pytest.raises(ValueError, match='unknown backend'):
        large_kernel_conv2d(x, w, backend='cudnn')


def test_automatic_choice_is_the_reference(monkeypatch, caplog):
    """No GPU measurement shows the Triton kernels faster than cuDNN, so the automatic choice is
    the reference on every device, with the reason logged; an explicit request still runs."""
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    monkeypatch.delenv('DENSEKIT_ATTN_BACKEND', raising=False)
    x, w = torch.randn(1, 2, 5, 5), torch.randn(2, 1, 13, 13)
    with caplog.at_level(logging.DEBUG, logger='densekit.ops'):
        out = large_kernel_conv2d(x, w)
    assert 'skipping backend \'triton\': the Triton kernels are opt-in' in caplog.text
    assert "using backend 'reference'" in caplog.text
    torch.testing.assert_close(out, torch.nn.functional.conv2d(x, w, padding=6, groups=2), atol=0, rtol=0)


def _op(dilation, config=None):
    def op(x, weight, bias=None, backend=None):
        return large_kernel_conv2d(x, weight, bias, dilation=dilation, backend=backend, triton_config=config)
    return op


def _check(case, dtype, dilation=1, config=None, device='cpu'):
    inputs, go = make_case(*case)
    check_backend_named(_op(dilation, config), 'triton', inputs, go, dtype, ALIASES, device=device)


# The interpreter runs a program per call of numpy per tile op, so the default tier keeps maps
# small: (B, C, H, W, k, bias) with odd sizes, maps smaller than the kernel, channel counts that
# are not powers of two; one case with the default launch configuration, the others with larger
# tiles (fewer interpreted steps; the same code with other constants).
BIG_TILES = dict(block_h=32, block_w=32, block_k=64, wgrad_rows=4, wgrad_cols=16)
TRITON_CASES = [
    ((2, 2, 7, 5, 13, True), 1, None),  # UniRepLKNet's 13x13 on a map smaller than the kernel, batch 2
    ((1, 3, 9, 11, 31, True), 1, BIG_TILES),  # RepLKNet's 31x31
    ((1, 5, 9, 11, 7, False), 3, BIG_TILES),  # VAN's 7x7 dilation 3, no bias
    ((1, 3, 8, 10, 3, True), 5, BIG_TILES),  # UniRepLKNet's 3x3 dilation-5 branch
    # 2 x 2 output tiles, partial at the bottom and right, three weight-gradient partials
    ((1, 1, 18, 20, 3, True), 1, dict(block_h=16, block_w=16, wgrad_rows=2, wgrad_cols=8, wgrad_splits=3)),
]


@pytest.mark.parametrize('case,dilation,config', TRITON_CASES)
def test_triton_parity_fp32(triton_interpreter, case, dilation, config):
    _check(case, torch.float32, dilation, config)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_triton_parity_low_precision(triton_interpreter, dtype):
    _check((1, 3, 5, 7, 13, True), dtype, 1, BIG_TILES)


def test_triton_by_environment(triton_interpreter, monkeypatch):
    """``DENSEKIT_ATTN_BACKEND=triton`` selects the kernels as ``backend='triton'`` does."""
    inputs, _ = make_case(1, 2, 5, 6, 13)
    ref = large_kernel_conv2d(**inputs, backend='reference')
    monkeypatch.setenv('DENSEKIT_ATTN_BACKEND', 'triton')
    import densekit.ops.large_kernel.triton as lkt
    calls, original = [], lkt.large_kernel_triton
    monkeypatch.setattr(lkt, 'large_kernel_triton', lambda *a, **k: calls.append(1) or original(*a, **k))
    out = large_kernel_conv2d(**inputs)
    assert calls == [1]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_triton_double_backward_is_an_error(triton_interpreter):
    inputs, _ = make_case(1, 1, 3, 3, 3, bias=False)
    x = inputs['x'].requires_grad_(True)
    out = large_kernel_conv2d(x, inputs['weight'], backend='triton')
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match='once_differentiable|does not require grad'):
        g.sum().backward()


def test_triton_config_errors(triton_interpreter):
    inputs, _ = make_case(1, 1, 3, 3, 3)
    with pytest.raises(ValueError, match=r"unknown launch configuration keys \['tile'\]"):
        large_kernel_conv2d(**inputs, backend='triton', triton_config=dict(tile=2))
    with pytest.raises(ValueError, match='block_w=24 must be a power of two >= 16'):
        large_kernel_conv2d(**inputs, backend='triton', triton_config=dict(block_w=24))


@pytest.mark.slow
@pytest.mark.parametrize('case,dilation,config', [
    # several output tiles and weight-gradient splits, default launch configuration
    ((2, 5, 37, 45, 31, True), 1, None),
    ((2, 6, 33, 70, 13, True), 1, None),
    ((1, 3, 29, 35, 13, False), 1, dict(wgrad_splits=3)),
    ((1, 4, 40, 23, 5, True), 3, None),
])
def test_triton_parity_fp32_large(triton_interpreter, case, dilation, config):
    _check(case, torch.float32, dilation, config)


@pytest.mark.slow
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_triton_parity_low_precision_large(triton_interpreter, dtype):
    _check((2, 3, 70, 37, 31, True), dtype)


@pytest.mark.gpu
@pytest.mark.parametrize('backend', ['triton'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('case,dilation', [
    # channels and kernels of RepLKNet-31B (128 channels with 31x31 on half its stride-4 map of an
    # 800x1333 image; 1024 channels with 13x13 at stride 32: 25x42), UniRepLKNet-T stage 2 (50x84,
    # 160 channels, 13x13) and its 3x3 dilation-5 branch, VAN's 7x7 dilation 3, odd small shapes.
    # The fp32 reference runs on the CPU, hence batch 1 and half maps for the largest.
    ((1, 128, 100, 167, 31, True), 1),
    ((1, 1024, 25, 42, 13, True), 1),
    ((2, 160, 50, 84, 13, True), 1),
    ((2, 160, 50, 84, 3, False), 5),
    ((1, 64, 100, 167, 7, True), 3),
    ((3, 5, 9, 7, 31, True), 1),
])
def test_cuda_parity(requires_cuda, backend, dtype, case, dilation):
    _check(case, dtype, dilation, device='cuda')


@pytest.mark.parametrize('k,dilation,bias', [(13, 1, True), (7, 3, False)])
def test_module_is_an_nn_conv2d_with_the_same_outputs(k, dilation, bias):
    """``LargeKernelConv2d`` keeps ``nn.Conv2d``'s parameters, keys and (automatic backend) outputs."""
    from densekit.layers import LargeKernelConv2d
    m = LargeKernelConv2d(4, k, dilation=dilation, bias=bias)
    plain = torch.nn.Conv2d(4, 4, k, padding=dilation * (k - 1) // 2, dilation=dilation, groups=4, bias=bias)
    plain.load_state_dict(m.state_dict())  # strict: the same keys and shapes
    x = torch.randn(2, 4, 9, 11)
    torch.testing.assert_close(m(x), plain(x), atol=0, rtol=0)
    m.backend = 'triton'
    twin = LargeKernelConv2d.like(m)
    assert type(twin) is LargeKernelConv2d and twin.backend == 'triton' and twin.bias is not None
    assert (twin.kernel_size, twin.dilation, twin.padding) == (m.kernel_size, m.dilation, m.padding)
    with pytest.raises(ValueError, match='kernel_size=4 must be odd'):
        LargeKernelConv2d(4, 4)


def test_module_under_autocast_matches_nn_conv2d():
    """Mixed precision: a bf16 activation meets the fp32 parameters as in ``nn.Conv2d``."""
    from densekit.layers import LargeKernelConv2d
    m = LargeKernelConv2d(3, 13)
    plain = torch.nn.Conv2d(3, 3, 13, padding=6, groups=3)
    plain.load_state_dict(m.state_dict())
    x = torch.randn(1, 3, 6, 7)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got, want = m(x.bfloat16()), plain(x.bfloat16())
        got32, want32 = m(x), plain(x)
    assert got.dtype == want.dtype == got32.dtype == want32.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    torch.testing.assert_close(got32, want32, atol=0, rtol=0)


@pytest.mark.parametrize('name', ['replknet_test', 'unireplknet_test'])
def test_reparameterized_kernels_stay_on_the_op(name):
    """The fused kernels that ``reparameterize()`` builds are ``LargeKernelConv2d`` too, so a
    backend chosen for the op also runs the inference model."""
    from densekit.layers import LargeKernelConv2d
    from densekit.models import build_backbone
    model = build_backbone(name).eval()
    before = sum(isinstance(m, LargeKernelConv2d) for m in model.modules())
    model.reparameterize()
    fused = [m for m in model.modules() if isinstance(m, LargeKernelConv2d)]
    assert before >= len(fused) > 0
    assert all(m.bias is not None for m in fused)


def test_benchmark_smoke_runs_every_row(triton_interpreter_unchecked, tmp_path, monkeypatch):
    """``benchmarks/large_kernel.py --smoke``: the reference and Triton rows of the GPU run on tiny
    shapes through the interpreter, the Triton output checked, ratios against the same run's
    reference row (times are not looked at). Without the GPU hazard checks: the parity tests run
    the same kernels under them."""
    import importlib.util
    import json
    import pathlib
    import sys
    path = pathlib.Path(__file__).resolve().parents[2] / 'benchmarks' / 'large_kernel.py'
    spec = importlib.util.spec_from_file_location('dk_bench_large_kernel', path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / 'lk.json'
    monkeypatch.setattr(sys, 'argv', ['large_kernel.py', '--device', 'cpu', '--smoke', '--batch', '1',
                                      '--json', str(out)])
    bench.main()
    rows = {(r['case'], r['impl']): r for r in json.loads(out.read_text())['rows']}
    assert sorted(rows) == sorted((c, i) for c in bench.SMOKE_CASES for i in ('reference', 'triton'))
    for (case, impl), r in rows.items():
        assert 'error' not in r, r
        if impl == 'triton':
            assert r['max_rel_diff'] < 1e-5 and r['fwd_ratio'] > 0 and r['fwdbwd_ratio'] > 0, r
