"""Sigmoid and softmax focal loss in pure PyTorch with mmcv 2.1's semantics.

Focal loss: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.

Both losses are elementwise closed forms; forward and the gradient w.r.t. the logits are written
out explicitly (as mmcv's kernels do) rather than through autograd, so each costs one pass.

* Sigmoid: ``input`` ``[N, C]`` logits, ``target`` ``[N]`` int64 in ``[0, C]`` where ``C`` means
  background (every class is a negative). Output ``[N, C]``:
  ``-alpha (1-p)^g log p`` for the target class, ``-(1-alpha) p^g log(1-p)`` for the others,
  with ``log`` of values clamped to ``FLT_MIN``.
* Softmax: ``probs`` ``[N, C]`` (already softmaxed), ``target`` ``[N]``; output ``[N]``:
  ``-alpha (1-p_t)^g log p_t``; rows with a negative target give 0.
* The sigmoid terms use ``log p = logsigmoid(x)`` and ``1 - p = sigmoid(-x)`` instead of
  mmcv's ``log(1 - sigmoid(x))``, which loses all precision for confident logits (|x| > ~8 in
  float32); the ``FLT_MIN`` clamp is kept, so results equal mmcv's wherever mmcv is accurate.
* ``weight`` (``[C]`` or empty) multiplies each row by ``weight[target]``. mmcv reads past the
  end of ``weight`` for background / negative targets; here such rows are left unweighted.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# mmcv clamps with the float32 FLT_MIN whatever the dtype.
_FLT_MIN = torch.finfo(torch.float32).tiny


def _row_weight(weight: Tensor | None, target: Tensor, num_classes: int, dtype) -> Tensor | None:
    if weight is None or weight.numel() == 0:
        return None
    in_range = (target >= 0) & (target < num_classes)
    w = weight.to(dtype)[target.clamp(0, num_classes - 1)]
    return torch.where(in_range, w, torch.ones_like(w))


def _check_sigmoid_target(target: Tensor, num_classes: int) -> None:
    if target.numel() and int(target.max()) > num_classes:
        raise ValueError(f'sigmoid focal loss target must be <= num_classes ({num_classes}, '
                         f'the background label); got max {int(target.max())}')


def _sigmoid_terms(input: Tensor):
    """``p``, ``1 - p``, ``log p``, ``log(1 - p)`` without cancellation, logs floored at
    ``log(FLT_MIN)`` like mmcv's ``log(max(., FLT_MIN))``."""
    floor = torch.finfo(torch.float32).tiny
    log_floor = float(torch.tensor(floor).log())
    p, q = torch.sigmoid(input), torch.sigmoid(-input)
    log_p = F.logsigmoid(input).clamp_min(log_floor)
    log_q = F.logsigmoid(-input).clamp_min(log_floor)
    return p, q, log_p, log_q


def sigmoid_focal_loss_forward(input: Tensor, target: Tensor, weight: Tensor | None,
                               gamma: float, alpha: float) -> Tensor:
    """Elementwise loss ``[N, C]`` (no reduction)."""
    num_classes = input.shape[1]
    _check_sigmoid_target(target, num_classes)
    p, q, log_p, log_q = _sigmoid_terms(input)
    pos = target[:, None] == torch.arange(num_classes, device=input.device)[None]
    term_p = q.pow(gamma) * log_p
    term_n = p.pow(gamma) * log_q
    loss = torch.where(pos, -alpha * term_p, -(1 - alpha) * term_n)
    w = _row_weight(weight, target, num_classes, input.dtype)
    return loss if w is None else loss * w[:, None]


def sigmoid_focal_loss_backward(input: Tensor, target: Tensor, weight: Tensor | None,
                                gamma: float, alpha: float) -> Tensor:
    """d(elementwise loss) / d(input), ``[N, C]``."""
    num_classes = input.shape[1]
    p, q, log_p, log_q = _sigmoid_terms(input)
    pos = target[:, None] == torch.arange(num_classes, device=input.device)[None]
    term_p = q.pow(gamma) * (q - gamma * p * log_p)
    term_n = p.pow(gamma) * (gamma * q * log_q - p)
    grad = torch.where(pos, -alpha * term_p, -(1 - alpha) * term_n)
    w = _row_weight(weight, target, num_classes, input.dtype)
    return grad if w is None else grad * w[:, None]


def _target_prob(probs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    num_classes = probs.shape[1]
    if target.numel() and int(target.max()) >= num_classes:
        raise ValueError(f'softmax focal loss target must be < num_classes ({num_classes}); '
                         f'got max {int(target.max())}')
    valid = target >= 0
    pt = probs.gather(1, target.clamp_min(0)[:, None])[:, 0]
    return pt, valid


def softmax_focal_loss_forward(probs: Tensor, target: Tensor, weight: Tensor | None,
                               gamma: float, alpha: float) -> Tensor:
    """Per-row loss ``[N]`` from softmax probabilities."""
    pt, valid = _target_prob(probs, target)
    loss = -alpha * (1 - pt).pow(gamma) * pt.clamp_min(_FLT_MIN).log()
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    w = _row_weight(weight, target, probs.shape[1], probs.dtype)
    return loss if w is None else loss * w


def softmax_focal_loss_backward(probs: Tensor, target: Tensor, weight: Tensor | None,
                                gamma: float, alpha: float) -> Tensor:
    """d(row loss) / d(logits), ``[N, C]`` (through the softmax)."""
    pt, valid = _target_prob(probs, target)
    # mmcv's kernel writes (1-p)^(g-1) even for g < 1; kept as is.
    buff = alpha * (-(1 - pt).pow(gamma)
                    + gamma * (1 - pt).pow(gamma - 1) * pt * pt.clamp_min(_FLT_MIN).log())
    buff = torch.where(valid, buff, torch.zeros_like(buff))
    w = _row_weight(weight, target, probs.shape[1], probs.dtype)
    if w is not None:
        buff = buff * w
    onehot = target[:, None] == torch.arange(probs.shape[1], device=probs.device)[None]
    return buff[:, None] * (onehot.to(probs.dtype) - probs)
