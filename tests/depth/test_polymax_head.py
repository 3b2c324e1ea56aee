"""PolyMaX-style depth head (densekit's design, no official code): shapes on odd sizes, the
mixture bounded by its bins, the k-means assignment's straight-through gradient, gradients to the
queries on both cross-attention paths."""
import pytest
import torch

from densekit.models.depth import KMeansCrossAttention, PolyMaXDepthHead, kmeans_assignment

CHANNELS = (8, 16, 24, 32)


def _pyramid(h=45, w=67, n=2):
    return [torch.randn(n, c, -(-h // s), -(-w // s), requires_grad=True)
            for c, s in zip(CHANNELS, (4, 8, 16, 32))]


def _head(**kw):
    kw = dict(channels=16, num_queries=6, decoder_blocks=(1, 1, 1), num_heads=2, ffn_channels=32,
              max_depth=10.0) | kw
    return PolyMaXDepthHead(CHANNELS, **kw)


@pytest.mark.parametrize('kmeans,blocks', [(True, (1, 1, 1)), (False, (1, 0, 2))])
def test_polymax_shapes_bounds_and_gradients(kmeans, blocks):
    torch.manual_seed(0)
    head = _head(kmeans=kmeans, decoder_blocks=blocks)
    feats = _pyramid()
    depth, bins, probs = head.predict_mixture(feats)
    h0, w0 = feats[0].shape[2:]
    assert depth.shape == (2, 1, h0, w0)
    assert bins.shape == (2, 6) and probs.shape == (2, 6, h0, w0)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, h0, w0))
    # A convex combination of the bins: within [min_k d_k, max_k d_k] per image, inside (0, max).
    lo = bins.min(1).values.view(2, 1, 1, 1)
    hi = bins.max(1).values.view(2, 1, 1, 1)
    assert bool((depth >= lo - 1e-5).all() and (depth <= hi + 1e-5).all())
    assert float(bins.detach().min()) > 0 and float(bins.detach().max()) < 10.0
    assert bool((bins.detach().std(1) > 0).all())  # distinct bins, a true mixture
    depth.mean().backward()
    assert all(f.grad is not None and torch.isfinite(f.grad).all() for f in feats)
    missing = [n for n, p in head.named_parameters()
               if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    assert head.query_embed.weight.grad.abs().sum() > 0


def test_kmeans_assignment_is_one_hot_with_softmax_gradient():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, requires_grad=True)
    hard = kmeans_assignment(logits)
    expect = torch.nn.functional.one_hot(logits.argmax(1), 5).transpose(1, 2).float()
    torch.testing.assert_close(hard.detach(), expect)
    weight = torch.randn(2, 5, 7)
    (hard * weight).sum().backward()
    ref = logits.detach().clone().requires_grad_(True)
    (ref.softmax(1) * weight).sum().backward()
    torch.testing.assert_close(logits.grad, ref.grad)
    assert logits.grad.abs().sum() > 0


def test_kmeans_cross_attention_sums_assigned_values():
    """Each query's pre-norm update is the sum of the values of the pixels it wins."""
    torch.manual_seed(0)
    attn = KMeansCrossAttention(8, kmeans=True)
    query, pixels = torch.randn(1, 3, 8), torch.randn(1, 8, 4, 5)
    captured = {}
    attn.norm.register_forward_hook(lambda m, i, o: captured.setdefault('update', i[0]))
    attn(query, pixels)
    key, value = attn.kv(pixels).flatten(2).chunk(2, dim=1)
    owner = torch.einsum('nkc,ncp->nkp', attn.q(query), key).argmax(1)[0]  # [P]
    expect = torch.stack([value[0][:, owner == k].sum(1) for k in range(3)])
    torch.testing.assert_close(captured['update'][0], expect)


def test_kmeans_and_softmax_paths_differ_and_validation():
    torch.manual_seed(0)
    a = _head(kmeans=True)
    b = _head(kmeans=False)
    b.load_state_dict(a.state_dict())
    feats = [f.detach() for f in _pyramid(n=1)]
    assert not torch.allclose(a(feats), b(feats))
    with pytest.raises(ValueError, match='decoder_blocks'):
        _head(decoder_blocks=(1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match='in_channels'):
        a(feats[:3])
