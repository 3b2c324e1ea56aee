"""OpenMMLab-free parts of dense-prediction heads (one module per head family).

The heads' mmdet / mmseg classes live at the edge, in :mod:`densekit.mm.heads`; this package
holds what they compute with plain PyTorch, so it imports and tests without mm* packages.
"""
