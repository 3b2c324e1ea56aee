"""MaskedConv2d (mmcv has only a CUDA kernel): against a float64 dense convolution masked at the
output, through mmcv's API and densekit's function; mmdet's Guided Anchoring head uses it."""
import pytest
import torch
import torch.nn.functional as F

from mmcv_parity import assert_close, require_portable_ext
from densekit.ops.mmcv import masked_conv as dk


def _case(dtype, kernel=3, padding=1, hw=(9, 11)):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, *hw, generator=g, dtype=dtype)
    w = torch.randn(5, 4, kernel, kernel, generator=g, dtype=dtype)
    b = torch.randn(5, generator=g, dtype=dtype)
    ho, wo = hw[0] + 2 * padding - kernel + 1, hw[1] + 2 * padding - kernel + 1
    mask = (torch.rand(1, ho, wo, generator=g) > 0.6).to(dtype)
    mask[0, 0, 0] = mask[0, -1, -1] = 1  # corners: patches reach past the border
    ref = F.conv2d(x, w, b, padding=padding) * (mask[:, None] > 0)
    return x, mask, w, b, ref


@pytest.mark.parametrize('kernel,padding', [(3, 1), (1, 0), (5, 2), (3, 0)])
def test_masked_conv2d_matches_masked_dense_conv(kernel, padding):
    x, mask, w, b, ref = _case(torch.float64, kernel, padding)
    assert_close(dk.masked_conv2d(x, mask, w, b, padding), ref, 'output')


def test_mmcv_masked_conv2d_module():
    require_portable_ext()
    from mmcv.ops import MaskedConv2d
    x, mask, w, b, ref = _case(torch.float64)
    conv = MaskedConv2d(4, 5, 3, 1, 1).double()
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(b)
    assert_close(conv(x, mask), ref, 'output')
    empty = torch.zeros_like(mask)
    assert torch.equal(conv(x, empty), torch.zeros_like(ref))


def test_mmdet_guided_anchoring_head_predicts(monkeypatch):
    require_portable_ext()
    pytest.importorskip('mmdet')
    from mmdet.models.dense_heads import GARetinaHead
    from mmengine.config import ConfigDict
    torch.manual_seed(0)
    head = GARetinaHead(
        num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
        approx_anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                     scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                     strides=[8, 16]),
        square_anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], scales=[4],
                                     strides=[8, 16]),
        test_cfg=ConfigDict(nms_pre=50, min_bbox_size=0, score_thr=0.0,
                            nms=dict(type='nms', iou_threshold=0.5), max_per_img=20))
    head.eval()
    head.loc_filter_thr = 0.0  # every location passes the guidance mask: the masked conv runs
    feats = (torch.randn(1, 8, 8, 8), torch.randn(1, 8, 4, 4))
    metas = [dict(img_shape=(64, 64), pad_shape=(64, 64), scale_factor=(1.0, 1.0))]
    import mmcv.ops.masked_conv as mmcv_masked_conv
    ext = mmcv_masked_conv.ext_module
    calls = []

    class CountingExt:
        @staticmethod
        def masked_im2col_forward(*args, **kwargs):
            calls.append(1)
            return ext.masked_im2col_forward(*args, **kwargs)
        masked_col2im_forward = staticmethod(ext.masked_col2im_forward)
    monkeypatch.setattr(mmcv_masked_conv, 'ext_module', CountingExt)
    with torch.no_grad():
        res = head.predict_by_feat(*head(feats), batch_img_metas=metas, rescale=False)
    assert calls
    assert res[0].bboxes.shape[1] == 4 and torch.isfinite(res[0].bboxes).all()
