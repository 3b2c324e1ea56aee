"""Compile, for a GPU target and without a GPU, every Triton case of the CUDA parity tests.

The CUDA parity tests (``pytest -m gpu``, run by ``benchmarks/gpu_check.sh`` on a lent H100 / H200)
are the first place a Triton kernel meets the real compiler at those shapes; on the one GPU run
so far, a window case failed there with ``OutOfResources: shared memory`` before it computed
anything. This script lets pytest collect those tests, then runs each Triton case's own body with
the harness's ``check_backend`` replaced: the op's forward and backward run on CPU tensors of the
case's shape and dtype, with every kernel launch compiled ahead of time
(``densekit.ops._triton_aot``) instead of launched. It reports, per test, the kernels, their shared
memory, registers and stack, and fails when a kernel does not compile or does not fit the
target's shared memory.

    python tools/dev/compile_gpu_parity_cases.py [--arch 90] [--only neighborhood,window,halo,backbones]
                                                 [-k EXPR] [--json out.json] [--list]

``backbones``: the tiny backbones of ``test_backbone_contract.py::test_attention_backends_agree_cuda``
(forward and backward with ``DENSEKIT_ATTN_BACKEND=triton``). Reference / flex cases are not
compiled (nothing of ours to compile; flex is compiled by inductor on the device). Run it in a
fresh process without ``TRITON_INTERPRET`` (see ``tools/dev/triton_sm90_report.py``); it sets the
variable itself once the kernels are defined, only so that the backend dispatch accepts CPU
tensors for an explicitly requested Triton backend.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import inspect
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT] + [os.path.join(ROOT, 'tests', *sub) for sub in ((), ('ops',), ('models',))]

if os.environ.get('TRITON_INTERPRET') == '1':
    sys.exit('run without TRITON_INTERPRET=1: kernels defined under the interpreter cannot be compiled')

import pytest  # noqa: E402
import torch  # noqa: E402

from densekit.ops import _triton_aot  # noqa: E402

OPS = ('neighborhood', 'window', 'halo')
FAMILIES = (*OPS, 'backbones')


class _Collector:
    """pytest plugin: keeps the collected items (after ``-m`` deselection)."""

    def __init__(self):
        self.items = []

    def pytest_collection_finish(self, session):
        self.items = list(session.items)


def triton_cases(families, keyword: str | None = None) -> list:
    """The ``gpu``-marked test items of ``families`` (and pytest's ``-k keyword``) that run our
    Triton kernels, as pytest collects them (its parametrization, marks and ids)."""
    files = [os.path.join(ROOT, 'tests', 'ops', f'test_attn_{fam}.py') for fam in families if fam in OPS]
    if 'backbones' in families:
        files.append(os.path.join(ROOT, 'tests', 'models', 'test_backbone_contract.py'))
    if not files:
        return []
    collector = _Collector()
    log = io.StringIO()
    with contextlib.redirect_stdout(log):  # pytest's own report of the collection
        rc = pytest.main(['--collect-only', '-qq', '-m', 'gpu', '-p', 'no:cacheprovider', '--rootdir', ROOT,
                          *(['-k', keyword] if keyword else []), *files], plugins=[collector])
    if rc != 0:
        sys.exit(f'pytest could not collect {files} (exit {rc}):\n{log.getvalue()[-3000:]}')
    return [item for item in collector.items
            if 'flex' not in item.originalname
            and getattr(item, 'callspec', None) is not None
            and item.callspec.params.get('backend', 'triton') == 'triton']


def _record(test_id, reports, arch, rows, failures):
    for r in reports:
        rows.append(dict(test=test_id, **{k: v for k, v in r.__dict__.items()
                                          if k not in ('sass_ops', 'sass_classes')}))
        if r.shared_bytes > _triton_aot.SHARED_LIMIT[arch]:
            failures.append(f'{test_id}: {r.kernel} needs {r.shared_bytes} B of shared memory '
                            f'(limit {_triton_aot.SHARED_LIMIT[arch]})')


def _compile_op_case(item, arch):
    """Runs the test's body with ``check_backend`` compiling instead of comparing."""
    from attn_parity import make_inputs, run
    reports = []

    def compile_check(op, backend, shape, bias_shape, dtype, seed=0, device=None):
        with _triton_aot.compile_only(arch) as compiled:
            run(op, *make_inputs(shape, bias_shape, seed), backend, dtype)
        reports.extend(compiled)

    module = item.module
    original = module.check_backend
    module.check_backend = compile_check
    mp = pytest.MonkeyPatch()
    try:
        params = inspect.signature(item.function).parameters
        fixtures = {'requires_cuda': None, 'monkeypatch': mp}
        item.function(**item.callspec.params, **{k: v for k, v in fixtures.items() if k in params})
    finally:
        mp.undo()
        module.check_backend = original
    return reports


def _compile_backbone_case(item, arch):
    """``test_attention_backends_agree_cuda[name]``: the tiny backbone's forward and backward at
    the test's input size with every attention call sent to Triton."""
    from densekit.ops._backend import ENV_VAR
    contract = item.module
    model = contract._build(item.callspec.params['name']).eval()
    x = torch.randn(2, 3, contract.H, contract.W)
    os.environ[ENV_VAR] = 'triton'
    try:
        with _triton_aot.compile_only(arch) as reports:
            outs = model(x)
            sum(o.float().sum() for o in outs).backward()
    finally:
        os.environ.pop(ENV_VAR, None)
    return reports


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--arch', type=int, default=90, choices=sorted(_triton_aot.SHARED_LIMIT))
    ap.add_argument('--only', default=','.join(FAMILIES), help=f'comma-separated, of {FAMILIES}')
    ap.add_argument('-k', dest='keyword', default=None, help="pytest's -k expression, to compile some cases")
    ap.add_argument('--json', default=None)
    ap.add_argument('--list', action='store_true', help='print the Triton test cases, compile nothing')
    args = ap.parse_args()
    families = args.only.split(',')
    unknown = set(families) - set(FAMILIES)
    if unknown:
        ap.error(f'--only: unknown {sorted(unknown)}; choose from {FAMILIES}')
    ok, why = _triton_aot.available()
    if not ok and not args.list:
        sys.exit(f'no ahead-of-time Triton compilation here: {why}')
    for fam in OPS:  # define the kernels now, compiled (the wrappers import them lazily)
        importlib.import_module(f'densekit.ops.{fam}.triton')

    items = triton_cases(families, args.keyword)
    if args.list:
        for item in items:
            print(item.nodeid)
        return
    # the kernels are defined (compiled mode); from here on the dispatch accepts explicit CPU calls
    os.environ['TRITON_INTERPRET'] = '1'

    rows, failures = [], []
    for item in items:
        backbone = item.originalname == 'test_attention_backends_agree_cuda'
        t0 = time.perf_counter()
        reports, err = [], None
        try:
            reports = (_compile_backbone_case if backbone else _compile_op_case)(item, args.arch)
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the run goes on
            err = f'{type(e).__name__}: {str(e)[:400]}'
        refused = backbone and err is not None and 'cannot run' in err  # that test accepts refusals
        _record(item.nodeid, reports, args.arch, rows, failures)
        if err is not None and not refused:
            failures.append(f'{item.nodeid}: {err}')
        elif not reports and not refused and not backbone:
            failures.append(f'{item.nodeid}: no kernel was compiled (launched in the interpreter?)')
        print(f'{item.nodeid}: {len(reports)} kernels, {time.perf_counter() - t0:.1f} s'
              + (f' (refused: {err})' if refused else f' FAILED {err}' if err else ''), flush=True)

    import triton
    summary = {'arch': args.arch, 'triton': triton.__version__, 'torch': torch.__version__,
               'tests': len({r['test'] for r in rows}), 'kernels': len(rows), 'failures': failures,
               'max_shared_bytes': max((r['shared_bytes'] for r in rows), default=0),
               'max_registers': max((r['registers'] for r in rows), default=0),
               'with_stack': sorted({(r['kernel'], r['stack_bytes']) for r in rows if r['stack_bytes']})}
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'summary': summary, 'rows': rows}, f, indent=1, default=str)
    print(json.dumps(summary, indent=1))
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
