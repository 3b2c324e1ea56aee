"""Sigmoid / softmax focal loss (mmcv 2.1 semantics), pure PyTorch, CPU and CUDA.

A compiled mmcv has no CPU kernel for these; mmdet then falls back to its own Python focal loss
on CPU. These run on any device with one fused forward and a closed-form backward.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from densekit.ops.mmcv.focal_loss import reference
from densekit.ops.mmcv.focal_loss.reference import (sigmoid_focal_loss_backward,
                                               sigmoid_focal_loss_forward,
                                               softmax_focal_loss_backward,
                                               softmax_focal_loss_forward)

__all__ = ['sigmoid_focal_loss', 'softmax_focal_loss', 'sigmoid_focal_loss_forward',
           'sigmoid_focal_loss_backward', 'softmax_focal_loss_forward',
           'softmax_focal_loss_backward', 'reference']

_REDUCTIONS = ('none', 'mean', 'sum')


def _reduce(loss: Tensor, reduction: str, num_rows: int) -> Tensor:
    if reduction == 'mean':  # mmcv divides by the number of rows, not elements
        return loss.sum() / num_rows
    if reduction == 'sum':
        return loss.sum()
    return loss


def _check(input: Tensor, target: Tensor, weight: Tensor | None, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f'reduction must be one of {_REDUCTIONS}, got {reduction!r}')
    if input.dim() != 2 or target.shape != input.shape[:1] or target.dtype != torch.long:
        raise ValueError(f'focal loss expects input [N, C] and int64 target [N], got '
                         f'{tuple(input.shape)} and {tuple(target.shape)} {target.dtype}')
    if weight is not None and weight.shape != input.shape[1:]:
        raise ValueError(f'weight must be [C]={input.shape[1]}, got {tuple(weight.shape)}')


class _SigmoidFocalLoss(torch.autograd.Function):

    @staticmethod
    def forward(ctx, input, target, gamma, alpha, weight, reduction):
        loss = sigmoid_focal_loss_forward(input, target, weight, gamma, alpha)
        ctx.save_for_backward(input, target, weight)
        ctx.args = (gamma, alpha, reduction)
        return _reduce(loss, reduction, input.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        input, target, weight = ctx.saved_tensors
        gamma, alpha, reduction = ctx.args
        grad = sigmoid_focal_loss_backward(input, target, weight, gamma, alpha) * grad_output
        if reduction == 'mean':
            grad = grad / input.shape[0]
        return grad, None, None, None, None, None


class _SoftmaxFocalLoss(torch.autograd.Function):

    @staticmethod
    def forward(ctx, input, target, gamma, alpha, weight, reduction):
        probs = torch.softmax(input, dim=1)
        loss = softmax_focal_loss_forward(probs, target, weight, gamma, alpha)
        ctx.save_for_backward(probs, target, weight)
        ctx.args = (gamma, alpha, reduction)
        return _reduce(loss, reduction, input.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        probs, target, weight = ctx.saved_tensors
        gamma, alpha, reduction = ctx.args
        g = grad_output[:, None] if grad_output.dim() == 1 else grad_output
        grad = softmax_focal_loss_backward(probs, target, weight, gamma, alpha) * g
        if reduction == 'mean':
            grad = grad / probs.shape[0]
        return grad, None, None, None, None, None


def sigmoid_focal_loss(input: Tensor, target: Tensor, gamma: float = 2.0, alpha: float = 0.25,
                       weight: Tensor | None = None, reduction: str = 'mean') -> Tensor:
    """Sigmoid focal loss over ``[N, C]`` logits; ``target == C`` is background.

    ``reduction='mean'`` divides the sum by ``N`` (mmcv's convention).
    """
    _check(input, target, weight, reduction)
    return _SigmoidFocalLoss.apply(input, target, float(gamma), float(alpha), weight, reduction)


def softmax_focal_loss(input: Tensor, target: Tensor, gamma: float = 2.0, alpha: float = 0.25,
                       weight: Tensor | None = None, reduction: str = 'mean') -> Tensor:
    """Softmax focal loss over ``[N, C]`` logits; rows with a negative target are ignored."""
    _check(input, target, weight, reduction)
    return _SoftmaxFocalLoss.apply(input, target, float(gamma), float(alpha), weight, reduction)
