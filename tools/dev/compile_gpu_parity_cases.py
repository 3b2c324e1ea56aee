"""Compile (or interpret), for a GPU target and without a GPU, every Triton case of the CUDA parity tests.

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
                                                 [-k EXPR] [--json out.json] [--list] [--interpret]

``--interpret`` runs each case's parity check itself instead, on CPU tensors of the case's shape
and dtype through the Triton interpreter, with the GPU hazard checks of ``tests/triton_hazards.py``
(cross-program races, accesses outside the tensors' elements, NaN for uninitialised memory and
masked-off lanes): what the CUDA parity run will compare, minus the GPU's own arithmetic (the
interpreter widens bf16 dot operands to fp32). Slow: minutes per large case.

``backbones``: the tiny backbones of ``test_backbone_contract.py::test_attention_backends_agree_cuda``
(forward and backward with ``DENSEKIT_ATTN_BACKEND=triton``). Reference / flex cases are not
compiled (nothing of ours to compile; flex is compiled by inductor on the device). Run it in a
fresh process without ``TRITON_INTERPRET`` (see ``tools/dev/triton_sm90_report.py``); it sets the
variable itself once the kernels are defined, only so that the backend dispatch accepts CPU
tensors for an explicitly requested Triton backend.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import importlib
import io
import inspect
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT] + [os.path.join(ROOT, 'tests', *sub) for sub in ((), ('ops',), ('models',))]

INTERPRET = '--interpret' in sys.argv[1:]
if os.environ.get('TRITON_INTERPRET') == '1' and not INTERPRET:
    sys.exit('run without TRITON_INTERPRET=1: kernels defined under the interpreter cannot be compiled')
if INTERPRET:  # before any kernel is defined: ``triton.jit`` picks the interpreter at definition
    os.environ['TRITON_INTERPRET'] = '1'

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
        if getattr(r, 'shared_bytes', 0) > _triton_aot.SHARED_LIMIT[arch]:  # compiled kernels only
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

    _run_op_case(item, compile_check)
    return reports


def _interpret_op_case(item, arch):
    """Runs the test's body with ``check_backend`` on CPU, under the GPU hazard checks; returns one
    report per kernel launch (name and count)."""
    from attn_parity import check_backend
    from triton_hazards import gpu_hazards
    launches = collections.Counter()

    def interpret_check(op, backend, shape, bias_shape, dtype, seed=0, device=None):
        with gpu_hazards() as checker:
            check_backend(op, backend, shape, bias_shape, dtype, seed, device='cpu')
        launches.update(checker.kernels)

    _run_op_case(item, interpret_check)
    return [Launches(name, n) for name, n in sorted(launches.items())]


@dataclasses.dataclass
class Launches:
    """What ``--interpret`` reports per kernel: its name and how many launches were checked."""
    kernel: str
    launches: int


def _run_op_case(item, check):
    module = item.module
    original = module.check_backend
    module.check_backend = check
    mp = pytest.MonkeyPatch()
    try:
        params = inspect.signature(item.function).parameters
        fixtures = {'requires_cuda': None, 'monkeypatch': mp}
        item.function(**item.callspec.params, **{k: v for k, v in fixtures.items() if k in params})
    finally:
        mp.undo()
        module.check_backend = original


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


def _interpret_backbone_case(item, arch):
    """``test_attention_backends_agree_cuda[name]`` on CPU (fp32, forward and backward, every
    backend the probes accept against the reference) under the GPU hazard checks."""
    from triton_hazards import gpu_hazards
    contract = item.module
    model = contract._build(item.callspec.params['name']).eval()
    mp = pytest.MonkeyPatch()
    try:
        with gpu_hazards() as checker:
            contract._check_backends(item.callspec.params['name'], model, torch.randn(2, 3, contract.H, contract.W),
                                     mp, backward=True)
    finally:
        mp.undo()
    return [Launches(name, n) for name, n in sorted(checker.kernels.items())]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--arch', type=int, default=90, choices=sorted(_triton_aot.SHARED_LIMIT))
    ap.add_argument('--only', default=','.join(FAMILIES), help=f'comma-separated, of {FAMILIES}')
    ap.add_argument('-k', dest='keyword', default=None, help="pytest's -k expression, to compile some cases")
    ap.add_argument('--json', default=None)
    ap.add_argument('--list', action='store_true', help='print the Triton test cases, compile nothing')
    ap.add_argument('--interpret', action='store_true',
                    help='run the parity checks through the interpreter with the GPU hazard checks instead')
    args = ap.parse_args()
    families = args.only.split(',')
    unknown = set(families) - set(FAMILIES)
    if unknown:
        ap.error(f'--only: unknown {sorted(unknown)}; choose from {FAMILIES}')
    ok, why = _triton_aot.available()
    if not ok and not (args.list or args.interpret):
        sys.exit(f'no ahead-of-time Triton compilation here: {why}')
    for fam in OPS:  # define the kernels now, compiled unless --interpret (the wrappers import them lazily)
        importlib.import_module(f'densekit.ops.{fam}.triton')

    items = triton_cases(families, args.keyword)
    if args.list:
        for item in items:
            print(item.nodeid)
        return
    # the kernels are defined; from here on the dispatch accepts explicit CPU calls
    os.environ['TRITON_INTERPRET'] = '1'

    rows, failures = [], []
    for item in items:
        backbone = item.originalname == 'test_attention_backends_agree_cuda'
        t0 = time.perf_counter()
        reports, err = [], None
        try:
            if args.interpret:
                reports = (_interpret_backbone_case if backbone else _interpret_op_case)(item, args.arch)
            else:
                reports = (_compile_backbone_case if backbone else _compile_op_case)(item, args.arch)
        except pytest.skip.Exception as e:  # the backbone test's "no other backend runs here"
            err = f'skipped: {e}'
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the run goes on
            err = f'{type(e).__name__}: {str(e)[:400]}'
        # the backbone test accepts refusals (and skips when nothing but the reference runs)
        refused = backbone and err is not None and ('cannot run' in err or err.startswith('skipped'))
        _record(item.nodeid, reports, args.arch, rows, failures)
        if err is not None and not refused:
            failures.append(f'{item.nodeid}: {err}')
        elif not reports and not refused and not backbone:
            failures.append(f'{item.nodeid}: no Triton kernel ran' if args.interpret else
                            f'{item.nodeid}: no kernel was compiled (launched in the interpreter?)')
        what = f'{sum(r.launches for r in reports)} launches checked' if args.interpret else f'{len(reports)} kernels'
        print(f'{item.nodeid}: {what}, {time.perf_counter() - t0:.1f} s'
              + (f' (refused: {err})' if refused else f' FAILED {err}' if err else ''), flush=True)

    import triton
    summary = {'triton': triton.__version__, 'torch': torch.__version__,
               'tests': len({r['test'] for r in rows}), 'failures': failures}
    if args.interpret:
        summary.update(mode='interpret + GPU hazard checks', launches=sum(r['launches'] for r in rows))
    else:
        summary.update(arch=args.arch, kernels=len(rows),
                       max_shared_bytes=max((r['shared_bytes'] for r in rows), default=0),
                       max_registers=max((r['registers'] for r in rows), default=0),
                       with_stack=sorted({(r['kernel'], r['stack_bytes']) for r in rows if r['stack_bytes']}))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'summary': summary, 'rows': rows}, f, indent=1, default=str)
    print(json.dumps(summary, indent=1))
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
