"""densekit.utils.flops: attention ops counted by their analytic cost, everything else by torch."""
import torch
import torch.nn as nn

import densekit.ops
from densekit.ops import na2d, window_attention
from densekit.utils.flops import count_flops, count_model_flops


class _Attn(nn.Module):
    """qkv projection + one densekit attention op + output projection, as the backbones do."""

    def __init__(self, dim, heads, op, **op_kwargs):
        super().__init__()
        self.heads, self.op, self.op_kwargs = heads, op, op_kwargs  # op by name: looked up per call
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):  # x: [B, H, W, C]
        B, H, W, C = x.shape
        q, k, v = self.qkv(x).view(B, H, W, 3, self.heads, C // self.heads).unbind(3)
        fn = {'na2d': na2d, 'window_attention': window_attention}[self.op]
        out = fn(q, k, v, **self.op_kwargs)
        return self.proj(out.reshape(B, H, W, C))


def test_na_layer_hand_count():
    B, H, W, C, heads, ksize = 2, 15, 17, 32, 4, 7
    layer = _Attn(C, heads, 'na2d', kernel_size=ksize, rpb=torch.zeros(heads, 2 * ksize - 1, 2 * ksize - 1))
    c = count_model_flops(layer, torch.randn(B, H, W, C))
    tokens = B * H * W
    linears = 2 * tokens * C * 3 * C + 2 * tokens * C * C
    # every query of every head meets k*k keys: q.k (2d) and p.v (2d) per key
    attention = tokens * heads * ksize * ksize * 2 * (2 * (C // heads))
    assert c.generic == linears
    assert c.by_op == {'na2d': attention}
    assert c.total == linears + attention
    assert c.macs == c.total // 2


def test_window_layer_hand_count():
    B, H, W, C, heads, win = 1, 14, 21, 48, 3, 7
    layer = _Attn(C, heads, 'window_attention', window_size=win, shift=3)
    c = count_model_flops(layer, torch.randn(B, H, W, C))
    tokens = B * H * W
    assert c.by_op == {'window_attention': tokens * heads * win * win * 4 * (C // heads)}
    assert c.generic == 2 * tokens * C * 4 * C


def test_generic_counter_alone_miscounts_the_reference():
    """Why the analytic count exists: torch's counter sees the reference's padded tiles."""
    from torch.utils.flop_counter import FlopCounterMode
    q, k, v = torch.randn(3, 1, 15, 17, 2, 16).unbind(0)
    with FlopCounterMode(display=False) as generic:
        na2d(q, k, v, kernel_size=7, backend='reference')
    with count_flops() as ours:
        na2d(q, k, v, kernel_size=7, backend='reference')
    assert ours.total == 15 * 17 * 2 * 49 * 2 * 32
    assert generic.get_total_flops() != ours.total


def test_originals_restored_and_backbone_counted():
    from densekit.models import build_backbone
    before = densekit.ops.na2d
    m = build_backbone('nat_test').eval()
    c = count_model_flops(m, torch.randn(1, 3, 64, 96))
    assert densekit.ops.na2d is before
    assert c.calls['na2d'] > 0 and c.by_op['na2d'] > 0 and c.generic > 0


def test_routed_and_deform_sampled_hand_count():
    """BiFormer's routed attention: topk regions of H*W/R tokens per query; DAT++'s: N samples.

    Called through the module attribute inside the block (a function-local import would keep the
    uncounted original)."""
    B, H, W, heads, d, dv = 2, 8, 12, 2, 16, 8
    q = torch.randn(B, H, W, heads, d)
    v = torch.randn(B, H, W, heads, dv)
    index = torch.stack([torch.randperm(6)[:3] for _ in range(B * 6)]).view(B, 6, 3)  # 2x3 regions
    with count_flops() as c:
        densekit.ops.routed_attention(q, torch.randn_like(q), v, index, regions=(2, 3), backend='reference')
    region_tokens = (H // 2) * (W // 3)
    assert c.by_op == {'routed_attention': B * H * W * heads * 3 * region_tokens * 2 * (d + dv)}
    N, G = 10, 1
    k_s, v_s = torch.randn(B, N, heads, d), torch.randn(B, N, heads, dv)
    pos = torch.rand(B, G, N, 2) * 2 - 1
    with count_flops() as c:
        densekit.ops.deform_sampled_attention(q, k_s, v_s, pos, torch.randn(heads, 2 * H - 1, 2 * W - 1),
                                 backend='reference')
    assert c.by_op == {'deform_sampled_attention': B * H * W * heads * N * 2 * (d + dv)}


def test_window_extra_hand_count():
    B, nW, P, N, heads, d = 2, 3, 2, 9, 2, 8
    q = torch.randn(B, nW, P + N, heads, d)
    with count_flops() as c:
        densekit.ops.window_extra_attention(q, torch.randn_like(q), torch.randn_like(q), num_extra=P,
                                            backend='reference')
    assert c.by_op == {'window_extra_attention': B * nW * (P + N) * heads * (P + N) * 2 * (2 * d)}


def test_routed_deformable_and_carrier_token_backbones_counted():
    from densekit.models import build_backbone
    for name, op in (('biformer_test', 'routed_attention'), ('dat_pp_test', 'deform_sampled_attention'),
                     ('fastervit_test', 'window_extra_attention')):
        c = count_model_flops(build_backbone(name).eval(), torch.randn(1, 3, 64, 96))
        assert c.calls[op] > 0 and c.by_op[op] > 0, name
