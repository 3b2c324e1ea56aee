"""Pure-PyTorch replacements for mmcv's compiled detection ops (mmcv 2.1 semantics).

One package per op, laid out like the attention ops (``reference.py``; ``triton.py`` where a
fused kernel exists; the public functions in ``__init__.py``):

* :mod:`.nms` — ``nms``, ``soft_nms``, ``nms_match``, ``bbox_overlaps``;
* :mod:`.roi_align`, :mod:`.roi_pool` — RoIAlign / RoIPool, forward and backward;
* :mod:`.focal_loss` — sigmoid / softmax focal loss with closed-form backward;
* :mod:`.deform_conv` — (modulated) deformable convolution v1 / v2;
* :mod:`.ms_deform_attn` — multi-scale deformable attention (Deformable DETR); its fused Triton
  backend is chosen like the attention ops' (``backend=`` or ``DENSEKIT_ATTN_BACKEND``);
* :mod:`.psamask` — PSANet's point-wise spatial attention mask (collect / distribute);
* :mod:`.masked_conv` — ``masked_im2col`` / ``masked_col2im`` (Guided Anchoring);
* :mod:`.carafe` — CARAFE content-aware upsampling;
* :mod:`.deform_roi_pool` — deformable RoI pooling.

They import nothing from OpenMMLab: ``densekit.compat.mmcv_ext`` adapts them to the C++
signatures of ``mmcv._ext`` so that mmcv's Python wrappers run on top of them. Nothing is
imported here; each op package is imported by its own path (``densekit.ops.mmcv.nms``).
"""
