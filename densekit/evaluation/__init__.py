"""Evaluation metrics of the core (no OpenMMLab dependency)."""
from densekit.evaluation.depth import aggregate_depth_metrics, depth_metrics, eval_crop_mask

__all__ = ['aggregate_depth_metrics', 'depth_metrics', 'eval_crop_mask']
