"""timm-wrapped seed backbones (``densekit/models/backbones/timm_seed.py``).

The contract (shapes, freezing, ``with_cp``, OpenMMLab builds) is checked for every ``*_test``
variant by ``test_backbone_contract.py``. Here: the wrapped models compute what timm computes
(same weights, timm's own ``forward_intermediates`` where timm runs the input), the adapters'
own behaviour (BoTNet's size limit, XCiT's pyramid), the checkpoint converter, and that every
named seed model is registered.
"""
import pytest
import torch

from densekit.models import build_backbone, convert_checkpoint, list_backbones

SEED = ['davit_tiny', 'twins_svt_small', 'twins_pcpvt_small', 'coat_lite_small', 'nextvit_small',
        'caformer_s18', 'convformer_s18', 'poolformerv2_s12', 'inception_next_tiny', 'xcit_small_12_p16',
        'botnet26t', 'lambda_resnet26t']


def test_every_seed_model_is_registered():
    names = set(list_backbones())
    assert set(SEED) <= names, sorted(set(SEED) - names)


def _timm_features(model, x, n):
    return model.forward_intermediates(x, indices=n, intermediates_only=True)


# (variant, extra kwargs, input size where timm runs it): timm's CoaT patch embeddings check the
# image size, BoTNet's attention is built for one size.
PARITY = [
    ('davit_test', dict(out_norm=False), (64, 96)),
    ('twins_test', {}, (64, 96)),
    ('twins_pcpvt_test', {}, (64, 96)),
    ('caformer_test', {}, (64, 96)),
    ('inception_next_test', {}, (64, 96)),
    ('nextvit_test', {}, (64, 96)),
    ('coat_test', dict(img_size=64), (64, 64)),
    ('botnet_test', dict(img_size=(64, 96)), (64, 96)),
    ('lambda_resnet_test', {}, (64, 96)),
]


@pytest.mark.parametrize('name,kwargs,size', PARITY, ids=[p[0] for p in PARITY])
def test_outputs_equal_timm(name, kwargs, size):
    torch.manual_seed(0)
    model = build_backbone(name, **kwargs).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        ours = model(x)
        theirs = _timm_features(model.model, x, 4 if not name.startswith(('botnet', 'lambda')) else [1, 2, 3, 4])
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_xcit_pyramid_is_built_on_timm_blocks():
    """Stage ``i`` ends after block ``stage_ends[i]``: the stride-16 output (identity neck) is timm's
    output of that block; the others are its transposed-convolution / pooling necks."""
    torch.manual_seed(0)
    model = build_backbone('xcit_test').eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours = model(x)
        theirs = _timm_features(model.model, x, 4)
    assert [o.shape[-2:] for o in ours] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    torch.testing.assert_close(ours[2], theirs[2], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[3], torch.nn.functional.max_pool2d(theirs[3], 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[1], model.necks[1](theirs[1]), atol=1e-5, rtol=0)


def test_botnet_pads_smaller_inputs_and_names_the_size_of_larger_ones():
    model = build_backbone('botnet_test', img_size=(64, 96)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 50, 70))
    assert [o.shape[-2:] for o in outs] == [(13, 18), (7, 9), (4, 5), (2, 3)]
    with pytest.raises(ValueError, match=r'img_size=\(64, 96\).*input of 65x96'):
        model(torch.randn(1, 3, 65, 96))
    with pytest.raises(ValueError, match='multiple of 32'):
        build_backbone('botnet_test', img_size=(100, 96))


def test_converter_loads_a_timm_checkpoint():
    """A timm-format state dict (classifier included) loads strictly after conversion, also from a
    detector checkpoint (``backbone.`` prefix)."""
    torch.manual_seed(0)
    src = build_backbone('davit_test')
    timm_sd = {k[len('model.'):]: v for k, v in src.state_dict().items() if k.startswith('model.')}
    timm_sd['head.fc.weight'] = torch.zeros(10, 128)
    dst = build_backbone('davit_test', out_indices=(3,), out_norm=False)
    converted = convert_checkpoint('timm_seed', timm_sd)
    assert 'head.fc.weight' not in converted and 'model.head.fc.weight' not in converted
    dst.load_state_dict(converted, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst.eval()(x)[0], src.model.eval().forward_intermediates(
            x, indices=[3], intermediates_only=True)[0], atol=0, rtol=0)
    det = {f'backbone.{k}': v for k, v in src.state_dict().items()}
    assert convert_checkpoint('timm_seed', det).keys() == src.state_dict().keys()
