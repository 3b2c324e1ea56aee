"""Compile densekit's Triton kernels for a GPU target without a GPU, and report their resources.

One tool, two subcommands; both run the ops' own Python wrappers with every Triton launch replaced
by an ahead-of-time compilation (``tools/dev/triton_aot.py``; triton's bundled ``ptxas`` /
``cuobjdump``), so nothing is launched and no GPU is needed.

``shapes`` — the benchmark shapes (a)-(e) of ``benchmarks/attention.py``, FasterViT-2's window and
carrier-token attention at 800x1333 and a DINO-sized multi-scale deformable attention (or, with
``--small``, small shapes covering every code path: what ``tests/ops/test_triton_compile.py``
checks). A table per kernel: launch constants, warps,
pipeline stages, registers per thread, the stack frame (spills), shared memory per program, the
matrix instruction in the machine code, and static SASS instruction counts (the code's size: a
loop body counts once; a proxy for the work per program, not a time)::

    python tools/dev/triton_compile.py shapes                      # bf16, sm_90, markdown table
    python tools/dev/triton_compile.py shapes --dtype float32 --arch 80 --json out.json
    python tools/dev/triton_compile.py shapes --only a_nat --config 'neighborhood={"bias_tiles": false}'

``parity-cases`` — every Triton case of the CUDA parity tests (``pytest -m gpu``, which
``benchmarks/gpu_check.sh`` runs on a GPU machine), taken from pytest's collection of those tests
and run through their own bodies with the parity harness's ``check_backend`` swapped: the op's
forward and backward run on CPU tensors of the case's shape and dtype, each kernel compiled for
the target. Fails when a kernel does not compile or does not fit the target's shared memory, so a
case that would fail at launch on the GPU is caught here first::

    python tools/dev/triton_compile.py parity-cases [--arch 90] [--only neighborhood,window,halo,window_extra,backbones]
                                                    [-k EXPR] [--json out.json] [--list] [--interpret]

``--interpret`` runs each case's parity check itself instead, on CPU through the Triton
interpreter under the GPU hazard checks of ``tools/dev/triton_hazards.py`` (cross-program races,
accesses outside the tensors' elements, NaN for uninitialised memory and masked-off lanes): what
the CUDA parity run compares, minus the GPU's own arithmetic (the interpreter widens bf16 dot
operands to fp32). Slow: minutes per large case. ``backbones``: the tiny backbones of
``test_backbone_contract.py::test_attention_backends_agree_cuda`` (forward and backward with
``DENSEKIT_ATTN_BACKEND=triton``). Reference / flex cases are not compiled (nothing of ours to
compile; inductor compiles flex on the device).

Run it in a fresh process without ``TRITON_INTERPRET``: ``@triton.jit`` decides when a kernel
module is imported whether its kernels are compiled or interpreted. ``parity-cases`` sets the
variable itself once the kernels are defined (``--interpret``: before), only so that the backend
dispatch accepts CPU tensors for an explicitly requested Triton backend.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import io
import json
import os
import sys
import time
from typing import Callable, Dict, List

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [ROOT, HERE]

import triton_aot  # noqa: E402  (tools/dev/triton_aot.py)

OPS = ('neighborhood', 'window', 'halo', 'window_extra')
FAMILIES = (*OPS, 'backbones')

# ------------------------------------------------------------------ shapes
_SHOWN = ('KH', 'KW', 'DH', 'DW', 'TILE_H', 'TILE_W', 'BLOCK_N', 'BLOCK_M', 'BLOCK_D', 'WH', 'WW', 'BLOCK',
          'BS', 'HALO', 'WP', 'BM', 'BACKWARD', 'HAS_RPB', 'HAS_BIAS', 'CHUNKS', 'WRITE_DS', 'BLOCK_P',
          'K', 'DIL', 'BLOCK_H', 'BLOCK_W', 'BLOCK_K', 'BLOCK_KK', 'ROWS', 'COLS', 'Q_ALL', 'BLOCK_Q',
          'BLOCK_C', 'BLOCK_P', 'WRITE_IDX')


def _bench_cases():
    spec = importlib.util.spec_from_file_location('dk_bench_attention', os.path.join(ROOT, 'benchmarks', 'attention.py'))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.NA_GPU, mod.WIN_GPU, mod.HALO_GPU


def _leaf(*shape, dtype):
    return torch.empty(*shape, dtype=dtype).normal_().requires_grad_()


# One runner per op (forward output; the caller runs backward). Shapes follow benchmarks/attention.py:
# NA (B, H, W, heads, D, kernel, dilation) with H = None for 1-D; window (B, H, W, C, heads, window,
# shift); halo (B, H, W, C, heads, block, halo); MSDA (batch, queries, heads, D, level sizes, points).
def _na(dtype, B, H, W, h, D, k, d, config=None):
    from densekit.ops.neighborhood.triton import na_triton
    spatial = (W,) if H is None else (H, W)
    kern = (k,) * len(spatial) if isinstance(k, int) else k
    dil = (d,) * len(spatial) if isinstance(d, int) else d
    q, kk, v = (_leaf(B, *spatial, h, D, dtype=dtype) for _ in range(3))
    rpb = _leaf(h, *(2 * x - 1 for x in kern), dtype=dtype)
    return na_triton(q, kk, v, kern, dil, rpb, D ** -0.5, config)


def _window(dtype, B, H, W, C, h, ws, shift, bias=True, config=None):
    """``ws`` / ``shift``: an int (square) or a (height, width) pair."""
    from densekit.ops.window.triton import window_triton
    wh, ww = (ws, ws) if isinstance(ws, int) else ws
    sh, sw = (shift, shift) if isinstance(shift, int) else shift
    q, kk, v = (_leaf(B, H, W, h, C // h, dtype=dtype) for _ in range(3))
    rpb = _leaf(h, 2 * wh - 1, 2 * ww - 1, dtype=dtype) if bias else None
    return window_triton(q, kk, v, (wh, ww), (sh, sw), rpb, (C // h) ** -0.5, config)


def _window_extra(dtype, B, nW, T, h, D, P, config=None):
    """FasterViT's window attention with ``P`` carrier tokens per window of ``T`` tokens and the
    position bias on the window block (``[h, T - P, T - P]``)."""
    from densekit.ops.window_extra.triton import window_extra_triton
    q, kk, v = (_leaf(B, nW, T, h, D, dtype=dtype) for _ in range(3))
    bias = _leaf(h, T - P, T - P, dtype=dtype)
    return window_extra_triton(q, kk, v, bias, D ** -0.5, config)


def _halo(dtype, B, H, W, C, h, bs, hs, stride=1, dv=None, config=None):
    """C / h is the query / key head dim; ``dv`` the value head dim (default the same)."""
    from densekit.ops.halo.triton import halo_triton
    D = C // h
    q = _leaf(B, H // stride, W // stride, h, D, dtype=dtype)
    kk, v = _leaf(B, H, W, h, D, dtype=dtype), _leaf(B, H, W, h, dv or D, dtype=dtype)
    rel_h, rel_w = (_leaf(2 * (bs + 2 * hs) - 1, D, dtype=dtype) for _ in range(2))
    return halo_triton(q, kk, v, bs, hs, rel_h, rel_w, D ** -0.5, False, 'zeros', stride, config)


def _routed(dtype, B, H, W, h, D, regions, topk):
    """Routed attention on an ``regions x regions`` grid, each region routed to ``topk`` others."""
    from densekit.ops.routed.triton import routed_triton
    q, kk, v = (_leaf(B, H, W, h, D, dtype=dtype) for _ in range(3))
    R = regions * regions
    index = torch.stack([torch.randperm(R)[:topk] for _ in range(B * R)]).view(B, R, topk)
    return routed_triton(q, kk, v, index, (regions, regions), D ** -0.5)


def _deform_sampled(dtype, B, H, W, h, D, n, groups, side):
    """DAT++ deformable sampled-key attention: ``n`` sampled keys, a ``side x side`` bias table."""
    from densekit.ops.deform_sampled.triton import deform_sampled_triton
    q = _leaf(B, H, W, h, D, dtype=dtype)
    kk, v = (_leaf(B, n, h, D, dtype=dtype) for _ in range(2))
    pos = (torch.rand(B, groups, n, 2) * 2 - 1).to(dtype).requires_grad_()
    table = _leaf(h, side, side, dtype=dtype)
    return deform_sampled_triton(q, kk, v, pos, table, D ** -0.5)


def _local_global(dtype, B, H, W, h, D, P, kernel, border):
    """TransNeXt aggregated attention: a ``kernel x kernel`` window and ``P`` pooled tokens, with
    the window bias by slot, a per-query pooled bias and local weights (every gradient kernel)."""
    from densekit.ops.local_global.triton import local_global_triton
    q, kk, v = (_leaf(B, H, W, h, D, dtype=dtype) for _ in range(3))
    ke, ve = (_leaf(B, P, h, D, dtype=dtype) for _ in range(2))
    rpb = _leaf(h, kernel, kernel, dtype=dtype)
    eb = _leaf(h, H, W, P, dtype=dtype)
    lw = _leaf(B, H, W, h, kernel * kernel, dtype=dtype)
    return local_global_triton(q, kk, v, ke, ve, (kernel, kernel), border, rpb, eb, lw, 1.0)


def _msda(dtype, bs, nq, nh, d, levels, points):
    from densekit.ops.mmcv.ms_deform_attn.triton import ms_deform_attn_triton
    shapes = torch.tensor(levels)
    starts = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    value = _leaf(bs, int(shapes.prod(1).sum()), nh, d, dtype=dtype)
    loc = torch.rand(bs, nq, nh, len(levels), points, 2).to(dtype).requires_grad_()
    attn = torch.rand(bs, nq, nh, len(levels), points).to(dtype).requires_grad_()
    return ms_deform_attn_triton(value, shapes, starts, loc, attn)


def _large_kernel(dtype, B, C, H, W, k, dilation=1, config=None):
    """Depthwise large-kernel convolution (RepLKNet / UniRepLKNet / VAN), with a bias."""
    from densekit.ops.large_kernel.triton import large_kernel_triton
    x = _leaf(B, C, H, W, dtype=dtype)
    weight, bias = _leaf(C, 1, k, k, dtype=dtype), _leaf(C, dtype=dtype)
    return large_kernel_triton(x, weight, bias, dilation, config)


def _kmeans(dtype, B, Q, C, HW, config=None):
    """kMaX-DeepLab's k-means cross-attention: ``Q`` clusters, ``C`` value channels, ``HW`` pixels
    (the value needs a gradient, so the forward also stores the assignment). The backward is a
    torch gather at that assignment, no kernel: a compile-only launch leaves the assignment
    unwritten, so the output returned is a detached copy and the caller's backward stops there."""
    from densekit.ops.kmeans.triton import kmeans_triton
    logits = torch.empty(B, Q, HW, dtype=dtype).normal_()
    return kmeans_triton(logits, _leaf(B, C, HW, dtype=dtype), config).detach().requires_grad_()


def cases(dtype: torch.dtype, configs=None) -> Dict[str, Callable[[], torch.Tensor]]:
    """The benchmark shapes (a)-(e) and a DINO-sized MSDA: case name -> forward of that op."""
    na, win, halo = _bench_cases()
    conf = configs or {}
    out: Dict[str, Callable[[], torch.Tensor]] = {}
    out.update({name: functools.partial(_na, dtype, *cfg, config=conf.get('neighborhood'))
                for name, cfg in na.items()})
    out.update({name: functools.partial(_window, dtype, *cfg, config=conf.get('window')) for name, cfg in win.items()})
    out.update({name: functools.partial(_halo, dtype, *cfg, config=conf.get('halo')) for name, cfg in halo.items()})
    out['msda_dino_4scale'] = functools.partial(_msda, dtype, 2, 900, 8, 32,
                                                ((100, 168), (50, 84), (25, 42), (13, 21)), 4)
    # FasterViT-2 at 800x1333, batch 2: stage 2 (96 windows of 4 carrier + 7x7 tokens) and the
    # carrier-token attention (one window of 384 tokens, bias on the last 16)
    wex = conf.get('window_extra')
    out['fastervit_s2'] = functools.partial(_window_extra, dtype, 2, 96, 53, 8, 48, 4, config=wex)
    out['fastervit_ct'] = functools.partial(_window_extra, dtype, 2, 1, 384, 8, 48, 368, config=wex)
    # kMaX-DeepLab's k-means cross-attention at stride 8 of the COCO recipe's 1281 crops, batch 2
    out['kmax_kmeans_s8'] = functools.partial(_kmeans, dtype, 2, 128, 256, 161 * 161)
    return out


def small_cases(dtype: torch.dtype, configs=None) -> Dict[str, Callable[[], torch.Tensor]]:
    """Small shapes with every code path: 2-D NA (dilated, non-square kernel), 1-D NA, shifted
    windows, halo (and strided queries), MSDA, routed, deformable sampled-key and local + global
    attention, windows with carrier tokens, the large-kernel depthwise convolution, k-means
    cross-attention (what
    ``tests/ops/test_triton_compile.py`` compiles)."""
    na, win, halo, wex = ({'config': (configs or {}).get(op)} for op in OPS)
    return {
        'na2d': functools.partial(_na, dtype, 1, 16, 18, 2, 32, (7, 5), (2, 1), **na),
        'na1d': functools.partial(_na, dtype, 2, None, 40, 2, 64, 9, 1, **na),
        'window': functools.partial(_window, dtype, 1, 14, 14, 96, 3, 7, 3, **win),
        'halo': functools.partial(_halo, dtype, 1, 16, 16, 64, 2, 8, 3, **halo),
        'halo_s2': functools.partial(_halo, dtype, 1, 16, 16, 64, 2, 8, 3, 2, **halo),  # strided queries
        'halo_dv': functools.partial(_halo, dtype, 1, 16, 16, 32, 2, 8, 2, 1, 64, **halo),  # eca_halonext: 16 / 64
        'msda': functools.partial(_msda, dtype, 1, 5, 2, 32, ((6, 8), (3, 4)), 4),
        'routed': functools.partial(_routed, dtype, 1, 16, 20, 2, 32, 4, 3),  # BiFormer's 32-wide heads
        'deform_sampled': functools.partial(_deform_sampled, dtype, 1, 12, 20, 4, 32, 40, 2, 27),  # DAT++ heads
        # FasterViT: 4 carrier + 7x7 tokens, head_dim 48 (one chunk in half precision, four in fp32;
        # the carrier-token attention's 384 tokens are the benchmark case fastervit_ct)
        'window_extra': functools.partial(_window_extra, dtype, 1, 4, 53, 2, 48, 4, **wex),
        'large_kernel': functools.partial(_large_kernel, dtype, 2, 3, 20, 37, 31),  # RepLKNet's 31x31
        # TransNeXt: 3 x 3 masked window, 24-wide heads, 49 pooled tokens; and the clamped border
        'local_global': functools.partial(_local_global, dtype, 1, 14, 18, 3, 24, 49, 3, 'mask'),
        'local_global_clamp': functools.partial(_local_global, dtype, 1, 14, 18, 2, 32, 20, 5, 'clamp'),
        # kMaX-DeepLab: 128 clusters, 256 value channels, a 41x41 map (stride 32 of a 1281 crop)
        'kmeans': functools.partial(_kmeans, dtype, 2, 128, 256, 41 * 41),
    }


def report(dtype: torch.dtype, arch: int, small: bool = False, only: str = '', configs=None) -> List[dict]:
    """One row per compiled kernel of every case; ``configs``: ``{'neighborhood' | 'window' | 'halo' |
    'window_extra': launch configuration}`` for the attention kernels."""
    rows = []
    for name, run in (small_cases if small else cases)(dtype, configs).items():
        if only and not any(o in name for o in only.split(',')):
            continue
        with triton_aot.compile_only(arch, constants_shown=_SHOWN) as reports:
            y = run()
            y.backward(torch.ones_like(y))
        for r in reports:
            rows.append(dict(case=name, **r.__dict__))
    return rows


def shapes_main(args) -> None:
    configs = {}
    for c in args.config:
        module, _, conf = c.partition('=')
        if module not in OPS:
            sys.exit(f'--config: unknown op {module!r}; choose from {OPS}')
        configs[module] = json.loads(conf)
    if os.environ.get('TRITON_INTERPRET') == '1':
        sys.exit('unset TRITON_INTERPRET: interpreted kernels cannot be compiled')
    ok, why = triton_aot.available()
    if not ok:
        sys.exit(f'cannot compile ahead of time: {why}')
    import triton
    rows = report(getattr(torch, args.dtype), args.arch, args.small, args.only, configs)
    print(f'triton {triton.__version__}, torch {torch.__version__}, target sm_{args.arch}, {args.dtype}\n')
    print('| case | kernel | constants | warps | stages | regs | stack B (spills) | smem KiB | MMA | '
          'SASS instr. (static) | LDG / LDGSTS | MUFU |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
        consts = ', '.join(f'{k}={v}' for k, v in r['constants'].items())
        c = r['sass_classes']
        print(f"| {r['case']} | {r['kernel']} | {consts} | {r['num_warps']} | {r['num_stages']} | {r['registers']} | "
              f"{r['stack_bytes']} | {r['shared_bytes'] / 1024:.1f} | {r['mma'] or 'none'} | {c['total']} | "
              f"{c['LDG']} / {c['LDGSTS']} | {c['MUFU']} |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(triton=triton.__version__, torch=torch.__version__, arch=args.arch, dtype=args.dtype,
                           rows=rows), f, indent=1, default=str)


# ------------------------------------------------------------------ parity-cases
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
        if getattr(r, 'shared_bytes', 0) > triton_aot.SHARED_LIMIT[arch]:  # compiled kernels only
            failures.append(f'{test_id}: {r.kernel} needs {r.shared_bytes} B of shared memory '
                            f'(limit {triton_aot.SHARED_LIMIT[arch]})')


def _harness(item):
    """The parity harness module the test itself uses (the one that defines its ``check_backend``)."""
    return inspect.getmodule(item.module.check_backend)


def _compile_op_case(item, arch):
    """Runs the test's body with ``check_backend`` compiling instead of comparing."""
    harness = _harness(item)
    make_inputs, run = harness.make_inputs, harness.run
    reports = []

    def compile_check(op, backend, shape, bias_shape, dtype, seed=0, device=None):
        with triton_aot.compile_only(arch) as compiled:
            run(op, *make_inputs(shape, bias_shape, seed), backend, dtype)
        reports.extend(compiled)

    _run_op_case(item, compile_check)
    return reports


def _interpret_op_case(item, arch):
    """Runs the test's body with ``check_backend`` on CPU, under the GPU hazard checks; returns one
    report per kernel launch (name and count)."""
    from triton_hazards import gpu_hazards
    check_backend = _harness(item).check_backend
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
        with triton_aot.compile_only(arch) as reports:
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


def parity_cases_main(args) -> None:
    if os.environ.get('TRITON_INTERPRET') == '1' and not args.interpret:
        sys.exit('run without TRITON_INTERPRET=1: kernels defined under the interpreter cannot be compiled')
    if args.interpret:  # before any kernel is defined: ``triton.jit`` picks the interpreter at definition
        os.environ['TRITON_INTERPRET'] = '1'
    families = args.only.split(',')
    unknown = set(families) - set(FAMILIES)
    if unknown:
        sys.exit(f'--only: unknown {sorted(unknown)}; choose from {FAMILIES}')
    ok, why = triton_aot.available()
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



def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = ap.add_subparsers(dest='command', required=True)
    sp = sub.add_parser('shapes', help='compile the benchmark (or --small test) shapes and print a resource table')
    sp.add_argument('--dtype', default='bfloat16', choices=('bfloat16', 'float16', 'float32'))
    sp.add_argument('--arch', type=int, default=90, help='compute capability x10 (90 = Hopper, 80 = Ampere)')
    sp.add_argument('--json', default=None)
    sp.add_argument('--small', action='store_true', help='small test shapes instead of the benchmark shapes')
    sp.add_argument('--only', default='', help='comma-separated substrings of the case names to compile')
    sp.add_argument('--config', action='append', default=[], metavar='OP=JSON',
                    help='launch configuration of densekit.ops.<OP>.triton (neighborhood, window, halo, '
                         'window_extra), as '
                         'benchmarks/kernel_sweep.py passes it; repeatable')
    pc = sub.add_parser('parity-cases', help="compile (or --interpret) the Triton cases of the gpu parity tests")
    pc.add_argument('--arch', type=int, default=90, choices=sorted(triton_aot.SHARED_LIMIT))
    pc.add_argument('--only', default=','.join(FAMILIES), help=f'comma-separated, of {FAMILIES}')
    pc.add_argument('-k', dest='keyword', default=None, help="pytest's -k expression, to compile some cases")
    pc.add_argument('--json', default=None)
    pc.add_argument('--list', action='store_true', help='print the Triton test cases, compile nothing')
    pc.add_argument('--interpret', action='store_true',
                    help='run the parity checks through the interpreter with the GPU hazard checks instead')
    args = ap.parse_args()
    (shapes_main if args.command == 'shapes' else parity_cases_main)(args)


if __name__ == '__main__':
    main()
