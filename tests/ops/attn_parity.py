"""One parity harness for the attention ops (NATTEN-style).

The fp32 reference runs once per case and keeps the output and every gradient (dq, dk, dv and the
bias gradient); each other backend / dtype is compared against it with
``torch.testing.assert_close(atol=TOL[dtype][what] * max(1, max|expected|), rtol=0)``: the
absolute tolerance is in units of the quantity's largest value (a norm-wise relative error, as
``||actual - expected||_inf / ||expected||_inf`` would be, floored at scale 1), because a gradient
that sums over a large fan-in grows with the problem. A fixed absolute tolerance fails the
*reference backend itself* run on CUDA: e.g. the halo dQ reaches |35| and the bias gradients
|270| at the GPU shapes, where one bf16 ulp is 0.125 / 1 and fp32 summation order alone differs by
6e-5 / 3e-4 (CPU fp32 vs float64 on the same inputs). All tolerances live in ``TOL``.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

# One tolerance table: dtype -> quantity -> atol per unit of the quantity's largest magnitude
# (rtol is always 0; see the module docstring). Inputs are O(1) randn, so these are a few ulps of
# the dtype times the softmax fan-in; the bias gradient sums over batch and every query, hence its
# larger entry.
TOL: Dict[torch.dtype, Dict[str, float]] = {
    torch.float32: {'out': 1e-5, 'dq': 2e-5, 'dk': 2e-5, 'dv': 2e-5, 'dbias': 1e-4},
    torch.float16: {'out': 2e-3, 'dq': 4e-3, 'dk': 4e-3, 'dv': 4e-3, 'dbias': 2e-2},
    torch.bfloat16: {'out': 1.6e-2, 'dq': 3e-2, 'dk': 3e-2, 'dv': 3e-2, 'dbias': 1.5e-1},
}

Op = Callable[..., torch.Tensor]  # op(q, k, v, bias, backend=...) -> out


def make_inputs(shape, heads_bias_shape: Optional[tuple], seed: int = 0, device='cpu'):
    """fp32 q, k, v ``shape`` and optional bias of ``heads_bias_shape``, plus an output gradient."""
    g = torch.Generator().manual_seed(seed)
    q, k, v, go = (torch.randn(shape, generator=g) for _ in range(4))
    bias = torch.randn(heads_bias_shape, generator=g) if heads_bias_shape is not None else None
    move = (lambda t: t.to(device) if t is not None else None)
    return move(q), move(k), move(v), move(bias), move(go)


def run(op: Op, q, k, v, bias, grad_out, backend: Optional[str], dtype: torch.dtype, device=None):
    """Output and gradients of ``op`` on inputs cast to ``dtype``; results returned in float32."""
    device = device or q.device
    leaves = [t.detach().to(device=device, dtype=dtype).requires_grad_(True) for t in (q, k, v)]
    b = bias.detach().to(device=device, dtype=dtype).requires_grad_(True) if bias is not None else None
    out = op(*leaves, b, backend=backend)
    out.backward(grad_out.to(device=device, dtype=dtype))
    res = {'out': out.detach(), 'dq': leaves[0].grad, 'dk': leaves[1].grad, 'dv': leaves[2].grad}
    if b is not None:
        res['dbias'] = b.grad
    return {name: t.float().cpu() for name, t in res.items()}


def reference(op: Op, q, k, v, bias, grad_out, dtype: torch.dtype = torch.float32):
    """The fp32 reference run; inputs are first rounded to ``dtype`` so only the backend's own
    low-precision arithmetic is measured against it."""
    rq, rk, rv = (t.to(dtype).float() for t in (q, k, v))
    rb = bias.to(dtype).float() if bias is not None else None
    return run(op, rq.cpu(), rk.cpu(), rv.cpu(), rb.cpu() if rb is not None else None,
               grad_out.to(dtype).float().cpu(), 'reference', torch.float32, device='cpu')


def assert_parity(expected: Dict[str, torch.Tensor], actual: Dict[str, torch.Tensor], dtype: torch.dtype):
    """Compare every quantity with ``atol = TOL[dtype][what] * tol_scale(expected)`` and ``rtol=0``."""
    assert expected.keys() == actual.keys(), (expected.keys(), actual.keys())
    for what, exp in expected.items():
        atol = TOL[dtype][what] * tol_scale(exp)
        torch.testing.assert_close(actual[what], exp, atol=atol, rtol=0,
                                   msg=lambda m, w=what, a=atol: f'{w} ({dtype}, atol {a:.3g}): {m}')


def tol_scale(expected: torch.Tensor) -> float:
    """The unit of the tolerances: the quantity's largest magnitude, at least 1."""
    return max(1.0, expected.abs().max().item()) if expected.numel() else 1.0


def check_backend(op: Op, backend: str, shape, bias_shape, dtype: torch.dtype, seed: int = 0, device='cpu'):
    """Full harness for one case: reference once in fp32, then ``backend`` in ``dtype``."""
    q, k, v, bias, go = make_inputs(shape, bias_shape, seed)
    expected = reference(op, q, k, v, bias, go, dtype)
    actual = run(op, q, k, v, bias, go, backend, dtype, device=device)
    assert_parity(expected, actual, dtype)


# Ops whose inputs are not one q / k / v shape plus a bias (deform_sampled_attention: sampled
# keys, sampling positions and a bias table): named leaves, gradients ``'d' + name``, each
# compared with the tolerance of the quantity it plays the role of (``aliases``: gradient name ->
# a ``TOL`` key, e.g. the position and table gradients -> ``'dbias'``: sums over every query).
def run_named(op: Op, inputs: Dict[str, torch.Tensor], grad_out, backend: Optional[str], dtype: torch.dtype,
              device='cpu'):
    """Output and every input's gradient of ``op(**inputs, backend=...)`` on inputs cast to
    ``dtype``; results in float32 on the CPU."""
    leaves = {n: t.detach().to(device=device, dtype=dtype).requires_grad_(True) for n, t in inputs.items()}
    out = op(**leaves, backend=backend)
    out.backward(grad_out.to(device=device, dtype=dtype))
    res = {'out': out.detach(), **{'d' + n: t.grad for n, t in leaves.items()}}
    return {name: t.float().cpu() for name, t in res.items()}


def check_backend_named(op: Op, backend: str, inputs: Dict[str, torch.Tensor], grad_out, dtype: torch.dtype,
                        aliases: Dict[str, str], device='cpu'):
    """:func:`check_backend` for named inputs: the fp32 reference on inputs rounded to ``dtype``,
    then ``backend`` in ``dtype``; every quantity within ``TOL[dtype][aliases.get(what, what)]``."""
    rounded = {n: t.to(dtype).float() for n, t in inputs.items()}
    expected = run_named(op, rounded, grad_out.to(dtype).float(), 'reference', torch.float32)
    actual = run_named(op, inputs, grad_out, backend, dtype, device=device)
    assert expected.keys() == actual.keys(), (expected.keys(), actual.keys())
    for what, exp in expected.items():
        atol = TOL[dtype][aliases.get(what, what)] * tol_scale(exp)
        torch.testing.assert_close(actual[what], exp, atol=atol, rtol=0,
                                   msg=lambda m, w=what, a=atol: f'{w} ({dtype}, atol {a:.3g}): {m}')
