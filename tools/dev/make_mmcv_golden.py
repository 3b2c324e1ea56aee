"""Writes golden outputs of mmcv 2.1's *compiled* CPU ops for densekit's portable-op tests.

Run it in a separate environment that has the full mmcv wheel (compiled ``mmcv._ext``), never in
densekit's own environment::

    python -m venv /tmp/mmcv_full_venv
    /tmp/mmcv_full_venv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/mmcv_full_venv/bin/pip install --no-deps \
        /work/shared/wheels/mmcv-2.1.0-cp311-cp311-linux_x86_64.whl
    /tmp/mmcv_full_venv/bin/pip install mmengine==0.10.7 numpy opencv-python-headless addict \
        yapf termcolor packaging pyyaml rich
    /tmp/mmcv_full_venv/bin/python tools/dev/make_mmcv_golden.py

Each fixture file holds only tensors, numbers, strings, lists and dicts, so the tests load it with
``torch.load(..., weights_only=True)``. Inputs are seeded and include awkward cases: tied scores,
IoU exactly at the threshold, boxes partly or fully outside the image, degenerate RoIs, empty
inputs, offsets that sample outside the feature map.

``--only NAME ...`` writes just the named fixtures.

mmcv's compiled build has no CPU kernel for ``roi_pool``, ``ms_deform_attn`` or the focal losses;
those are tested against references / mmcv's own pytorch fallback instead.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parents[2] / 'tests' / 'fixtures' / 'mmcv_golden'


def _check_real_mmcv():
    from mmcv.utils import ext_loader
    ext = ext_loader.load_ext('_ext', ['nms'])
    if getattr(ext, '__densekit_portable__', False):
        raise SystemExit('mmcv._ext is densekit\'s portable module: run this script in an '
                         'environment with the compiled mmcv wheel')


def _boxes_with_awkward_cases(gen: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    xy = torch.rand(n, 2, generator=gen) * 40 - 5  # some start outside the image
    wh = torch.rand(n, 2, generator=gen) * 20 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    # Scores quantised to 0.05 give many exact ties.
    scores = (torch.rand(n, generator=gen) * 20).floor() / 20
    # Pairs whose IoU is exactly 0.5 and 1/3 (thresholds used below), with tied scores.
    # (float32(1/3) == 4/12 exactly, so '>' vs '>=' and float vs double comparison both show.)
    exact = torch.tensor([[0., 0., 4., 2.], [0., 0., 2., 2.], [10., 10., 12., 12.],
                          [10., 10., 14., 12.], [20., 0., 23., 3.], [20., 0., 23., 3.],
                          [30., 30., 32., 32.], [30., 30., 36., 32.]])
    exact_scores = torch.tensor([0.9, 0.9, 0.7, 0.7, 0.3, 0.3, 0.6, 0.6])
    return torch.cat([boxes, exact]), torch.cat([scores, exact_scores])


def make_nms(gen: torch.Generator) -> dict:
    from mmcv.ops import batched_nms, nms, nms_match, soft_nms
    boxes, scores = _boxes_with_awkward_cases(gen, 60)
    cases = []
    for iou_thr in (0.5, 1 / 3, 0.7):
        for offset in (0, 1):
            for score_thr, max_num in ((0.0, -1), (0.2, 10)):
                dets, inds = nms(boxes, scores, iou_thr, offset=offset,
                                 score_threshold=score_thr, max_num=max_num)
                cases.append(dict(iou_threshold=iou_thr, offset=offset,
                                  score_threshold=score_thr, max_num=max_num,
                                  dets=dets, inds=inds))
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    soft = []
    for method in ('naive', 'linear', 'gaussian'):
        for offset in (0, 1):
            for min_score in (1e-3, 0.2):
                dets, inds = soft_nms(boxes, scores, 0.3, sigma=0.5, min_score=min_score,
                                      method=method, offset=offset)
                soft.append(dict(method=method, offset=offset, min_score=min_score,
                                 iou_threshold=0.3, sigma=0.5, dets=dets, inds=inds))
    match = []
    for iou_thr in (0.5, 1 / 3):
        groups = nms_match(torch.cat([boxes, scores[:, None]], 1), iou_thr)
        match.append(dict(iou_threshold=iou_thr, groups=[g.tolist() for g in groups]))
    idxs = torch.randint(0, 4, (boxes.shape[0],), generator=gen)
    batched = []
    for class_agnostic in (False, True):
        for split_thr in (10000, 8):  # 8 forces mmcv's per-class loop
            cfg = dict(type='nms', iou_threshold=0.5, class_agnostic=class_agnostic,
                       split_thr=split_thr)
            dets, keep = batched_nms(boxes, scores, idxs, cfg)
            batched.append(dict(class_agnostic=class_agnostic, split_thr=split_thr,
                                dets=dets, keep=keep))
    return dict(boxes=boxes, scores=scores, idxs=idxs, nms=cases, empty=empty[1], soft=soft,
                match=match, batched=batched)


def make_roi_align(gen: torch.Generator) -> dict:
    from mmcv.ops import roi_align
    feat = torch.randn(2, 3, 11, 13, generator=gen)
    rois = torch.tensor([
        [0, 2.0, 3.0, 15.0, 18.0],     # ordinary
        [1, -6.0, -4.0, 8.0, 6.0],     # starts outside the image
        [0, 20.0, 16.0, 40.0, 30.0],   # mostly / fully beyond the right-bottom edge
        [1, 5.0, 5.0, 5.0, 5.0],       # zero size
        [0, 3.3, 7.7, 4.1, 8.2],       # sub-pixel
        [1, 0.0, 0.0, 25.9, 21.9],     # whole image at spatial_scale 0.5
        [0, 10.2, 1.4, 24.6, 9.9],
        [1, 12.0, 12.0, 13.0, 30.0],   # thin
    ])
    grad_out_gen = torch.Generator().manual_seed(7)
    cases = []
    for aligned in (True, False):
        for sampling_ratio in (0, 2):
            for pool_mode in ('avg', 'max'):
                x = feat.clone().requires_grad_(True)
                out = roi_align(x, rois, (3, 4), 0.5, sampling_ratio, pool_mode, aligned)
                grad_out = torch.randn(out.shape, generator=grad_out_gen)
                out.backward(grad_out)
                cases.append(dict(aligned=aligned, sampling_ratio=sampling_ratio,
                                  pool_mode=pool_mode, output=out.detach(),
                                  grad_output=grad_out, grad_input=x.grad))
    # Ties in max mode: a constant feature map makes every sample equal.
    const = torch.full((1, 1, 6, 6), 2.0, requires_grad=True)
    tie_rois = torch.tensor([[0, 0.5, 0.5, 4.5, 4.5]])
    out = roi_align(const, tie_rois, 2, 1.0, 2, 'max', True)
    out.backward(torch.ones_like(out))
    tie = dict(input=const.detach(), rois=tie_rois, output=out.detach(), grad_input=const.grad)
    return dict(input=feat, rois=rois, cases=cases, tie=tie)


def make_deform_conv(gen: torch.Generator) -> dict:
    from mmcv.ops import deform_conv2d, modulated_deform_conv2d
    cases = []
    configs = [
        dict(stride=1, padding=1, dilation=1, groups=1, deform_groups=1),
        dict(stride=2, padding=2, dilation=2, groups=2, deform_groups=2),
        dict(stride=(1, 2), padding=(1, 0), dilation=(2, 1), groups=1, deform_groups=2),
    ]
    for cfg in configs:
        for modulated in (False, True):
            x = torch.randn(2, 4, 7, 8, generator=gen)
            w = torch.randn(6, 4 // cfg['groups'], 3, 3, generator=gen) * 0.3
            s, p, d = (torch.nn.modules.utils._pair(cfg[k]) for k in
                       ('stride', 'padding', 'dilation'))
            oh = (7 + 2 * p[0] - d[0] * 2 - 1) // s[0] + 1
            ow = (8 + 2 * p[1] - d[1] * 2 - 1) // s[1] + 1
            dg = cfg['deform_groups']
            # Offsets up to +-4 px push many samples outside the map.
            off = (torch.rand(2, dg * 18, oh, ow, generator=gen) - 0.5) * 8
            mask = torch.rand(2, dg * 9, oh, ow, generator=gen)
            bias = torch.randn(6, generator=gen)
            leaves = [t.clone().requires_grad_(True) for t in (x, off, w, mask, bias)]
            xl, ol, wl, ml, bl = leaves
            if modulated:
                out = modulated_deform_conv2d(xl, ol, ml, wl, bl, cfg['stride'],
                                              cfg['padding'], cfg['dilation'], cfg['groups'],
                                              dg)
            else:
                out = deform_conv2d(xl, ol, wl, cfg['stride'], cfg['padding'],
                                    cfg['dilation'], cfg['groups'], dg)
            grad_out = torch.randn(out.shape, generator=gen)
            out.backward(grad_out)
            case = dict(cfg, modulated=modulated, input=x, offset=off, weight=w,
                        output=out.detach(), grad_output=grad_out, grad_input=xl.grad,
                        grad_offset=ol.grad, grad_weight=wl.grad)
            if modulated:
                case.update(mask=mask, bias=bias, grad_mask=ml.grad, grad_bias=bl.grad)
            cases.append(case)
    return dict(cases=cases)


def _dcn_run(modulated, x, off, mask, w, bias, cfg, gen):
    """Output, a random output gradient and every input gradient of mmcv's functional op."""
    from mmcv.ops import deform_conv2d, modulated_deform_conv2d
    leaves = dict(input=x, offset=off, weight=w)
    if modulated:
        leaves.update(mask=mask, bias=bias)
    leaves = {k: v.clone().requires_grad_(True) for k, v in leaves.items()}
    args = (cfg['stride'], cfg['padding'], cfg['dilation'], cfg['groups'], cfg['deform_groups'])
    if modulated:
        out = modulated_deform_conv2d(leaves['input'], leaves['offset'], leaves['mask'],
                                      leaves['weight'], leaves['bias'], *args)
    else:
        out = deform_conv2d(leaves['input'], leaves['offset'], leaves['weight'], *args)
    grad_out = torch.randn(out.shape, generator=gen)
    out.backward(grad_out)
    case = dict(cfg, modulated=modulated, output=out.detach(), grad_output=grad_out,
                **{k: v.detach() for k, v in leaves.items()},
                **{f'grad_{k}': v.grad for k, v in leaves.items()})
    return case


def make_deform_conv_edges(gen: torch.Generator) -> dict:
    """Edge cases of mmcv's deform-conv kernels.

    * ``oversized``: offset / mask larger than the output, which mmcv's modulated kernels read
      by the output size without a check (DyHead's ``spatial_conv_high``); the offset is a
      channel slice of one conv output as in DyHead. DCNv1 checks the size: its error is kept.
    * ``border``: integer offsets with padding 1, so that many taps sit exactly at ``-1`` and on
      other integer positions, where mmcv's coordinate gradient has its bounds rule.
    * ``first_step``: a ``(Modulated)DeformConv2dPack`` as mmcv initialises it (zero offset
      conv), one backward: the offset-conv gradient of a training run's first step.
    * ``mmcv_test``: the body of mmcv's ``test_modulated_deform_conv`` on CPU.
    """
    from mmcv.ops import DeformConv2dPack, ModulatedDeformConv2dPack, deform_conv2d
    oversized = []
    for cfg, in_hw, off_hw in (
            (dict(stride=1, padding=1, dilation=1, groups=1, deform_groups=1), (6, 7), (12, 14)),
            (dict(stride=2, padding=1, dilation=1, groups=2, deform_groups=2), (7, 8), (6, 9))):
        dg = cfg['deform_groups']
        x = torch.randn(2, 4, *in_hw, generator=gen)
        w = torch.randn(6, 4 // cfg['groups'], 3, 3, generator=gen) * 0.3
        om = (torch.rand(2, dg * 27, *off_hw, generator=gen) - 0.5) * 4
        off = om[:, :dg * 18]  # a non-contiguous channel slice, as DyHead's
        mask = om[:, dg * 18:].sigmoid()
        bias = torch.randn(6, generator=gen)
        case = _dcn_run(True, x, off, mask, w, bias, cfg, gen)
        case['offset_is_slice'] = not off.is_contiguous()
        oversized.append(case)
    try:
        cfg = oversized[0]
        deform_conv2d(cfg['input'], cfg['offset'], cfg['weight'], 1, 1, 1, 1, 1)
        v1_error = ''
    except Exception as e:  # noqa: BLE001 - the message is what is recorded
        v1_error = str(e)
    border = []
    cfg = dict(stride=1, padding=1, dilation=1, groups=1, deform_groups=1)
    for modulated in (False, True):
        x = torch.randn(2, 4, 7, 8, generator=gen)
        w = torch.randn(6, 4, 3, 3, generator=gen) * 0.3
        off = torch.randint(-2, 3, (2, 18, 7, 8), generator=gen).float()
        off[0] = 0  # the initial state of every mmcv DCN layer
        mask = torch.rand(2, 9, 7, 8, generator=gen)
        bias = torch.randn(6, generator=gen)
        border.append(_dcn_run(modulated, x, off, mask, w, bias, cfg, gen))
    first_step = []
    for cls in (DeformConv2dPack, ModulatedDeformConv2dPack):
        m = cls(16, 16, 3, padding=1)  # mmcv zero-initialises conv_offset
        with torch.no_grad():
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.1)
        x = torch.randn(1, 16, 20, 20, generator=gen).requires_grad_(True)
        out = m(x)
        grad_out = torch.randn(out.shape, generator=gen)
        out.backward(grad_out)
        first_step.append(dict(modulated=cls is ModulatedDeformConv2dPack, input=x.detach(),
                               weight=m.weight.detach().clone(), grad_output=grad_out,
                               output=out.detach(), grad_input=x.grad,
                               grad_weight=m.weight.grad,
                               grad_offset_weight=m.conv_offset.weight.grad,
                               grad_offset_bias=m.conv_offset.bias.grad))
    # mmcv's tests/test_ops/test_modulated_deform_conv.py, TestMdconv._test_mdconv on CPU.
    x = torch.tensor([[[[1., 2., 3.], [1., 2., 3.], [1., 2., 3.]]]], requires_grad=True)
    m = ModulatedDeformConv2dPack(1, 1, kernel_size=(2, 2), stride=1, padding=1,
                                  deform_groups=1, bias=False)
    m.weight.data.fill_(1.)
    out = m(x)
    out.sum().backward()
    mmcv_test = dict(input=x.detach(), output=out.detach(), grad_input=x.grad,
                     grad_weight=m.weight.grad, grad_offset_weight=m.conv_offset.weight.grad,
                     grad_offset_bias=m.conv_offset.bias.grad)
    return dict(oversized=oversized, v1_oversized_error=v1_error, border=border,
                first_step=first_step, mmcv_test=mmcv_test)


def make_psamask(gen: torch.Generator) -> dict:
    """PSAMask collect / distribute, forward and input gradient: odd and even mask sizes, a mask
    larger than the map (most of each window falls outside), non-square maps."""
    from mmcv.ops import PSAMask
    cases = []
    for mask_size, hw in (((3, 5), (4, 6)), ((5, 5), (3, 3)), ((4, 3), (5, 7)), ((9, 9), (6, 5))):
        for psa_type in ('collect', 'distribute'):
            x = torch.randn(2, mask_size[0] * mask_size[1], *hw, generator=gen,
                            requires_grad=True)
            out = PSAMask(psa_type, mask_size)(x)
            grad_out = torch.randn(out.shape, generator=gen)
            out.backward(grad_out)
            cases.append(dict(psa_type=psa_type, mask_size=list(mask_size), input=x.detach(),
                              output=out.detach(), grad_output=grad_out, grad_input=x.grad))
    return dict(cases=cases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', type=Path, default=OUT)
    parser.add_argument('--only', nargs='*', help='fixture names to write (default: all)')
    args = parser.parse_args()
    _check_real_mmcv()
    import mmcv
    args.out.mkdir(parents=True, exist_ok=True)
    makers = dict(nms=make_nms, roi_align=make_roi_align, deform_conv=make_deform_conv,
                  deform_conv_edges=make_deform_conv_edges, psamask=make_psamask)
    for i, (name, make) in enumerate(makers.items()):
        if args.only and name not in args.only:
            continue
        gen = torch.Generator().manual_seed(1000 + i)
        data = make(gen)
        data['meta'] = dict(mmcv=str(mmcv.__version__), torch=str(torch.__version__))
        path = args.out / f'{name}.pt'
        torch.save(data, path)
        torch.load(path, weights_only=True)  # the tests load it this way
        print(f'wrote {path} ({path.stat().st_size / 1024:.1f} KiB)')


if __name__ == '__main__':
    main()
