"""32-bit offsets in the Triton kernels: offsets are computed from int32 program ids and int32
integer arguments, so a tensor or scratch buffer of 2**31 elements or more would be indexed with
wrapped offsets (a silent wrong answer or an illegal memory access on the GPU). The probes refuse
such calls, so that automatic dispatch falls back and an explicit ``backend='triton'`` is an
error. Nothing here allocates more than a few bytes: inputs are ``expand`` views of one element
(or meta tensors), and the kernel entry points are replaced by a stub that fails if reached."""
import pytest
import torch

from densekit.ops import halo_attention, na1d, na2d, window_attention
from densekit.ops._backend import TRITON_INT32_ELEMENTS, index_span, int32_offset_reason

LIMIT = TRITON_INT32_ELEMENTS


def _big(*shape):
    """A ``shape`` view of one element: numel may pass 2**31 without any memory."""
    return torch.zeros((1,) * len(shape)).expand(*shape)


@pytest.fixture
def no_kernels(monkeypatch):
    """Fail (instead of computing for minutes on gigabytes) if a call gets past the probe."""
    def launched(*args, **kwargs):
        raise AssertionError('the Triton kernels were launched')
    for target in ('densekit.ops.neighborhood.triton.na_triton', 'densekit.ops.window.triton.window_triton',
                   'densekit.ops.halo.triton.halo_triton'):
        monkeypatch.setattr(target, launched)


# ---------------------------------------------------------------- the shared helpers
def test_index_span_counts_the_strided_reach():
    """A packed-qkv view reaches three times its element count; an expanded input is copied to a
    contiguous tensor by the wrappers, so its element count counts."""
    qkv = torch.empty(2, 5, 7, 3, 4, 8, device='meta')  # [B, H, W, 3, heads, D]
    q = qkv[:, :, :, 0]
    assert index_span(q) == 1 + (2 * 5 * 7 - 1) * 3 * 4 * 8 + (4 * 8 - 1)
    assert index_span(qkv) == qkv.numel()
    assert index_span(_big(3, 5, 7)) == 105
    assert index_span(torch.empty(0, 4)) == 0
    wide = torch.empty(1, device='meta').as_strided((2, 3), (LIMIT, 1))
    assert wide.numel() == 6 and index_span(wide) == LIMIT + 3


def test_int32_offset_reason_at_the_boundary():
    assert int32_offset_reason({'q': LIMIT - 1, 'k': 0}) is None
    assert int32_offset_reason({'q': 1, 'the dS buffer': LIMIT}) == (
        f'the dS buffer spans {LIMIT} elements, at least 2**31 = {LIMIT}: the Triton kernels index it with '
        '32-bit offsets')


# ---------------------------------------------------------------- the ops' probes
OPS = {
    'na1d': lambda q, **kw: na1d(q.flatten(1, 2), q.flatten(1, 2), q.flatten(1, 2), 5, **kw),
    'na2d': lambda q, **kw: na2d(q, q, q, 3, dilation=2, **kw),
    'window': lambda q, **kw: window_attention(q, q, q, 4, 2, **kw),
    'halo': lambda q, **kw: halo_attention(q, q, q, 4, 1, **kw),
}


@pytest.mark.parametrize('op', OPS)
def test_triton_refuses_inputs_of_2_31_elements(triton_interpreter, no_kernels, op):
    """q, k, v of 2**31 elements (8 GiB in fp32, 4 GiB in bf16) with batch * heads well inside the
    grid: the probe accepted them and the kernels indexed them with wrapped int32 offsets."""
    q = _big(1, 4096, 4096, 8, 16)
    assert q.numel() == LIMIT
    with pytest.raises(RuntimeError, match=rf"backend 'triton'.*q spans {LIMIT} elements, at least 2\*\*31"):
        OPS[op](q, backend='triton')


def test_na_refuses_a_rpb_gradient_buffer_of_2_31_elements(triton_interpreter, no_kernels):
    """The fp32 dS buffer of the rpb gradient is [B, tokens, heads, kh*kw]: with a 13x13 kernel it
    is ~10x q (2**28 elements here) and passes 2**31 while q is far below."""
    q = _big(1, 2048, 4096, 2, 16)
    rpb = torch.zeros(2, 25, 25, requires_grad=True)
    n = 2048 * 4096 * 2 * 13 * 13
    with pytest.raises(RuntimeError, match=rf"backend 'triton'.*the dS buffer of the rpb gradient spans {n} "):
        na2d(q, q, q, 13, rpb=rpb, backend='triton')


def test_na_dS_buffer_counts_only_when_the_bias_needs_a_gradient():
    from densekit.ops.neighborhood import _scratch_sizes
    q = _big(1, 2048, 4096, 2, 16)
    rpb = torch.zeros(2, 25, 25, requires_grad=True)
    assert 'the dS buffer of the rpb gradient' in _scratch_sizes(q, (13, 13), rpb)
    with torch.no_grad():
        assert int32_offset_reason(_scratch_sizes(q, (13, 13), rpb)) is None
    assert int32_offset_reason(_scratch_sizes(q, (13, 13), rpb.detach())) is None


def test_window_refuses_a_rpb_gradient_buffer_of_2_31_elements(triton_interpreter, no_kernels):
    """The fp32 dS buffer [image chunks, windows, heads, N, N] of one 2048 x 4096 image with 16 x 16
    windows is 2**31 elements (q: 2**27)."""
    q = _big(1, 2048, 4096, 1, 16)
    rpb = torch.zeros(1, 31, 31, requires_grad=True)
    with pytest.raises(RuntimeError, match=rf"backend 'triton'.*the dS buffer of the rpb gradient spans {LIMIT} "):
        window_attention(q, q, q, 16, rpb=rpb, backend='triton')


def test_halo_refuses_a_logit_table_of_2_31_elements(triton_interpreter, no_kernels):
    """The fp32 relative-logit tables are [B, H, W, heads, 2*win-1]: 27 entries per query for block
    8 / halo 3, against a head dim of 4 here (q: 2**29 elements)."""
    q = _big(1, 4096, 4096, 8, 4)
    rel = torch.zeros(27, 4)
    n = 4096 * 4096 * 8 * 27
    with pytest.raises(RuntimeError, match=rf"backend 'triton'.*the rel_w logit table spans {n} "):
        halo_attention(q, q, q, 8, 3, rel_w=rel, backend='triton')


# ---------------------------------------------------------------- multi-scale deformable attention
def _define_kernels_interpreted(monkeypatch):
    """``@triton.jit`` fixes the mode when a kernel module is first imported: importing the MSDA
    kernels here without ``TRITON_INTERPRET`` would leave compiled kernels that the interpreter
    tests run later in this process cannot launch on CPU."""
    monkeypatch.setenv('TRITON_INTERPRET', '1')


def test_ms_deform_attn_triton_refuses_an_image_of_value_of_2_31_elements(monkeypatch):
    """Rows inside one image of ``value`` are gathered with int32 offsets (the batch offset is
    int64): one image of S * heads * D >= 2**31 elements must be refused (an explicit request:
    an error)."""
    pytest.importorskip('triton')
    _define_kernels_interpreted(monkeypatch)
    from densekit.ops.mmcv.ms_deform_attn import ms_deform_attn

    class Launched(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *args):
            raise AssertionError('the Triton kernels were launched')

    monkeypatch.setattr('densekit.ops.mmcv.ms_deform_attn.triton._MSDeformAttnTriton', Launched)
    value = _big(1, 8192 * 16384, 8, 2)
    shapes = torch.tensor([[8192, 16384]])
    starts = torch.tensor([0])
    loc = torch.zeros(1, 1, 8, 1, 1, 2)
    attn = torch.zeros(1, 1, 8, 1, 1)
    with pytest.raises(RuntimeError, match=rf"backend 'triton'.*one image of value \(S \* heads \* head_dim\) spans {LIMIT} "):
        ms_deform_attn(value, shapes, starts, loc, attn, backend='triton')


def test_ms_deform_attn_triton_grid_limit(monkeypatch):
    pytest.importorskip('triton')
    _define_kernels_interpreted(monkeypatch)
    from densekit.ops.mmcv.ms_deform_attn.triton import int32_reason
    assert int32_reason((2, 100, 8, 32), (2, 300, 8, 4, 4, 2)) is None
    assert 'exceed the grid limit 2147483647' in int32_reason((1, 100, 8, 32), (1, 2 ** 28, 8, 4, 4, 2))
