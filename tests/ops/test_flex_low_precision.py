"""Low-precision forward of the flex halo backend on CPU, where flex runs eagerly with the CUDA
kernel's precision choices (scores and score_mod in float32, probabilities rounded to the input
dtype before ``P @ V``). The relative logits ``q . rel`` of the parity inputs reach |30|: formed in
bfloat16 they lose up to 0.125 per logit (output error 0.058 here, 0.089 at the CUDA parity shape);
formed in float32 the error is the dtype's rounding of P and of the output."""
import pytest
import torch

from attn_parity import TOL, make_inputs, reference
from densekit.ops import halo_attention

pytest.importorskip('torch.nn.attention.flex_attention')


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('scale_pos_embed', [False, True])
def test_halo_flex_low_precision_forward(dtype, scale_pos_embed):
    block, halo = 8, 3  # the CUDA parity case's geometry, on a smaller map
    shape = (2, 16, 24, 2, 32)
    q, k, v, rel, go = make_inputs(shape, (2, 2 * (block + 2 * halo) - 1, shape[-1]))

    def op(q, k, v, rel, backend=None):
        return halo_attention(q, k, v, block, halo, rel_h=rel[0], rel_w=rel[1],
                              scale_pos_embed=scale_pos_embed, backend=backend)

    expected = reference(op, q, k, v, rel, go, dtype)['out']
    with torch.no_grad():
        out = op(q.to(dtype), k.to(dtype), v.to(dtype), rel.to(dtype), backend='flex')
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), expected, atol=TOL[dtype]['out'], rtol=0)
