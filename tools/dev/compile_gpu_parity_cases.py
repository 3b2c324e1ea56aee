"""Compile, for a GPU target and without a GPU, every Triton case of the CUDA parity tests.

The CUDA parity tests (``pytest -m gpu``, run by ``benchmarks/gpu_check.sh`` on a lent H100 / H200)
are the first place a Triton kernel meets the real compiler at those shapes; on the one GPU run
so far, a window case failed there with ``OutOfResources: shared memory`` before it computed
anything. This script runs the bodies of those tests here, with the harness's ``check_backend``
replaced: for each Triton case the op's forward and backward run on CPU tensors of the case's
shape and dtype with every kernel launch compiled ahead of time (``densekit.ops._triton_aot``)
instead of launched. It reports, per test, the kernels, their shared memory, registers and stack,
and fails when a kernel does not compile or does not fit the target's shared memory.

    python tools/dev/compile_gpu_parity_cases.py [--arch 90] [--only neighborhood,window,halo] [--json out.json]

Reference / flex cases are not compiled (nothing of ours to compile; flex is compiled by
inductor on the device). Run it in a fresh process without ``TRITON_INTERPRET`` (see
``tools/dev/triton_sm90_report.py``); it sets the variable itself after the kernels are defined,
only so that the backend dispatch accepts CPU tensors for ``backend='triton'``.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import itertools
import json
import os
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT] + [os.path.join(ROOT, 'tests', *sub) for sub in ((), ('ops',), ('models',))]

if os.environ.get('TRITON_INTERPRET') == '1':
    sys.exit('run without TRITON_INTERPRET=1: kernels defined under the interpreter cannot be compiled')

import pytest  # noqa: E402
import torch  # noqa: E402

from densekit.ops import _triton_aot  # noqa: E402

MODULES = {'neighborhood': 'test_attn_neighborhood', 'window': 'test_attn_window', 'halo': 'test_attn_halo'}
FAMILIES = (*MODULES, 'backbones')
SHARED_LIMIT = {90: _triton_aot.SM90_MAX_SHARED_BYTES, 80: 166912}


def _param_sets(fn):
    """Every combination of the test's ``@pytest.mark.parametrize`` values, as kwargs."""
    axes = []
    for mark in getattr(fn, 'pytestmark', []):
        if mark.name != 'parametrize':
            continue
        names, values = mark.args[0], mark.args[1]
        names = [n.strip() for n in names.split(',')] if isinstance(names, str) else list(names)
        rows = []
        for v in values:
            if hasattr(v, 'values') and hasattr(v, 'marks'):  # pytest.param(...)
                v = v.values
            elif len(names) == 1:
                v = (v,)
            rows.append(dict(zip(names, v)))
        axes.append(rows)
    for combo in itertools.product(*axes):
        kw = {}
        for part in combo:
            kw.update(part)
        yield kw


def _gpu_tests(module):
    for name, fn in sorted(vars(module).items()):
        if name.startswith('test_') and inspect.isfunction(fn) and any(
                m.name == 'gpu' for m in getattr(fn, 'pytestmark', [])):
            yield name, fn


def _backbones(arch, rows, failures):
    """tests/models/test_backbone_contract.py::test_attention_backends_agree_cuda: every tiny
    backbone's forward and backward at its input size with ``DENSEKIT_ATTN_BACKEND=triton``. An
    op call the Triton probe refuses is listed, not a failure (that test accepts refusals)."""
    import test_backbone_contract as contract

    from densekit.ops._backend import ENV_VAR
    for name in contract.TEST_VARIANTS:
        test_id = f'test_backbone_contract::test_attention_backends_agree_cuda[{name}]'
        model = contract._build(name).eval()
        x = torch.randn(2, 3, contract.H, contract.W)
        os.environ[ENV_VAR] = 'triton'
        t0 = time.perf_counter()
        err = None
        try:
            with _triton_aot.compile_only(arch) as reports:
                outs = model(x)
                sum(o.float().sum() for o in outs).backward()
        except Exception as e:  # noqa: BLE001
            err = f'{type(e).__name__}: {str(e)[:300]}'
        finally:
            os.environ.pop(ENV_VAR, None)
        for r in reports:
            rows.append({'test': test_id, 'kernel': r.kernel, 'num_warps': r.num_warps, 'num_stages': r.num_stages,
                         'shared_bytes': r.shared_bytes, 'registers': r.registers, 'stack_bytes': r.stack_bytes,
                         'mma': r.mma, 'compile_s': round(r.compile_s, 2)})
            if r.shared_bytes > SHARED_LIMIT[arch]:
                failures.append(f'{test_id}: {r.kernel} needs {r.shared_bytes} B of shared memory')
        refused = err is not None and 'cannot run' in err
        if err is not None and not refused:
            failures.append(f'{test_id}: {err}')
        print(f'{test_id}: {len(reports)} kernels, {time.perf_counter() - t0:.1f} s'
              + (f' (refused: {err})' if refused else f' FAILED {err}' if err else ''), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--arch', type=int, default=90)
    ap.add_argument('--only', default=','.join(FAMILIES))
    ap.add_argument('--json', default=None)
    ap.add_argument('--list', action='store_true', help='print the Triton test cases, compile nothing')
    args = ap.parse_args()
    ok, why = _triton_aot.available()
    if not ok and not args.list:
        sys.exit(f'no ahead-of-time Triton compilation here: {why}')

    from attn_parity import make_inputs
    modules = {fam: importlib.import_module(MODULES[fam]) for fam in args.only.split(',') if fam in MODULES}
    for fam in MODULES:  # define the kernels now, compiled (the wrappers import them lazily)
        importlib.import_module(f'densekit.ops.{fam}.triton')
    # the kernels are defined (compiled mode); from here on the dispatch accepts explicit CPU calls
    os.environ['TRITON_INTERPRET'] = '1'

    rows, failures = [], []
    current = {}

    def compile_check(op, backend, shape, bias_shape, dtype, seed=0, device='cpu'):
        if backend != 'triton':
            current['skipped'] = f'backend {backend}'
            return
        q, k, v, bias, go = make_inputs(shape, bias_shape, seed)
        leaves = [t.to(dtype).requires_grad_(True) for t in (q, k, v)]
        b = bias.to(dtype).requires_grad_(True) if bias is not None else None
        with _triton_aot.compile_only(args.arch) as reports:
            out = op(*leaves, b, backend='triton')
            out.backward(go.to(dtype))
        current['reports'] = reports

    for fam, module in modules.items():
        module.check_backend = compile_check
        for name, fn in _gpu_tests(module):
            params = inspect.signature(fn).parameters
            for kw in _param_sets(fn):
                if kw.get('backend', 'triton') != 'triton' or 'flex' in name:
                    continue
                call = dict(kw)
                mp = pytest.MonkeyPatch()
                if 'requires_cuda' in params:
                    call['requires_cuda'] = None
                if 'monkeypatch' in params:
                    call['monkeypatch'] = mp
                test_id = f"{MODULES[fam]}::{name}[{', '.join(f'{k}={v}' for k, v in kw.items())}]"
                if args.list:
                    print(test_id)
                    continue
                current.clear()
                t0 = time.perf_counter()
                try:
                    fn(**call)
                    err = None
                except Exception as e:  # noqa: BLE001 - every failure is reported, then the run goes on
                    err = f'{type(e).__name__}: {str(e)[:400]}'
                    traceback.print_exc(limit=3)
                finally:
                    mp.undo()
                if 'skipped' in current:
                    continue
                for r in current.get('reports', []):
                    row = {'test': test_id, 'kernel': r.kernel, 'num_warps': r.num_warps,
                           'num_stages': r.num_stages, 'shared_bytes': r.shared_bytes, 'registers': r.registers,
                           'stack_bytes': r.stack_bytes, 'mma': r.mma, 'compile_s': round(r.compile_s, 2)}
                    rows.append(row)
                    if r.shared_bytes > SHARED_LIMIT[args.arch]:
                        failures.append(f'{test_id}: {r.kernel} needs {r.shared_bytes} B of shared memory '
                                        f'(limit {SHARED_LIMIT[args.arch]})')
                if err is not None:
                    failures.append(f'{test_id}: {err}')
                n = len(current.get('reports', []))
                if err is None and n == 0:
                    failures.append(f'{test_id}: no kernel was compiled (launched in the interpreter?)')
                print(f'{test_id}: {n} kernels, {time.perf_counter() - t0:.1f} s'
                      + (f' FAILED {err}' if err else ''), flush=True)

    if args.list:
        return
    if 'backbones' in args.only.split(','):
        _backbones(args.arch, rows, failures)

    import triton
    summary = {'arch': args.arch, 'triton': triton.__version__, 'torch': torch.__version__,
               'tests': len({r['test'] for r in rows}), 'kernels': len(rows), 'failures': failures,
               'max_shared_bytes': max((r['shared_bytes'] for r in rows), default=0),
               'max_registers': max((r['registers'] for r in rows), default=0),
               'with_stack': sorted({(r['kernel'], r['stack_bytes']) for r in rows if r['stack_bytes']})}
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'summary': summary, 'rows': rows}, f, indent=1)
    print(json.dumps(summary, indent=1))
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
