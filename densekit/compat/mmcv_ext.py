"""Pure-PyTorch stand-in for mmcv's compiled ``mmcv._ext`` module.

mmcv's Python wrappers call ``ext_module.<name>(...)`` with the C++ signatures of mmcv 2.1
(outputs are often pre-allocated tensors written in place). The functions below keep exactly
those signatures and argument names. Implemented (CPU and CUDA tensors, with backward where mmcv
has one): ``nms``, ``softnms``, ``nms_match``, ``bbox_overlaps``, ``roi_align_*``,
``roi_pool_*``, ``sigmoid_focal_loss_*``, ``softmax_focal_loss_*``, ``ms_deform_attn_*``,
``deform_conv_*``, ``modulated_deform_conv_*``, ``psamask_*``, ``masked_im2col_forward`` /
``masked_col2im_forward``, ``carafe_*``, ``carafe_naive_*``, ``deform_roi_pool_*``; the math
lives in ``densekit.ops.mmcv.<op>``. Every other name exists so that ``mmcv.ops`` imports, and
calling it raises :class:`PortableOpUnavailable` naming the op.
"""
from __future__ import annotations

import weakref

import torch

__densekit_portable__ = True


class PortableOpUnavailable(NotImplementedError):
    """Raised when an mmcv op without a densekit portable implementation is called."""


# Every name mmcv 2.1's Python code asks ``load_ext('_ext', [...])`` for.
_ALL_NAMES = (
    'active_rotated_filter_backward', 'active_rotated_filter_forward',
    'assign_score_withk_backward', 'assign_score_withk_forward', 'ball_query_forward',
    'bbox_overlaps', 'bezier_align_backward', 'bezier_align_forward', 'bias_act',
    'border_align_backward', 'border_align_forward', 'box_iou_quadri', 'box_iou_rotated',
    'carafe_backward', 'carafe_forward', 'carafe_naive_backward', 'carafe_naive_forward',
    'chamfer_distance_backward', 'chamfer_distance_forward', 'contour_expand', 'convex_giou',
    'convex_iou', 'correlation_backward', 'correlation_forward', 'deform_conv_backward_input',
    'deform_conv_backward_parameters', 'deform_conv_forward', 'deform_roi_pool_backward',
    'deform_roi_pool_forward', 'diff_iou_rotated_sort_vertices_forward',
    'dynamic_point_to_voxel_backward', 'dynamic_point_to_voxel_forward',
    'dynamic_voxelize_forward', 'filtered_lrelu', 'filtered_lrelu_act_', 'furthest_point_sampling_forward',
    'furthest_point_sampling_with_dist_forward', 'fused_bias_leakyrelu',
    'fused_indice_conv_forward', 'gather_points_backward', 'gather_points_forward',
    'get_compiler_version', 'get_compiling_cuda_version', 'get_indice_pairs_2d_backward',
    'get_indice_pairs_2d_forward', 'get_indice_pairs_3d_backward', 'get_indice_pairs_3d_forward',
    'get_indice_pairs_4d_forward', 'group_points_backward', 'group_points_forward',
    'hard_voxelize_forward', 'indice_conv_backward', 'indice_conv_forward',
    'indice_maxpool_backward', 'indice_maxpool_forward', 'iou3d_boxes_overlap_bev_forward',
    'iou3d_nms3d_forward', 'iou3d_nms3d_normal_forward', 'knn_forward', 'masked_col2im_forward',
    'masked_im2col_forward', 'min_area_polygons', 'modulated_deform_conv_backward',
    'modulated_deform_conv_forward', 'ms_deform_attn_backward', 'ms_deform_attn_forward', 'nms',
    'nms_match', 'nms_quadri', 'nms_rotated', 'pixel_group', 'points_in_boxes_all_forward',
    'points_in_boxes_cpu_forward', 'points_in_boxes_part_forward', 'points_in_polygons_forward',
    'prroi_pool_backward', 'prroi_pool_coor_backward', 'prroi_pool_forward', 'psamask_backward',
    'psamask_forward', 'riroi_align_rotated_backward', 'riroi_align_rotated_forward',
    'roi_align_backward', 'roi_align_forward', 'roi_align_rotated_backward',
    'roi_align_rotated_forward', 'roi_pool_backward', 'roi_pool_forward',
    'roiaware_pool3d_backward', 'roiaware_pool3d_forward', 'roipoint_pool3d_forward',
    'rotated_feature_align_backward', 'rotated_feature_align_forward',
    'sigmoid_focal_loss_backward', 'sigmoid_focal_loss_forward', 'softmax_focal_loss_backward',
    'softmax_focal_loss_forward', 'softnms', 'stack_ball_query_forward',
    'stack_group_points_backward', 'stack_group_points_forward', 'sync_bn_backward_data',
    'sync_bn_backward_param', 'sync_bn_forward_mean', 'sync_bn_forward_output',
    'sync_bn_forward_var', 'three_interpolate_backward', 'three_interpolate_forward',
    'three_nn_forward', 'tin_shift_backward', 'tin_shift_forward', 'upfirdn2d',
)


def _unavailable(name: str):
    def op(*args, **kwargs):
        raise PortableOpUnavailable(
            f"mmcv op '{name}' has no portable implementation in densekit; it needs mmcv's "
            "compiled extension (install a full mmcv 2.1 build, e.g. `pip install mmcv==2.1.0` "
            "against a PyTorch it supports, which densekit then uses instead of its own ops)")
    op.__name__ = name
    op.__qualname__ = name
    return op


def get_compiler_version() -> str:
    return 'densekit-portable (no compiled extension)'


def get_compiling_cuda_version() -> str:
    return 'not compiled'


# ---------------------------------------------------------------------------------------------
# Portable implementations with mmcv's C++ signatures (argument names as in mmcv's pybind.cpp;
# mmcv's Python wrappers pass many of them by keyword). Outputs that mmcv pre-allocates are
# written in place. The math lives in densekit.ops.mmcv.<op>; these are thin adapters.
# ---------------------------------------------------------------------------------------------


def _nms(boxes, scores, iou_threshold, offset):
    from densekit.ops.mmcv.nms import nms
    return nms(boxes, scores, float(iou_threshold), int(offset))


def _softnms(boxes, scores, dets, iou_threshold, sigma, min_score, method, offset):
    from densekit.ops.mmcv.nms import soft_nms
    kept, inds = soft_nms(boxes, scores, float(iou_threshold), float(sigma), float(min_score),
                          int(method), int(offset))
    dets[:kept.shape[0]] = kept.to(device=dets.device, dtype=dets.dtype)
    return inds


def _nms_match(dets, iou_threshold):
    from densekit.ops.mmcv.nms import nms_match
    return nms_match(dets, float(iou_threshold))


def _bbox_overlaps(bboxes1, bboxes2, ious, mode, aligned, offset):
    from densekit.ops.mmcv.nms import bbox_overlaps
    ious.copy_(bbox_overlaps(bboxes1, bboxes2, ('iou', 'iof')[int(mode)], bool(aligned),
                             int(offset)))


_POOL_MODES = ('max', 'avg')  # mmcv's integer codes 0 / 1


def _roi_align_forward(input, rois, output, argmax_y, argmax_x, aligned_height, aligned_width,
                       spatial_scale, sampling_ratio, pool_mode, aligned):
    from densekit.ops.mmcv.roi_align import roi_align_forward
    out, arg_y, arg_x = roi_align_forward(input, rois, int(aligned_height), int(aligned_width),
                                          float(spatial_scale), int(sampling_ratio),
                                          _POOL_MODES[int(pool_mode)], bool(aligned))
    output.copy_(out)
    if _POOL_MODES[int(pool_mode)] == 'max':
        argmax_y.copy_(arg_y)
        argmax_x.copy_(arg_x)


def _roi_align_backward(grad_output, rois, argmax_y, argmax_x, grad_input, aligned_height,
                        aligned_width, spatial_scale, sampling_ratio, pool_mode, aligned):
    from densekit.ops.mmcv.roi_align import roi_align_backward
    grad_input.add_(roi_align_backward(grad_output.contiguous(), rois, argmax_y, argmax_x,
                                       grad_input.shape, float(spatial_scale),
                                       int(sampling_ratio), _POOL_MODES[int(pool_mode)],
                                       bool(aligned)))


def _roi_pool_forward(input, rois, output, argmax, pooled_height, pooled_width, spatial_scale):
    from densekit.ops.mmcv.roi_pool import roi_pool_forward
    out, arg, valid = roi_pool_forward(input, rois, int(pooled_height), int(pooled_width),
                                       float(spatial_scale))
    # mmcv's kernel skips RoIs with non-positive size, leaving the caller's buffers as they were.
    output[valid] = out[valid]
    argmax[valid] = arg[valid].to(argmax.dtype)


def _roi_pool_backward(grad_output, rois, argmax, grad_input, pooled_height, pooled_width,
                       spatial_scale):
    from densekit.ops.mmcv.roi_pool import roi_pool_backward
    grad_input.add_(roi_pool_backward(grad_output, rois, argmax, grad_input.shape))


def _sigmoid_focal_loss_forward(input, target, weight, output, gamma, alpha):
    from densekit.ops.mmcv.focal_loss import sigmoid_focal_loss_forward
    output.copy_(sigmoid_focal_loss_forward(input, target, weight, float(gamma), float(alpha)))


def _sigmoid_focal_loss_backward(input, target, weight, grad_input, gamma, alpha):
    from densekit.ops.mmcv.focal_loss import sigmoid_focal_loss_backward
    grad_input.copy_(sigmoid_focal_loss_backward(input, target, weight, float(gamma),
                                                 float(alpha)))


def _softmax_focal_loss_forward(input, target, weight, output, gamma, alpha):
    from densekit.ops.mmcv.focal_loss import softmax_focal_loss_forward
    output.copy_(softmax_focal_loss_forward(input, target, weight, float(gamma), float(alpha)))


def _softmax_focal_loss_backward(input, target, weight, buff, grad_input, gamma, alpha):
    from densekit.ops.mmcv.focal_loss import softmax_focal_loss_backward
    grad_input.copy_(softmax_focal_loss_backward(input, target, weight, float(gamma),
                                                 float(alpha)))


def _ms_deform_attn_forward(value, value_spatial_shapes, value_level_start_index,
                            sampling_locations, attention_weights, im2col_step):
    from densekit.ops.mmcv.ms_deform_attn import ms_deform_attn
    return ms_deform_attn(value, value_spatial_shapes, value_level_start_index,
                          sampling_locations, attention_weights)


def _ms_deform_attn_backward(value, value_spatial_shapes, value_level_start_index,
                             sampling_locations, attention_weights, grad_output, grad_value,
                             grad_sampling_loc, grad_attn_weight, im2col_step):
    from densekit.ops.mmcv.ms_deform_attn import ms_deform_attn_backward
    gv, gl, ga = ms_deform_attn_backward(value, value_spatial_shapes, value_level_start_index,
                                         sampling_locations, attention_weights, grad_output)
    grad_value.add_(gv)
    grad_sampling_loc.add_(gl)
    grad_attn_weight.add_(ga)


def _dcn_kw(kH, kW, dH, dW, padH, padW, dilationH, dilationW, group, deformable_group):
    return dict(stride=(int(dH), int(dW)), padding=(int(padH), int(padW)),
                dilation=(int(dilationH), int(dilationW)), groups=int(group),
                deform_groups=int(deformable_group))


def _deform_conv_forward(input, weight, offset, output, columns, ones, kW, kH, dW, dH, padW,
                         padH, dilationW, dilationH, group, deformable_group, im2col_step):
    from densekit.ops.mmcv.deform_conv import deform_conv2d
    kw = _dcn_kw(kH, kW, dH, dW, padH, padW, dilationH, dilationW, group, deformable_group)
    output.copy_(deform_conv2d(input, offset, weight, None, **kw))


class _WeightGradCache:
    """Carries the weight gradient from ``deform_conv_backward_input`` to the
    ``deform_conv_backward_parameters`` call that mmcv makes right after it with the same
    tensors, so that one autograd pass serves both (mmcv's C++ recomputes the columns twice).
    Identity and version checks make a stale entry unusable."""

    def __init__(self):
        self._key = None
        self._grad = None

    @staticmethod
    def _make_key(tensors):
        return tuple((weakref.ref(t), t._version) for t in tensors)

    def put(self, tensors, grad) -> None:
        self._key, self._grad = self._make_key(tensors), grad

    def take(self, tensors):
        key, grad = self._key, self._grad
        self._key = self._grad = None
        if key is None or len(key) != len(tensors):
            return None
        for (ref, version), t in zip(key, tensors):
            if ref() is not t or t._version != version:
                return None
        return grad


_DCN_WEIGHT_GRAD = _WeightGradCache()


def _deform_conv_backward_input(input, offset, gradOutput, gradInput, gradOffset, weight,
                                columns, kW, kH, dW, dH, padW, padH, dilationW, dilationH, group,
                                deformable_group, im2col_step):
    from densekit.ops.mmcv.deform_conv import deform_conv2d_grads
    kw = _dcn_kw(kH, kW, dH, dW, padH, padW, dilationH, dilationW, group, deformable_group)
    g = deform_conv2d_grads(gradOutput, input, offset, weight, None, None,
                            ('input', 'offset', 'weight'), **kw)
    gradInput.add_(g['input'])
    gradOffset.add_(g['offset'])
    _DCN_WEIGHT_GRAD.put((input, offset, gradOutput), g['weight'])


def _deform_conv_backward_parameters(input, offset, gradOutput, gradWeight, columns, ones, kW,
                                     kH, dW, dH, padW, padH, dilationW, dilationH, group,
                                     deformable_group, scale, im2col_step):
    from densekit.ops.mmcv.deform_conv import deform_conv2d_grads
    grad = _DCN_WEIGHT_GRAD.take((input, offset, gradOutput))
    if grad is None or grad.shape != gradWeight.shape:
        kw = _dcn_kw(kH, kW, dH, dW, padH, padW, dilationH, dilationW, group, deformable_group)
        # The output is linear in the weight, so its gradient does not depend on the weight's
        # value (which mmcv does not pass here): any tensor of the right shape will do.
        grad = deform_conv2d_grads(gradOutput, input, offset, torch.zeros_like(gradWeight),
                                   None, None, ('weight',), **kw)['weight']
    gradWeight.add_(grad, alpha=float(scale))


def _modulated_kw(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                  group, deformable_group):
    return _dcn_kw(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                   group, deformable_group)


def _modulated_offset_mask(input, weight, offset, mask, kw):
    """Offset and mask as mmcv's modulated kernels read them: indexed by the output size, with
    no shape check (see :func:`densekit.ops.mmcv.deform_conv.mmcv_offset_view`)."""
    from densekit.ops.mmcv.deform_conv import mmcv_offset_view, output_size
    kh, kw_ = weight.shape[-2:]
    out_hw = output_size(input.shape[-2:], (kh, kw_), kw['stride'], kw['padding'],
                         kw['dilation'])
    taps = kw['deform_groups'] * kh * kw_
    return mmcv_offset_view(offset, out_hw, 2 * taps), mmcv_offset_view(mask, out_hw, taps)


def _scatter_to(grad, like):
    """Gradient of :func:`mmcv_offset_view`'s result mapped back onto the viewed tensor."""
    if grad.shape == like.shape:
        return grad
    full = grad.new_zeros(like.shape[0], like[0].numel())
    full[:, :grad[0].numel()] = grad.reshape(grad.shape[0], -1)
    return full.reshape(like.shape)


def _modulated_deform_conv_forward(input, weight, bias, ones, offset, mask, output, columns,
                                   kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                                   dilation_h, dilation_w, group, deformable_group, with_bias):
    from densekit.ops.mmcv.deform_conv import deform_conv2d
    kw = _modulated_kw(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
                       dilation_w, group, deformable_group)
    offset, mask = _modulated_offset_mask(input, weight, offset, mask, kw)
    output.copy_(deform_conv2d(input, offset, weight, bias if with_bias else None, mask=mask,
                               **kw))


def _modulated_deform_conv_backward(input, weight, bias, ones, offset, mask, columns, grad_input,
                                    grad_weight, grad_bias, grad_offset, grad_mask, grad_output,
                                    kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                                    dilation_h, dilation_w, group, deformable_group, with_bias):
    from densekit.ops.mmcv.deform_conv import deform_conv2d_grads
    kw = _modulated_kw(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
                       dilation_w, group, deformable_group)
    wanted = ('input', 'offset', 'mask', 'weight') + (('bias',) if with_bias else ())
    offset_v, mask_v = _modulated_offset_mask(input, weight, offset, mask, kw)
    g = deform_conv2d_grads(grad_output, input, offset_v, weight, bias if with_bias else None,
                            mask_v, wanted, **kw)
    grad_input.add_(g['input'])
    grad_offset.add_(_scatter_to(g['offset'], offset))
    grad_mask.add_(_scatter_to(g['mask'], mask))
    grad_weight.add_(g['weight'])
    if with_bias:
        grad_bias.add_(g['bias'])


def _psamask_forward(input, output, psa_type, num_, h_feature, w_feature, h_mask, w_mask,
                     half_h_mask, half_w_mask):
    from densekit.ops.mmcv.psamask import PSA_TYPES, psamask_forward
    output.copy_(psamask_forward(input, PSA_TYPES[int(psa_type)], int(h_mask), int(w_mask),
                                 int(half_h_mask), int(half_w_mask)).reshape(output.shape))


def _psamask_backward(grad_output, grad_input, psa_type, num_, h_feature, w_feature, h_mask,
                      w_mask, half_h_mask, half_w_mask):
    from densekit.ops.mmcv.psamask import PSA_TYPES, psamask_backward
    grad_input.copy_(psamask_backward(grad_output.contiguous(), PSA_TYPES[int(psa_type)],
                                      int(h_mask), int(w_mask), int(half_h_mask),
                                      int(half_w_mask)).reshape(grad_input.shape))


def _masked_im2col_forward(im, mask_h_idx, mask_w_idx, col, kernel_h, kernel_w, pad_h, pad_w):
    from densekit.ops.mmcv.masked_conv import masked_im2col
    col.copy_(masked_im2col(im, mask_h_idx, mask_w_idx, int(kernel_h), int(kernel_w), int(pad_h),
                            int(pad_w)))


def _masked_col2im_forward(col, mask_h_idx, mask_w_idx, im, height, width, channels):
    from densekit.ops.mmcv.masked_conv import masked_col2im
    masked_col2im(col, mask_h_idx, mask_w_idx, im)


def _carafe_grads(top_grad, features, masks, kernel_size, group_size, scale_factor):
    from densekit.ops.mmcv.carafe import carafe
    with torch.enable_grad():
        f = features.detach().requires_grad_(True)
        m = masks.detach().requires_grad_(True)
        out = carafe(f, m, int(kernel_size), int(group_size), int(scale_factor))
        return torch.autograd.grad(out, (f, m), top_grad)


def _carafe_naive_forward(features, masks, output, kernel_size, group_size, scale_factor):
    from densekit.ops.mmcv.carafe import carafe
    output.copy_(carafe(features, masks, int(kernel_size), int(group_size), int(scale_factor)))


def _carafe_naive_backward(top_grad, features, masks, bottom_grad, mask_grad, kernel_size,
                           group_size, scale_factor):
    gf, gm = _carafe_grads(top_grad, features, masks, kernel_size, group_size, scale_factor)
    bottom_grad.copy_(gf)
    mask_grad.copy_(gm)


def _carafe_forward(features, masks, rfeatures, routput, rmasks, output, kernel_size,
                    group_size, scale_factor):
    # ``rfeatures`` is the buffer mmcv hands back to ``carafe_backward`` (its CUDA kernel keeps
    # an NHWC copy there); here it keeps the features themselves.
    _carafe_naive_forward(features, masks, output, kernel_size, group_size, scale_factor)
    rfeatures.copy_(features)


def _carafe_backward(top_grad, rfeatures, masks, rtop_grad, rbottom_grad_hs, rbottom_grad,
                     rmask_grad, bottom_grad, mask_grad, kernel_size, group_size, scale_factor):
    gf, gm = _carafe_grads(top_grad, rfeatures, masks, kernel_size, group_size, scale_factor)
    bottom_grad.copy_(gf)
    mask_grad.copy_(gm)


def _deform_roi_pool_forward(input, rois, offset, output, pooled_height, pooled_width,
                             spatial_scale, sampling_ratio, gamma):
    from densekit.ops.mmcv.deform_roi_pool import deform_roi_pool_forward
    output.copy_(deform_roi_pool_forward(input, rois, offset, int(pooled_height),
                                         int(pooled_width), float(spatial_scale),
                                         int(sampling_ratio), float(gamma)))


def _deform_roi_pool_backward(grad_output, input, rois, offset, grad_input, grad_offset,
                              pooled_height, pooled_width, spatial_scale, sampling_ratio, gamma):
    from densekit.ops.mmcv.deform_roi_pool import deform_roi_pool_backward
    gi, go = deform_roi_pool_backward(grad_output.contiguous(), input, rois, offset,
                                      float(spatial_scale), int(sampling_ratio), float(gamma))
    grad_input.add_(gi)
    if go is not None:
        grad_offset.add_(go)


_IMPLEMENTED: dict = {
    'nms': _nms,
    'softnms': _softnms,
    'nms_match': _nms_match,
    'bbox_overlaps': _bbox_overlaps,
    'roi_align_forward': _roi_align_forward,
    'roi_align_backward': _roi_align_backward,
    'roi_pool_forward': _roi_pool_forward,
    'roi_pool_backward': _roi_pool_backward,
    'sigmoid_focal_loss_forward': _sigmoid_focal_loss_forward,
    'sigmoid_focal_loss_backward': _sigmoid_focal_loss_backward,
    'softmax_focal_loss_forward': _softmax_focal_loss_forward,
    'softmax_focal_loss_backward': _softmax_focal_loss_backward,
    'ms_deform_attn_forward': _ms_deform_attn_forward,
    'ms_deform_attn_backward': _ms_deform_attn_backward,
    'deform_conv_forward': _deform_conv_forward,
    'deform_conv_backward_input': _deform_conv_backward_input,
    'deform_conv_backward_parameters': _deform_conv_backward_parameters,
    'modulated_deform_conv_forward': _modulated_deform_conv_forward,
    'modulated_deform_conv_backward': _modulated_deform_conv_backward,
    'psamask_forward': _psamask_forward,
    'psamask_backward': _psamask_backward,
    'masked_im2col_forward': _masked_im2col_forward,
    'masked_col2im_forward': _masked_col2im_forward,
    'carafe_forward': _carafe_forward,
    'carafe_backward': _carafe_backward,
    'carafe_naive_forward': _carafe_naive_forward,
    'carafe_naive_backward': _carafe_naive_backward,
    'deform_roi_pool_forward': _deform_roi_pool_forward,
    'deform_roi_pool_backward': _deform_roi_pool_backward,
}

for _name in _ALL_NAMES:
    if _name not in globals():
        _fn = _IMPLEMENTED.get(_name)
        if _fn is not None:
            _fn.__name__ = _fn.__qualname__ = _name
        globals()[_name] = _fn or _unavailable(_name)
del _name, _fn
