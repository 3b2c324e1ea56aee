"""CrossFormer: official-code output and input-gradient parity, the converter's key formats, sizes.

The parity fixture ``tests/fixtures/backbones/crossformer_official.pt`` was produced by
``tools/dev/make_crossformer_fixture.py`` from the official dense ``CrossFormer``
(``models/crossformer_backbone_det.py``) with ``crossformer_test``'s architecture, random weights,
eval mode, on a batch of two 67x99 inputs (every SDA / LDA padding path and maps smaller than a
group). It stores no weights: the official state dict is redrawn here from its seed and spec. The
contract checks shared with every family live in ``test_backbone_contract.py``.
"""
from pathlib import Path

import pytest
import torch

from densekit.models import build_backbone, convert_checkpoint
from densekit.models.backbones.crossformer import CrossFormer

from official_fixture import regenerate_state_dict  # noqa: E402  (tools/dev)

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'backbones' / 'crossformer_official.pt'


@pytest.fixture(scope='module')
def official():
    return torch.load(FIXTURE, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def official_state_dict(official):
    return regenerate_state_dict(official['spec'], official['seed'])


def test_official_output_and_input_gradient_parity(official, official_state_dict):
    model = build_backbone('crossformer_test', drop_path_rate=0.0).eval()
    cfg = official['config']
    assert (cfg['embed_dim'], cfg['group_size'], cfg['crs_interval']) == (40, [4] * 4, [4, 2, 2, 1])
    model.load_state_dict(convert_checkpoint('crossformer', official_state_dict), strict=True)
    x = official['input'].clone().requires_grad_(True)
    outs = model(x)
    assert len(outs) == len(official['outputs']) == 4
    for i, (ours, ref) in enumerate(zip(outs, official['outputs'])):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0, msg=f'stage {i}')
    sum(o.square().sum() for o in outs).backward()
    torch.testing.assert_close(x.grad, official['input_grad'], atol=1e-4, rtol=0)


def test_converter_accepts_detector_and_classifier_checkpoints(official_state_dict):
    sd = official_state_dict
    direct = convert_checkpoint('crossformer', sd)
    assert 'stem.projs.3.weight' in direct and 'stem.norm.weight' in direct
    assert 'stages.1.downsample.projs.1.weight' in direct and 'stages.3.downsample.norm.bias' in direct
    assert 'stages.1.blocks.1.attn.pos.pos3.2.weight' in direct

    # mmdet / mmseg checkpoints: 'backbone.' prefix next to the heads.
    wrapped = {f'backbone.{k}': v for k, v in sd.items()}
    wrapped['roi_head.bbox_head.fc_cls.weight'] = torch.zeros(1)
    det = convert_checkpoint('crossformer', {'state_dict': wrapped, 'meta': {}})
    assert det.keys() == direct.keys() and all(det[k] is direct[k] for k in direct)

    # ImageNet release: the same keys plus the final norm and the classifier head.
    cls = dict(sd, **{'norm.weight': torch.zeros(320), 'norm.bias': torch.zeros(320),
                      'head.weight': torch.zeros(1000, 320), 'head.bias': torch.zeros(1000)})
    assert convert_checkpoint('crossformer', {'model': cls}).keys() == direct.keys()

    # densekit's own keys pass through (the conversion is idempotent).
    assert convert_checkpoint('crossformer', direct).keys() == direct.keys()

    # CrossFormer++'s activation cooling layers have no counterpart: an error, not dropped.
    with pytest.raises(KeyError, match='unrecognised'):
        convert_checkpoint('crossformer', dict(sd, **{'layers.1.blocks.1.ex_conv.weight': torch.zeros(1)}))


# Parameter counts of the official dense CrossFormer (models/crossformer_backbone_det.py, no head)
# with the factory arguments of detection/ and segmentation/crossformer_factory.py (T: the
# classification configs/crossformer/tiny_patch4_group7_224.yaml); with the ImageNet head and final
# norm they are the README's 27.8M / 30.7M / 52.0M / 92.0M.
@pytest.mark.slow
@pytest.mark.parametrize('name,official_count', [
    ('crossformer_t', 27_262_770), ('crossformer_s', 29_886_858), ('crossformer_b', 51_201_018),
    ('crossformer_l', 90_944_136)])
def test_variant_sizes_match_the_official_definitions(name, official_count):
    with torch.device('meta'):
        model = build_backbone(name)
    assert sum(p.numel() for p in model.parameters()) == official_count


def test_small_maps_are_one_group_and_blocks_stay_lda():
    model = build_backbone('crossformer_test').eval()
    assert [blk.long_distance for blk in model.stages[0].blocks] == [False, True]
    lda = model.stages[1].blocks[1]
    C = lda.norm1.normalized_shape[0]
    small, large = torch.randn(1, 6, 3, C), torch.randn(1, 9, 10, C)
    with torch.no_grad():
        lda_small, lda_large = lda._attention(small), lda._attention(large)
        lda.long_distance = False
        sda_small, sda_large = lda._attention(small), lda._attention(large)
        lda.long_distance = True
        again = lda._attention(large)
    # A map whose shorter side is <= the group size is one group, whatever the block type ...
    torch.testing.assert_close(lda_small, sda_small, atol=0, rtol=0)
    # ... but that does not turn the block into SDA for the next, larger input (the official
    # block overwrites its flag on the first small map).
    assert (lda_large - sda_large).abs().max() > 1e-3
    torch.testing.assert_close(again, lda_large, atol=0, rtol=0)


def test_invalid_configurations_name_the_value():
    with pytest.raises(ValueError, match='crs_interval'):
        CrossFormer(depths=(1, 1), num_heads=(1, 2), crs_interval=(2, 1, 1))
    with pytest.raises(ValueError, match='num_heads'):
        CrossFormer(embed_dim=32, depths=(1,), num_heads=(3,), crs_interval=(1,), out_indices=(0,))
    with pytest.raises(TypeError, match='depths'):
        build_backbone('crossformer_s', depths=(1, 1, 1, 1))
